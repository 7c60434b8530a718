"""`pallet` container commands with docker's flags, output and exit codes: run, create,
start, stop, restart, kill, rm, ps, exec, logs, inspect, top, stats, cp, wait, ...

Parses and prints only; the work is pallet.engine.containers.Engine's. Exit codes:
125 engine error, 126 cannot invoke, 127 command not found, else the container's.
"""

from __future__ import annotations

import argparse
import os
import sys

from pallet.cli.filters import filter_arg
from pallet.cli.flags import add_bool_flag, exit_1_on_error

TYPE_CHECKING = False  # typing costs ~10 ms to import on `pallet run`; only checkers need it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pallet.engine.containers import Engine
    from pallet.engine.store import ContainerRecord

DETACH_KEYS = b"\x10\x11"  # ctrl-p ctrl-q, docker's default --detach-keys


def _engine(args: argparse.Namespace) -> Engine:
    from pallet.engine.containers import DEFAULT_ROOT, Engine

    return Engine(args.root or DEFAULT_ROOT)


def _fail(message: str, code: int) -> int:
    print(f"Error: {message}", file=sys.stderr)
    return code



# -- parsers ---------------------------------------------------------------------------------
def _create_args(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    p.add_argument("--help", action="help", help="show this help message and exit")
    add_bool_flag(p, "-i", "--interactive", default=False, help="keep STDIN open")
    add_bool_flag(p, "-t", "--tty", default=False, help="allocate a pseudo-TTY")
    a("--name", default="", help="assign a name to the container")
    a("-e", "--env", action="append", default=[], help="set environment variables")
    a("--env-file", action="append", default=[], help="read in a file of environment variables")
    a("-v", "--volume", action="append", default=[], help="bind mount a volume")
    a("--tmpfs", action="append", default=[], help="mount a tmpfs directory")
    a("-w", "--workdir", default="", help="working directory inside the container")
    a("-u", "--user", default="", help="username or UID (format: <name|uid>[:<group|gid>])")
    a("--group-add", action="append", default=[], help="add additional groups to join")
    a("--entrypoint", default=None, help="overwrite the default ENTRYPOINT of the image")
    a("--network", "--net", default="", help="connect a container to a network: bridge "
      "(the default, pallet0 with NAT), none, host, a network's name, or container:NAME|ID "
      "(share that container's network namespace)")
    a("-h", "--hostname", default="", help="container host name")
    a("--pod", default="", help="run in an existing pod (`pallet pod create`): its network, "
      "IPC and UTS namespaces")
    a("-p", "--publish", action="append", default=[], help="publish a container's port(s)")
    a("--ip", default="", help="IPv4 address (e.g., 172.30.100.104) on a network with --subnet")
    a("--ip6", default="", help="IPv6 address (e.g., 2001:db8::33) on an IPv6 network")
    a("--network-alias", action="append", default=[], help="add network-scoped alias for "
      "the container")
    a("--add-host", action="append", default=[], help="add a custom host-to-IP mapping "
      "(host:ip)")
    a("--restart", default="no", help="restart policy (no, on-failure[:N], always)")
    a("-m", "--memory", default=None, help="memory limit")
    a("--memory-swap", default=None, help="swap limit equal to memory plus swap: -1 unlimited")
    a("--cpus", default=None, help="number of CPUs")
    a("--pids-limit", default=None, help="tune container pids limit (-1 for unlimited)")
    a("--shm-size", default=None, help="size of /dev/shm")
    add_bool_flag(p, "--read-only", default=False,
                  help="mount the container's root filesystem as read only")
    a("--cap-add", action="append", default=[], help="add Linux capabilities")
    a("--cap-drop", action="append", default=[], help="drop Linux capabilities")
    add_bool_flag(p, "--privileged", default=False,
                  help="give extended privileges to this container")
    a("--security-opt", action="append", default=[], help="security options")
    a("--sysctl", action="append", default=[], help="sysctl options")
    a("-l", "--label", action="append", default=[], help="set meta data on a container")
    a("--label-file", action="append", default=[], help="read in a line delimited file of "
      "labels")
    a("--annotation", action="append", default=[], help="add an annotation to the container "
      "(passed through to the OCI runtime)")
    a("--cidfile", default="", help="write the container ID to the file")
    a("--stop-timeout", default=None, help="timeout (in seconds) to stop a container")
    a("--volumes-from", action="append", default=[], help="mount volumes from the specified "
      "container(s): CTR[:ro|:rw]")
    add_bool_flag(p, "--init", default=False,
                  help="run an init inside the container that reaps processes")
    a("--runtime", default="", help="runtime to use: pallet (default), runc, crun, runsc or a path")
    a("--pull", default="missing", help='pull image before creating ("always", "missing", "never")')
    a("--platform", default=None, help="set platform if server is multi-platform capable")
    a("--stop-signal", default="", help="signal to stop the container")
    a("--log-opt", action="append", default=[], help="log options: max-size=, max-file=")
    a("--log-driver", default="", help="logging driver: json-file (default), local, k8s-file "
      "(the same log file) or none")
    a("--mac-address", default="", help="container MAC address (e.g., 92:d0:c6:0a:29:33)")
    _host_args(p)
    add_bool_flag(p, "--rm", default=False, help="automatically remove the container when it exits")
    # health checks (docker's --health-* flags; see _healthcheck)
    a("--health-cmd", default="", help="command to run to check health")
    a("--health-interval", default="0s", help="time between running the check (ms|s|m|h)")
    a("--health-timeout", default="0s", help="maximum time to allow one check to run")
    a("--health-start-period", default="0s", help="start period for the container to "
      "initialize before starting health-retries countdown")
    a("--health-start-interval", default="0s", help="time between running the check during "
      "the start period")
    a("--health-retries", default="0", help="consecutive failures needed to report unhealthy")
    add_bool_flag(p, "--no-healthcheck", default=False,
                  help="disable any container-specified HEALTHCHECK")
    a("image", metavar="IMAGE")
    a("command", nargs=argparse.REMAINDER, metavar="COMMAND")


def _host_args(p: argparse.ArgumentParser) -> None:
    """run/create's mounts, devices, DNS, ulimits and cgroup resources (docker's flags)."""
    a = p.add_argument
    a("--mount", action="append", default=[], help="attach a filesystem mount: type=bind|"
      "volume|tmpfs,source=,target=[,readonly][,bind-propagation=][,volume-nocopy]"
      "[,tmpfs-size=][,tmpfs-mode=]")
    a("--device", action="append", default=[], help="add a host device: HOST[:CTR][:rwm]")
    a("--device-cgroup-rule", action="append", default=[], help="add a rule to the "
      "cgroup allowed devices list, as 'c 1:3 rwm'")
    a("--dns", action="append", default=[], help="set custom DNS servers")
    a("--dns-search", action="append", default=[], help="set custom DNS search domains")
    a("--dns-option", "--dns-opt", action="append", default=[], help="set DNS options")
    a("--domainname", default="", help="container NIS domain name")
    a("--ulimit", action="append", default=[], help="ulimit options: NAME=SOFT[:HARD]")
    a("--ipc", default="", help="IPC mode: private, shareable, host or container:NAME|ID")
    a("--pid", default="", help="PID namespace: host or container:NAME|ID")
    a("--uts", default="", help="UTS namespace: host")
    a("--cgroupns", default="", help="cgroup namespace: host or private")
    a("--userns", default="", help="user namespace: host (the only one pallet runs with)")
    a("--cgroup-parent", default="", help="optional parent cgroup for the container")
    add_bool_flag(p, "-P", "--publish-all", default=False, help="publish all exposed ports "
                  "to random ports")
    a("--expose", action="append", default=[], help="expose a port or a range of ports")
    a("-c", "--cpu-shares", default=None, help="CPU shares (relative weight)")
    a("--cpuset-cpus", default="", help="CPUs in which to allow execution (0-3, 0,1)")
    a("--cpuset-mems", default="", help="MEMs in which to allow execution (0-3, 0,1)")
    a("--cpu-period", default=None, help="limit CPU CFS (Completely Fair Scheduler) period")
    a("--cpu-quota", default=None, help="limit CPU CFS (Completely Fair Scheduler) quota")
    a("--memory-reservation", default=None, help="memory soft limit")
    add_bool_flag(p, "--oom-kill-disable", default=False, help="disable OOM Killer")
    a("--oom-score-adj", default=None, help="tune host's OOM preferences (-1000 to 1000)")
    a("--blkio-weight", default=None, help="block IO (relative weight), between 10 and 1000, "
      "or 0 to disable")


def _detach_keys_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detach-keys", default="ctrl-p,ctrl-q", help="override the key sequence "
                   "for detaching a container (ctrl-<x>,<y>,...)")


