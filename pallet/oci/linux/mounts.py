"""Mount options and the act of mounting one spec entry inside the container root.

parse_options is pure; mount_entry resolves the destination with symlinks
confined to the root and mounts through the resolved fd, never a path string.
"""

from __future__ import annotations

import os

from pallet.oci.linux import paths
from pallet.oci.linux import syscalls as sc

# option -> (set?, flag)
_FLAGS = {
    "ro": (True, sc.MS_RDONLY), "rw": (False, sc.MS_RDONLY),
    "nosuid": (True, sc.MS_NOSUID), "suid": (False, sc.MS_NOSUID),
    "nodev": (True, sc.MS_NODEV), "dev": (False, sc.MS_NODEV),
    "noexec": (True, sc.MS_NOEXEC), "exec": (False, sc.MS_NOEXEC),
    "sync": (True, sc.MS_SYNCHRONOUS), "async": (False, sc.MS_SYNCHRONOUS),
    "dirsync": (True, sc.MS_DIRSYNC), "remount": (True, sc.MS_REMOUNT),
    "mand": (True, sc.MS_MANDLOCK), "nomand": (False, sc.MS_MANDLOCK),
    "atime": (False, sc.MS_NOATIME), "noatime": (True, sc.MS_NOATIME),
    "diratime": (False, sc.MS_NODIRATIME), "nodiratime": (True, sc.MS_NODIRATIME),
    "relatime": (True, sc.MS_RELATIME), "norelatime": (False, sc.MS_RELATIME),
    "strictatime": (True, sc.MS_STRICTATIME), "nostrictatime": (False, sc.MS_STRICTATIME),
    "bind": (True, sc.MS_BIND), "rbind": (True, sc.MS_BIND | sc.MS_REC),
    "nosymfollow": (True, sc.MS_NOSYMFOLLOW), "symfollow": (False, sc.MS_NOSYMFOLLOW),
    "lazytime": (True, sc.MS_LAZYTIME), "nolazytime": (False, sc.MS_LAZYTIME),
    "defaults": (False, 0),
}
_PROPAGATION = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# MS_* flags that map onto mount_setattr attributes for bind mounts
_ATTR = {sc.MS_RDONLY: sc.MOUNT_ATTR_RDONLY, sc.MS_NOSUID: sc.MOUNT_ATTR_NOSUID,
         sc.MS_NODEV: sc.MOUNT_ATTR_NODEV, sc.MS_NOEXEC: sc.MOUNT_ATTR_NOEXEC,
         sc.MS_NOATIME: sc.MOUNT_ATTR_NOATIME, sc.MS_STRICTATIME: sc.MOUNT_ATTR_STRICTATIME,
         sc.MS_NODIRATIME: sc.MOUNT_ATTR_NODIRATIME,
         sc.MS_NOSYMFOLLOW: sc.MOUNT_ATTR_NOSYMFOLLOW}


class MountPlan:
    """Flags, propagation changes and fs data of one mount (a plain class with the ==
    and repr of the dataclass it was: dataclasses costs pallet-runc ~7 ms to import)."""

    def __init__(self, flags: int = 0, propagation: list[int] | None = None,
                 data: list[str] | None = None):
        self.flags = flags
        self.propagation = [] if propagation is None else propagation
        self.data = [] if data is None else data

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.flags, self.propagation, self.data) == (
            other.flags, other.propagation, other.data)  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment] - mutable, like the dataclass it was

    def __repr__(self) -> str:
        return (f"{self.__class__.__qualname__}(flags={self.flags!r}, "
                f"propagation={self.propagation!r}, data={self.data!r})")

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)

    @property
    def recursive(self) -> bool:
        return bool(self.flags & sc.MS_REC)


def parse_options(options: list[str]) -> MountPlan:
    plan = MountPlan()
    for opt in options:
        if opt in _FLAGS:
            on, flag = _FLAGS[opt]
            plan.flags = plan.flags | flag if on else plan.flags & ~flag
        elif opt in _PROPAGATION:
            plan.propagation.append(_PROPAGATION[opt])
        elif opt in ("idmap", "ridmap"):
            pass  # idmap.plan reads them; the runtime parent makes the idmapped tree
        else:
            plan.data.append(opt)
    return plan


