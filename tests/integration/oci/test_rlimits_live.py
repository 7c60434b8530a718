"""rlimits applied in a real child: the container sees them after execve, and
a hard limit the host cannot grant fails with a message that says why."""

import os
import resource

import pytest

from pallet.oci.linux import capabilities, rlimits
from tests.fixtures.forked import result, run_child

pytestmark = pytest.mark.root


def host_has_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff"))
    return bool(eff >> capabilities.CAPS["CAP_SYS_RESOURCE"] & 1)


def test_lowered_limits_are_what_the_container_sees_after_execve():
    limits = [
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        {"type": "RLIMIT_LOCKS", "soft": 100, "hard": 100},
    ]
    rlimits.validate(limits)

    def body():
        rlimits.apply(limits)
        os.execv(
            "/bin/sh",
            [
                "sh",
                "-c",
                "ulimit -Sn; ulimit -Hn; ulimit -c; grep 'Max file locks' /proc/self/limits",
            ],
        )

    status, out = run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert out.split()[:3] == [b"512", b"1024", b"0"]
    assert out.split()[-3:] == [b"100", b"100", b"locks"]


def test_unlimited_is_spelled_as_the_largest_u64():
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard != resource.RLIM_INFINITY:
        pytest.skip("the runtime's own RLIMIT_CORE hard limit is finite")
    limits = [{"type": "RLIMIT_CORE", "soft": 2**64 - 1, "hard": 2**64 - 1}]

    def body():
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.RLIM_INFINITY))
        rlimits.apply(limits)
        return resource.getrlimit(resource.RLIMIT_CORE)

    assert result(*run_child(body))["ok"] == [resource.RLIM_INFINITY, resource.RLIM_INFINITY]


@pytest.mark.skipif(host_has_sys_resource(), reason="the host holds CAP_SYS_RESOURCE")
def test_raising_a_hard_limit_without_cap_sys_resource_says_so():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard + 1

    def body():
        rlimits.apply([{"type": "RLIMIT_NOFILE", "soft": wanted, "hard": wanted}])

    res = result(*run_child(body))
    assert res == {
        "error": "SystemFailure",
        "message": f"rlimit RLIMIT_NOFILE: cannot raise the hard limit to {wanted} "
        f"(the runtime's is {hard}): the host lacks CAP_SYS_RESOURCE or the value is above fs.nr_open",
    }


@pytest.mark.skipif(host_has_sys_resource(), reason="the host holds CAP_SYS_RESOURCE")
def test_raising_to_unlimited_names_unlimited():
    _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("RLIMIT_NPROC is already unlimited here")

    def body():
        rlimits.apply([{"type": "RLIMIT_NPROC", "soft": 10, "hard": 2**64 - 1}])

    res = result(*run_child(body))
    assert res["error"] == "SystemFailure"
    assert res["message"].startswith(
        "rlimit RLIMIT_NPROC: cannot raise the hard limit to unlimited"
    )
    assert "CAP_SYS_RESOURCE" in res["message"]
