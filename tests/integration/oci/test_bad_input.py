"""Bad bundles and ids get one clear line, exit 1, and leave nothing behind.

Each case checks the message names the bad field or value, and that no state
dir, cgroup, mount or process remains.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.fixtures.bundle import create_fails, edit_config

pytestmark = pytest.mark.root


def test_invalid_json(runc_cli, bundle, cid, runtime_root, host_clean):
    b = bundle()
    with open(os.path.join(b, "config.json"), "w") as f:
        f.write("{not json")
    assert "invalid JSON" in create_fails(runc_cli, b, cid, runtime_root, host_clean)


def test_schema_violation_names_the_field(runc_cli, bundle, cid, runtime_root, host_clean):
    b = bundle()
    edit_config(b, lambda s: s["process"].update(args="sh"))
    msg = create_fails(runc_cli, b, cid, runtime_root, host_clean)
    assert "process.args" in msg and "array" in msg


def test_missing_rootfs(runc_cli, bundle, cid, runtime_root, host_clean):
    b = bundle()
    shutil.rmtree(os.path.join(b, "rootfs"))
    msg = create_fails(runc_cli, b, cid, runtime_root, host_clean)
    assert "root.path" in msg and "rootfs" in msg


def test_unknown_namespace(runc_cli, bundle, cid, runtime_root, host_clean):
    b = bundle()
    edit_config(b, lambda s: s["linux"]["namespaces"].append({"type": "bogus"}))
    msg = create_fails(runc_cli, b, cid, runtime_root, host_clean)
    assert '"bogus"' in msg and "linux.namespaces" in msg


def test_unknown_capability(runc_cli, bundle, cid, runtime_root, host_clean):
    b = bundle()
    edit_config(b, lambda s: s["process"]["capabilities"]["bounding"].append("CAP_FOO"))
    msg = create_fails(runc_cli, b, cid, runtime_root, host_clean)
    assert "CAP_FOO" in msg and "bounding" in msg


def test_unknown_syscall(runc_cli, bundle, cid, runtime_root, host_clean):
    b = bundle()
    edit_config(b, lambda s: s["linux"].update(seccomp={
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["no_such_syscall"], "action": "SCMP_ACT_ERRNO"}]}))
    msg = create_fails(runc_cli, b, cid, runtime_root, host_clean)
    assert "no_such_syscall" in msg


@pytest.mark.parametrize("bad", ["../evil", "a/b", ".."])
def test_bad_container_id(runc_cli, bundle, runtime_root, host_clean, bad):
    b = bundle()
    out = runc_cli("create", "--bundle", b, bad)
    assert out.returncode == 1
    assert "invalid container id" in out.stderr and bad in out.stderr
    assert not os.path.exists(os.path.join(runtime_root, "evil"))
    host_clean()


def test_existing_id(runc_cli, bundle, cid, runtime_root, host_clean):
    b = bundle(["sleep", "30"])
    assert runc_cli("create", "--bundle", b, cid).returncode == 0
    out = runc_cli("create", "--bundle", b, cid)
    assert out.returncode == 1 and f"container with id exists: {cid}" in out.stderr
    assert runc_cli("list", "-q").stdout.split() == [cid], "the first container must survive"
    assert runc_cli("delete", "--force", cid).returncode == 0
    host_clean(cid)


def test_command_not_found_fails_create(runc_cli, bundle, cid, runtime_root, host_clean):
    b = bundle(["no-such-binary"])
    msg = create_fails(runc_cli, b, cid, runtime_root, host_clean)
    assert "no-such-binary" in msg and "not found" in msg


def test_missing_bind_source(runc_cli, bundle, cid, runtime_root, host_clean):
    b = bundle()
    edit_config(b, lambda s: s["mounts"].append(
        {"destination": "/data", "type": "bind", "source": "/nonexistent-pallet-src",
         "options": ["rbind"]}))
    msg = create_fails(runc_cli, b, cid, runtime_root, host_clean)
    assert "/nonexistent-pallet-src" in msg


def test_unknown_container_commands(runc_cli):
    for args in (("state", "nope"), ("start", "nope"), ("kill", "nope"), ("delete", "nope")):
        out = runc_cli(*args)
        assert out.returncode == 1 and "does not exist" in out.stderr, args
    assert runc_cli("delete", "--force", "nope").returncode == 0


def test_command_not_executable_fails_create(runc_cli, bundle, cid, runtime_root, host_clean):
    b = bundle(["/etc/passwd"])
    msg = create_fails(runc_cli, b, cid, runtime_root, host_clean)
    assert "/etc/passwd" in msg and "permission denied" in msg


def test_deep_runtime_root_beyond_socket_path_limit(bundle, cid, tmp_path):
    """The start socket lives in the state dir; its path may exceed sun_path's 108 bytes."""
    import subprocess

    from tests.conftest import pallet_runc

    root = str(tmp_path / ("r" * 60) / ("o" * 60))
    b = bundle(["sh", "-c", "echo deep"])
    out = subprocess.run(pallet_runc(root, "run", "--bundle", b, cid), capture_output=True,
                         text=True, timeout=30)
    assert out.stdout == "deep\n", out.stderr
    assert out.returncode == 0
