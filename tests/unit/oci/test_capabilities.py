"""process.capabilities: every Linux capability by number; unknown names are named."""

import pytest

from pallet.errors import SpecError
from pallet.oci.linux import capabilities


def test_capability_numbers_match_the_kernel_headers():
    caps = capabilities.CAPS
    assert caps["CAP_CHOWN"] == 0
    assert caps["CAP_SETPCAP"] == 8
    assert caps["CAP_NET_BIND_SERVICE"] == 10
    assert caps["CAP_SYS_ADMIN"] == 21
    assert caps["CAP_SYS_RESOURCE"] == 24
    assert caps["CAP_AUDIT_READ"] == 37
    assert caps["CAP_CHECKPOINT_RESTORE"] == 40
    assert sorted(caps.values()) == list(range(41))


def test_a_docker_like_set_is_valid():
    default = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
    ]
    capabilities.validate({key: default for key in capabilities.SETS})
    capabilities.validate({"bounding": None})
    capabilities.validate(None)


def test_an_unknown_capability_is_named_with_its_set():
    with pytest.raises(SpecError) as e:
        capabilities.validate({"effective": ["CAP_CHOWN"], "bounding": ["CAP_CHOWN", "CAP_FOO"]})
    assert str(e.value) == 'process.capabilities.bounding: unknown capability "CAP_FOO"'


def test_lower_case_names_are_not_capabilities():
    with pytest.raises(
        SpecError, match='process.capabilities.ambient: unknown capability "cap_chown"'
    ):
        capabilities.validate({"ambient": ["cap_chown"]})


def test_an_unknown_set_is_named():
    with pytest.raises(SpecError, match="process.capabilities.bonding: unknown capability set"):
        capabilities.validate({"bonding": []})


def test_a_set_must_be_a_list():
    with pytest.raises(SpecError, match="process.capabilities.permitted: must be a list"):
        capabilities.validate({"permitted": "CAP_CHOWN"})


def test_the_kernel_knows_at_least_the_classic_capabilities():
    assert capabilities.last_cap() >= capabilities.CAPS["CAP_AUDIT_READ"]
