"""ImageService through a running daemon against a real registry (Debian's docker-registry
on loopback): pull via a configured mirror, list, status, remove, fs usage, and pulls
that need the request's own credentials."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2 as pb

from tests.cri.conftest import Daemon, start_daemon
from tests.fixtures import images
from tests.fixtures.registry import Registry, start_registry

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # bcrypt hashes for htpasswd (removed in 3.13: then use the bcrypt package)

pytestmark = [
    pytest.mark.root,  # unpacking layers makes device nodes and chowns
    pytest.mark.skipif(not shutil.which("skopeo") or not Path("/usr/bin/docker-registry").exists(),
                       reason="needs skopeo and docker-registry (scripts/setup.sh installs them)"),
]

USER, PASSWORD = "kubelet", "s3cret"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return images.busybox_layout(tmp_path_factory.mktemp("layout") / "busybox")


@pytest.fixture(scope="module")
def registry(layout: Path) -> Iterator[Registry]:
    reg = start_registry()
    reg.push_layout(layout, "latest", "library/busybox:latest")
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def auth_registry(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    d = tmp_path_factory.mktemp("auth")
    # bcrypt, which is all docker-registry's htpasswd accepts; no apache2-utils needed.
    hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    (d / "htpasswd").write_text(f"{USER}:{hashed}\n")
    reg = start_registry(f"auth:\n  htpasswd:\n    realm: test\n    path: {d / 'htpasswd'}\n")
    # Push with credentials: skopeo, independent of pallet.
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                    f"--dest-creds={USER}:{PASSWORD}", f"oci:{layout}:latest",
                    f"docker://{reg.host}/private/busybox:1"], check=True, capture_output=True)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[Daemon]:
    # docker.io is mirrored to the local registry, as on a machine with no internet.
    d = start_daemon(f'[registry]\nauths = {{}}\n[registry.mirrors]\n"docker.io" = ["{registry.host}"]\n')
    yield d
    assert d.stop() == 0, d.output()
    shutil.rmtree(d.dir, ignore_errors=True)


def spec(ref: str) -> pb.ImageSpec:
    return pb.ImageSpec(image=ref)


def test_empty_store(daemon: Daemon) -> None:
    assert list(daemon.images.ListImages(pb.ListImagesRequest()).images) == []
    assert not daemon.images.ImageStatus(pb.ImageStatusRequest(image=spec("busybox"))) \
        .HasField("image")
    daemon.images.RemoveImage(pb.RemoveImageRequest(image=spec("busybox")))  # idempotent
    fs = daemon.images.ImageFsInfo(pb.ImageFsInfoRequest()).image_filesystems
    assert len(fs) == 1 and fs[0].fs_id.mountpoint == daemon.root


def test_pull_through_the_mirror_then_list_status_and_fs_usage(daemon: Daemon) -> None:
    before = daemon.images.ImageFsInfo(pb.ImageFsInfoRequest()).image_filesystems[0]
    ref = daemon.images.PullImage(pb.PullImageRequest(image=spec("busybox"))).image_ref
    assert ref.startswith("sha256:")
    listed = daemon.images.ListImages(pb.ListImagesRequest()).images
    assert [i.id for i in listed] == [ref]
    img = listed[0]
    assert list(img.repo_tags) == ["docker.io/library/busybox:latest"]
    assert img.repo_digests[0].startswith("docker.io/library/busybox@sha256:")
    assert img.size > 100_000
    assert img.spec.image == ref
    # By name, by id, by id prefix; and as a ListImages filter.
    for name in ("busybox", "docker.io/library/busybox:latest", ref, ref[7:19]):
        st = daemon.images.ImageStatus(pb.ImageStatusRequest(image=spec(name), verbose=True))
        assert st.image.id == ref, name
    info = json.loads(st.info["info"])
    assert info["chainID"].startswith("sha256:") and info["imageSpec"]["config"]["Cmd"] == ["sh"]
    flt = pb.ListImagesRequest(filter=pb.ImageFilter(image=spec("busybox:latest")))
    assert [i.id for i in daemon.images.ListImages(flt).images] == [ref]
    flt = pb.ListImagesRequest(filter=pb.ImageFilter(image=spec("other:1")))
    assert list(daemon.images.ListImages(flt).images) == []
    after = daemon.images.ImageFsInfo(pb.ImageFsInfoRequest()).image_filesystems[0]
    assert after.used_bytes.value > before.used_bytes.value
    assert after.inodes_used.value > before.inodes_used.value


def test_remove_by_tag_removes_the_image(daemon: Daemon) -> None:
    daemon.images.PullImage(pb.PullImageRequest(image=spec("busybox")))
    daemon.images.RemoveImage(pb.RemoveImageRequest(image=spec("busybox:latest")))
    assert list(daemon.images.ListImages(pb.ListImagesRequest()).images) == []
    assert not daemon.images.ImageStatus(pb.ImageStatusRequest(image=spec("busybox"))) \
        .HasField("image")
    daemon.images.RemoveImage(pb.RemoveImageRequest(image=spec("busybox:latest")))


def test_pull_of_a_missing_image_is_not_found(daemon: Daemon, registry: Registry) -> None:
    with pytest.raises(grpc.RpcError) as info:
        daemon.images.PullImage(pb.PullImageRequest(image=spec(f"{registry.host}/library/nope:1")))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in info.value.details()


def test_pull_uses_the_requests_credentials(daemon: Daemon, auth_registry: Registry) -> None:
    ref = f"{auth_registry.host}/private/busybox:1"
    with pytest.raises(grpc.RpcError) as info:
        daemon.images.PullImage(pb.PullImageRequest(image=spec(ref)))
    assert info.value.code() != grpc.StatusCode.OK
    with pytest.raises(grpc.RpcError):
        daemon.images.PullImage(pb.PullImageRequest(
            image=spec(ref), auth=pb.AuthConfig(username=USER, password="wrong")))
    got = daemon.images.PullImage(pb.PullImageRequest(
        image=spec(ref), auth=pb.AuthConfig(username=USER, password=PASSWORD))).image_ref
    assert got.startswith("sha256:")
    daemon.images.RemoveImage(pb.RemoveImageRequest(image=spec(ref)))
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    got2 = daemon.images.PullImage(pb.PullImageRequest(
        image=spec(ref), auth=pb.AuthConfig(auth=token, server_address=auth_registry.host)))
    assert got2.image_ref == got
    with pytest.raises(grpc.RpcError) as info:
        daemon.images.PullImage(pb.PullImageRequest(
            image=spec(ref), auth=pb.AuthConfig(auth="not base64!")))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
