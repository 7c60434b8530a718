"""docker stats' numbers from a cgroup's files held open: the same values stats() reports,
for v1, v2 and hybrid trees (fake cgroup directories: regular files re-read with pread)."""

from __future__ import annotations

import os

import pytest

from pallet.oci.cgroups.hybrid import HybridCgroup
from pallet.oci.cgroups.usage import CgroupGone, UsageReader
from pallet.oci.cgroups.v1 import V1Cgroup
from pallet.oci.cgroups.v2 import V2Cgroup


def _write(d: str, files: dict[str, str]) -> None:
    os.makedirs(d, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)


V2_FILES = {
    "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
    "memory.current": "4096\n", "memory.max": "max\n", "memory.stat": "file 0\n",
    "io.stat": "8:0 rbytes=100 wbytes=20 rios=1 wios=1\n8:16 rbytes=5 wbytes=2\n",
    "pids.current": "3\n",
}
V1_BLKIO = "8:0 Read 300\n8:0 Write 40\n8:0 Sync 0\n8:0 Total 340\nTotal 340\n"


def _docker_numbers(stats: dict) -> dict[str, int]:
    blk = stats.get("blkio", {}).get("ioServiceBytesRecursive", [])
    mem = stats.get("memory", {}).get("usage", {})
    return {"cpu_ns": stats["cpu"]["usage"]["total"], "memory": mem.get("usage", 0),
            "memory_limit": mem.get("limit", 0),
            "blkio_read": sum(e["value"] for e in blk if e["op"].lower() == "read"),
            "blkio_write": sum(e["value"] for e in blk if e["op"].lower() == "write"),
            "pids": stats.get("pids", {}).get("current", 0)}


def test_v2_reads_what_stats_reports_and_sees_changes(tmp_path):
    d = str(tmp_path / "ctr")
    _write(d, V2_FILES)
    cg = V2Cgroup(d, str(tmp_path), frozenset({"memory", "io", "pids", "cpu"}))
    with UsageReader(cg.usage_sources()) as r:
        first = r.read()
        assert first == _docker_numbers(cg.stats())
        assert first == {"cpu_ns": 1_500_000, "memory": 4096, "memory_limit": 0,
                         "blkio_read": 105, "blkio_write": 22, "pids": 3}
        # Rewritten in place, as cgroupfs regenerates a file: the same fds see the change.
        _write(d, {"memory.current": "8192\n", "pids.current": "4\n",
                   "cpu.stat": "usage_usec 2500\n"})
        again = r.read()
        assert (again["cpu_ns"], again["memory"], again["pids"]) == (2_500_000, 8192, 4)


def test_v1_and_hybrid_take_each_number_from_the_side_that_has_it(tmp_path):
    root = tmp_path / "v1"
    dirs = {c: str(root / c / "ctr") for c in ("cpuacct", "memory", "blkio", "pids")}
    _write(dirs["cpuacct"], {"cpuacct.usage": "777\n", "cpuacct.stat": "user 1\nsystem 1\n"})
    _write(dirs["memory"], {"memory.usage_in_bytes": "1000\n",
                            "memory.limit_in_bytes": "9223372036854771712\n"})
    _write(dirs["blkio"], {"blkio.throttle.io_service_bytes_recursive": V1_BLKIO})
    _write(dirs["pids"], {"pids.current": "2\n", "pids.max": "max\n"})
    v1 = V1Cgroup(dirs, {c: str(root / c) for c in dirs})
    with UsageReader(v1.usage_sources()) as r:
        got = r.read()
    assert got == _docker_numbers(v1.stats())
    assert (got["blkio_read"], got["blkio_write"], got["pids"]) == (300, 40, 2)

    # Hybrid with memory only on the cgroup2 side (as when v1 lacks the controller).
    del dirs["memory"]
    v1 = V1Cgroup(dirs, {c: str(root / c) for c in dirs})
    _write(str(tmp_path / "unified" / "ctr"), V2_FILES)
    v2 = V2Cgroup(str(tmp_path / "unified" / "ctr"), str(tmp_path / "unified"),
                  frozenset({"memory"}))
    hy = HybridCgroup(v1, v2)
    with UsageReader(hy.usage_sources()) as r:
        got = r.read()
    assert got == _docker_numbers(hy.stats())
    assert (got["cpu_ns"], got["memory"], got["blkio_read"]) == (777, 4096, 300)


def test_a_removed_cgroup_is_gone_not_an_error(tmp_path):
    cg = V2Cgroup(str(tmp_path / "never-made"), str(tmp_path), frozenset({"memory"}))
    with pytest.raises(CgroupGone):
        UsageReader(cg.usage_sources())


def test_the_layout_is_parsed_once_per_process(tmp_path, monkeypatch):
    from pallet.oci import cgroups

    info = tmp_path / "mountinfo"
    info.write_text("41 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n")
    first = cgroups.detect_layout(str(info))
    info.write_text("")  # a second parse would find no cgroup at all
    assert cgroups.detect_layout(str(info)) is first
