"""The `pallet` command line: a daemonless docker/nerdctl-compatible CLI.

Each command group lives in its own module under pallet.cli and exposes
`add_parsers(subparsers)`; each parser sets `func` to a handler taking the parsed
args and returning an exit code. Heavy imports stay inside the handlers.

Container commands run in a warm worker of the zygote (pallet.engine.zygote), which this
CLI starts on demand; the CLI itself then imports almost nothing. PALLET_NO_ZYGOTE=1, a
non-root user, or a zygote that cannot start: the command runs in this process instead.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing costs ~10 ms to import; only type checkers need it
if TYPE_CHECKING:
    import argparse
    from typing import Any, NoReturn

# Command-group modules, in the order their commands appear in --help.
GROUPS = [
    "pallet.cli.images",
    "pallet.cli.build",
    "pallet.cli.history",
    "pallet.cli.containers",
    "pallet.cli.filesystems",
    "pallet.cli.update",
    "pallet.cli.container_group",
    "pallet.cli.pods",
    "pallet.cli.networks",
    "pallet.cli.events",
    "pallet.cli.compose",
    "pallet.cli.daemon",
]

# Which group defines each top-level command, so `pallet run` imports and builds one
# parser instead of every group's (~25 ms). A command missing here still works: an
# unknown word makes main() build every group, as --help does.
_CONTAINER_COMMANDS = (
    "run", "create", "start", "stop", "restart", "kill", "rm", "ps", "exec",
    "logs", "inspect", "top", "stats", "cp", "wait", "pause", "unpause", "port", "rename",
    "attach", "info", "version", "system", "volume")
_FILESYSTEM_COMMANDS = ("diff", "export", "commit")
_IMAGE_COMMANDS = ("pull", "push", "images", "login", "logout", "rmi", "tag", "save", "load",
                   "image")
COMMANDS = {
    **dict.fromkeys(_CONTAINER_COMMANDS, "pallet.cli.containers"),
    **dict.fromkeys(_FILESYSTEM_COMMANDS, "pallet.cli.filesystems"),
    "update": "pallet.cli.update",
    "container": "pallet.cli.container_group",
    **dict.fromkeys(_IMAGE_COMMANDS, "pallet.cli.images"),
    "import": "pallet.cli.filesystems",
    "history": "pallet.cli.history",
    "build": "pallet.cli.build",
    "builder": "pallet.cli.build",
    "network": "pallet.cli.networks",
    "pod": "pallet.cli.pods",
    "events": "pallet.cli.events",
    "compose": "pallet.cli.compose",
    "daemon": "pallet.cli.daemon",
}
# Global options that take a value (the word after them is not the command).
_VALUE_OPTIONS = ("--root",)

# The commands the zygote serves: the allow-list it checks each request against.
ZYGOTE_COMMANDS = frozenset((*_CONTAINER_COMMANDS, *_FILESYSTEM_COMMANDS, "update",
                             "container", "compose", "pod"))
# Imported by the zygote before it serves, so that its workers (and the monitors it forks)
# start warm: what `run`, `exec`, `ps`, `stop` and `rm` import, found with -X importtime.
ZYGOTE_PRELOAD = (
    "argparse", "ctypes", "json", "sqlite3", "pallet.cli.containers",
    "pallet.engine.containers", "pallet.engine.handlers", "pallet.engine.logs",
    "pallet.engine.monitor", "pallet.engine.specgen", "pallet.engine.store",
    "pallet.engine.users", "pallet.engine.volumes", "pallet.engine.seccomp_default",
    "pallet.image.store", "pallet.oci.create", "pallet.oci.init", "pallet.oci.hooks",
    "pallet.oci.cgroups", "pallet.oci.cgroups.v1", "pallet.oci.cgroups.v2",
    "pallet.oci.cgroups.hybrid", "pallet.oci.linux.capabilities", "pallet.oci.linux.console",
    "pallet.oci.linux.mounts", "pallet.oci.linux.process", "pallet.oci.linux.rlimits",
    "pallet.oci.linux.rootfs", "pallet.oci.linux.seccomp", "pallet.oci.linux.syscalls",
)
_ZYGOTE_BOOT = ("import sys;sys.path[:0]=sys.argv[4].split(':');"
                "from pallet.cli import zygote_main;zygote_main()")


class _Skipped:
    """Stands in for the parser of a command that is not being run: building a parser
    costs ~0.3 ms, and a group like containers has thirty of them."""

    def __getattr__(self, name: str) -> Any:
        return self._swallow

    def _swallow(self, *args: Any, **kwargs: Any) -> _Skipped:
        return self


class _OnlyCommand:
    """The subparsers action as a command group sees it, building only COMMAND."""

    def __init__(self, sub: Any, command: str):
        self._sub = sub
        self._command = command

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        aliases = kwargs.get("aliases") or ()
        if name == self._command or self._command in aliases:
            return self._sub.add_parser(name, **kwargs)
        return _Skipped()


def _command_word(argv: list[str]) -> str:
    """The command in ARGV (the first word that is not a global option), or ''."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return argv[i + 1] if i + 1 < len(argv) else ""
        if not a.startswith("-"):
            return a
        i += 2 if a in _VALUE_OPTIONS else 1
    return ""


