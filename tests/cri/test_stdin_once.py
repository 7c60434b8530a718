"""stdin_once: a container's stdin closes when its first attach session ends (CRI's
ContainerConfig.stdin_once), so `cat` sees EOF and the container exits on its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2 as pb

from tests.cri.conftest import Daemon
from tests.cri.kubelet import container_config, wait_for
from tests.cri.test_pods import daemon, env, logdir, run_pod  # noqa: F401 - fixtures
from tests.cri.test_streaming import STDIN, STDOUT, connect

pytestmark = pytest.mark.root


@pytest.mark.parametrize("once", [True, False])
def test_stdin_once_closes_stdin_after_the_first_attach(daemon: Daemon,  # noqa: F811
                                                        logdir: Path,  # noqa: F811
                                                        once: bool) -> None:
    pod = run_pod(daemon, f"once-{once}", logdir)
    cfg = container_config("cat", ["sh", "-c", "cat; echo stdin-closed"])
    cfg.stdin, cfg.stdin_once = True, once
    cid = daemon.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=cfg)).container_id
    daemon.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    url = daemon.runtime.Attach(pb.AttachRequest(container_id=cid, stdin=True,
                                                 stdout=True)).url
    with connect(url, subprotocols=["v5.channel.k8s.io"]) as ws:
        ws.send(bytes([STDIN]) + b"hello\n")
        got = b""
        deadline = time.monotonic() + 10
        while b"hello" not in got and time.monotonic() < deadline:
            try:
                msg = ws.recv(timeout=1)
            except TimeoutError:
                continue
            if msg[0] == STDOUT:
                got += msg[1:]
        assert b"hello" in got
    state = pb.ContainerState.CONTAINER_EXITED if once else pb.ContainerState.CONTAINER_RUNNING

    def settled() -> bool:
        st = daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
        return st.state == state

    if once:
        assert wait_for(settled, timeout=10)
        st = daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
        assert st.exit_code == 0
    else:
        time.sleep(1)
        assert settled(), "without stdin_once the container keeps its stdin open"
    daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
