"""Build the container's filesystem view: mounts, devices, pivot_root, masks.

Runs in the container's init after it entered its new mount namespace; the steps
follow runc's order so behaviour matches what tools expect.
"""

from __future__ import annotations

import errno
import os
import stat

from pallet.oci.linux import mounts, paths
from pallet.oci.linux import syscalls as sc

DEFAULT_DEVICES = [
    # path, type, major, minor, mode
    ("/dev/null", "c", 1, 3, 0o666),
    ("/dev/zero", "c", 1, 5, 0o666),
    ("/dev/full", "c", 1, 7, 0o666),
    ("/dev/random", "c", 1, 8, 0o666),
    ("/dev/urandom", "c", 1, 9, 0o666),
    ("/dev/tty", "c", 5, 0, 0o666),
]
DEV_SYMLINKS = [("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
                ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr")]

_PROPAGATION = {"shared": sc.MS_SHARED, "slave": sc.MS_SLAVE, "private": sc.MS_PRIVATE,
                "unbindable": sc.MS_UNBINDABLE, "rshared": sc.MS_SHARED | sc.MS_REC,
                "rslave": sc.MS_SLAVE | sc.MS_REC, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
                "runbindable": sc.MS_UNBINDABLE | sc.MS_REC}


class MountFacts:
    """What the init needs to know of the mount table: where the mount holding the rootfs
    is, where cgroup2 is mounted and whether the host is cgroup v2 only.

    Create reads them in the runtime parent (one pass over mountinfo, done while it waits
    for the kernel anyway) rather than in the init; the init's new mount namespace is a copy.
    """

    def __init__(self, rootfs_mountpoint: str, cgroup2: str | None, unified_only: bool):
        self.rootfs_mountpoint = rootfs_mountpoint
        self.cgroup2 = cgroup2
        self.unified_only = unified_only

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MountFacts) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MountFacts({self.rootfs_mountpoint!r}, {self.cgroup2!r}, {self.unified_only!r})"


def mount_facts(rootfs: str) -> MountFacts:
    best = "/"
    real = os.path.realpath(rootfs)
    v2, v1 = None, False
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            mp = parts[4].replace("\\040", " ")
            if (real == mp or real.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                best = mp
            fstype = parts[parts.index("-") + 1]
            if fstype == "cgroup2" and v2 is None:
                v2 = parts[4]
            elif fstype == "cgroup":
                v1 = True
    return MountFacts(best, v2, v2 is not None and not v1)


def prepare_root(rootfs: str, propagation: str | None, host_ns: bool = False,
                 facts: MountFacts | None = None) -> int:
    """Stop mount events leaking to the host and make the rootfs a mount point; return its fd.

    HOST_NS: the container has no mount namespace of its own (it inherits the runtime's,
    as the spec requires when none is listed). Then the host's mounts are left as they
    are: the rootfs is bound onto itself and made private, so what is mounted under it
    stays there (delete detaches the lot, see host_mounts_at).
    """
    if host_ns:
        sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC)
        sc.mount(None, rootfs, None, sc.MS_PRIVATE | sc.MS_REC)
        return os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    flag = _PROPAGATION.get(propagation or "", sc.MS_SLAVE | sc.MS_REC)
    sc.mount(None, "/", None, flag)
    _make_parent_private(rootfs, facts)
    sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC)
    return os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def host_mounts_at(path: str) -> int:
    """How many mounts are stacked at PATH in our mount namespace."""
    real = os.path.realpath(path)
    n = 0
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4].replace("\\040", " ") == real:
                n += 1
    return n


def detach_host_root(rootfs: str, base: int) -> None:
    """Undo prepare_root(host_ns=True): detach what was stacked on ROOTFS since there
    were BASE mounts there (the bind and, lazily, everything mounted under it)."""
    for _ in range(host_mounts_at(rootfs) - base):
        try:
            sc.umount2(rootfs, sc.MNT_DETACH)
        except OSError:
            return


def _make_parent_private(rootfs: str, facts: MountFacts | None) -> None:
    # pivot_root refuses a new root whose parent mount is shared.
    mountpoint = (facts or mount_facts(rootfs)).rootfs_mountpoint
    try:
        sc.mount(None, mountpoint, None, sc.MS_PRIVATE)
    except OSError:
        pass


def mount_all(root_fd: int, spec_mounts: list[dict], bundle: str, cgroup_paths: dict[str, str],
              cgroupns: bool, prepared: dict[int, int] | None = None,
              facts: MountFacts | None = None) -> None:
    """Mount spec.mounts in order; PREPARED maps an index to a detached tree made for it
    (idmapped binds), which is attached and then closed."""
    prepared = prepared or {}
    for i, m in enumerate(spec_mounts):
        if m.get("type") == "cgroup":
            mount_cgroup(root_fd, m, cgroup_paths, cgroupns, facts)
        elif i in prepared:
            tree = prepared.pop(i)
            try:
                mounts.mount_entry(root_fd, m, bundle, tree)
            finally:
                os.close(tree)
        else:
            mounts.mount_entry(root_fd, m, bundle)


