"""A container's filesystem changes against its image (docker diff's A/C/D), and the
layer tar of those changes (docker commit), with deletions as OCI `.wh.` whiteouts.

Pure walks of directories by fd: nothing here follows a symlink, so a link the container
made can never lead a walk, or the tar, out of its root.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from pallet.errors import FailedPrecondition

WHITEOUT_PREFIX = ".wh."
OPAQUE_XATTR = "trusted.overlay.opaque"
# Overlay features that store part of a change in the lower layers: an upper dir
# walk would then miss it. pallet mounts a container's overlay with both off
# (snapshot.overlay_upper_options); a kernel that refuses that keeps its own defaults.
INCOMPLETE_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")
O_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Change:
    """One changed path: A(dded), C(hanged) or D(eleted), absolute as the container sees it."""

    kind: str
    path: str

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


class LayerStack:
    """An image as overlayfs merges its layer dirs (top first): whiteouts hide lower
    entries, opaque dirs hide lower contents, a file hides a lower dir. Every component
    is lstat()ed, so no symlink inside a layer is ever followed."""

    def __init__(self, layers: list[str]):
        self.layers = layers
        self._cache: dict[tuple[str, ...], os.stat_result | None] = {}

    def lstat(self, path: str) -> os.stat_result | None:
        """What PATH is in the merged image, or None."""
        key = tuple(_parts(path))
        if key not in self._cache:
            self._cache[key] = self._lookup(list(key))
        return self._cache[key]

    def _lookup(self, parts: list[str]) -> os.stat_result | None:
        if not parts:
            return os.lstat(self.layers[0]) if self.layers else None
        for layer in self.layers:
            found, stop = self._in_layer(layer, parts)
            if found is not None or stop:
                return found
        return None

    @staticmethod
    def _in_layer(layer: str, parts: list[str]) -> tuple[os.stat_result | None, bool]:
        """PARTS in one layer: (its stat or None, whether the layers below are hidden)."""
        path, hidden = layer, False
        for i, name in enumerate(parts):
            path = os.path.join(path, name)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                return None, hidden
            if _is_whiteout(st):
                return None, True
            if i == len(parts) - 1:
                return st, True
            if not stat.S_ISDIR(st.st_mode):
                return None, True  # a file here hides whatever lies below it
            if _xattr(path, OPAQUE_XATTR) == b"y":
                hidden = True  # the layers below supply nothing under this dir
        return None, hidden

    def listdir(self, path: str) -> set[str]:
        """The names in directory PATH of the merged image."""
        parts = _parts(path)
        names: set[str] = set()
        hidden: set[str] = set()
        for layer in self.layers:
            found, stop = self._in_layer(layer, parts) if parts else (None, False)
            d = os.path.join(layer, *parts)
            if (not parts or (found is not None and stat.S_ISDIR(found.st_mode))):
                with contextlib.suppress(OSError):
                    for name in os.listdir(d):
                        if name in hidden or name in names:
                            continue
                        if _is_whiteout(os.lstat(os.path.join(d, name))):
                            hidden.add(name)
                        else:
                            names.add(name)
                if _xattr(d, OPAQUE_XATTR) == b"y":
                    break
            if stop and parts and (found is None or not stat.S_ISDIR(found.st_mode)):
                break
        return names


def _same_dir(a: os.stat_result, b: os.stat_result) -> bool:
    # docker's test for a directory that is only in the upper layer as a parent of a change
    return (stat.S_IMODE(a.st_mode), a.st_uid, a.st_gid, int(a.st_mtime)) == \
        (stat.S_IMODE(b.st_mode), b.st_uid, b.st_gid, int(b.st_mtime))


def _same_owner_mode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_mode, a.st_uid, a.st_gid) == (b.st_mode, b.st_uid, b.st_gid)


class _Found:
    """The changes found so far, and the directories already recorded as changed."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.recorded: set[str] = set()

    def parent_changed(self, path: str) -> None:
        """PATH was added or deleted: its parent directory changed (once, and / never)."""
        parent = os.path.dirname(path)
        if parent != "/" and parent not in self.recorded:
            self.changes.append(Change("C", parent))
            self.recorded.add(parent)


def _walk_skipping(top: str, skip: Callable[[str], bool]) -> Iterator[tuple[str, os.stat_result]]:
    """_walk(TOP) without the paths SKIP(path) names, nor anything below them."""
    skipped: list[str] = []
    for path, st in _walk(top):
        if any(path == s or path.startswith(s + "/") for s in skipped):
            continue
        if skip(path):
            skipped.append(path)
            continue
        yield path, st