def add_parsers(sub: Any) -> None:
    def cmd(name: str, help_: str, func: Callable[[argparse.Namespace], int],
            **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, **kw)
        p.set_defaults(func=func)
        return p

    p = cmd("run", "create and run a new container from an image", cmd_run, add_help=False)
    _create_args(p)
    add_bool_flag(p, "-d", "--detach", default=False, help="run in the background, print id")
    p.add_argument("-a", "--attach", action="append", default=[], help="attach to STDIN, "
                   "STDOUT or STDERR")
    _detach_keys_arg(p)
    add_bool_flag(p, "--sig-proxy", default=True,
                  help="proxy received signals to the process "
                  "(default true; --sig-proxy=false turns it off)")
    p = cmd("create", "create a new container", cmd_create, add_help=False)
    _create_args(p)

    p = cmd("start", "start one or more stopped containers", exit_1_on_error(cmd_start))
    add_bool_flag(p, "-a", "--attach", help="attach STDOUT/STDERR")
    add_bool_flag(p, "-i", "--interactive", help="attach container's STDIN")
    _detach_keys_arg(p)
    p.add_argument("containers", nargs="+")
    p = cmd("stop", "stop one or more running containers", exit_1_on_error(cmd_stop))
    p.add_argument("-t", "--time", "--timeout", type=int, default=None,
                   help="seconds to wait before killing the container")
    p.add_argument("containers", nargs="+")
    p = cmd("restart", "restart one or more containers", exit_1_on_error(cmd_restart))
    p.add_argument("-t", "--time", "--timeout", type=int, default=None,
                   help="seconds to wait before killing the container")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p = cmd("kill", "kill one or more running containers", exit_1_on_error(cmd_kill))
    p.add_argument("-s", "--signal", default="KILL", help="signal to send to the container")
    p.add_argument("containers", nargs="+")
    p = cmd("rm", "remove one or more containers", exit_1_on_error(cmd_rm))
    add_bool_flag(p, "-f", "--force", help="force the removal of a running container")
    add_bool_flag(p, "-v", "--volumes", help="remove anonymous volumes")
    p.add_argument("containers", nargs="+")
    for name in ("ps",):
        p = cmd(name, "list containers", exit_1_on_error(cmd_ps))
        add_bool_flag(p, "-a", "--all", help="show all containers")
        add_bool_flag(p, "-q", "--quiet", help="only display container IDs")
        p.add_argument("-f", "--filter", action="append", default=[], help="filter output: "
                       "id, name, label, status, exited, ancestor, network, volume, publish, "
                       "health, before, since", type=filter_arg("-f, --filter"))
        p.add_argument("--format", default="table", help="table, json, 'table TEMPLATE' or "
                       "a Go template such as '{{.ID}}\\t{{.Names}}'")
        add_bool_flag(p, "--no-trunc", help="don't truncate output")
        p.add_argument("-n", "--last", type=int, default=-1, help="show n last created")
        add_bool_flag(p, "-l", "--latest", help="show the latest created")
        add_bool_flag(p, "-s", "--size", help="display total file sizes")
        add_bool_flag(p, "--pod", help="show the pod of each container (POD ID, PODNAME)")
    p = cmd("exec", "execute a command in a running container", cmd_exec)
    add_bool_flag(p, "-i", "--interactive", help="keep STDIN open")
    add_bool_flag(p, "-t", "--tty", help="allocate a pseudo-TTY")
    add_bool_flag(p, "-d", "--detach", help="run the command in the "
                   "background")
    p.add_argument("-e", "--env", action="append", default=[], help="set environment "
                   "variables (NAME=VALUE, or NAME to pass this shell's value)")
    p.add_argument("--env-file", action="append", default=[], help="read in a file of "
                   "environment variables")
    p.add_argument("-w", "--workdir", default="", help="working directory inside the "
                   "container (absolute)")
    _detach_keys_arg(p)
    p.add_argument("-u", "--user", default="", help="username or UID "
                   "(format: <name|uid>[:<group|gid>])")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    p = cmd("logs", "fetch the logs of a container", exit_1_on_error(cmd_logs))
    add_bool_flag(p, "-f", "--follow", help="follow log output")
    p.add_argument("--since", default="", help="show logs since a time: RFC 3339 "
                   "(2013-01-02T13:23:37Z), unix seconds or relative (42m, 1h30m)")
    p.add_argument("--until", default="", help="show logs before a time (as --since)")
    p.add_argument("-n", "--tail", default="all", help="number of lines from the end "
                   "(default all)")
    add_bool_flag(p, "-t", "--timestamps", help="show timestamps")
    add_bool_flag(p, "--details", help="show extra details provided to logs (none here: "
                  "pallet's log has no attributes)")
    p.add_argument("container", metavar="CONTAINER")
    p = cmd("inspect", "return low-level information on containers, images, networks or "
            "volumes", exit_1_on_error(cmd_inspect))
    p.add_argument("-f", "--format", default="", help="format the output with a Go "
                   "template, e.g. '{{.State.Pid}}' or '{{json .Config}}'")
    p.add_argument("--type", default="", help="container, image, network or volume (default: "
                   "the first kind that has the name, in that order)")
    add_bool_flag(p, "-s", "--size", help="add SizeRw and SizeRootFs "
                   "(containers)")
    p.add_argument("objects", nargs="+", metavar="NAME|ID")
    p = cmd("top", "display the running processes of a container", exit_1_on_error(cmd_top))
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, metavar="PS OPTIONS",
                   help="options for the host's ps (its output needs a PID column)")
    p = cmd("stats", "display a snapshot of containers' resource usage", exit_1_on_error(cmd_stats))
    add_bool_flag(p, "--no-stream", help="print one sample and exit")
    add_bool_flag(p, "-a", "--all", help="show all containers (default "
                   "shows just running)")
    p.add_argument("--format", default="table", help="table, json, 'table TEMPLATE' or a "
                   "Go template such as '{{.Name}} {{.CPUPerc}}'")
    add_bool_flag(p, "--no-trunc", help="do not truncate ids")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p = cmd("cp", "copy files between a container and the host; - is a tar stream on "
            "stdin or stdout", exit_1_on_error(cmd_cp))
    add_bool_flag(p, "-L", "--follow-link",
                   help="always follow a symbolic link in SRC")
    add_bool_flag(p, "-a", "--archive",
                   help="accepted for docker compatibility")
    add_bool_flag(p, "-q", "--quiet", help="accepted; pallet prints no "
                   "progress")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dest", metavar="DEST")
    p = cmd("wait", "block until containers stop, then print their exit codes",
            exit_1_on_error(cmd_wait))
    p.add_argument("containers", nargs="+")
    p = cmd("pause", "pause all processes within containers", exit_1_on_error(cmd_pause))
    p.add_argument("containers", nargs="+")
    p = cmd("unpause", "unpause all processes within containers", exit_1_on_error(cmd_unpause))
    p.add_argument("containers", nargs="+")
    p = cmd("port", "list port mappings of a container", exit_1_on_error(cmd_port))
    p.add_argument("container")
    p.add_argument("private_port", nargs="?")
    p = cmd("rename", "rename a container", exit_1_on_error(cmd_rename))
    p.add_argument("container")
    p.add_argument("new_name")
    p = cmd("attach", "attach to a running container's streams", exit_1_on_error(cmd_attach))
    add_bool_flag(p, "--no-stdin", help="do not attach STDIN")
    _detach_keys_arg(p)
    add_bool_flag(p, "--sig-proxy", default=True,
                  help="proxy received signals to the process (non-tty "
                  "only; default true; --sig-proxy=false turns it off)")
    p.add_argument("container", metavar="CONTAINER")
    p = cmd("info", "display system-wide information", exit_1_on_error(cmd_info))
    p.add_argument("-f", "--format", default="", help="format with a Go template, or json")
    p = cmd("version", "show the pallet version information", exit_1_on_error(cmd_version))
    p.add_argument("-f", "--format", default="", help="format with a Go template, or json")
    system = sub.add_parser("system", help="manage pallet", description="manage pallet")
    system.set_defaults(func=lambda args: (system.print_help(), 0)[1])
    ssub = system.add_subparsers(dest="system_command", metavar="COMMAND")
    p = ssub.add_parser("df", help="show disk usage", description="show disk usage")
    p.add_argument("--format", default="", help="table, json or a Go template")
    add_bool_flag(p, "-v", "--verbose", help="show detailed information on space usage")
    p.set_defaults(func=exit_1_on_error(cmd_system_df))
    p = ssub.add_parser("prune", help="remove stopped containers, unused networks, dangling "
                        "images (and unused volumes)", description="remove unused data")
    add_bool_flag(p, "-a", "--all", help="remove all unused images")
    add_bool_flag(p, "-f", "--force", help="do not prompt for confirmation")
    add_bool_flag(p, "--volumes", help="prune anonymous volumes")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   type=filter_arg("--filter"), help="until=TIMESTAMP|DURATION, "
                   "label=KEY[=VALUE], label!=KEY[=VALUE] (for each kind pruned)")
    p.set_defaults(func=exit_1_on_error(cmd_system_prune))
    p = ssub.add_parser("info", help="display system-wide information")
    p.add_argument("-f", "--format", default="", help="format with a Go template, or json")
    p.set_defaults(func=exit_1_on_error(cmd_info))
    from pallet.cli.events import add_arguments as add_events_arguments

    add_events_arguments(ssub.add_parser("events", help="get real time events"))

    volume = sub.add_parser("volume", help="manage volumes")
    vsub = volume.add_subparsers(dest="volume_command", metavar="COMMAND")
    p = vsub.add_parser("create", help="create a volume")
    p.add_argument("name", nargs="?", default="")
    p.add_argument("--name", dest="name_flag", default="", help="specify volume name")
    p.add_argument("--label", action="append", default=[])
    p.add_argument("-d", "--driver", default="local")
    p.add_argument("-o", "--opt", action="append", default=[], help="set driver specific "
                   "options: the local driver's type=, device=, o= (as mount(8) takes them)")
    p.set_defaults(func=exit_1_on_error(cmd_volume_create))
    p = vsub.add_parser("ls", aliases=["list"], help="list volumes")
    add_bool_flag(p, "-q", "--quiet", help="only display volume names")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   type=filter_arg("-f, --filter"), help="dangling=true|false, driver=, "
                   "label=KEY[=VALUE], name=")
    p.add_argument("--format", default="table", help="table, json, 'table TEMPLATE' or a "
                   "Go template such as '{{.Name}} {{.Mountpoint}}'")
    p.set_defaults(func=exit_1_on_error(cmd_volume_ls))
    p = vsub.add_parser("inspect", help="display detailed information on volumes")
    p.add_argument("-f", "--format", default="", help="a Go template, or json")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=exit_1_on_error(cmd_volume_inspect))
    p = vsub.add_parser("rm", help="remove volumes")
    add_bool_flag(p, "-f", "--force")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=exit_1_on_error(cmd_volume_rm))
    p = vsub.add_parser("prune", help="remove unused anonymous volumes (-a: all unused "
                        "volumes)")
    add_bool_flag(p, "-a", "--all", help="remove all unused volumes, not just anonymous ones")
    add_bool_flag(p, "-f", "--force", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   type=filter_arg("--filter"), help="label=KEY[=VALUE], label!=KEY[=VALUE]")
    p.set_defaults(func=exit_1_on_error(cmd_volume_prune))


