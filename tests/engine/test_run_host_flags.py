"""docker's run/create flags for mounts, devices, DNS, ulimits and cgroup resources, as a
user sees them inside a busybox container and in `inspect`; bad values exit 125 with
docker's words and leave nothing behind.

Real CLI, real kernel, the busybox image; --network none throughout.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.request
import uuid

import pytest

from tests.engine.conftest import leftovers

pytestmark = pytest.mark.root

NONE = ("--network", "none")
NS = "for n in"


def _run(pallet, *argv: str):
    return pallet("run", "--rm", *NONE, *argv)


def _host_config(pallet, ref: str) -> dict:
    return json.loads(pallet("inspect", ref, check=True).stdout)[0]["HostConfig"]


def test_mount_bind_volume_and_tmpfs_in_docker_csv(pallet, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello").write_text("from the host\n")
    out = _run(pallet, "--mount", f"type=bind,source={src},target=/data,readonly",
               "--mount", "type=volume,src=fl-vol,dst=/vol",
               "--mount", "type=tmpfs,target=/scratch,tmpfs-size=1m,tmpfs-mode=1770",
               "busybox", "sh", "-c",
               "cat /data/hello; touch /data/x 2>&1 | grep -o 'Read-only file system';"
               "echo kept > /vol/f; grep ' /scratch ' /proc/mounts; stat -c %a /scratch")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["from the host", "Read-only file system"]
    assert "size=1024k" in lines[2] and "mode=1770" in lines[2]
    assert lines[3] == "1770"
    # The named volume outlives the container, as with -v fl-vol:/vol.
    again = _run(pallet, "--mount", "type=volume,source=fl-vol,target=/vol,volume-nocopy",
                 "busybox", "cat", "/vol/f")
    assert again.stdout == "kept\n", again.stderr
    assert not (src / "x").exists()


def test_mount_shows_in_inspect(pallet, tmp_path):
    pallet("create", *NONE, "--name", "fl-mnt", "--mount",
           f"type=bind,src={tmp_path},dst=/h,ro=true,bind-propagation=rslave",
           "--mount", "type=tmpfs,dst=/t,tmpfs-size=64k", "busybox", check=True)
    hc = _host_config(pallet, "fl-mnt")
    assert hc["Mounts"] == [
        {"Type": "bind", "Source": str(tmp_path), "Target": "/h", "ReadOnly": True,
         "BindOptions": {"Propagation": "rslave"}},
        {"Type": "tmpfs", "Source": "", "Target": "/t", "TmpfsOptions": {"SizeBytes": 65536}}]
    pallet("rm", "fl-mnt", check=True)


@pytest.mark.parametrize("spec, message", [
    ("type=bind,target=/x,bogus", "invalid field 'bogus' must be a key=value pair"),
    ("type=bind,source=/,color=red,target=/x", "unexpected key 'color' in 'color=red'"),
    ("type=volume,source=v", "target is required"),
    ("type=volume,target=/x,readonly=maybe", "invalid value for readonly: maybe"),
    ("type=tmpfs,target=/x,tmpfs-size=lots", "invalid value for tmpfs-size: lots"),
    ("type=volume,target=/x,bind-propagation=shared",
     "cannot mix 'bind-*' options with mount type 'volume'"),
    ("type=nfs,target=/x", 'invalid mount config for type "nfs": mount type unknown'),
    ("type=bind,source=/no/such/dir,target=/x",
     'invalid mount config for type "bind": bind source path does not exist: /no/such/dir'),
    ("type=bind,target=/x", 'invalid mount config for type "bind": field Source must not '
     "be empty"),
    ("type=tmpfs,source=/tmp,target=/x",
     'invalid mount config for type "tmpfs": field Source must not be specified'),
])
def test_bad_mount_is_125_with_dockers_words(pallet, spec, message):
    out = pallet("run", *NONE, "--name", "fl-bad", "--mount", spec, "busybox", "true")
    assert out.returncode == 125 and message in out.stderr, out.stderr
    assert pallet("ps", "-aq").stdout == "" and pallet("volume", "ls", "-q").stdout == ""
    assert leftovers(pallet) == []


def test_device_node_and_cgroup_rule(pallet):
    out = _run(pallet, "--device", "/dev/null:/dev/mynull:rw", "--device", "/dev/zero",
               "busybox", "sh", "-c", "ls -l /dev/mynull /dev/zero | cut -c1,36-;"
               "echo hi > /dev/mynull && echo written; head -c 3 /dev/zero | wc -c")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("c") and lines[0].endswith("/dev/mynull")
    assert lines[2:] == ["written", "3"]
    # A node made with mknod opens only when a rule allows it: loop-control is c 10:237.
    script = "mknod /tmp/lc c 10 237 && : < /tmp/lc && echo opened"
    denied = _run(pallet, "busybox", "sh", "-c", script)
    assert "Operation not permitted" in denied.stderr and denied.stdout == ""
    allowed = _run(pallet, "--device-cgroup-rule", "c 10:237 r", "busybox", "sh", "-c", script)
    assert allowed.stdout == "opened\n", allowed.stderr


def test_devices_in_inspect(pallet):
    pallet("create", *NONE, "--name", "fl-dev", "--device", "/dev/null:/dev/n:r",
           "--device-cgroup-rule", "c *:* m", "busybox", check=True)
    hc = _host_config(pallet, "fl-dev")
    assert hc["Devices"] == [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/n",
                              "CgroupPermissions": "r"}]
    assert hc["DeviceCgroupRules"] == ["c *:* m"]
    pallet("rm", "fl-dev", check=True)


@pytest.mark.parametrize("argv, message", [
    (["--device", "/dev/null:/dev/n:rwx"], "bad mode specified: rwx"),
    (["--device", "/dev/null:dev/n"], "dev/n is not an absolute path"),
    (["--device", "/dev/null:/a:/b:r"], "bad format for path: /dev/null:/a:/b:r"),
    (["--device", "/dev/no-such-device"], "error gathering device information while adding "
     "custom device \"/dev/no-such-device\""),
    (["--device-cgroup-rule", "x 1:3 rwm"], "invalid device cgroup format 'x 1:3 rwm'"),
])
def test_bad_device_is_125(pallet, argv, message):
    out = pallet("run", *NONE, *argv, "busybox", "true")
    assert out.returncode == 125 and message in out.stderr, out.stderr
    assert pallet("ps", "-aq").stdout == "" and leftovers(pallet) == []


def test_dns_flags_write_resolv_conf_and_domainname(pallet):
    out = _run(pallet, "--dns", "10.222.0.53", "--dns", "2001:db8::53", "--dns-search",
               "example.test", "--dns-search", "corp.test", "--dns-option", "ndots:2",
               "--dns-option", "timeout:1", "--domainname", "fl.example", "busybox", "sh",
               "-c", "cat /etc/resolv.conf; echo; "
               "cat /proc/sys/kernel/domainname")
    assert out.returncode == 0, out.stderr
    resolv, _, domain = out.stdout.partition("\n\n")
    lines = resolv.splitlines()
    assert [ln for ln in lines if ln.startswith("nameserver")] == [
        "nameserver 10.222.0.53", "nameserver 2001:db8::53"]
    assert [ln for ln in lines if ln.startswith(("search", "domain"))] == [
        "search example.test corp.test"]
    assert [ln for ln in lines if ln.startswith("options")] == ["options ndots:2 timeout:1"]
    assert domain.strip() == "fl.example"
    # Only the flags given replace the host's lines.
    plain = _run(pallet, "--dns-option", "ndots:3", "busybox", "cat", "/etc/resolv.conf")
    assert "options ndots:3" in plain.stdout and "nameserver" in plain.stdout


def test_dns_in_inspect_and_bad_values(pallet):
    pallet("create", *NONE, "--name", "fl-dns", "--dns", "10.222.0.1", "--dns-search", "a.test",
           "--dns-opt", "rotate", "--domainname", "d.test", "busybox", check=True)
    info = json.loads(pallet("inspect", "fl-dns", check=True).stdout)[0]
    hc = info["HostConfig"]
    assert (hc["Dns"], hc["DnsSearch"], hc["DnsOptions"]) == (
        ["10.222.0.1"], ["a.test"], ["rotate"])
    assert info["Config"]["Domainname"] == "d.test"
    pallet("rm", "fl-dns", check=True)
    for argv, message in ((["--dns", "not-an-ip"], "not-an-ip is not an ip address"),
                          (["--dns-search", ".bad"], ".bad is not a valid domain")):
        out = pallet("run", *NONE, *argv, "busybox", "true")
        assert out.returncode == 125 and message in out.stderr, out.stderr
    assert pallet("ps", "-aq").stdout == "" and leftovers(pallet) == []


def test_ulimits_are_the_process_rlimits(pallet):
    # Below this machine's hard limits: root here cannot raise them (no CAP_SYS_RESOURCE).
    out = _run(pallet, "--ulimit", "nofile=512:768", "--ulimit", "nproc=300",
               "--ulimit", "core=0", "busybox", "sh", "-c",
               "ulimit -n; ulimit -Hn; ulimit -u; ulimit -c")
    assert out.stdout.split() == ["512", "768", "300", "0"], out.stderr
    pallet("create", *NONE, "--name", "fl-ul", "--ulimit", "stack=8192:16384", "busybox",
           check=True)
    assert _host_config(pallet, "fl-ul")["Ulimits"] == [
        {"Name": "stack", "Hard": 16384, "Soft": 8192}]
    pallet("rm", "fl-ul", check=True)


@pytest.mark.parametrize("value, message", [
    ("nofile", "invalid ulimit argument: nofile"),
    ("files=10", "invalid ulimit type: files"),
    ("nofile=ten", "invalid ulimit soft value ten"),
    ("nofile=100:50", "ulimit soft limit must be less than or equal to hard limit: 100 > 50"),
])
def test_bad_ulimit_is_125(pallet, value, message):
    out = pallet("run", *NONE, "--ulimit", value, "busybox", "true")
    assert out.returncode == 125, out.stderr
    assert f'invalid argument "{value}" for "--ulimit" flag: {message}' in out.stderr
    assert pallet("ps", "-aq").stdout == "" and leftovers(pallet) == []


def test_cpu_and_memory_flags_reach_the_containers_cgroup(pallet):
    # This host's v1 hierarchies: the container sees its own cgroup's files.
    out = _run(pallet, "-c", "512", "--cpu-period", "50000", "--cpu-quota", "25000",
               "--cpuset-cpus", "0", "--cpuset-mems", "0", "--memory-reservation", "32m",
               "--oom-kill-disable", "--oom-score-adj", "300", "busybox", "sh", "-c",
               "cd /sys/fs/cgroup; cat cpu/cpu.shares cpu/cpu.cfs_period_us "
               "cpu/cpu.cfs_quota_us cpuset/cpuset.cpus cpuset/cpuset.mems "
               "memory/memory.soft_limit_in_bytes; grep oom_kill_disable "
               "memory/memory.oom_control; cat /proc/self/oom_score_adj")
    assert out.stdout.split() == ["512", "50000", "25000", "0", "0", str(32 << 20),
                                  "oom_kill_disable", "1", "300"], out.stderr


def test_resource_flags_in_inspect(pallet):
    pallet("create", *NONE, "--name", "fl-res", "--cpu-shares", "256", "--cpuset-cpus", "0-1",
           "--cpu-period", "100000", "--cpu-quota", "50000", "--memory-reservation", "64m",
           "--oom-kill-disable", "--oom-score-adj", "100", "--blkio-weight", "300", "busybox",
           check=True)
    hc = _host_config(pallet, "fl-res")
    got = {k: hc[k] for k in ("CpuShares", "CpusetCpus", "CpuPeriod", "CpuQuota",
                              "MemoryReservation", "OomKillDisable", "OomScoreAdj",
                              "BlkioWeight")}
    assert got == {"CpuShares": 256, "CpusetCpus": "0-1", "CpuPeriod": 100000,
                   "CpuQuota": 50000, "MemoryReservation": 64 << 20, "OomKillDisable": True,
                   "OomScoreAdj": 100, "BlkioWeight": 300}
    pallet("rm", "fl-res", check=True)


@pytest.mark.parametrize("argv, message", [
    (["-c", "lots"], 'invalid argument "lots" for "-c, --cpu-shares" flag: strconv.ParseInt'),
    (["--cpu-quota", "x"], 'invalid argument "x" for "--cpu-quota" flag'),
    (["--blkio-weight", "5"], "Range of blkio weight is from 10 to 1000"),
    (["--oom-score-adj", "2000"], "invalid oom score adjustment 2000"),
    (["--cpuset-cpus", "zero"], "invalid cpuset 'zero'"),
    (["--memory-reservation", "much"], "invalid size: 'much'"),
])
def test_bad_resource_values_are_125(pallet, argv, message):
    out = pallet("run", *NONE, *argv, "busybox", "true")
    assert out.returncode == 125 and message in out.stderr, out.stderr
    assert pallet("ps", "-aq").stdout == "" and leftovers(pallet) == []


def test_publish_all_puts_each_exposed_port_on_a_free_host_port(pallet):
    subnet = f"10.222.{random.randint(1, 254)}.0/24"
    net = f"fl-{uuid.uuid4().hex[:6]}"
    pallet("network", "create", "--subnet", subnet, net, check=True)
    try:
        cid = pallet("run", "-d", "--network", net, "-P", "--expose", "80", "--expose",
                     "7000-7001/udp", "busybox", "sh", "-c", "mkdir /www && echo all > "
                     "/www/index.html && exec httpd -f -p 80 -h /www", check=True).stdout.strip()
        lines = sorted(pallet("port", cid, check=True).stdout.splitlines())
        assert [ln.split(" -> ")[0] for ln in lines] == ["7000/udp", "7001/udp", "80/tcp"]
        port = int(lines[-1].rsplit(":", 1)[1])
        body, deadline = "", time.monotonic() + 10
        while time.monotonic() < deadline and not body:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            except OSError:
                time.sleep(0.1)
        assert body == b"all\n"
        info = json.loads(pallet("inspect", cid, check=True).stdout)[0]
        assert info["HostConfig"]["PublishAllPorts"] is True
        assert sorted(info["Config"]["ExposedPorts"]) == ["7000/udp", "7001/udp", "80/tcp"]
        pallet("rm", "-f", cid, check=True)
    finally:
        pallet("network", "rm", net)


@pytest.mark.parametrize("value, message", [
    ("80:80", "invalid port format for --expose: 80:80"),
    ("80-x", "invalid range format for --expose: 80-x"),
])
def test_bad_expose_is_125(pallet, value, message):
    out = pallet("run", *NONE, "--expose", value, "busybox", "true")
    assert out.returncode == 125 and message in out.stderr, out.stderr
    assert pallet("ps", "-aq").stdout == "" and leftovers(pallet) == []


def test_namespace_modes_share_the_hosts_or_another_containers(pallet):
    host = {k: os.readlink(f"/proc/self/ns/{k}") for k in ("ipc", "pid", "uts")}
    out = _run(pallet, "--ipc", "host", "--pid", "host", "--uts", "host", "--userns", "host",
               "busybox", "sh", "-c", f"{NS} ipc pid uts; do readlink /proc/self/ns/$n; done;"
               "hostname")
    assert out.stdout.split() == [host["ipc"], host["pid"], host["uts"], os.uname().nodename]
    own = _run(pallet, "--ipc", "shareable", "busybox", "readlink", "/proc/self/ns/ipc")
    assert own.stdout.strip() not in ("", host["ipc"]), own.stderr
    cid = pallet("run", "-d", *NONE, "--name", "fl-ns", "busybox", "sleep", "60",
                 check=True).stdout.strip()
    script = f"{NS} ipc pid; do readlink /proc/self/ns/$n; done"
    theirs = pallet("exec", cid, "sh", "-c", script).stdout
    joined = _run(pallet, "--ipc", "container:fl-ns", "--pid", "container:fl-ns", "busybox",
                  "sh", "-c", script)
    assert joined.stdout == theirs and theirs, joined.stderr
    hc = _host_config(pallet, pallet("create", *NONE, "--pid", "host", "--uts", "host",
                                     "busybox", check=True).stdout.strip())
    assert (hc["PidMode"], hc["UTSMode"], hc["IpcMode"]) == ("host", "host", "private")
    pallet("rm", "-f", cid, check=True)


def test_cgroup_parent_holds_the_containers_cgroup(pallet):
    # A relative parent sits under the caller's cgroup in each hierarchy (runc's rule).
    parent = f"fl-parent-{uuid.uuid4().hex[:6]}"
    try:
        out = _run(pallet, "--cgroup-parent", parent, "--cgroupns", "host", "busybox",
                   "grep", "memory", "/proc/self/cgroup")
        assert f"/{parent}/" in out.stdout, out.stdout + out.stderr
    finally:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, ctrls, path = line.strip().split(":", 2)
                for ctrl in ctrls.removeprefix("name=").split(",") if ctrls else ["unified"]:
                    d = f"/sys/fs/cgroup/{ctrl}{path.rstrip('/')}/{parent}"
                    if os.path.isdir(d):
                        os.rmdir(d)


@pytest.mark.parametrize("argv, message", [
    (["--ipc", "bogus"], "--ipc: invalid IPC mode"),
    (["--pid", "private-ish"], "--pid: invalid PID mode"),
    (["--uts", "container:x"], "--uts: invalid UTS mode"),
    (["--cgroupns", "shared"], "--cgroupns: invalid CGROUP mode"),
    (["--userns", "keep-id"], "--userns: invalid USER mode"),
    (["--uts", "host", "-h", "name"], "conflicting options: hostname and the UTS mode"),
    (["--ipc", "container:fl-none"], "No such container: fl-none"),
])
def test_bad_namespace_modes_are_125(pallet, argv, message):
    out = pallet("run", *NONE, *argv, "busybox", "true")
    assert out.returncode == 125 and message in out.stderr, out.stderr
    assert pallet("ps", "-aq").stdout == "" and leftovers(pallet) == []
