"""Real container engines using pallet-runc as their OCI runtime: podman and containerd.

Each engine gets private storage and state dirs; the busybox image is loaded from a
docker-archive built by the fixtures (no registry, no internet).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.root

PALLET_RUNC = os.path.join(os.path.dirname(sys.executable), "pallet-runc")
# podman's default rlimits ask for more than this sandbox's hard limits (no
# CAP_SYS_RESOURCE); runc fails the same way, so the tests pass modest ones.
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


@pytest.fixture(scope="module")
def busybox_archive(tmp_path_factory) -> str:
    from tests.fixtures.images import busybox_docker_archive

    path = tmp_path_factory.mktemp("archive") / "busybox.tar"
    busybox_docker_archive(path)
    return str(path)


@pytest.fixture(scope="module")
def podman(tmp_path_factory, busybox_archive):
    if not shutil.which("podman"):
        pytest.skip("podman is not installed (scripts/setup.sh installs it)")
    base = tmp_path_factory.mktemp("podman")
    cmd = ["podman", "--root", str(base / "root"), "--runroot", str(base / "run"),
           "--cgroup-manager", "cgroupfs", "--events-backend", "file",
           "--storage-driver", "overlay", "--runtime", PALLET_RUNC]
    out = subprocess.run(cmd + ["load", "-i", busybox_archive], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    yield cmd
    subprocess.run(cmd + ["rm", "-a", "-f"], capture_output=True)
    subprocess.run(cmd + ["system", "reset", "-f"], capture_output=True)


def test_podman_run_rm(podman):
    out = subprocess.run(podman + ["run", "--rm", *ULIMITS, "--network", "none",
                                   "docker.io/library/busybox:latest", "sh", "-c",
                                   "echo hi from podman; exit 5"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout == "hi from podman\n", out.stderr
    assert out.returncode == 5


def test_podman_tty_uses_console_socket(podman):
    out = subprocess.run(podman + ["run", "--rm", "-t", *ULIMITS, "--network", "none",
                                   "docker.io/library/busybox:latest", "tty"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.stdout.strip() == "/dev/pts/0", out.stderr


def test_podman_exec_stop_rm(podman):
    name = f"pallet-podman-{os.getpid()}"
    out = subprocess.run(podman + ["run", "-d", "--name", name, *ULIMITS, "--network", "none",
                                   "docker.io/library/busybox:latest", "sleep", "60"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    try:
        ex = subprocess.run(podman + ["exec", name, "sh", "-c", "echo exec-ok; exit 3"],
                            capture_output=True, text=True, timeout=60)
        assert ex.stdout == "exec-ok\n" and ex.returncode == 3, ex.stderr
        ps = subprocess.run(podman + ["ps", "--format", "{{.Names}} {{.Status}}"],
                            capture_output=True, text=True)
        assert f"{name} Up" in ps.stdout
        assert subprocess.run(podman + ["stop", "-t", "1", name],
                              capture_output=True).returncode == 0
    finally:
        subprocess.run(podman + ["rm", "-f", name], capture_output=True)


@pytest.fixture(scope="module")
def containerd(tmp_path_factory, busybox_archive):
    if not shutil.which("containerd"):
        pytest.skip("containerd is not installed (scripts/setup.sh installs it)")
    base = tmp_path_factory.mktemp("containerd")
    sock = base / "containerd.sock"
    (base / "config.toml").write_text(f"""version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{base}/ttrpc.sock"
""")
    log = open(base / "log", "w")
    proc = subprocess.Popen(["containerd", "--config", str(base / "config.toml")], stdout=log,
                            stderr=log)
    ctr = ["ctr", "--address", str(sock), "-n", "pallet-test"]
    deadline = time.monotonic() + 20
    while subprocess.run(ctr + ["version"], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "containerd did not start"
        time.sleep(0.1)
    out = subprocess.run(ctr + ["images", "import", busybox_archive], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    yield ctr
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    log.close()
    subprocess.run(["pkill", "-f", f"containerd-shim.*{base}"], capture_output=True)


def test_containerd_runc_shim_with_pallet_runc(containerd):
    out = subprocess.run(containerd + ["run", "--rm", "--runc-binary", PALLET_RUNC,
                                       "docker.io/library/busybox:latest", "pallet-ctr-1",
                                       "sh", "-c", "echo hi from containerd; exit 4"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout == "hi from containerd\n", out.stderr
    assert out.returncode == 4


def test_containerd_exec_and_kill(containerd):
    name = "pallet-ctr-2"
    out = subprocess.run(containerd + ["run", "-d", "--runc-binary", PALLET_RUNC,
                                       "docker.io/library/busybox:latest", name, "sleep", "60"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    try:
        ex = subprocess.run(containerd + ["task", "exec", "--exec-id", "e1", name, "sh", "-c",
                                          "echo exec-ok"], capture_output=True, text=True,
                            timeout=60)
        assert ex.stdout == "exec-ok\n", ex.stderr
        ls = subprocess.run(containerd + ["task", "ls"], capture_output=True, text=True)
        assert name in ls.stdout and "RUNNING" in ls.stdout
    finally:
        subprocess.run(containerd + ["task", "kill", "-s", "KILL", name], capture_output=True)
        time.sleep(0.5)
        subprocess.run(containerd + ["task", "rm", "-f", name], capture_output=True)
        subprocess.run(containerd + ["container", "rm", name], capture_output=True)
