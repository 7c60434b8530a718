"""A container's overlay says redirect_dir=off,metacopy=off where the kernel knows them, so
diff/commit can read its changes from the upper dir alone; a kernel that refuses them
still mounts the container."""

from __future__ import annotations

import errno

import pytest

from pallet.errors import SystemFailure
from pallet.image import snapshot


def test_only_the_options_the_kernel_has_parameters_for_are_asked(tmp_path):
    assert snapshot.overlay_upper_options(str(tmp_path)) == []  # an old kernel: neither
    (tmp_path / "redirect_dir").write_text("N\n")
    assert snapshot.overlay_upper_options(str(tmp_path)) == ["redirect_dir=off"]
    (tmp_path / "metacopy").write_text("N\n")
    assert snapshot.overlay_upper_options(str(tmp_path)) == ["redirect_dir=off", "metacopy=off"]


@pytest.fixture
def mounts(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(snapshot, "overlay_upper_options",
                        lambda: ["redirect_dir=off", "metacopy=off"])

    def fake_mount(source, target, fstype, data, flags=0):
        calls.append(data)
        if "metacopy" in data and refuse:
            raise OSError(errno.EINVAL, "mount overlay: Invalid argument")

    refuse = False
    monkeypatch.setattr(snapshot, "mount", fake_mount)

    def set_refuse(value: bool) -> list[str]:
        nonlocal refuse
        refuse = value
        return calls

    return set_refuse


def test_a_writable_overlay_gets_the_options(mounts):
    calls = mounts(False)
    snapshot.mount_overlay("/x", ["lowerdir=/l", "upperdir=/u", "workdir=/w"], writable=True)
    assert calls == ["lowerdir=/l,upperdir=/u,workdir=/w,redirect_dir=off,metacopy=off"]


def test_a_read_only_view_does_not(mounts):
    calls = mounts(False)
    snapshot.mount_overlay("/x", ["lowerdir=/a:/b"], writable=False)
    assert calls == ["lowerdir=/a:/b"]


def test_a_kernel_that_refuses_them_gets_its_defaults(mounts):
    calls = mounts(True)
    snapshot.mount_overlay("/x", ["lowerdir=/l", "upperdir=/u", "workdir=/w"], writable=True)
    assert calls == ["lowerdir=/l,upperdir=/u,workdir=/w,redirect_dir=off,metacopy=off",
                     "lowerdir=/l,upperdir=/u,workdir=/w"]


def test_too_many_layers_is_said_before_the_kernel_is_asked(mounts):
    calls = mounts(False)
    lowers = ":".join(f"/store/snapshots/{i:064d}/fs" for i in range(60))
    with pytest.raises(SystemFailure, match="too many layers for one overlay mount \\(60\\)"):
        snapshot.mount_overlay("/x", [f"lowerdir={lowers}", "upperdir=/u", "workdir=/w"],
                               writable=True)
    assert calls == []
