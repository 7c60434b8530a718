"""Value translations (runc's v1→v2 formulas), device rule folding, the BPF program and error wording."""

import errno
import struct

import pytest

from pallet.oci.cgroups import bpf, convert, devices, files
from pallet.oci.cgroups.errors import CgroupError, InvalidCgroupValue


@pytest.mark.parametrize(("shares", "weight"), [(0, 0), (2, 1), (1024, 39), (262144, 10000)])
def test_cpu_shares_become_weight_like_runc(shares, weight):
    assert convert.shares_to_weight(shares) == weight


@pytest.mark.parametrize(("v1", "v2"), [(0, 0), (10, 1), (500, 4950), (1000, 10000)])
def test_blkio_weight_becomes_io_weight_like_runc(v1, v2):
    assert convert.blkio_weight_to_io_weight(v1) == v2


def test_oci_swap_is_memory_plus_swap_and_v2_wants_swap_alone():
    assert convert.swap_to_v2(300, 100) == 200
    assert convert.swap_to_v2(-1, 100) == -1
    assert convert.swap_to_v2(0, 100) == 0
    with pytest.raises(InvalidCgroupValue, match="at least"):
        convert.swap_to_v2(50, 100)
    with pytest.raises(InvalidCgroupValue, match="needs a memory limit"):
        convert.swap_to_v2(50, -1)


def test_cpu_max_from_quota_and_period():
    assert convert.cpu_max(0, 0) is None
    assert convert.cpu_max(50000, 100000) == "50000 100000"
    assert convert.cpu_max(-1, 100000) == "max 100000"
    assert convert.cpu_max(0, 100000) == "max 100000"
    assert convert.cpu_max(20000, 0) == "20000"


def test_hugepage_names_follow_the_kernel_files():
    assert convert.hugepage_size_name(2048) == "2MB"
    assert convert.hugepage_size_name(1048576) == "1GB"
    assert convert.hugepage_size_name(64) == "64KB"
    with pytest.raises(InvalidCgroupValue, match="not offered"):
        convert.check_page_size("3MB", ["1GB", "2MB"])


def test_v2_limit_spells_unlimited_as_max():
    assert convert.v2_limit(-1) == "max"
    assert convert.v2_limit(4096) == "4096"


def test_devices_start_default_deny_and_get_runc_defaults():
    state = devices.device_list([{"allow": False, "access": "rwm"}])
    assert state.default_allow is False
    assert state.exceptions[("c", 1, 3)] == "rwm"  # /dev/null
    assert state.exceptions[("c", 136, devices.WILDCARD)] == "rwm"  # /dev/pts/*
    writes = devices.v1_writes(state)
    assert writes[0] == ("devices.deny", "a *:* rwm")
    assert ("devices.allow", "c 136:* rwm") in writes
    assert all(name == "devices.allow" for name, _ in writes[1:])


def test_allow_all_then_deny_one_is_a_deny_list():
    state = devices.device_list(
        [{"allow": True}, {"allow": False, "type": "b", "major": 8, "minor": 0, "access": "w"}],
        with_defaults=False,
    )
    assert devices.v1_writes(state) == [("devices.allow", "a *:* rwm"), ("devices.deny", "b 8:0 w")]


def test_a_later_deny_takes_back_part_of_an_allow():
    state = devices.device_list(
        [
            {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},
            {"allow": False, "type": "c", "major": 10, "minor": 200, "access": "w"},
        ],
        with_defaults=False,
    )
    assert state.exceptions == {("c", 10, 200): "rm"}


@pytest.mark.parametrize(
    "entry",
    [
        {"type": "c"},
        {"allow": True, "type": "x"},
        {"allow": True, "access": "rwx"},
        {"allow": True, "major": -5},
    ],
)
def test_malformed_device_rules_are_refused(entry):
    with pytest.raises(InvalidCgroupValue):
        devices.rule_from_spec(entry)