def _usage_error(prog: str, message: str) -> NoReturn:
    """docker's answer to bad usage: the error, where to read more, exit 125."""
    import re

    m = re.match(r"unrecognized arguments: (.*)", message)
    if m:
        first = m.group(1).split()[0]
        message = f"unknown flag: {first}" if first.startswith("-") else \
            f"unexpected argument: {m.group(1)}"
    elif message.startswith("the following arguments are required: "):
        names = [n for n in message.split(": ", 1)[1].split(", ")
                 if n not in ("COMMAND", "command")]  # a command's own argv is optional
        message = f'"{prog}" requires {" and ".join(names)}'
    elif m := re.match(r"argument (?:(-\w)/)?(--[\w-]+)(?:/[^:]*)?: ignored explicit "
                       r"argument '(.*)'$", message):
        # A Go bool flag given a value it does not take, in pflag's words.
        flag = f"{m.group(1)}, {m.group(2)}" if m.group(1) else m.group(2)
        message = (f'invalid argument "{m.group(3)}" for "{flag}" flag: '
                   f'strconv.ParseBool: parsing "{m.group(3)}": invalid syntax')
    elif m := re.match(r"argument [^:]*: (invalid argument \".*)", message, re.S):
        message = m.group(1)  # a flag's value refused by its type, in pflag's words
    elif message.startswith("argument COMMAND: invalid choice"):
        word = re.search(r"invalid choice: '([^']*)'", message)
        message = f"unknown command: {word.group(1) if word else message}"
    print(f"pallet: {message}\nSee '{prog} --help'.", file=sys.stderr)
    sys.exit(125)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; with COMMAND (a key of COMMANDS), only that command's."""
    import argparse
    import importlib

    from pallet.cli.flags import add_bool_flag

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:  # type: ignore[override]
            # Unknown flags surface at the top parser: name the command they were given to.
            prog = f"pallet {command}" if self.prog == "pallet" and command else self.prog
            _usage_error(prog, message)

        def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
            from pallet.cli.flags import pflag_shorthands

            argv = sys.argv[1:] if args is None else list(args)
            return super().parse_known_args(pflag_shorthands(self, argv), namespace)

    parser = Parser(prog="pallet", description="Run and manage containers.")
    parser.add_argument("--root", default=None, help="state directory (default /var/lib/pallet)")
    add_bool_flag(parser, "--debug", help="print debug output")
    add_bool_flag(parser, "-v", "--version", help="print version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    group = COMMANDS.get(command or "")
    for name in [group] if group else GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.add_parsers(_OnlyCommand(sub, command) if group else sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        # The launcher's call: a container command goes to the zygote. (An explicit ARGV,
        # from tests or the zygote's own worker, always runs here.)
        argv = sys.argv[1:]
        try:
            code = _via_zygote(argv)
        except KeyboardInterrupt:  # ctrl-C while the zygote was starting
            return 130
        if code is not None:
            return code
        if _command_word(argv) in ZYGOTE_COMMANDS:
            # In process, as a zygote worker would: unwind on SIGTERM/SIGHUP, not die.
            unwind_on_termination_signals()
    from pallet.errors import PalletError

    parser = build_parser(_command_word(argv))
    args = parser.parse_args(argv)
    if args.version:
        from pallet import __version__

        print(f"pallet version {__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except PalletError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 125
    except KeyboardInterrupt as e:
        # docker's CLI ends quietly on a termination signal, with 128 + its number.
        return 128 + getattr(e, "signum", 2)


class Interrupted(KeyboardInterrupt):
    """A termination signal (SIGTERM, SIGHUP) raised the way Python raises ctrl-C's
    KeyboardInterrupt, so a command unwinds (terminal restored, a half-made container rolled
    back) and ends with 128 + SIGNUM instead of dying where it stands."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def unwind_on_termination_signals() -> None:
    """SIGTERM and SIGHUP raise Interrupted from here on, as ctrl-C raises
    KeyboardInterrupt. (Commands that proxy signals to a container install their own.)"""
    import signal

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)


def _root_option(argv: list[str]) -> str:
    """The --root given before the command word, or ''."""
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
        if argv[i] == "--root" and i + 1 < len(argv):
            return argv[i + 1]
        if argv[i].startswith("--root="):
            return argv[i][7:]
        i += 2 if argv[i] in _VALUE_OPTIONS else 1
    return ""


def _via_zygote(argv: list[str]) -> int | None:
    """Run ARGV in a zygote worker and return its exit code; None to run it here."""
    if (_command_word(argv) not in ZYGOTE_COMMANDS or os.environ.get("PALLET_NO_ZYGOTE")
            or os.geteuid() != 0):
        return None
    from pallet.engine import zygote

    run_root = zygote.default_run_root(_root_option(argv) or zygote.DEFAULT_ROOT)
    try:
        sock = zygote.ensure_started(run_root, _ZYGOTE_BOOT, sys.path, zygote.cli_socket_name())
    except zygote.ZygoteUnavailable as e:
        if "--debug" in argv:
            print(f"pallet: running in-process: {e}", file=sys.stderr)
        return None
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:  # a closed stdio fd cannot be passed: the worker gets /dev/null
            fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        fds.append(fd)
    fds.append(os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
    umask = os.umask(0o022)
    os.umask(umask)
    request = {"call": "cli", "argv": argv, "env": dict(os.environ), "umask": umask}
    try:
        return zygote.call(sock, request, fds)
    except zygote.ZygoteUnavailable as e:
        # Refused before any work began (e.g. a zygote exiting as we connected).
        if "--debug" in argv:
            print(f"pallet: running in-process: {e}", file=sys.stderr)
        return None


def zygote_main() -> None:
    """The zygote process (started by _via_zygote): argv is
    [-c, pallet-zygote, RUN_ROOT, READY_FD, SYS_PATH, SOCKET_NAME]."""
    from pallet.engine import zygote

    run_root, ready, name = sys.argv[2], int(sys.argv[3]), sys.argv[5]
    zygote.set_title(f"pallet-zygote {run_root}")
    # The environment is that of the CLI that started it (-I ignores only PYTHON* names).
    idle = float(os.environ.get("PALLET_ZYGOTE_IDLE_TIMEOUT") or zygote.IDLE_TIMEOUT)
    sys.exit(zygote.serve(listen=run_root, preload=ZYGOTE_PRELOAD,
                          entry_points={"cli": _serve_cli}, fork_monitors=True,
                          idle_timeout=idle, ready_fd=ready, socket_name=name))


def _serve_cli(request: dict[str, Any], fds: list[int]) -> int:
    """The zygote's "cli" entry point, in a worker: one allow-listed container command, run
    as the caller (its stdio, cwd, environment and umask)."""
    from pallet.engine.zygote import adopt_client

    argv = [str(a) for a in request.get("argv") or []]
    # The client forwards what it receives; a worker left with SIGTERM's default would die
    # without an answer.
    unwind_on_termination_signals()
    adopt_client(request, fds)
    if _command_word(argv) not in ZYGOTE_COMMANDS:
        print(f"Error: the pallet zygote does not run {_command_word(argv)!r}",
              file=sys.stderr)
        return 125
    return main(argv)


if __name__ == "__main__":
    sys.exit(main())
