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

# Command-group modules, in the order their commands appear in --help.
GROUPS = [
    "pallet.cli.images",
    "pallet.cli.containers",
    "pallet.cli.networks",
    "pallet.cli.daemon",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pallet", description="Run and manage containers.")
    parser.add_argument("--root", default=None, help="state directory (default /var/lib/pallet)")
    parser.add_argument("--debug", action="store_true", help="print debug output")
    parser.add_argument("-v", "--version", action="store_true", help="print version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
