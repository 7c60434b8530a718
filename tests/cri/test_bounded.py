"""The daemon under repeated failures: many failed TTY execs and failing ExecSyncs leave its
threads, memory and the container's process table where they were.

Issue 5 asks that the daemon never crashes and that memory and threads stay bounded.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2 as pb

from tests.cri.conftest import Daemon
from tests.cri.test_pods import daemon, env, logdir, run_pod, start  # noqa: F401 - fixtures
from tests.cri.test_streaming import ERROR, collect, connect

pytestmark = pytest.mark.root


def _threads_and_rss(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0])


def test_many_failed_tty_execs_leave_the_daemon_bounded(daemon: Daemon,  # noqa: F811
                                                        logdir: Path) -> None:  # noqa: F811
    pod = run_pod(daemon, "bounded", logdir)
    cid = start(daemon, pod, "sleeper", ["sleep", "300"])
    # Warm up once so lazily created pools and caches are not counted as growth.
    daemon.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=10))
    threads0, rss0 = _threads_and_rss(daemon.proc.pid)
    for _ in range(25):
        url = daemon.runtime.Exec(pb.ExecRequest(container_id=cid, cmd=["/no/such/binary"],
                                                 tty=True, stdin=True, stdout=True)).url
        with connect(url, subprotocols=["v5.channel.k8s.io"]) as ws:
            out = collect(ws)
        assert json.loads(out[ERROR])["status"] == "Failure"
        r = daemon.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid,
                                                       cmd=["/no/such/binary"], timeout=10))
        assert r.exit_code != 0
    assert daemon.alive()
    threads1, rss1 = _threads_and_rss(daemon.proc.pid)
    assert threads1 <= threads0 + 4, (threads0, threads1)
    assert rss1 - rss0 < 30_000, f"RSS grew by {rss1 - rss0} kB"
    # No exec leftovers in the container: only its own process and this ps.
    ps = daemon.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["ps", "-o", "comm"],
                                                    timeout=10))
    assert ps.stdout.split()[1:] == [b"sleep", b"ps"]
    # An exec for an unknown container is NOT_FOUND, not a crash.
    with pytest.raises(grpc.RpcError) as e:
        daemon.runtime.Exec(pb.ExecRequest(container_id="nope", cmd=["sh"], tty=True,
                                           stdin=True, stdout=True))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))


def test_attach_sessions_end_when_clients_leave(daemon: Daemon,  # noqa: F811
                                                logdir: Path) -> None:  # noqa: F811
    """A client that attaches to a silent container and leaves does not keep a session."""
    import time

    pod = run_pod(daemon, "attach-leave", logdir)
    cid = start(daemon, pod, "silent", ["sleep", "300"])
    threads0, _ = _threads_and_rss(daemon.proc.pid)
    t0 = time.monotonic()
    for _ in range(8):
        url = daemon.runtime.Attach(pb.AttachRequest(container_id=cid, stdout=True,
                                                     stderr=True)).url
        with connect(url, subprotocols=["v5.channel.k8s.io"]):
            time.sleep(0.1)  # attached; the container says nothing; the client leaves
    assert time.monotonic() - t0 < 30, "closing each attach waited for the container"
    deadline = time.monotonic() + 10
    while _threads_and_rss(daemon.proc.pid)[0] > threads0 + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _threads_and_rss(daemon.proc.pid)[0] <= threads0 + 2
    assert daemon.alive()
    daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
