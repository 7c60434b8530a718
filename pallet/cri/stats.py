"""CRI stats RPCs: ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats
(from each container's cgroup via the engine), ListMetricDescriptors, ListPodSandboxMetrics.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

import grpc
from cri_api.v1 import api_pb2 as pb

from pallet.engine.store import ContainerFilter, ContainerRecord, PodFilter, PodRecord
from pallet.errors import NotFound, PalletError

if TYPE_CHECKING:
    from pallet.cri.node import Node

LAYER_USAGE_TTL = 10.0  # s: walking a writable layer is not free; kubelet asks every 10 s


class StatsRPCs:
    node: Node
    _cpu_samples: dict[str, tuple[int, int]]
    _layer_cache: dict[str, tuple[float, int, int]]
    _stats_lock: threading.Lock

    def _init_stats(self) -> None:
        self._cpu_samples = {}
        self._layer_cache = {}
        self._stats_lock = threading.Lock()

    def ContainerStats(self, request: pb.ContainerStatsRequest, context: grpc.ServicerContext
                       ) -> pb.ContainerStatsResponse:
        rec = self.node.container(request.container_id)
        return pb.ContainerStatsResponse(stats=self._container_stats(rec))

    def ListContainerStats(self, request: pb.ListContainerStatsRequest,
                           context: grpc.ServicerContext) -> pb.ListContainerStatsResponse:
        f = request.filter
        flt = ContainerFilter(labels=dict(f.label_selector), states=("running",))
        try:
            if f.pod_sandbox_id:
                flt.pod_id = self.node.pod(f.pod_sandbox_id).id
            if f.id:
                flt.id_prefix = self.node.container(f.id).id
        except NotFound:
            return pb.ListContainerStatsResponse()
        ids = self.node.sandbox_ids()
        recs = [r for r in self.node.engine.list(filters=flt) if r.pod_id in ids]
        return pb.ListContainerStatsResponse(stats=[self._container_stats(r) for r in recs])

    def PodSandboxStats(self, request: pb.PodSandboxStatsRequest,
                        context: grpc.ServicerContext) -> pb.PodSandboxStatsResponse:
        pod = self.node.pod(request.pod_sandbox_id)
        return pb.PodSandboxStatsResponse(stats=self._pod_stats(pod))

    def ListPodSandboxStats(self, request: pb.ListPodSandboxStatsRequest,
                            context: grpc.ServicerContext) -> pb.ListPodSandboxStatsResponse:
        f = request.filter
        flt = PodFilter(labels=dict(f.label_selector), states=("ready",))
        if f.id:
            try:
                flt.id_prefix = self.node.pod(f.id).id
            except NotFound:
                return pb.ListPodSandboxStatsResponse()
        return pb.ListPodSandboxStatsResponse(
            stats=[self._pod_stats(p) for p in self.node.pods.list(flt)])

    def ListMetricDescriptors(self, request: pb.ListMetricDescriptorsRequest,
                              context: grpc.ServicerContext) -> pb.ListMetricDescriptorsResponse:
        return pb.ListMetricDescriptorsResponse()  # no cAdvisor-style metrics yet

    def ListPodSandboxMetrics(self, request: pb.ListPodSandboxMetricsRequest,
                              context: grpc.ServicerContext) -> pb.ListPodSandboxMetricsResponse:
        return pb.ListPodSandboxMetricsResponse()

    # -- building blocks -------------------------------------------------------------------
    def _raw(self, rec: ContainerRecord) -> dict[str, Any]:
        if rec.state not in ("running", "paused"):
            return {}
        try:
            return self.node.engine.handler(rec.runtime_handler).stats(rec.id)
        except (PalletError, OSError):
            return {}  # exited between the listing and now

    def _container_stats(self, rec: ContainerRecord, raw: dict[str, Any] | None = None
                         ) -> pb.ContainerStats:
        raw = self._raw(rec) if raw is None else raw
        now = time.time_ns()
        cri = rec.config.get("cri") or {}
        attrs = pb.ContainerAttributes(
            id=rec.id, metadata=pb.ContainerMetadata(name=cri.get("name", rec.name),
                                                     attempt=cri.get("attempt", 0)),
            labels=rec.labels, annotations=rec.annotations)
        used, inodes = self._layer_usage(rec.id)
        return pb.ContainerStats(
            attributes=attrs, cpu=self._cpu(rec.id, raw, now), memory=_memory(raw, now),
            writable_layer=pb.FilesystemUsage(
                timestamp=now, fs_id=pb.FilesystemIdentifier(mountpoint=self.node.engine.root),
                used_bytes=pb.UInt64Value(value=used), inodes_used=pb.UInt64Value(value=inodes)))

    def _cpu(self, cid: str, raw: dict[str, Any], now: int) -> pb.CpuUsage:
        total = int(((raw.get("cpu") or {}).get("usage") or {}).get("total", 0))
        cpu = pb.CpuUsage(timestamp=now, usage_core_nano_seconds=pb.UInt64Value(value=total))
        with self._stats_lock:
            prev = self._cpu_samples.get(cid)
            self._cpu_samples[cid] = (now, total)
            if len(self._cpu_samples) > 4096:  # containers long gone: forget them
                self._cpu_samples.clear()
        if prev and now > prev[0] and total >= prev[1]:
            rate = (total - prev[1]) * 1_000_000_000 // (now - prev[0])
            cpu.usage_nano_cores.value = rate
        return cpu

    def _layer_usage(self, cid: str) -> tuple[int, int]:
        now = time.monotonic()
        with self._stats_lock:
            hit = self._layer_cache.get(cid)
        if hit and now - hit[0] < LAYER_USAGE_TTL:
            return hit[1], hit[2]
        used = inodes = 0
        for dirpath, dirs, files in os.walk(os.path.join(self.node.engine.ctr_dir(cid), "upper")):
            inodes += len(dirs) + len(files)
            for name in files:
                try:
                    used += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except OSError:
                    continue
        with self._stats_lock:
            if len(self._layer_cache) > 4096:
                self._layer_cache.clear()
            self._layer_cache[cid] = (now, used, inodes)
        return used, inodes

    def _pod_stats(self, pod: PodRecord) -> pb.PodSandboxStats:
        spec = pod.config.get("spec") or {}
        now = time.time_ns()
        attrs = pb.PodSandboxAttributes(
            id=pod.id, metadata=pb.PodSandboxMetadata(
                name=spec.get("name", ""), uid=spec.get("uid", ""),
                namespace=spec.get("namespace", ""), attempt=spec.get("attempt", 0)),
            labels=pod.labels, annotations=pod.annotations)
        ctrs = [r for r in self.node.engine.list(filters=ContainerFilter(pod_id=pod.id))]
        stats, cpu_total, mem = [], 0, {"working": 0, "usage": 0, "rss": 0, "faults": 0,
                                        "major": 0}
        procs = 0
        rate = 0
        for rec in ctrs:
            raw = self._raw(rec)
            cs = self._container_stats(rec, raw)
            stats.append(cs)
            cpu_total += cs.cpu.usage_core_nano_seconds.value
            rate += cs.cpu.usage_nano_cores.value
            mem["working"] += cs.memory.working_set_bytes.value
            mem["usage"] += cs.memory.usage_bytes.value
            mem["rss"] += cs.memory.rss_bytes.value
            mem["faults"] += cs.memory.page_faults.value
            mem["major"] += cs.memory.major_page_faults.value
            procs += int((raw.get("pids") or {}).get("current", 0))
        linux = pb.LinuxPodSandboxStats(
            cpu=pb.CpuUsage(timestamp=now, usage_core_nano_seconds=pb.UInt64Value(value=cpu_total),
                            usage_nano_cores=pb.UInt64Value(value=rate)),
            memory=pb.MemoryUsage(timestamp=now,
                                  working_set_bytes=pb.UInt64Value(value=mem["working"]),
                                  usage_bytes=pb.UInt64Value(value=mem["usage"]),
                                  rss_bytes=pb.UInt64Value(value=mem["rss"]),
                                  page_faults=pb.UInt64Value(value=mem["faults"]),
                                  major_page_faults=pb.UInt64Value(value=mem["major"])),
            process=pb.ProcessUsage(timestamp=now,
                                    process_count=pb.UInt64Value(value=procs)),
            containers=stats)
        net = _network(ctrs, now)
        if net is not None:
            linux.network.CopyFrom(net)
        return pb.PodSandboxStats(attributes=attrs, linux=linux)


def _memory(raw: dict[str, Any], now: int) -> pb.MemoryUsage:
    m = raw.get("memory") or {}
    st = m.get("raw") or m.get("stats") or {}
    usage = int((m.get("usage") or {}).get("usage", 0))
    limit = int((m.get("usage") or {}).get("limit", 0))
    inactive = int(st.get("total_inactive_file", st.get("inactive_file", 0)))
    working = max(0, usage - inactive)  # cAdvisor's (and the kubelet's) working set
    out = pb.MemoryUsage(
        timestamp=now, working_set_bytes=pb.UInt64Value(value=working),
        usage_bytes=pb.UInt64Value(value=usage),
        rss_bytes=pb.UInt64Value(value=int(st.get("total_rss", st.get("anon", 0)))),
        page_faults=pb.UInt64Value(value=int(st.get("total_pgfault", st.get("pgfault", 0)))),
        major_page_faults=pb.UInt64Value(value=int(st.get("total_pgmajfault",
                                                         st.get("pgmajfault", 0)))))
    if 0 < limit < 1 << 62:
        out.available_bytes.value = max(0, limit - working)
    return out


def _network(ctrs: list[ContainerRecord], now: int) -> pb.NetworkUsage | None:
    """Interface counters from /proc/<pid>/net/dev of a running member: that file shows
    the network namespace of the process, i.e. the pod's."""
    for rec in ctrs:
        if rec.state != "running" or not rec.pid:
            continue
        try:
            with open(f"/proc/{rec.pid}/net/dev") as f:
                lines = f.read().splitlines()[2:]
        except OSError:
            continue
        ifaces = []
        for line in lines:
            name, _, rest = line.partition(":")
            name = name.strip()
            if name == "lo":
                continue
            v = rest.split()
            ifaces.append(pb.NetworkInterfaceUsage(
                name=name, rx_bytes=pb.UInt64Value(value=int(v[0])),
                rx_errors=pb.UInt64Value(value=int(v[2])),
                tx_bytes=pb.UInt64Value(value=int(v[8])),
                tx_errors=pb.UInt64Value(value=int(v[10]))))
        if not ifaces:
            return None
        default = next((i for i in ifaces if i.name == "eth0"), ifaces[0])
        return pb.NetworkUsage(timestamp=now, default_interface=default, interfaces=ifaces)
    return None
