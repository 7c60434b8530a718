"""The cgroup v1 backend: one directory per hierarchy, limits in the v1 file names.

Also the v1 half of hybrid hosts; it refuses nothing it can express and explains what it skips.
"""

import os
import time

from pallet.oci.cgroups import convert, files
from pallet.oci.cgroups.base import Cgroup, log
from pallet.oci.cgroups.errors import CgroupError, InvalidCgroupValue


class V1Cgroup(Cgroup):
    """A cgroup in each mounted v1 hierarchy."""

    mode = "v1"

    def __init__(self, dirs: dict[str, str], mountpoints: dict[str, str]):
        self._dirs = dict(dirs)  # controller -> cgroup dir; co-mounted controllers share one
        self._mountpoints = dict(mountpoints)  # controller -> hierarchy root

    @property
    def paths(self) -> dict[str, str]:
        return dict(self._dirs)

    def has(self, controller: str) -> bool:
        return controller in self._dirs

    def _dir(self, controller: str, what: str) -> str:
        d = self._dirs.get(controller)
        if d is None:
            raise CgroupError(
                f"{what} needs the {controller} cgroup controller, not mounted on this host"
            )
        return d

    # -- lifecycle -------------------------------------------------------------------------

    def create(self) -> None:
        done: set[str] = set()
        for ctrl, d in sorted(self._dirs.items()):
            if d in done:
                continue
            done.add(d)
            if ctrl == "cpuset" or ("cpuset" in self._dirs and self._dirs["cpuset"] == d):
                self._create_cpuset(d, self._mountpoints["cpuset"])
            else:
                _mkdirs(d)

    def _create_cpuset(self, leaf: str, root: str) -> None:
        # A new v1 cpuset starts with empty cpus/mems and takes no task (ENOSPC) until filled:
        # copy them down from the parent at each level, as runc does.
        rel = os.path.relpath(leaf, root)
        current = root
        for part in [] if rel == "." else rel.split("/"):
            parent, current = current, os.path.join(current, part)
            _mkdirs(current)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if files.read(current, name) == "":
                    files.write(current, name, files.read(parent, name))

    def apply(self, pid: int) -> None:
        for d in sorted(set(self._dirs.values())):
            files.write(d, "cgroup.procs", str(pid))

    def join_files(self) -> list[str]:
        return [os.path.join(d, "tasks") for d in sorted(set(self._dirs.values()))]

    def _procs_dir(self) -> str:
        for ctrl in ("pids", "freezer", "devices", "memory", "cpu"):
            if ctrl in self._dirs:
                return self._dirs[ctrl]
        return next(iter(self._dirs.values()))

    # -- freezer ---------------------------------------------------------------------------

    def _can_freeze(self) -> bool:
        return "freezer" in self._dirs

    def freeze(self) -> None:
        d = self._dir("freezer", "pause")
        deadline = time.monotonic() + 5
        tries = 0
        while time.monotonic() < deadline:
            # FREEZING can stall on a task in an uninterruptible sleep: re-request now and then.
            if tries % 10 == 0:
                files.write(d, "freezer.state", "FROZEN")
            if files.read(d, "freezer.state") == "FROZEN":
                return
            tries += 1
            # freezer.state cannot be polled for a change; freezing usually takes tens of
            # microseconds, so look again soon, then less often (runc looks every 10 us).
            time.sleep(min(0.0001 * (1 << min(tries, 8)), 0.02))
        files.write(d, "freezer.state", "THAWED")
        raise CgroupError(f"cgroup {d} did not freeze within 5s (a task stuck in the kernel?)")

    def thaw(self) -> None:
        files.write(self._dir("freezer", "resume"), "freezer.state", "THAWED")

    def is_frozen(self) -> bool:
        d = self._dirs.get("freezer")
        if d is None:
            return False
        return files.read_optional(d, "freezer.state") == "FROZEN"

    # -- limits ----------------------------------------------------------------------------

    def set(self, resources: dict) -> None:
        r = resources or {}
        if r.get("unified"):
            raise InvalidCgroupValue(
                "linux.resources.unified sets cgroup v2 files; this host has cgroup v1 only"
            )
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
            self.set_blkio(r["blockIO"])
        if r.get("hugepageLimits"):
            self.set_hugetlb(r["hugepageLimits"])
        if r.get("network"):
            self.set_network(r["network"])
        if r.get("rdma"):
            log.debug("rdma limits ignored: pallet does not manage the rdma controller")

    def set_devices(self, entries: list[dict]) -> None:
        from pallet.oci.cgroups import devices

        d = self._dir("devices", "linux.resources.devices")
        for name, line in devices.v1_writes(devices.device_list(entries)):
            files.write(d, name, line)

    def set_memory(self, mem: dict) -> None:
        d = self._dir("memory", "linux.resources.memory")
        limit = int(mem.get("limit") or 0)
        swap = int(mem.get("swap") or 0)
        if limit == -1 and swap == 0:
            swap = -1  # unlimited memory implies unlimited swap, as in runc
        has_memsw = os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes"))
        if swap and not has_memsw:
            log.debug("memory.swap ignored: kernel has no swap accounting (no memory.memsw.*)")
            swap = 0
        if limit and swap:
            current = files.read_int(d, "memory.limit_in_bytes")
            # memsw must stay >= memory at every step: raise memsw first when growing.
            if swap == -1 or current < swap:
                files.write(d, "memory.memsw.limit_in_bytes", swap)
                files.write(d, "memory.limit_in_bytes", limit)
            else:
                files.write(d, "memory.limit_in_bytes", limit)
                files.write(d, "memory.memsw.limit_in_bytes", swap)
        else:
            if limit:
                files.write(d, "memory.limit_in_bytes", limit)
            if swap:
                files.write(d, "memory.memsw.limit_in_bytes", swap)
        if mem.get("reservation"):
            files.write(d, "memory.soft_limit_in_bytes", int(mem["reservation"]))
        if mem.get("kernel") or mem.get("kernelTCP"):
            log.debug("memory.kernel/kernelTCP ignored: the kernel no longer enforces kmem limits")
        swappiness = mem.get("swappiness")
        if swappiness is not None:
            if not 0 <= int(swappiness) <= 100:
                raise InvalidCgroupValue(
                    f"memory.swappiness {swappiness} for {d}/memory.swappiness must be 0..100"
                )
            files.write(d, "memory.swappiness", int(swappiness))
        if mem.get("disableOOMKiller"):
            files.write(d, "memory.oom_control", "1")

    def set_cpu(self, cpu: dict) -> None:
        wants = ("shares", "quota", "period", "burst", "realtimeRuntime", "realtimePeriod", "idle")
        if not any(cpu.get(k) is not None for k in wants):
            return
        d = self._dir("cpu", "linux.resources.cpu")
        shares = int(cpu.get("shares") or 0)
        if shares:
            files.write(d, "cpu.shares", shares)
            got = files.read_int(d, "cpu.shares")
            if got != shares:
                # The kernel clamps silently to [2, 262144]; a silent change is a lie to the user.
                raise InvalidCgroupValue(
                    f"cpu.shares {shares} for {d}/cpu.shares is out of range (kernel kept {got})"
                )
        quota, period = int(cpu.get("quota") or 0), int(cpu.get("period") or 0)
        pending_period = False
        if period:
            try:
                files.write(d, "cpu.cfs_period_us", period)
            except InvalidCgroupValue:
                # A shorter period can break the parent's quota until the new quota is in.
                if not quota:
                    raise
                pending_period = True
        if quota:
            files.write(d, "cpu.cfs_quota_us", quota)
            if pending_period:
                files.write(d, "cpu.cfs_period_us", period)
        if cpu.get("burst") is not None:
            files.write(d, "cpu.cfs_burst_us", int(cpu["burst"]))
        rt_period, rt_runtime = cpu.get("realtimePeriod"), cpu.get("realtimeRuntime")
        if rt_period or rt_runtime:
            self._set_realtime(d, int(rt_period or 0), int(rt_runtime or 0))
        if cpu.get("idle") is not None:
            files.write(d, "cpu.idle", int(cpu["idle"]))

    def _set_realtime(self, d: str, period: int, runtime: int) -> None:
        writes = []
        if period:
            writes.append(("cpu.rt_period_us", period))
        if runtime:
            writes.append(("cpu.rt_runtime_us", runtime))
        try:
            for name, value in writes:
                files.write(d, name, value)
        except InvalidCgroupValue:
            # runtime must fit the period at each step; the other order may work.
            for name, value in reversed(writes):
                files.write(d, name, value)

    def set_cpuset(self, cpu: dict) -> None:
        if not cpu.get("cpus") and not cpu.get("mems"):
            return
        d = self._dir("cpuset", "linux.resources.cpu.cpus/mems")
        if cpu.get("cpus"):
            files.write(d, "cpuset.cpus", cpu["cpus"])
        if cpu.get("mems"):
            files.write(d, "cpuset.mems", cpu["mems"])

    def set_pids(self, pids: dict) -> None:
        limit = int(pids.get("limit") or 0)
        if limit:
            d = self._dir("pids", "linux.resources.pids")
            files.write(d, "pids.max", convert.v2_limit(limit))

    def set_blkio(self, bio: dict) -> None:
        d = self._dir("blkio", "linux.resources.blockIO")
        weight_file = _first_existing(d, "blkio.weight", "blkio.bfq.weight")
        if bio.get("weight"):
            if weight_file:
                files.write(d, weight_file, int(bio["weight"]))
            else:
                log.debug("blockIO.weight ignored: %s has no blkio.weight (no CFQ/BFQ)", d)
        if bio.get("leafWeight"):
            if os.path.exists(os.path.join(d, "blkio.leaf_weight")):
                files.write(d, "blkio.leaf_weight", int(bio["leafWeight"]))
            else:
                log.debug("blockIO.leafWeight ignored: %s has no blkio.leaf_weight", d)
        wdev_file = _first_existing(d, "blkio.weight_device", "blkio.bfq.weight_device")
        for dev in bio.get("weightDevice") or []:
            num = convert.device_number(dev, "weightDevice")
            if not wdev_file:
                log.debug("blockIO.weightDevice %s ignored: %s has no weight_device file", num, d)
                continue
            if dev.get("weight"):
                files.write(d, wdev_file, f"{num} {int(dev['weight'])}")
            if dev.get("leafWeight") and os.path.exists(
                os.path.join(d, "blkio.leaf_weight_device")
            ):
                files.write(d, "blkio.leaf_weight_device", f"{num} {int(dev['leafWeight'])}")
        for key, name in _THROTTLE_FILES.items():
            for dev in bio.get(key) or []:
                num = convert.device_number(dev, key)
                files.write(d, name, f"{num} {int(dev.get('rate') or 0)}")

    def set_hugetlb(self, limits: list[dict]) -> None:
        d = self._dir("hugetlb", "linux.resources.hugepageLimits")
        sizes = convert.hugepage_sizes()
        for entry in limits:
            size = convert.check_page_size(str(entry.get("pageSize")), sizes)
            files.write(d, f"hugetlb.{size}.limit_in_bytes", int(entry.get("limit") or 0))

    def set_network(self, net: dict) -> None:
        if net.get("classID") is not None:
            if "net_cls" not in self._dirs:
                log.debug("network.classID ignored: net_cls controller not mounted")
            else:
                files.write(self._dirs["net_cls"], "net_cls.classid", int(net["classID"]))
        for prio in net.get("priorities") or []:
            if "net_prio" not in self._dirs:
                log.debug("network.priorities ignored: net_prio controller not mounted")
                break
            files.write(
                self._dirs["net_prio"],
                "net_prio.ifpriomap",
                f"{prio['name']} {int(prio['priority'])}",
            )

    # -- stats -----------------------------------------------------------------------------

    def stats(self) -> dict:
        out: dict = {}
        out["cpu"] = self._cpu_stats()
        if "memory" in self._dirs:
            out["memory"] = _memory_stats(self._dirs["memory"])
        if "pids" in self._dirs:
            d = self._dirs["pids"]
            out["pids"] = {
                "current": files.read_int(d, "pids.current"),
                "limit": files.read_int(d, "pids.max"),
            }
        if "blkio" in self._dirs:
            out["blkio"] = _blkio_stats(self._dirs["blkio"])
        if "hugetlb" in self._dirs:
            d = self._dirs["hugetlb"]
            out["hugetlb"] = {
                size: {
                    "usage": files.read_int(d, f"hugetlb.{size}.usage_in_bytes"),
                    "max": files.read_int(d, f"hugetlb.{size}.max_usage_in_bytes"),
                    "failcnt": files.read_int(d, f"hugetlb.{size}.failcnt"),
                }
                for size in convert.hugepage_sizes()
            }
        if "cpuset" in self._dirs:
            d = self._dirs["cpuset"]
            out["cpuset"] = {
                "cpus": files.read(d, "cpuset.cpus"),
                "mems": files.read(d, "cpuset.mems"),
            }
        return out

    def usage_sources(self) -> list[tuple[str, str, str]]:
        d, out = self._dirs, []
        if "cpuacct" in d:
            out.append(("cpu_ns", os.path.join(d["cpuacct"], "cpuacct.usage"), "int"))
        if "memory" in d:
            out.append(("memory", os.path.join(d["memory"], "memory.usage_in_bytes"), "int"))
            out.append(("memory_limit", os.path.join(d["memory"], "memory.limit_in_bytes"),
                        "int"))
        if "blkio" in d:
            name = f"{_blkio_prefix(d['blkio'])}io_service_bytes_recursive"
            out.append(("blkio_read,blkio_write", os.path.join(d["blkio"], name), "v1_blkio"))
        if "pids" in d:
            out.append(("pids", os.path.join(d["pids"], "pids.current"), "int"))
        return out

    def _cpu_stats(self) -> dict:
        usage: dict = {
            "total": 0,
            "percpu": [],
            "percpu_kernel": [],
            "percpu_user": [],
            "kernel": 0,
            "user": 0,
        }
        acct = self._dirs.get("cpuacct")
        if acct:
            usage["total"] = files.read_int(acct, "cpuacct.usage")
            usage["percpu"] = _ints(files.read_optional(acct, "cpuacct.usage_percpu"))
            usage["percpu_kernel"] = _ints(files.read_optional(acct, "cpuacct.usage_percpu_sys"))
            usage["percpu_user"] = _ints(files.read_optional(acct, "cpuacct.usage_percpu_user"))
            ticks = files.parse_flat_keyed(files.read_optional(acct, "cpuacct.stat") or "")
            usage["user"] = convert.ticks_to_ns(ticks.get("user", 0), _user_hz())
            usage["kernel"] = convert.ticks_to_ns(ticks.get("system", 0), _user_hz())
        throttling = {"periods": 0, "throttledPeriods": 0, "throttledTime": 0}
        cpu = self._dirs.get("cpu")
        if cpu:
            st = files.parse_flat_keyed(files.read_optional(cpu, "cpu.stat") or "")
            throttling = {
                "periods": st.get("nr_periods", 0),
                "throttledPeriods": st.get("nr_throttled", 0),
                "throttledTime": st.get("throttled_time", 0),
            }
        return {"usage": usage, "throttling": throttling}