# -- option parsing ----------------------------------------------------------------------------
def parse_int(value: str, flag: str) -> int:
    from pallet.errors import InvalidArgument

    try:
        return int(value)
    except ValueError:
        raise InvalidArgument(f'invalid argument "{value}" for "{flag}" flag: '
                              f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


def parse_cpus(value: str) -> float:
    from pallet.errors import InvalidArgument

    try:
        return float(value)
    except ValueError:
        raise InvalidArgument(f'invalid argument "{value}" for "--cpus" flag: failed to '
                              "parse as a number of CPUs") from None


def parse_swap(value: str) -> int:
    """--memory-swap: a size, or -1 for unlimited."""
    return -1 if value == "-1" else parse_size(value, "--memory-swap")


def parse_size(value: str, what: str) -> int:
    """docker's RAMInBytes: 512m, 1g, 100k, 1024 (binary units)."""
    from pallet.errors import InvalidArgument
    from pallet.units import ram_in_bytes

    try:
        return ram_in_bytes(value)
    except ValueError:
        raise InvalidArgument(f"invalid argument {value!r} for {what}: invalid size: "
                              f"{value!r}; use a number with an optional unit b, k, m or g"
                              ) from None


def _kv_lines(path: str) -> list[str]:
    """docker's --env-file/--label-file lines: blank lines and # comments dropped."""
    from pallet.errors import InvalidArgument

    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InvalidArgument(f"open {path}: {e.strerror.lower()}") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _env_file(path: str) -> list[str]:
    out = []
    for ln in _kv_lines(path):
        out.append(ln if "=" in ln else f"{ln}={os.environ[ln]}" if ln in os.environ else ln)
    return out


def _env(values: list[str], files: list[str]) -> list[str]:
    out = [e for f in files for e in _env_file(f)]
    for e in values:
        # docker: `-e NAME` passes the client's value of NAME, if set.
        out.append(e if "=" in e or e not in os.environ else f"{e}={os.environ[e]}")
    return out


def _labels(values: list[str], files: list[str] = ()) -> dict[str, str]:
    """-l and --label-file (files first, so a -l of the same key wins, as docker)."""
    lines = [ln for f in files for ln in _kv_lines(f)] + list(values)
    return {k: v for k, _, v in (x.partition("=") for x in lines)}


_CTRL_KEYS = {f"ctrl-{c}": i for i, c in enumerate("@abcdefghijklmnopqrstuvwxyz[\\]^_")}


def parse_detach_keys(text: str) -> bytes:
    """docker's --detach-keys: comma-separated single characters or ctrl-<x> (x in a-z, @,
    [, \\, ], ^, _), as its term.ToBytes; ctrl-p,ctrl-q is b"\\x10\\x11"."""
    from pallet.errors import InvalidArgument

    out = bytearray()
    for key in text.split(","):
        if len(key) == 1:
            out += key.encode()
        elif key.lower() in _CTRL_KEYS:
            out.append(_CTRL_KEYS[key.lower()])
        else:
            why = f"Unknown character: '{key}'"
            raise InvalidArgument(f"Invalid detach keys ({text}) provided: {why}")
    if not out:
        raise InvalidArgument(f"Invalid detach keys ({text}) provided")
    return bytes(out)


def _attach_streams(values: list[str], detach: bool) -> list[str]:
    """run -a STDIN|STDOUT|STDERR (any case), checked as docker's CLI does."""
    from pallet.errors import InvalidArgument

    out = []
    for v in values:
        if v.lower() not in ("stdin", "stdout", "stderr"):
            raise _flag_error(v, "-a, --attach", "valid streams are STDIN, STDOUT and STDERR")
        if v.lower() not in out:
            out.append(v.lower())
    if out and detach:
        raise InvalidArgument("Conflicting options: -a and -d")
    return out


def _request(args: argparse.Namespace) -> Any:
    from pallet.engine.containers import CreateRequest
    from pallet.engine.specgen import ContainerOptions
    from pallet.errors import InvalidArgument

    opts = ContainerOptions(
        command=list(args.command), env=_env(args.env, args.env_file), workdir=args.workdir,
        user=args.user, group_add=args.group_add, hostname=args.hostname, tty=args.tty,
        stdin=args.interactive, read_only=args.read_only, privileged=args.privileged,
        cap_add=args.cap_add, cap_drop=args.cap_drop, security_opt=args.security_opt,
        labels=_labels(args.label, args.label_file), init=args.init,
        stop_signal=args.stop_signal,
        annotations={k: v for k, _, v in (x.partition("=") for x in args.annotation)})
    if args.entrypoint is not None:
        opts.entrypoint = [args.entrypoint] if args.entrypoint else [""]
    if args.memory is not None:
        opts.memory = parse_size(args.memory, "--memory")
    if args.memory_swap is not None:
        opts.memory_swap = parse_swap(args.memory_swap)
    if args.shm_size is not None:
        opts.shm_size = parse_size(args.shm_size, "--shm-size")
    if args.cpus is not None:
        opts.cpus = parse_cpus(args.cpus)
    if args.pids_limit is not None:
        opts.pids_limit = parse_int(args.pids_limit, "--pids-limit")
    for s in args.sysctl:
        k, sep, v = s.partition("=")
        if not sep:
            raise InvalidArgument(f"invalid argument {s!r} for \"--sysctl\" flag: expected "
                                  "NAME=VALUE")
        opts.sysctls[k] = v
    req = CreateRequest(image=args.image, options=opts, name=args.name, network=args.network,
                        ports=args.publish, volumes=args.volume, tmpfs=args.tmpfs,
                        restart=args.restart, auto_remove=args.rm, runtime=args.runtime,
                        pull=args.pull, platform=args.platform, ip=args.ip, ip6=args.ip6,
                        aliases=args.network_alias, extra_hosts=args.add_host)
    _host_options(args, req)
    req.healthcheck = _healthcheck(args)
    req.volumes_from = list(args.volumes_from)
    if args.stop_timeout is not None:
        req.stop_timeout = parse_int(args.stop_timeout, "--stop-timeout")
    req.log_driver, req.mac_address = args.log_driver, args.mac_address
    for o in args.log_opt:
        k, _, v = o.partition("=")
        req.log_opts[k] = v
        if args.log_driver == "none":
            continue  # docker checks no option of the none driver
        if k == "max-size":
            req.log_max_size = parse_size(v, "--log-opt max-size")
        elif k == "max-file":
            req.log_max_files = int(v)
        else:
            raise InvalidArgument(f"unknown log opt {k!r}: use max-size or max-file")
    return req


def _flag_error(value: str, flag: str, why: str) -> Exception:
    from pallet.errors import InvalidArgument

    return InvalidArgument(f'invalid argument "{value}" for "{flag}" flag: {why}')


def _host_options(args: argparse.Namespace, req: Any) -> None:
    """The flags of _host_args into REQ and its options, checked as docker's CLI does."""
    import ipaddress

    from pallet.engine.specgen import parse_device, parse_ulimit
    from pallet.errors import InvalidArgument

    opts = req.options
    req.mounts = list(args.mount)
    req.expose, req.publish_all = list(args.expose), args.publish_all
    for d in args.device:
        opts.devices.append(_device(d, parse_device))
    opts.device_cgroup_rules = list(args.device_cgroup_rule)
    for ip in args.dns:
        try:
            ipaddress.ip_address(ip.strip())
        except ValueError:
            raise _flag_error(ip, "--dns", f"{ip} is not an ip address") from None
    for domain in args.dns_search:
        if domain != "." and (domain.startswith(".") or domain.endswith(".") or len(domain) > 255
                              or not domain):
            raise _flag_error(domain, "--dns-search", f"{domain} is not a valid domain")
    req.dns, req.dns_search, req.dns_options = (
        [ip.strip() for ip in args.dns], list(args.dns_search), list(args.dns_option))
    opts.domainname = args.domainname
    for u in args.ulimit:
        opts.ulimits = [x for x in opts.ulimits if x.name != u.partition("=")[0]]
        opts.ulimits.append(_ulimit(u, parse_ulimit))
    ints = (("cpu_shares", "-c, --cpu-shares"), ("cpu_period", "--cpu-period"),
            ("cpu_quota", "--cpu-quota"), ("oom_score_adj", "--oom-score-adj"),
            ("blkio_weight", "--blkio-weight"))
    for name, flag in ints:
        value = getattr(args, name)
        if value is not None:
            setattr(opts, name, parse_int(value, flag))
    opts.cpuset_cpus, opts.cpuset_mems = args.cpuset_cpus, args.cpuset_mems
    if args.memory_reservation is not None:
        opts.memory_reservation = parse_size(args.memory_reservation, "--memory-reservation")
    opts.oom_kill_disable = args.oom_kill_disable
    for flag, kind, modes in (("--ipc", "ipc", ("", "private", "shareable", "host")),
                              ("--pid", "pid", ("", "host")), ("--uts", "uts", ("", "host")),
                              ("--cgroupns", "cgroup", ("", "private", "host"))):
        mode = getattr(args, flag[2:])
        if mode not in modes and not (kind in ("ipc", "pid") and mode.startswith("container:")
                                      and mode != "container:"):
            what = {"cgroup": "CGROUP"}.get(kind, kind.upper())
            raise InvalidArgument(f"{flag}: invalid {what} mode")
        if mode == "host" or mode.startswith("container:"):
            req.namespaces[kind] = mode
    if args.userns not in ("", "host"):
        raise InvalidArgument("--userns: invalid USER mode")
    if args.uts == "host" and args.hostname:
        raise InvalidArgument("conflicting options: hostname and the UTS mode")
    req.cgroup_parent = args.cgroup_parent


def _device(text: str, parse: Callable[[str], Any]) -> Any:
    """--device checked as docker's CLI (validateLinuxPath) before statting the host node."""
    def mode(m: str) -> bool:
        return bool(m) and all(c in "rwm" for c in m) and len(set(m)) == len(m)

    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise _flag_error(text, "--device", f"bad format for path: {text}")
    ctr = parts[0] if len(parts) == 1 or (len(parts) == 2 and mode(parts[1])) else parts[1]
    if len(parts) == 3 and not mode(parts[2]):
        raise _flag_error(text, "--device", f"bad mode specified: {parts[2]}")
    if not ctr.startswith("/"):
        raise _flag_error(text, "--device", f"{ctr} is not an absolute path")
    return parse(text)


def _ulimit(text: str, parse: Callable[[str], Any]) -> Any:
    from pallet.engine.specgen import ULIMIT_NAMES

    name, sep, values = text.partition("=")
    if not sep:
        raise _flag_error(text, "--ulimit", f"invalid ulimit argument: {text}")
    if name not in ULIMIT_NAMES:
        raise _flag_error(text, "--ulimit", f"invalid ulimit type: {name}")
    soft, _, hard = values.partition(":")
    for what, v in (("soft", soft), ("hard", hard or soft)):
        try:
            int(v)
        except ValueError:
            raise _flag_error(text, "--ulimit", f'invalid ulimit {what} value {v}: '
                              f'strconv.ParseInt: parsing "{v}": invalid syntax') from None
    if hard and int(soft) > int(hard) and int(hard) != -1:
        raise _flag_error(text, "--ulimit", "ulimit soft limit must be less than or equal to "
                          f"hard limit: {soft} > {hard}")
    return parse(text)
def _healthcheck(args: argparse.Namespace) -> dict[str, Any] | None:
    """docker's --health-* and --no-healthcheck as a Config.Healthcheck (None: the image's)."""
    from pallet.errors import InvalidArgument
    from pallet.units import duration_seconds

    durations = {}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                      ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
        text = getattr(args, "health_" + flag.replace("-", "_"))
        try:
            seconds = -duration_seconds(text[1:]) if text.startswith("-") else \
                0.0 if text in ("0", "+0", "-0") else duration_seconds(text.lstrip("+"))
        except ValueError:
            raise InvalidArgument(f'invalid argument "{text}" for "--health-{flag}" flag: '
                                  f'time: invalid duration "{text}"') from None
        if seconds < 0:
            raise InvalidArgument(f"--health-{flag} cannot be negative")
        durations[key] = round(seconds * 1e9)
    try:
        retries = int(args.health_retries)
    except ValueError:
        raise InvalidArgument(f'invalid argument "{args.health_retries}" for '
                              '"--health-retries" flag: strconv.ParseInt: parsing '
                              f'"{args.health_retries}": invalid syntax') from None
    if retries < 0:
        raise InvalidArgument("--health-retries cannot be negative")
    given = args.health_cmd or retries or any(durations.values())
    if args.no_healthcheck:
        if given:
            raise InvalidArgument("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    if not given:
        return None
    hc: dict[str, Any] = {"Test": ["CMD-SHELL", args.health_cmd] if args.health_cmd else []}
    hc.update({k: v for k, v in durations.items() if v})
    if retries:
        hc["Retries"] = retries
    return hc


# -- run / create / start ------------------------------------------------------------------------
class _CidFile:
    """docker's --cidfile: made (empty) before the container, so a bad path fails first;
    the id written once the container exists; removed again if it never is."""

    def __init__(self, path: str):
        from pallet.errors import InvalidArgument

        self.path, self.fd = path, -1
        if not path:
            return
        if os.path.lexists(path):
            raise InvalidArgument("Container ID file found, make sure the other container "
                                  f"isn't running or delete {path}")
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise InvalidArgument(f"failed to create the container ID file: {e}") from None

    def __enter__(self) -> _CidFile:
        return self

    def write(self, cid: str) -> None:
        if self.fd >= 0:
            os.write(self.fd, cid.encode())
            os.close(self.fd)
            self.fd = -1
            self.path = ""

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:  # never written: the container was not created
            os.close(self.fd)
            os.unlink(self.path)


def _in_pod(eng: Engine, args: argparse.Namespace, req: Any) -> Any:
    """REQ, joined to --pod's namespaces (podman's refusals of per-container networking)."""
    if args.pod:
        from pallet.engine.user_pods import UserPods

        UserPods(eng).join(args.pod, req)
    return req


def cmd_create(args: argparse.Namespace) -> int:
    eng = _engine(args)
    with _CidFile(args.cidfile) as cidfile:
        rec = eng.create(_in_pod(eng, args, _request(args)))
        cidfile.write(rec.id)
    print(rec.id)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pallet.oci.cgsync import reap_cgroup_sync, start_cgroup_sync

    # The kernel's grace period that the container's move into its cgroups waits out
    # (see start_cgroup_sync) starts now and passes while the engine prepares it.
    sync = start_cgroup_sync()
    try:
        return _run(args)
    finally:
        reap_cgroup_sync(sync)


def _run(args: argparse.Namespace) -> int:
    from pallet.errors import InvalidArgument

    if args.detach and args.rm and args.restart not in ("no", ""):
        raise InvalidArgument("conflicting options: cannot combine --restart and --rm")
    attach = _attach_streams(args.attach, args.detach)
    keys = parse_detach_keys(args.detach_keys)
    eng = _engine(args)
    with _CidFile(args.cidfile) as cidfile:
        rec = eng.create(_in_pod(eng, args, _request(args)))
        cidfile.write(rec.id)
    return start_created(eng, rec, detach=args.detach, interactive=args.interactive,
                         tty=args.tty, sig_proxy=args.sig_proxy, remove=args.rm,
                         attach=attach, detach_keys=keys)


def start_created(eng: Engine, rec: ContainerRecord, *, detach: bool, interactive: bool,
                  tty: bool, sig_proxy: bool, remove: bool, shown: str = "",
                  attach: list[str] | None = None, detach_keys: bytes = DETACH_KEYS) -> int:
    """`run` after the create: start REC, detached (print SHOWN, else its id) or attached
    until it exits (its code); a failed start removes it if REMOVE. (compose run too.)
    ATTACH (run -a): only those streams, stdin only with INTERACTIVE."""
    from pallet.engine.containers import ContainerStartError

    tty = tty and not detach
    if attach:
        interactive = interactive and "stdin" in attach
        streams = ",".join(s for s in ("stdin", "stdout", "stderr")
                           if s in attach and (s != "stdin" or interactive))
    else:
        streams = "" if detach else ("stdin," if interactive else "") + "stdout,stderr"
    size = _term_size() if tty else None
    # docker proxies from the moment the container exists (a tty too: there ctrl-C is a
    # byte for the container, so only a kill reaches us); what comes before it starts waits.
    proxy = _SignalProxy(eng, rec) if sig_proxy and not detach else None
    try:
        rec, fd = eng.start(rec.id, streams=streams, stdin_once=interactive,
                            console_size=size)
    except ContainerStartError as e:
        _cleanup_failed(eng, rec, remove)
        return _fail(f"failed to start container {rec.id[:12]}: {e}", e.exit_code)
    except BaseException:
        _cleanup_failed(eng, rec, remove)
        raise
    if detach:
        if fd >= 0:
            os.close(fd)
        print(shown or rec.id)
        return 0
    if proxy is not None:
        proxy.started()
    if fd < 0:  # exited before we could attach: its output is in the log
        return _replay_and_code(eng, rec.id, remove)
    code = _attach_loop(fd, eng, rec, stdin=interactive, tty=tty, proxy=proxy,
                        keys=detach_keys)
    if code is None:
        return 0
    return code


def _cleanup_failed(eng: Engine, rec: ContainerRecord, remove: bool) -> None:
    # The monitor records the failure and exits; wait so --rm finds nothing in use.
    import contextlib

    from pallet.engine.containers import _wait_pid_exit
    from pallet.engine.monitor import alive
    from pallet.errors import PalletError

    pid = alive(eng.run_dir(rec.id))
    if pid:
        _wait_pid_exit(pid, 10)
    if remove:
        with contextlib.suppress(PalletError):
            eng.remove(rec.id, force=True, volumes=True)


def _replay_and_code(eng: Engine, cid: str, removed: bool) -> int:
    from pallet.errors import FailedPrecondition, NotFound

    try:
        try:
            for line in eng.logs(cid):
                os.write(2 if line.stream == "stderr" else 1, line.content)
        except FailedPrecondition:
            pass  # --log-driver none: no log to replay
        return eng.wait(cid)
    except NotFound:
        return 0


def cmd_start(args: argparse.Namespace) -> int:
    from pallet.engine.containers import ContainerStartError

    keys = parse_detach_keys(args.detach_keys)
    eng = _engine(args)
    rc = 0
    for ref in args.containers:
        streams = ""
        if args.attach:
            streams = ("stdin," if args.interactive else "") + "stdout,stderr"
        try:
            rec, fd = eng.start(ref, streams=streams, stdin_once=args.interactive)
        except ContainerStartError as e:
            rc = _fail(f"failed to start container {ref}: {e}", e.exit_code)
            continue
        if args.attach and fd >= 0:
            tty = bool(rec.config.get("tty"))
            proxy = None if tty else _SignalProxy(eng, rec)
            if proxy is not None:
                proxy.started()
            code = _attach_loop(fd, eng, rec, stdin=args.interactive, tty=tty, proxy=proxy,
                                keys=keys)
            return code if code is not None else 0
        if fd >= 0:
            os.close(fd)
        print(ref)
    return rc


def _term_size() -> tuple[int, int] | None:
    try:
        sz = os.get_terminal_size(0)
    except OSError:
        return None
    return sz.lines, sz.columns


class _SignalProxy:
    """docker's --sig-proxy: the signals this command receives go to the container, those
    that came before it started once it has. (Without it, SIGINT/SIGTERM end the command.)"""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")

    def __init__(self, eng: Engine, rec: ContainerRecord):
        import signal

        self.eng, self.rec = eng, rec
        self.pending: list[int] | None = []
        for name in self.SIGNALS:
            signal.signal(getattr(signal, name), self._received)

    def started(self) -> None:
        pending, self.pending = self.pending or [], None
        for signum in pending:
            self._send(signum)

    def _received(self, signum: int, frame: Any) -> None:
        if self.pending is not None:
            self.pending.append(signum)
        else:
            self._send(signum)

    def _send(self, signum: int) -> None:
        import contextlib

        from pallet.errors import PalletError

        with contextlib.suppress(PalletError, OSError):
            self.eng.handler(self.rec.runtime_handler).kill(self.rec.id, signum)


def _attach_loop(fd: int, eng: Engine, rec: ContainerRecord, *, stdin: bool, tty: bool,
                 proxy: _SignalProxy | None, keys: bytes = DETACH_KEYS) -> int | None:
    """Relay the terminal and the monitor until the container exits (its code) or the
    user types KEYS on a tty (None: detached). PROXY (started) passes signals on."""
    import select
    import signal

    from pallet.engine.monitor import frame, parse_frames

    restore = None
    if tty and os.isatty(0):
        import termios
        import tty as ttymod

        restore = termios.tcgetattr(0)
        ttymod.setraw(0)

        def winch(*_: Any) -> None:
            size = _term_size()
            if size:
                os.write(fd, frame(b"r", f"{size[0]} {size[1]}".encode()))
                eng.event(rec, "resize", height=size[0], width=size[1])

        signal.signal(signal.SIGWINCH, winch)
    buf = bytearray()
    reading_stdin = stdin
    prev = b""
    try:
        while True:
            rlist = [fd] + ([0] if reading_stdin else [])
            try:
                r, _, _ = select.select(rlist, [], [])
            except InterruptedError:
                continue
            if 0 in r:
                data = os.read(0, 65536)
                if not data:
                    reading_stdin = False
                    os.write(fd, frame(b"e"))
                else:
                    if tty:
                        joined = prev + data
                        if keys in joined:
                            before = joined[:joined.index(keys)][len(prev):]
                            if before:
                                os.write(fd, frame(b"i", before))
                            eng.event(rec, "detach")
                            return None
                        # a sequence may span reads: keep what could be its start
                        prev = joined[len(joined) - len(keys) + 1:] if len(keys) > 1 else b""
                    os.write(fd, frame(b"i", data))
            if fd in r:
                data = os.read(fd, 65536)
                if not data:
                    return eng.wait(rec.id)
                buf += data
                for kind, payload in parse_frames(buf):
                    if kind == b"1":
                        _write_all(1, payload)
                    elif kind == b"2":
                        _write_all(2, payload)
                    elif kind == b"x":
                        code, _, err = payload.decode(errors="replace").partition("\n")
                        if err:
                            print(f"Error: {err}", file=sys.stderr)
                        return int(code or 0)
    finally:
        if restore is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, restore)
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except BrokenPipeError:
            return
        data = data[n:]


# -- lifecycle ------------------------------------------------------------------------------------
def _each(args: argparse.Namespace, fn: Callable[[Engine, str], Any]) -> int:
    from pallet.errors import PalletError

    eng = _engine(args)
    rc = 0
    for ref in args.containers:
        try:
            fn(eng, ref)
            print(ref)
        except PalletError as e:
            print(f"Error: {e}", file=sys.stderr)
            rc = 1
    return rc


def cmd_stop(args: argparse.Namespace) -> int:
    return _each(args, lambda e, r: e.stop(r, args.time))


def cmd_restart(args: argparse.Namespace) -> int:
    return _each(args, lambda e, r: e.restart(r, args.time))


def cmd_kill(args: argparse.Namespace) -> int:
    from pallet.engine.containers import parse_signal

    sig = parse_signal(args.signal)
    return _each(args, lambda e, r: e.kill(r, sig))


def cmd_rm(args: argparse.Namespace) -> int:
    return _each(args, lambda e, r: e.remove(r, force=args.force, volumes=args.volumes))


def cmd_pause(args: argparse.Namespace) -> int:
    return _each(args, lambda e, r: e.pause(r))


def cmd_unpause(args: argparse.Namespace) -> int:
    return _each(args, lambda e, r: e.unpause(r))


def cmd_wait(args: argparse.Namespace) -> int:
    from pallet.errors import PalletError

    eng = _engine(args)
    rc = 0
    for ref in args.containers:
        try:
            print(eng.wait(ref), flush=True)
        except PalletError as e:
            print(f"Error: {e}", file=sys.stderr)
            rc = 1
    return rc


def cmd_rename(args: argparse.Namespace) -> int:
    _engine(args).rename(args.container, args.new_name)
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    from pallet.errors import FailedPrecondition

    keys = parse_detach_keys(args.detach_keys)
    eng = _engine(args)
    rec = eng.get(args.container)
    if rec.state != "running":
        raise FailedPrecondition("You cannot attach to a stopped container, start it first")
    stdin = bool(rec.config.get("stdin")) and not args.no_stdin
    fd = eng.attach(rec.id, ("stdin," if stdin else "") + "stdout,stderr")
    if fd < 0:
        raise FailedPrecondition(f"container {rec.id[:12]} has no monitor to attach to")
    tty = bool(rec.config.get("tty"))
    if tty and os.isatty(0):
        size = _term_size()
        if size:
            from pallet.engine.monitor import frame

            os.write(fd, frame(b"r", f"{size[0]} {size[1]}".encode()))
            eng.event(rec, "resize", height=size[0], width=size[1])
    # docker attach proxies only without a tty (with one, ctrl-C is the container's byte).
    proxy = _SignalProxy(eng, rec) if args.sig_proxy and not tty else None
    if proxy is not None:
        proxy.started()
    code = _attach_loop(fd, eng, rec, stdin=stdin, tty=tty, proxy=proxy, keys=keys)
    return code if code is not None else 0


# -- exec -----------------------------------------------------------------------------------------
def cmd_exec(args: argparse.Namespace) -> int:
    from pallet.engine.containers import ContainerStartError
    from pallet.engine.monitor import _become_subreaper
    from pallet.engine.store import new_id
    from pallet.errors import PalletError

    keys = parse_detach_keys(args.detach_keys)
    eng = _engine(args)
    env = _env(args.env, args.env_file)
    exec_id = new_id()
    if args.detach:
        return _exec_detached(eng, args, env, exec_id)
    _become_subreaper()
    try:
        if args.tty:
            return _exec_tty(eng, args, env, keys, exec_id)
        devnull = os.open(os.devnull, os.O_RDWR)
        stdio = (0 if args.interactive else devnull, 1, 2)
        pid = eng.exec(args.container, args.command, stdio=stdio, env=env,
                       workdir=args.workdir, user=args.user, exec_id=exec_id)
        os.close(devnull)
        from pallet.oci.create import wait_exit

        code = wait_exit(pid)
        eng.exec_died(args.container, exec_id, code)
        return code
    except (ContainerStartError, PalletError) as e:
        return _fail(str(e), _exec_error_code(e))


def _exec_error_code(e: Exception) -> int:
    """docker exec's exit code for an exec that did not start: the runtime's 126/127, 1 for a
    container that is not running, paused or missing, else 126."""
    from pallet.engine.containers import ContainerStartError
    from pallet.errors import FailedPrecondition, NotFound

    if isinstance(e, ContainerStartError):
        return e.exit_code
    return 1 if isinstance(e, (FailedPrecondition, NotFound)) else 126


def _exec_detached(eng: Engine, args: argparse.Namespace, env: list[str], exec_id: str) -> int:
    """exec -d: a child in a session of its own starts the process and stays its parent, to
    reap it and write exec_die as docker's daemon does; we return once it has started (or
    with its error)."""
    from pallet.engine.monitor import _become_subreaper, set_title
    from pallet.errors import PalletError

    r, w = os.pipe()
    if os.fork() == 0:  # pragma: no cover - the waiter (its effects are tested)
        try:
            os.close(r)
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.closerange(3, w)  # the client's socket, the zygote's pipes: not ours to hold
            os.closerange(w + 1, 1 << 16)
            set_title(f"pallet-exec-wait {exec_id[:12]} {args.container}")
            _become_subreaper()
            try:
                pid = eng.exec(args.container, args.command, stdio=(0, 1, 2), env=env,
                               workdir=args.workdir, user=args.user, exec_id=exec_id)
            except PalletError as e:
                os.write(w, f"{_exec_error_code(e)} {e}".encode())
                os._exit(0)
            os.close(w)
            from pallet.oci.create import wait_exit

            eng.exec_died(args.container, exec_id, wait_exit(pid))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        failed = f.read().decode()
    if failed:
        code, _, message = failed.partition(" ")
        return _fail(message, int(code))
    return 0


def _exec_tty(eng: Engine, args: argparse.Namespace, env: list[str], keys: bytes,
              exec_id: str) -> int:
    import select
    import socket
    import tempfile

    from pallet.oci.linux import console

    with tempfile.TemporaryDirectory(prefix="pallet-exec-") as tmp:
        path = os.path.join(tmp, "console.sock")
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(path)
        lsock.listen(1)
        pid = eng.exec(args.container, args.command, tty=True, console_socket=path, env=env,
                       workdir=args.workdir, user=args.user, exec_id=exec_id)
        conn, _ = lsock.accept()
        _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        conn.close()
        lsock.close()
    master = fds[0]
    size = _term_size()
    if size:
        console.set_winsize(master, size[0], size[1])
    restore = None
    if os.isatty(0):
        import termios
        import tty as ttymod

        restore = termios.tcgetattr(0)
        ttymod.setraw(0)
    try:
        reading = args.interactive
        prev = b""
        while True:
            r, _, _ = select.select([master] + ([0] if reading else []), [], [])
            if 0 in r:
                data = os.read(0, 65536)
                if not data:
                    reading = False
                else:
                    joined = prev + data
                    if keys in joined:
                        before = joined[:joined.index(keys)][len(prev):]
                        if before:
                            os.write(master, before)
                        _keep_console(master)
                        eng.exec_detached(args.container, exec_id)
                        return 0
                    prev = joined[len(joined) - len(keys) + 1:] if len(keys) > 1 else b""
                    os.write(master, data)
            if master in r:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                _write_all(1, data)
    finally:
        if restore is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, restore)
        os.close(master)
    from pallet.oci.create import wait_exit

    code = wait_exit(pid)
    eng.exec_died(args.container, exec_id, code)
    return code


