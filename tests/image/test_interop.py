"""Interop with skopeo and umoci: archives pallet writes load elsewhere, and the reverse;
pallet's unpacked tree equals `umoci unpack` of the same image.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.fixtures import images
from tests.image.conftest import make_store, needs_root

pytestmark = [pytest.mark.root, needs_root]


def _skopeo_inspect(transport: str) -> dict:
    out = subprocess.run(["skopeo", "inspect", transport], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_saved_archive_is_read_by_skopeo_and_loads_back(tmp_path, layouts, fmt):
    store = make_store(tmp_path / "root")
    image = store.import_layout(layouts["multilayer"], name="multi:1")[0]
    tar = tmp_path / "out.tar"
    store.save(["multi:1"], tar, format=fmt)
    info = _skopeo_inspect(f"{fmt}:{tar}")
    assert len(info["Layers"]) == 4 and info["Labels"] == {"test": "multilayer"}
    other = make_store(tmp_path / "other")
    loaded = other.load(tar)
    assert [i.names for i in loaded] == [["docker.io/library/multi:1"]]
    assert loaded[0].id == image.id  # same config: same image id in both formats


@pytest.mark.parametrize("maker", ["busybox_docker_archive", "busybox_oci_archive"])
def test_archives_written_by_skopeo_load(tmp_path, maker):
    tar = getattr(images, maker)(tmp_path / "bb.tar")
    loaded = make_store(tmp_path / "root").load(tar)
    assert loaded and loaded[0].config.cmd == ("sh",)


def _tree(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            kind = stat.S_IFMT(st.st_mode)
            extra: object = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = (os.major(st.st_rdev), os.minor(st.st_rdev))
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, extra)
    return out


@pytest.mark.parametrize("driver", ["overlay", "copy"])
def test_unpacked_tree_equals_umoci_unpack(tmp_path, layouts, driver):
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layouts['multilayer']}:latest", str(bundle)],
                   check=True, capture_output=True)
    store = make_store(tmp_path / "root", driver=driver)
    store.import_layout(layouts["multilayer"], name="multi:1")
    root = store.prepare_rootfs("multi:1", tmp_path / "c")
    try:
        ours, theirs = _tree(root), _tree(bundle / "rootfs")
    finally:
        store.release_rootfs(tmp_path / "c")
    assert sorted(ours) == sorted(theirs)
    diffs = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
    assert diffs == {}


def test_store_content_dir_is_an_oci_layout_skopeo_reads(tmp_path, layouts):
    store = make_store(tmp_path / "root")
    store.import_layout(layouts["busybox-oci"], name="busybox:latest")
    info = _skopeo_inspect(f"oci:{store.content.path}:docker.io/library/busybox:latest")
    assert info["Architecture"] == "amd64"
