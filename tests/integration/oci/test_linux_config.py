"""The linux section of config.json, checked from inside a real container.

Each test runs a busybox command in the container and asserts what it prints.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time

import pytest

from tests.fixtures.bundle import edit_config

pytestmark = pytest.mark.root


def run(runc_cli, b: str, cid: str) -> subprocess.CompletedProcess:
    out = runc_cli("run", "--bundle", b, cid)
    return out


def test_hostname_domainname_env_cwd_user(runc_cli, bundle, cid):
    b = bundle(["sh", "-c", "hostname; cat /proc/sys/kernel/domainname; echo $GREETING; pwd; "
                            "id -u; id -g; id -G; umask"])

    def cfg(s):
        s["hostname"] = "box1"
        s["domainname"] = "example.org"
        s["process"]["env"].append("GREETING=hi")
        s["process"]["cwd"] = "/tmp"
        s["process"]["user"] = {"uid": 1000, "gid": 100, "additionalGids": [5, 65534],
                                "umask": 0o027}

    edit_config(b, cfg)
    out = run(runc_cli, b, cid)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:7] == ["box1", "example.org", "hi", "/tmp", "1000", "100",
                                          "100 5 65534"]
    assert out.stdout.split("\n")[7] == "0027"


def test_readonly_root(runc_cli, bundle, cid):
    b = bundle(["sh", "-c", "touch /etc/x 2>&1; echo rc=$?; touch /tmp/ok 2>&1; echo rc=$?"])
    edit_config(b, lambda s: s["root"].update(readonly=True))
    out = run(runc_cli, b, cid)
    assert "Read-only file system" in out.stdout
    assert out.stdout.strip().splitlines()[1] == "rc=1"


def test_masked_and_readonly_paths(runc_cli, bundle, cid):
    b = bundle(["sh", "-c", "cat /proc/keys | wc -c; ls /proc/acpi | wc -l; "
                            "echo 1 > /proc/sys/kernel/ns_last_pid 2>&1; echo rc=$?"])
    out = run(runc_cli, b, cid)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "0", "masked file must read empty"
    assert lines[1] == "0", "masked dir must be empty"
    assert lines[-1] == "rc=1" and "Read-only" in out.stderr


def test_sysctl(runc_cli, bundle, cid):
    b = bundle(["cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/msgmax"])
    edit_config(b, lambda s: s["linux"].update(sysctl={"net.ipv4.ip_forward": "1",
                                                       "kernel.msgmax": "12345"}))
    out = run(runc_cli, b, cid)
    assert out.stdout.split() == ["1", "12345"], out.stderr


def test_capabilities_all_five_sets(runc_cli, bundle, cid):
    b = bundle(["sh", "-c", "grep Cap /proc/self/status"])

    def cfg(s):
        caps = ["CAP_NET_ADMIN", "CAP_KILL"]
        s["process"]["capabilities"] = {k: caps for k in
                                        ("bounding", "effective", "permitted", "inheritable",
                                         "ambient")}

    edit_config(b, cfg)
    out = run(runc_cli, b, cid)
    want = hex((1 << 12) | (1 << 5))[2:].zfill(16)
    got = dict(line.split(":\t") for line in out.stdout.strip().splitlines())
    assert got == {k: want for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def test_rlimits_and_no_new_privileges(runc_cli, bundle, cid):
    b = bundle(["sh", "-c", "ulimit -n; ulimit -Hn; grep NoNewPrivs /proc/self/status"])
    edit_config(b, lambda s: s["process"].update(
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}], noNewPrivileges=True))
    out = run(runc_cli, b, cid)
    assert out.stdout.split() == ["321", "654", "NoNewPrivs:", "1"]


def test_devices_and_default_nodes(runc_cli, bundle, cid):
    b = bundle(["sh", "-c", "ls -l /dev/null /dev/zero /dev/urandom /dev/tty /dev/fuse "
                            "| awk '{print $1, $5, $6}'; readlink /dev/fd; readlink /dev/ptmx"])
    edit_config(b, lambda s: s["linux"].update(devices=[
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o600}]))
    out = run(runc_cli, b, cid)
    lines = out.stdout.strip().splitlines()
    assert "crw------- 10, 229" in lines
    assert "crw-rw-rw- 1, 3" in lines
    assert lines[-2:] == ["/proc/self/fd", "pts/ptmx"]


def test_bind_mount_readonly_and_propagation(runc_cli, bundle, cid, tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    (src / "file").write_text("from-host")
    b = bundle(["sh", "-c", "cat /data/file; touch /data/new 2>&1; grep ' /data ' "
                            "/proc/self/mountinfo"])
    edit_config(b, lambda s: s["mounts"].append(
        {"destination": "/data", "type": "bind", "source": str(src),
         "options": ["rbind", "ro", "nosuid", "rprivate"]}))
    out = run(runc_cli, b, cid)
    assert out.stdout.startswith("from-host")
    assert "Read-only file system" in out.stdout
    assert " ro," in out.stdout and "nosuid" in out.stdout
    assert not (src / "new").exists()


def test_tmpfs_mount_with_options(runc_cli, bundle, cid):
    b = bundle(["sh", "-c", "grep ' /scratch ' /proc/mounts"])
    edit_config(b, lambda s: s["mounts"].append(
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "noexec", "size=1m", "mode=700"]}))
    out = run(runc_cli, b, cid)
    assert "tmpfs /scratch tmpfs rw,nosuid,nodev,noexec" in out.stdout
    assert "size=1024k" in out.stdout and "mode=700" in out.stdout


def test_user_namespace_with_mappings(runc_cli, bundle, cid):
    b = bundle(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u"])

    def cfg(s):
        s["linux"]["namespaces"].append({"type": "user"})
        s["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        s["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]

    edit_config(b, cfg)
    # The rootfs must be reachable and owned by the mapped root, as with runc.
    subprocess.run(["chown", "-R", "100000:100000", os.path.join(b, "rootfs")], check=True)
    d = b
    while d != "/":
        os.chmod(d, os.stat(d).st_mode | 0o011)
        d = os.path.dirname(d)
    out = run(runc_cli, b, cid)
    assert out.returncode == 0, out.stderr
    maps = [line.split() for line in out.stdout.strip().splitlines()]
    assert maps[0] == ["0", "100000", "65536"] and maps[1] == ["0", "100000", "65536"]
    assert maps[2] == ["0"]


def test_join_existing_namespace_by_path(runc_cli, bundle, cid):
    host = bundle(["sleep", "30"])
    edit_config(host, lambda s: s.update(hostname="shared-uts"))
    first = cid + "-a"
    assert runc_cli("run", "-d", "--bundle", host, first).returncode == 0
    pid = json.loads(runc_cli("state", first).stdout)["pid"]
    b = bundle(["hostname"])

    def cfg(s):
        s.pop("hostname", None)
        for ns in s["linux"]["namespaces"]:
            if ns["type"] == "uts":
                ns["path"] = f"/proc/{pid}/ns/uts"

    edit_config(b, cfg)
    out = run(runc_cli, b, cid)
    assert out.stdout.strip() == "shared-uts", out.stderr
    runc_cli("delete", "--force", first)


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(path)]


def test_no_mount_namespace_inherits_the_runtimes(runc_cli, bundle, cid):
    # The spec: a namespace type not listed is inherited from the runtime, the mount
    # namespace too (runtime-tools' linux_ns_itype creates such a container). The
    # container is chrooted; its mounts live under the rootfs in our namespace while it
    # exists, and delete takes them all away.
    b = bundle(["sh", "-c", "readlink /proc/self/ns/mnt; ls /proc/self/ns >/dev/null && "
                            "echo proc-ok; ls /"])

    def cfg(s):
        s["linux"]["namespaces"] = [n for n in s["linux"]["namespaces"]
                                    if n["type"] != "mount"]
        s["linux"].pop("maskedPaths", None)
        s["linux"].pop("readonlyPaths", None)

    edit_config(b, cfg)
    open(os.path.join(b, "rootfs", "in-the-container"), "w").close()
    assert runc_cli("create", "--bundle", b, cid).returncode == 0
    assert _mounts_under(b), "the rootfs mounts are in our namespace while it exists"
    out = runc_cli("exec", cid, "sh", "-c", "readlink /proc/self/ns/mnt; pwd; ls /")
    assert out.returncode == 0, out.stderr
    mine = os.readlink("/proc/self/ns/mnt")
    lines = out.stdout.split()
    assert lines[0] == mine and lines[1] == "/"
    assert "in-the-container" in lines, "exec must land in the container root"
    assert runc_cli("start", cid).returncode == 0
    deadline = time.monotonic() + 10
    while json.loads(runc_cli("state", cid).stdout)["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert runc_cli("delete", cid).returncode == 0
    assert _mounts_under(b) == []


def test_no_mount_namespace_failed_create_leaves_no_mounts(runc_cli, bundle, cid):
    b = bundle(["true"])

    def cfg(s):
        s["linux"]["namespaces"] = [n for n in s["linux"]["namespaces"]
                                    if n["type"] != "mount"]
        s["linux"].pop("maskedPaths", None)
        s["linux"].pop("readonlyPaths", None)
        s["mounts"].append({"destination": "/tmp/x", "type": "nosuchfs", "source": "x"})

    edit_config(b, cfg)
    out = runc_cli("create", "--bundle", b, cid)
    assert out.returncode != 0 and "No such device" in out.stderr
    assert _mounts_under(b) == []


def test_no_pivot(runc_cli, bundle, cid):
    b = bundle(["sh", "-c", "ls /bin/busybox"])
    out = runc_cli("run", "--no-pivot", "--bundle", b, cid)
    assert out.stdout.strip() == "/bin/busybox", out.stderr


def test_hooks_get_state_on_stdin(runc_cli, bundle, cid, tmp_path):
    log = tmp_path / "hooks.log"
    b = bundle(["true"])

    def hook(name):
        return {"path": "/bin/sh", "args": ["sh", "-c", f"cat >> {log}; echo ' {name}' >> {log}"]}

    edit_config(b, lambda s: s.update(hooks={
        p: [hook(p)] for p in ("prestart", "createRuntime", "createContainer", "poststart",
                               "poststop")}))
    out = run(runc_cli, b, cid)
    assert out.returncode == 0, out.stderr
    text = log.read_text()
    order = [line.split()[-1] for line in text.splitlines()]
    assert order == ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]
    first = json.loads(text.split(" prestart")[0])
    assert first["id"] == cid and first["pid"] > 0 and first["bundle"] == b


def test_failing_create_hook_aborts_and_cleans(runc_cli, bundle, cid, runtime_root, host_clean):
    b = bundle(["true"])
    edit_config(b, lambda s: s.update(hooks={"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", "echo boom >&2; exit 4"]}]}))
    out = runc_cli("create", "--bundle", b, cid)
    assert out.returncode == 1 and "createRuntime" in out.stderr and "boom" in out.stderr
    assert not os.path.exists(os.path.join(runtime_root, cid))
    host_clean(cid)


def test_hook_timeout(runc_cli, bundle, cid):
    b = bundle(["true"])
    edit_config(b, lambda s: s.update(hooks={"prestart": [
        {"path": "/bin/sleep", "args": ["sleep", "10"], "timeout": 1}]}))
    start = time.monotonic()
    out = runc_cli("create", "--bundle", b, cid)
    assert out.returncode == 1 and "timed out" in out.stderr
    assert time.monotonic() - start < 8


def test_terminal_over_console_socket(runc_cli, bundle, cid, tmp_path):
    from pallet.oci.linux.console import recv_fd

    path = str(tmp_path / "console.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    b = bundle(["sh", "-c", "tty; stty size; echo done"], terminal=True)
    edit_config(b, lambda s: s["process"].update(consoleSize={"height": 30, "width": 100}))
    out = runc_cli("create", "--console-socket", path, "--bundle", b, cid)
    assert out.returncode == 0, out.stderr
    conn, _ = listener.accept()
    master, name = recv_fd(conn)
    assert runc_cli("start", cid).returncode == 0
    data = b""
    deadline = time.monotonic() + 10
    while b"done" not in data and time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        data += chunk
    text = data.decode().replace("\r", "")
    assert "/dev/pts/0" in text and "30 100" in text
    os.close(master)
    conn.close()
    listener.close()
    runc_cli("delete", "--force", cid)


def test_preserve_fds(runtime_root, bundle, cid, tmp_path):
    from tests.conftest import pallet_runc

    extra = tmp_path / "extra"
    extra.write_text("passed-fd")
    b = bundle(["sh", "-c", "cat <&3; exec sleep 30"])
    cmd = " ".join(pallet_runc(runtime_root, "run", "-d", "--preserve-fds", "1", "--bundle", b,
                               cid))
    out = subprocess.run(["sh", "-c", f"exec 3<{extra}; exec {cmd} >{tmp_path}/out 2>&1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, (tmp_path / "out").read_text()
    pid = json.loads(subprocess.run(pallet_runc(runtime_root, "state", cid),
                                    capture_output=True, text=True).stdout)["pid"]
    deadline = time.monotonic() + 5
    while "passed-fd" not in (tmp_path / "out").read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (tmp_path / "out").read_text() == "passed-fd"
    # Checked from the host, so nothing the check opens is counted.
    assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2, 3]
    subprocess.run(pallet_runc(runtime_root, "delete", "--force", cid), capture_output=True)


def test_cgroup_limits_pause_resume_update_events(runc_cli, bundle, cid):
    b = bundle(["sleep", "60"])
    edit_config(b, lambda s: s["linux"].update(resources={
        "memory": {"limit": 64 << 20}, "pids": {"limit": 50},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000}}, cgroupsPath=f"/pallet/{cid}"))
    assert runc_cli("run", "-d", "--bundle", b, cid).returncode == 0
    stats = json.loads(runc_cli("events", "--stats", cid).stdout)
    assert stats["type"] == "stats" and stats["id"] == cid
    assert stats["data"]["pids"]["limit"] == 50
    assert stats["data"]["memory"]["usage"]["limit"] == 64 << 20
    assert runc_cli("pause", cid).returncode == 0
    assert json.loads(runc_cli("state", cid).stdout)["status"] == "paused"
    assert runc_cli("resume", cid).returncode == 0
    assert json.loads(runc_cli("state", cid).stdout)["status"] == "running"
    assert runc_cli("update", "--memory", "128m", "--pids-limit", "77", cid).returncode == 0
    stats = json.loads(runc_cli("events", "--stats", cid).stdout)
    assert stats["data"]["pids"]["limit"] == 77
    assert stats["data"]["memory"]["usage"]["limit"] == 128 << 20
    assert runc_cli("delete", "--force", cid).returncode == 0


def test_run_gives_a_terminal_without_console_socket(runtime_root, bundle, cid):
    """`pallet-runc run` of a terminal: true config proxies a pty, as runc does."""
    import pty

    from tests.conftest import pallet_runc

    b = bundle(["sh", "-c", "tty; read line; echo got:$line; exit 2"], terminal=True)
    master, slave = pty.openpty()
    proc = subprocess.Popen(pallet_runc(runtime_root, "run", "--bundle", b, cid), stdin=slave,
                            stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    data = b""
    deadline = time.monotonic() + 15
    sent = False
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            data += chunk
        if b"/dev/pts/" in data and not sent:
            os.write(master, b"hello\n")
            sent = True
        if b"got:hello" in data:
            break
    assert proc.wait(timeout=15) == 2
    os.close(master)
    text = data.decode(errors="replace")
    assert "/dev/pts/0" in text and "got:hello" in text


def test_seccomp_errno_rule(runc_cli, bundle, cid):
    b = bundle(["sh", "-c", "mkdir /tmp/d 2>&1; echo rc=$?; uname -s"])
    edit_config(b, lambda s: s["linux"].update(seccomp={
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 1}]}))
    out = run(runc_cli, b, cid)
    assert "Operation not permitted" in out.stdout and "rc=1" in out.stdout, out.stderr
    assert out.stdout.strip().endswith("Linux")


@pytest.mark.parametrize("nnp", [True, False], ids=["no_new_privs", "privileged-load"])
def test_seccomp_profile_denying_close_range(runc_cli, bundle, cid, nnp):
    # Profiles older than close_range(2) (runtime-tools' generator default, docker's before
    # 20.10) deny it through their errno default action. The runtime marks its fds
    # close-on-exec after the filter is loaded, so it must not depend on that syscall; and
    # none of its fds may reach the container either way.
    b = bundle(["ls", "/proc/self/fd"])

    def cfg(s):
        s["process"]["noNewPrivileges"] = nnp
        s["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["close_range"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}

    edit_config(b, cfg)
    out = run(runc_cli, b, cid)
    assert out.returncode == 0, out.stderr
    # stdio and ls's own directory fd, nothing of the runtime's
    assert set(out.stdout.split()) == {"0", "1", "2", "3"}, out.stdout


def test_oom_score_adj_personality_and_start_hook(runc_cli, bundle, cid):
    b = bundle(["sh", "-c", "cat /proc/self/oom_score_adj; uname -m; cat /tmp/hook-ran"])

    def cfg(s):
        s["process"]["oomScoreAdj"] = 500
        s["linux"]["personality"] = {"domain": "LINUX32"}
        # startContainer hooks run inside the container, after start, before the process.
        s["hooks"] = {"startContainer": [{"path": "/bin/sh",
                                          "args": ["sh", "-c", "echo yes > /tmp/hook-ran"]}]}

    edit_config(b, cfg)
    out = run(runc_cli, b, cid)
    assert out.stdout.split() == ["500", "i686", "yes"], out.stderr


def test_device_cgroup_denies_unlisted_devices(runc_cli, bundle, cid):
    b = bundle(["sh", "-c", "echo > /dev/null && echo null-ok; "
                            "head -c1 /dev/fuse 2>&1 | head -1"])

    def cfg(s):
        s["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                  "fileMode": 0o666}]
        s["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}

    edit_config(b, cfg)
    out = run(runc_cli, b, cid)
    assert "null-ok" in out.stdout
    assert "Operation not permitted" in out.stdout, out.stdout + out.stderr


def test_container_sees_its_own_cgroup(runc_cli, bundle, cid):
    b = bundle(["sh", "-c", "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || "
                            "cat /sys/fs/cgroup/pids.max"])
    edit_config(b, lambda s: s["linux"].update(resources={"pids": {"limit": 42}}))
    out = run(runc_cli, b, cid)
    assert out.stdout.strip() == "42", out.stderr


def test_systemd_cgroup_flag_with_slice_form_path(runc_cli, bundle, cid):
    """containerd/podman with --systemd-cgroup pass slice:prefix:name; it lands where
    systemd would put it, under the cgroupfs driver."""
    slice_ = f"pt{cid[3:9]}.slice"
    b = bundle(["sleep", "30"])
    edit_config(b, lambda s: s["linux"].update(cgroupsPath=f"{slice_}:pallet:{cid}",
                                               resources={"pids": {"limit": 33}}))
    try:
        assert runc_cli("--systemd-cgroup", "run", "-d", "--bundle", b, cid).returncode == 0
        with open(f"/sys/fs/cgroup/pids/{slice_}/pallet-{cid}.scope/pids.max") as f:
            assert f.read().strip() == "33"
        assert runc_cli("delete", "--force", cid).returncode == 0
        assert not os.path.exists(f"/sys/fs/cgroup/pids/{slice_}/pallet-{cid}.scope")
    finally:
        for hierarchy in os.listdir("/sys/fs/cgroup"):
            d = f"/sys/fs/cgroup/{hierarchy}/{slice_}"
            if os.path.isdir(d):
                os.rmdir(d)  # the slice is its manager's to remove, as with systemd
