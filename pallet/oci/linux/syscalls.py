"""Thin wrappers for the Linux syscalls Python's os module lacks (through libc.py).

Each wrapper raises OSError with errno and the syscall name; nothing here decides
policy. Constants follow <linux/mount.h>, <linux/sched.h> and <linux/openat2.h>.
"""

from __future__ import annotations

import os

from pallet.oci.linux import libc

_mount = libc.LIBC.int_function("mount")
_umount2 = libc.LIBC.int_function("umount2")
_unshare = libc.LIBC.int_function("unshare")
_setns = libc.LIBC.int_function("setns")
_sethostname = libc.LIBC.int_function("sethostname")
_setdomainname = libc.LIBC.int_function("setdomainname")

# clone/unshare flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_DETACH = 2

# openat2 resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# new mount API
OPEN_TREE_CLONE = 1
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

# x86_64 and aarch64 share these numbers for the newer syscalls (>= 424).
_NR = {
    "x86_64": {"pivot_root": 155, "setns": 308, "open_tree": 428, "move_mount": 429,
               "openat2": 437, "mount_setattr": 442},
    "aarch64": {"pivot_root": 41, "setns": 268, "open_tree": 428, "move_mount": 429,
                "openat2": 437, "mount_setattr": 442},
}[os.uname().machine]


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = libc.get_errno()
        if path is not None:
            raise OSError(err, f"{what}: {os.strerror(err)}", path)
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s.encode() if isinstance(s, str) else s


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    ret = _mount(_b(source), _b(target), _b(fstype), libc.c_ulong(flags), _b(data))
    _check(ret, f"mount {source or fstype} on {target}", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_umount2(_b(target), flags), "umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(libc.syscall(_NR["pivot_root"], _b(new_root), _b(put_old)), "pivot_root", new_root)


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_setns(fd, nstype), "setns")


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_sethostname(b, len(b)), "sethostname")


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_setdomainname(b, len(b)), "setdomainname")


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = libc.pack((flags | os.O_CLOEXEC, 8), (mode, 8), (resolve, 8))  # struct open_how
    ret = libc.syscall(_NR["openat2"], dirfd, _b(path), how, len(how))
    return _check(ret, "openat2", path)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    ret = libc.syscall(_NR["open_tree"], dirfd, _b(path), libc.c_uint(flags | os.O_CLOEXEC))
    return _check(ret, "open_tree", path)


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str, flags: int) -> None:
    ret = libc.syscall(_NR["move_mount"], from_fd, _b(from_path), to_fd, _b(to_path),
                       libc.c_uint(flags))
    _check(ret, "move_mount", to_path)


def mount_setattr(fd: int, path: str, flags: int, attr_set: int, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0) -> None:
    attr = libc.pack((attr_set, 8), (attr_clr, 8), (propagation, 8), (userns_fd, 8))
    ret = libc.syscall(_NR["mount_setattr"], fd, _b(path), libc.c_uint(flags), attr, len(attr))
    _check(ret, "mount_setattr", path)
