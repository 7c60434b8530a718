"""Capabilities applied in a real child, read back from /proc/self/status:
the bounding set is cut, the other sets are exactly the spec's, and ambient
capabilities carry a non-root user through execve."""

import os

import pytest

from pallet.oci.linux import capabilities
from tests.fixtures.forked import result, run_child

pytestmark = pytest.mark.root

CAPS = capabilities.CAPS


def status_caps(text: str) -> dict[str, int]:
    return {
        line.split(":")[0]: int(line.split()[1], 16)
        for line in text.splitlines()
        if line.startswith("Cap")
    }


def own_caps() -> dict[str, int]:
    with open("/proc/self/status") as f:
        return status_caps(f.read())


def mask(*names: str) -> int:
    return sum(1 << CAPS[n] for n in names)


def host_has(name: str) -> bool:
    return bool(own_caps()["CapEff"] >> CAPS[name] & 1)


def test_root_container_gets_exactly_the_spec_sets():
    caps = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETPCAP"],
        "effective": ["CAP_CHOWN", "CAP_KILL"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    }

    def body():
        capabilities.apply(caps)
        return own_caps()

    got = result(*run_child(body))["ok"]
    assert got["CapBnd"] == mask("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETPCAP")
    assert got["CapEff"] == mask("CAP_CHOWN", "CAP_KILL")
    assert got["CapPrm"] == mask("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE")
    assert got["CapInh"] == mask("CAP_NET_BIND_SERVICE")
    assert got["CapAmb"] == mask("CAP_NET_BIND_SERVICE")


def test_non_root_user_keeps_ambient_capabilities_through_execve():
    caps = {
        "bounding": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"],
        "effective": ["CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    }

    def body():
        # The order the container init uses.
        capabilities.drop_bounding(caps)
        capabilities.set_keepcaps(True)
        os.setgroups([])
        os.setgid(1000)
        os.setuid(1000)
        capabilities.apply(caps)
        os.execv("/bin/cat", ["cat", "/proc/self/status"])

    status, out = run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0, out
    text = out.decode()
    assert "Uid:\t1000\t1000\t1000\t1000" in text
    got = status_caps(text)
    want = mask("CAP_NET_BIND_SERVICE")
    assert got == {
        "CapInh": want,
        "CapPrm": want,
        "CapEff": want,
        "CapBnd": mask("CAP_NET_BIND_SERVICE", "CAP_CHOWN"),
        "CapAmb": want,
    }


def test_a_non_root_user_without_ambient_loses_everything_at_execve():
    caps = {key: ["CAP_CHOWN"] for key in ("bounding", "effective", "permitted")}

    def body():
        capabilities.set_keepcaps(True)
        os.setuid(1000)
        capabilities.apply(caps)
        os.execv("/bin/cat", ["cat", "/proc/self/status"])

    status, out = run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0, out
    got = status_caps(out.decode())
    assert got["CapEff"] == got["CapPrm"] == got["CapAmb"] == 0
    assert got["CapBnd"] == mask("CAP_CHOWN")


@pytest.mark.skipif(host_has("CAP_SYS_RESOURCE"), reason="the host holds CAP_SYS_RESOURCE")
def test_a_capability_the_runtime_lacks_is_skipped_not_fatal():
    caps = {key: ["CAP_CHOWN", "CAP_SYS_RESOURCE"] for key in capabilities.SETS}

    def body():
        capabilities.apply(caps)
        return own_caps()

    got = result(*run_child(body))["ok"]
    assert got["CapEff"] == got["CapPrm"] == got["CapInh"] == got["CapAmb"] == mask("CAP_CHOWN")
    assert got["CapBnd"] == mask("CAP_CHOWN")


def test_no_capabilities_object_leaves_the_process_alone():
    def body():
        before = own_caps()
        capabilities.drop_bounding(None)
        capabilities.apply(None)
        return [before, own_caps()]

    before, after = result(*run_child(body))["ok"]
    assert before == after


def test_an_empty_object_drops_everything():
    def body():
        capabilities.apply({})
        return own_caps()

    assert result(*run_child(body))["ok"] == {
        "CapInh": 0,
        "CapPrm": 0,
        "CapEff": 0,
        "CapBnd": 0,
        "CapAmb": 0,
    }


def test_ambient_without_inheritable_is_skipped_like_runc():
    """runc's own default spec asks for ambient caps that are not inheritable; runc warns."""
    caps = {"bounding": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"],
            "ambient": ["CAP_CHOWN"]}

    def body():
        capabilities.apply(caps)
        return own_caps()

    res = result(*run_child(body))
    assert res["ok"]["CapAmb"] == 0
    assert res["ok"]["CapEff"] == mask("CAP_CHOWN")
