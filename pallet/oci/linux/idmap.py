"""Idmapped bind mounts: mounts[].uidMappings/gidMappings and the idmap/ridmap options.

`plan` is pure: which mounts are idmapped, with which mappings. `prepare` acts, in the
runtime parent: only a process in the host user namespace may idmap a mount of a host
filesystem, so (like runc 1.2) the parent clones each source into a detached tree,
sets its flags and its idmapping (mount_setattr MOUNT_ATTR_IDMAP with the fd of a
helper user namespace holding the mappings), and the container's init attaches the
tree at the destination it resolved inside the root (mounts.mount_entry).
"""

from __future__ import annotations

import os

from pallet.errors import SpecError, SystemFailure
from pallet.oci.linux import mounts
from pallet.oci.linux import syscalls as sc

TYPE_CHECKING = False  # typing costs ~10 ms to import; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

_OPTIONS = ("idmap", "ridmap")


class IdmappedMount:
    """One mount to clone and idmap: spec.mounts[index], with the mappings to apply.

    `userns_path` (a joined user namespace) replaces the mappings when the mount says
    idmap without mappings of its own and the container joins an existing namespace.
    """

    def __init__(self, index: int, destination: str, source: str, flags: int,
                 recursive_idmap: bool, uid_mappings: list[tuple[int, int, int]],
                 gid_mappings: list[tuple[int, int, int]], userns_path: str | None = None):
        self.index = index
        self.destination = destination
        self.source = source
        self.flags = flags
        self.recursive_idmap = recursive_idmap
        self.uid_mappings = uid_mappings
        self.gid_mappings = gid_mappings
        self.userns_path = userns_path

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"IdmappedMount({vars(self)!r})"

    @property
    def field(self) -> str:
        return f"mounts[{self.index}] {self.destination}"


