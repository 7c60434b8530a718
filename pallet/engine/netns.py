"""Named network namespaces kept alive as bind-mounted files under a run dir, like
`ip netns add` but without forking `ip`; plus running a function inside one."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from pallet.errors import InvalidArgument, SystemFailure
from pallet.oci.linux import syscalls

DEFAULT_RUN_DIR = "/run/pallet/netns"

# Names become one path component; keep them as ip-netns would accept them.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")

T = TypeVar("T")


def validate_name(name: str) -> str:
    if not _NAME.match(name) or name in (".", ".."):
        raise InvalidArgument(
            f"invalid network namespace name {name!r}: use letters, digits, '_', '.', '-'"
        )
    return name


def path_for(name: str, run_dir: str = DEFAULT_RUN_DIR) -> str:
    return os.path.join(run_dir, validate_name(name))


def _nsfs_dev() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def is_netns(path: str) -> bool:
    """True when PATH is a mounted network namespace (an nsfs inode, not an empty file)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_dev == _nsfs_dev() and not os.path.isdir(path)


def _run_in_thread(fn: Callable[[], T]) -> T:
    """Run FN on a fresh OS thread and return its result or raise its exception.

    Namespace changes then die with the thread instead of leaking into a thread
    the rest of the program keeps using."""
    box: dict[str, object] = {}

    def body() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed back to the caller below
            box["error"] = e

    t = threading.Thread(target=body, name="pallet-netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


# A network namespace is per thread, so a short-lived thread unshares it and
# bind-mounts its own ns/net onto the file: no fork, which the daemon (a threaded
# process) must not do. The thread then ends; the mount keeps the namespace alive.
# `lo` is brought up by `loopback_up` below (Networks.loopback_up calls it).


def create(name: str, run_dir: str = DEFAULT_RUN_DIR) -> str:
    """Create (or find) the namespace NAME and return its path. Idempotent: an
    existing namespace is returned as is; an empty file left by a crash is reused.
    On error nothing is left behind."""
    path = path_for(name, run_dir)
    if is_netns(path):
        return path
    os.makedirs(run_dir, mode=0o755, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_CLOEXEC, 0o444)
        os.close(fd)
        made = True
    except FileExistsError:
        made = False  # a leftover plain file, or another process racing us

    def bind() -> None:
        syscalls.unshare(syscalls.CLONE_NEWNET)
        syscalls.mount(
            f"/proc/self/task/{threading.get_native_id()}/ns/net", path, None, syscalls.MS_BIND
        )

    try:
        if is_netns(path):  # the racer won; its namespace is as good as ours
            return path
        _run_in_thread(bind)
    except OSError as e:
        if made:
            _unlink(path)
        raise SystemFailure(f"cannot create network namespace {path}: {e.strerror}") from None
    return path


_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = "16sH22x"  # struct ifreq: the name, then ifr_flags in a 24-byte union


def _set_up(ifname: str) -> None:
    """SIOCSIFFLAGS |= IFF_UP on IFNAME in the calling thread's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        req = struct.pack(_IFREQ, ifname.encode(), 0)
        _, flags = struct.unpack(_IFREQ, fcntl.ioctl(s, _SIOCGIFFLAGS, req))
        if not flags & _IFF_UP:
            fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack(_IFREQ, ifname.encode(), flags | _IFF_UP))


def loopback_up(path: str) -> None:
    """Bring `lo` up in the namespace at PATH with two ioctls, what the CNI loopback
    plugin does (the kernel then gives it 127.0.0.1/8 and ::1) without its exec."""
    try:
        run_in(path, lambda: _set_up("lo"))
    except OSError as e:
        raise SystemFailure(f"cannot bring up lo in {path}: {e.strerror}") from None


def remove(path: str) -> None:
    """Unmount and unlink PATH. Idempotent: a missing or unmounted file is fine."""
    while True:
        try:
            syscalls.umount2(path, syscalls.MNT_DETACH)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                break  # not (or no longer) a mount point
            raise SystemFailure(f"cannot unmount network namespace {path}: {e.strerror}") from None
        # A path mounted twice (two racing creates) needs a second umount.
        if not is_netns(path):
            break
    _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise SystemFailure(f"cannot remove network namespace file {path}: {e.strerror}") from None


def list_names(run_dir: str = DEFAULT_RUN_DIR) -> list[str]:
    try:
        names = os.listdir(run_dir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if is_netns(os.path.join(run_dir, n)))


@contextmanager
def _entered_here(path: str) -> Iterator[None]:
    """Switch the calling thread into PATH's namespace and back. Only for threads
    this module owns: if switching back fails the thread must not be reused."""
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            syscalls.setns(target, syscalls.CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            yield
        finally:
            syscalls.setns(own, syscalls.CLONE_NEWNET)
    finally:
        os.close(own)


def run_in(path: str, fn: Callable[[], T]) -> T:
    """Call FN with the network namespace PATH entered, on a thread of its own.

    Sockets FN creates belong to that namespace for their whole life, so a caller
    can e.g. open a listener inside a pod's namespace and serve it from anywhere."""
    if not is_netns(path):
        raise InvalidArgument(f"{path} is not a network namespace")

    def inside() -> T:
        with _entered_here(path):
            return fn()

    return _run_in_thread(inside)
