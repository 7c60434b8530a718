"""docker's `--filter KEY=VALUE` for the listing and pruning commands (images, volume ls,
network ls, the prunes; ps shares the parsing): the words parsed as docker's CLI parses
them, the keys a command accepts checked, and the tests several commands share.

Errors are the daemon's words (`invalid filter 'KEY'`, `invalid filter 'dangling=[x]'`),
raised as InvalidArgument: the commands exit 1 with them, as docker does. A word without
`=` is a usage error (125), which argparse reports through filter_arg.
"""

from __future__ import annotations

import re

from pallet.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


def filter_arg(flag: str) -> Callable[[str], str]:
    """An argparse `type` for FLAG (`-f, --filter` or `--filter`): docker's CLI refuses a
    word without `=` while parsing flags (exit 125, pflag's words)."""
    import argparse

    def check(word: str) -> str:
        if "=" not in word:
            raise argparse.ArgumentTypeError(
                f'invalid argument "{word}" for "{flag}" flag: bad format of filter '
                "(expected name=value)")
        return word

    check.__name__ = "filter"
    return check


class Filters:
    """The filters given (key -> values, in order), keys lowercased and values trimmed
    as docker's CLI sends them; a key not in ACCEPTED is refused."""

    def __init__(self, words: list[str], accepted: tuple[str, ...]):
        self.fields: dict[str, list[str]] = {}
        for word in words:
            key, sep, value = word.partition("=")
            if not sep:
                raise InvalidArgument("bad format of filter (expected name=value)")
            key = key.strip().lower()
            if key not in accepted:
                raise InvalidArgument(f"invalid filter '{key}'")
            values = self.fields.setdefault(key, [])
            if value.strip() not in values:
                values.append(value.strip())

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def __bool__(self) -> bool:
        return bool(self.fields)

    def get(self, key: str) -> list[str]:
        return self.fields.get(key, [])

    def bool(self, key: str) -> bool | None:
        """A boolean filter (dangling): None if not given; moby's GetBoolOrDefault."""
        values = self.fields.get(key)
        if values is None:
            return None
        false, true = {"0", "false"} & set(values), {"1", "true"} & set(values)
        if bool(false) == bool(true):
            raise InvalidArgument(f"invalid filter '{key}=[{' '.join(values)}]'")
        return bool(true)

    def labels_match(self, labels: Mapping[str, str]) -> bool:
        """`label=K[=V]` (each must hold) and `label!=K[=V]` (not all may hold): moby's
        matchLabels, as its prunes and lists use them."""
        return (_kv_match(self.get("label"), labels) and
                not ("label!" in self.fields and _kv_match(self.get("label!"), labels)))

    def until(self, now: float | None = None) -> int | None:
        """`until=` as unix nanoseconds (a timestamp, or a duration ago), None if not given."""
        values = self.get("until")
        if not values:
            return None
        if len(values) > 1:
            raise InvalidArgument("more than one until filter specified")
        return parse_timestamp(values[0], now)

    def matches(self, key: str, value: str) -> bool:
        """moby's Args.Match: any of KEY's values equals VALUE or, as a regular expression,
        is found in it (name=, driver= of volumes; name=, id= of networks)."""
        for pattern in self.get(key):
            if pattern == value:
                return True
            try:
                if re.search(pattern, value):
                    return True
            except re.error:
                continue
        return not self.get(key)


def _kv_match(wanted: list[str], labels: Mapping[str, str]) -> bool:
    for item in wanted:
        k, sep, v = item.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    return True


def parse_timestamp(value: str, now: float | None = None) -> int:
    """docker's `until=`/`since=` time: RFC 3339 (or a date), unix seconds, or a Go
    duration ago (10m, 1h30m); unix nanoseconds."""
    from pallet.engine.logs import parse_since

    try:
        return parse_since(value, now)
    except InvalidArgument:
        raise InvalidArgument(
            f'failed to parse value as time or duration: "{value}"') from None


def path_match(pattern: str, name: str) -> bool:
    """Go's path.Match: `*` and `?` stop at `/`, `[...]` classes (`[^...]` negated),
    `\\` escapes; a bad pattern is `syntax error in pattern`."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i + 1 >= len(pattern):
                raise InvalidArgument("syntax error in pattern")
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("^", "]") else i + 1)
            if end < 0:
                raise InvalidArgument("syntax error in pattern")
            body = pattern[i + 1:end]
            neg = body.startswith("^")
            body = body[1:] if neg else body
            if not body:
                raise InvalidArgument("syntax error in pattern")
            out.append("[" + ("^/" if neg else "") + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.fullmatch("".join(out), name) is not None