def _mappings(value: Any, field: str) -> list[tuple[int, int, int]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(f"{field}: must be a list of id mappings")
    out = []
    for j, m in enumerate(value):
        f = f"{field}[{j}]"
        if not isinstance(m, dict):
            raise SpecError(f"{f}: must be an object with containerID, hostID and size")
        nums = []
        for k in ("containerID", "hostID", "size"):
            v = m.get(k)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 32:
                raise SpecError(f"{f}.{k}: must be an unsigned 32-bit integer, got {v!r}")
            nums.append(v)
        if nums[2] == 0:
            raise SpecError(f"{f}.size: must be at least 1")
        out.append((nums[0], nums[1], nums[2]))
    return out


def plan(spec: dict[str, Any], bundle: str) -> list[IdmappedMount]:
    """The idmapped mounts of SPEC; SpecError naming the mount for anything unusable."""
    linux = spec.get("linux") or {}
    userns = next((n for n in linux.get("namespaces") or [] if n.get("type") == "user"), None)
    out = []
    for i, m in enumerate(spec.get("mounts") or []):
        options = m.get("options") or []
        opts = [o for o in options if o in _OPTIONS]
        if not (opts or m.get("uidMappings") or m.get("gidMappings")):
            continue
        dest = m.get("destination")
        field = f"mounts[{i}] {dest}"
        flags = mounts.parse_options(options).flags
        if m.get("type") == "bind":
            flags |= sc.MS_BIND
        if not flags & sc.MS_BIND:
            raise SpecError(f"{field}: uidMappings, gidMappings, idmap and ridmap need a bind "
                            f"mount (type {m.get('type')!r} is not one)")
        if len(opts) > 1:
            raise SpecError(f"{field}: options idmap and ridmap exclude each other")
        uids = _mappings(m.get("uidMappings"), f"{field}: uidMappings")
        gids = _mappings(m.get("gidMappings"), f"{field}: gidMappings")
        path = None
        if bool(uids) != bool(gids):
            raise SpecError(f"{field}: an idmapped mount needs both uidMappings and gidMappings")
        if not uids:
            # Like runc: idmap alone means the container's own user namespace mappings.
            if userns is not None and userns.get("path"):
                path = userns["path"]
            elif userns is not None and linux.get("uidMappings") and linux.get("gidMappings"):
                uids = _mappings(linux["uidMappings"], "linux.uidMappings")
                gids = _mappings(linux["gidMappings"], "linux.gidMappings")
            else:
                raise SpecError(f"{field}: {opts[0]} without uidMappings and gidMappings takes "
                                "the container's user namespace mappings, and it has none")
        source = m.get("source") or ""
        if not os.path.isabs(source):
            source = os.path.join(bundle, source)
        out.append(IdmappedMount(i, dest, source, flags, opts == ["ridmap"], uids, gids, path))
    return out


def prepare(planned: list[IdmappedMount]) -> dict[int, int]:
    """Clone and idmap each planned mount; {mounts index: detached tree fd}, owned by the
    caller. On any failure nothing is left open and SystemFailure names the mount."""
    trees: dict[int, int] = {}
    namespaces: dict[Any, int] = {}
    try:
        for p in planned:
            key = p.userns_path or (tuple(p.uid_mappings), tuple(p.gid_mappings))
            if key not in namespaces:
                namespaces[key] = _userns_fd(p)
            trees[p.index] = _idmapped_tree(p, namespaces[key])
    except BaseException:
        for fd in trees.values():
            os.close(fd)
        raise
    finally:
        for fd in namespaces.values():
            os.close(fd)  # each mount holds its own reference to its namespace
    return trees


def _idmapped_tree(p: IdmappedMount, userns_fd: int) -> int:
    recursive = sc.AT_RECURSIVE if p.flags & sc.MS_REC else 0
    try:
        tree = sc.open_tree(-100, p.source, sc.OPEN_TREE_CLONE | recursive)
    except FileNotFoundError:
        raise SpecError(f"{p.field}: bind mount source {p.source} does not exist") from None
    except OSError as e:
        raise SystemFailure(f"{p.field}: cannot clone {p.source}: {e.strerror}") from None
    try:
        attr_set, attr_clr = mounts.mount_attrs(p.flags)
        if attr_set or attr_clr:
            sc.mount_setattr(tree, "", sc.AT_EMPTY_PATH | recursive, attr_set, attr_clr)
        try:
            sc.mount_setattr(tree, "", sc.AT_EMPTY_PATH |
                             (sc.AT_RECURSIVE if p.recursive_idmap else 0),
                             sc.MOUNT_ATTR_IDMAP, userns_fd=userns_fd)
        except OSError as e:
            fstype = _fstype(p.source)
            raise SystemFailure(
                f"{p.field}: the kernel refused to idmap {p.source} ({e.strerror}): "
                f"its filesystem, {fstype}, may not support idmapped mounts") from None
    except BaseException:
        os.close(tree)
        raise
    return tree


def _fstype(path: str) -> str:
    """The type of the filesystem PATH is on (longest mount point prefix), for messages."""
    best, kind = "", "unknown"
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                mp = parts[4].replace("\\040", " ")
                if ((real == mp or real.startswith(mp.rstrip("/") + "/"))
                        and len(mp) >= len(best)):
                    best, kind = mp, parts[parts.index("-") + 1]
    except OSError:
        pass
    return kind


def _userns_fd(p: IdmappedMount) -> int:
    """An fd of a user namespace with P's mappings: a joined one's, or a new helper's."""
    if p.userns_path:
        try:
            return os.open(p.userns_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SystemFailure(f"{p.field}: cannot open user namespace {p.userns_path}: "
                                f"{e.strerror}") from None
    # A child unshares a user namespace and waits; we write its maps and keep a
    # reference to the namespace; then it exits. (A process cannot leave a user
    # namespace, so it cannot be us.)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(done_w)
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(done_r, 1)  # until the parent closes its end (or dies)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise SystemFailure(f"{p.field}: cannot create a user namespace for the idmapping")
        try:
            for name, maps in (("gid_map", p.gid_mappings), ("uid_map", p.uid_mappings)):
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write("".join(f"{c} {h} {n}\n" for c, h, n in maps))
        except OSError as e:
            raise SystemFailure(f"{p.field}: writing the idmapping's {name}: "
                                f"{e.strerror}") from None
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)