def mount_attrs(flags: int) -> tuple[int, int]:
    attr_set = 0
    for ms, attr in _ATTR.items():
        if flags & ms:
            attr_set |= attr
    # Clear every atime bit and read-only when not asked, so the clone of the source
    # does not keep e.g. a read-only source's flags the spec asked to drop.
    attr_clr = sc.MOUNT_ATTR__ATIME if flags & (sc.MS_NOATIME | sc.MS_STRICTATIME) else 0
    return attr_set, attr_clr


def bind_mount(source: str, target_fd: int, plan: MountPlan) -> None:
    """Clone SOURCE (recursively if rbind), set its flags while detached, attach at target_fd."""
    tree = sc.open_tree(-100, source, sc.OPEN_TREE_CLONE | (sc.AT_RECURSIVE if plan.recursive
                                                            else 0))
    try:
        attr_set, attr_clr = mount_attrs(plan.flags)
        if attr_set or attr_clr:
            sc.mount_setattr(tree, "", sc.AT_EMPTY_PATH | (sc.AT_RECURSIVE if plan.recursive
                                                           else 0), attr_set, attr_clr)
        sc.move_mount(tree, "", target_fd, "", sc.MOVE_MOUNT_F_EMPTY_PATH |
                      sc.MOVE_MOUNT_T_EMPTY_PATH)
    finally:
        os.close(tree)


def mount_entry(root_fd: int, m: dict, source_base: str | None = None,
                tree_fd: int | None = None) -> None:
    """Mount one entry of spec.mounts inside the root (the caller is in the new mount ns).

    TREE_FD is a detached mount prepared for this entry (an idmapped bind, see idmap.py):
    it is attached as it is, with the flags it already has.
    """
    mtype = m.get("type") or ""
    options = m.get("options") or []
    plan = parse_options(options)
    source = m.get("source") or mtype or "none"
    dest = m["destination"]
    if mtype == "bind":
        plan.flags |= sc.MS_BIND
    if plan.is_bind:
        if not os.path.isabs(source) and source_base:
            source = os.path.join(source_base, source)
        try:
            os.stat(source)
        except FileNotFoundError:
            raise FileNotFoundError(2, f"bind mount source {source} does not exist",
                                    source) from None
        except PermissionError:
            # Inside a user namespace the init is not host root: a directory on the way
            # that is closed to others stops it.
            raise PermissionError(13, f"bind mount source {source} cannot be reached: "
                                  "permission denied on the way to it (in a user namespace, "
                                  "every directory above it must let others search it)",
                                  source) from None
        fd = paths.ensure_target(root_fd, dest, source)
    else:
        fd = paths.mkdir_all(root_fd, dest)
    try:
        target = paths.fd_path(fd)
        if tree_fd is not None:
            sc.move_mount(tree_fd, "", fd, "", sc.MOVE_MOUNT_F_EMPTY_PATH |
                          sc.MOVE_MOUNT_T_EMPTY_PATH)
        elif plan.is_bind:
            bind_mount(source, fd, plan)
        else:
            sc.mount(source, target, mtype, plan.flags & ~sc.MS_REMOUNT,
                     ",".join(plan.data) or None)
        if plan.propagation:
            # The fd still names the directory under the new mount: reopen to reach it.
            top = paths.open_in_root(root_fd, dest)
            try:
                for p in plan.propagation:
                    sc.mount(None, paths.fd_path(top), None, p)
            finally:
                os.close(top)
    finally:
        os.close(fd)


def remount_readonly(path: str) -> None:
    """Make the bind mount at PATH read-only, keeping its other flags."""
    st = os.statvfs(path)
    flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY
    for bit, ms in ((os.ST_NOSUID, sc.MS_NOSUID), (os.ST_NODEV, sc.MS_NODEV),
                    (os.ST_NOEXEC, sc.MS_NOEXEC), (os.ST_NOATIME, sc.MS_NOATIME),
                    (os.ST_RELATIME, sc.MS_RELATIME), (os.ST_NODIRATIME, sc.MS_NODIRATIME)):
        if st.f_flag & bit:
            flags |= ms
    sc.mount(None, path, None, flags)
