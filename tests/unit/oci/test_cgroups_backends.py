"""What each backend writes for an OCI resources dict, recorded against a fake cgroup directory.

No root needed: the writes are captured, the few reads come from plain files in tmp_path.
"""

import logging

import pytest

from pallet.oci.cgroups import files
from pallet.oci.cgroups.errors import CgroupError, InvalidCgroupValue
from pallet.oci.cgroups.hybrid import HybridCgroup
from pallet.oci.cgroups.v1 import V1Cgroup
from pallet.oci.cgroups.v2 import V2Cgroup


@pytest.fixture
def writes(monkeypatch):
    log: list[tuple[str, str]] = []

    def record(directory, name, value):
        log.append((name, str(value)))

    monkeypatch.setattr(files, "write", record)
    return log


def _v1(tmp_path, **contents) -> V1Cgroup:
    for name, text in contents.items():
        (tmp_path / name.replace("__", ".")).write_text(text)
    ctrls = ("memory", "cpu", "cpuset", "pids", "blkio", "devices", "freezer")
    return V1Cgroup({c: str(tmp_path) for c in ctrls}, {c: "/" for c in ctrls})


def _v2(
    tmp_path, controllers=("cpu", "memory", "pids", "io", "hugetlb", "cpuset"), **contents
) -> V2Cgroup:
    for name, text in contents.items():
        (tmp_path / name.replace("__", ".")).write_text(text)
    return V2Cgroup(str(tmp_path), "/sys/fs/cgroup", frozenset(controllers))


def test_v1_growing_memory_raises_memsw_first(tmp_path, writes):
    cg = _v1(tmp_path, memory__limit_in_bytes="1048576", memory__memsw__limit_in_bytes="1048576")
    cg.set({"memory": {"limit": 4 << 20, "swap": 8 << 20}})
    assert writes == [
        ("memory.memsw.limit_in_bytes", str(8 << 20)),
        ("memory.limit_in_bytes", str(4 << 20)),
    ]


def test_v1_shrinking_memory_lowers_the_limit_first(tmp_path, writes):
    cg = _v1(
        tmp_path, memory__limit_in_bytes=str(64 << 20), memory__memsw__limit_in_bytes=str(64 << 20)
    )
    cg.set({"memory": {"limit": 4 << 20, "swap": 4 << 20}})
    assert writes == [
        ("memory.limit_in_bytes", str(4 << 20)),
        ("memory.memsw.limit_in_bytes", str(4 << 20)),
    ]


def test_v1_swappiness_out_of_range_is_refused(tmp_path, writes):
    with pytest.raises(InvalidCgroupValue, match="swappiness"):
        _v1(tmp_path).set({"memory": {"swappiness": 101}})


def test_v1_blkio_weight_without_weight_files_is_a_debug_note_not_an_error(
    tmp_path, writes, caplog
):
    caplog.set_level(logging.DEBUG, logger="pallet.oci.cgroups")
    _v1(tmp_path).set(
        {
            "blockIO": {
                "weight": 500,
                "throttleReadBpsDevice": [{"major": 7, "minor": 0, "rate": 10}],
            }
        }
    )
    assert writes == [("blkio.throttle.read_bps_device", "7:0 10")]
    assert "blockIO.weight ignored" in caplog.text


def test_v1_refuses_unified_keys(tmp_path, writes):
    with pytest.raises(InvalidCgroupValue, match="cgroup v1 only"):
        _v1(tmp_path).set({"unified": {"memory.high": "1"}})


def test_v1_missing_controller_is_named(tmp_path, writes):
    cg = V1Cgroup({"memory": str(tmp_path)}, {"memory": "/"})
    with pytest.raises(CgroupError, match="pids cgroup controller"):
        cg.set({"pids": {"limit": 5}})


def test_v2_translates_cpu_like_runc(tmp_path, writes):
    _v2(tmp_path).set(
        {"cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"}}
    )
    assert writes == [
        ("cpu.weight", "39"),
        ("cpu.max", "50000 100000"),
        ("cpuset.cpus", "0"),
        ("cpuset.mems", "0"),
    ]


def test_v2_memory_swap_is_written_as_swap_alone(tmp_path, writes):
    cg = _v2(tmp_path, memory__current="1000", memory__swap__max="max")
    cg.set({"memory": {"limit": 4 << 20, "swap": 6 << 20, "reservation": 1 << 20}})
    assert writes == [
        ("memory.swap.max", str(2 << 20)),
        ("memory.max", str(4 << 20)),
        ("memory.low", str(1 << 20)),
    ]


def test_v2_memory_limit_below_usage_is_refused_instead_of_oom_killing(tmp_path, writes):
    cg = _v2(tmp_path, memory__current=str(10 << 20))
    with pytest.raises(InvalidCgroupValue, match="below current usage"):
        cg.set({"memory": {"limit": 1 << 20}})
    assert writes == []


def test_v2_realtime_is_refused(tmp_path, writes):
    with pytest.raises(InvalidCgroupValue, match="cgroup v1"):
        _v2(tmp_path).set({"cpu": {"realtimeRuntime": 1000}})


def test_v2_io_throttles_and_weight(tmp_path, writes):
    _v2(tmp_path, io__weight="default 100").set(
        {
            "blockIO": {
                "weight": 500,
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 0}],
            }
        }
    )
    assert writes == [("io.weight", "4950"), ("io.max", "8:0 wiops=max")]


def test_v2_unified_map_refuses_process_files_and_absent_controllers(tmp_path, writes):
    cg = _v2(tmp_path, controllers=("hugetlb",))
    with pytest.raises(InvalidCgroupValue, match="not a settable"):
        cg.set({"unified": {"cgroup.procs": "1"}})
    with pytest.raises(InvalidCgroupValue, match="memory controller"):
        cg.set({"unified": {"memory.high": "1"}})
    cg.set({"unified": {"hugetlb.2MB.max": "0"}})
    assert writes == [("hugetlb.2MB.max", "0")]


def test_hybrid_sends_hugetlb_to_cgroup2_and_the_rest_to_v1(tmp_path, writes, monkeypatch):
    from pallet.oci.cgroups import convert

    monkeypatch.setattr(convert, "hugepage_sizes", lambda: ["1GB", "2MB"])
    v1dir, v2dir = tmp_path / "v1", tmp_path / "v2"
    v1dir.mkdir()
    v2dir.mkdir()
    cg = HybridCgroup(_v1(v1dir), _v2(v2dir, controllers=("hugetlb",)))
    cg.set({"pids": {"limit": 7}, "hugepageLimits": [{"pageSize": "2MB", "limit": 0}]})
    assert writes == [("pids.max", "7"), ("hugetlb.2MB.max", "0")]
    assert cg.paths["hugetlb"] == str(v2dir) and cg.paths["memory"] == str(v1dir)
    with pytest.raises(InvalidCgroupValue, match="on cgroup v1 on this host"):
        cg.set({"unified": {"memory.high": "1"}})
