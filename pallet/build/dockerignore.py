"""`.dockerignore`: which files of the build context a build may not see, with docker's
rules (moby/patternmatcher): one pattern a line, `#` comments, `*` and `?` within one path
component, `**` across any number of them, a leading `!` re-including what an earlier
pattern excluded (the last matching pattern wins), and a pattern that matches a directory
excluding everything under it. Pure.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

_ESCAPE = set(".+()|{}$^")


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool  # a `!` line: re-includes
    regex: re.Pattern[str]


def parse(text: str) -> list[Pattern]:
    """The patterns of a .dockerignore file's TEXT; ValueError names a malformed one."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!") and not line[1:].strip():
            continue
        try:
            out.append(pattern(line))
        except ValueError as e:
            raise ValueError(f"{line!r}: {e}") from None
    return out


def pattern(text: str) -> Pattern:
    """One pattern (a leading `!` re-includes), as .dockerignore and COPY --exclude
    write them. ValueError: it is empty or malformed, with Go's words (filepath.Match's
    `syntax error in pattern`, moby/patternmatcher's `illegal exclusion pattern`)."""
    line = text.strip()
    exclusion = line.startswith("!")
    if exclusion:
        line = line[1:].strip()
        if not line:
            raise ValueError('illegal exclusion pattern: "!"')
    if not line:
        raise ValueError("empty pattern")
    line = posixpath.normpath(line).lstrip("/") or "."
    return Pattern(line, exclusion, re.compile(_regex(line)))


def _regex(pattern: str) -> str:
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(.*/)?")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            regex, i = _char_class(pattern, i + 1)
            out.append(regex)
            continue
        elif ch == "\\":
            if i + 1 >= n:
                raise ValueError("syntax error in pattern")
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch in _ESCAPE:
            out.append("\\" + ch)
        else:
            out.append(ch)
        i += 1
    out.append("$")
    return "".join(out)


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    """The `[...]` class whose body starts at I, as a regex, and the index after its
    `]`, with Go's filepath.Match rules: `^` negates, `a-z` ranges, `\\` escapes, and a
    class that is empty, unclosed or has a stray `-`/`]` is malformed."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    items: list[str] = []
    count = 0
    while True:
        if i < n and pattern[i] == "]" and count:
            break
        lo, i = _class_char(pattern, i)
        hi = lo
        if i < n and pattern[i] == "-":
            hi, i = _class_char(pattern, i + 1)
        count += 1
        if lo <= hi:  # Go: a reversed range matches nothing, it is no error
            items.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
    if not items:
        return ("[^/]" if negate else "(?!)"), i + 1
    return "[" + ("^" if negate else "") + "".join(items) + "]", i + 1


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    if i >= len(pattern) or pattern[i] in "-]":
        raise ValueError("syntax error in pattern")
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise ValueError("syntax error in pattern")
    return pattern[i], i + 1


def excluded(patterns: list[Pattern], path: str) -> bool:
    """Whether PATH (relative to the context, `/`-separated) is excluded."""
    path = posixpath.normpath(path).lstrip("/")
    parents = path.split("/")[:-1]
    matched = False
    for p in patterns:
        hit = bool(p.regex.match(path))
        if not hit:
            for i in range(len(parents)):
                if p.regex.match("/".join(parents[:i + 1])):
                    hit = True
                    break
        if hit:
            matched = not p.exclusion
    return matched


def may_include_below(patterns: list[Pattern], directory: str) -> bool:
    """Whether an exception pattern could re-include something under an excluded
    DIRECTORY (so a walk must still descend into it)."""
    directory = posixpath.normpath(directory).lstrip("/")
    for p in patterns:
        if not p.exclusion:
            continue
        if "*" in p.text or "?" in p.text or "[" in p.text:
            return True
        if p.text.startswith(directory + "/"):
            return True
    return False
