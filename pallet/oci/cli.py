"""`pallet-runc`: runc's command line over pallet.oci.Runtime.

Only parses and prints; the mechanics live in pallet.oci. Imports stay lean because
containerd and podman start this program once or more per container: the commands they
run are parsed without argparse (see _parse_fast), JSON goes through pallet.oci.jsonlite,
and signals through _signal, the C core of signal without its enum wrappers.
"""

from __future__ import annotations

import _signal
import os
import sys
import time

from pallet import __version__
from pallet.errors import PalletError
from pallet.oci import jsonlite

TYPE_CHECKING = False  # typing costs ~10 ms to import; only type checkers need it
if TYPE_CHECKING:
    import argparse

_LOG: dict[str, str | None] = {"path": None, "format": "text"}


def log(level: str, msg: str) -> None:
    """Write a log line like runc's logrus output, to --log (if given) and stderr for errors."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if _LOG["format"] == "json":
        line = jsonlite.dumps({"level": level, "msg": msg, "time": now})
    else:
        line = f'time="{now}" level={level} msg={jsonlite.dumps(msg)}'
    if _LOG["path"]:
        try:
            with open(_LOG["path"], "a") as f:
                f.write(line + "\n")
        except OSError:
            pass
    if level in ("error", "fatal") or not _LOG["path"]:
        if level in ("error", "fatal"):
            print(msg if not _LOG["path"] else line, file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    # Keep _FAST_GLOBALS and _FAST_COMMANDS below in step with this.
    import argparse

    p = argparse.ArgumentParser(prog="pallet-runc", description="pallet's OCI runtime "
                                "(runc-compatible command line)")
    p.add_argument("--root", default="/run/pallet-runc", help="state directory")
    p.add_argument("--log", default=None, help="log file (default stderr)")
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    p.add_argument("--debug", action="store_true")
    p.add_argument("--systemd-cgroup", action="store_true",
                   help="accepted for compatibility; the cgroupfs driver is used")
    p.add_argument("--criu", help=argparse.SUPPRESS)
    p.add_argument("--rootless", default="auto", help=argparse.SUPPRESS)
    p.add_argument("-v", "--version", action="store_true")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_)

    def create_flags(c: argparse.ArgumentParser) -> None:
        c.add_argument("-b", "--bundle", default=".")
        c.add_argument("--console-socket")
        c.add_argument("--pid-file")
        c.add_argument("--no-pivot", action="store_true")
        c.add_argument("--no-new-keyring", action="store_true")
        c.add_argument("--preserve-fds", type=int, default=0)
        c.add_argument("id")

    create_flags(cmd("create", "create a container"))
    c = cmd("run", "create and run a container")
    create_flags(c)
    c.add_argument("-d", "--detach", action="store_true")
    c.add_argument("--keep", action="store_true")
    cmd("start", "start a created container").add_argument("id")
    c = cmd("state", "output the state of a container")
    c.add_argument("id")
    c = cmd("kill", "send a signal to the container's init process")
    c.add_argument("-a", "--all", action="store_true")
    c.add_argument("id")
    c.add_argument("signal", nargs="?", default="SIGTERM")
    c = cmd("delete", "delete a container")
    c.add_argument("-f", "--force", action="store_true")
    c.add_argument("id")
    c = cmd("list", "list containers")
    c.add_argument("-f", "--format", default="table", choices=["table", "json"])
    c.add_argument("-q", "--quiet", action="store_true")
    c = cmd("exec", "execute a new process inside a container")
    c.add_argument("-p", "--process")
    c.add_argument("-t", "--tty", action="store_true")
    c.add_argument("-d", "--detach", action="store_true")
    c.add_argument("-e", "--env", action="append", default=[])
    c.add_argument("--cwd")
    c.add_argument("-u", "--user")
    c.add_argument("-g", "--additional-gids", action="append", default=[])
    c.add_argument("-c", "--cap", action="append", default=[])
    c.add_argument("--pid-file")
    c.add_argument("--console-socket")
    c.add_argument("--no-new-privs", action="store_true")
    c.add_argument("--preserve-fds", type=int, default=0)
    c.add_argument("--apparmor")
    c.add_argument("--process-label")
    c.add_argument("--ignore-paused", action="store_true")
    c.add_argument("id")
    c.add_argument("args", nargs=argparse.REMAINDER)
    c = cmd("ps", "list processes running inside a container")
    c.add_argument("-f", "--format", default="table", choices=["table", "json"])
    c.add_argument("id")
    c.add_argument("ps_args", nargs=argparse.REMAINDER)
    cmd("pause", "suspend all processes of a container").add_argument("id")
    cmd("resume", "resume all processes of a container").add_argument("id")
    c = cmd("update", "update the resource limits of a container")
    c.add_argument("-r", "--resources")
    for flag in ("memory", "memory-swap", "memory-reservation", "kernel-memory",
                 "kernel-memory-tcp", "cpu-shares", "cpu-quota", "cpu-period",
                 "cpu-rt-runtime", "cpu-rt-period", "cpuset-cpus", "cpuset-mems",
                 "pids-limit", "blkio-weight", "l3-cache-schema", "mem-bw-schema"):
        c.add_argument(f"--{flag}")
    c.add_argument("id")
    c = cmd("events", "display container events such as OOM notifications and stats")
    c.add_argument("--stats", action="store_true")
    c.add_argument("--interval", default="5s")
    c.add_argument("id")
    c = cmd("spec", "create a new specification file")
    c.add_argument("-b", "--bundle", default=".")
    c.add_argument("--rootless", action="store_true")
    cmd("features", "show the enabled features")
    return p


# The command lines containerd, podman (conmon) and pallet's engine run for every container,
# parsed without argparse, whose import and parser construction cost pallet-runc ~15 ms.
# Only the exact forms below are taken: global options, then the command, then its options,
# then its positionals. Anything else (help, -v, abbreviations, "--", attached short values,
# a value or positional starting with "-", an unknown or repeated-positional form, an
# invalid choice or int, other commands) goes to argparse, so parsing results, errors and
# help stay argparse's own. Entries: flag -> (dest, kind); kind is None for a store_true
# flag, str or int for a value, or a tuple of choices.
_FAST_GLOBALS: dict[str, tuple[str, object]] = {
    "--root": ("root", str), "--log": ("log", str), "--log-format": ("log_format", ("text", "json")),
    "--debug": ("debug", None), "--systemd-cgroup": ("systemd_cgroup", None),
    "--criu": ("criu", str), "--rootless": ("rootless", str),
}
_FAST_GLOBAL_DEFAULTS = {"root": "/run/pallet-runc", "log": None, "log_format": "text",
                         "debug": False, "systemd_cgroup": False, "criu": None,
                         "rootless": "auto", "version": False}
_FAST_CREATE = {"-b": ("bundle", str), "--bundle": ("bundle", str),
                "--console-socket": ("console_socket", str), "--pid-file": ("pid_file", str),
                "--no-pivot": ("no_pivot", None), "--no-new-keyring": ("no_new_keyring", None),
                "--preserve-fds": ("preserve_fds", int)}
_FAST_CREATE_DEFAULTS = {"bundle": ".", "console_socket": None, "pid_file": None,
                         "no_pivot": False, "no_new_keyring": False, "preserve_fds": 0}
# command -> (options, defaults, positionals, how many positionals may be left out)
_FAST_COMMANDS: dict[str, tuple[dict[str, tuple[str, object]], dict[str, object],
                                tuple[str, ...], int]] = {
    "create": (_FAST_CREATE, _FAST_CREATE_DEFAULTS, ("id",), 0),
    "run": ({**_FAST_CREATE, "-d": ("detach", None), "--detach": ("detach", None),
             "--keep": ("keep", None)},
            {**_FAST_CREATE_DEFAULTS, "detach": False, "keep": False}, ("id",), 0),
    "start": ({}, {}, ("id",), 0),
    "state": ({}, {}, ("id",), 0),
    "kill": ({"-a": ("all", None), "--all": ("all", None)}, {"all": False, "signal": "SIGTERM"},
             ("id", "signal"), 1),
    "delete": ({"-f": ("force", None), "--force": ("force", None)}, {"force": False}, ("id",), 0),
    "list": ({"-f": ("format", ("table", "json")), "--format": ("format", ("table", "json")),
              "-q": ("quiet", None), "--quiet": ("quiet", None)},
             {"format": "table", "quiet": False}, (), 0),
    "pause": ({}, {}, ("id",), 0),
    "resume": ({}, {}, ("id",), 0),
}


class _Args:
    """The parsed command line: what argparse.Namespace would hold."""

    def __init__(self, **fields: object):
        self.__dict__.update(fields)


def _take_options(argv: list[str], i: int, table: dict[str, tuple[str, object]],
                  out: dict[str, object]) -> int | None:
    """Parse options from argv[i] into out; the index after them, or None to defer to argparse."""
    while i < len(argv) and argv[i].startswith("-"):
        flag, eq, value = argv[i].partition("=")
        if not eq:
            flag = argv[i]
        if flag not in table or (eq and not flag.startswith("--")):
            return None
        dest, kind = table[flag]
        i += 1
        if kind is None:
            if eq:
                return None
            out[dest] = True
            continue
        if not eq:
            if i == len(argv):
                return None
            value = argv[i]
            i += 1
        if not value or value.startswith("-"):
            return None
        if kind is int:
            try:
                out[dest] = int(value)
            except ValueError:
                return None
        elif isinstance(kind, tuple):
            if value not in kind:
                return None
            out[dest] = value
        else:
            out[dest] = value
    return i


def _parse_fast(argv: list[str]) -> _Args | None:
    """argparse's result for the common command lines, or None when argparse must decide."""
    fields = dict(_FAST_GLOBAL_DEFAULTS)
    i = _take_options(argv, 0, _FAST_GLOBALS, fields)
    if i is None or i == len(argv) or argv[i] not in _FAST_COMMANDS:
        return None
    command = argv[i]
    options, defaults, positionals, optional = _FAST_COMMANDS[command]
    fields.update(defaults)
    fields["command"] = command
    i = _take_options(argv, i + 1, options, fields)
    if i is None:
        return None
    rest = argv[i:]
    if not len(positionals) - optional <= len(rest) <= len(positionals):
        return None
    if any(a.startswith("-") for a in rest):
        return None
    fields.update(zip(positionals, rest, strict=False))
    return _Args(**fields)


