"""Where the cgroup hierarchies are: mountinfo parsing, v1/v2/hybrid detection, cgroupsPath resolution.

Pure functions over the text of /proc/self/mountinfo and /proc/self/cgroup, so tests feed samples.
"""

from __future__ import annotations

import posixpath

from pallet.oci.cgroups.errors import InvalidCgroupValue

# Kernel v1 controller names; other super options of a "cgroup" mount are mount flags.
V1_CONTROLLERS = frozenset(
    {
        "cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer", "net_cls",
        "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc",
    }
)  # fmt: skip


# Mount and Layout are tuples with named fields, as typing.NamedTuple makes them; written out
# because importing typing costs pallet-runc ~10 ms.


class Mount(tuple):
    """One mounted cgroup hierarchy."""

    __slots__ = ()
    _fields = ("mountpoint", "root", "version", "controllers")

    def __new__(cls, mountpoint: str, root: str, version: int,
                controllers: frozenset[str] = frozenset()) -> Mount:
        return tuple.__new__(cls, (mountpoint, root, version, controllers))

    @property
    def mountpoint(self) -> str:
        return self[0]

    @property
    def root(self) -> str:
        """The cgroup mounted there, as mountinfo's 4th field gives it."""
        return self[1]

    @property
    def version(self) -> int:
        """1 or 2."""
        return self[2]

    @property
    def controllers(self) -> frozenset[str]:
        """v1: its controllers and name=...; v2: empty."""
        return self[3]

    def __repr__(self) -> str:
        return _named_repr(self)


_NO_V1: dict[str, Mount] = {}  # never mutated, so one shared default is fine


class Layout(tuple):
    """The cgroup hierarchies of this host, as one mode."""

    __slots__ = ()
    _fields = ("mode", "v1", "unified")

    def __new__(cls, mode: str, v1: dict[str, Mount] = _NO_V1,
                unified: Mount | None = None) -> Layout:
        return tuple.__new__(cls, (mode, v1, unified))

    @property
    def mode(self) -> str:
        """"v1", "v2", "hybrid" or "none"."""
        return self[0]

    @property
    def v1(self) -> dict[str, Mount]:
        """Controller (or name=x) -> mount."""
        return self[1]

    @property
    def unified(self) -> Mount | None:
        return self[2]

    def __repr__(self) -> str:
        return _named_repr(self)


def _named_repr(t: Mount | Layout) -> str:
    fields = ", ".join(f"{k}={v!r}" for k, v in zip(t._fields, t, strict=True))
    return f"{t.__class__.__name__}({fields})"


def _unescape(text: str) -> str:
    # mountinfo octal-escapes space, tab, newline and backslash as \ooo.
    if "\\" not in text:
        return text
    out = []
    i = 0
    while i < len(text):
        code = text[i + 1:i + 4]
        if text[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts in a mountinfo text, in mount order."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 4:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
        if fstype == "cgroup2":
            mounts.append(Mount(mountpoint, root, 2))
            continue
        opts = fields[sep + 3].split(",")
        ctrls = frozenset(o for o in opts if o in V1_CONTROLLERS or o.startswith("name="))
        mounts.append(Mount(mountpoint, root, 1, ctrls))
    return mounts


def detect(mountinfo_text: str) -> Layout:
    """Decide v1, v2 or hybrid from the mounts; the first mount of each hierarchy wins."""
    v1: dict[str, Mount] = {}
    unified: Mount | None = None
    for m in parse_mountinfo(mountinfo_text):
        if m.version == 2:
            unified = unified or m
            continue
        for c in m.controllers:
            v1.setdefault(c, m)
    real_v1 = any(not c.startswith("name=") for c in v1)
    if real_v1:
        return Layout("hybrid" if unified else "v1", v1, unified)
    if unified:
        # A lone name=systemd v1 hierarchy beside cgroup2 holds no controller: still pure v2.
        return Layout("v2", {}, unified)
    return Layout("none")


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup as controller -> path; the cgroup2 entry is keyed ""."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if ctrls == "":
            out[""] = path
        for c in ctrls.split(","):
            if c:
                out[c] = path
    return out


def normalize_cgroups_path(cgroups_path: str | None, container_id: str) -> str:
    """The validated cgroupsPath; "/pallet/<id>" when the spec gives none."""
    if cgroups_path is None or cgroups_path == "":
        if not container_id or "/" in container_id:
            raise InvalidCgroupValue(f"container id {container_id!r} cannot name a cgroup")
        return f"/pallet/{container_id}"
    if cgroups_path.count(":") == 2 and "/" not in cgroups_path:
        cgroups_path = systemd_path(cgroups_path)
    if ".." in cgroups_path.split("/"):
        raise InvalidCgroupValue(f"cgroupsPath {cgroups_path!r} must not contain '..'")
    path = posixpath.normpath(cgroups_path)
    if path in ("/", "."):
        raise InvalidCgroupValue(f"cgroupsPath {cgroups_path!r} names the root cgroup")
    return path


def systemd_path(spec: str) -> str:
    """The cgroup a systemd driver would make for "slice:prefix:name", as a cgroupfs path.

    containerd and podman configured for systemd pass cgroupsPath in this form; pallet's
    cgroupfs driver then places the container where systemd's would (runc's expansion:
    "a-b.slice" -> /a.slice/a-b.slice, the unit "<prefix>-<name>.scope").
    """
    slice_, prefix, name = spec.split(":")
    if not name or (slice_ and not slice_.endswith(".slice")) or "/" in spec:
        raise InvalidCgroupValue(f"cgroupsPath {spec!r}: expected slice:prefix:name "
                                 "(e.g. system.slice:docker:ID)")
    slice_ = slice_ or "system.slice"
    parts: list[str] = []
    if slice_ != "-.slice":
        words = slice_[: -len(".slice")].split("-")
        if "" in words:
            raise InvalidCgroupValue(f"cgroupsPath {spec!r}: invalid slice name {slice_!r}")
        parts = ["-".join(words[: i + 1]) + ".slice" for i in range(len(words))]
    unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return "/" + "/".join([*parts, unit])


def own_dir(mount: Mount, own_path: str) -> str:
    """The directory of the caller's own cgroup (a /proc/self/cgroup path) in a mount."""
    root = mount.root.rstrip("/")
    if own_path == root or own_path.startswith(root + "/"):
        own_path = own_path[len(root) :]
    return posixpath.join(mount.mountpoint, own_path.lstrip("/"))


def cgroup_dir(mount: Mount, cgroups_path: str, own_path: str | None) -> str:
    """Like runc's cgroupfs driver: absolute paths hang off the mount, relative off our own cgroup."""
    if cgroups_path.startswith("/"):
        return posixpath.join(mount.mountpoint, cgroups_path.lstrip("/"))
    base = own_dir(mount, own_path) if own_path is not None else mount.mountpoint
    return posixpath.normpath(posixpath.join(base, cgroups_path))
