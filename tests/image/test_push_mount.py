"""`pallet push` mounts blobs across repositories of one registry instead of re-uploading them.

Counted from docker-registry's own access log: blob upload PUTs versus mount POSTs it answered
201, so no proxy sits between pallet and the registry.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pallet.cli import main
from tests.fixtures.registry import Registry, start_registry
from tests.image.conftest import make_store, needs_root

pytestmark = [pytest.mark.root, needs_root]


@pytest.fixture
def logged_registry() -> Iterator[Registry]:
    reg = start_registry(accesslog=True)
    yield reg
    reg.stop()


def _blob_traffic(reg: Registry, repo: str) -> dict[str, int]:
    prefix = f"/v2/{repo}/blobs/uploads/"
    out = {"put": 0, "mounted": 0, "mount_refused": 0, "post": 0, "delete": 0}
    for method, path, status in reg.access_log():
        if not path.startswith(prefix):
            continue
        if method == "PUT" and status == 201:
            out["put"] += 1
        elif method == "POST" and "mount=" in path:
            out["mounted" if status == 201 else "mount_refused"] += 1
        elif method == "POST":
            out["post"] += 1
        elif method == "DELETE":
            out["delete"] += 1
    return out


def test_push_to_a_second_repo_mounts_every_blob(logged_registry, tmp_path, capsys):
    reg = logged_registry
    root = ["--root", str(tmp_path / "root")]
    assert main(root + ["image", "build-busybox", "--tag", f"{reg.host}/a/busybox:1"]) == 0
    assert main(root + ["push", f"{reg.host}/a/busybox:1"]) == 0
    assert _blob_traffic(reg, "a/busybox") == {"put": 2, "mounted": 0, "mount_refused": 0, "post": 2,
                                               "delete": 0}  # config + layer, uploaded
    assert main(root + ["tag", f"{reg.host}/a/busybox:1", f"{reg.host}/b/busybox:1"]) == 0
    capsys.readouterr()
    assert main(root + ["push", f"{reg.host}/b/busybox:1"]) == 0
    assert "Mounted from" in capsys.readouterr().out
    # Both blobs linked from a/busybox by the registry (201): not one byte uploaded again.
    assert _blob_traffic(reg, "b/busybox") == {"put": 0, "mounted": 2, "mount_refused": 0, "post": 0,
                                               "delete": 0}
    pulled = make_store(tmp_path / "other").pull(f"{reg.host}/b/busybox:1")
    assert pulled.config.cmd == ("sh",)


def test_a_refused_mount_falls_back_to_uploading_into_the_session_it_opened(logged_registry, tmp_path):
    reg = logged_registry
    store = make_store(tmp_path / "root")
    store.import_layout(_busybox_layout(tmp_path), name=f"{reg.host}/never/pushed:1")
    store.tag(f"{reg.host}/never/pushed:1", f"{reg.host}/c/busybox:1")
    # The other name's repo has no blobs on the registry: it answers the mounts with 202.
    store.push(f"{reg.host}/c/busybox:1")
    assert _blob_traffic(reg, "c/busybox") == {"put": 2, "mounted": 0, "mount_refused": 2, "post": 0,
                                               "delete": 0}
    assert make_store(tmp_path / "other").pull(f"{reg.host}/c/busybox:1").names


def _busybox_layout(tmp_path):
    from tests.fixtures import images

    return images.busybox_layout(tmp_path / "layout")