def _keep_console(master: int) -> None:
    """exec -it detached: the process goes on, so its terminal must stay open; a child of
    its own session holds the console and drops what it prints until it exits."""
    if os.fork() == 0:
        try:
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            while os.read(master, 65536):
                pass
        except OSError:
            pass
        finally:
            os._exit(0)


# -- listing and reporting ---------------------------------------------------------------------------
def _ago(ns: int) -> str:
    """How long ago NS (epoch ns) was, as docker's ps says it (units.HumanDuration)."""
    import time

    from pallet.units import human_duration

    return human_duration(time.time() - ns / 1e9)


def _status(rec: ContainerRecord, health: str = "") -> str:
    if rec.state == "running":
        shown = {"": "", "starting": " (health: starting)"}.get(health, f" ({health})")
        return f"Up {_ago(rec.started_at)}{shown}"
    if rec.state == "paused":
        return f"Up {_ago(rec.started_at)} (Paused)"
    if rec.state == "restarting":
        return f"Restarting ({rec.exit_code}) {_ago(rec.finished_at)} ago"
    if rec.state == "exited":
        return f"Exited ({rec.exit_code}) {_ago(rec.finished_at)} ago"
    return rec.state.capitalize()


def _command(rec: ContainerRecord) -> str:
    cfg = rec.config
    img = cfg.get("image_config") or {}
    ep = cfg.get("entrypoint")
    ep = (img.get("Entrypoint") or []) if ep is None else [a for a in ep if a]
    cmd = cfg.get("cmd") or ([] if cfg.get("entrypoint") is not None else img.get("Cmd") or [])
    return " ".join([*ep, *cmd])


