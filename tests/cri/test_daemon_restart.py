"""Restarting `pallet daemon` leaves pods and containers running with their logs; a
container that exits while the daemon is down shows its exit code once it is back.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2 as pb

from tests.cri.kubelet import (
    cleanup_pods,
    container_config,
    host_leftovers,
    make_cni_network,
    needs_pod_tools,
    pod_config,
    restart_daemon,
    start_pod_daemon,
    start_registry_with_busybox,
    wait_for,
)

pytestmark = [pytest.mark.root, needs_pod_tools]


def test_pods_and_containers_survive_a_daemon_restart() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="pcri-restart-"))
    net = make_cni_network()
    reg = start_registry_with_busybox(tmp)
    d = start_pod_daemon(net, reg)
    ids: list[str] = []
    try:
        d.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(
            image="docker.io/library/busybox:latest")))
        logs = tmp / "logs"
        pod = d.runtime.RunPodSandbox(pb.RunPodSandboxRequest(
            config=pod_config("keep", str(logs)))).pod_sandbox_id
        ip = d.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(
            pod_sandbox_id=pod)).status.network.ip
        for name, args in (("ticker", ["sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); "
                                                   "sleep 0.2; done"]),
                           ("short", ["sh", "-c", "sleep 2; exit 7"])):
            cid = d.runtime.CreateContainer(pb.CreateContainerRequest(
                pod_sandbox_id=pod, config=container_config(name, args))).container_id
            d.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
            ids.append(cid)
        ticker, short = ids
        d.stop()  # SIGTERM: the daemon goes, the monitors stay
        log = logs / "ticker" / "0.log"
        before = log.read_bytes().count(b"\n")
        time.sleep(3)  # "short" exits while nobody is listening
        assert log.read_bytes().count(b"\n") > before  # still logging without the daemon
        d = restart_daemon(d)
        st = d.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=short)).status
        assert st.state == pb.ContainerState.CONTAINER_EXITED
        assert (st.exit_code, st.reason) == (7, "Error")
        assert st.finished_at > st.started_at > 0
        st = d.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ticker)).status
        assert st.state == pb.ContainerState.CONTAINER_RUNNING
        ps = d.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod)).status
        assert ps.state == pb.PodSandboxState.SANDBOX_READY and ps.network.ip == ip
        r = d.runtime.ExecSync(pb.ExecSyncRequest(container_id=ticker, cmd=["echo", "back"]))
        assert r.stdout == b"back\n"
        n = log.read_bytes().count(b"\n")
        assert wait_for(lambda: log.read_bytes().count(b"\n") > n)
        d.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
        assert host_leftovers(d, net, ids) == []
    finally:
        cleanup_pods(d)
        d.stop()
        reg.stop()
        net.remove()
        shutil.rmtree(d.dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
