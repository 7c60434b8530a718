"""pallet-runc's lifecycle as a user of runc sees it: create, start, state, kill, delete.

Real kernel, real busybox rootfs, the real pallet-runc command line.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.fixtures.bundle import edit_config

pytestmark = pytest.mark.root


def state(runc_cli, cid: str) -> dict:
    out = runc_cli("state", cid)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_status(runc_cli, cid: str, want: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = state(runc_cli, cid)
        if st["status"] == want or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def test_run_prints_output_and_returns_exit_code(runc_cli, bundle, cid, host_clean):
    b = bundle(["sh", "-c", "echo hello; exit 3"])
    out = runc_cli("run", "--bundle", b, cid)
    assert out.stdout == "hello\n"
    assert out.returncode == 3
    assert runc_cli("list", "-q").stdout == ""
    host_clean(cid)


def test_create_holds_user_code_until_start(runc_cli, bundle, cid, tmp_path, host_clean):
    b = bundle(["sh", "-c", "echo started > /tmp/marker; sleep 60"])
    out = runc_cli("create", "--bundle", b, "--pid-file", str(tmp_path / "pid"), cid)
    assert out.returncode == 0, out.stderr
    st = state(runc_cli, cid)
    assert st["status"] == "created"
    assert st["id"] == cid and st["bundle"] == b and st["ociVersion"]
    assert int((tmp_path / "pid").read_text()) == st["pid"]
    marker = os.path.join(b, "rootfs", "tmp", "marker")
    assert not os.path.exists(marker), "user code ran before start"
    assert runc_cli("start", cid).returncode == 0
    assert wait_status(runc_cli, cid, "running")["status"] == "running"
    deadline = time.monotonic() + 5
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert open(marker).read() == "started\n"
    # A running container cannot be deleted without --force, like runc.
    out = runc_cli("delete", cid)
    assert out.returncode == 1
    assert "cannot delete container" in out.stderr and "running" in out.stderr
    assert runc_cli("kill", cid, "KILL").returncode == 0
    assert wait_status(runc_cli, cid, "stopped")["status"] == "stopped"
    assert runc_cli("delete", cid).returncode == 0
    assert runc_cli("state", cid).returncode == 1
    host_clean(cid)


def test_kill_accepts_names_and_numbers(runc_cli, bundle, cid):
    # PID 1 ignores signals it has no handler for, so the shell traps TERM.
    b = bundle(["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"])
    assert runc_cli("run", "-d", "--bundle", b, cid).returncode == 0
    assert runc_cli("kill", cid, "15").returncode == 0
    assert wait_status(runc_cli, cid, "stopped")["status"] == "stopped"
    out = runc_cli("kill", cid, "TERM")
    assert out.returncode == 1 and "not running" in out.stderr
    assert runc_cli("kill", cid, "NOSUCHSIG").returncode != 0
    assert runc_cli("delete", cid).returncode == 0


def test_delete_force_kills_a_running_container(runc_cli, bundle, cid, host_clean):
    b = bundle(["sleep", "60"])
    assert runc_cli("run", "-d", "--bundle", b, cid).returncode == 0
    assert state(runc_cli, cid)["status"] == "running"
    assert runc_cli("delete", "--force", cid).returncode == 0
    assert runc_cli("list", "-q").stdout == ""
    host_clean(cid)


def test_list_formats(runc_cli, bundle, cid):
    b = bundle(["sleep", "60"])
    assert runc_cli("create", "--bundle", b, cid).returncode == 0
    table = runc_cli("list").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"]
    assert table[1].split()[0] == cid and table[1].split()[2] == "created"
    items = json.loads(runc_cli("list", "--format", "json").stdout)
    assert [i["id"] for i in items] == [cid]
    assert runc_cli("list", "-q").stdout.split() == [cid]
    assert runc_cli("delete", cid).returncode == 0


def test_exec_runs_in_the_container(runc_cli, bundle, cid):
    b = bundle(["sleep", "60"])
    edit_config(b, lambda s: s.update(hostname="boxy"))
    assert runc_cli("run", "-d", "--bundle", b, cid).returncode == 0
    out = runc_cli("exec", cid, "sh", "-c", "hostname; echo $FOO; exit 7")
    assert out.stdout == "boxy\n\n" and out.returncode == 7
    out = runc_cli("exec", "--env", "FOO=bar", "--cwd", "/tmp", cid, "sh", "-c", "echo $FOO; pwd")
    assert out.stdout == "bar\n/tmp\n"
    out = runc_cli("exec", "--user", "65534:65534", cid, "id", "-u")
    assert out.stdout.strip() == "65534"
    ps = json.loads(runc_cli("ps", "--format", "json", cid).stdout)
    assert state(runc_cli, cid)["pid"] in ps
    assert runc_cli("delete", "--force", cid).returncode == 0


def test_exec_process_file(runc_cli, bundle, cid, tmp_path):
    b = bundle(["sleep", "60"])
    assert runc_cli("run", "-d", "--bundle", b, cid).returncode == 0
    proc = {"args": ["sh", "-c", "echo from-file"], "cwd": "/", "env": ["PATH=/bin"],
            "user": {"uid": 0, "gid": 0}}
    (tmp_path / "p.json").write_text(json.dumps(proc))
    out = runc_cli("exec", "--process", str(tmp_path / "p.json"), cid)
    assert out.stdout == "from-file\n", out.stderr
    assert runc_cli("delete", "--force", cid).returncode == 0


def test_spec_writes_runcs_default(runc_cli, tmp_path):
    out = runc_cli("spec", "--bundle", str(tmp_path))
    assert out.returncode == 0
    spec = json.loads((tmp_path / "config.json").read_text())
    assert spec["process"]["args"] == ["sh"]
    assert {n["type"] for n in spec["linux"]["namespaces"]} >= {"pid", "mount", "network"}
    again = runc_cli("spec", "--bundle", str(tmp_path))
    assert again.returncode == 1 and "exists" in again.stderr
    rootless = tmp_path / "rl"
    rootless.mkdir()
    assert runc_cli("spec", "--rootless", "--bundle", str(rootless)).returncode == 0
    spec = json.loads((rootless / "config.json").read_text())
    assert "user" in {n["type"] for n in spec["linux"]["namespaces"]}


def test_version_and_features(runc_cli):
    out = runc_cli("--version")
    assert out.returncode == 0 and "pallet-runc version" in out.stdout
    features = json.loads(runc_cli("features").stdout)
    assert "mount" in features["linux"]["namespaces"]
    assert "CAP_SYS_ADMIN" in features["linux"]["capabilities"]
    assert "SCMP_ACT_NOTIFY" in features["linux"]["seccomp"]["actions"]
    assert "SECCOMP_FILTER_FLAG_TSYNC" in features["linux"]["seccomp"]["supportedFlags"]
    assert {"idmap", "ridmap"} <= set(features["mountOptions"])
    assert features["linux"]["mountExtensions"]["idmap"]["enabled"] is True


def test_the_early_cgroup_sync_child_changes_nothing_and_is_reaped():
    # create/exec (and the engine) fork a child that moves itself into its own cgroup so
    # the kernel's grace period for cgroup moves starts early; it must leave no trace.
    from pallet.oci.cgsync import reap_cgroup_sync, start_cgroup_sync

    with open("/proc/self/cgroup") as f:
        before = f.read()
    pid = start_cgroup_sync()
    assert pid > 0
    reap_cgroup_sync(pid)
    with open("/proc/self/cgroup") as f:
        assert f.read() == before
    assert not os.path.exists(f"/proc/{pid}")
    reap_cgroup_sync(0)  # nothing forked: nothing to do


def test_pallet_runc_starts_the_cgroup_sync_early_and_create_takes_it_over():
    # pallet-runc forks it before importing the runtime; create's own call then adopts
    # that child instead of forking a second one, and reaps it.
    from pallet.oci import cgsync

    cgsync.start_early()
    early = cgsync._early
    assert early > 0
    cgsync.start_early()  # one at a time
    assert cgsync._early == early
    assert cgsync.start_cgroup_sync() == early
    assert cgsync._early == 0
    cgsync.reap_cgroup_sync(early)
    assert not os.path.exists(f"/proc/{early}")


def test_start_early_adopts_the_child_the_launcher_started(monkeypatch):
    # bin/pallet-runc's sh starts the sync child before Python runs and names it in
    # PALLET_CGROUP_SYNC; Python takes it over (and the variable goes no further).
    from pallet.oci import cgsync

    child = cgsync.start_cgroup_sync()  # stands in for the one sh started: a real one
    monkeypatch.setenv("PALLET_CGROUP_SYNC", str(child))
    monkeypatch.setattr(cgsync, "_early", 0)
    cgsync.start_early()
    assert cgsync._early == child
    assert "PALLET_CGROUP_SYNC" not in os.environ
    assert cgsync.start_cgroup_sync() == child
    cgsync.reap_cgroup_sync(child)
    assert not os.path.exists(f"/proc/{child}")


def test_the_launchers_cgroup_sync_leaves_no_trace(runc_cli, bundle, cid, host_clean):
    b = bundle(["sh", "-c", "env; cat /proc/self/cgroup"])
    out = runc_cli("run", "--bundle", b, cid)
    assert out.returncode == 0, out.stderr
    assert "PALLET_CGROUP_SYNC" not in out.stdout
    assert "\n0::/\n" in out.stdout  # at the root of its own cgroup namespace
    host_clean(cid)


def test_a_created_init_already_has_the_processs_identity(runc_cli, bundle, cid):
    # As runc: everything but exec is done before create returns, privileges dropped too,
    # so a failure there is create's, and `start` only releases the exec.
    b = bundle(["sleep", "60"])

    def user_1000(c: dict) -> None:
        c["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [20]}
        c["process"]["capabilities"] = {k: ["CAP_KILL"] for k in
                                        ("bounding", "effective", "permitted")}

    edit_config(b, user_1000)
    assert runc_cli("create", "--bundle", b, cid).returncode == 0
    st = state(runc_cli, cid)
    assert st["status"] == "created"
    status = dict(line.split(":", 1) for line in
                  open(f"/proc/{st['pid']}/status").read().splitlines())
    assert status["Uid"].split() == ["1000"] * 4
    assert status["Gid"].split() == ["1000"] * 4
    assert status["Groups"].split() == ["20"]
    assert int(status["CapBnd"], 16) == 1 << 5  # CAP_KILL only
    assert runc_cli("delete", "--force", cid).returncode == 0
