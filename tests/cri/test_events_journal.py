"""A CRI container's life in the events journal: `pallet events --since` on the daemon's
root shows what the kubelet did (create, start, exec, update, stop, removal) in docker's
lines, as it shows what the CLI did.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2 as pb

from tests.cri.conftest import Daemon, pallet_cli
from tests.cri.kubelet import (
    BUSYBOX,
    cleanup_pods,
    container_config,
    make_cni_network,
    needs_pod_tools,
    pod_config,
    pod_daemon,
    start_registry_with_busybox,
)

pytestmark = [pytest.mark.root, needs_pod_tools]



@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    tmp = Path(tempfile.mkdtemp(prefix="pcri-ev-"))
    net = make_cni_network(prefix="pcev", net16="10.221")
    reg = start_registry_with_busybox(tmp)
    try:
        with pod_daemon(net, reg) as d:
            yield d
    finally:
        reg.stop()
        net.remove()
        shutil.rmtree(tmp, ignore_errors=True)


def test_pallet_events_shows_a_cri_containers_life(daemon: Daemon) -> None:
    t0 = time.time()
    logs = tempfile.mkdtemp(prefix="logs-", dir=daemon.dir)
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(
        config=pod_config("ev-pod", logs))).pod_sandbox_id
    cid = daemon.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=container_config(
            "ev-c", ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]))
    ).container_id
    daemon.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    daemon.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=10))
    daemon.runtime.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
        container_id=cid, linux=pb.LinuxContainerResources(memory_limit_in_bytes=64 << 20)))
    daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10))
    daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    out = subprocess.run(
        [pallet_cli(), "--root", daemon.root, "events", "--since", str(t0), "--until",
         str(time.time() + 0.3), "-f", "type=container", "--format", "json"],
        capture_output=True, text=True, timeout=30, check=True).stdout
    evs = [json.loads(ln) for ln in out.splitlines()]
    assert {e["id"] for e in evs} == {cid}
    assert [e["Action"].split(":")[0] for e in evs] == [
        "create", "start", "exec_create", "exec_start", "exec_die", "update", "kill", "die",
        "stop", "destroy"]
    attrs = evs[0]["Actor"]["Attributes"]
    assert attrs["image"] == BUSYBOX and attrs["name"].startswith("ev-c_ev-pod_default_")
    assert evs[4]["Actor"]["Attributes"]["exitCode"] == "0"
    assert evs[7]["Actor"]["Attributes"]["exitCode"] == "0"
    cleanup_pods(daemon)
