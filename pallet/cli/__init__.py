"""The `pallet` command line: a daemonless docker/nerdctl-compatible CLI.

Each command group lives in its own module under pallet.cli and exposes
`add_parsers(subparsers)`; each parser sets `func` to a handler taking the parsed
args and returning an exit code. Heavy imports stay inside the handlers.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pallet.errors import PalletError

TYPE_CHECKING = False  # typing costs ~10 ms to import; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

# Command-group modules, in the order their commands appear in --help.
GROUPS = [
    "pallet.cli.images",
    "pallet.cli.containers",
    "pallet.cli.networks",
    "pallet.cli.daemon",
]

# Which group defines each top-level command, so `pallet run` imports and builds one
# parser instead of every group's (~25 ms). A command missing here still works: an
# unknown word makes main() build every group, as --help does.
_CONTAINER_COMMANDS = (
    "run", "create", "start", "stop", "restart", "kill", "rm", "ps", "container-ls", "exec",
    "logs", "inspect", "top", "stats", "cp", "wait", "pause", "unpause", "port", "rename",
    "attach", "info", "version", "system", "volume")
_IMAGE_COMMANDS = ("pull", "push", "images", "login", "logout", "rmi", "tag", "save", "load",
                   "image")
COMMANDS = {
    **dict.fromkeys(_CONTAINER_COMMANDS, "pallet.cli.containers"),
    **dict.fromkeys(_IMAGE_COMMANDS, "pallet.cli.images"),
    "network": "pallet.cli.networks",
    "daemon": "pallet.cli.daemon",
}
# Global options that take a value (the word after them is not the command).
_VALUE_OPTIONS = ("--root",)


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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; with COMMAND (a key of COMMANDS), only that command's."""
    parser = argparse.ArgumentParser(prog="pallet", description="Run and manage containers.")
    parser.add_argument("--root", default=None, help="state directory (default /var/lib/pallet)")
    parser.add_argument("--debug", action="store_true", help="print debug output")
    parser.add_argument("-v", "--version", action="store_true", help="print version and exit")
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
        argv = sys.argv[1:]
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
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
