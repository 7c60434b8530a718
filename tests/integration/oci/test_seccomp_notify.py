"""Seccomp user notification: SCMP_ACT_NOTIFY rules are answered by an agent.

The runtime connects to linux.seccomp.listenerPath and sends the container process
state with the filter's listener fd; a test agent then answers the container's
getppid with a value of its choosing and its mkdir with an errno, and the container
prints what it saw.
"""

from __future__ import annotations

import errno
import json
import os
import uuid

import pytest

from pallet.oci.linux import seccomp
from tests.fixtures.bundle import edit_config
from tests.fixtures.seccomp_agent import SeccompAgent

pytestmark = pytest.mark.root

FAKE_PPID = 4242


@pytest.fixture
def cid() -> str:
    return f"hoci-{uuid.uuid4().hex[:10]}"


def nr(name: str) -> int:
    return seccomp._libseccomp().seccomp_syscall_resolve_name(name.encode())


@pytest.fixture
def agent(tmp_path):
    answers = {nr("getppid"): (FAKE_PPID, 0), nr("mkdir"): (0, errno.EREMOTEIO),
               nr("mkdirat"): (0, errno.EREMOTEIO)}
    with SeccompAgent(str(tmp_path / "agent.sock"), answers) as a:
        yield a
    assert not a.errors


def notify_profile(agent_path: str, **extra) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": agent_path,
            "listenerMetadata": "hoci-metadata",
            "syscalls": [{"names": ["getppid", "mkdir", "mkdirat"],
                          "action": "SCMP_ACT_NOTIFY"}], **extra}


@pytest.mark.parametrize("nnp", [False, True], ids=["privileged", "no-new-privileges"])
def test_agent_answers_notified_syscalls(runc_cli, bundle, cid, agent, nnp, host_clean):
    b = bundle(["sh", "-c", "echo ppid=$PPID; mkdir /tmp/d 2>&1; echo rc=$?; "
                            "ls -d /tmp/d 2>/dev/null || echo no-dir"])

    def cfg(s):
        s["process"]["noNewPrivileges"] = nnp
        s["linux"]["seccomp"] = notify_profile(agent.path)

    edit_config(b, cfg)
    out = runc_cli("run", "--bundle", b, cid)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"ppid={FAKE_PPID}"
    assert "Remote I/O error" in lines[1] and lines[2] == "rc=1" and lines[3] == "no-dir"
    assert not os.path.exists(os.path.join(b, "rootfs", "tmp", "d"))
    host_clean(cid)


def test_container_process_state_is_what_the_spec_says(runc_cli, bundle, cid, agent, tmp_path):
    b = bundle(["sh", "-c", "echo $PPID; sleep 30"])
    edit_config(b, lambda s: s.update(annotations={"org.example.k": "v"}) or
                s["linux"].update(seccomp=notify_profile(agent.path)))
    assert runc_cli("create", "--bundle", b, cid).returncode == 0
    # The agent got the listener during create, before any user code ran.
    assert len(agent.states) == 1 and agent.fd_counts == [1]
    msg = agent.states[0]
    init_pid = json.loads(runc_cli("state", cid).stdout)["pid"]
    assert msg["fds"] == ["seccompFd"] and msg["ociVersion"].startswith("1.")
    assert msg["pid"] == init_pid and msg["metadata"] == "hoci-metadata"
    assert msg["state"] == {"ociVersion": msg["state"]["ociVersion"], "id": cid,
                            "status": "creating", "pid": init_pid, "bundle": b,
                            "annotations": {"org.example.k": "v"}}

    # exec gets a filter and a listener of its own, sent like runc does: the exec'd
    # process's pid, and the state of the (running) container.
    assert runc_cli("start", cid).returncode == 0
    out = runc_cli("exec", cid, "sh", "-c", "echo exec-ppid=$PPID")
    assert out.stdout == f"exec-ppid={FAKE_PPID}\n", out.stderr
    assert len(agent.states) == 2
    second = agent.states[1]
    assert second["state"]["status"] == "running" and second["state"]["pid"] == init_pid
    assert second["pid"] != init_pid and second["metadata"] == "hoci-metadata"
    assert runc_cli("delete", "--force", cid).returncode == 0


def test_tsync_and_wait_killable_recv_flags_work_with_a_listener(runc_cli, bundle, cid, agent):
    b = bundle(["sh", "-c", "echo ppid=$PPID"])
    edit_config(b, lambda s: s["linux"].update(seccomp=notify_profile(
        agent.path, flags=["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"])))
    out = runc_cli("run", "--bundle", b, cid)
    assert out.stdout == f"ppid={FAKE_PPID}\n", out.stderr


def test_a_listener_path_without_notify_rules_is_not_used(runc_cli, bundle, cid, tmp_path):
    b = bundle(["sh", "-c", "echo ok"])
    edit_config(b, lambda s: s["linux"].update(seccomp={
        "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(tmp_path / "nobody.sock"),
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}))
    out = runc_cli("run", "--bundle", b, cid)
    assert out.stdout == "ok\n", out.stderr


def test_an_unreachable_agent_fails_create_and_leaves_nothing(runc_cli, bundle, cid,
                                                              runtime_root, tmp_path, host_clean):
    b = bundle(["sh", "-c", "echo never"])
    missing = str(tmp_path / "no-agent.sock")
    edit_config(b, lambda s: s["linux"].update(seccomp=notify_profile(missing)))
    out = runc_cli("create", "--bundle", b, cid)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert missing in lines[0] and "seccomp agent" in lines[0]
    assert not os.path.exists(os.path.join(runtime_root, cid)), "state dir left behind"
    assert runc_cli("list", "-q").stdout == ""
    host_clean(cid)


@pytest.mark.parametrize("profile, expected", [
    ({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.listenerPath: required when SCMP_ACT_NOTIFY is used"),
    ({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/agent.sock"},
     "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action"),
])
def test_bad_notify_profiles_fail_before_anything_exists(runc_cli, bundle, cid, runtime_root,
                                                        host_clean, profile, expected):
    b = bundle()
    edit_config(b, lambda s: s["linux"].update(seccomp=profile))
    out = runc_cli("create", "--bundle", b, cid)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out.stderr
    assert not os.path.exists(os.path.join(runtime_root, cid))
    host_clean(cid)
