"""Resolve paths inside a container root with symlinks confined to it.

Every mount destination, device node and masked path goes through here: openat2
with RESOLVE_IN_ROOT gives an O_PATH fd, and callers act on that fd
(/proc/self/fd/N), never on a path string an attacker could swap (CVE-2021-30465).
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from pallet.oci.linux import syscalls as sc

_DIR = os.O_PATH | os.O_DIRECTORY
_IN_ROOT = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS


def clean(path: str) -> str:
    """Lexically normalise a container path to a relative form ('' is the root)."""
    p = posixpath.normpath("/" + path)
    return p.lstrip("/")


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH) -> int:
    """Open PATH as seen from inside the root; symlinks and '..' never leave it."""
    rel = clean(path) or "."
    return sc.openat2(root_fd, rel, flags, _IN_ROOT)


def mkdir_all(root_fd: int, path: str, mode: int = 0o755, _depth: int = 0) -> int:
    """Create every missing directory of PATH inside the root; return an O_PATH fd to it.

    A dangling symlink on the way is followed as the container would see it: its
    target is created inside the root, never outside.
    """
    rel = clean(path)
    if not rel:
        return os.dup(root_fd)
    try:  # usually it is all there: the fd the walk below would end with, in one call
        return sc.openat2(root_fd, rel, _DIR, _IN_ROOT)
    except (FileNotFoundError, NotADirectoryError):
        pass  # the walk makes what is missing, or fails as it always did
    fd = os.dup(root_fd)
    done = ""
    try:
        for part in rel.split("/"):
            try:
                nfd = sc.openat2(root_fd, f"{done}/{part}".lstrip("/"), _DIR, _IN_ROOT)
            except FileNotFoundError:
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:
                    _follow_dangling(root_fd, fd, done, part, mode, _depth)
                nfd = sc.openat2(root_fd, f"{done}/{part}".lstrip("/"), _DIR, _IN_ROOT)
            os.close(fd)
            fd = nfd
            done = f"{done}/{part}"
    except BaseException:
        os.close(fd)
        raise
    return fd


def _follow_dangling(root_fd: int, parent_fd: int, parent: str, name: str, mode: int,
                     depth: int) -> None:
    if depth > 40:
        raise OSError(errno.ELOOP, "too many levels of symbolic links", f"{parent}/{name}")
    try:
        target = os.readlink(name, dir_fd=parent_fd)
    except OSError:
        return  # not a symlink: someone raced us creating it, which is fine
    # The link's target as the container sees it: relative to its dir, clamped at root.
    inside = target if target.startswith("/") else f"{parent}/{target}"
    os.close(mkdir_all(root_fd, inside, mode, depth + 1))


def ensure_file(root_fd: int, path: str, mode: int = 0o644, _depth: int = 0) -> int:
    """Make sure PATH exists inside the root as a non-directory; return an O_PATH fd.

    A dangling symlink at PATH gets its target created inside the root.
    """
    rel = clean(path)
    try:
        return open_in_root(root_fd, rel)
    except FileNotFoundError:
        pass
    if _depth > 40:
        raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
    parent, name = posixpath.split(rel)
    pfd = mkdir_all(root_fd, parent)
    try:
        try:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY,
                             mode, dir_fd=pfd))
        except FileExistsError:
            try:
                target = os.readlink(name, dir_fd=pfd)
            except OSError:
                target = None  # a racing creator made a real file: fine
            if target is not None:
                inside = target if target.startswith("/") else f"{parent}/{target}"
                os.close(ensure_file(root_fd, inside, mode, _depth + 1))
        return open_in_root(root_fd, rel)
    finally:
        os.close(pfd)


def ensure_target(root_fd: int, path: str, like: str | None) -> int:
    """Create a mount target shaped like the source (dir unless the source is not one)."""
    if like is not None:
        try:
            if not stat.S_ISDIR(os.stat(like).st_mode):
                return ensure_file(root_fd, path)
        except FileNotFoundError:
            pass
    try:
        return mkdir_all(root_fd, path)
    except NotADirectoryError:
        return open_in_root(root_fd, path)


def is_dir_fd(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)