def _ports_str(ports: list[dict[str, Any]]) -> str:
    return ", ".join(f"{p.get('hostIP') or '0.0.0.0'}:{p['hostPort']}->"
                     f"{p['containerPort']}/{p['protocol']}" for p in ports)


PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
              "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS",
              "State": "STATE", "Status": "STATUS", "Size": "SIZE", "Names": "NAMES",
              "Labels": "LABELS", "Label": "LABEL", "Mounts": "MOUNTS",
              "LocalVolumes": "LOCAL VOLUMES", "Networks": "NETWORKS"}


def _networks_of(rec: ContainerRecord) -> list[str]:
    from pallet.engine.containers import container_networks

    mode = rec.config.get("network") or "none"
    names = [n["name"] for n in container_networks(rec.config)]
    return names if names or mode not in ("none", "host") else [mode]


def _row(rec: ContainerRecord, no_trunc: bool, health: str = "") -> dict[str, Any]:
    """One container as docker's ps formatter shows it (what {{.Field}} names); HEALTH its
    health status if it is running with a check."""
    import time

    command = _command(rec)
    mounts = [m for m in rec.config.get("mounts") or []
              if not m["destination"].startswith("/etc/")]
    vols = rec.config.get("volume_names") or []
    created = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(rec.created_at / 1e9))
    labels = dict(rec.labels)
    return {"ID": rec.id if no_trunc else rec.id[:12], "Image": rec.image_ref,
            # docker quotes the command in every format, json included.
            "Command": '"' + (command if no_trunc else _trunc(command, 20)) + '"',
            "CreatedAt": created, "RunningFor": _ago(rec.created_at) + " ago",
            "Status": _status(rec, health), "State": rec.state, "Names": rec.name,
            "Ports": _ports_str(rec.config.get("ports") or []),
            "Labels": ",".join(f"{k}={v}" for k, v in labels.items()),
            "Label": lambda key: labels.get(key, ""),
            "Networks": ",".join(_networks_of(rec)),
            "Mounts": ",".join(_mount_name(m["source"], vols) for m in mounts),
            "LocalVolumes": str(len(vols)), "Size": "0B"}


