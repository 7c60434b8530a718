"""Unpacking layers: whiteouts, opaque dirs, every file type, and hostile layers confined.

Runs through the store (import a layout, mount the rootfs) with the overlay and the copying driver.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from pallet.errors import InvalidArgument
from pallet.image.unpack import UnsafeLayer
from tests.fixtures import images
from tests.image.conftest import make_store, needs_root

pytestmark = [pytest.mark.root, needs_root]
TARGET = Path("/tmp/pallet-hostile-target")


@pytest.fixture(params=["overlay", "copy"])
def driver(request):
    return request.param


@pytest.fixture
def rootfs_of(tmp_path, driver):
    """Import a layout and mount its rootfs; unmounts on teardown."""
    store = make_store(tmp_path / "root", driver=driver)
    prepared = []

    def make(layout: Path) -> Path:
        store.import_layout(layout, name="test/image:1")
        cdir = tmp_path / f"c{len(prepared)}"
        prepared.append(cdir)
        return store.prepare_rootfs("test/image:1", cdir)

    make.store = store
    yield make
    for cdir in prepared:
        store.release_rootfs(cdir)
        assert not os.path.ismount(cdir / "rootfs")


def test_multilayer_whiteouts_opaque_dirs_and_file_types(rootfs_of, layouts):
    root = rootfs_of(layouts["multilayer"])
    for p in images.MULTILAYER_EXPECT["present"]:
        assert os.path.lexists(root / p), p
    for p in images.MULTILAYER_EXPECT["absent"]:
        assert not os.path.lexists(root / p), p
    assert (root / "etc/motd").read_bytes() == images.MULTILAYER_EXPECT["motd"]
    assert sorted(os.listdir(root / "opaque")) == ["new.txt"]
    st = os.stat(root / "usr/bin/suid")
    assert stat.S_IMODE(st.st_mode) == 0o4755
    owned = os.stat(root / "owned")
    assert (owned.st_uid, owned.st_gid, stat.S_IMODE(owned.st_mode)) == (1234, 5678, 0o640)
    dev = os.stat(root / "dev/null-ish")
    assert stat.S_ISCHR(dev.st_mode) and os.major(dev.st_rdev) == 1 and os.minor(dev.st_rdev) == 3
    assert stat.S_ISBLK(os.stat(root / "dev/blk").st_mode)
    assert stat.S_ISFIFO(os.stat(root / "fifo").st_mode)
    assert os.getxattr(root / "xattr-file", "user.pallet") == b"yes"
    assert os.readlink(root / "rel-link") == "data/keep.txt"
    src, dst = os.stat(root / "data/linked-src"), os.stat(root / "data/linked-dst")
    assert src.st_ino == dst.st_ino
    assert os.stat(root / "bin/busybox").st_mtime == 1704067200
    assert os.readlink(root / "bin/sh") == "/bin/busybox"


def test_rootfs_is_writable_and_image_snapshots_stay_untouched(rootfs_of, layouts):
    root = rootfs_of(layouts["busybox-oci"])
    (root / "etc/passwd").write_text("changed\n")
    second = rootfs_of(layouts["busybox-oci"])
    assert (second / "etc/passwd").read_text().startswith("root:")


@pytest.fixture
def target():
    shutil.rmtree(TARGET, ignore_errors=True)
    TARGET.mkdir()
    (TARGET / "victim").write_text("original")
    yield TARGET
    shutil.rmtree(TARGET, ignore_errors=True)


@pytest.mark.parametrize("case", sorted(images.HOSTILE_CASES))
def test_hostile_layer_is_refused_or_neutralised(case, tmp_path, driver, target):
    entries, expect = images.HOSTILE_CASES[case]
    layout = images.write_image_layout(
        tmp_path / "layout", [images.busybox_layer(), images.make_tar(entries)], {},
    ) and tmp_path / "layout"
    store = make_store(tmp_path / "root", driver=driver)
    if expect == "refused":
        with pytest.raises(UnsafeLayer) as e:
            store.import_layout(layout, name="hostile:1")
        assert isinstance(e.value, InvalidArgument) and "\n" not in str(e.value)
        assert not [p for p in store.snapshots.root.iterdir() if p.name.startswith(".tmp-")]
    else:
        store.import_layout(layout, name="hostile:1")
        cdir = tmp_path / "c"
        root = store.prepare_rootfs("hostile:1", cdir)
        try:
            _check_neutralised(case, root)
        finally:
            store.release_rootfs(cdir)
    # Whatever the layer did, the host outside the snapshot is untouched.
    assert sorted(os.listdir(target)) == ["victim"]
    assert (target / "victim").read_text() == "original"
    assert not Path("/escaped").exists() and not Path("/abs-escaped").exists()
    assert not (tmp_path / "escaped").exists()


def _check_neutralised(case: str, root: Path) -> None:
    if case == "absolute":
        assert (root / "abs-escaped").read_bytes() == b"x"
    elif case in ("symlink-out-then-write", "symlink-dotdot-then-write"):
        # The write followed the symlink *inside* the rootfs.
        assert (root / "tmp/pallet-hostile-target/pwned").read_bytes() == b"x"
    elif case == "file-over-symlink":
        assert not os.path.islink(root / "link")
        assert (root / "link").read_bytes() == b"overwritten"
    elif case == "opaque-xattr-forged":
        assert (root / "forged").is_dir()
        with pytest.raises(OSError):
            os.getxattr(root / "forged", "trusted.overlay.opaque", follow_symlinks=False)
