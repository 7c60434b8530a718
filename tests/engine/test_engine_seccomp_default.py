"""Docker's default seccomp profile: its conditional rules, and that it compiles."""

from __future__ import annotations

import pytest

from pallet.engine.seccomp_default import docker_default_profile, machine_arches, render_oci
from pallet.engine.specgen import DEFAULT_CAPABILITIES
from pallet.errors import InvalidArgument


def render(caps=DEFAULT_CAPABILITIES, machine="x86_64", kernel="6.1.0", profile=None):
    return render_oci(
        profile or docker_default_profile(), capabilities=caps, machine=machine, kernel=kernel
    )


def names(sec) -> set[str]:
    return {n for r in sec["syscalls"] for n in r["names"]}


def test_the_profile_keeps_moby_s_shape():
    p = docker_default_profile()
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == 1
    allowed = p["syscalls"][0]["names"]
    assert len(allowed) == 349 and len(set(allowed)) == len(allowed)
    assert {"io_uring_setup", "landlock_create_ruleset", "statx", "openat2"} <= set(allowed)
    # Every rule is either unconditional or keyed by caps, arches or kernel.
    for rule in p["syscalls"]:
        for cond in (rule.get("includes") or {}, rule.get("excludes") or {}):
            assert set(cond) <= {"caps", "arches", "minKernel"}


def test_each_call_gets_a_fresh_copy():
    a = docker_default_profile()
    a["syscalls"].clear()
    assert docker_default_profile()["syscalls"]


def test_includes_need_every_cap_and_excludes_fire_on_any():
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_X", "CAP_Y"]}},
            {"names": ["b"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_X", "CAP_Z"]}},
            {"names": ["c"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["arm64"]}},
            {"names": ["d"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.10"}},
        ],
    }
    assert names(render(["CAP_X"], profile=profile)) == {"c"}
    assert names(render(["CAP_X", "CAP_Y"], profile=profile)) == {"a", "c"}
    assert names(render([], machine="aarch64", kernel="5.4", profile=profile)) == {"b", "d"}


def test_an_oci_format_profile_with_architectures_passes_through():
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}],
            }
        ],
    }
    out = render(profile=profile)
    assert out["architectures"] == ["SCMP_ARCH_X86_64"]
    assert out["flags"] == ["SECCOMP_FILTER_FLAG_LOG"]
    assert out["syscalls"][0]["args"] == [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        (
            {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["x"], "archMap": [{}]},
            "both 'architectures' and 'archMap'",
        ),
        (
            {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "NOPE"}]},
            "unknown action 'NOPE'",
        ),
        (
            {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]},
            "names no syscalls",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["a"],
                        "action": "SCMP_ACT_ALLOW",
                        "args": [{"index": 0, "value": 1, "op": "LIKE"}],
                    }
                ],
            },
            "unknown argument op 'LIKE'",
        ),
    ],
)
def test_malformed_profiles_are_refused_with_the_reason(profile, message):
    with pytest.raises(InvalidArgument, match=message):
        render(profile=profile)


def test_an_unknown_machine_is_refused():
    with pytest.raises(InvalidArgument, match="unsupported machine 'pdp11'"):
        machine_arches("pdp11")


@pytest.mark.parametrize(
    ("machine", "caps"),
    [
        ("x86_64", DEFAULT_CAPABILITIES),
        ("x86_64", ("CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYSLOG", "CAP_BPF", "CAP_PERFMON")),
        ("aarch64", DEFAULT_CAPABILITIES),
    ],
)
def test_the_default_profile_compiles_to_bpf(machine, caps):
    try:
        from pallet.oci.linux.seccomp import compile_filter
    except ImportError:
        pytest.skip("pallet.oci.linux.seccomp.compile_filter is not written yet")
    try:
        bpf = compile_filter(render(caps, machine=machine))
    except OSError as e:  # libseccomp missing on this host
        pytest.skip(f"libseccomp unavailable: {e}")
    assert isinstance(bpf, bytes) and len(bpf) % 8 == 0 and len(bpf) > 8
