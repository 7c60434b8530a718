"""The cgroups library of pallet's OCI runtime (cgroupfs driver): v1, v2 and hybrid behind one interface.

open_cgroup() reads /proc/self/mountinfo to pick the backend (once per process: a host's
cgroup mounts do not move under a running command); backends are imported only when chosen.
"""

from pallet.oci.cgroups.base import Cgroup
from pallet.oci.cgroups.errors import CgroupError, InvalidCgroupValue
from pallet.oci.cgroups.layout import (
    Layout,
    cgroup_dir,
    detect,
    normalize_cgroups_path,
    parse_proc_cgroup,
)

__all__ = ["Cgroup", "CgroupError", "InvalidCgroupValue", "Layout", "detect_layout", "open_cgroup"]


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise CgroupError(f"cannot read {path}: {e.strerror}") from None


# Parsed once per process (not functools.cache: pallet-runc does not import functools).
_LAYOUTS: dict[str, Layout] = {}
_ROOT_CONTROLLERS: dict[str, frozenset[str]] = {}


def detect_layout(mountinfo_path: str = "/proc/self/mountinfo") -> Layout:
    """This host's cgroup hierarchies, as found in mountinfo (parsed on the first call)."""
    layout = _LAYOUTS.get(mountinfo_path)
    if layout is not None:
        return layout
    layout = detect(_read(mountinfo_path))
    if layout.mode == "none":
        raise CgroupError(
            f"no cgroup or cgroup2 filesystem is mounted (looked in {mountinfo_path})"
        )
    _LAYOUTS[mountinfo_path] = layout
    return layout


def _root_controllers(mountpoint: str) -> frozenset[str]:
    found = _ROOT_CONTROLLERS.get(mountpoint)
    if found is None:
        found = frozenset(_read(f"{mountpoint}/cgroup.controllers").split())
        _ROOT_CONTROLLERS[mountpoint] = found
    return found


def open_cgroup(
    cgroups_path: str | None, container_id: str, layout: Layout | None = None
) -> Cgroup:
    """The container's cgroup (not yet created) in every hierarchy of this host.

    cgroups_path follows runc's cgroupfs driver: absolute paths are relative to each hierarchy's
    root, relative ones to the caller's own cgroup; None means "/pallet/<container_id>".
    """
    layout = layout or detect_layout()
    path = normalize_cgroups_path(cgroups_path, container_id)
    own = parse_proc_cgroup(_read("/proc/self/cgroup")) if not path.startswith("/") else {}

    v1 = None
    if layout.v1:
        from pallet.oci.cgroups.v1 import V1Cgroup

        dirs = {c: cgroup_dir(m, path, own.get(c)) for c, m in layout.v1.items()}
        v1 = V1Cgroup(dirs, {c: m.mountpoint for c, m in layout.v1.items()})
        if layout.mode == "v1":
            return v1
    assert layout.unified is not None
    from pallet.oci.cgroups.v2 import V2Cgroup

    m = layout.unified
    v2 = V2Cgroup(cgroup_dir(m, path, own.get("")), m.mountpoint, _root_controllers(m.mountpoint))
    if v1 is None:
        return v2
    from pallet.oci.cgroups.hybrid import HybridCgroup

    return HybridCgroup(v1, v2)