def _mount_name(source: str, volumes: list[str]) -> str:
    """A volume by its name, a bind mount by its host path (as docker ps shows them)."""
    name = os.path.basename(os.path.dirname(source))
    return name if source.endswith("/_data") and name in volumes else source


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """ROW without its methods: what {{json .}} and --format json print."""
    return {k: v for k, v in row.items() if not callable(v)}


def _trunc(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


def _print_formatted(fmt: str, rows: list[dict[str, Any]], headers: dict[str, str],
                     default: Callable[[], None]) -> None:
    """docker's --format (template.print_formatted, which the other listings share)."""
    from pallet.cli.template import print_formatted

    print_formatted(fmt, rows, headers, default)


_STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def _ps_filter(key: str, val: str, created_of: Callable[[str], int],
               health_of: Callable[[ContainerRecord], str] = lambda r: ""
               ) -> Callable[[ContainerRecord], bool]:
    """The test of one docker ps --filter KEY=VAL (label= is the store's, not here)."""
    from pallet.errors import InvalidArgument

    if key == "id":
        return lambda r: r.id.startswith(val)
    if key == "name":
        return lambda r: val.lstrip("/") in r.name
    if key == "status":
        if val not in _STATES:
            raise InvalidArgument(f"invalid filter 'status={val}': use one of "
                                  f"{', '.join(_STATES)}")
        return lambda r: r.state == val
    if key == "exited":
        if not val.lstrip("-").isdigit():
            raise InvalidArgument(f"invalid filter 'exited={val}': not an exit code")
        return lambda r: r.state == "exited" and str(r.exit_code) == val
    if key == "ancestor":
        return lambda r: (val in (r.image_ref, r.image_ref + ":latest")
                          or r.image_ref == val + ":latest" or r.image_id.startswith(val)
                          or r.image_id.startswith("sha256:" + val))
    if key == "network":
        return lambda r: val in _networks_of(r)
    if key == "volume":
        return lambda r: val in (r.config.get("volume_names") or []) or any(
            val in (m.get("destination"), m.get("source")) for m in r.config.get("mounts") or [])
    if key == "publish":
        return lambda r: any(val in (str(p["hostPort"]), f"{p['hostPort']}/{p['protocol']}")
                             for p in r.config.get("ports") or [])
    if key == "health":
        from pallet.engine.health import STATUSES

        if val not in STATUSES:
            raise InvalidArgument(f"Unrecognised filter value for health: {val}")
        return lambda r: (health_of(r) or "none") == val
    if key in ("before", "since"):
        when = created_of(val)
        return (lambda r: r.created_at < when) if key == "before" else \
            (lambda r: r.created_at > when)
    raise InvalidArgument(f"invalid filter '{key}'")


def _filters(values: list[str], created_of: Callable[[str], int] = lambda ref: 0,
             health_of: Callable[[ContainerRecord], str] = lambda r: ""
             ) -> tuple[Any, Callable[[ContainerRecord], bool]]:
    """docker ps --filter: the same key given twice matches either value (label: both)."""
    from pallet.engine.store import ContainerFilter
    from pallet.errors import InvalidArgument

    flt = ContainerFilter()
    labels: dict[str, str | None] = {}
    by_key: dict[str, list[Callable[[ContainerRecord], bool]]] = {}
    for f in values:
        key, sep, val = f.partition("=")
        if not sep:
            raise InvalidArgument(f"bad format of filter (expected name=value): {f}")
        if key == "label":
            k, s2, v2 = val.partition("=")
            labels[k] = v2 if s2 else None
            continue
        by_key.setdefault(key, []).append(_ps_filter(key, val, created_of, health_of))
    flt.labels = labels
    return flt, lambda r: all(any(t(r) for t in tests) for tests in by_key.values())


def cmd_ps(args: argparse.Namespace) -> int:
    eng = _engine(args)

    def health_of(r: ContainerRecord) -> str:
        """docker's health status in ps: only a running container's ("" without a check)."""
        h = eng.health(r) if r.state == "running" else None
        return h["Status"] if h else ""

    # before=/since= name a container: compare with when it was created
    flt, check = _filters(args.filter, lambda ref: eng.get(ref).created_at, health_of)
    show_all = args.all or any(f.startswith(("status=", "exited=", "before=", "since="))
                               for f in args.filter) or args.last >= 0 or args.latest
    recs = [r for r in eng.list(all=show_all, filters=flt) if check(r)]
    if args.latest:
        recs = recs[:1]
    elif args.last >= 0:
        recs = recs[:args.last]
    if args.quiet:
        for r in recs:
            print(r.id if args.no_trunc else r.id[:12])
        return 0
    rows = [_row(r, args.no_trunc, health_of(r)) for r in recs]
    cols = ["ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names"]
    headers = PS_HEADERS
    # docker's CLI asks for sizes with -s, or when the template shows them
    if args.size or ".Size" in (args.format or ""):
        for r, row in zip(recs, rows, strict=True):
            row["Size"] = _size_column(eng, r)
        cols += ["Size"] if args.size else []
    pods = {p.id: p for p in eng.store.list_pods()} if any(r.pod_id for r in recs) else {}
    for rec, row in zip(recs, rows, strict=True):
        pod = pods.get(rec.pod_id or "")
        if pod is not None and not row["Ports"]:  # a pod's member: the pod's ports (podman)
            row["Ports"] = _ports_str((pod.config.get("spec") or {}).get("port_mappings")
                                      or [])
        if getattr(args, "pod", False):  # podman's ps --pod: two more columns
            row["Pod"] = (rec.pod_id or "") if args.no_trunc else (rec.pod_id or "")[:12]
            row["PodName"] = pod.name if pod is not None else ""
    if getattr(args, "pod", False):
        cols += ["Pod", "PodName"]
        headers = {**PS_HEADERS, "Pod": "POD ID", "PodName": "PODNAME"}

    def table() -> None:
        _print_table([headers[c] for c in cols], [[r[c] for c in cols] for r in rows])

    _print_formatted(args.format, rows, headers, table)
    return 0


def _size_column(eng: Engine, rec: ContainerRecord) -> str:
    """docker's SIZE: the writable layer, and with the image's layers `(virtual ...)`."""
    from pallet.errors import PalletError

    try:
        rw, rootfs = eng.container_size(rec.id)
    except PalletError:  # removed meanwhile
        return "0B"
    return f"{_human_si(rw)} (virtual {_human_si(rootfs)})" if rootfs else _human_si(rw)


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Columns as docker's tabwriter pads them (3 spaces apart, at least 10 wide)."""
    from pallet.cli.template import align

    print(align("\n".join("\t".join(str(v) for v in line) for line in [headers, *rows])))


def cmd_logs(args: argparse.Namespace) -> int:
    from pallet.engine.logs import parse_since
    from pallet.errors import InvalidArgument

    since = parse_since(args.since) if args.since else 0
    until = parse_since(args.until) if args.until else 0
    if args.tail in ("all", ""):
        tail = -1
    else:
        try:
            tail = int(args.tail)
        except ValueError:
            raise InvalidArgument(f"invalid value for --tail: {args.tail!r}; use a number or "
                                  "all") from None
    eng = _engine(args)
    for line in eng.logs(args.container, follow=args.follow, since=since, until=until,
                         tail=tail):
        data = line.content
        if args.timestamps:
            data = line.timestamp.encode() + b" " + data
        _write_all(2 if line.stream == "stderr" else 1, data)
    return 0


INSPECT_TYPES = ("container", "image", "network", "volume")  # docker's order of guesses


def _inspect_object(args: argparse.Namespace, eng: Engine, kind: str, ref: str
                    ) -> dict[str, Any]:
    if kind == "container":
        obj = eng.inspect(ref)
        if args.size:
            obj["SizeRw"], obj["SizeRootFs"] = eng.container_size(obj["Id"])
        return obj
    if kind == "image":
        return eng.images.get(ref).to_json()
    if kind == "network":
        from pallet.cli.networks import _networks

        return _networks(args).inspect(ref)
    return _volume_json(eng.volumes.get(ref))


def cmd_inspect(args: argparse.Namespace) -> int:
    """docker inspect: each NAME|ID as the first of container, image, network, volume that
    has it (or only --type's kind)."""
    from pallet.cli.template import format_inspected
    from pallet.errors import InvalidArgument, NotFound, PalletError

    if args.type and args.type not in INSPECT_TYPES:
        return _fail(f'"{args.type}" is not a valid value for --type', 1)
    eng = _engine(args)
    out, rc = [], 0
    for ref in args.objects:
        for kind in (args.type,) if args.type else INSPECT_TYPES:
            try:
                out.append(_inspect_object(args, eng, kind, ref))
                break
            except (NotFound, InvalidArgument):  # not this kind (or no valid name of it)
                continue
            except PalletError as e:
                print(f"Error: {e}", file=sys.stderr)
                rc = 1
                break
        else:
            print(f"Error: No such {args.type or 'object'}: {ref}", file=sys.stderr)
            rc = 1
    sys.stdout.write(format_inspected(args.format, out))
    return rc


def cmd_top(args: argparse.Namespace) -> int:
    headers, rows = _engine(args).top(args.container, args.ps_args)
    _print_table(headers, rows)
    return 0


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n}B"


