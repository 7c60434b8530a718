"""The cgroup v2 backend: one directory in the unified hierarchy, v1 values translated as runc does.

Also the unified half of hybrid hosts, where it only holds the controllers v1 left to cgroup2.
"""

import os
import time

from pallet.oci.cgroups import convert, files
from pallet.oci.cgroups.base import Cgroup, log
from pallet.oci.cgroups.errors import CgroupError, InvalidCgroupValue

# Files a unified map may never write: they move processes or change the tree, not limits.
_UNIFIED_FORBIDDEN = {"cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "cgroup.kill"}


class V2Cgroup(Cgroup):
    """A cgroup in the unified (cgroup2) hierarchy."""

    mode = "v2"

    def __init__(self, directory: str, mountpoint: str, controllers: frozenset[str]):
        self.dir = directory
        self.mountpoint = mountpoint
        self.controllers = controllers  # those the hierarchy root offers

    @property
    def paths(self) -> dict[str, str]:
        out = {"unified": self.dir}
        out.update({c: self.dir for c in sorted(self.controllers)})
        return out

    def has(self, controller: str) -> bool:
        return controller in self.controllers

    def _need(self, controller: str, what: str) -> None:
        if controller not in self.controllers:
            raise CgroupError(
                f"{what} needs the {controller} controller, which cgroup2 at {self.mountpoint} "
                f"does not offer (it has: {' '.join(sorted(self.controllers)) or 'none'})"
            )

    # -- lifecycle -------------------------------------------------------------------------

    def create(self) -> None:
        rel = os.path.relpath(self.dir, self.mountpoint)
        if rel.startswith(".."):
            raise CgroupError(f"cgroup {self.dir} is outside cgroup2 mount {self.mountpoint}")
        current = self.mountpoint
        for part in rel.split("/"):
            # Children see only the controllers their parent enables in cgroup.subtree_control.
            self._enable_controllers(current)
            current = os.path.join(current, part)
            try:
                os.mkdir(current)
            except FileExistsError:
                pass
            except OSError as e:
                raise CgroupError(f"cannot create cgroup {current}: {e.strerror}") from None

    def _enable_controllers(self, d: str) -> None:
        available = (files.read_optional(d, "cgroup.controllers") or "").split()
        enabled = set((files.read_optional(d, "cgroup.subtree_control") or "").split())
        missing = [c for c in available if c not in enabled]
        if not missing:
            return
        try:
            files.write(d, "cgroup.subtree_control", " ".join("+" + c for c in missing))
        except CgroupError:
            # One refusal (e.g. a threaded subtree, or processes in d) must not cost the others.
            for c in missing:
                try:
                    files.write(d, "cgroup.subtree_control", "+" + c)
                except CgroupError as e:
                    log.debug("controller %s not enabled below %s: %s", c, d, e)

    def apply(self, pid: int) -> None:
        files.write(self.dir, "cgroup.procs", str(pid))

    def join_files(self) -> list[str]:
        return [os.path.join(self.dir, "cgroup.procs")]

    def _procs_dir(self) -> str:
        return self.dir

    def _kill_file(self) -> str | None:
        path = os.path.join(self.dir, "cgroup.kill")
        return path if os.path.exists(path) else None

    # -- freezer (core cgroup2, no controller needed) --------------------------------------

    def freeze(self) -> None:
        self._freeze(True)

    def thaw(self) -> None:
        self._freeze(False)

    def _freeze(self, frozen: bool) -> None:
        files.write(self.dir, "cgroup.freeze", "1" if frozen else "0")
        deadline = time.monotonic() + 5
        try:
            fd = os.open(os.path.join(self.dir, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1
        try:
            # cgroup.events wakes poll() with POLLPRI when it changes (read it, then poll).
            import select

            poller = select.poll()
            if fd >= 0:
                poller.register(fd, select.POLLPRI)
            while True:
                if fd >= 0:
                    os.lseek(fd, 0, os.SEEK_SET)
                    events = files.parse_flat_keyed(os.read(fd, 4096).decode())
                    if (events.get("frozen", 0) == 1) == frozen:
                        return
                elif self._events_frozen() == frozen:
                    return
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
                if fd >= 0:
                    poller.poll(wait * 1000)
                else:
                    time.sleep(min(wait, 0.05))  # the file is not there: nothing to poll
        finally:
            if fd >= 0:
                os.close(fd)
        if frozen:
            files.write(self.dir, "cgroup.freeze", "0")
        raise CgroupError(f"cgroup {self.dir} did not {'freeze' if frozen else 'thaw'} within 5s")

    def _events_frozen(self) -> bool:
        events = files.parse_flat_keyed(files.read_optional(self.dir, "cgroup.events") or "")
        return events.get("frozen", 0) == 1

    def is_frozen(self) -> bool:
        if not os.path.isdir(self.dir):
            return False
        return self._events_frozen()

    # -- limits ----------------------------------------------------------------------------

    def set(self, resources: dict) -> None:
        r = resources or {}
        if "devices" in r and r["devices"] is not None:
            self.set_devices(r["devices"])
        if r.get("memory"):
            self.set_memory(r["memory"])
        if r.get("cpu"):
            self.set_cpu(r["cpu"])
            self.set_cpuset(r["cpu"])
        if r.get("pids"):
            self.set_pids(r["pids"])
        if r.get("blockIO"):
            self.set_io(r["blockIO"])
        if r.get("hugepageLimits"):
            self.set_hugetlb(r["hugepageLimits"])
        if r.get("network"):
            log.debug(
                "network classID/priorities ignored: net_cls/net_prio do not exist in cgroup v2"
            )
        if r.get("rdma"):
            log.debug("rdma limits ignored: pallet does not manage the rdma controller")
        if r.get("unified"):
            self.set_unified(r["unified"])

    def set_devices(self, entries: list[dict]) -> None:
        from pallet.oci.cgroups import bpf, devices

        bpf.install(self.dir, devices.device_list(entries))

    def set_memory(self, mem: dict) -> None:
        self._need("memory", "linux.resources.memory")
        limit = int(mem.get("limit") or 0)
        swap = int(mem.get("swap") or 0)
        if limit == -1 and swap == 0:
            swap = -1
        swap_v2 = convert.swap_to_v2(swap, limit)
        if limit > 0:
            # v2 would OOM-kill to meet a limit below usage; v1 refuses. Refuse like v1.
            usage = files.read_int(self.dir, "memory.current")
            if limit < usage:
                raise InvalidCgroupValue(
                    f"memory limit {limit} for {self.dir}/memory.max is below current usage {usage}"
                )
        if swap_v2:
            # Independent of memory.max in v2 (swap alone), so the order of the two writes is free.
            if os.path.exists(os.path.join(self.dir, "memory.swap.max")):
                files.write(self.dir, "memory.swap.max", convert.v2_limit(swap_v2))
            else:
                log.debug("memory.swap ignored: kernel has no swap accounting (no memory.swap.max)")
        if limit:
            files.write(self.dir, "memory.max", convert.v2_limit(limit))
        if mem.get("reservation"):
            files.write(self.dir, "memory.low", convert.v2_limit(int(mem["reservation"])))
        if mem.get("kernel") or mem.get("kernelTCP"):
            log.debug("memory.kernel/kernelTCP ignored: no kmem limit in cgroup v2")
        if mem.get("swappiness") is not None:
            log.debug("memory.swappiness ignored: cgroup v2 has no per-cgroup swappiness")
        if mem.get("disableOOMKiller"):
            log.debug("memory.disableOOMKiller ignored: cgroup v2 cannot disable the OOM killer")

    def set_cpu(self, cpu: dict) -> None:
        if cpu.get("realtimeRuntime") or cpu.get("realtimePeriod"):
            raise InvalidCgroupValue(
                "cpu.realtimeRuntime/realtimePeriod need cgroup v1: cgroup v2 has no RT group limits"
            )
        shares = int(cpu.get("shares") or 0)
        limit = convert.cpu_max(int(cpu.get("quota") or 0), int(cpu.get("period") or 0))
        wants = shares or limit or cpu.get("burst") is not None or cpu.get("idle") is not None
        if not wants:
            return
        self._need("cpu", "linux.resources.cpu")
        if shares:
            if not 2 <= shares <= 262144:
                raise InvalidCgroupValue(f"cpu.shares {shares} is out of range 2..262144")
            files.write(self.dir, "cpu.weight", convert.shares_to_weight(shares))
        if limit:
            files.write(self.dir, "cpu.max", limit)
        if cpu.get("burst") is not None:
            files.write(self.dir, "cpu.max.burst", int(cpu["burst"]))
        if cpu.get("idle") is not None:
            files.write(self.dir, "cpu.idle", int(cpu["idle"]))

    def set_cpuset(self, cpu: dict) -> None:
        if not cpu.get("cpus") and not cpu.get("mems"):
            return
        self._need("cpuset", "linux.resources.cpu.cpus/mems")
        if cpu.get("cpus"):
            files.write(self.dir, "cpuset.cpus", cpu["cpus"])
        if cpu.get("mems"):
            files.write(self.dir, "cpuset.mems", cpu["mems"])

    def set_pids(self, pids: dict) -> None:
        limit = int(pids.get("limit") or 0)
        if limit:
            self._need("pids", "linux.resources.pids")
            files.write(self.dir, "pids.max", convert.v2_limit(limit))

    def set_io(self, bio: dict) -> None:
        self._need("io", "linux.resources.blockIO")
        bfq = os.path.exists(os.path.join(self.dir, "io.bfq.weight"))
        if bio.get("weight"):
            if bfq:  # BFQ takes the v1 weight range as is
                files.write(self.dir, "io.bfq.weight", int(bio["weight"]))
            elif os.path.exists(os.path.join(self.dir, "io.weight")):
                files.write(
                    self.dir, "io.weight", convert.blkio_weight_to_io_weight(int(bio["weight"]))
                )
            else:
                log.debug("blockIO.weight ignored: %s has no io.weight or io.bfq.weight", self.dir)
        if bio.get("leafWeight"):
            log.debug("blockIO.leafWeight ignored: cgroup v2 has no leaf weights")
        for dev in bio.get("weightDevice") or []:
            num = convert.device_number(dev, "weightDevice")
            if not dev.get("weight"):
                continue
            if bfq:
                files.write(self.dir, "io.bfq.weight", f"{num} {int(dev['weight'])}")
            else:
                w = convert.blkio_weight_to_io_weight(int(dev["weight"]))
                files.write(self.dir, "io.weight", f"{num} {w}")
        for key, name in _IO_MAX_KEYS.items():
            for dev in bio.get(key) or []:
                num = convert.device_number(dev, key)
                rate = int(dev.get("rate") or 0)
                # v1 rate 0 removes the throttle; in io.max that is "max".
                files.write(self.dir, "io.max", f"{num} {name}={rate or 'max'}")

    def set_hugetlb(self, limits: list[dict]) -> None:
        self._need("hugetlb", "linux.resources.hugepageLimits")
        sizes = convert.hugepage_sizes()
        for entry in limits:
            size = convert.check_page_size(str(entry.get("pageSize")), sizes)
            files.write(
                self.dir, f"hugetlb.{size}.max", convert.v2_limit(int(entry.get("limit") or 0))
            )

    def set_unified(self, unified: dict) -> None:
        for key, value in unified.items():
            if "/" in key or key in _UNIFIED_FORBIDDEN or key.startswith("."):
                raise InvalidCgroupValue(
                    f"linux.resources.unified key {key!r} is not a settable cgroup file"
                )
            ctrl = key.split(".", 1)[0]
            if (
                ctrl != "cgroup"
                and ctrl not in self.controllers
                and not os.path.exists(os.path.join(self.dir, key))
            ):
                raise InvalidCgroupValue(
                    f"linux.resources.unified key {key!r} needs the {ctrl} controller, which "
                    f"cgroup2 at {self.mountpoint} does not offer"
                )
            files.write(self.dir, key, str(value))

    # -- stats -----------------------------------------------------------------------------

    def stats(self) -> dict:
        d = self.dir
        out: dict = {}
        st = files.parse_flat_keyed(files.read_optional(d, "cpu.stat") or "")
        out["cpu"] = {
            "usage": {
                "total": st.get("usage_usec", 0) * 1000,
                "percpu": [],
                "percpu_kernel": [],
                "percpu_user": [],
                "kernel": st.get("system_usec", 0) * 1000,
                "user": st.get("user_usec", 0) * 1000,
            },
            "throttling": {
                "periods": st.get("nr_periods", 0),
                "throttledPeriods": st.get("nr_throttled", 0),
                "throttledTime": st.get("throttled_usec", 0) * 1000,
            },
        }
        if "memory" in self.controllers:
            out["memory"] = self._memory_stats()
        if "pids" in self.controllers:
            out["pids"] = {
                "current": files.read_int(d, "pids.current"),
                "limit": files.read_int(d, "pids.max"),
            }
        if "io" in self.controllers:
            out["blkio"] = self._io_stats()
        if "hugetlb" in self.controllers:
            out["hugetlb"] = self.hugetlb_stats()
        if "cpuset" in self.controllers:
            out["cpuset"] = {
                "cpus": files.read_optional(d, "cpuset.cpus.effective") or "",
                "mems": files.read_optional(d, "cpuset.mems.effective") or "",
            }
        return out

    def usage_sources(self) -> list[tuple[str, str, str]]:
        d = self.dir
        out = [("cpu_ns", os.path.join(d, "cpu.stat"), "usec_total")]
        if "memory" in self.controllers:
            out.append(("memory", os.path.join(d, "memory.current"), "int"))
            out.append(("memory_limit", os.path.join(d, "memory.max"), "int"))
        if "io" in self.controllers:
            out.append(("blkio_read,blkio_write", os.path.join(d, "io.stat"), "io_stat"))
        if "pids" in self.controllers:
            out.append(("pids", os.path.join(d, "pids.current"), "int"))
        return out

    def hugetlb_stats(self) -> dict:
        out = {}
        for size in convert.hugepage_sizes():
            events = files.parse_flat_keyed(
                files.read_optional(self.dir, f"hugetlb.{size}.events") or ""
            )
            out[size] = {
                "usage": files.read_int(self.dir, f"hugetlb.{size}.current"),
                "max": files.read_int(self.dir, f"hugetlb.{size}.max"),
                "failcnt": events.get("max", 0),
            }
        return out

    def _memory_stats(self) -> dict:
        d = self.dir
        raw = files.parse_flat_keyed(files.read_optional(d, "memory.stat") or "")
        events = files.parse_flat_keyed(files.read_optional(d, "memory.events") or "")
        usage = files.read_int(d, "memory.current")
        limit = files.read_int(d, "memory.max")
        swap_usage = files.read_int(d, "memory.swap.current")
        swap_limit = files.read_int(d, "memory.swap.max")
        return {
            "cache": raw.get("file", 0),
            "usage": {
                "limit": limit,
                "usage": usage,
                "max": files.read_int(d, "memory.peak"),
                "failcnt": events.get("max", 0),
            },
            # Reported as memory+swap, like v1's memsw, which is what runc does too.
            "swap": {
                "limit": swap_limit + limit if swap_limit and limit else 0,
                "usage": swap_usage + usage,
                "max": 0,
                "failcnt": 0,
            },
            "raw": raw,
        }

    def _io_stats(self) -> dict:
        stat = files.parse_nested_keyed(files.read_optional(self.dir, "io.stat") or "")
        by_bytes, by_ops = [], []
        for dev, fields in sorted(stat.items()):
            major, _, minor = dev.partition(":")
            for op, b, n in (("Read", "rbytes", "rios"), ("Write", "wbytes", "wios")):
                entry = {"major": int(major), "minor": int(minor), "op": op}
                by_bytes.append({**entry, "value": fields.get(b, 0)})
                by_ops.append({**entry, "value": fields.get(n, 0)})
        return {"ioServiceBytesRecursive": by_bytes, "ioServicedRecursive": by_ops}


_IO_MAX_KEYS = {
    "throttleReadBpsDevice": "rbps",
    "throttleWriteBpsDevice": "wbps",
    "throttleReadIOPSDevice": "riops",
    "throttleWriteIOPSDevice": "wiops",
}
