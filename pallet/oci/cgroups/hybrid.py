"""The hybrid backend: v1 hierarchies for most controllers plus the cgroup2 tree for the rest.

Each resource goes to whichever side holds its controller; v1 wins where both could serve.
"""

from pallet.oci.cgroups.base import Cgroup
from pallet.oci.cgroups.errors import InvalidCgroupValue
from pallet.oci.cgroups.v1 import V1Cgroup
from pallet.oci.cgroups.v2 import V2Cgroup

# OCI resource key -> the controller that enforces it.
_CONTROLLER_OF = {
    "memory": "memory",
    "pids": "pids",
    "hugepageLimits": "hugetlb",
    "devices": "devices",
}


class HybridCgroup(Cgroup):
    """A container cgroup on a host with both v1 hierarchies and a cgroup2 mount."""

    mode = "hybrid"

    def __init__(self, v1: V1Cgroup, v2: V2Cgroup):
        self.v1 = v1
        self.v2 = v2

    @property
    def paths(self) -> dict[str, str]:
        out = self.v2.paths
        out.update(self.v1.paths)  # v1 owns a controller mounted on both sides
        return out

    def create(self) -> None:
        self.v1.create()
        self.v2.create()

    def apply(self, pid: int) -> None:
        self.v1.apply(pid)
        self.v2.apply(pid)

    def join_files(self) -> list[str]:
        return self.v1.join_files() + self.v2.join_files()

    def _procs_dir(self) -> str:
        return self.v1._procs_dir()

    def _v2_only(self, controller: str) -> bool:
        return not self.v1.has(controller) and self.v2.has(controller)

    def set(self, resources: dict) -> None:
        r = dict(resources or {})
        to_v2: dict = {}
        for key, ctrl in _CONTROLLER_OF.items():
            if r.get(key) and self._v2_only(ctrl):
                to_v2[key] = r.pop(key)
        if r.get("blockIO") and not self.v1.has("blkio") and self.v2.has("io"):
            to_v2["blockIO"] = r.pop("blockIO")
        cpu = r.get("cpu") or {}
        if cpu.get("cpus") or cpu.get("mems"):
            if self._v2_only("cpuset"):
                to_v2["cpu"] = {"cpus": cpu.get("cpus"), "mems": cpu.get("mems")}
                r["cpu"] = {k: v for k, v in cpu.items() if k not in ("cpus", "mems")}
        unified = r.pop("unified", None)
        if unified:
            for key in unified:
                ctrl = key.split(".", 1)[0]
                if self.v1.has(ctrl):
                    raise InvalidCgroupValue(
                        f"linux.resources.unified key {key!r}: the {ctrl} controller is on cgroup v1 "
                        "on this host; use the v1 fields of linux.resources instead"
                    )
            to_v2["unified"] = unified
        self.v1.set(r)
        if to_v2:
            self.v2.set(to_v2)

    # The v1 freezer is a controller and may be missing; cgroup2's freezer is always there.
    def freeze(self) -> None:
        (self.v1 if self.v1.has("freezer") else self.v2).freeze()

    def thaw(self) -> None:
        (self.v1 if self.v1.has("freezer") else self.v2).thaw()

    def is_frozen(self) -> bool:
        return (self.v1 if self.v1.has("freezer") else self.v2).is_frozen()

    def usage_sources(self) -> list[tuple[str, str, str]]:
        # As stats(): CPU from v1 always; memory, pids and I/O from whichever side has them.
        out = self.v1.usage_sources()
        have = {f for field, _, _ in out for f in field.split(",")}
        out += [s for s in self.v2.usage_sources()
                if s[0] != "cpu_ns" and not have.intersection(s[0].split(","))]
        return out

    def stats(self) -> dict:
        out = self.v1.stats()
        if self._v2_only("hugetlb"):
            out["hugetlb"] = self.v2.hugetlb_stats()
        v2 = self.v2.stats()
        for key in ("memory", "pids", "blkio", "cpuset"):
            if key not in out and key in v2:
                out[key] = v2[key]
        return out