_THROTTLE_FILES = {
    "throttleReadBpsDevice": "blkio.throttle.read_bps_device",
    "throttleWriteBpsDevice": "blkio.throttle.write_bps_device",
    "throttleReadIOPSDevice": "blkio.throttle.read_iops_device",
    "throttleWriteIOPSDevice": "blkio.throttle.write_iops_device",
}


def _mkdirs(d: str) -> None:
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        raise CgroupError(f"cannot create cgroup {d}: {e.strerror}") from None


def _first_existing(d: str, *names: str) -> str | None:
    for n in names:
        if os.path.exists(os.path.join(d, n)):
            return n
    return None


def _ints(text: str | None) -> list[int]:
    return [int(x) for x in (text or "").split()]


def _user_hz() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100


def _memory_entry(d: str, prefix: str) -> dict:
    return {
        "limit": files.read_int(d, f"{prefix}.limit_in_bytes"),
        "usage": files.read_int(d, f"{prefix}.usage_in_bytes"),
        "max": files.read_int(d, f"{prefix}.max_usage_in_bytes"),
        "failcnt": files.read_int(d, f"{prefix}.failcnt"),
    }


def _memory_stats(d: str) -> dict:
    raw = files.parse_flat_keyed(files.read_optional(d, "memory.stat") or "")
    out = {
        "cache": raw.get("total_cache", raw.get("cache", 0)),
        "usage": _memory_entry(d, "memory"),
        "swap": _memory_entry(d, "memory.memsw"),
        "kernel": _memory_entry(d, "memory.kmem"),
        "kernelTCP": _memory_entry(d, "memory.kmem.tcp"),
        "raw": raw,
    }
    return out