def _debug_sink(line: str) -> None:
    """Where --debug sends pallet.oci's debug messages: the --log file, else stderr."""
    if _LOG["path"]:
        log("debug", line)
    else:
        print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    args = _parse_fast(argv) or _parser().parse_args(argv)
    _LOG["path"] = args.log
    _LOG["format"] = args.log_format
    if args.debug:
        from pallet.oci import debuglog

        debuglog.enabled = True
        debuglog.sink = _debug_sink
    if args.version:
        print(f"pallet-runc version {__version__}\nspec: 1.1.0")
        return 0
    if not args.command:
        _parser().print_help()
        return 0
    try:
        return int(globals()[f"cmd_{args.command}"](args) or 0)
    except PalletError as e:
        log("error", str(e))
        return 1
    except OSError as e:
        log("error", f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        return 1
    except KeyboardInterrupt:
        return 130


def _runtime(args: argparse.Namespace):  # noqa: ANN202
    from pallet.oci.create import Runtime

    return Runtime(args.root)


def _start_cgroup_sync() -> None:
    # create, run and exec move a process into a cgroup: the kernel's grace period for
    # that starts now, before the runtime is imported (see pallet.oci.cgsync).
    from pallet.oci.cgsync import start_early

    start_early()


def cmd_create(args: argparse.Namespace) -> int:
    _start_cgroup_sync()
    _runtime(args).create(args.id, args.bundle, console_socket=args.console_socket,
                          pid_file=args.pid_file, no_pivot=args.no_pivot,
                          preserve_fds=args.preserve_fds)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    _runtime(args).start(args.id)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _start_cgroup_sync()
    from pallet.oci.create import _become_subreaper, wait_exit

    rt = _runtime(args)
    if not args.detach:
        _become_subreaper()
    console = None
    if not args.console_socket and not args.detach and _wants_terminal(args.bundle):
        from pallet.oci.terminal import ConsoleReceiver

        console = ConsoleReceiver()  # runc gives `run` a terminal of its own; so do we
    try:
        st = rt.create(args.id, args.bundle,
                       console_socket=console.path if console else args.console_socket,
                       pid_file=args.pid_file, no_pivot=args.no_pivot,
                       preserve_fds=args.preserve_fds)
        master = console.master() if console else -1
    finally:
        if console:
            console.close()
    try:
        rt.start(args.id)
    except BaseException:
        rt.delete(args.id, force=True)
        raise
    if args.detach:
        return 0
    _forward_signals(st.pid)
    if master >= 0:
        from pallet.oci.terminal import proxy

        proxy(master, st.pid)
    code = wait_exit(st.pid)
    if not args.keep:
        rt.delete(args.id, force=True)
    return code


def _wants_terminal(bundle: str) -> bool:
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            return bool(jsonlite.loads(f.read()).get("process", {}).get("terminal"))
    except (OSError, ValueError, AttributeError):
        return False  # create reports the real problem


def _forward_signals(pid: int) -> None:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for s in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1,
              _signal.SIGUSR2, _signal.SIGWINCH):
        _signal.signal(s, forward)


