"""`pallet events` (also `pallet system events`): docker's event stream, read from the
events journal the engine writes (pallet.events), with --since, --until, -f and --format.

Parses and prints only; reading, following and filtering are pallet.events'.
"""

from __future__ import annotations

import argparse
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ROOT = "/var/lib/pallet"
# Go template names of docker's events.Message fields that its JSON spells otherwise.
_GO_NAMES = {"Status": "status", "ID": "id", "From": "from", "Scope": "scope", "Time": "time",
             "TimeNano": "timeNano"}


def add_parsers(sub: Any) -> None:
    add_arguments(sub.add_parser("events", help="get real time events",
                                 description="print events as they happen (and, with "
                                 "--since, those recorded since then)"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", default="", help="show events since this time: RFC 3339, unix "
                   "seconds or relative (10m, 1h30m)")
    p.add_argument("--until", default="", help="stream events until this time (same forms)")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="type=container|image|network|volume, event=, container=, image=, "
                   "network=, volume=, label=KEY[=VALUE]")
    p.add_argument("--format", default="", help="json, or a Go template such as "
                   "'{{.Type}} {{.Action}} {{.Actor.Attributes.name}}'")
    p.set_defaults(func=cmd_events)


class _Event(dict):  # noqa: FURB189 - a dict for the template engine and for json
    """An event as docker's templates see it: Go field names (.ID, .Status, .TimeNano) for
    what its JSON names in lower case; `{{json .}}` still prints the JSON names."""

    def __contains__(self, key: object) -> bool:
        return key in _GO_NAMES or super().__contains__(key)

    def __missing__(self, key: str) -> Any:
        real = _GO_NAMES.get(key)
        if real is None:
            raise KeyError(key)
        # A Go struct's field is always there: legacy fields a network or volume event
        # leaves out print as "".
        return super().get(real, "")


def cmd_events(args: argparse.Namespace) -> int:
    from pallet import events
    from pallet.cli import unwind_on_termination_signals
    from pallet.errors import PalletError

    unwind_on_termination_signals()
    try:
        filters = events.parse_filters(args.filter)
        since = _time(args.since, "--since")
        until = _time(args.until, "--until")
    except PalletError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    import os

    render = _renderer(args.format)
    out = sys.stdout
    root = os.path.abspath(args.root or DEFAULT_ROOT)  # the engine's, without importing it
    for ev in events.read(root, since=since, until=until, follow=True):
        if events.matches(ev, filters):
            out.write(render(ev) + "\n")
            out.flush()
    return 0


def _time(value: str, flag: str) -> int | None:
    if not value:
        return None
    from pallet.engine.logs import parse_since
    from pallet.errors import InvalidArgument

    try:
        return parse_since(value)
    except InvalidArgument:
        raise InvalidArgument(f"invalid value for {flag}: {value!r}; use a duration like "
                              "10m, an RFC 3339 time or unix seconds") from None


def _renderer(fmt: str) -> Any:
    from pallet import events

    if not fmt:
        return events.line
    from pallet.cli.template import Template, to_json

    if fmt == "json":
        return to_json
    tmpl = Template(fmt)
    return lambda ev: tmpl.render(_Event(ev))
