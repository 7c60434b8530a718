"""Compose's variable interpolation (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
`${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}`, `$$`) and its .env files.

Pure: the environment is a mapping given by the caller; unset variables are reported
through a list the caller prints (docker compose's WARN lines).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pallet.errors import InvalidArgument

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(InvalidArgument):
    """A value compose cannot interpolate: bad syntax or a required variable unset."""


def parse_env_file(text: str, path: str, lookup: Mapping[str, str] | None = None
                   ) -> dict[str, str | None]:
    """A .env / env_file: `KEY=VALUE` lines (optionally `export KEY=...`), `#` comments,
    single quotes literal, double quotes with \\n \\t \\" escapes, an unquoted value
    ending at ` #`. A bare `KEY` takes LOOKUP's value (None if it has none)."""
    out: dict[str, str | None] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not _NAME.fullmatch(key):
            raise InvalidArgument(f"{path}:{n}: invalid variable name {key!r}")
        if not sep:
            out[key] = (lookup or {}).get(key)
            continue
        value = value.strip()
        if value[:1] in ("'", '"'):
            q = value[0]
            end = value.find(q, 1)
            while q == '"' and end > 0 and value[end - 1] == "\\":
                end = value.find(q, end + 1)
            if end < 0:
                raise InvalidArgument(f"{path}:{n}: unterminated quoted value for {key}")
            value = value[1:end]
            if q == '"':
                value = (value.replace("\\n", "\n").replace("\\t", "\t")
                         .replace('\\"', '"').replace("\\\\", "\\"))
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
        out[key] = value
    return out


def interpolate(value: Any, env: Mapping[str, str], path: str,
                unset: list[str] | None = None) -> Any:
    """VALUE (YAML data) with every string interpolated; mapping keys are left alone.
    PATH names VALUE in errors (`services.web.image`); UNSET collects the names of unset
    variables used without a default."""
    if isinstance(value, str):
        return _string(value, env, path, unset)
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]", unset) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{path}.{k}" if path else str(k), unset)
                for k, v in value.items()}
    return value


def _string(text: str, env: Mapping[str, str], path: str, unset: list[str] | None) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c != "$":
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end = _closing(text, i + 2)
            if end < 0:
                raise _bad(path, text)
            out.append(_braced(text[i + 2:end], env, path, text, unset))
            i = end + 1
        else:
            m = _NAME.match(text, i + 1)
            if not m:
                raise _bad(path, text)
            out.append(_lookup(m.group(), env, unset))
            i = m.end()
    return "".join(out)


def _closing(text: str, start: int) -> int:
    """The index of the `}` closing a `${` whose body starts at START (nested `${}` in
    defaults allowed), or -1."""
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _braced(body: str, env: Mapping[str, str], path: str, whole: str,
            unset: list[str] | None) -> str:
    m = _NAME.match(body)
    if not m:
        raise _bad(path, whole)
    name, rest = m.group(), body[m.end():]
    if not rest:
        return _lookup(name, env, unset)
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(op):
            arg = rest[len(op):]
            break
    else:
        raise _bad(path, whole)
    is_set = name in env
    empty = not env.get(name)
    missing = empty if op.startswith(":") else not is_set
    if op.endswith("-"):
        return _string(arg, env, path, unset) if missing else env[name]
    if op.endswith("+"):
        return "" if missing else _string(arg, env, path, unset)
    if missing:  # ? and :?
        detail = _string(arg, env, path, unset)
        raise InterpolationError(f"required variable {name} is missing a value"
                                 + (f": {detail}" if detail else ""))
    return env[name]


def _lookup(name: str, env: Mapping[str, str], unset: list[str] | None) -> str:
    if name not in env:
        if unset is not None and name not in unset:
            unset.append(name)
        return ""
    return env[name]


def _bad(path: str, text: str) -> InterpolationError:
    return InterpolationError(f"invalid interpolation format for {path}: {text!r}; you may "
                              "need to escape any $ with another $")
