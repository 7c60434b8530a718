"""What a build copies from: its context directory (less what .dockerignore excludes) or
another stage's or image's filesystem (COPY --from), less what a COPY's --exclude patterns
name. A source path never leads out of its root: the path itself is resolved inside the
root (its symlinks followed there, as docker does), and everything under a copied directory
is walked by fd with O_NOFOLLOW, symlinks copied as links.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from pallet.build import dockerignore
from pallet.errors import InvalidArgument, NotFound

_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Entry:
    """One thing to copy: PATH relative to the source ("" is the source itself); FD is
    open for reading while a regular file's entry is being handled, else -1."""

    path: str
    st: os.stat_result
    link: str
    fd: int


@dataclass(frozen=True)
class Exclude:
    """COPY/ADD --exclude's PATTERNS for one copied source. BuildKit matches them against
    the paths under the source itself (`COPY --exclude=tmp src/ /d/` leaves out
    src/tmp), or, with --parents, under the context's root or the `/./` pivot: PREFIX is
    the source's own path there. NAME, if set, is what the source itself is matched as
    (a wildcard's match: its path below the wildcard's directory, so `COPY
    --exclude=*.txt hom* /d/` leaves out home.txt); a source named as is always copied."""

    patterns: tuple[dockerignore.Pattern, ...]
    prefix: str = ""
    name: str | None = None

    @classmethod
    def of(cls, patterns: tuple[dockerignore.Pattern, ...], src: str, rel: str,
           kept: str | None = None) -> Exclude:
        """PATTERNS for REL, one path the COPY source SRC names; KEPT: REL's path under
        the destination with --parents."""
        if kept is not None:
            return cls(patterns, prefix=kept, name=kept)
        clean = posixpath.normpath(src.lstrip("/")) if src.strip("/") else "."
        if not _GLOB.search(clean):
            return cls(patterns)
        fixed = []
        for part in clean.split("/"):
            if _GLOB.search(part):
                break
            fixed.append(part)
        base = "/".join(fixed)
        return cls(patterns, name=rel[len(base) + 1:] if base else rel)

    def skips(self, path: str) -> bool:
        """Whether PATH (relative to the source, "" the source itself) is left out."""
        if not path:
            return self.name is not None and dockerignore.excluded(list(self.patterns),
                                                                    self.name)
        return dockerignore.excluded(list(self.patterns), self._full(path))

    def may_include_below(self, path: str) -> bool:
        return dockerignore.may_include_below(list(self.patterns), self._full(path))

    def _full(self, path: str) -> str:
        return posixpath.join(self.prefix, path) if self.prefix else path


