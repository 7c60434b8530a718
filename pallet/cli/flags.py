"""What every command group shares with docker's CLI: its (Go pflag's) boolean flags on
argparse — `--rm`, `--rm=false`, `-d=false`, `-it=false` (-i, then -t=false), bare never
taking the next word — and its exit code 1 for a command that fails (exit_1_on_error).

Every command group builds its boolean flags with add_bool_flag; the CLI's parser runs
its words through pflag_shorthands before argparse sees them.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing costs ~10 ms to import on `pallet run`; only checkers need it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


class GoBool(argparse.Action):
    """A Go boolean flag: bare it means true and never takes the next word (`--sig-proxy
    busybox` leaves busybox the image); a value needs `=`, as `--sig-proxy=false`."""

    def __init__(self, option_strings: list[str], dest: str, **kw: Any):
        super().__init__(option_strings, dest, nargs=0, **kw)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        _, sep, value = (option_string or "").partition("=")
        setattr(namespace, self.dest, parse_bool(value) if sep else True)


def add_bool_flag(p: argparse.ArgumentParser, *flags: str, default: bool = False,
                  help: str | None = None, dest: str = "") -> None:
    """docker's boolean flag FLAGS ([SHORT,] LONG): `--rm`, `--rm=true`, `--rm=false`; a
    short form takes its value the same way (`-d=false`) through pflag_shorthands. DEST
    (default: LONG's name) when that is taken, as by a positional of the same name."""
    long = flags[-1]
    dest = dest or long.lstrip("-").replace("-", "_")
    p.add_argument(*flags, action=GoBool, dest=dest, default=default, help=help)
    # argparse matches a whole word before splitting it at "=": each spelling of a value
    # is an option string of its own, so the bare flag can take no argument at all.
    p.add_argument(*(f"{long}={v}" for v in _TRUE + _FALSE), action=GoBool, dest=dest,
                   default=default, help=argparse.SUPPRESS)


def parse_bool(value: str) -> bool:
    """A boolean flag's value as Go's strconv.ParseBool (docker's) reads it."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value: {value!r} (true or false)")


def pflag_shorthands(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """ARGV with each group of short flags that gives a value with `=` spelled as argparse
    reads it. pflag lets any shorthand take `=VALUE`: `-d=false`, and in a group the letters
    before are flags of their own (`-it=false` is -i -t=false, `-ie=A=B` is -i -e A=B);
    argparse would read `-d=false` as -d -f... The words after the first positional of a
    command that ends in one (run's IMAGE, exec's CONTAINER) are the container's and are
    left alone, as are words argparse would reject anyway (its errors say why)."""
    options = parser._option_string_actions
    # run, create, exec: flags end at the first positional (docker: SetInterspersed(false))
    ends = any(a.nargs in (argparse.REMAINDER, argparse.PARSER)
               for a in parser._actions if not a.option_strings)
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--" or not word.startswith("-") or word == "-":
            out.append(word)
            if word == "--" or ends:
                break
            continue
        action = options.get(word.partition("=")[0])
        if word.startswith("--"):
            out.append(word)
            if action is not None and action.nargs != 0 and "=" not in word and i < len(argv):
                out.append(argv[i])  # its value, which may look like anything
                i += 1
            continue
        group, takes_next = _shorthand_group(word, options)
        out.extend(group)
        if takes_next and i < len(argv):
            out.append(argv[i])
            i += 1
    out.extend(argv[i:])
    return out


def _shorthand_group(word: str, options: dict[str, argparse.Action]) -> tuple[list[str], bool]:
    """WORD (`-abc...`) as argparse words, and whether its last flag takes the next word."""
    letters = word[1:]
    out = []
    for j, c in enumerate(letters):
        action = options.get("-" + c)
        if action is None:
            return [word], False  # argparse's own "unknown flag"
        rest = letters[j + 1:]
        if len(rest) > 1 and rest[0] == "=":
            if j == 0 and not isinstance(action, GoBool):
                return [word], False  # `-e=X`: argparse reads it as pflag does
            long = max(action.option_strings, key=len)
            out.append(f"{long}={rest[1:]}" if isinstance(action, GoBool)
                       else f"-{c}={rest[1:]}")
            return out, False
        if action.nargs != 0:  # `-p8080:80`, or `-p` and the next word
            return [word], not rest
        out.append("-" + c)
    return [word], False


def exit_1_on_error(func: Callable[[argparse.Namespace], int]
                    ) -> Callable[[argparse.Namespace], int]:
    """docker exits 1 when a command other than run/create fails (no such container or
    image, unreachable registry, bad --change...); 125 stays for bad usage, which argparse
    reports first."""

    def wrapped(args: argparse.Namespace) -> int:
        import sys

        from pallet.errors import PalletError

        try:
            return func(args)
        except PalletError as e:
            print(f"Error: {e}", file=sys.stderr)
            return 1

    wrapped.__name__ = func.__name__
    return wrapped