def cmd_state(args: argparse.Namespace) -> int:
    print(jsonlite.dumps(_runtime(args).state(args.id), indent=2))
    return 0


def parse_signal(value: str) -> int:
    from pallet.errors import InvalidArgument

    if value.isdigit():
        return int(value)
    name = value.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    # The names signal.Signals has (SIG*, not SIG_*), looked up in _signal.
    number = getattr(_signal, name, None) if name.isupper() and not name.startswith("SIG_") \
        else None
    if not isinstance(number, int):
        raise InvalidArgument(f"unknown signal {value!r}")
    return number


def cmd_kill(args: argparse.Namespace) -> int:
    _runtime(args).kill(args.id, parse_signal(args.signal), all=args.all)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from pallet.errors import NotFound

    try:
        _runtime(args).delete(args.id, force=args.force)
    except NotFound:
        if args.force:
            return 0
        raise
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    items = _runtime(args).list()
    if args.quiet:
        for i in items:
            print(i["id"])
    elif args.format == "json":
        print(jsonlite.dumps(items))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(i["id"], str(i["pid"]), i["status"], i["bundle"], i["created"],
                  i.get("owner") or "root") for i in items]
        widths = [max(len(r[c]) for r in rows) for c in range(6)]
        for r in rows:
            print("   ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    _start_cgroup_sync()
    from pallet.errors import InvalidArgument
    from pallet.oci.create import wait_exit

    rt = _runtime(args)
    st = rt.load(args.id)
    if args.process:
        with open(args.process) as f:
            process = jsonlite.loads(f.read())
    else:
        if not args.args:
            raise InvalidArgument("exec needs a command: pallet-runc exec ID COMMAND [ARG...]")
        process = dict(st.config.get("process") or {})
        process["args"] = list(args.args)
        process["terminal"] = args.tty
        process["env"] = list(process.get("env") or []) + args.env
        if args.cwd:
            process["cwd"] = args.cwd
        if args.user:
            uid, _, gid = args.user.partition(":")
            process["user"] = {"uid": int(uid), "gid": int(gid or 0)}
        if args.additional_gids:
            process.setdefault("user", {})["additionalGids"] = [int(g) for g in
                                                                args.additional_gids]
        if args.cap:
            caps = {k: list(v) for k, v in (process.get("capabilities") or {}).items()}
            for kind in ("bounding", "effective", "permitted"):
                caps.setdefault(kind, [])
                caps[kind] += [c for c in args.cap if c not in caps[kind]]
            process["capabilities"] = caps
        if args.no_new_privs:
            process["noNewPrivileges"] = True
    console = None
    if process.get("terminal") and not args.console_socket and not args.detach:
        from pallet.oci.create import _become_subreaper
        from pallet.oci.terminal import ConsoleReceiver

        _become_subreaper()
        console = ConsoleReceiver()
    try:
        pid = rt.exec(args.id, process,
                      console_socket=console.path if console else args.console_socket,
                      preserve_fds=args.preserve_fds)
        master = console.master() if console else -1
    finally:
        if console:
            console.close()
    if args.pid_file:
        from pallet.oci.create import _write_pid_file

        _write_pid_file(args.pid_file, pid)
    if args.detach:
        return 0
    _forward_signals(pid)
    if master >= 0:
        from pallet.oci.terminal import proxy

        proxy(master, pid)
    return wait_exit(pid)


def cmd_ps(args: argparse.Namespace) -> int:
    import subprocess

    pids = _runtime(args).ps(args.id)
    if args.format == "json":
        print(jsonlite.dumps(pids))
        return 0
    out = subprocess.run(["ps", *(args.ps_args or ["-ef"])], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    header = out[0]
    pid_col = header.split().index("PID")
    print(header)
    for line in out[1:]:
        fields = line.split()
        if len(fields) > pid_col and fields[pid_col].isdigit() and int(fields[pid_col]) in pids:
            print(line)
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    _runtime(args).pause(args.id)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    _runtime(args).resume(args.id)
    return 0


def parse_bytes(value: str) -> int:
    from pallet.errors import InvalidArgument

    v = value.strip().lower()
    if v == "-1":
        return -1
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    num = v.rstrip("bkmgti")
    suffix = v[len(num):].rstrip("ib")[:1] or "b"
    try:
        return int(float(num) * units[suffix])
    except (ValueError, KeyError):
        raise InvalidArgument(f"invalid size {value!r}: use a number with an optional "
                              "k, m, g suffix") from None


def cmd_update(args: argparse.Namespace) -> int:
    from pallet.errors import InvalidArgument

    if args.resources:
        f = sys.stdin if args.resources == "-" else open(args.resources)  # noqa: SIM115
        with f:
            try:
                resources = jsonlite.loads(f.read())
            except ValueError as e:
                raise InvalidArgument(f"--resources {args.resources}: invalid JSON: {e}") \
                    from None
    else:
        resources = {}
        mem = {k: parse_bytes(getattr(args, a)) for k, a in
               (("limit", "memory"), ("swap", "memory_swap"),
                ("reservation", "memory_reservation")) if getattr(args, a)}
        if mem:
            resources["memory"] = mem
        cpu: dict[str, object] = {}
        for k, a in (("shares", "cpu_shares"), ("quota", "cpu_quota"),
                     ("period", "cpu_period"), ("realtimeRuntime", "cpu_rt_runtime"),
                     ("realtimePeriod", "cpu_rt_period")):
            if getattr(args, a):
                cpu[k] = int(getattr(args, a))
        if args.cpuset_cpus:
            cpu["cpus"] = args.cpuset_cpus
        if args.cpuset_mems:
            cpu["mems"] = args.cpuset_mems
        if cpu:
            resources["cpu"] = cpu
        if args.pids_limit:
            resources["pids"] = {"limit": int(args.pids_limit)}
        if args.blkio_weight:
            resources["blockIO"] = {"weight": int(args.blkio_weight)}
    _runtime(args).update(args.id, resources)
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    import gc

    gc.enable()  # the launcher turned the collector off for commands that end at once
    rt = _runtime(args)
    interval = float(args.interval.rstrip("s") or 5)
    while True:
        data = rt.stats(args.id)
        print(jsonlite.dumps({"type": "stats", "id": args.id, "data": data}), flush=True)
        if args.stats:
            return 0
        time.sleep(interval)


def cmd_spec(args: argparse.Namespace) -> int:
    from pallet.errors import AlreadyExists
    from pallet.oci.spec import default_spec

    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise AlreadyExists("File config.json exists. Remove it first")
    import json

    with open(path, "w") as f:
        json.dump(default_spec(args.rootless), f, indent="\t")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from pallet.oci.linux.capabilities import CAPS
    from pallet.oci.linux.mounts import _FLAGS, _PROPAGATION
    from pallet.oci.linux.seccomp import FILTER_FLAGS, supported_flags
    from pallet.oci.spec import NAMESPACE_TYPES

    features = {
        "ociVersionMin": "1.0.0", "ociVersionMax": "1.1.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": sorted(list(_FLAGS) + list(_PROPAGATION) + ["idmap", "ridmap"]),
        "linux": {
            "namespaces": [n for n in NAMESPACE_TYPES],
            "capabilities": sorted(CAPS),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": True,
                        "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                                    "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE",
                                    "SCMP_ACT_TRAP"],
                        "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
                                      "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ",
                                      "SCMP_CMP_NE"],
                        "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32",
                                  "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
                        "knownFlags": list(FILTER_FLAGS),
                        "supportedFlags": supported_flags()},
            "mountExtensions": {"idmap": {"enabled": True}},
            "apparmor": {"enabled": False}, "selinux": {"enabled": False},
        },
        "annotations": {"io.github.pallet.version": __version__},
    }
    print(jsonlite.dumps(features, indent=4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
