"""RunPodSandbox's runtime_handler picks the OCI runtime: pallet's own by default, or runc
and gVisor's runsc (ptrace platform) from the config's [runtimes] tables.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2 as pb

from tests.cri.conftest import Daemon
from tests.cri.kubelet import container_config, pod_config, wait_for
from tests.cri.test_pods import daemon, env, logdir  # noqa: F401 - fixtures

pytestmark = pytest.mark.root


@pytest.mark.parametrize("handler,probe,expect", [
    ("", ["sh", "-c", "echo in-process"], b"in-process"),
    ("runc", ["sh", "-c", "echo under-runc"], b"under-runc"),
    ("runsc", ["sh", "-c", "dmesg | head -1"], b"gVisor"),
])
def test_runtime_handler_picks_the_runtime(daemon: Daemon,  # noqa: F811
                                           logdir: Path,  # noqa: F811
                                           handler: str, probe: list[str],
                                           expect: bytes) -> None:
    if handler and not shutil.which(handler):
        pytest.skip(f"{handler} is not installed (scripts/setup.sh installs it)")
    names = [h.name for h in daemon.runtime.Status(pb.StatusRequest()).runtime_handlers]
    assert (handler or "pallet") in names or handler == ""
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(
        config=pod_config(f"rh-{handler or 'default'}", str(logdir)),
        runtime_handler=handler)).pod_sandbox_id
    try:
        cid = daemon.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config("probe", ["sleep", "60"]))).container_id
        daemon.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
        st = daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid,
                                                                      verbose=True))
        info = json.loads(st.info["info"])
        assert info["runtimeHandler"] == (handler or "pallet")
        wait_for(lambda: daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(
            container_id=cid)).status.state == pb.ContainerState.CONTAINER_RUNNING)
        r = daemon.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=probe, timeout=30))
        assert expect in r.stdout, (r.stdout, r.stderr)
    finally:
        daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