def _blkio_entries(text: str | None) -> list[dict]:
    """blkio "maj:min Op value" lines as runc's BlkioEntry dicts (the Total line dropped)."""
    out = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, _, minor = parts[0].partition(":")
            out.append(
                {"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])}
            )
        elif len(parts) == 2 and ":" in parts[0]:
            major, _, minor = parts[0].partition(":")
            out.append({"major": int(major), "minor": int(minor), "op": "", "value": int(parts[1])})
    return out


def _blkio_prefix(d: str) -> str:
    # CFQ files first, then BFQ, then the throttle layer (the only one on this kind of host).
    for prefix in ("blkio.", "blkio.bfq.", "blkio.throttle."):
        if os.path.exists(os.path.join(d, f"{prefix}io_service_bytes_recursive")):
            return prefix
    return "blkio.throttle."


def _blkio_stats(d: str) -> dict:
    prefix = _blkio_prefix(d)
    out = {
        "ioServiceBytesRecursive": _blkio_entries(
            files.read_optional(d, f"{prefix}io_service_bytes_recursive")
        ),
        "ioServicedRecursive": _blkio_entries(
            files.read_optional(d, f"{prefix}io_serviced_recursive")
        ),
    }
    for key, name in (
        ("ioQueuedRecursive", "io_queued_recursive"),
        ("ioServiceTimeRecursive", "io_service_time_recursive"),
        ("ioWaitTimeRecursive", "io_wait_time_recursive"),
        ("ioMergedRecursive", "io_merged_recursive"),
        ("ioTimeRecursive", "time_recursive"),
        ("sectorsRecursive", "sectors_recursive"),
    ):
        text = files.read_optional(d, f"{prefix}{name}")
        if text is not None:
            out[key] = _blkio_entries(text)
    return out
