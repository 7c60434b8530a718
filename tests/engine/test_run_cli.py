"""`pallet run` and friends through the real CLI, the real kernel and the busybox
image: the README demo, exit codes, logs, detach, exec, stop, restart, bad input.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from tests.engine.conftest import leftovers

pytestmark = pytest.mark.root


def test_readme_demo_prints_hello_and_leaves_nothing(pallet):
    out = pallet("run", "--rm", "busybox", "echo", "hello")
    assert (out.returncode, out.stdout) == (0, "hello\n"), out.stderr
    assert pallet("ps", "-aq").stdout == ""
    assert leftovers(pallet) == []


def test_exit_code_and_streams_are_the_containers(pallet):
    out = pallet("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert out.returncode == 3
    assert out.stdout == "out\n"
    assert out.stderr == "err\n"


def test_command_not_found_is_127_with_dockers_message(pallet):
    out = pallet("run", "--rm", "busybox", "no-such-command")
    assert out.returncode == 127
    assert 'exec: "no-such-command": executable file not found in $PATH' in out.stderr
    assert pallet("ps", "-aq").stdout == ""
    assert leftovers(pallet) == []


def test_command_not_executable_is_126(pallet):
    out = pallet("run", "--rm", "busybox", "/etc/passwd")
    assert out.returncode == 126, out.stderr


def test_unknown_image_is_125(pallet):
    out = pallet("run", "--rm", "--pull", "never", "no-such-image", "true")
    assert out.returncode == 125
    assert "no-such-image" in out.stderr and out.stderr.startswith("Error:")


@pytest.mark.parametrize("flags, message", [
    (["--memory", "lots"], "invalid size"),
    (["--memory", "1k"], "minimum memory limit"),
    (["--cpus", "many"], "--cpus"),
    (["--restart", "sometimes"], "invalid restart policy"),
    (["--pids-limit", "x"], "--pids-limit"),
    (["--network", "nowhere-net"], "nowhere-net"),
    (["--runtime", "no-such-runtime"], "unknown or invalid runtime"),
    (["--cap-add", "NOT_A_CAP"], "unknown capability"),
    (["-v", "relative:/x:zz"], "invalid volume specification"),
    (["--pull", "sometimes"], "invalid pull option"),
])
def test_bad_flag_values_are_125_and_create_nothing(pallet, flags, message):
    out = pallet("run", "--rm", *flags, "busybox", "true")
    assert out.returncode == 125, out.stderr
    assert message in out.stderr
    assert pallet("ps", "-aq").stdout == ""
    assert leftovers(pallet) == []


def test_name_conflict(pallet):
    pallet("create", "--name", "web", "busybox", "true", check=True)
    out = pallet("run", "--name", "web", "busybox", "true")
    assert out.returncode == 125
    assert 'Conflict. The container name "/web" is already in use' in out.stderr
    assert len(pallet("ps", "-aq").stdout.split()) == 1


def test_missing_bind_mount_source(pallet, tmp_path):
    out = pallet("run", "--rm", "-v", f"{tmp_path}/nope:/data", "busybox", "true")
    assert out.returncode == 125
    assert f"bind source path does not exist: {tmp_path}/nope" in out.stderr


def test_container_that_exits_at_once_detached(pallet):
    cid = pallet("run", "-d", "busybox", "true", check=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    assert pallet("wait", cid).stdout.strip() == "0"
    ps = pallet("ps", "-a", "--format", "json").stdout.splitlines()
    row = json.loads(ps[0])
    assert row["State"] == "exited" and row["Status"].startswith("Exited (0)")
    assert pallet("ps", "-q").stdout == ""
    # Exited containers keep no rootfs mount (as docker); rm leaves nothing.
    assert leftovers(pallet) == []
    pallet("rm", cid, check=True)
    assert leftovers(pallet, [cid]) == []


def test_detached_lifecycle_logs_exec_stop_rm(pallet):
    cid = pallet("run", "-d", "--name", "svc", "busybox", "sh", "-c",
                 "echo started; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done",
                 check=True).stdout.strip()
    deadline = time.time() + 10
    while "started" not in pallet("logs", "svc").stdout and time.time() < deadline:
        time.sleep(0.05)
    assert pallet("logs", "svc").stdout == "started\n"
    assert "Up " in pallet("ps").stdout
    ex = pallet("exec", "svc", "sh", "-c", "echo in-$HOSTNAME; exit 4")
    assert ex.returncode == 4 and ex.stdout == f"in-{cid[:12]}\n"
    assert pallet("exec", "svc", "nope").returncode == 126
    top = pallet("top", "svc").stdout
    assert "PID" in top and "sleep" in top or "sh -c" in top
    # The raw log is in the CRI format.
    with open(pallet.engine().get(cid).log_path) as f:
        first = f.readline()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z stdout F started\n", first)
    t0 = time.time()
    assert pallet("stop", "svc").returncode == 0
    assert time.time() - t0 < 5  # the trap answered SIGTERM; no 10 s timeout
    assert pallet("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                  "svc").stdout.strip() == "exited 0"
    assert "bye" in pallet("logs", "--tail", "1", "svc").stdout
    pallet("rm", "svc", check=True)
    assert leftovers(pallet, [cid]) == []


def test_stop_kills_after_timeout(pallet):
    pallet("run", "-d", "--name", "stubborn", "busybox", "sh", "-c",
           "trap '' TERM; while :; do sleep 0.1; done", check=True)
    t0 = time.time()
    pallet("stop", "-t", "1", "stubborn", check=True)
    assert 1 <= time.time() - t0 < 8
    assert pallet("inspect", "-f", "{{.State.ExitCode}}", "stubborn").stdout.strip() == "137"


def test_rm_of_running_needs_force(pallet):
    cid = pallet("run", "-d", "busybox", "sleep", "30", check=True).stdout.strip()
    out = pallet("rm", cid)
    assert out.returncode == 1 and "stop the container before removing" in out.stderr
    pallet("rm", "-f", cid, check=True)
    assert leftovers(pallet, [cid]) == []


def test_restart_on_failure_is_honoured(pallet):
    cid = pallet("run", "-d", "--restart", "on-failure:2", "busybox", "sh", "-c",
                 "echo run; exit 1", check=True).stdout.strip()
    deadline = time.time() + 20
    while time.time() < deadline:
        info = json.loads(pallet("inspect", cid).stdout)[0]
        if info["State"]["Status"] == "exited":
            break
        time.sleep(0.1)
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 1
    assert info["RestartCount"] == 2
    assert pallet("logs", cid).stdout == "run\nrun\nrun\n"


def test_container_outlives_the_cli_and_its_monitor_is_not_the_clis_child(pallet):
    cid = pallet("run", "-d", "busybox", "sleep", "30", check=True).stdout.strip()
    eng = pallet.engine()
    from pallet.engine.monitor import alive

    mon = alive(eng.run_dir(cid))
    assert mon
    with open(f"/proc/{mon}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    assert ppid != os.getpid()
    rec = eng.get(cid)
    with open(f"/proc/{rec.pid}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == mon  # the monitor is its parent
    pallet("rm", "-f", cid, check=True)


def test_volumes_named_populated_from_image_and_bind_readonly(pallet, tmp_path):
    host = tmp_path / "h"
    host.mkdir()
    (host / "f").write_text("from host")
    out = pallet("run", "--rm", "-v", "etcvol:/etc", "-v", f"{host}:/h:ro", "busybox", "sh",
                 "-c", "cat /etc/group >/dev/null && cat /h/f && touch /h/x")
    assert out.stdout == "from host"
    assert "Read-only file system" in out.stderr
    assert "etcvol" in pallet("volume", "ls", "-q").stdout
    assert pallet("volume", "rm", "etcvol").returncode == 0
    out = pallet("run", "--rm", "--tmpfs", "/scratch", "busybox", "sh", "-c",
                 "grep -c ' /scratch tmpfs' /proc/mounts")
    assert out.stdout.strip() == "1"


def test_read_only_user_workdir_env_hostname(pallet, tmp_path):
    envf = tmp_path / "env"
    envf.write_text("# comment\nFROMFILE=yes\n")
    out = pallet("run", "--rm", "--read-only", "-u", "nobody", "-w", "/tmp", "-e", "A=1",
                 "--env-file", str(envf), "--hostname", "box", "busybox", "sh", "-c",
                 "id -u; pwd; echo $A$FROMFILE; hostname; cat /etc/hostname; touch /x")
    assert out.stdout.splitlines() == ["65534", "/tmp", "1yes", "box", "box"]
    assert "Read-only file system" in out.stderr


def test_cp_both_ways_confined_to_the_root(pallet, tmp_path):
    cid = pallet("create", "busybox", "true", check=True).stdout.strip()
    src = tmp_path / "in.txt"
    src.write_text("payload")
    pallet("cp", str(src), f"{cid}:/tmp/in.txt", check=True)
    pallet("cp", f"{cid}:/tmp/in.txt", str(tmp_path / "back.txt"), check=True)
    assert (tmp_path / "back.txt").read_text() == "payload"
    # A symlink in the container pointing at the host's /etc stays inside the root.
    eng = pallet.engine()
    with eng.rootfs(cid) as root:
        os.symlink("/etc/../../../../etc", os.path.join(root, "escape"))
    out = pallet("cp", f"{cid}:/escape/passwd", str(tmp_path / "pw"))
    assert out.returncode == 0
    assert "nobody:x:65534" in (tmp_path / "pw").read_text()  # the image's, not the host's
    assert "daemon" not in (tmp_path / "pw").read_text()
    pallet("rm", cid, check=True)
    assert leftovers(pallet, [cid]) == []


def test_pause_unpause_rename_port_inspect(pallet):
    cid = pallet("run", "-d", "--name", "a1", "-l", "tier=web", "busybox", "sleep", "30",
                 check=True).stdout.strip()
    pallet("pause", "a1", check=True)
    assert "(Paused)" in pallet("ps").stdout
    pallet("unpause", "a1", check=True)
    pallet("rename", "a1", "b2", check=True)
    assert pallet("ps", "--filter", "label=tier=web", "--format", "{{.Names}}").stdout == "b2\n"
    assert pallet("ps", "--filter", "label=tier=db", "-q").stdout == ""
    info = json.loads(pallet("inspect", "b2").stdout)[0]
    assert info["Id"] == cid and info["Name"] == "/b2" and info["State"]["Running"]
    assert info["Config"]["Labels"] == {"tier": "web"}
    stats = pallet("stats", "--no-stream", "b2").stdout
    assert "b2" in stats and "MEM USAGE" in stats
    pallet("rm", "-f", "b2", check=True)


def test_runc_handler_runs_the_same_container(pallet):
    import shutil

    if not shutil.which("runc"):
        pytest.skip("runc is not installed")
    out = pallet("run", "--rm", "--runtime", "runc", "busybox", "sh", "-c", "echo via runc; exit 2")
    assert (out.returncode, out.stdout) == (2, "via runc\n"), out.stderr
    assert leftovers(pallet) == []