def _human_si(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n}B"


STATS_HEADERS = {"Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME",
                 "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %",
                 "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}
STATS_COLUMNS = ("ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs")


def cmd_stats(args: argparse.Namespace) -> int:
    from pallet.engine.stats import StatsSampler

    eng = _engine(args)
    with StatsSampler(eng) as sampler:
        return _stats_loop(args, eng, sampler)


def _stats_row(args: argparse.Namespace, r: Any, ref: str | None,
               a: dict[str, int] | None, b: dict[str, int] | None) -> dict[str, str]:
    """docker stats' columns of one container from two samples (None: not running)."""
    b = b or {}
    cpu = 0.0
    if a and b and b["t"] > a["t"]:
        cpu = max(0.0, (b["cpu_ns"] - a["cpu_ns"]) / ((b["t"] - a["t"]) * 1e9) * 100)
    usage, limit = b.get("memory", 0), b.get("memory_limit", 0)
    if not limit or limit >= 1 << 62:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    short = r.id if args.no_trunc else r.id[:12]
    return {"Container": ref or short, "ID": short, "Name": r.name,
            "CPUPerc": f"{cpu:.2f}%",
            "MemUsage": f"{_human(usage)} / {_human(limit)}",
            "MemPerc": f"{usage / limit * 100 if limit else 0:.2f}%",
            "NetIO": f"{_human_si(b.get('rx_bytes', 0))} / {_human_si(b.get('tx_bytes', 0))}",
            "BlockIO": f"{_human_si(b.get('blkio_read', 0))} / "
                       f"{_human_si(b.get('blkio_write', 0))}",
            "PIDs": str(b.get("pids", 0))}


def _stats_loop(args: argparse.Namespace, eng: Any, sampler: Any) -> int:
    import time

    from pallet.errors import PalletError

    # Without names, the containers come and go between frames, as docker's event stream
    # tells it; here the store's generation does (re-listing only after another process
    # wrote, or when a container listed as running turned out gone).
    follow = not args.containers and not args.no_stream
    generation = eng.store.generation()
    recs = [eng.get(r) for r in args.containers] if args.containers else \
        eng.list(all=args.all)
    # {{.Container}} is what the user named the container by (its short id if nothing).
    ref_of = {r.id: ref for r, ref in zip(recs, args.containers, strict=False)}
    stale = False
    # Each frame's CPU % is over the half second since the container's previous sample:
    # one pass over the containers per frame; one more for those new in this frame.
    prev: dict[str, dict[str, int] | None] = {}

    # Streaming, docker redraws one table in place on a terminal (cursor home, each line
    # ended by erase-to-end-of-line, the rest of the screen erased) and prints table after
    # table otherwise.
    redraw = not args.no_stream and os.isatty(1)
    if redraw:
        sys.stdout.write("\033[2J\033[H")
    while True:
        if follow and (stale or eng.store.generation() != generation):
            generation, stale = eng.store.generation(), False
            recs = eng.list(all=args.all)
            sampler.retain({r.id for r in recs})
        elif args.containers:
            # A named container that was not running may have started (or been removed).
            for i, r in enumerate(recs):
                if prev.get(r.id) is None and r.id in prev:
                    try:
                        recs[i] = eng.get(r.id)
                    except PalletError:
                        pass
        for r in recs:
            if prev.get(r.id) is None:
                prev[r.id] = sampler.sample(r)
        time.sleep(0.5)
        cur = {r.id: sampler.sample(r) for r in recs}
        rows, objs = [], []
        for r in recs:
            if cur[r.id] is None and r.state in ("running", "paused"):
                stale = True
            row = _stats_row(args, r, ref_of.get(r.id), prev.get(r.id), cur[r.id])
            objs.append(row)
            rows.append([row[k] for k in STATS_COLUMNS])
        prev = cur

        def table(rows: list[list[str]] = rows) -> None:
            _print_table([STATS_HEADERS[k] for k in STATS_COLUMNS], rows)

        if not redraw:
            _print_formatted(args.format, objs, STATS_HEADERS, table)
            if args.no_stream:
                return 0
            sys.stdout.flush()
            continue
        import contextlib
        import io

        frame = io.StringIO()
        with contextlib.redirect_stdout(frame):
            _print_formatted(args.format, objs, STATS_HEADERS, table)
        lines = frame.getvalue().rstrip("\n").split("\n")
        sys.stdout.write("\033[H" + "".join(f"{ln}\033[K\n" for ln in lines) + "\033[J")
        sys.stdout.flush()


def split_cp_arg(s: str) -> tuple[str, str] | None:
    """docker cp's CONTAINER:PATH as (container, path); None for a local path (one that
    starts with /, . or -, or has no colon)."""
    if ":" in s and not s.startswith(("/", ".", "-")):
        ctr, _, path = s.partition(":")
        return ctr, path
    return None


def cmd_cp(args: argparse.Namespace) -> int:
    from pallet.errors import InvalidArgument

    src, dest = split_cp_arg(args.src), split_cp_arg(args.dest)
    eng = _engine(args)
    if src and not dest:
        eng.copy_from(src[0], src[1], args.dest, follow_link=args.follow_link)
    elif dest and not src:
        eng.copy_to(dest[0], args.src, dest[1])
    else:
        raise InvalidArgument("copying between containers or between host paths is not "
                              "supported; give exactly one CONTAINER:PATH")
    return 0


def cmd_port(args: argparse.Namespace) -> int:
    for p in _engine(args).ports(args.container):
        key = f"{p['containerPort']}/{p['protocol']}"
        if args.private_port and args.private_port not in (key, str(p["containerPort"])):
            continue
        print(f"{key} -> {p.get('hostIP') or '0.0.0.0'}:{p['hostPort']}")
    return 0


def _goarch() -> str:
    import platform

    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(m, m)


def _print_object(fmt: str, obj: dict[str, Any]) -> bool:
    """--format for one object (info, version): json or a template; False if none given."""
    if not fmt:
        return False
    from pallet.cli.template import render, to_json

    print(to_json(obj) if fmt == "json" else render(fmt, obj))
    return True


def cmd_version(args: argparse.Namespace) -> int:
    import platform

    from pallet import __version__

    arch = _goarch()
    info = {"Client": {"Version": __version__, "Python": platform.python_version(),
                       "Os": "linux", "Arch": arch},
            "Server": {"Version": __version__, "Os": "linux", "Arch": arch,
                       "KernelVersion": os.uname().release,
                       "Components": [{"Name": "pallet", "Version": __version__,
                                       "Details": {"Runtime": "in-process OCI runtime"}}]}}
    if _print_object(args.format, info):
        return 0
    print(f"Client:\n Version:    {__version__}\n Python:     {platform.python_version()}\n"
          f" OS/Arch:    linux/{arch}\n\nEngine (daemonless):\n"
          f" Version:    {__version__}\n Runtime:    pallet (in-process OCI runtime)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import shutil

    from pallet import __version__

    eng = _engine(args)
    recs = eng.list(all=True)
    images = eng.images.list()
    runtimes = ["pallet"] + [r for r in ("runc", "crun", "runsc") if shutil.which(r)]
    cg = "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"
    hybrid = cg == "1" and os.path.isdir("/sys/fs/cgroup/unified")
    info = {"Containers": len(recs),
            "ContainersRunning": sum(r.state == "running" for r in recs),
            "ContainersPaused": sum(r.state == "paused" for r in recs),
            "ContainersStopped": sum(r.state not in ("running", "paused") for r in recs),
            "Images": len(images), "Driver": eng.images.snapshots.driver,
            "LoggingDriver": "cri (monitor)", "CgroupDriver": "cgroupfs", "CgroupVersion": cg,
            "Runtimes": {r: {"path": shutil.which(r) or r} for r in runtimes},
            "DefaultRuntime": "pallet", "KernelVersion": os.uname().release,
            "OperatingSystem": _os_name(), "OSType": "linux", "Architecture": os.uname().machine,
            "NCPU": os.cpu_count(),
            "MemTotal": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "Name": os.uname().nodename, "ServerVersion": __version__,
            "DockerRootDir": eng.root, "RunRootDir": eng.run_root}
    if _print_object(args.format, info):
        return 0
    print(f"Containers: {info['Containers']}\n Running: {info['ContainersRunning']}\n"
          f" Paused: {info['ContainersPaused']}\n Stopped: {info['ContainersStopped']}\n"
          f"Images: {len(images)}\nServer Version: {__version__}\n"
          f"Storage Driver: {info['Driver']}\n"
          f"Logging Driver: cri (monitor)\nCgroup Driver: cgroupfs\n"
          f"Cgroup Version: {cg}{' (hybrid)' if hybrid else ''}\n"
          f"Runtimes: {' '.join(runtimes)}\nDefault Runtime: pallet\n"
          f"Kernel Version: {info['KernelVersion']}\n"
          f"Operating System: {info['OperatingSystem']}\nOSType: linux\n"
          f"Architecture: {info['Architecture']}\nCPUs: {info['NCPU']}\n"
          f"Total Memory: {_human(info['MemTotal'])}\nName: {info['Name']}\n"
          f"Pallet Root Dir: {eng.root}\nRun Root Dir: {eng.run_root}")
    return 0


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def cmd_system_df(args: argparse.Namespace) -> int:
    from pallet.build.cache_mounts import CacheMounts

    eng = _engine(args)
    caches = CacheMounts(eng.root).list()
    if args.verbose:
        return _system_df_verbose(args, eng, caches)
    du = eng.disk_usage()
    rows = []
    for kind, key in (("Images", "images"), ("Containers", "containers"),
                      ("Local Volumes", "volumes")):
        total, active, size, reclaimable = du[key]
        pct = f" ({reclaimable * 100 // size}%)" if size else ""
        rows.append({"Type": kind, "TotalCount": str(total), "Active": str(active),
                     "Size": _human_si(size), "Reclaimable": _human_si(reclaimable) + pct})
    rows.append({"Type": "Build Cache", "TotalCount": str(len(caches)),
                 "Active": str(sum(c["in_use"] for c in caches)),
                 "Size": _human_si(sum(c["size"] for c in caches)),
                 "Reclaimable": _human_si(sum(c["size"] for c in caches if not c["in_use"]))})
    headers = {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
               "Reclaimable": "RECLAIMABLE"}

    def table() -> None:
        _print_table(list(headers.values()), [list(r.values()) for r in rows])

    _print_formatted(args.format, rows, headers, table)
    return 0


DF_IMAGE_COLUMNS = ("Repository", "Tag", "ID", "CreatedSince", "Size", "SharedSize",
                    "UniqueSize", "Containers")
DF_CONTAINER_COLUMNS = ("ID", "Image", "Command", "LocalVolumes", "Size", "RunningFor",
                        "Status", "Names")
DF_CACHE_HEADERS = {"ID": "CACHE ID", "CacheType": "CACHE TYPE", "Size": "SIZE",
                    "CreatedSince": "CREATED", "LastUsedSince": "LAST USED",
                    "UsageCount": "USAGE", "Shared": "SHARED"}


def _system_df_verbose(args: argparse.Namespace, eng: Engine,
                       caches: list[dict[str, Any]]) -> int:
    """docker's `system df -v`: a table each of images, containers, local volumes and the
    build cache (RUN --mount=type=cache directories; `*` marks one a build is using)."""
    import json
    import time

    from pallet.cli.images import IMAGE_HEADERS, _image_rows
    from pallet.units import human_duration

    detail = eng.disk_usage_detail()
    now = time.time()
    images = []
    for image, shared, containers in detail["images"]:
        for row in _image_rows([(image, image.names)], argparse.Namespace(no_trunc=False)):
            row.update(SharedSize=_human_si(shared), UniqueSize=_human_si(image.size - shared),
                       Containers=str(containers), Size=_human_si(image.size))
            images.append(row)
    ctrs = []
    for rec, rw in detail["containers"]:
        row = _row(rec, False)
        row["Size"] = _human_si(rw)
        ctrs.append(row)
    vols = [{"Name": v.name, "Links": str(links), "Size": _human_si(size)}
            for v, links, size in detail["volumes"]]
    cache = [{"ID": c["id"][:12] + ("*" if c["in_use"] else ""), "CacheType": "exec.cachemount",
              "Size": _human_si(c["size"]),
              "CreatedSince": human_duration(now - c["created"]) + " ago",
              "LastUsedSince": human_duration(now - c["last_used"]) + " ago",
              "UsageCount": "N/A", "Shared": "false"} for c in caches]
    if args.format == "json":
        print(json.dumps({"Images": images, "Containers": [_plain(r) for r in ctrs],
                          "Volumes": vols, "BuildCache": cache}, separators=(",", ":")))
        return 0
    if args.format not in ("", "table"):
        from pallet.errors import InvalidArgument

        raise InvalidArgument("system df -v takes --format table or json")

    def table(columns: tuple[str, ...], heads: dict[str, str], rows: list[dict[str, Any]]
              ) -> None:
        _print_table([heads[c] for c in columns], [[r[c] for c in columns] for r in rows])

    print("Images space usage:\n")
    table(DF_IMAGE_COLUMNS, IMAGE_HEADERS, images)
    print("\nContainers space usage:\n")
    table(DF_CONTAINER_COLUMNS, PS_HEADERS, ctrs)
    print("\nLocal Volumes space usage:\n")
    table(("Name", "Links", "Size"), VOLUME_HEADERS, vols)
    print(f"\nBuild cache usage: {_human_si(sum(c['size'] for c in caches))}\n")
    table(tuple(DF_CACHE_HEADERS), DF_CACHE_HEADERS, cache)
    return 0


def cmd_system_prune(args: argparse.Namespace) -> int:
    from pallet.cli.container_group import prune_containers
    from pallet.cli.filters import Filters
    from pallet.errors import InvalidArgument

    flt = Filters(args.filter, ("label", "label!", "until"))
    if args.volumes and "until" in flt:
        raise InvalidArgument('ERROR: The "until" filter is not supported with "--volumes"')
    if not args.force:
        what = ["all stopped containers", "all networks not used by at least one container"]
        if args.volumes:
            what.append("all anonymous volumes not used by at least one container")
        what.append("all images without at least one container associated to them"
                    if args.all else "all dangling images")
        what.append("unused build cache")
        print("WARNING! This will remove:\n" + "".join(f"  - {w}\n" for w in what))
        if flt:  # as docker lists them: these keys, sorted
            given = sorted(f"{k}={v}" for k in ("label", "label!", "until") for v in flt.get(k))
            print("  Items to be pruned will be filtered with:\n" + "".join(
                f"  - {w}\n" for w in given))
        print("Are you sure you want to continue? [y/N] ", end="", flush=True)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            print()
            return 0
    eng = _engine(args)
    removed, freed_ctrs = prune_containers(eng, flt)
    if removed:
        print("Deleted Containers:\n" + "\n".join(removed) + "\n")
    from pallet.cli.networks import prune_networks
    from pallet.engine.network import Networks

    nets = prune_networks(Networks(eng.store, eng.root), flt)
    if nets:
        print("Deleted Networks:\n" + "\n".join(nets) + "\n")
    if args.volumes:
        vols = eng.volumes.prune(all=args.all, only=lambda v: flt.labels_match(v.labels))
        if vols:
            print("Deleted Volumes:\n" + "\n".join(vols) + "\n")
    from pallet.cli.images import prune_choice

    lines, freed = eng.prune_images(all=args.all, only=prune_choice(flt))
    if lines:
        print("Deleted Images:\n" + "\n".join(lines) + "\n")
    cache_bytes = 0
    if not flt:  # cache directories have no labels or creation filter of their own
        from pallet.build.cache_mounts import CacheMounts

        caches, cache_bytes = CacheMounts(eng.root).prune()
        if caches:
            print("Deleted build cache objects:\n" + "\n".join(caches) + "\n")
    print(f"Total reclaimed space: {_human_si(freed_ctrs + freed + cache_bytes)}")
    return 0


# -- volumes --------------------------------------------------------------------------------------
def _volume_json(v: Any) -> dict[str, Any]:
    from pallet.engine.containers import _rfc3339

    return {"CreatedAt": _rfc3339(v.created_at), "Driver": v.driver, "Labels": v.labels,
            "Mountpoint": v.mountpoint, "Name": v.name, "Options": v.options, "Scope": "local"}


def cmd_volume_create(args: argparse.Namespace) -> int:
    from pallet.errors import InvalidArgument

    if args.name and args.name_flag:
        raise InvalidArgument("conflicting options: either specify --name or provide "
                              "positional arg, not both")
    # docker's MapOpts: KEY=VALUE, a bare KEY is KEY="", the last of a key wins.
    opts = {k: v for k, _, v in (o.partition("=") for o in args.opt)}
    v = _engine(args).volumes.create(args.name or args.name_flag, _labels(args.label),
                                     args.driver, opts)
    print(v.name)
    return 0


VOLUME_HEADERS = {"Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                  "Mountpoint": "MOUNTPOINT", "Labels": "LABELS", "Label": "LABEL",
                  "Links": "LINKS", "Size": "SIZE", "Group": "GROUP",
                  "Availability": "AVAILABILITY", "Status": "STATUS"}


def _volume_row(v: Any) -> dict[str, Any]:
    """One volume as docker's volume ls formatter shows it (Links and Size: `system df`'s)."""
    labels = dict(v.labels)
    return {"Availability": "N/A", "Driver": v.driver, "Group": "N/A",
            "Labels": ",".join(f"{k}={val}" for k, val in labels.items()),
            "Label": lambda key: labels.get(key, ""), "Links": "N/A",
            "Mountpoint": v.mountpoint, "Name": v.name, "Scope": "local", "Size": "N/A",
            "Status": "N/A"}


def _volumes_in_use(eng: Engine) -> set[str]:
    return {n for c in eng.store.list_containers() for n in c.config.get("volume_names") or []}


def cmd_volume_ls(args: argparse.Namespace) -> int:
    from pallet.cli.filters import Filters

    eng = _engine(args)
    flt = Filters(args.filter, ("dangling", "driver", "label", "name"))
    dangling = flt.bool("dangling")
    used = _volumes_in_use(eng) if dangling is not None else set()
    vols = [v for v in sorted(eng.volumes.list(), key=lambda v: v.name)
            if flt.matches("name", v.name) and flt.matches("driver", v.driver)
            and flt.labels_match(v.labels)
            and (dangling is None or dangling != (v.name in used))]
    if args.quiet:
        for v in vols:
            print(v.name)
        return 0
    rows = [_volume_row(v) for v in vols]
    _print_formatted(args.format, rows, VOLUME_HEADERS, lambda: _print_table(
        ["DRIVER", "VOLUME NAME"], [[r["Driver"], r["Name"]] for r in rows]))
    return 0


def cmd_volume_inspect(args: argparse.Namespace) -> int:

    from pallet.cli.template import format_inspected
    from pallet.errors import NotFound

    vols = _engine(args).volumes
    found, rc = [], 0
    for name in args.names:
        try:
            found.append(_volume_json(vols.get(name)))
        except NotFound:
            print(f"Error: No such volume: {name}", file=sys.stderr)
            rc = 1
    sys.stdout.write(format_inspected(args.format, found))
    return rc


def cmd_volume_rm(args: argparse.Namespace) -> int:
    from pallet.errors import PalletError

    vols = _engine(args).volumes
    rc = 0
    for n in args.names:
        try:
            vols.remove(n, force=args.force)
            print(n)
        except PalletError as e:
            print(f"Error: {e}", file=sys.stderr)
            rc = 1
    return rc


def cmd_volume_prune(args: argparse.Namespace) -> int:
    from pallet.cli.filters import Filters
    from pallet.engine.containers import _du

    flt = Filters(args.filter, ("label", "label!", "all"))
    every = args.all or bool(flt.bool("all"))  # docker's CLI sends -a as all=true
    if not args.force:
        what = "all local volumes" if every else "anonymous local volumes"
        print(f"WARNING! This will remove {what} not used by at least one container.")
        print("Are you sure you want to continue? [y/N] ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print()
            return 0
    sizes: dict[str, int] = {}

    def chosen(v: Any) -> bool:
        if not flt.labels_match(v.labels):
            return False
        sizes[v.name] = _du(v.mountpoint)  # measured before it goes
        return True

    removed = _engine(args).volumes.prune(all=every, only=chosen)
    if removed:
        print("Deleted Volumes:\n" + "\n".join(removed) + "\n")
    print(f"Total reclaimed space: {_human_si(sum(sizes.get(n, 0) for n in removed))}")
    return 0