def _decode(program: bytes) -> list[tuple[int, int, int, int, int]]:
    out = []
    for i in range(0, len(program), 8):
        code, regs, off, imm = struct.unpack("<BBhi", program[i : i + 8])
        out.append((code, regs & 0xF, regs >> 4, off, imm))
    return out


def test_bpf_allow_list_jumps_past_each_rule_and_denies_by_default():
    state = devices.DeviceList(False, {("c", 1, 3): "rwm", ("c", 136, devices.WILDCARD): "rw"})
    prog = _decode(bpf.assemble(state))
    assert prog[-2:] == [(bpf.ALU32_MOV_K, 0, 0, 0, 0), (bpf.JMP_EXIT, 0, 0, 0, 0)]
    # Every conditional jump lands just past an exit, i.e. at the start of the next rule.
    for i, (code, *_rest) in enumerate(prog):
        if code in (bpf.JMP_JNE_K, bpf.JMP_JNE_X):
            target = i + 1 + prog[i][3]
            assert prog[target - 1][0] == bpf.JMP_EXIT
    # A full-access rule has no access check; the "rw" rule has one (and the R1 scratch move).
    assert sum(1 for c, *_ in prog if c == bpf.JMP_JNE_X) == 1
    assert sum(1 for c, *_ in prog if c == bpf.ALU32_MOV_K and _[3] == 1) == 2  # two allow exits


def test_bpf_allow_all_is_a_single_verdict():
    prog = _decode(bpf.assemble(devices.DeviceList(True, {})))
    assert prog[6:] == [(bpf.ALU32_MOV_K, 0, 0, 0, 1), (bpf.JMP_EXIT, 0, 0, 0, 0)]


def test_eperm_is_one_line_naming_file_value_and_capability():
    err = files.write_error(
        "/sys/fs/cgroup/memory/x/memory.limit_in_bytes", "1\n", OSError(errno.EPERM, "x")
    )
    assert isinstance(err, CgroupError)
    text = str(err)
    assert "\n" not in text and "memory.limit_in_bytes" in text and "CAP_SYS_RESOURCE" in text


def test_busy_limit_is_an_invalid_value_with_a_hint():
    err = files.write_error("/cg/memory.limit_in_bytes", "4096", OSError(errno.EBUSY, "x"))
    assert isinstance(err, InvalidCgroupValue)
    assert "'4096'" in str(err) and "below what the cgroup already uses" in str(err)


def test_flat_and_nested_keyed_files_parse():
    assert files.parse_flat_keyed("usage_usec 10\nnr_periods 2\nbad\nx max\n") == {
        "usage_usec": 10,
        "nr_periods": 2,
    }
    assert files.parse_nested_keyed("8:0 rbytes=5 wbytes=6 dbytes=0\n") == {
        "8:0": {"rbytes": 5, "wbytes": 6, "dbytes": 0}
    }


def test_v1_rules_are_written_in_the_spec_order_before_the_defaults():
    # devices.list reads exceptions back in the order they were written; runtime-tools'
    # linux_cgroups_devices checks the spec's entries come back in the listed order.
    state = devices.device_list(
        [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
            {"allow": True, "type": "b", "major": 8, "minor": 20, "access": "rw"},
            {"allow": True, "type": "b", "major": 10, "minor": 200, "access": "r"},
        ]
    )
    writes = devices.v1_writes(state)
    assert writes[:4] == [
        ("devices.deny", "a *:* rwm"),
        ("devices.allow", "c 10:229 rwm"),
        ("devices.allow", "b 8:20 rw"),
        ("devices.allow", "b 10:200 r"),
    ]
    assert writes[4] == ("devices.allow", "c *:* m")  # runc's defaults follow


def test_a_rule_for_a_listed_device_changes_it_in_place():
    state = devices.device_list(
        [
            {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "r"},
            {"allow": True, "type": "b", "major": 8, "minor": 20, "access": "rw"},
            {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "w"},
        ],
        with_defaults=False,
    )
    assert [r.v1_line() for r in state.rules()[1:]] == ["c 10:229 rw", "b 8:20 rw"]
