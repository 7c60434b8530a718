"""Regression tests for the container-escape classes named in issue 2.

Each builds the hostile situation for real and checks the host from outside.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.fixtures.bundle import edit_config

pytestmark = pytest.mark.root


def _host_mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if line.split()[4].startswith(path)]


def test_symlinked_mount_destination_stays_in_rootfs(runc_cli, bundle, cid, tmp_path):
    """A destination that is a symlink out of the rootfs is resolved inside it."""
    outside = tmp_path / "host-target"
    outside.mkdir()
    (outside / "precious").write_text("host data")
    b = bundle(["sh", "-c", "touch /escape/written; ls /escape"])
    # Both an absolute link and a ../ climb must land inside the rootfs.
    os.symlink(str(outside), os.path.join(b, "rootfs", "escape"))
    os.symlink("../../../../../../../" + str(outside), os.path.join(b, "rootfs", "escape2"))
    edit_config(b, lambda s: s["mounts"].extend([
        {"destination": "/escape", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/escape2", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}]))
    out = runc_cli("run", "--bundle", b, cid)
    assert out.returncode == 0, out.stderr
    assert "written" in out.stdout and "precious" not in out.stdout
    assert sorted(os.listdir(outside)) == ["precious"]
    assert not _host_mounts_under(str(outside))


def test_symlink_exchange_race_cve_2021_30465(runc_cli, bundle, cid, tmp_path):
    """A racer swapping the destination between a dir and a symlink never mounts on the host."""
    outside = tmp_path / "race-target"
    outside.mkdir()
    b = bundle(["true"])
    rootfs = os.path.join(b, "rootfs")
    edit_config(b, lambda s: s["mounts"].append(
        {"destination": "/race", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}))
    stop = threading.Event()

    def racer() -> None:
        race, tmp_link, tmp_dir = (os.path.join(rootfs, n) for n in ("race", "rl", "rd"))
        while not stop.is_set():
            try:
                os.symlink(str(outside), tmp_link)
                os.rename(tmp_link, race)       # race -> symlink out of the rootfs
                os.mkdir(tmp_dir)
                os.rename(tmp_dir, race) if not os.path.islink(race) else (
                    os.unlink(race), os.rename(tmp_dir, race))
            except OSError:
                for p in (tmp_link, tmp_dir):
                    try:
                        os.unlink(p) if os.path.islink(p) else os.rmdir(p)
                    except OSError:
                        pass

    t = threading.Thread(target=racer, daemon=True)
    t.start()
    try:
        for i in range(15):
            runc_cli("run", "--bundle", b, f"{cid}-{i}")
            assert not _host_mounts_under(str(outside)), f"mounted on the host in round {i}"
            assert os.listdir(outside) == []
    finally:
        stop.set()
        t.join()


def test_runtime_binary_unreachable_from_container_cve_2019_5736(runc_cli, bundle, cid):
    """While pallet-runc execs into the container, the container cannot reach its binary."""
    python = os.path.realpath(sys.executable)
    before = hashlib.sha256(open(python, "rb").read()).hexdigest()
    watcher = ("while :; do for p in /proc/[0-9]*; do "
               "l=$(readlink $p/exe 2>/dev/null) && case $l in *busybox*) ;; "
               "*) echo SEEN $l >> /tmp/seen; (echo x >> $p/exe) 2>/dev/null "
               "&& echo WROTE >> /tmp/seen;; esac; done; done")
    b = bundle(["sh", "-c", watcher])
    assert runc_cli("run", "-d", "--bundle", b, cid).returncode == 0
    for _ in range(15):
        runc_cli("exec", cid, "true")
    time.sleep(0.2)
    seen = os.path.join(b, "rootfs", "tmp", "seen")
    text = open(seen).read() if os.path.exists(seen) else ""
    runc_cli("delete", "--force", cid)
    assert "WROTE" not in text
    assert "python" not in text, f"the runtime's interpreter was visible: {text[:200]}"
    assert hashlib.sha256(open(python, "rb").read()).hexdigest() == before


def test_no_host_fd_leaks_into_container_cve_2024_21626(runtime_root, bundle, cid, tmp_path):
    """An fd the caller leaked (here: 7, a host dir) is not in the container, even as cwd."""
    from tests.conftest import pallet_runc

    secret = tmp_path / "hostdir"
    secret.mkdir()
    (secret / "host-secret").write_text("s")
    b = bundle(["sleep", "30"])
    cmd = " ".join(pallet_runc(runtime_root, "run", "-d", "--bundle", b, cid))
    out = subprocess.run(["sh", "-c", f"exec 7<{secret}; exec {cmd} >/dev/null 2>&1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    state = subprocess.run(pallet_runc(runtime_root, "state", cid), capture_output=True,
                           text=True)
    pid = json.loads(state.stdout)["pid"]
    # Looked at from the host, so nothing the check itself opens is counted.
    assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2]
    subprocess.run(pallet_runc(runtime_root, "delete", "--force", cid), capture_output=True)
    # The CVE's exploit: a cwd through the leaked fd. It must fail, not land on the host.
    b2 = bundle(["sh", "-c", "ls"])
    edit_config(b2, lambda s: s["process"].update(cwd="/proc/self/fd/7"))
    cmd = " ".join(pallet_runc(runtime_root, "run", "--bundle", b2, cid + "x"))
    out = subprocess.run(["sh", "-c", f"exec 7<{secret}; exec {cmd}"], capture_output=True,
                         text=True, timeout=30)
    assert "host-secret" not in out.stdout
    assert out.returncode != 0


def test_default_masks_hide_host_kernel_interfaces(runc_cli, bundle, cid):
    b = bundle(["sh", "-c", "for p in /proc/keys /proc/timer_list /proc/latency_stats "
                            "/proc/kcore /proc/sched_debug; do [ -e $p ] && wc -c < $p; done; "
                            "ls /sys/firmware | wc -l; echo 1 > /proc/sysrq-trigger; "
                            "echo x > /proc/sys/kernel/hostname; echo done"])
    out = runc_cli("run", "--bundle", b, cid)
    lines = out.stdout.split()
    assert lines[-1] == "done"
    assert all(n == "0" for n in lines[:-1]), out.stdout
    assert "Read-only file system" in out.stderr
