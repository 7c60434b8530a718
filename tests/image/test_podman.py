"""Interop with podman, both ways: an image pulled by pallet and `pallet save`d loads and runs in
podman; an image `podman save`d loads and runs in pallet.

podman runs with private storage (--root/--runroot/--tmpdir, vfs: no mounts to leak), cgroupfs
and runc (Debian's crun refuses this host's hybrid cgroups), and with its ulimits given because
this sandbox lacks CAP_SYS_RESOURCE to raise them to podman's defaults.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.conftest import make_store, needs_root

pytestmark = [pytest.mark.root, needs_root,
              pytest.mark.skipif(shutil.which("podman") is None, reason="podman not installed")]

PALLET = os.path.join(os.path.dirname(sys.executable), "pallet")
RUN_FLAGS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "none"]


def _mounts_under(*prefixes: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [m for line in f if (m := line.split()[4]).startswith(prefixes)]


class Podman:
    def __init__(self, base: Path):
        self.root = base / "storage"
        # Short and on tmpfs, like podman's own default: conmon's sockets live here.
        self.runroot = f"/run/pallet-podman-{uuid.uuid4().hex[:8]}"
        self.argv = ["podman", "--root", str(self.root), "--runroot", self.runroot,
                     "--tmpdir", f"{self.runroot}/libpod", "--storage-driver", "vfs",
                     "--cgroup-manager", "cgroupfs", "--runtime", "runc", "--events-backend", "file"]

    def __call__(self, *args: str) -> str:
        out = subprocess.run(self.argv + list(args), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"podman {' '.join(args)}: {out.stderr}"
        return out.stdout

    def cleanup(self) -> None:
        subprocess.run(self.argv + ["rm", "-af"], capture_output=True, timeout=60)
        subprocess.run(self.argv + ["rmi", "-af"], capture_output=True, timeout=60)
        for m in reversed(_mounts_under(str(self.root), self.runroot)):
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)


@pytest.fixture
def podman(tmp_path) -> Iterator[Podman]:
    p = Podman(tmp_path)
    yield p
    p.cleanup()
    assert _mounts_under(str(p.root), p.runroot) == []


@pytest.fixture
def pallet_cli(tmp_path) -> Iterator:
    root = str(tmp_path / "pallet-root")
    run_root = f"/run/pallet-t-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, PALLET_RUNROOT=run_root)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PALLET, "--root", root, *args], capture_output=True, text=True,
                              timeout=120, env=env, stdin=subprocess.DEVNULL)

    run.root = root  # type: ignore[attr-defined]
    yield run
    ids = run("ps", "-aq", "--no-trunc").stdout.split()
    if ids:
        run("rm", "-f", *ids)
    shutil.rmtree(run_root, ignore_errors=True)
    assert _mounts_under(root, run_root) == []


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_image_pulled_and_saved_by_pallet_loads_and_runs_in_podman(tmp_path, pushed, podman, fmt):
    store = make_store(tmp_path / "root")
    image = store.pull(pushed["busybox-oci"])
    tar = tmp_path / "saved.tar"
    store.save([pushed["busybox-oci"]], tar, format=fmt)
    loaded = podman("load", "-q", "-i", str(tar))
    assert "Loaded image" in loaded
    # podman's image id is the config digest, the same as pallet's.
    assert image.id.removeprefix("sha256:") in podman("images", "-q", "--no-trunc")
    ref = image.id.removeprefix("sha256:")
    assert podman("run", "--rm", *RUN_FLAGS, ref, "echo", "ok") == "ok\n"
    assert podman("ps", "-aq") == ""


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_image_saved_by_podman_loads_and_runs_in_pallet(tmp_path, registry, pushed, podman, pallet_cli, fmt):
    ref = pushed["busybox-oci"]
    podman("pull", "-q", "--tls-verify=false", ref)
    tar = tmp_path / "podman.tar"
    podman("save", "-q", "--format", fmt, "-o", str(tar), ref)
    out = pallet_cli("load", "-i", str(tar))
    assert out.returncode == 0, out.stderr
    assert "Loaded image" in out.stdout
    name = out.stdout.split("Loaded image:", 1)[1].split()[0]
    run = pallet_cli("run", "--rm", "--network", "none", name, "echo", "ok")
    assert (run.returncode, run.stdout) == (0, "ok\n"), run.stderr
    assert pallet_cli("ps", "-aq").stdout == ""