def _walk(top: str) -> Iterator[tuple[str, os.stat_result]]:
    """(path below TOP as '/a/b', lstat) of every entry, depth first, names sorted;
    each directory opened O_NOFOLLOW from its parent, so no symlink is ever entered."""
    yield from _walk_fd(os.open(top, _WALK_FLAGS), "")


_WALK_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _walk_fd(dfd: int, rel: str) -> Iterator[tuple[str, os.stat_result]]:
    try:
        for name in sorted(os.listdir(dfd)):
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed as we looked (a running container)
            path = f"{rel}/{name}"
            yield path, st
            if stat.S_ISDIR(st.st_mode):
                try:
                    sub = os.open(name, _WALK_FLAGS, dir_fd=dfd)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                yield from _walk_fd(sub, path)
    finally:
        os.close(dfd)


def overlay_changes(upper: str, lowers: list[str],
                    skip: Callable[[str], bool] = lambda path: False) -> list[Change]:
    """The changes an overlay UPPER dir holds over its LOWERS (top first), as docker's
    overlay driver reports them: a whiteout is D, an entry the image has is C (a directory
    only when it changed itself), any other A, and the parent of an A or D is C. An opaque
    directory's hidden image entries are D each. SKIP(path) drops a path and all below it
    (the mount points the runtime made)."""
    image = LayerStack(lowers)
    found = _Found()
    out, recorded, parent_changed = found.changes, found.recorded, found.parent_changed
    for path, st in _walk_skipping(upper, skip):
        full = upper + path
        for name in INCOMPLETE_XATTRS:
            if _xattr(full, name) is not None:
                raise FailedPrecondition(
                    f"{path} is stored with overlayfs's {name.rsplit('.', 1)[1]} feature: "
                    "its change cannot be read from the container's upper layer alone; "
                    "mount overlay with redirect_dir=off,metacopy=off")
        if _is_whiteout(st):
            if image.lstat(path) is None:
                continue  # hides nothing the image has (made and deleted here)
            parent_changed(path)
            out.append(Change("D", path))
            continue
        lower = image.lstat(path)
        if lower is None:
            kind = "A"
        elif (stat.S_ISDIR(st.st_mode) and stat.S_ISDIR(lower.st_mode)
              and _same_dir(st, lower) and _xattr(full, OPAQUE_XATTR) != b"y"):
            continue  # a directory only here as the parent of a change below it
        else:
            kind = "C"
        if kind == "A":
            parent_changed(path)
        out.append(Change(kind, path))
        if stat.S_ISDIR(st.st_mode):
            recorded.add(path)
            if lower is not None and _xattr(full, OPAQUE_XATTR) == b"y":
                present = set(os.listdir(full))
                for name in sorted(image.listdir(path) - present):
                    out.append(Change("D", f"{path}/{name}"))
    out.sort(key=lambda c: _parts(c.path))
    return _drop_untouched_dirs(out, upper, image)


def _drop_untouched_dirs(changes: list[Change], root: str, image: LayerStack) -> list[Change]:
    """Without the skipped mount points, a directory the image has whose only change was
    gaining one (its mtime) is no change: drop such C dirs with nothing changed below."""
    keep = []
    paths = [c.path for c in changes]
    for i, c in enumerate(changes):
        if c.kind == "C":
            with contextlib.suppress(OSError):
                st = os.lstat(root + c.path)
                lower = image.lstat(c.path)
                below = any(p.startswith(c.path + "/") for p in paths[i + 1:])
                if (stat.S_ISDIR(st.st_mode) and lower is not None and not below
                        and _same_owner_mode(st, lower)):
                    continue
        keep.append(c)
    return keep


def tree_changes(rootfs: str, image_root: str,
                 skip: Callable[[str], bool] = lambda path: False) -> list[Change]:
    """The changes of a container ROOTFS that is a full copy of IMAGE_ROOT (the copying
    snapshot driver), found by comparing the two trees."""
    image = LayerStack([image_root])
    found = _Found()
    out, recorded, parent_changed = found.changes, found.recorded, found.parent_changed
    seen: set[str] = set()
    for path, st in _walk_skipping(rootfs, skip):
        seen.add(path)
        lower = image.lstat(path)
        if lower is None:
            parent_changed(path)
            out.append(Change("A", path))
        elif stat.S_ISDIR(st.st_mode) and stat.S_ISDIR(lower.st_mode):
            if not _same_dir(st, lower):
                out.append(Change("C", path))
            else:
                continue
        elif not _same_entry(rootfs + path, st, image_root + path, lower):
            out.append(Change("C", path))
        if stat.S_ISDIR(st.st_mode):
            recorded.add(path)
    for path, _ in _walk(image_root):
        parent = os.path.dirname(path)
        # Only the top of a deleted tree: its contents went with it.
        if path not in seen and (parent == "/" or parent in seen) and not skip(path):
            parent_changed(path)
            out.append(Change("D", path))
    out.sort(key=lambda c: _parts(c.path))
    return _drop_untouched_dirs(out, rootfs, image)


