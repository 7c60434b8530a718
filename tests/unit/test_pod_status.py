"""A pod's status from its containers' states, as podman derives it (no infra container:
an empty pod is Created), and `pod create --share`'s values."""

from __future__ import annotations

import pytest

from pallet.engine.user_pods import parse_share, pod_status
from pallet.errors import InvalidArgument


@pytest.mark.parametrize("states, status", [
    ([], "Created"),
    (["created", "created"], "Created"),
    (["running", "running"], "Running"),
    (["running", "exited"], "Degraded"),
    (["running", "created"], "Degraded"),
    (["running", "paused"], "Degraded"),
    (["paused", "paused"], "Paused"),
    (["exited", "exited"], "Exited"),
    (["exited", "created"], "Stopped"),
    (["unknown"], "Error"),
])
def test_status_is_derived_from_the_containers(states, status):
    assert pod_status(states) == status


def test_share_takes_kinds_none_and_additions():
    assert parse_share("ipc,net,uts") == {"ipc", "net", "uts"}
    assert parse_share("none") == set()
    assert parse_share("+pid") == {"cgroup", "ipc", "net", "uts", "pid"}


def test_a_bad_share_value_is_named_in_podmans_words():
    with pytest.raises(InvalidArgument) as e:
        parse_share("net,mnt")
    assert str(e.value) == ("invalid kernel namespace to share: mnt. Options are: cgroup, "
                            "ipc, net, pid, uts or none")
