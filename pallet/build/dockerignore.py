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
    """The patterns of a .dockerignore file's TEXT."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        if not line:
            continue
        line = posixpath.normpath(line).lstrip("/") or "."
        out.append(Pattern(line, exclusion, re.compile(_regex(line))))
    return out


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
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch in _ESCAPE:
            out.append("\\" + ch)
        else:
            out.append(ch)
        i += 1
    out.append("$")
    return "".join(out)


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
