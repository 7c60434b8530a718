"""Resolve a container's `user` string (name, uid, name:group, uid:gid) against the
image's /etc/passwd and /etc/group, read without ever leaving the image's rootfs.

An image is untrusted: its /etc/passwd may be a symlink to the host's, or /etc a
symlink to /. Files are therefore opened with openat2(RESOLVE_IN_ROOT) where the
kernel has it (5.6+), and otherwise by a component-by-component walk from a
directory fd in which every symlink is re-resolved against the rootfs, never the host.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections import deque
from dataclasses import dataclass, field

from pallet.errors import InvalidArgument

# openat2 is in the generic syscall table: 437 on every architecture.
_NR_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_MAX_SYMLINKS = 40  # the kernel's own limit (MAXSYMLINKS)
# An image's passwd is a few KiB; cap reads so a hostile one cannot eat memory.
_MAX_FILE = 8 << 20
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel, so it is not an id


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc: ctypes.CDLL | None = None
# Set once openat2 proves unusable (old kernel, or a seccomp filter that denies it).
_openat2_missing = False


def _openat2(dirfd: int, path: str, flags: int) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    how = _OpenHow(
        flags=flags | os.O_CLOEXEC, mode=0, resolve=_RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS
    )
    fd = _libc.syscall(
        ctypes.c_long(_NR_OPENAT2),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def _walk_in_root(root_fd: int, path: str, flags: int) -> int:
    """Open PATH under root_fd, resolving each symlink ourselves inside the root.

    Every step is an openat(O_NOFOLLOW) relative to a directory fd we already hold,
    and '..' pops our own stack instead of asking the filesystem, so neither a
    symlink nor a concurrent rename can take the walk above the root.
    """
    parts = deque(p for p in path.split("/") if p)
    stack: list[int] = []  # fds of directories below the root; root_fd is never closed
    links = 0

    def current() -> int:
        return stack[-1] if stack else root_fd

    try:
        while parts:
            part = parts.popleft()
            if part == ".":
                continue
            if part == "..":
                if stack:
                    os.close(stack.pop())
                continue
            fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current())
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                os.close(fd)
                links += 1
                if links > _MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(part, dir_fd=current())
                if target.startswith("/"):
                    # Absolute links restart at the container's root, not the host's.
                    while stack:
                        os.close(stack.pop())
                parts.extendleft(reversed([p for p in target.split("/") if p]))
                continue
            if not parts:
                os.close(fd)
                # O_NOFOLLOW: if the entry was swapped for a symlink since the
                # fstat, this fails with ELOOP instead of following it.
                return os.open(part, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current())
            if not stat.S_ISDIR(mode):
                os.close(fd)
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            stack.append(fd)
        # PATH named the root itself (or only '.'/'..').
        return os.open(".", flags | os.O_CLOEXEC, dir_fd=current())
    finally:
        for fd in stack:
            os.close(fd)


def open_in_rootfs(rootfs: str, path: str, flags: int = os.O_RDONLY) -> int:
    """Open PATH as the container would see it inside ROOTFS; return an fd."""
    global _openat2_missing
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not _openat2_missing:
            try:
                return _openat2(root_fd, path.lstrip("/") or ".", flags)
            except OSError as e:
                # ENOSYS: kernel < 5.6. EPERM: a seccomp filter (e.g. an older
                # container profile) denies the syscall. E2BIG/EINVAL: a struct
                # open_how the kernel does not understand. All mean "walk instead".
                if e.errno not in (errno.ENOSYS, errno.EPERM, errno.E2BIG, errno.EINVAL):
                    raise
                _openat2_missing = True
        return _walk_in_root(root_fd, path, flags)
    finally:
        os.close(root_fd)


def read_in_rootfs(rootfs: str, path: str) -> str | None:
    """Text of a regular file inside ROOTFS, or None if it (or a parent) does not exist."""
    try:
        # O_PATH first: opening a FIFO or device node an image planted there
        # for reading could block or have side effects; only files are read.
        pfd = open_in_rootfs(rootfs, path, os.O_PATH)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        # ELOOP and friends: the image is broken (or hostile); say which file.
        raise InvalidArgument(
            f"cannot read {path} in the image: {e.strerror}; fix the image"
        ) from None
    try:
        if not stat.S_ISREG(os.fstat(pfd).st_mode):
            raise InvalidArgument(f"{path} in the image is not a regular file; fix the image")
        # Reopening the O_PATH fd's magic link reaches the same inode, no path walk.
        fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    finally:
        os.close(pfd)
    with os.fdopen(fd, "rb") as f:
        return f.read(_MAX_FILE).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class ResolvedUser:
    """The ids a container process runs with, and the HOME it gets if none is set."""

    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = field(default_factory=tuple)
    home: str = "/"
    name: str | None = None


def _int_id(text: str) -> int | None:
    if not text.isdigit():
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def parse_passwd(text: str) -> list[PasswdEntry]:
    """Entries of a passwd file; malformed lines are skipped like libc does."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        f = line.split(":")
        if len(f) < 4 or not f[0]:
            continue
        uid, gid = _int_id(f[2]), _int_id(f[3])
        if uid is None or gid is None:
            continue
        out.append(
            PasswdEntry(f[0], uid, gid, f[5] if len(f) > 5 else "", f[6] if len(f) > 6 else "")
        )
    return out