class Source:
    """A tree to copy from: ROOT (None: a build without a context), IGNORE its
    .dockerignore patterns; LABEL names it in errors; IMAGE_ID: the image it is a view of."""

    def __init__(self, root: str | None, ignore: list[dockerignore.Pattern] | None = None,
                 label: str = "build context", image_id: str = ""):
        self.root = root
        self.ignore = ignore or []
        self.label = label
        self.image_id = image_id  # a stage's or image's files: that image

    @classmethod
    def context(cls, root: str | None) -> Source:
        """A build context directory, with its .dockerignore."""
        if root is None:
            return cls(None)
        patterns: list[dockerignore.Pattern] = []
        try:
            with open(os.path.join(root, ".dockerignore"), encoding="utf-8") as f:
                patterns = dockerignore.parse(f.read())
        except FileNotFoundError:
            pass
        except ValueError as e:
            raise InvalidArgument(f"invalid .dockerignore pattern {e}") from None
        return cls(root, patterns)

    def _excluded(self, rel: str) -> bool:
        return bool(rel) and dockerignore.excluded(self.ignore, rel)

    def _missing(self, src: str) -> NotFound:
        if self.label == "build context":
            return NotFound(f"file not found in build context or excluded by .dockerignore: "
                            f"stat {src}: file does not exist")
        return NotFound(f"file not found in {self.label}: stat {src}: file does not exist")

    def resolve(self, src: str) -> list[str]:
        """The paths (relative to the root) that SRC names: itself, or what its
        wildcards match."""
        rel = posixpath.normpath(src.lstrip("/")) if src.strip("/") else "."
        if rel == ".." or rel.startswith("../"):
            raise InvalidArgument(f"Forbidden path outside the build context: {src} ()")
        rel = "" if rel == "." else rel
        if self.root is None:
            raise self._missing(src)
        if not _GLOB.search(rel):
            if self._excluded(rel):
                raise self._missing(src)
            os.close(self._open(rel, src))  # it exists, or NotFound
            return [rel]
        pattern = re.compile(_glob_regex(rel))
        found = [p for p, _ in self._paths("") if pattern.match(p) and not self._excluded(p)]
        if not found:
            raise NotFound("no source files were specified")
        return found

    def is_dir(self, rel: str) -> bool:
        fd = self._open(rel, rel)
        try:
            return stat.S_ISDIR(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    def _open(self, rel: str, src: str) -> int:
        from pallet.engine.users import open_in_rootfs

        assert self.root is not None
        try:
            return open_in_rootfs(self.root, rel or "/", os.O_PATH)
        except (FileNotFoundError, NotADirectoryError):
            raise self._missing(src) from None
        except OSError as e:
            raise InvalidArgument(f"cannot read {src} in the {self.label}: {e.strerror}"
                                  ) from None

    def _paths(self, rel: str) -> Iterator[tuple[str, os.stat_result]]:
        """Every path under REL (not REL itself), walked by fd, never through a link."""
        for e in self.walk(rel, files=False):
            if e.path:
                yield posixpath.join(rel, e.path) if rel else e.path, e.st

    def walk(self, rel: str, files: bool = True,
             exclude: Exclude | None = None) -> Iterator[Entry]:
        """REL and, for a directory, everything under it that neither .dockerignore nor
        EXCLUDE leaves out, parents first (an excluded directory is skipped whole, unless
        a `!` pattern may take back something under it); a regular file's FD is open
        while its entry is handled (FILES)."""
        fd = self._open(rel, rel)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                dfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    yield Entry("", st, "", -1)
                    yield from self._walk_dir(dfd, rel, "", files, exclude)
                finally:
                    os.close(dfd)
            elif stat.S_ISREG(st.st_mode) and files:
                rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    yield Entry("", st, "", rfd)
                finally:
                    os.close(rfd)
            else:
                yield Entry("", st, "", -1)
        finally:
            os.close(fd)

    def _walk_dir(self, dfd: int, base: str, rel: str, files: bool,
                  exclude: Exclude | None) -> Iterator[Entry]:
        for name in sorted(os.listdir(dfd)):
            path = posixpath.join(rel, name) if rel else name
            whole = posixpath.join(base, path) if base else path
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            if self._excluded(whole) and not (
                    is_dir and dockerignore.may_include_below(self.ignore, whole)):
                continue
            if exclude is not None and exclude.skips(path) and not (
                    is_dir and exclude.may_include_below(path)):
                continue
            if is_dir:
                cfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=dfd)
                try:
                    yield Entry(path, st, "", -1)
                    yield from self._walk_dir(cfd, base, path, files, exclude)
                finally:
                    os.close(cfd)
            elif stat.S_ISLNK(st.st_mode):
                yield Entry(path, st, os.readlink(name, dir_fd=dfd), -1)
            elif stat.S_ISREG(st.st_mode) and files:
                ffd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                try:
                    yield Entry(path, st, "", ffd)
                finally:
                    os.close(ffd)
            else:
                yield Entry(path, st, "", -1)

    def digest(self, rels: list[str],
               excludes: list[Exclude | None] | None = None) -> str:
        """A hash of the content and metadata (names, types, modes, link targets, not
        times) of RELS and everything under them (less what EXCLUDES, one per rel, leave
        out): a COPY step's cache key."""
        h = hashlib.sha256()
        for i, rel in enumerate(rels):
            h.update(f"source\0{rel}\0".encode())
            for e in self.walk(rel, exclude=excludes[i] if excludes else None):
                h.update(f"{e.path}\0{e.st.st_mode:o}\0{e.link}\0".encode())
                if e.fd >= 0:
                    h.update(_file_digest(e.fd).encode())
        return h.hexdigest()


def _file_digest(fd: int) -> str:
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
    os.lseek(fd, 0, os.SEEK_SET)
    return h.hexdigest()


def _glob_regex(pattern: str) -> str:
    """Go's filepath.Match as a regex: `*` and `?` stay within one path component."""
    out, i = ["^"], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise InvalidArgument(f"syntax error in pattern {pattern!r}")
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
            i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out) + "$"
