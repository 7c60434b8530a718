"""`pallet container SUBCOMMAND`: docker's management command for containers.

Each subcommand is the top-level command's own parser and handler, built by the
module that defines it (no copies); `ls` is `ps` under docker's names (ls, ps, list), and
`inspect` looks at containers only.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# docker container's subcommands that pallet's containers group defines, and the names
# they go by there.
_FROM_CONTAINERS = {"ps": ("ls", ["ps", "list"]), "run": ("run", []),
                    "create": ("create", []), "start": ("start", []), "stop": ("stop", []),
                    "restart": ("restart", []), "kill": ("kill", []), "rm": ("rm", []),
                    "exec": ("exec", []), "logs": ("logs", []), "inspect": ("inspect", []),
                    "top": ("top", []), "stats": ("stats", []), "cp": ("cp", []),
                    "wait": ("wait", []), "pause": ("pause", []),
                    "unpause": ("unpause", []), "port": ("port", []),
                    "rename": ("rename", []), "attach": ("attach", [])}


class _Renamed:
    """The subparsers action as a command module sees it: only the commands docker's
    `container` group has, under their names there; the rest are built and dropped."""

    def __init__(self, sub: Any, names: dict[str, tuple[str, list[str]]] | None = None):
        self._sub = sub
        self._names = names

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        import argparse

        if self._names is not None:
            if name not in self._names:
                return argparse.ArgumentParser(add_help=False)  # not in the group
            name, aliases = self._names[name]
            kwargs["aliases"] = aliases
        parser = self._sub.add_parser(name, **kwargs)
        return _ContainersOnly(parser) if name == "inspect" else parser


class _ContainersOnly:
    """`container inspect`'s parser: `inspect` whose objects are containers only."""

    def __init__(self, parser: Any):
        self._parser = parser

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)

    def set_defaults(self, **kwargs: Any) -> None:
        func = kwargs.get("func")
        if func is not None:
            def containers_only(args: Any) -> int:
                args.type = args.type or "container"
                return func(args)

            kwargs["func"] = containers_only
        self._parser.set_defaults(**kwargs)


def add_parsers(sub: Any) -> None:
    from pallet.cli import containers, filesystems, update
    from pallet.cli.filters import filter_arg
    from pallet.cli.flags import add_bool_flag, exit_1_on_error

    p = sub.add_parser("container", help="manage containers",
                       description="manage containers: the commands of the same names")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
    csub = p.add_subparsers(dest="container_command", metavar="COMMAND")
    containers.add_parsers(_Renamed(csub, _FROM_CONTAINERS))
    filesystems.add_container_parsers(_Renamed(csub))
    update.add_parsers(_Renamed(csub))
    q = csub.add_parser("prune", help="remove all stopped containers",
                        description="remove all stopped containers")
    add_bool_flag(q, "-f", "--force", help="do not prompt for confirmation")
    q.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   type=filter_arg("--filter"), help="until=TIMESTAMP|DURATION, "
                   "label=KEY[=VALUE], label!=KEY[=VALUE]")
    q.set_defaults(func=exit_1_on_error(cmd_prune))


def cmd_prune(args: Any) -> int:
    """docker container prune: removes the stopped containers, says which and how much."""
    import sys

    from pallet.cli.containers import _engine, _human_si
    from pallet.cli.filters import Filters

    flt = Filters(args.filter, CONTAINER_PRUNE_FILTERS)
    if not args.force:
        print("WARNING! This will remove all stopped containers.")
        print("Are you sure you want to continue? [y/N] ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print()
            return 0
    removed, freed = prune_containers(_engine(args), flt)
    if removed:
        print("Deleted Containers:\n" + "\n".join(removed) + "\n")
    print(f"Total reclaimed space: {_human_si(freed)}")
    return 0


CONTAINER_PRUNE_FILTERS = ("label", "label!", "until")


def prune_containers(eng: Any, flt: Any) -> tuple[list[str], int]:
    """Remove the stopped containers FLT (docker's until=, label=, label!=) chooses; their
    ids and the bytes their writable layers held. (container prune, system prune)"""
    import contextlib

    from pallet.errors import PalletError

    until = flt.until()
    removed, freed = [], 0
    for rec in eng.list(all=True):
        if rec.state not in ("exited", "created", "dead"):
            continue
        if not flt.labels_match(rec.labels) or (until is not None and rec.created_at >= until):
            continue
        with contextlib.suppress(PalletError):
            size = eng.container_size(rec.id)[0]
            eng.remove(rec.id)
            removed.append(rec.id)
            freed += size
    return removed, freed
