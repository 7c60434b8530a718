"""Pods with a user namespace of their own (Kubernetes' `hostUsers: false`) and image
volumes (the `image` volume source), through `pallet daemon` as a kubelet drives them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2 as pb

from tests.cri.conftest import Daemon
from tests.cri.kubelet import (
    BUSYBOX,
    CNINet,
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
from tests.fixtures import images
from tests.fixtures.registry import Registry

pytestmark = [pytest.mark.root, needs_pod_tools]

MULTILAYER = "docker.io/library/hcri-multilayer:latest"
HOST_BASE, SIZE = 1000000, 65536
RUNNING = pb.ContainerState.CONTAINER_RUNNING


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[CNINet, Registry, Path]]:
    tmp = Path(tempfile.mkdtemp(prefix="hcri-userns-"))
    net = make_cni_network(prefix="hcri", net16="10.240")
    reg = start_registry_with_busybox(tmp)
    reg.push_layout(images.multilayer_layout(tmp / "multilayer"), "latest",
                    "library/hcri-multilayer:latest")
    yield net, reg, tmp
    reg.stop()
    net.remove()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(env: tuple[CNINet, Registry, Path]) -> Iterator[Daemon]:
    net, reg, _ = env
    # The pods' roots reach their rootfs from inside their user namespace (as containerd's,
    # the state dirs above it must be searchable).
    with pod_daemon(net, reg, prepare=lambda d: os.chmod(d.dir, 0o711)) as d:
        yield d


@pytest.fixture
def tmp(env: tuple[CNINet, Registry, Path]) -> Path:
    d = Path(tempfile.mkdtemp(prefix="hcri-", dir=env[2]))
    for p in (env[2], d):
        os.chmod(p, 0o711)  # volumes are bound from inside the pods' user namespaces
    return d


def userns(mode: int = pb.NamespaceMode.POD, uids: list[tuple[int, int, int]] | None = None,
           gids: list[tuple[int, int, int]] | None = None) -> pb.UserNamespace:
    default = [(0, HOST_BASE, SIZE)]
    return pb.UserNamespace(
        mode=mode,
        uids=[pb.IDMapping(container_id=c, host_id=h, length=n)
              for c, h, n in (default if uids is None else uids)],
        gids=[pb.IDMapping(container_id=c, host_id=h, length=n)
              for c, h, n in (default if gids is None else gids)])


def userns_pod_config(name: str, logdir: Path, u: pb.UserNamespace | None = None
                      ) -> pb.PodSandboxConfig:
    cfg = pod_config(name, str(logdir))
    cfg.linux.security_context.namespace_options.userns_options.CopyFrom(u or userns())
    return cfg


def userns_container(name: str, args: list[str], u: pb.UserNamespace | None = None,
                     **kw: object) -> pb.ContainerConfig:
    cfg = container_config(name, args, **kw)
    cfg.linux.security_context.namespace_options.userns_options.CopyFrom(u or userns())
    return cfg


def sh(d: Daemon, cid: str, script: str) -> tuple[int, str, str]:
    r = d.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", script],
                                              timeout=30))
    return r.exit_code, r.stdout.decode(), r.stderr.decode()


def start(d: Daemon, pod: str, cfg: pb.ContainerConfig, pod_cfg: pb.PodSandboxConfig) -> str:
    cid = d.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg)).container_id
    d.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    assert wait_for(lambda: d.runtime.ContainerStatus(pb.ContainerStatusRequest(
        container_id=cid)).status.state == RUNNING)
    return cid


def remove_pod(d: Daemon, pod: str) -> None:
    d.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    d.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))


# -- user namespaces -----------------------------------------------------------------------
def test_runtime_handler_reports_user_namespaces(daemon: Daemon) -> None:
    handlers = {h.name: h.features for h in
                daemon.runtime.Status(pb.StatusRequest()).runtime_handlers}
    assert handlers[""].user_namespaces
    assert handlers["pallet"].user_namespaces


def test_pod_user_namespace_maps_root_to_the_kubelets_range(
        daemon: Daemon, env: tuple[CNINet, Registry, Path], tmp: Path) -> None:
    """Two containers of a hostUsers:false pod: root inside, HOST_BASE outside, one shared
    user namespace; the rootfs is writable; a plain volume gets host-side ids, an idmapped
    one (as the kubelet asks for volumes) on-disk ids as seen inside."""
    net = env[0]
    plain, idmapped = tmp / "plain", tmp / "idmapped"
    plain.mkdir()
    idmapped.mkdir()
    os.chmod(plain, 0o777)  # the pod's root is nobody to a host-owned dir
    mapping = [pb.IDMapping(container_id=0, host_id=HOST_BASE, length=SIZE)]
    mounts = [pb.Mount(container_path="/plain", host_path=str(plain)),
              pb.Mount(container_path="/idmapped", host_path=str(idmapped),
                       uidMappings=mapping, gidMappings=mapping)]
    pod_cfg = userns_pod_config("hcri-userns", tmp)
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    cids = []
    try:
        st = daemon.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod))
        u = st.status.linux.namespaces.options.userns_options
        assert u.mode == pb.NamespaceMode.POD
        assert [(m.container_id, m.host_id, m.length) for m in u.uids] == [(0, HOST_BASE, SIZE)]
        a = start(daemon, pod, userns_container("a", ["sleep", "3600"], mounts=mounts), pod_cfg)
        cids.append(a)
        b = start(daemon, pod, userns_container("b", ["sleep", "3600"]), pod_cfg)
        cids.append(b)

        code, out, err = sh(daemon, a, "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g")
        assert code == 0, err
        lines = [ln.split() for ln in out.splitlines()]
        assert lines[:2] == [["0", str(HOST_BASE), str(SIZE)]] * 2
        assert lines[2:] == [["0"], ["0"]]
        ns_a = sh(daemon, a, "readlink /proc/self/ns/user")[1].strip()
        ns_b = sh(daemon, b, "readlink /proc/self/ns/user")[1].strip()
        assert ns_a == ns_b != os.readlink("/proc/self/ns/user")

        info = json.loads(daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(
            container_id=a, verbose=True)).info["info"])
        status = Path(f"/proc/{info['pid']}/status").read_text()
        uid_line = next(ln for ln in status.splitlines() if ln.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(HOST_BASE)] * 4

        # The image is root's inside, and the writable layer is usable, "/" included.
        code, out, err = sh(daemon, a, "stat -c %u:%g /bin/busybox /etc; echo hi > /made; "
                            "cat /made; stat -c %u /made; echo x >> /etc/passwd")
        assert code == 0, err
        assert out.split() == ["0:0", "0:0", "hi", "0"]

        code, out, err = sh(daemon, a, "touch /plain/f /idmapped/f; stat -c %u /idmapped/f")
        assert code == 0, err
        assert out.strip() == "0"
        assert (os.stat(plain / "f").st_uid, os.stat(plain / "f").st_gid) == (HOST_BASE,) * 2
        assert (os.stat(idmapped / "f").st_uid, os.stat(idmapped / "f").st_gid) == (0, 0)

        # Network, IPC and UTS are the pod's, owned by its user namespace.
        code, out, err = sh(daemon, a, "hostname; ip -o addr show eth0 | grep -c inet")
        assert code == 0, err
        assert out.split()[0] == "hcri-userns"
        assert sh(daemon, a, "readlink /proc/self/ns/net")[1] == \
            sh(daemon, b, "readlink /proc/self/ns/net")[1]
        assert net.subnet.rsplit(".", 1)[0] in daemon.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=pod)).status.network.ip
    finally:
        remove_pod(daemon, pod)
    assert host_leftovers(daemon, net, cids) == []


def test_user_namespace_with_a_shared_pid_namespace(
        daemon: Daemon, env: tuple[CNINet, Registry, Path], tmp: Path) -> None:
    pod_cfg = userns_pod_config("hcri-userns-pid", tmp)
    pod_cfg.linux.security_context.namespace_options.pid = pb.NamespaceMode.POD
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    cids = []
    try:
        cfg = userns_container("a", ["sleep", "3600"])
        cfg.linux.security_context.namespace_options.pid = pb.NamespaceMode.POD
        a = start(daemon, pod, cfg, pod_cfg)
        cids.append(a)
        code, out, err = sh(daemon, a, "ps -o pid,comm; id -u")
        assert code == 0, err
        assert "sleep" in out and out.split()[-1] == "0"
    finally:
        remove_pod(daemon, pod)
    assert host_leftovers(daemon, env[0], cids) == []


@pytest.mark.parametrize("u,message", [
    (userns(uids=[(0, HOST_BASE, SIZE), (SIZE, HOST_BASE + SIZE, SIZE)]), "exactly one"),
    (userns(gids=[]), "exactly one"),
    (userns(uids=[], gids=[]), "exactly one"),
    (userns(uids=[(0, HOST_BASE, 0)]), "size 0"),
    (userns(uids=[(0, (1 << 32) - 10, SIZE)]), "32-bit"),
    (userns(mode=pb.NamespaceMode.TARGET), "not supported"),
    (userns(mode=pb.NamespaceMode.CONTAINER), "not supported"),
    (userns(mode=pb.NamespaceMode.NODE), "NODE takes no"),
])
def test_bad_user_namespace_options_are_refused(daemon: Daemon, tmp: Path,
                                                 u: pb.UserNamespace, message: str) -> None:
    before = daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items
    code, details = code_of(daemon.runtime.RunPodSandbox, pb.RunPodSandboxRequest(
        config=userns_pod_config("hcri-bad", tmp, u)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert message in details and "\n" not in details
    assert daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == before
    pods_run = Path(daemon.dir) / "run" / "pods"
    assert not pods_run.exists() or not any(pods_run.iterdir())


def test_host_network_with_a_user_namespace_is_refused(daemon: Daemon, tmp: Path) -> None:
    cfg = userns_pod_config("hcri-bad-host", tmp)
    cfg.linux.security_context.namespace_options.network = pb.NamespaceMode.NODE
    code, details = code_of(daemon.runtime.RunPodSandbox, pb.RunPodSandboxRequest(config=cfg))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "host's network" in details


def test_container_user_namespace_must_match_its_pods(
        daemon: Daemon, env: tuple[CNINet, Registry, Path], tmp: Path) -> None:
    pod_cfg = userns_pod_config("hcri-userns-mismatch", tmp)
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    try:
        for u in (userns(uids=[(0, HOST_BASE + SIZE, SIZE)]),
                  userns(mode=pb.NamespaceMode.NODE, uids=[], gids=[])):
            code, details = code_of(daemon.runtime.CreateContainer, pb.CreateContainerRequest(
                pod_sandbox_id=pod, config=userns_container("x", ["true"], u),
                sandbox_config=pod_cfg))
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert "differs from its pod's" in details
        assert not daemon.runtime.ListContainers(pb.ListContainersRequest()).containers
    finally:
        remove_pod(daemon, pod)


def test_node_mode_is_the_hosts_user_namespace(daemon: Daemon, tmp: Path) -> None:
    cfg = userns_pod_config("hcri-node", tmp, userns(mode=pb.NamespaceMode.NODE, uids=[],
                                                     gids=[]))
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    try:
        a = start(daemon, pod, container_config("a", ["sleep", "3600"]), cfg)
        code, out, _ = sh(daemon, a, "readlink /proc/self/ns/user")
        assert out.strip() == os.readlink("/proc/self/ns/user")
    finally:
        remove_pod(daemon, pod)


# -- image volumes -------------------------------------------------------------------------
def pull(d: Daemon, ref: str) -> str:
    return d.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref))).image_ref


def image_mount(path: str, image: str, sub_path: str = "") -> pb.Mount:
    return pb.Mount(container_path=path, image=pb.ImageSpec(image=image),
                    image_sub_path=sub_path, readonly=True)


def view_mounts(d: Daemon) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if "/image-volumes/" in ln.split()[4]
                and ln.split()[4].startswith(d.root)]


def test_image_volume_mounts_a_pulled_image_read_only(
        daemon: Daemon, env: tuple[CNINet, Registry, Path], tmp: Path) -> None:
    """The kubelet pulls the image, then names it (its image_ref) in Mount.image: its layers
    merged, whiteouts applied, read-only; image_sub_path mounts a directory of it."""
    ref = pull(daemon, MULTILAYER)
    pod_cfg = pod_config("hcri-imgvol", str(tmp))
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    cids = []
    try:
        a = start(daemon, pod, container_config("a", ["sleep", "3600"], mounts=[
            image_mount("/vol", ref), image_mount("/data", MULTILAYER, "data")]), pod_cfg)
        cids.append(a)
        code, out, err = sh(daemon, a, "cat /vol/data/keep.txt /vol/etc/motd /data/keep.txt; "
                            "ls /vol/opaque; stat -c %u /vol/owned")
        assert code == 0, err
        assert out.split() == ["keep", "layer", "two", "keep", "new.txt", "1234"]
        code, _, _ = sh(daemon, a, "test -e /vol/data/gone.txt || test -e /vol/opaque/old1.txt")
        assert code != 0  # whiteouts and opaque dirs apply
        code, _, err = sh(daemon, a, "touch /vol/x")
        assert code != 0 and "Read-only" in err
        assert len(view_mounts(daemon)) == 2
        st = daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=a)).status
        assert [(m.container_path, m.image.image, m.image_sub_path) for m in st.mounts] == \
            [("/vol", ref, ""), ("/data", MULTILAYER, "data")]

        # RemoveImage is deferred while a container uses it: its snapshots stay leased.
        daemon.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)))
        assert not daemon.images.ImageStatus(pb.ImageStatusRequest(
            image=pb.ImageSpec(image=ref))).HasField("image")
        code, out, err = sh(daemon, a, "cat /vol/data/keep.txt")
        assert (code, out) == (0, "keep\n"), err
        daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=a))
        assert view_mounts(daemon) == []
        leases = Path(daemon.root) / "leases"
        assert not any("image-volumes" in p.read_text() for p in leases.glob("*.json"))
    finally:
        remove_pod(daemon, pod)
    assert host_leftovers(daemon, env[0], cids) == []


def test_image_volume_of_a_missing_image_or_path_is_refused(
        daemon: Daemon, env: tuple[CNINet, Registry, Path], tmp: Path) -> None:
    pull(daemon, MULTILAYER)
    pod_cfg = pod_config("hcri-imgvol-bad", str(tmp))
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    try:
        for mount, want, text in [
            (image_mount("/vol", "docker.io/library/hcri-absent:1"), grpc.StatusCode.NOT_FOUND,
             "not found"),
            (image_mount("/vol", MULTILAYER, "no/such/dir"), grpc.StatusCode.INVALID_ARGUMENT,
             "does not exist in image"),
            (image_mount("/vol", MULTILAYER, "../etc"), grpc.StatusCode.INVALID_ARGUMENT,
             "without '..'"),
            (pb.Mount(container_path="/vol", host_path=str(tmp),
                      image=pb.ImageSpec(image=MULTILAYER)), grpc.StatusCode.INVALID_ARGUMENT,
             "exclude each other"),
        ]:
            code, details = code_of(daemon.runtime.CreateContainer, pb.CreateContainerRequest(
                pod_sandbox_id=pod, config=container_config("x", ["true"], mounts=[mount]),
                sandbox_config=pod_cfg))
            assert code == want, details
            assert text in details and "\n" not in details
        assert not daemon.runtime.ListContainers(pb.ListContainersRequest(
            filter=pb.ContainerFilter(pod_sandbox_id=pod))).containers
        assert view_mounts(daemon) == []
        assert not any(Path(daemon.root, "containers").iterdir())
    finally:
        remove_pod(daemon, pod)


def test_image_volume_in_a_user_namespace_is_idmapped(
        daemon: Daemon, env: tuple[CNINet, Registry, Path], tmp: Path) -> None:
    ref = pull(daemon, MULTILAYER)
    pod_cfg = userns_pod_config("hcri-imgvol-userns", tmp)
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    cids = []
    try:
        a = start(daemon, pod, userns_container("a", ["sleep", "3600"], mounts=[
            image_mount("/vol", ref), image_mount("/bin2", BUSYBOX, "bin")]), pod_cfg)
        cids.append(a)
        code, out, err = sh(daemon, a, "stat -c %u:%g /vol/owned /vol/data/keep.txt "
                            "/bin2/busybox")
        assert code == 0, err
        assert out.split() == ["1234:5678", "0:0", "0:0"]
    finally:
        remove_pod(daemon, pod)
    assert host_leftovers(daemon, env[0], cids) == []


def test_a_handler_without_user_namespaces_refuses_them(daemon: Daemon, tmp: Path) -> None:
    if not shutil.which("runc"):
        pytest.skip("runc is not installed")
    handlers = {h.name: h.features for h in
                daemon.runtime.Status(pb.StatusRequest()).runtime_handlers}
    assert not handlers["runc"].user_namespaces  # Debian's runc 1.1 has no idmapped mounts
    code, details = code_of(daemon.runtime.RunPodSandbox, pb.RunPodSandboxRequest(
        config=userns_pod_config("hcri-runc", tmp), runtime_handler="runc"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not support user namespaces" in details


def test_image_volume_is_unmounted_on_exit_and_released_on_removal(
        daemon: Daemon, env: tuple[CNINet, Registry, Path], tmp: Path) -> None:
    ref = pull(daemon, MULTILAYER)
    pod_cfg = pod_config("hcri-imgvol-exit", str(tmp))
    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    leases = Path(daemon.root) / "leases"
    try:
        cid = daemon.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config(
                "once", ["cat", "/vol/data/keep.txt"], mounts=[image_mount("/vol", ref)]),
            sandbox_config=pod_cfg)).container_id
        daemon.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
        assert wait_for(lambda: daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(
            container_id=cid)).status.state == pb.ContainerState.CONTAINER_EXITED)
        st = daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
        assert st.exit_code == 0
        assert wait_for(lambda: view_mounts(daemon) == [])
        assert any("image-volumes" in p.read_text() for p in leases.glob("*.json"))
        daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
        assert not any("image-volumes" in p.read_text() for p in leases.glob("*.json"))
    finally:
        remove_pod(daemon, pod)
