"""bin/pallet-runc's sh fast paths for `start` and `delete`, and where they hand over.

sh takes `start` of a created container and `delete` of a stopped one when create left a
`fastpath` file; anything else goes to Python. These tests run the real launcher against
real containers. To prove a command was done by sh alone, the launcher is also run from a
copy with no Python beside it and none on PATH: a fall-through would fail with
"python3: not found".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.fixtures.bundle import edit_config

pytestmark = pytest.mark.root

LAUNCHER = os.path.join(os.path.dirname(sys.executable), "pallet-runc")


@pytest.fixture
def sh_only(tmp_path, runtime_root):
    """pallet-runc as sh alone: the launcher copied where no python3 can be found."""
    exe = tmp_path / "sh-only" / "pallet-runc"
    exe.parent.mkdir()
    shutil.copy(LAUNCHER, exe)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(exe), "--root", runtime_root, *args], capture_output=True,
                              text=True, env={"PATH": "/nonexistent"}, timeout=30)

    return run


def status(runc_cli, cid: str) -> str:
    out = runc_cli("state", cid)
    return json.loads(out.stdout)["status"] if out.returncode == 0 else "gone"


def wait_status(runc_cli, cid: str, want: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while (st := status(runc_cli, cid)) != want and time.monotonic() < deadline:
        time.sleep(0.02)
    return st


def test_create_writes_what_the_fast_paths_need(runc_cli, bundle, cid, runtime_root):
    assert runc_cli("create", "--bundle", bundle(["true"]), cid).returncode == 0
    d = os.path.join(runtime_root, cid)
    first, *cgroups = open(os.path.join(d, "fastpath")).read().splitlines()
    pid, start_time = first.split()
    st = json.load(open(os.path.join(d, "state.json")))
    assert (int(pid), int(start_time)) == (st["pid"], st["pid_start"])
    assert cgroups == sorted(set(st["cgroup_paths"].values())) and cgroups
    assert all(os.path.isdir(c) for c in cgroups)
    assert os.path.exists(os.path.join(d, "exec.fifo"))


def test_sh_alone_starts_and_deletes_a_container(sh_only, runc_cli, bundle, cid, tmp_path,
                                                 host_clean):
    b = bundle(["sh", "-c", "echo ran > /tmp/marker"])
    assert runc_cli("create", "--bundle", b, cid).returncode == 0
    assert status(runc_cli, cid) == "created"
    out = sh_only("start", cid)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    assert wait_status(runc_cli, cid, "stopped") == "stopped"
    assert open(os.path.join(b, "rootfs", "tmp", "marker")).read() == "ran\n"
    out = sh_only("delete", cid)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    assert runc_cli("list", "-q").stdout == ""
    host_clean(cid)


def test_state_says_running_as_soon_as_start_returns(runc_cli, bundle, cid):
    assert runc_cli("create", "--bundle", bundle(["sleep", "60"]), cid).returncode == 0
    assert runc_cli("start", cid).returncode == 0
    assert status(runc_cli, cid) == "running"
    assert runc_cli("delete", "--force", cid).returncode == 0


def test_global_flags_in_both_spellings(sh_only, runc_cli, bundle, cid, runtime_root):
    assert runc_cli("create", "--bundle", bundle(["true"]), cid).returncode == 0
    out = subprocess.run([LAUNCHER, f"--root={runtime_root}", "--log", "/dev/null",
                          "--log-format=json", "--systemd-cgroup", "start", cid],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert wait_status(runc_cli, cid, "stopped") == "stopped"
    out = sh_only("delete", "--force", cid)
    assert out.returncode == 0, out.stderr
    assert runc_cli("state", cid).returncode == 1


def test_a_second_start_is_refused(runc_cli, bundle, cid):
    assert runc_cli("create", "--bundle", bundle(["sleep", "60"]), cid).returncode == 0
    assert runc_cli("start", cid).returncode == 0
    out = runc_cli("start", cid)
    assert out.returncode == 1
    assert "cannot start an already running container" in out.stderr
    assert runc_cli("delete", "--force", cid).returncode == 0


def test_racing_starts_release_the_init_once(runc_cli, bundle, cid, runtime_root):
    assert runc_cli("create", "--bundle", bundle(["sleep", "60"]), cid).returncode == 0
    from tests.conftest import pallet_runc

    procs = [subprocess.Popen(pallet_runc(runtime_root, "start", cid), stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    results = [(p.wait(timeout=30), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 1, 1, 1], results
    assert all("already running" in err for code, err in results if code)
    assert status(runc_cli, cid) == "running"
    assert runc_cli("delete", "--force", cid).returncode == 0


def test_start_of_a_dead_init_falls_to_python_and_fails(runc_cli, bundle, cid, host_clean):
    assert runc_cli("create", "--bundle", bundle(["true"]), cid).returncode == 0
    assert runc_cli("kill", cid, "KILL").returncode == 0
    assert wait_status(runc_cli, cid, "stopped") == "stopped"
    out = runc_cli("start", cid)
    assert out.returncode == 1
    assert "cannot start a container that has stopped" in out.stderr
    assert runc_cli("delete", cid).returncode == 0
    host_clean(cid)


def test_delete_of_a_running_container_falls_to_python(sh_only, runc_cli, bundle, cid):
    assert runc_cli("run", "-d", "--bundle", bundle(["sleep", "60"]), cid).returncode == 0
    assert "python3" in sh_only("delete", cid).stderr  # sh did not take it
    out = runc_cli("delete", cid)
    assert out.returncode == 1 and "cannot delete container" in out.stderr
    assert status(runc_cli, cid) == "running"
    assert runc_cli("delete", "--force", cid).returncode == 0


def test_delete_with_processes_left_in_the_cgroup(runc_cli, bundle, cid, host_clean):
    # No pid namespace: the init exits and leaves a daemon in the container's cgroup. rmdir
    # fails there, and Python's delete kills what is left and removes the cgroup.
    b = bundle(["sh", "-c", "sleep 60 </dev/null >/dev/null 2>&1 & exit 0"])
    edit_config(b, lambda c: c["linux"].__setitem__(
        "namespaces", [n for n in c["linux"]["namespaces"] if n["type"] != "pid"]))
    assert runc_cli("run", "-d", "--bundle", b, cid).returncode == 0
    assert wait_status(runc_cli, cid, "stopped") == "stopped"
    out = runc_cli("delete", cid)
    assert out.returncode == 0, out.stderr
    assert runc_cli("state", cid).returncode == 1
    host_clean(cid)


def test_hooks_keep_start_and_delete_in_python(runc_cli, bundle, cid, tmp_path, runtime_root):
    log = tmp_path / "hooks.log"
    b = bundle(["true"])

    def hook(phase: str) -> dict:
        return {"path": "/bin/sh", "args": ["sh", "-c", f"echo {phase} >> {log}"]}

    edit_config(b, lambda c: c.__setitem__("hooks", {p: [hook(p)] for p in
                                                     ("poststart", "poststop")}))
    assert runc_cli("create", "--bundle", b, cid).returncode == 0
    assert not os.path.exists(os.path.join(runtime_root, cid, "fastpath"))
    assert runc_cli("start", cid).returncode == 0
    assert wait_status(runc_cli, cid, "stopped") == "stopped"
    assert runc_cli("delete", cid).returncode == 0
    assert log.read_text().split() == ["poststart", "poststop"]


@pytest.mark.parametrize("bad", ["../x", "a/b", ".", "-x"])
def test_bad_ids_get_pythons_message(runc_cli, bad):
    out = runc_cli("start", bad)
    assert out.returncode != 0
    assert out.stderr.strip(), "no message"
