#!/usr/bin/env python3
"""pallet's own OCI runtime conformance checks (stdlib only, run as root).

This is NOT the opencontainers/runtime-tools validation suite: Debian ships that
suite's library but not its validation/ programs (see docs/conformance.md).
These checks follow the same test list and names where they overlap, drive the
runtime through its command line (create/start/state/kill/delete, plus a few
runc-CLI extras in the `runc_*` tests) and check the container from inside
with a busybox shell.

    native.py [--timeout S] [--only NAME,...] [--json FILE] RUNTIME...

Each RUNTIME is a name on PATH or a path; crun is wrapped for hybrid cgroup
hosts (see runtimes.py). Prints one line per test and a JSON summary if asked.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rootfs import build_rootfs, default_config  # noqa: E402
from runtimes import resolve  # noqa: E402

ID_PREFIX = "pallet-conf-"
CGROUP_PARENT = "/pallet-conf"


class Fail(Exception):
    pass


class Skip(Exception):
    pass


class TestTimeout(Exception):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Fail(msg)


# --------------------------------------------------------------------------- cgroups
def cgroup_mode() -> str:
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "v2"
    return "v1"


def cgroup_file(controller: str, cgpath: str, v1: str, v2: str) -> str:
    rel = cgpath.lstrip("/")
    if cgroup_mode() == "v2":
        return os.path.join("/sys/fs/cgroup", rel, v2)
    return os.path.join("/sys/fs/cgroup", controller, rel, v1)


def cgroup_dirs(cgpath: str) -> list[str]:
    rel = cgpath.lstrip("/")
    if cgroup_mode() == "v2":
        return [os.path.join("/sys/fs/cgroup", rel)]
    out = []
    for c in ("memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio"):
        d = os.path.join("/sys/fs/cgroup", c, rel)
        if os.path.exists(os.path.join("/sys/fs/cgroup", c)):
            out.append(d)
    return out


def remove_cgroup_parent() -> None:
    extra = ["/sys/fs/cgroup/unified" + CGROUP_PARENT, "/sys/fs/cgroup/systemd" + CGROUP_PARENT]
    for d in cgroup_dirs(CGROUP_PARENT) + extra:
        try:
            os.rmdir(d)
        except OSError:
            pass


# --------------------------------------------------------------------------- context
def wait_pid_exit(pid: int, timeout: float) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        return bool(p.poll(timeout * 1000))
    finally:
        os.close(fd)


class Ctx:
    def __init__(self, label: str, argv: list[str], work: str, rootfs: str, deadline: float):
        self.label = label
        self.argv = argv
        self.work = work
        self.rootfs = rootfs
        self.root = os.path.join(work, "state")
        self.ids: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.mounts: list[str] = []
        self.deadline = deadline
        self.n = 0

    # -- runtime invocation
    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TestTimeout("per-test timeout")
        return left

    def rt(self, *args: str, timeout: float = 20, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
           cwd: str | None = None) -> subprocess.CompletedProcess:
        cmd = self.argv + ["--root", self.root] + list(args)
        try:
            return subprocess.run(cmd, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                  timeout=min(timeout, self.left()), cwd=cwd)
        except subprocess.TimeoutExpired as e:
            raise TestTimeout(f"{' '.join(args[:1])} timed out") from e

    def ok(self, *args: str, **kw) -> subprocess.CompletedProcess:
        r = self.rt(*args, **kw)
        if r.returncode != 0:
            err = (r.stderr or b"").decode(errors="replace").strip()[-400:] if isinstance(r.stderr, bytes) else ""
            raise Fail(f"`{args[0]}` exited {r.returncode}: {err}")
        return r

    def state(self, cid: str) -> dict:
        r = self.ok("state", cid)
        return json.loads(r.stdout)

    def status(self, cid: str) -> str | None:
        r = self.rt("state", cid)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout).get("status")

    # -- bundles
    def new_id(self) -> str:
        self.n += 1
        cid = f"{ID_PREFIX}{secrets.token_hex(3)}-{self.n}"
        self.ids.append(cid)
        return cid

    def config(self, script: str | None = None, args: list[str] | None = None) -> dict:
        cfg = default_config(args if args is not None else ["sh", "-c", script or "true"])
        return cfg

    def bundle(self, cfg: dict, rootfs_mount: bool = False) -> str:
        """A bundle with a copy of the busybox rootfs; rootfs_mount=True puts the rootfs on
        its own tmpfs (as an image snapshotter would), unmounted at cleanup."""
        b = tempfile.mkdtemp(prefix="bundle-", dir=self.work)
        os.chmod(b, 0o755)
        if rootfs_mount:
            r = os.path.join(b, "rootfs")
            os.mkdir(r)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "pallet-conf", r], check=True)
            self.mounts.append(r)
            shutil.copytree(self.rootfs, r, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copytree(self.rootfs, os.path.join(b, "rootfs"), symlinks=True, copy_function=os.link)
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        return b

    def create(self, cfg: dict, cid: str | None = None, extra: list[str] | None = None,
               rootfs_mount: bool = False):
        """create a container; returns (cid, bundle, outpath, pidfile)."""
        cid = cid or self.new_id()
        b = self.bundle(cfg, rootfs_mount)
        out = os.path.join(b, "stdout")
        pidfile = os.path.join(b, "pid")
        # the container inherits create's stdio: files, never pipes (a pipe stays open
        # as long as the container runs, and reading it to EOF would hang)
        with open(out, "wb") as fo, open(out, "ab") as fe:
            r = self.rt("create", "--bundle", b, "--pid-file", pidfile, *(extra or []), cid,
                        stdout=fo, stderr=fe)
        if r.returncode != 0:
            raise Fail(f"create exited {r.returncode}: {open(out, errors='replace').read().strip()[-400:]}")
        return cid, b, out, pidfile

    def wait_stopped(self, cid: str, pid: int, timeout: float = 10) -> None:
        if not wait_pid_exit(pid, min(timeout, self.left())):
            raise Fail(f"container process {pid} still running after {timeout}s")
        # the runtime may need a moment to notice
        for _ in range(50):
            if self.status(cid) in ("stopped", None):
                return
            time.sleep(0.02)

    def run_output(self, cfg: dict, timeout: float = 10, rootfs_mount: bool = False) -> str:
        """create + start + wait + delete; return container stdout+stderr."""
        cid, b, out, pidfile = self.create(cfg, rootfs_mount=rootfs_mount)
        pid = int(open(pidfile).read())
        self.ok("start", cid)
        self.wait_stopped(cid, pid, timeout)
        self.ok("delete", cid)
        return open(out, errors="replace").read()

    def cleanup(self) -> None:
        for cid in self.ids:
            try:
                subprocess.run(self.argv + ["--root", self.root, "delete", "--force", cid],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
        self.ids.clear()
        self.procs.clear()
        self.mounts.clear()


# --------------------------------------------------------------------------- tests
TESTS: list[tuple[str, callable]] = []


def test(fn):
    TESTS.append((fn.__name__[2:] if fn.__name__.startswith("t_") else fn.__name__, fn))
    return fn


@test
def t_create(c: Ctx):
    cid, b, out, pidfile = c.create(c.config(args=["true"]))
    st = c.state(cid)
    check(st.get("status") == "created", f"status after create is {st.get('status')!r}")
    check(isinstance(st.get("pid"), int) and st["pid"] > 0, "state has no pid > 0 after create")
    check(os.path.exists(f"/proc/{st['pid']}"), "container process does not exist after create")
    r = c.rt("create", "--bundle", b, cid)
    check(r.returncode != 0, "create with an existing id succeeded")
    r = c.rt("create", "--bundle", os.path.join(c.work, "no-such-bundle"), c.new_id())
    check(r.returncode != 0, "create with a missing bundle succeeded")


@test
def t_state(c: Ctx):
    cid, b, out, pidfile = c.create(c.config(args=["true"]))
    st = c.state(cid)
    for k in ("ociVersion", "id", "status", "pid", "bundle"):
        check(k in st, f"state lacks {k!r}: {sorted(st)}")
    check(st["id"] == cid, "state id differs")
    check(os.path.realpath(st["bundle"]) == os.path.realpath(b), f"state bundle {st['bundle']!r} != {b!r}")
    r = c.rt("state", ID_PREFIX + "does-not-exist")
    check(r.returncode != 0, "state of an unknown id succeeded")


@test
def t_start(c: Ctx):
    cid, b, out, pidfile = c.create(c.config("echo started"))
    check(open(out).read() == "", "process ran before start")
    pid = int(open(pidfile).read())
    c.ok("start", cid)
    c.wait_stopped(cid, pid)
    check("started" in open(out).read(), "no output from the container process after start")
    check(c.status(cid) == "stopped", f"status after exit is {c.status(cid)!r}")
    r = c.rt("start", cid)
    check(r.returncode != 0, "start of a stopped container succeeded")
    r = c.rt("start", ID_PREFIX + "does-not-exist")
    check(r.returncode != 0, "start of an unknown id succeeded")


@test
def t_pidfile(c: Ctx):
    cid, b, out, pidfile = c.create(c.config(args=["true"]))
    check(os.path.exists(pidfile), "--pid-file not written")
    check(int(open(pidfile).read()) == c.state(cid)["pid"], "pid file differs from state pid")


@test
def t_kill(c: Ctx):
    cfg = c.config("trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.05; done")
    cid, b, out, pidfile = c.create(cfg)
    pid = int(open(pidfile).read())
    c.ok("start", cid)
    for _ in range(100):
        if "ready" in open(out).read():
            break
        time.sleep(0.02)
    check(c.status(cid) == "running", f"status while running is {c.status(cid)!r}")
    c.ok("kill", cid)  # default signal: SIGTERM
    c.wait_stopped(cid, pid, 5)
    check("got-term" in open(out).read(), "default kill signal was not SIGTERM")
    check(c.status(cid) == "stopped", "status after kill is not stopped")


@test
def t_killsig(c: Ctx):
    for sig in ("KILL", "SIGKILL", "9"):
        cid, b, out, pidfile = c.create(c.config(args=["sleep", "60"]))
        pid = int(open(pidfile).read())
        c.ok("start", cid)
        c.ok("kill", cid, sig)
        c.wait_stopped(cid, pid, 5)
        check(c.status(cid) == "stopped", f"kill {sig}: not stopped")
        c.ok("delete", cid)


@test
def t_kill_created(c: Ctx):
    cid, b, out, pidfile = c.create(c.config(args=["true"]))
    pid = int(open(pidfile).read())
    c.ok("kill", cid, "KILL")
    c.wait_stopped(cid, pid, 5)
    check(c.status(cid) == "stopped", "killing a created container did not stop it")


@test
def t_kill_no_effect(c: Ctx):
    cid, b, out, pidfile = c.create(c.config(args=["true"]))
    pid = int(open(pidfile).read())
    c.ok("start", cid)
    c.wait_stopped(cid, pid)
    r = c.rt("kill", cid, "KILL")
    check(r.returncode != 0, "kill of a stopped container did not report an error")
    check(c.status(cid) == "stopped", "kill changed a stopped container's state")


@test
def t_delete(c: Ctx):
    cid, b, out, pidfile = c.create(c.config(args=["sleep", "60"]))
    pid = int(open(pidfile).read())
    c.ok("start", cid)
    r = c.rt("delete", cid)
    check(r.returncode != 0, "delete of a running container (no --force) succeeded")
    check(c.status(cid) == "running", "failed delete affected the running container")
    c.ok("kill", cid, "KILL")
    c.wait_stopped(cid, pid)
    c.ok("delete", cid)
    check(c.rt("state", cid).returncode != 0, "state still answers after delete")
    r = c.rt("delete", ID_PREFIX + "does-not-exist")
    check(r.returncode != 0, "delete of an unknown id succeeded")


@test
def t_delete_force(c: Ctx):
    cid, b, out, pidfile = c.create(c.config(args=["sleep", "60"]))
    pid = int(open(pidfile).read())
    c.ok("start", cid)
    c.ok("delete", "--force", cid)
    check(wait_pid_exit(pid, 5), "delete --force left the process running")
    check(c.rt("state", cid).returncode != 0, "state still answers after delete --force")


@test
def t_delete_resources(c: Ctx):
    cfg = c.config(args=["true"])
    cid = c.new_id()
    cgpath = f"{CGROUP_PARENT}/{cid}"
    cfg["linux"]["cgroupsPath"] = cgpath
    cfg["linux"]["resources"]["pids"] = {"limit": 100}
    cid, b, out, pidfile = c.create(cfg, cid)
    dirs = [d for d in cgroup_dirs(cgpath) if os.path.isdir(d)]
    check(dirs, f"no cgroup directory for {cgpath} after create")
    pid = int(open(pidfile).read())
    c.ok("start", cid)
    c.wait_stopped(cid, pid)
    c.ok("delete", cid)
    left = [d for d in dirs if os.path.exists(d)]
    check(not left, f"cgroups left after delete: {left}")


@test
def t_config_updates_without_affect(c: Ctx):
    cid, b, out, pidfile = c.create(c.config("echo original"))
    cfg = c.config("echo changed")
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(cfg, f)
    pid = int(open(pidfile).read())
    c.ok("start", cid)
    c.wait_stopped(cid, pid)
    o = open(out).read()
    check("original" in o and "changed" not in o, f"config change after create took effect: {o!r}")


@test
def t_process(c: Ctx):
    cfg = c.config('echo "foo=$FOO"; pwd; echo "$0 $1"', args=None)
    cfg["process"]["args"] = ["sh", "-c", 'echo "foo=$FOO"; pwd; echo "args=$0,$1"', "a0", "a1"]
    cfg["process"]["env"].append("FOO=bar baz")
    cfg["process"]["cwd"] = "/tmp"
    o = c.run_output(cfg)
    check("foo=bar baz" in o, f"env not applied: {o!r}")
    check("\n/tmp\n" in "\n" + o, f"cwd not applied: {o!r}")
    check("args=a0,a1" in o, f"args not passed: {o!r}")


@test
def t_process_user(c: Ctx):
    cfg = c.config("id -u; id -g; id -G")
    cfg["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [1002, 1003]}
    lines = c.run_output(cfg).split()
    check(lines[:2] == ["1000", "1001"], f"uid/gid: {lines}")
    check({"1002", "1003"} <= set(lines[2:]), f"additionalGids missing: {lines}")


@test
def t_process_rlimits(c: Ctx):
    cfg = c.config("grep 'Max open files' /proc/self/limits; grep 'Max processes' /proc/self/limits")
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 1000, "hard": 1001},
                                 {"type": "RLIMIT_NPROC", "soft": 500, "hard": 501}]
    o = c.run_output(cfg)
    check(o.split("\n")[0].split()[3:5] == ["1000", "1001"], f"RLIMIT_NOFILE: {o!r}")
    check("500" in o and "501" in o, f"RLIMIT_NPROC: {o!r}")


@test
def t_process_capabilities(c: Ctx):
    cfg = c.config("grep ^Cap /proc/self/status")
    caps = ["CAP_CHOWN", "CAP_KILL"]  # bits 0 and 5
    cfg["process"]["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps,
                                      "inheritable": [], "ambient": []}
    o = c.run_output(cfg)
    got = {ln.split(":")[0]: int(ln.split()[1], 16) for ln in o.splitlines() if ln.startswith("Cap")}
    check(got.get("CapBnd") == 0x21, f"CapBnd {got.get('CapBnd', 0):#x} != 0x21")
    check(got.get("CapEff") == 0x21, f"CapEff {got.get('CapEff', 0):#x} != 0x21")
    check(got.get("CapPrm") == 0x21, f"CapPrm {got.get('CapPrm', 0):#x} != 0x21")


@test
def t_process_capabilities_ambient(c: Ctx):
    cfg = c.config("grep ^Cap /proc/self/status")
    caps = ["CAP_NET_BIND_SERVICE"]  # bit 10
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
    cfg["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted",
                                                        "inheritable", "ambient")}
    o = c.run_output(cfg)
    got = {ln.split(":")[0]: int(ln.split()[1], 16) for ln in o.splitlines() if ln.startswith("Cap")}
    check(got.get("CapAmb") == 0x400 and got.get("CapEff") == 0x400,
          f"non-root ambient caps: {o!r}")


@test
def t_process_no_new_privileges(c: Ctx):
    cfg = c.config("grep NoNewPrivs /proc/self/status")
    cfg["process"]["noNewPrivileges"] = True
    check("1" in c.run_output(cfg), "NoNewPrivs not set")
    cfg["process"]["noNewPrivileges"] = False
    check("0" in c.run_output(cfg), "NoNewPrivs set although noNewPrivileges is false")


@test
def t_process_oom_score_adj(c: Ctx):
    cfg = c.config("cat /proc/self/oom_score_adj")
    cfg["process"]["oomScoreAdj"] = 500
    o = c.run_output(cfg).strip()
    check(o == "500", f"oom_score_adj is {o!r}")


@test
def t_process_umask(c: Ctx):
    cfg = c.config("umask")
    cfg["process"]["user"]["umask"] = 0o077
    o = c.run_output(cfg).strip()
    check(o.endswith("077"), f"umask is {o!r}")


@test
def t_hostname(c: Ctx):
    cfg = c.config("hostname")
    cfg["hostname"] = "pallet-conformance"
    o = c.run_output(cfg).strip()
    check(o == "pallet-conformance", f"hostname is {o!r}")


@test
def t_root_readonly(c: Ctx):
    cfg = c.config("touch /x 2>/dev/null && echo wrote || echo ro")
    cfg["root"]["readonly"] = True
    check(c.run_output(cfg).strip() == "ro", "readonly root is writable")
    cfg["root"]["readonly"] = False
    check(c.run_output(cfg).strip() == "wrote", "read-write root is not writable")


@test
def t_mounts(c: Ctx):
    hostdir = tempfile.mkdtemp(prefix="bind-", dir=c.work)
    with open(os.path.join(hostdir, "f"), "w") as f:
        f.write("from-host\n")
    cfg = c.config("cat /mnt/bind/f; awk '$2==\"/mnt/tmp\"' /proc/mounts; "
                   "touch /mnt/robind/x 2>/dev/null && echo robind-writable; stat -c %a /mnt/tmp")
    cfg["mounts"] += [
        {"destination": "/mnt/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "size=1m", "mode=700"]},
        {"destination": "/mnt/bind", "type": "bind", "source": hostdir, "options": ["rbind", "rw"]},
        {"destination": "/mnt/robind", "type": "bind", "source": hostdir, "options": ["bind", "ro"]},
    ]
    o = c.run_output(cfg)
    check("from-host" in o, f"bind mount content missing: {o!r}")
    check("tmpfs" in o and "nosuid" in o and "nodev" in o, f"tmpfs mount/options missing: {o!r}")
    check("robind-writable" not in o, "ro bind mount is writable")
    check(o.strip().endswith("700"), f"tmpfs mode=700 not applied: {o!r}")


@test
def t_linux_masked_paths(c: Ctx):
    # a masked file is /dev/null bind-mounted over it (reads empty, writes vanish);
    # a masked directory is an empty read-only tmpfs
    cfg = c.config("wc -c < /proc/timer_list; ls /sys/firmware | wc -l; wc -c < /etc/hostname; "
                   "echo x > /etc/hostname; wc -c < /etc/hostname; "
                   "touch /sys/firmware/x 2>/dev/null && echo masked-dir-writable")
    cfg["root"]["readonly"] = False
    cfg["linux"]["maskedPaths"].append("/etc/hostname")
    o = c.run_output(cfg).split()
    check(o[:4] == ["0", "0", "0", "0"], f"masked paths readable: {o}")
    check("masked-dir-writable" not in o, "masked directory is writable")


@test
def t_linux_readonly_paths(c: Ctx):
    cfg = c.config("awk '$2==\"/proc/sys\" {print $4}' /proc/mounts | cut -d, -f1; "
                   "touch /mnt/x 2>/dev/null && echo mnt-writable; touch /tmp/x && echo tmp-ok")
    cfg["root"]["readonly"] = False
    cfg["linux"]["readonlyPaths"].append("/mnt")
    o = c.run_output(cfg)
    check((o.split() or [""])[0] == "ro", f"/proc/sys not mounted ro: {o!r}")
    check("mnt-writable" not in o, "readonly path /mnt is writable")
    check("tmp-ok" in o, "readonlyPaths leaked to the rest of the rootfs")


@test
def t_linux_sysctl(c: Ctx):
    cfg = c.config("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni")
    cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"}
    o = c.run_output(cfg).split()
    check(o == ["1", "1234"], f"sysctls not applied: {o}")


NS_FILES = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt", "cgroup": "cgroup"}


@test
def t_linux_ns_nopath(c: Ctx):
    cfg = c.config("echo pid=$$; for n in pid net ipc uts mnt cgroup; do echo $n $(readlink /proc/self/ns/$n); done")
    cfg["linux"]["namespaces"] = [{"type": t} for t in NS_FILES]
    o = c.run_output(cfg)
    check("pid=1\n" in o, f"process is not pid 1 in its pid namespace: {o!r}")
    inside = dict(ln.split(" ", 1) for ln in o.splitlines() if " " in ln)
    for t, f in NS_FILES.items():
        check(inside.get(f) and inside[f] != os.readlink(f"/proc/self/ns/{f}"),
              f"{t} namespace not new: {inside.get(f)}")


@test
def t_linux_ns_itype(c: Ctx):
    cfg = c.config("for n in net ipc uts mnt; do echo $n $(readlink /proc/self/ns/$n); done")
    cfg["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"}]
    cfg.pop("hostname", None)  # setting a hostname requires a uts namespace
    o = c.run_output(cfg)
    inside = dict(ln.split(" ", 1) for ln in o.splitlines() if " " in ln)
    for f in ("net", "ipc", "uts"):
        check(inside.get(f) == os.readlink(f"/proc/self/ns/{f}"),
              f"{f}: a namespace not listed in config was not inherited from the runtime")


@test
def t_linux_ns_path(c: Ctx):
    p = subprocess.Popen(["unshare", "--net", "--uts", "--ipc", "sleep", "60"])
    c.procs.append(p)
    for _ in range(100):
        if os.readlink(f"/proc/{p.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
            break
        time.sleep(0.01)
    cfg = c.config("for n in net uts ipc; do echo $n $(readlink /proc/self/ns/$n); done")
    cfg["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"}] + [
        {"type": t, "path": f"/proc/{p.pid}/ns/{f}"} for t, f in (("network", "net"), ("uts", "uts"), ("ipc", "ipc"))]
    o = c.run_output(cfg)
    inside = dict(ln.split(" ", 1) for ln in o.splitlines() if " " in ln)
    for f in ("net", "uts", "ipc"):
        check(inside.get(f) == os.readlink(f"/proc/{p.pid}/ns/{f}"), f"{f} namespace path not joined")


@test
def t_linux_uid_mappings(c: Ctx):
    cfg = c.config("cat /proc/self/uid_map /proc/self/gid_map; id -u")
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    # sysfs/cgroup mounts need ownership of the netns; keep the spec's, as runc spec --rootless does not
    o = c.run_output(cfg).split()
    check(o[:3] == ["0", "100000", "65536"], f"uid_map: {o}")
    check(o[3:6] == ["0", "100000", "65536"], f"gid_map: {o}")
    check(o[-1] == "0", f"uid inside: {o}")


@test
def t_linux_devices(c: Ctx):
    cfg = c.config("ls -l /dev/pallet0 | cut -c1-10; echo x > /dev/pallet0 && echo write-ok; stat -c '%t:%T' /dev/pallet0")
    cfg["linux"]["devices"] = [{"path": "/dev/pallet0", "type": "c", "major": 1, "minor": 3,
                                "fileMode": 0o666, "uid": 0, "gid": 0}]
    cfg["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
    o = c.run_output(cfg).split()
    check(o[:1] == ["crw-rw-rw-"], f"device node/mode: {o}")
    check("write-ok" in o, f"device not writable: {o}")
    check(o[-1] == "1:3", f"device numbers: {o}")


@test
def t_default_devices(c: Ctx):
    cfg = c.config("for d in null zero full random urandom tty; do test -c /dev/$d || echo missing-$d; done; "
                   "for l in fd stdin stdout stderr ptmx; do test -L /dev/$l || echo nolink-$l; done; "
                   "echo x > /dev/null && head -c 4 /dev/zero | wc -c")
    o = c.run_output(cfg)
    check("missing-" not in o, f"default devices missing: {o!r}")
    check("nolink-" not in o, f"default /dev symlinks missing: {o!r}")
    check(o.strip().endswith("4"), f"default devices not usable: {o!r}")


@test
def t_linux_devices_cgroup(c: Ctx):
    # default deny-all device rule: mknod of a non-default device must not be usable
    cfg = c.config("mknod /tmp/mem c 1 1 2>/dev/null; head -c 1 /tmp/mem >/dev/null 2>&1 && echo read-mem || echo denied")
    cfg["root"]["readonly"] = False
    o = c.run_output(cfg).strip()
    check(o == "denied", f"device cgroup allows /dev/mem: {o!r}")


def _cgroup_case(c: Ctx, resources: dict, files: list[tuple[str, str, str, str]]):
    cfg = c.config(args=["true"])
    cid = c.new_id()
    cgpath = f"{CGROUP_PARENT}/{cid}"
    cfg["linux"]["cgroupsPath"] = cgpath
    cfg["linux"]["resources"].update(resources)
    c.create(cfg, cid)
    for controller, v1, v2, want in files:
        path = cgroup_file(controller, cgpath, v1, v2)
        check(os.path.exists(path), f"{path} missing")
        got = open(path).read().strip()
        check(got == want, f"{path}: {got!r} != {want!r}")


@test
def t_linux_cgroups_memory(c: Ctx):
    _cgroup_case(c, {"memory": {"limit": 64 << 20}},
                 [("memory", "memory.limit_in_bytes", "memory.max", str(64 << 20))])


@test
def t_linux_cgroups_pids(c: Ctx):
    _cgroup_case(c, {"pids": {"limit": 64}}, [("pids", "pids.max", "pids.max", "64")])


@test
def t_linux_cgroups_cpus(c: Ctx):
    v2 = cgroup_mode() == "v2"
    _cgroup_case(c, {"cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"}},
                 [("cpu", "cpu.shares", "cpu.weight", "20" if v2 else "512"),
                  ("cpu", "cpu.cfs_quota_us", "cpu.max", "50000 100000" if v2 else "50000"),
                  ("cpuset", "cpuset.cpus", "cpuset.cpus", "0")])


@test
def t_linux_cgroups_in_container(c: Ctx):
    cfg = c.config("cat /proc/self/cgroup | head -3")
    cid = c.new_id()
    cgpath = f"{CGROUP_PARENT}/{cid}"
    cfg["linux"]["cgroupsPath"] = cgpath
    cid, b, out, pidfile = c.create(cfg, cid)
    pid = int(open(pidfile).read())
    host = open(f"/proc/{pid}/cgroup").read()
    check(cgpath in host, f"container process not in {cgpath}: {host!r}")


@test
def t_linux_seccomp(c: Ctx):
    cfg = c.config("mkdir /tmp/x 2>&1; echo rc=$?; touch /tmp/y && echo touch-ok")
    cfg["root"]["readonly"] = False
    cfg["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    o = c.run_output(cfg)
    check("rc=1" in o and "Operation not permitted" in o, f"mkdir not denied with EPERM: {o!r}")
    check("touch-ok" in o, f"allowed syscalls broken: {o!r}")


def _propagation(c: Ctx, mode: str, want) -> None:
    cfg = c.config("awk '$5==\"/\" {print $0}' /proc/self/mountinfo")
    cfg["linux"]["rootfsPropagation"] = mode
    # the rootfs is its own mount, as with an overlay snapshot: a plain directory on a
    # private host mount can only ever be bound private
    o = c.run_output(cfg, rootfs_mount=True)
    check(o.strip() and want(o), f"{mode} root propagation, mountinfo: {o.strip()!r}")


@test
def t_linux_rootfs_propagation_private(c: Ctx):
    _propagation(c, "private", lambda o: "shared:" not in o and "master:" not in o)


@test
def t_linux_rootfs_propagation_shared(c: Ctx):
    _propagation(c, "shared", lambda o: "shared:" in o)


@test
def t_linux_rootfs_propagation_unbindable(c: Ctx):
    _propagation(c, "unbindable", lambda o: "unbindable" in o)


def _hook(path: str, code: int = 0) -> dict:
    return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {path}; exit {code}"], "timeout": 10}


@test
def t_hooks(c: Ctx):
    d = tempfile.mkdtemp(prefix="hooks-", dir=c.work)
    cfg = c.config(args=["true"])
    cfg["hooks"] = {"prestart": [_hook(f"{d}/prestart")], "createRuntime": [_hook(f"{d}/createRuntime")],
                    "poststart": [_hook(f"{d}/poststart")], "poststop": [_hook(f"{d}/poststop")]}
    cid, b, out, pidfile = c.create(cfg)
    for h in ("prestart", "createRuntime"):
        check(os.path.exists(f"{d}/{h}"), f"{h} hook did not run during create")
    check(not os.path.exists(f"{d}/poststart"), "poststart hook ran before start")
    pid = int(open(pidfile).read())
    c.ok("start", cid)
    c.wait_stopped(cid, pid)
    check(os.path.exists(f"{d}/poststart"), "poststart hook did not run")
    check(not os.path.exists(f"{d}/poststop"), "poststop hook ran before delete")
    c.ok("delete", cid)
    check(os.path.exists(f"{d}/poststop"), "poststop hook did not run on delete")


@test
def t_hooks_stdin(c: Ctx):
    d = tempfile.mkdtemp(prefix="hooks-", dir=c.work)
    cfg = c.config(args=["true"])
    cfg["hooks"] = {"prestart": [_hook(f"{d}/prestart")], "poststop": [_hook(f"{d}/poststop")]}
    cid, b, out, pidfile = c.create(cfg)
    st = json.loads(open(f"{d}/prestart").read())
    check(st.get("id") == cid, f"hook state id: {st}")
    check(st.get("pid") == int(open(pidfile).read()), f"hook state pid: {st}")
    check(os.path.realpath(st.get("bundle", "")) == os.path.realpath(b), f"hook state bundle: {st}")
    check(st.get("status") in ("creating", "created"), f"prestart state status: {st}")
    check("ociVersion" in st, f"hook state lacks ociVersion: {st}")
    c.ok("delete", "--force", cid)
    st = json.loads(open(f"{d}/poststop").read())
    check(st.get("id") == cid, f"poststop state: {st}")


@test
def t_prestart_fail(c: Ctx):
    d = tempfile.mkdtemp(prefix="hooks-", dir=c.work)
    cfg = c.config("echo ran")
    cfg["hooks"] = {"prestart": [_hook(f"{d}/p1", 1)], "poststop": [_hook(f"{d}/poststop")]}
    cid = c.new_id()
    b = c.bundle(cfg)
    out = os.path.join(b, "stdout")
    with open(out, "wb") as fo:
        r = c.rt("create", "--bundle", b, cid, stdout=fo, stderr=subprocess.STDOUT)
    check(r.returncode != 0, "create succeeded although a prestart hook failed")
    st = c.status(cid)
    check(st in (None, "stopped"), f"container left {st} after failed prestart")
    check("ran" not in open(out).read(), "process ran although prestart failed")


@test
def t_poststart_fail(c: Ctx):
    d = tempfile.mkdtemp(prefix="hooks-", dir=c.work)
    cfg = c.config("echo ran")
    cfg["hooks"] = {"poststart": [_hook(f"{d}/p1", 1), _hook(f"{d}/p2")]}
    cid, b, out, pidfile = c.create(cfg)
    r = c.rt("start", cid)
    pid = int(open(pidfile).read())
    wait_pid_exit(pid, 5)
    check(r.returncode == 0, "start failed because a poststart hook failed (spec: warn and continue)")
    check(os.path.exists(f"{d}/p2"), "later poststart hook skipped after a failure")


@test
def t_poststop_fail(c: Ctx):
    d = tempfile.mkdtemp(prefix="hooks-", dir=c.work)
    cfg = c.config(args=["true"])
    cfg["hooks"] = {"poststop": [_hook(f"{d}/p1", 1), _hook(f"{d}/p2")]}
    cid, b, out, pidfile = c.create(cfg)
    pid = int(open(pidfile).read())
    c.ok("start", cid)
    c.wait_stopped(cid, pid)
    r = c.rt("delete", cid)
    check(r.returncode == 0, "delete failed because a poststop hook failed (spec: warn and continue)")
    check(os.path.exists(f"{d}/p2"), "later poststop hook skipped after a failure")


# ---- runc command-line extras (not in the OCI runtime spec; pallet-runc promises runc's CLI)
@test
def t_runc_run_exit_code(c: Ctx):
    cid = c.new_id()
    b = c.bundle(c.config("exit 7"))
    with open(os.path.join(b, "out"), "wb") as fo:
        r = c.rt("run", "--bundle", b, cid, stdout=fo, stderr=subprocess.STDOUT)
    check(r.returncode == 7, f"run returned {r.returncode}, container exited 7")
    check(c.rt("state", cid).returncode != 0, "run without --keep left the container")


@test
def t_runc_exec(c: Ctx):
    cid, b, out, pidfile = c.create(c.config(args=["sleep", "60"]))
    c.ok("start", cid)
    r = c.ok("exec", cid, "sh", "-c", "echo exec-$HOSTNAME; readlink /proc/1/exe")
    o = r.stdout.decode()
    check("exec-" in o, f"exec output: {o!r}")
    r = c.rt("exec", cid, "sh", "-c", "exit 3")
    check(r.returncode == 3, f"exec exit code {r.returncode} != 3")


@test
def t_runc_list(c: Ctx):
    cid, b, out, pidfile = c.create(c.config(args=["true"]))
    r = c.ok("list", "--format", "json")
    items = json.loads(r.stdout or b"null") or []
    ids = {i.get("id") for i in items}
    check(cid in ids, f"list lacks {cid}: {ids}")
    r = c.ok("list", "-q")
    check(cid in r.stdout.decode().split(), "list -q lacks the id")


@test
def t_runc_spec(c: Ctx):
    d = tempfile.mkdtemp(prefix="spec-", dir=c.work)
    c.ok("spec", cwd=d)
    cfg = json.load(open(os.path.join(d, "config.json")))
    check(cfg.get("ociVersion", "").startswith("1."), f"spec ociVersion {cfg.get('ociVersion')!r}")
    check(cfg.get("root", {}).get("path") == "rootfs", "spec root.path is not rootfs")


@test
def t_runc_pause_resume(c: Ctx):
    cid, b, out, pidfile = c.create(c.config(args=["sleep", "60"]))
    c.ok("start", cid)
    c.ok("pause", cid)
    check(c.status(cid) == "paused", f"status after pause: {c.status(cid)!r}")
    c.ok("resume", cid)
    check(c.status(cid) == "running", f"status after resume: {c.status(cid)!r}")


# --------------------------------------------------------------------------- runner
class _Alarm(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Alarm()


def run_suite(spec: str, timeout: float, only: set[str] | None, workbase: str, rootfs: str,
              verbose: bool = True) -> dict:
    try:
        label, argv, note = resolve(spec)
    except FileNotFoundError as e:
        return {"runtime": spec, "error": str(e), "results": {}}
    work = tempfile.mkdtemp(prefix=f"conf-{label}-", dir=workbase)
    os.chmod(work, 0o755)  # user-namespace tests: mapped uids must reach the bundles
    results: dict[str, dict] = {}
    if verbose and note:
        print(f"# {label}: {note}", flush=True)
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        for name, fn in TESTS:
            if only and name not in only:
                continue
            t0 = time.monotonic()
            ctx = Ctx(label, argv, work, rootfs, t0 + timeout)
            status, msg = "pass", ""
            signal.setitimer(signal.ITIMER_REAL, timeout + 2)
            try:
                fn(ctx)
            except Fail as e:
                status, msg = "fail", str(e)
            except Skip as e:
                status, msg = "skip", str(e)
            except (TestTimeout, _Alarm) as e:
                status, msg = "timeout", str(e) or f"exceeded {timeout}s"
            except Exception as e:  # harness or unexpected output
                status, msg = "error", f"{type(e).__name__}: {e}"
                if os.environ.get("PALLET_CONF_DEBUG"):
                    traceback.print_exc()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                ctx.cleanup()
            dt = time.monotonic() - t0
            results[name] = {"status": status, "message": msg, "seconds": round(dt, 2)}
            if verbose:
                print(f"{label:>12} {status:>7} {name:<34} {dt:5.2f}s {msg[:160]}", flush=True)
    finally:
        signal.signal(signal.SIGALRM, old)
        shutil.rmtree(work, ignore_errors=True)
        remove_cgroup_parent()
    return {"runtime": label, "path": argv[-1], "note": note, "results": results}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runtimes", nargs="*", default=["runc"])
    ap.add_argument("--timeout", type=float, default=30.0, help="per-test timeout (s)")
    ap.add_argument("--only", help="comma-separated test names")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--list", action="store_true", help="list test names and exit")
    ap.add_argument("--workdir", default="/tmp", help="where bundles are made")
    a = ap.parse_args()
    if a.list:
        print("\n".join(n for n, _ in TESTS))
        return 0
    if os.geteuid() != 0:
        print("native.py: must run as root", file=sys.stderr)
        return 2
    base = tempfile.mkdtemp(prefix="pallet-conf-", dir=a.workdir)
    os.chmod(base, 0o755)
    try:
        rootfs = build_rootfs(os.path.join(base, "rootfs"))
        only = set(a.only.split(",")) if a.only else None
        runs = [run_suite(spec, a.timeout, only, base, rootfs) for spec in a.runtimes]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"suite": "pallet-native", "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
