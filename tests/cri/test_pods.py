"""Pods and containers through `pallet daemon` as a kubelet drives them, over the real socket:
a pod on a private CNI network, busybox from the local registry, logs in the CRI format,
ExecSync and a WebSocket exec, stop and removal leaving the host as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2 as pb

from pallet.cri.exec import EXEC_SYNC_LIMIT
from tests.cri.conftest import Daemon, pallet_cli
from tests.cri.kubelet import (
    CNINet,
    cleanup_pods,
    code_of,
    container_config,
    host_leftovers,
    make_cni_network,
    needs_pod_tools,
    pod_config,
    pod_daemon,
    start_registry_with_busybox,
    wait_for,
)
from tests.cri.test_streaming import ERROR, STDIN, STDOUT, collect, connect
from tests.fixtures.registry import Registry

pytestmark = [pytest.mark.root, needs_pod_tools]

CRI_LOG_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) (F|P) (.*)$")


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[CNINet, Registry, Path]]:
    tmp = Path(tempfile.mkdtemp(prefix="pcri-pods-"))
    net = make_cni_network()
    reg = start_registry_with_busybox(tmp)
    yield net, reg, tmp
    reg.stop()
    net.remove()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(env: tuple[CNINet, Registry, Path]) -> Iterator[Daemon]:
    net, reg, _ = env
    with pod_daemon(net, reg) as d:
        yield d


@pytest.fixture
def logdir(env: tuple[CNINet, Registry, Path]) -> Path:
    return Path(tempfile.mkdtemp(prefix="logs-", dir=env[2]))


def run_pod(d: Daemon, name: str, logdir: Path, **kw: object) -> str:
    return d.runtime.RunPodSandbox(pb.RunPodSandboxRequest(
        config=pod_config(name, str(logdir), **kw))).pod_sandbox_id  # type: ignore[arg-type]


def start(d: Daemon, pod: str, name: str, args: list[str], **kw: object) -> str:
    cid = d.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=container_config(name, args, **kw))).container_id
    d.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    return cid


def status(d: Daemon, cid: str) -> pb.ContainerStatus:
    return d.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status


# -- the kubelet's story ----------------------------------------------------------------
def test_pod_lifecycle_as_the_kubelet_runs_it(daemon: Daemon, env, logdir: Path) -> None:
    net = env[0]
    pod = run_pod(daemon, "web", logdir)
    ps = daemon.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod,
                                                                    verbose=True))
    assert ps.status.state == pb.PodSandboxState.SANDBOX_READY
    ip = ps.status.network.ip
    assert ip.startswith(net.subnet.rsplit(".", 1)[0] + ".")
    info = json.loads(ps.info["info"])
    assert info["netns"].endswith("/net")

    cid = start(daemon, pod, "app", ["sh", "-c", "echo hello; echo oops >&2; hostname; "
                                     "trap 'exit 0' TERM; sleep 300 & wait"])
    log = logdir / "app" / "0.log"
    assert wait_for(lambda: log.exists() and log.read_bytes().count(b"\n") >= 3)
    lines = log.read_bytes().splitlines()
    parsed = [CRI_LOG_LINE.match(ln) for ln in lines]
    assert all(parsed), lines
    # Two pipes: the order between stdout and stderr is not kept, within each it is.
    assert sorted((m.group(1), m.group(3)) for m in parsed) == [  # type: ignore[union-attr]
        (b"stderr", b"oops"), (b"stdout", b"hello"), (b"stdout", b"web")]
    st = status(daemon, cid)
    assert st.state == pb.ContainerState.CONTAINER_RUNNING
    assert st.log_path == str(log)

    r = daemon.runtime.ExecSync(pb.ExecSyncRequest(
        container_id=cid, cmd=["sh", "-c", "ip -4 addr show eth0; cat /etc/hostname; exit 3"],
        timeout=10))
    assert r.exit_code == 3
    assert ip.encode() in r.stdout and b"web\n" in r.stdout

    url = daemon.runtime.Exec(pb.ExecRequest(container_id=cid, cmd=["sh", "-c", "cat; echo ok"],
                                             stdin=True, stdout=True)).url
    with connect(url, subprotocols=["v5.channel.k8s.io"]) as ws:
        ws.send(bytes([STDIN]) + b"through the socket\n")
        ws.send(bytes([255, STDIN]))
        out = collect(ws)
    assert out[STDOUT] == b"through the socket\nok\n"
    assert json.loads(out[ERROR])["status"] == "Success"

    t0 = time.monotonic()
    daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10))
    assert time.monotonic() - t0 < 5  # the shell's trap ends it at SIGTERM
    st = status(daemon, cid)
    assert st.state == pb.ContainerState.CONTAINER_EXITED
    assert (st.exit_code, st.reason) == (0, "Completed")
    daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    ps = daemon.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod))
    assert ps.status.state == pb.PodSandboxState.SANDBOX_NOTREADY
    daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert log.exists()  # the kubelet, not the runtime, removes logs
    assert host_leftovers(daemon, net, [cid]) == []
    # Again: Stop and Remove of what is gone succeed.
    daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=cid))
    daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))


def test_containers_of_a_pod_share_its_network_ipc_and_uts(daemon: Daemon, logdir: Path) -> None:
    pod = run_pod(daemon, "shared", logdir)
    a = start(daemon, pod, "a", ["sleep", "300"])
    b = start(daemon, pod, "b", ["sleep", "300"])
    cmd = ["sh", "-c", "for n in net ipc uts; do readlink /proc/self/ns/$n; done; "
           "readlink /proc/1/ns/pid; hostname"]
    out_a = daemon.runtime.ExecSync(pb.ExecSyncRequest(container_id=a, cmd=cmd)).stdout.split()
    out_b = daemon.runtime.ExecSync(pb.ExecSyncRequest(container_id=b, cmd=cmd)).stdout.split()
    assert out_a[:3] == out_b[:3]  # net, ipc, uts: the pod's
    assert out_a[3] != out_b[3]  # pid: CONTAINER, each its own
    assert out_a[4] == out_b[4] == b"shared"
    cleanup_pods(daemon)


def test_cli_pods_and_sandboxes_do_not_see_each_other(daemon: Daemon, logdir: Path) -> None:
    """`pallet pod create` on the daemon's root: the kubelet never sees that pod or its
    containers (it would garbage-collect them), and `pallet pod ls` lists no sandbox."""
    env = dict(os.environ, PALLET_RUNROOT=str(daemon.dir / "run"))

    def pallet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([pallet_cli(), "--root", daemon.root, *args], env=env,
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    sandbox = run_pod(daemon, "kube", logdir)
    assert pallet("image", "build-busybox").returncode == 0
    out = pallet("pod", "create", "--name", "pd-cli", "--network", "none")
    assert out.returncode == 0, out.stderr
    cli_pod = out.stdout.strip()
    try:
        out = pallet("create", "--pod", "pd-cli", "busybox", "sleep", "1")
        assert out.returncode == 0, out.stderr
        member = out.stdout.strip()
        pods = [p.id for p in daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items]
        assert sandbox in pods and cli_pod not in pods
        code, _ = code_of(daemon.runtime.PodSandboxStatus,
                          pb.PodSandboxStatusRequest(pod_sandbox_id=cli_pod))
        assert code == grpc.StatusCode.NOT_FOUND
        ctrs = daemon.runtime.ListContainers(pb.ListContainersRequest()).containers
        assert member not in [c.id for c in ctrs]
        code, _ = code_of(daemon.runtime.ContainerStatus,
                          pb.ContainerStatusRequest(container_id=member))
        assert code == grpc.StatusCode.NOT_FOUND
        assert pallet("pod", "ls", "-q", "--no-trunc").stdout.split() == [cli_pod]
        assert pallet("pod", "exists", sandbox).returncode == 1
    finally:
        pallet("pod", "rm", "-f", "pd-cli")
        cleanup_pods(daemon)
    assert pallet("ps", "-aq").stdout == ""


def test_shared_pid_namespace_pod(daemon: Daemon, logdir: Path) -> None:
    pod = run_pod(daemon, "pidpod", logdir, pid_mode=pb.NamespaceMode.POD)
    cfg_a = container_config("a", ["sleep", "300"])
    cfg_a.linux.security_context.namespace_options.pid = pb.NamespaceMode.POD
    a = daemon.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod,
                                                                 config=cfg_a)).container_id
    daemon.runtime.StartContainer(pb.StartContainerRequest(container_id=a))
    cfg_b = container_config("b", ["sleep", "301"])
    cfg_b.linux.security_context.namespace_options.pid = pb.NamespaceMode.POD
    b = daemon.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod,
                                                                 config=cfg_b)).container_id
    daemon.runtime.StartContainer(pb.StartContainerRequest(container_id=b))
    ps = daemon.runtime.ExecSync(pb.ExecSyncRequest(container_id=b, cmd=["ps", "-o", "args"]))
    assert b"sleep 300" in ps.stdout and b"sleep 301" in ps.stdout
    cleanup_pods(daemon)


def test_run_pod_sandbox_is_idempotent_and_names_are_reserved(daemon: Daemon,
                                                              logdir: Path) -> None:
    cfg = pod_config("idem", str(logdir), uid="uid-idem")
    first = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    again = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    assert again == first
    c = daemon.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=first, config=container_config("c", ["true"]))).container_id
    code, details = code_of(daemon.runtime.CreateContainer, pb.CreateContainerRequest(
        pod_sandbox_id=first, config=container_config("c", ["true"])))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "is reserved for" in details and c in details
    daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=first))
    code, details = code_of(daemon.runtime.RunPodSandbox, pb.RunPodSandboxRequest(config=cfg))
    assert code == grpc.StatusCode.ALREADY_EXISTS and first in details
    cfg.metadata.attempt = 1
    second = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    assert second != first
    cleanup_pods(daemon)


def test_exit_codes_reasons_and_lists(daemon: Daemon, logdir: Path) -> None:
    pod = run_pod(daemon, "codes", logdir, labels={"app": "codes"})
    ok = start(daemon, pod, "ok", ["true"], labels={"kind": "ok"})
    bad = start(daemon, pod, "bad", ["sh", "-c", "exit 4"], labels={"kind": "bad"})
    for cid in (ok, bad):
        assert wait_for(lambda c=cid: status(daemon, c).state == pb.ContainerState.CONTAINER_EXITED)
    assert (status(daemon, ok).exit_code, status(daemon, ok).reason) == (0, "Completed")
    assert (status(daemon, bad).exit_code, status(daemon, bad).reason) == (4, "Error")
    # PID 1 without a handler ignores SIGTERM: after the timeout comes SIGKILL.
    stubborn = start(daemon, pod, "stubborn", ["sleep", "300"])
    t0 = time.monotonic()
    daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=stubborn, timeout=1))
    assert 0.9 < time.monotonic() - t0 < 6
    assert (status(daemon, stubborn).exit_code, status(daemon, stubborn).reason) == (137, "Error")
    listed = daemon.runtime.ListContainers(pb.ListContainersRequest(filter=pb.ContainerFilter(
        pod_sandbox_id=pod[:12], label_selector={"kind": "bad"}))).containers
    assert [c.id for c in listed] == [bad]
    by_prefix = daemon.runtime.ListContainers(pb.ListContainersRequest(
        filter=pb.ContainerFilter(id=ok[:10]))).containers
    assert [c.id for c in by_prefix] == [ok]
    running = daemon.runtime.ListContainers(pb.ListContainersRequest(filter=pb.ContainerFilter(
        pod_sandbox_id=pod, state=pb.ContainerStateValue(
            state=pb.ContainerState.CONTAINER_RUNNING)))).containers
    assert running == []
    pods = daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(
        label_selector={"app": "codes"}))).items
    assert [p.id for p in pods] == [pod]
    assert daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(
        id="0" * 64))).items == []
    verbose = json.loads(daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(
        container_id=bad, verbose=True)).info["info"])
    assert verbose["sandboxID"] == pod and verbose["runtimeSpec"]["process"]["args"][0] == "sh"
    cleanup_pods(daemon)


def test_out_of_memory_is_reported_as_oomkilled(daemon: Daemon, logdir: Path) -> None:
    pod = run_pod(daemon, "oom", logdir)
    cfg = container_config("hog", ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a)"])
    cfg.linux.resources.memory_limit_in_bytes = 16 << 20
    cid = daemon.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=cfg)).container_id
    daemon.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    assert wait_for(lambda: status(daemon, cid).state == pb.ContainerState.CONTAINER_EXITED, 30)
    st = status(daemon, cid)
    assert st.reason == "OOMKilled", (st.exit_code, st.reason)
    cleanup_pods(daemon)


def test_security_context_is_applied(daemon: Daemon, logdir: Path) -> None:
    pod = run_pod(daemon, "secure", logdir)
    cfg = container_config("sec", ["sleep", "300"])
    sc = cfg.linux.security_context
    sc.run_as_user.value = 1234
    sc.run_as_group.value = 2345
    sc.supplemental_groups.extend([3456])
    sc.readonly_rootfs = True
    sc.no_new_privs = True
    sc.capabilities.drop_capabilities.append("ALL")
    sc.capabilities.add_capabilities.append("NET_BIND_SERVICE")
    sc.seccomp.profile_type = pb.SecurityProfile.ProfileType.RuntimeDefault
    cid = daemon.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=cfg)).container_id
    daemon.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    r = daemon.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=[
        "sh", "-c", "id; grep -E 'CapBnd|NoNewPrivs|Seccomp:' /proc/self/status; "
        "touch /x 2>&1; true"]))
    out = r.stdout.decode()
    assert "uid=1234 gid=2345" in out and "3456" in out
    # Bounding set: only NET_BIND_SERVICE (a non-root user's effective set is empty anyway).
    assert re.search(r"CapBnd:\s+0000000000000400", out), out
    assert re.search(r"NoNewPrivs:\s+1", out) and re.search(r"Seccomp:\s+2", out)
    assert "Read-only file system" in out
    cleanup_pods(daemon)


def test_exec_sync_caps_output_and_times_out(daemon: Daemon, logdir: Path) -> None:
    pod = run_pod(daemon, "chatty", logdir)
    cid = start(daemon, pod, "c", ["sleep", "300"])
    r = daemon.runtime.ExecSync(pb.ExecSyncRequest(
        container_id=cid, cmd=["sh", "-c", "head -c 50000000 /dev/zero; echo done >&2"],
        timeout=60))
    assert r.exit_code == 0
    assert len(r.stdout) == EXEC_SYNC_LIMIT and r.stderr == b"done\n"
    t0 = time.monotonic()
    code, details = code_of(daemon.runtime.ExecSync, pb.ExecSyncRequest(
        container_id=cid, cmd=["sleep", "29"], timeout=1))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "timed out" in details
    assert time.monotonic() - t0 < 10
    ps = daemon.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["ps", "-o", "args"]))
    assert b"sleep 29" not in ps.stdout  # the timed-out command was killed
    cleanup_pods(daemon)


def test_stats_and_events(daemon: Daemon, logdir: Path) -> None:
    events = daemon.runtime.GetContainerEvents(pb.GetEventsRequest())
    pod = run_pod(daemon, "stats", logdir)
    cid = start(daemon, pod, "s", ["sh", "-c", "while :; do :; done"])
    got = []
    for ev in events:
        got.append((ev.container_id, ev.container_event_type))
        if ev.container_event_type == pb.ContainerEventType.CONTAINER_STARTED_EVENT:
            break
    events.cancel()
    assert got == [(cid, pb.ContainerEventType.CONTAINER_CREATED_EVENT),
                   (cid, pb.ContainerEventType.CONTAINER_STARTED_EVENT)]
    time.sleep(0.3)
    daemon.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=cid))
    time.sleep(0.5)
    st = daemon.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=cid)).stats
    assert st.attributes.id == cid and st.attributes.metadata.name == "s"
    assert st.cpu.usage_core_nano_seconds.value > 0 and st.cpu.usage_nano_cores.value > 0
    assert st.memory.working_set_bytes.value > 0
    listed = daemon.runtime.ListContainerStats(pb.ListContainerStatsRequest(
        filter=pb.ContainerStatsFilter(pod_sandbox_id=pod))).stats
    assert [s.attributes.id for s in listed] == [cid]
    ps = daemon.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod)).stats
    assert ps.linux.cpu.usage_core_nano_seconds.value > 0
    assert [c.attributes.id for c in ps.linux.containers] == [cid]
    assert ps.linux.network.default_interface.name == "eth0"
    assert ps.linux.process.process_count.value >= 1
    assert daemon.runtime.ListPodSandboxStats(pb.ListPodSandboxStatsRequest()).stats
    daemon.runtime.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
        container_id=cid, linux=pb.LinuxContainerResources(cpu_quota=20000, cpu_period=100000,
                                                           memory_limit_in_bytes=64 << 20)))
    r = daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
    assert r.resources.linux.memory_limit_in_bytes == 64 << 20
    # Kept in the bundle too, so a restart of the container keeps the new limits.
    info = json.loads(daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(
        container_id=cid, verbose=True)).info["info"])
    assert info["runtimeSpec"]["linux"]["resources"]["memory"]["limit"] == 64 << 20
    assert info["runtimeSpec"]["linux"]["resources"]["cpu"]["quota"] == 20000
    assert daemon.runtime.ListMetricDescriptors(pb.ListMetricDescriptorsRequest()) is not None
    daemon.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid))
    cleanup_pods(daemon)


def test_attach_and_port_forward_reach_the_pod(daemon: Daemon, logdir: Path) -> None:
    pod = run_pod(daemon, "streams", logdir)
    cid = start(daemon, pod, "echo", ["sh", "-c", "while read l; do echo got $l; done"],
                stdin=True)
    srv = start(daemon, pod, "srv", ["sh", "-c", "echo hello from the pod | nc -l -p 8080"])
    url = daemon.runtime.Attach(pb.AttachRequest(container_id=cid, stdin=True,
                                                 stdout=True)).url
    with connect(url, subprotocols=["v5.channel.k8s.io"]) as ws:
        got = b""
        deadline = time.monotonic() + 10
        while b"got ping" not in got and time.monotonic() < deadline:
            ws.send(bytes([STDIN]) + b"ping\n")
            try:
                msg = ws.recv(timeout=1)
            except TimeoutError:
                continue
            if msg[0] == STDOUT:
                got += msg[1:]
    assert b"got ping" in got
    assert wait_for(lambda: b"8080" in daemon.runtime.ExecSync(pb.ExecSyncRequest(
        container_id=srv, cmd=["netstat", "-ltn"])).stdout)
    url = daemon.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=pod,
                                                           port=[8080])).url
    with connect(url, subprotocols=["portforward.k8s.io"]) as ws:
        ws.recv(timeout=10)
        ws.recv(timeout=10)  # the port prefixes of the data and error channels
        got = b""
        while b"\n" not in got:
            msg = ws.recv(timeout=10)
            assert msg[0] == 0, msg
            got += msg[1:]
    assert got == b"hello from the pod\n"
    cleanup_pods(daemon)


def test_status_reports_the_network_ready(daemon: Daemon) -> None:
    st = daemon.runtime.Status(pb.StatusRequest())
    cond = {c.type: c.status for c in st.status.conditions}
    assert cond == {"RuntimeReady": True, "NetworkReady": True}


# -- bad input --------------------------------------------------------------------------
def test_hostile_sysctls_are_refused(daemon: Daemon, logdir: Path) -> None:
    for sysctls in ({"net.ipv4.ip_forward": "1+kernel.core_pattern=|/tmp/x"},
                    {"kernel.core_pattern": "|/tmp/x"},
                    {"net.ipv4.ip_local_port_range": "1024 65000\nkernel.x=1"},
                    {"../../etc/passwd": "1"}):
        cfg = pod_config("hostile", str(logdir))
        cfg.linux.sysctls.update(sysctls)
        code, details = code_of(daemon.runtime.RunPodSandbox, pb.RunPodSandboxRequest(config=cfg))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (sysctls, details)
    assert Path("/proc/sys/kernel/core_pattern").read_text().strip() != "|/tmp/x"
    cfg = pod_config("sysctl-ok", str(logdir))
    cfg.linux.sysctls["net.ipv4.ip_unprivileged_port_start"] = "53"
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    cid = start(daemon, pod, "c", ["sleep", "300"])
    r = daemon.runtime.ExecSync(pb.ExecSyncRequest(
        container_id=cid, cmd=["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]))
    assert r.stdout == b"53\n"
    assert Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text() != "53\n"
    cleanup_pods(daemon)


@pytest.mark.parametrize("log_path", ["../escape.log", "/etc/evil.log", "a/../../x.log",
                                      "link/0.log"])
def test_log_paths_that_escape_are_refused(daemon: Daemon, logdir: Path, log_path: str) -> None:
    (logdir / "link").symlink_to("/etc")
    pod = run_pod(daemon, "logs", logdir)
    code, details = code_of(daemon.runtime.CreateContainer, pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=container_config("c", ["true"], log_path=log_path)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "log" in details
    assert not Path("/etc/0.log").exists()
    cleanup_pods(daemon)


def test_bad_ids_and_configs_get_proper_codes(daemon: Daemon, logdir: Path) -> None:
    rt = daemon.runtime
    nf, inv = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
    unknown = "f" * 64
    cases = [
        (rt.PodSandboxStatus, pb.PodSandboxStatusRequest(pod_sandbox_id=unknown), nf),
        (rt.PodSandboxStatus, pb.PodSandboxStatusRequest(), inv),
        (rt.ContainerStatus, pb.ContainerStatusRequest(container_id=unknown), nf),
        (rt.ContainerStatus, pb.ContainerStatusRequest(), inv),
        (rt.StartContainer, pb.StartContainerRequest(container_id=unknown), nf),
        (rt.StopContainer, pb.StopContainerRequest(), inv),
        (rt.ExecSync, pb.ExecSyncRequest(container_id=unknown, cmd=["true"]), nf),
        (rt.ContainerStats, pb.ContainerStatsRequest(container_id=unknown), nf),
        (rt.PodSandboxStats, pb.PodSandboxStatsRequest(pod_sandbox_id=unknown), nf),
        (rt.UpdateContainerResources, pb.UpdateContainerResourcesRequest(container_id=unknown),
         nf),
        (rt.ReopenContainerLog, pb.ReopenContainerLogRequest(container_id=unknown), nf),
        (rt.Exec, pb.ExecRequest(container_id=unknown, cmd=["sh"], stdout=True), nf),
        (rt.Attach, pb.AttachRequest(container_id=unknown, stdout=True), nf),
        (rt.PortForward, pb.PortForwardRequest(pod_sandbox_id=unknown, port=[80]), nf),
        (rt.CreateContainer, pb.CreateContainerRequest(
            pod_sandbox_id=unknown, config=container_config("x", ["true"])), nf),
        (rt.RunPodSandbox, pb.RunPodSandboxRequest(), inv),
        (rt.RunPodSandbox, pb.RunPodSandboxRequest(config=pod_config("h", str(logdir)),
                                                   runtime_handler="nope"), inv),
    ]
    for call, req, want in cases:
        code, details = code_of(call, req)
        assert code == want, (call, req, code, details)
    # Stop/Remove of unknown ids succeed: kubelet retries them after a crash.
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=unknown))
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=unknown))
    rt.StopContainer(pb.StopContainerRequest(container_id=unknown))
    rt.RemoveContainer(pb.RemoveContainerRequest(container_id=unknown))

    pod = run_pod(daemon, "bad", logdir)
    bad_configs = [
        container_config("", ["true"]),
        container_config("c", ["true"], image=""),
        container_config("c", ["true"], image="docker.io/library/not-pulled:1"),
        container_config("c", ["true"], envs=[pb.KeyValue(key="", value="x")]),
        container_config("c", ["true"], mounts=[pb.Mount(container_path="/x",
                                                         host_path="relative")]),
        container_config("c", ["true"], mounts=[pb.Mount(container_path="../x",
                                                         host_path="/tmp")]),
        container_config("c", ["true"], devices=[pb.Device(container_path="/dev/x",
                                                           host_path="/etc/passwd")]),
    ]
    priv = container_config("c", ["true"])
    priv.linux.security_context.privileged = True  # the pod is not privileged
    mem = container_config("c", ["true"])
    mem.linux.resources.memory_limit_in_bytes = 1024
    grp = container_config("c", ["true"])
    grp.linux.security_context.run_as_group.value = 5
    sec = container_config("c", ["true"])
    sec.linux.security_context.seccomp_profile_path = "localhost/relative.json"
    for cfg in [*bad_configs, priv, mem, grp, sec]:
        code, details = code_of(rt.CreateContainer, pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=cfg))
        assert code in (inv, nf), (cfg, code, details)
    code, _ = code_of(rt.ExecSync, pb.ExecSyncRequest(container_id="", cmd=["true"]))
    assert code == inv
    assert daemon.alive()
    cleanup_pods(daemon)