def _same_entry(a_path: str, a: os.stat_result, b_path: str, b: os.stat_result) -> bool:
    if (a.st_mode, a.st_uid, a.st_gid, a.st_size, int(a.st_mtime)) != \
            (b.st_mode, b.st_uid, b.st_gid, b.st_size, int(b.st_mtime)):
        return False
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(a_path) == os.readlink(b_path)
    if stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode):
        return a.st_rdev == b.st_rdev
    return True


def all_entries(root: str) -> list[Change]:
    """Every entry under ROOT as an addition: a whole filesystem for `export`."""
    return [Change("A", path) for path, _ in _walk(root)]


# -- writing a layer ---------------------------------------------------------------------


class _Exactly:
    """SIZE bytes of F: a file that shrank while it was read (a running container) is
    padded with zeros, one that grew is cut, so the tar header stays true."""

    def __init__(self, f: IO[bytes], size: int):
        self._f, self._left = f, size

    def read(self, n: int = -1) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        data = self._f.read(want) if want else b""
        if len(data) < want:
            data += b"\0" * (want - len(data))
        self._left -= len(data)
        return data


class _Dirs:
    """O_PATH fds of directories under a root, opened one component at a time with
    O_NOFOLLOW: a symlink where a directory should be is an error, never a way out."""

    def __init__(self, root: str):
        self.root_fd = os.open(root, O_DIR)
        self._parts: tuple[str, ...] = ()
        self._fd = -1

    def open(self, parts: tuple[str, ...]) -> int:
        if parts == self._parts and self._fd >= 0:
            return self._fd
        fd = os.dup(self.root_fd)
        try:
            for name in parts:
                nfd = os.open(name, O_DIR, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        self.close_cached()
        self._parts, self._fd = parts, fd
        return fd

    def close_cached(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        self.close_cached()
        os.close(self.root_fd)


def write_tar(out: IO[bytes], root: str, changes: Iterable[Change]) -> None:
    """A tar stream on OUT of CHANGES: A and C entries as ROOT holds them (no symlink
    followed; hardlinks within the tar kept), D as OCI whiteouts (`dir/.wh.name`)."""
    dirs = _Dirs(root)
    links: dict[tuple[int, int], str] = {}
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for change in changes:
                parts = tuple(_parts(change.path))
                if not parts:
                    continue
                if change.kind == "D":
                    info = tarfile.TarInfo("/".join((*parts[:-1], WHITEOUT_PREFIX + parts[-1])))
                    info.mode = 0o644
                    tar.addfile(info)
                    continue
                try:
                    pfd = dirs.open(parts[:-1])
                    _add_entry(tar, pfd, parts[-1], "/".join(parts), links)
                except FileNotFoundError:
                    continue  # removed while we looked (a running, unpaused container)
    finally:
        dirs.close()


def _add_entry(tar: tarfile.TarFile, pfd: int, name: str, arcname: str,
               links: dict[tuple[int, int], str]) -> None:
    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    info.pax_headers = _xattr_headers(f"/proc/self/fd/{pfd}/{name}")
    mode = st.st_mode
    if stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type, info.linkname = tarfile.LNKTYPE, links[key]
            tar.addfile(info)
            return
        if st.st_nlink > 1:
            links[key] = arcname
        info.size = st.st_size
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        with open(fd, "rb") as f:
            tar.addfile(info, _Exactly(f, st.st_size))  # type: ignore[arg-type]
        return
    if stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=pfd)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        return  # a socket: tar has no such entry (docker's archive skips them too)
    tar.addfile(info)


def _xattr_headers(path: str) -> dict[str, str]:
    """The entry's extended attributes as PAX SCHILY.xattr headers (overlay's own left
    out; values that are not text are skipped: PAX headers here are UTF-8)."""
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        if name.startswith(("trusted.overlay.", "user.overlay.")):
            continue
        try:
            out[f"SCHILY.xattr.{name}"] = os.getxattr(path, name,
                                                      follow_symlinks=False).decode()
        except (OSError, UnicodeDecodeError):
            continue
    return out