def parse_group(text: str) -> list[GroupEntry]:
    """Entries of a group file; malformed lines are skipped like libc does."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        f = line.split(":")
        if len(f) < 3 or not f[0]:
            continue
        gid = _int_id(f[2])
        if gid is None:
            continue
        members = tuple(m for m in (f[3].split(",") if len(f) > 3 else []) if m)
        out.append(GroupEntry(f[0], gid, members))
    return out


def _check_id(text: str, what: str) -> int:
    value = int(text)
    if value > _MAX_ID:
        raise InvalidArgument(f"{what} {text} is out of range; ids go from 0 to {_MAX_ID}")
    return value


def resolve_ids(
    user: str,
    passwd: list[PasswdEntry],
    groups: list[GroupEntry],
    group_add: list[str] | tuple[str, ...] = (),
) -> ResolvedUser:
    """Resolve USER ('' means root) the way runc and docker do, from parsed files."""
    user_part, _, group_part = user.partition(":")
    if user.startswith("-") or (":" in user and not group_part):
        raise InvalidArgument(f"invalid user {user!r}: expected NAME, UID, NAME:GROUP or UID:GID")
    uid, gid, home, name = 0, 0, "/", None
    entry: PasswdEntry | None = None
    if user_part == "":
        entry = next((p for p in passwd if p.uid == 0), None)
    elif user_part.isdigit():
        uid = _check_id(user_part, "uid")
        entry = next((p for p in passwd if p.uid == uid), None)
    else:
        entry = next((p for p in passwd if p.name == user_part), None)
        if entry is None:
            raise InvalidArgument(
                f"unable to find user {user_part}: no matching entries in passwd file; "
                "add the user to the image or give a numeric uid"
            )
    if entry is not None:
        uid, gid, home, name = entry.uid, entry.gid, entry.home or "/", entry.name

    additional: list[int] = []
    if group_part:
        if group_part.isdigit():
            gid = _check_id(group_part, "gid")
        else:
            g = next((g for g in groups if g.name == group_part), None)
            if g is None:
                raise InvalidArgument(
                    f"unable to find group {group_part}: no matching entries in group file; "
                    "add the group to the image or give a numeric gid"
                )
            gid = g.gid
    elif name is not None:
        # Supplementary groups come from the group file only in the implicit
        # form (no explicit group), as runc's GetExecUser does.
        additional = [g.gid for g in groups if name in g.members]

    for extra in group_add:
        if extra.isdigit():
            additional.append(_check_id(extra, "gid"))
            continue
        g = next((g for g in groups if g.name == extra), None)
        if g is None:
            raise InvalidArgument(
                f"unable to find group {extra}: no matching entries in group file; "
                "add the group to the image or give a numeric gid to --group-add"
            )
        additional.append(g.gid)
    seen: set[int] = set()
    uniq = tuple(g for g in additional if not (g in seen or seen.add(g)))
    return ResolvedUser(uid=uid, gid=gid, additional_gids=uniq, home=home, name=name)


def resolve_user(
    rootfs: str, user: str, group_add: list[str] | tuple[str, ...] = ()
) -> ResolvedUser:
    """Resolve USER against ROOTFS's /etc/passwd and /etc/group, confined to ROOTFS."""
    passwd = parse_passwd(read_in_rootfs(rootfs, "/etc/passwd") or "")
    groups = parse_group(read_in_rootfs(rootfs, "/etc/group") or "")
    return resolve_ids(user, passwd, groups, group_add)
