"""The rest of LinuxContainerConfig as a kubelet sends it, checked from inside the container:
namespace modes (NODE, TARGET), privileged, resources, mounts, DNS and the pod's hostname.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2 as pb

from tests.cri.conftest import Daemon
from tests.cri.kubelet import container_config, pod_config, wait_for
from tests.cri.test_pods import daemon, env, logdir  # noqa: F401 - fixtures

pytestmark = pytest.mark.root


def _running(d: Daemon, cid: str) -> bool:
    st = d.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
    return st.state == pb.ContainerState.CONTAINER_RUNNING


def _start(d: Daemon, pod: str, cfg: pb.ContainerConfig) -> str:
    cid = d.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod,
                                                              config=cfg)).container_id
    d.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    assert wait_for(lambda: _running(d, cid))
    return cid


def _sh(d: Daemon, cid: str, script: str) -> str:
    r = d.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", script],
                                              timeout=20))
    return r.stdout.decode() + r.stderr.decode()


def _remove(d: Daemon, pod: str) -> None:
    d.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))


def test_target_pid_namespace_and_node_network(daemon: Daemon,  # noqa: F811
                                               logdir: Path) -> None:  # noqa: F811
    """TARGET joins another container's PID namespace; NODE network is the host's."""
    cfg = pod_config("ns-modes", str(logdir))
    cfg.linux.security_context.namespace_options.network = pb.NamespaceMode.NODE
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    try:
        target = _start(daemon, pod, container_config("target", ["sleep", "300"]))
        dbg = container_config("debug", ["sleep", "301"])
        dbg.linux.security_context.namespace_options.pid = pb.NamespaceMode.TARGET
        dbg.linux.security_context.namespace_options.target_id = target
        debug = _start(daemon, pod, dbg)
        ps = _sh(daemon, debug, "ps -o args")
        assert "sleep 300" in ps and "sleep 301" in ps
        host_net = os.readlink("/proc/self/ns/net")
        st = daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=target,
                                                                      verbose=True))
        pid = json.loads(st.info["info"])["pid"]
        assert os.readlink(f"/proc/{pid}/ns/net") == host_net
    finally:
        _remove(daemon, pod)


def test_privileged_resources_mounts_and_dns(daemon: Daemon,  # noqa: F811
                                             logdir: Path) -> None:  # noqa: F811
    src = Path(tempfile.mkdtemp(prefix="pcri-mount-"))
    (src / "data").write_text("from-host")
    cfg = pod_config("cfgd", str(logdir))
    cfg.linux.security_context.privileged = True  # a privileged container needs this, as in containerd
    cfg.dns_config.servers.append("192.0.2.53")
    cfg.dns_config.searches.append("example.test")
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    try:
        c = container_config("cfg", ["sleep", "300"])
        c.linux.security_context.privileged = True
        r = c.linux.resources
        r.memory_limit_in_bytes = 96 << 20
        r.cpu_shares = 512
        r.cpu_quota, r.cpu_period = 25000, 100000
        r.oom_score_adj = 600
        r.cpuset_cpus = "0"
        r.hugepage_limits.append(pb.HugepageLimit(page_size="2MB", limit=4 << 20))
        c.mounts.append(pb.Mount(container_path="/data", host_path=str(src), readonly=True))
        cid = _start(daemon, pod, c)
        out = _sh(daemon, cid, "cat /data/data; echo; touch /data/x 2>&1; "
                               "cat /proc/self/oom_score_adj; "
                               "grep CapEff /proc/self/status; cat /etc/resolv.conf; hostname")
        assert "from-host" in out and "Read-only file system" in out
        assert "\n600\n" in out
        # Privileged: every capability the runtime itself holds (this sandbox lacks
        # CAP_SYS_RESOURCE, so "all" is our own bounding set, as moby does).
        with open("/proc/self/status") as f:
            ours = next(line.split()[1] for line in f if line.startswith("CapBnd:"))
        assert f"CapEff:\t{ours}" in out, out
        assert "nameserver 192.0.2.53" in out and "search example.test" in out
        assert out.strip().endswith("cfgd")
        stats = daemon.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=cid)).stats
        assert stats.memory.working_set_bytes.value > 0
        st = daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
        assert st.resources.linux.memory_limit_in_bytes == 96 << 20
        assert st.resources.linux.cpu_quota == 25000
        # cpuset and hugepages, read from the container's own cgroup on the host.
        info = json.loads(daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(
            container_id=cid, verbose=True)).info["info"])
        with open(f"/proc/{info['pid']}/cgroup") as f:
            paths = {parts[1]: parts[2] for parts in (line.rstrip("\n").split(":", 2)
                                                      for line in f)}
        if "cpuset" in paths:
            with open(f"/sys/fs/cgroup/cpuset{paths['cpuset']}/cpuset.cpus") as f:
                assert f.read().strip() == "0"
        hugetlb = (f"/sys/fs/cgroup/hugetlb{paths['hugetlb']}/hugetlb.2MB.limit_in_bytes"
                   if "hugetlb" in paths else
                   f"/sys/fs/cgroup/unified{paths['']}/hugetlb.2MB.max"
                   if os.path.isdir("/sys/fs/cgroup/unified") else
                   f"/sys/fs/cgroup{paths['']}/hugetlb.2MB.max")
        with open(hugetlb) as f:
            assert int(f.read()) == 4 << 20
    finally:
        _remove(daemon, pod)
        for p in src.iterdir():
            p.unlink()
        src.rmdir()


def test_seccomp_modes_masks_apparmor_and_cgroup_parent(daemon: Daemon,  # noqa: F811
                                                        logdir: Path) -> None:  # noqa: F811
    profile = Path(tempfile.mkdtemp(prefix="pcri-seccomp-")) / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 1}]}))
    parent = f"/pallet-cri-test-{os.getpid()}"
    cfg = pod_config("sec-modes", str(logdir))
    cfg.linux.cgroup_parent = parent
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    try:
        unconf = container_config("unconfined", ["sleep", "300"])
        unconf.linux.security_context.seccomp.profile_type = \
            pb.SecurityProfile.ProfileType.Unconfined
        unconf.linux.security_context.apparmor.profile_type = \
            pb.SecurityProfile.ProfileType.RuntimeDefault  # accepted; no AppArmor here
        # Empty masked/readonly lists (as the kubelet sends for procMount: Unmasked).
        unconf.linux.security_context.masked_paths.append("/proc/version")
        cid = _start(daemon, pod, unconf)
        out = _sh(daemon, cid, "grep Seccomp: /proc/self/status; cat /proc/version | wc -c")
        assert "Seccomp:\t0" in out
        assert "\n0\n" in out, "a masked path from the config reads empty"
        st = daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid,
                                                                      verbose=True))
        with open(f"/proc/{json.loads(st.info['info'])['pid']}/cgroup") as f:
            assert parent in f.read(), "the pod's cgroup parent holds the container"
        local = container_config("localhost", ["sleep", "300"])
        local.linux.security_context.seccomp.profile_type = \
            pb.SecurityProfile.ProfileType.Localhost
        local.linux.security_context.seccomp.localhost_ref = str(profile)
        lid = _start(daemon, pod, local)
        out = _sh(daemon, lid, "mkdir /tmp/d 2>&1; echo rc=$?")
        assert "Operation not permitted" in out and "rc=1" in out
    finally:
        _remove(daemon, pod)
        profile.unlink()
        profile.parent.rmdir()
        # The parent is the kubelet's to remove, as with runc and containerd.
        for hierarchy in os.listdir("/sys/fs/cgroup"):
            for dirpath, _, _ in sorted(os.walk(f"/sys/fs/cgroup/{hierarchy}{parent}"),
                                        reverse=True):
                os.rmdir(dirpath)


def test_port_mappings_reach_the_pod(daemon: Daemon, logdir: Path) -> None:  # noqa: F811
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host_port = s.getsockname()[1]
    cfg = pod_config("ports", str(logdir))
    cfg.port_mappings.append(pb.PortMapping(protocol=pb.Protocol.TCP, container_port=80,
                                            host_port=host_port, host_ip="127.0.0.1"))
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    try:
        _start(daemon, pod, container_config("web", [
            "sh", "-c", "mkdir -p /www && echo hello-pod > /www/index.html && "
                        "exec httpd -f -p 80 -h /www"]))
        body = wait_for(lambda: _get(urllib.request, host_port), timeout=10)
        assert body == "hello-pod\n"
    finally:
        _remove(daemon, pod)


def _get(urllib_request, port: int) -> str:  # noqa: ANN001
    try:
        return urllib_request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
    except OSError:
        return ""