def mount_cgroup(root_fd: int, m: dict, cgroup_paths: dict[str, str], cgroupns: bool,
                 facts: MountFacts | None = None) -> None:
    plan = mounts.parse_options(m.get("options") or [])
    flags = plan.flags & ~(sc.MS_BIND | sc.MS_REC)
    facts = facts or mount_facts("/")
    v2, unified_only = facts.cgroup2, facts.unified_only
    dest = m["destination"]
    if unified_only:
        fd = paths.mkdir_all(root_fd, dest)
        try:
            if cgroupns:
                sc.mount("cgroup2", paths.fd_path(fd), "cgroup2", flags)
            else:
                own = cgroup_paths.get("", v2 or "/sys/fs/cgroup")
                mounts.bind_mount(own, fd, mounts.MountPlan(flags | sc.MS_BIND))
        finally:
            os.close(fd)
        return
    # v1 or hybrid: a tmpfs holding one bind of the container's own cgroup per hierarchy,
    # as runc does, so the container sees itself at the root of each controller.
    fd = paths.mkdir_all(root_fd, dest)
    try:
        sc.mount("tmpfs", paths.fd_path(fd), "tmpfs",
                 (flags & ~sc.MS_RDONLY) | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                 "mode=755")
    finally:
        os.close(fd)
    base = dest.rstrip("/")
    for name, host_dir in sorted(cgroup_paths.items()):
        if not name or not os.path.isdir(host_dir):
            continue
        sub = paths.mkdir_all(root_fd, f"{base}/{name}")
        try:
            mounts.bind_mount(host_dir, sub, mounts.MountPlan(flags | sc.MS_BIND))
        finally:
            os.close(sub)
    if plan.flags & sc.MS_RDONLY:
        top = paths.open_in_root(root_fd, dest)
        try:
            mounts.remount_readonly(paths.fd_path(top))
        finally:
            os.close(top)


def create_devices(root_fd: int, devices: list[dict], in_userns: bool) -> None:
    specs = [(p, t, ma, mi, mode, 0, 0) for p, t, ma, mi, mode in DEFAULT_DEVICES]
    wanted = {d["path"] for d in devices}
    specs = [s for s in specs if s[0] not in wanted]
    for d in devices:
        specs.append((d["path"], d["type"], d.get("major", 0), d.get("minor", 0),
                      d.get("fileMode", 0o666), d.get("uid", 0), d.get("gid", 0)))
    for path, dtype, major, minor, mode, uid, gid in specs:
        _make_device(root_fd, path, dtype, major, minor, mode, uid, gid, in_userns)


def _make_device(root_fd: int, path: str, dtype: str, major: int, minor: int, mode: int,
                 uid: int, gid: int, in_userns: bool) -> None:
    parent, name = os.path.split(paths.clean(path))
    pfd = paths.mkdir_all(root_fd, parent)
    try:
        if in_userns:
            # mknod is not allowed in a user namespace: bind the host's node instead.
            fd = paths.ensure_file(root_fd, path)
            try:
                mounts.bind_mount(path, fd, mounts.MountPlan(sc.MS_BIND))
            finally:
                os.close(fd)
            return
        kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[dtype]
        try:
            os.unlink(name, dir_fd=pfd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise OSError(errno.EISDIR, f"device path {path} is a directory in the rootfs") \
                from None
        os.mknod(name, kind | (mode & 0o7777), os.makedev(major, minor), dir_fd=pfd)
        os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(name, mode & 0o7777, dir_fd=pfd, follow_symlinks=False)
    finally:
        os.close(pfd)


def dev_symlinks(root_fd: int, have_devpts: bool) -> None:
    links = list(DEV_SYMLINKS)
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "/dev/core"))
    if have_devpts:
        links.append(("pts/ptmx", "/dev/ptmx"))
    dev = paths.mkdir_all(root_fd, "/dev")
    try:
        for target, link in links:
            name = os.path.basename(link)
            try:
                if name == "ptmx":
                    os.unlink(name, dir_fd=dev)
            except FileNotFoundError:
                pass
            try:
                os.symlink(target, name, dir_fd=dev)
            except FileExistsError:
                pass
    finally:
        os.close(dev)


def pivot(rootfs: str, no_pivot: bool, propagation: str | None = None,
          host_ns: bool = False) -> None:
    os.chdir(rootfs)
    if host_ns:
        # pivot_root or MS_MOVE would change the host's own root: only chroot.
        os.chroot(".")
        os.chdir("/")
        return
    if no_pivot:
        sc.mount(rootfs, "/", None, sc.MS_MOVE)
        os.chroot(".")
    else:
        # pivot_root(".", ".") stacks the old root on the new one; detach it right away.
        sc.pivot_root(".", ".")
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")
    if propagation:
        # The new root is a bind of the rootfs and so private; give it the propagation
        # the config asked for (runc 1.1 leaves shared and unbindable roots private).
        sc.mount(None, "/", None, _PROPAGATION[propagation])


def mask_paths(masked: list[str]) -> None:
    for p in masked:
        try:
            fd = paths.open_in_root(_root_fd(), p)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                continue
            raise
        try:
            target = paths.fd_path(fd)
            if paths.is_dir_fd(fd):
                sc.mount("tmpfs", target, "tmpfs", sc.MS_RDONLY, None)
            else:
                sc.mount("/dev/null", target, None, sc.MS_BIND)
        finally:
            os.close(fd)


def readonly_paths(ro: list[str]) -> None:
    root = _root_fd()
    for p in ro:
        try:
            fd = paths.open_in_root(root, p)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                continue
            raise
        try:
            sc.mount(paths.fd_path(fd), paths.fd_path(fd), None, sc.MS_BIND | sc.MS_REC)
        finally:
            os.close(fd)
        fd = paths.open_in_root(root, p)
        try:
            mounts.remount_readonly(paths.fd_path(fd))
        finally:
            os.close(fd)


_ROOT_FD: list[int] = []


def _root_fd() -> int:
    # After pivot_root "/" is the container root; open it once for confined lookups.
    if not _ROOT_FD:
        _ROOT_FD.append(os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
    return _ROOT_FD[0]


def readonly_root() -> None:
    mounts.remount_readonly("/")


def write_sysctls(sysctls: dict[str, str]) -> None:
    for key, value in sysctls.items():
        path = "/proc/sys/" + key.replace(".", "/")
        with open(path, "w") as f:
            f.write(value)
