"""What the pod tests share: a private CNI network (its own bridge and 10.211.x subnet), the
local registry with busybox, a daemon wired to both, kubelet-shaped configs, a host check.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2 as pb

from pallet.engine.network import build_conflist
from tests.cri.conftest import Daemon, start_daemon
from tests.fixtures import images
from tests.fixtures.registry import Registry, start_registry

BUSYBOX = "docker.io/library/busybox:latest"  # what the test registry serves

# What a test of pods over a real registry and real CNI plugins needs.
needs_pod_tools = pytest.mark.skipif(
    not shutil.which("skopeo") or not Path("/usr/bin/docker-registry").exists()
    or not Path("/usr/lib/cni/bridge").exists(),
    reason="needs skopeo, docker-registry and containernetworking-plugins")

CNI_BIN = "/usr/lib/cni"


@dataclass
class CNINet:
    dir: Path
    conf_dir: Path
    name: str
    bridge: str
    subnet: str

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def make_cni_network(prefix: str = "pcri", net16: str = "10.211") -> CNINet:
    """A conflist of its own: bridge <prefix><rand>, subnet <net16>.<rand>.0/24 (never
    10.87/10.88)."""
    tag = f"{random.randrange(16**5):05x}"
    third = random.randrange(1, 254)
    d = Path(tempfile.mkdtemp(prefix=f"{prefix}-cni-"))
    conf = d / "net.d"
    conf.mkdir()
    name, bridge, subnet = f"{prefix}-{tag}", f"{prefix}{tag}", f"{net16}.{third}.0/24"
    conflist = build_conflist(name, bridge=bridge, subnet=subnet, gateway=f"{net16}.{third}.1",
                              data_dir=str(d / "ipam"))
    (conf / "10-pcri.conflist").write_text(json.dumps(conflist))
    return CNINet(d, conf, name, bridge, subnet)


def start_registry_with_busybox(tmp: Path) -> Registry:
    layout = images.busybox_layout(tmp / "busybox")
    reg = start_registry()
    reg.push_layout(layout, "latest", "library/busybox:latest")
    return reg


def start_pod_daemon(net: CNINet, registry: Registry, extra: str = "") -> Daemon:
    return start_daemon(
        f'[cni]\nconf_dir = "{net.conf_dir}"\nbin_dirs = ["{CNI_BIN}"]\n'
        f'[registry]\nauths = {{}}\n[registry.mirrors]\n"docker.io" = ["{registry.host}"]\n'
        + extra)


@contextlib.contextmanager
def pod_daemon(net: CNINet, registry: Registry,
               prepare: Callable[[Daemon], None] | None = None) -> Iterator[Daemon]:
    """A started pod daemon with busybox pulled (after PREPARE(d), if given); on exit its
    pods are removed, it stops cleanly (exit 0, no ERROR logged) and its dir goes."""
    d = start_pod_daemon(net, registry)
    if prepare:
        prepare(d)
    d.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(
        image=BUSYBOX)))
    yield d
    cleanup_pods(d)
    code = d.stop()
    out = d.output()
    shutil.rmtree(d.dir, ignore_errors=True)
    assert code == 0, out
    assert "ERROR pallet" not in out, out


def pod_config(name: str, log_dir: str = "", *, uid: str = "", attempt: int = 0,
               pid_mode: int = pb.NamespaceMode.CONTAINER, **kw: object) -> pb.PodSandboxConfig:
    uid = uid or f"uid-{name}-{random.randrange(1 << 30)}"
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace="default", uid=uid, attempt=attempt),
        hostname=name, log_directory=log_dir,
        linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(pid=pid_mode))), **kw)  # type: ignore[arg-type]


def container_config(name: str, args: list[str], image: str = BUSYBOX,
                     log_path: str = "", **kw: object) -> pb.ContainerConfig:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=image),
        command=args[:1], args=args[1:], log_path=log_path or f"{name}/0.log",
        linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
            namespace_options=pb.NamespaceOption(pid=pb.NamespaceMode.CONTAINER))),
        **kw)  # type: ignore[arg-type]


def wait_for(pred, timeout: float = 15.0, interval: float = 0.05):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def code_of(call, *args, **kw) -> tuple[grpc.StatusCode, str]:  # noqa: ANN001
    try:
        call(*args, **kw)
    except grpc.RpcError as e:
        return e.code(), e.details()
    raise AssertionError(f"{call} succeeded")


# -- the host, before and after ---------------------------------------------------------------
def host_leftovers(daemon: Daemon, net: CNINet, container_ids: list[str]) -> list[str]:
    """Everything removed pods could leave behind, as readable lines (empty: clean)."""
    out = []
    run = os.path.join(str(daemon.dir), "run")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point.startswith((daemon.root, run)):
                out.append(f"mount {point}")
    pods_run = Path(run) / "pods"
    if pods_run.exists():
        out += [f"pod ns dir {p}" for p in pods_run.iterdir()]
    links = subprocess.run(["ip", "-o", "link", "show", "master", net.bridge],
                           capture_output=True, text=True).stdout
    out += [f"veth {ln.split(':')[1].strip()}" for ln in links.splitlines() if ln.strip()]
    for cid in container_ids:
        for ctl in ("memory", "pids", "cpu", "freezer"):
            if os.path.exists(f"/sys/fs/cgroup/{ctl}/pallet/{cid}"):
                out.append(f"cgroup {ctl}/pallet/{cid}")
        if os.path.exists(os.path.join(run, cid)):
            out.append(f"run dir of {cid}")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if any(cid.encode() in cmd for cid in container_ids):
            out.append(f"process {pid}: {cmd[:120]!r}")
    nat = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    prefix = net.subnet.rsplit(".", 1)[0] + "."
    out += [f"iptables {ln}" for ln in nat.splitlines() if prefix in ln]
    return out


def restart_daemon(old: Daemon, timeout: float = 20) -> Daemon:
    """Stop OLD (SIGTERM) and start `pallet daemon` again on the same dirs and config."""
    import signal as _signal

    from tests.cri.conftest import REPO, pallet_cli

    old.stop(_signal.SIGTERM)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PALLET_CONFIG": ""}
    with open(old.log, "ab") as out:
        proc = subprocess.Popen(
            [pallet_cli(), "daemon", "--config", str(old.dir / "pallet.toml"), "--socket",
             old.socket, "--root", old.root, "--state-dir", str(old.dir / "run")],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, env=env)
    d = Daemon(old.dir, old.socket, old.root, proc, old.log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            grpc.channel_ready_future(d.channel).result(timeout=1)
            return d
        except grpc.FutureTimeoutError:
            pass
    d.stop(_signal.SIGKILL)
    raise RuntimeError(f"pallet daemon did not come back: {d.output()[-2000:]}")


def cleanup_pods(d: Daemon) -> None:
    """Remove every pod the daemon knows (tests leave the host as they found it)."""
    with contextlib.suppress(grpc.RpcError):
        for p in d.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items:
            d.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=p.id))
            d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id))
