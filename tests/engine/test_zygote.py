"""The zygote: the first container command starts it, later ones run in its warm workers,
it serves root only and allow-listed calls, idles out, and its containers outlive it.
"""

from __future__ import annotations

import _socket
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from pallet.engine import zygote
from tests.engine.conftest import PALLET, leftovers

pytestmark = pytest.mark.root


def ppid_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def zygote_pid(run_root: str) -> int:
    with open(zygote.cli_path(run_root, zygote.PID_NAME)) as f:
        return int(f.read())


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def smaps(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return {ln.split(":")[0]: int(ln.split()[1]) for ln in f if ln.split()[-1] == "kB"}


def test_first_command_starts_it_and_monitors_are_its_forks(pallet):
    sock = zygote.cli_path(pallet.run_root)
    assert not os.path.exists(sock)
    cid = pallet("run", "-d", "busybox", "sleep", "60", check=True).stdout.strip()
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    zpid = zygote_pid(pallet.run_root)
    with open(f"/proc/{zpid}/cmdline", "rb") as f:
        assert f.read().startswith(f"pallet-zygote {pallet.run_root}".encode())
    from pallet.engine.monitor import alive

    mon = alive(pallet.engine().run_dir(cid))
    # Forked by the zygote's lean monitor mother, not by a worker nor the zygote itself.
    mother = ppid_of(mon)
    assert ppid_of(mother) == zpid
    with open(f"/proc/{mother}/cmdline", "rb") as f:
        assert f.read().startswith(f"pallet-monitor-mother {pallet.run_root}".encode())
    with open(f"/proc/{mon}/cmdline", "rb") as f:
        assert f.read().startswith(f"pallet-monitor {cid} {pallet.root}".encode())
    # The monitor holds none of the zygote's fds (socket, lock): only its own.
    targets = {os.readlink(f"/proc/{mon}/fd/{fd}") for fd in os.listdir(f"/proc/{mon}/fd")}
    names = [os.path.basename(zygote.cli_path("", n)) for n in (zygote.LOCK_NAME, zygote.SOCKET_NAME)]
    assert not any(n in t for n in names for t in targets)
    # A second command reuses the same zygote.
    assert pallet("ps", "-q").stdout.strip() == cid[:12]
    assert zygote_pid(pallet.run_root) == zpid
    pallet("rm", "-f", cid, check=True)


def test_containers_outlive_the_zygote_and_a_new_one_takes_over(pallet):
    env = dict(pallet.env, PALLET_ZYGOTE_IDLE_TIMEOUT="1")
    out = subprocess.run([PALLET, "--root", pallet.root, "run", "-d", "--name", "long",
                          "busybox", "sh", "-c", "while :; do echo tick; sleep 0.2; done"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cid = out.stdout.strip()
    zpid = zygote_pid(pallet.run_root)
    assert gone(zpid, 10), "the zygote did not idle out"
    assert not os.path.exists(zygote.cli_path(pallet.run_root))
    from pallet.engine.monitor import alive

    mon = alive(pallet.engine().run_dir(cid))
    assert mon and ppid_of(mon) != zpid  # reparented
    n = pallet("logs", "long").stdout.count("tick")
    time.sleep(0.5)
    assert pallet("logs", "long").stdout.count("tick") > n  # still logging
    assert zygote_pid(pallet.run_root) != zpid  # `logs` started a new one
    # Killed outright, same story; and a stale socket file is replaced.
    os.kill(zygote_pid(pallet.run_root), signal.SIGKILL)
    assert "Up " in pallet("ps").stdout
    pallet("stop", "-t", "1", "long", check=True)
    assert pallet("inspect", "-f", "{{.State.Status}}", "long").stdout.strip() == "exited"
    pallet("rm", "long", check=True)
    assert leftovers(pallet, [cid]) == []


def test_concurrent_first_commands_start_one_zygote(pallet):
    procs = [subprocess.Popen([PALLET, "--root", pallet.root, "ps", "-a"], env=pallet.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and out.startswith("CONTAINER ID"), err
    zpid = zygote_pid(pallet.run_root)
    others = [pid for pid in os.listdir("/proc") if pid.isdigit() and int(pid) != zpid
              and _cmdline(int(pid)).startswith(f"pallet-zygote {pallet.run_root}".encode())]
    assert others == []


def test_new_code_on_disk_gets_a_new_zygote(pallet):
    """After an upgrade or a checkout, commands must not run in a zygote of the old code
    (it would run old code, or refuse commands it does not know)."""
    import pallet as pkg

    env = dict(pallet.env, PALLET_ZYGOTE_IDLE_TIMEOUT="2")
    subprocess.run([PALLET, "--root", pallet.root, "ps"], env=env, check=True,
                   capture_output=True, timeout=60)
    old = zygote_pid(pallet.run_root)
    engine_dir = os.path.join(os.path.dirname(pkg.__file__), "engine")
    st = os.stat(engine_dir)
    os.utime(engine_dir, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        out = subprocess.run([PALLET, "--root", pallet.root, "ps", "-a"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.startswith("CONTAINER ID"), out.stderr
        new = zygote_pid(pallet.run_root)
        assert new != old and _cmdline(new).startswith(b"pallet-zygote")
        assert gone(old, 15), "the old zygote, unreached, did not idle out"
    finally:
        os.utime(engine_dir, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_module_edited_in_place_ends_the_zygote(pallet):
    """An edit that leaves the package directories' mtimes alone (an editor writing the file
    in place) must not leave commands running the old code: the zygote watches the modules
    (inotify) and exits; the next command starts one of the new code."""
    import uuid

    import pallet as pkg

    subprocess.run([PALLET, "--root", pallet.root, "ps"], env=pallet.env, check=True,
                   capture_output=True, timeout=60)
    old = zygote_pid(pallet.run_root)
    assert old and _cmdline(old).startswith(b"pallet-zygote")
    engine_dir = os.path.join(os.path.dirname(pkg.__file__), "engine")
    st = os.stat(engine_dir)
    probe = os.path.join(engine_dir, f"_zygote_probe_{uuid.uuid4().hex[:8]}.txt")
    try:
        with open(probe, "w") as f:  # not a module: the zygote stays
            f.write("x")
        assert not gone(old, 0.5)
    finally:
        os.unlink(probe)
        os.utime(engine_dir, ns=(st.st_atime_ns, st.st_mtime_ns))
    # A module opened for writing and closed, as an editor saving in place does (nothing
    # written here, so the tree is never at risk).
    open(os.path.join(engine_dir, "store.py"), "ab").close()
    assert gone(old, 10), "the zygote of the old code is still running"
    out = subprocess.run([PALLET, "--root", pallet.root, "ps", "-a"], env=pallet.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("CONTAINER ID"), out.stderr
    new = zygote_pid(pallet.run_root)
    assert new and new != old


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _request(run_root: str, request: dict, fds: list[int]) -> list[dict]:
    s = zygote.connect(run_root, zygote.cli_socket_name())
    try:
        zygote.send_msg(s, request, fds)
        out = []
        while True:
            msg, _ = zygote.recv_msg(s, 0)
            if msg is None:
                return out
            out.append(msg)
    finally:
        s.close()


def test_only_allow_listed_calls_are_served(pallet, tmp_path):
    pallet("ps", check=True)  # starts the zygote
    marker = tmp_path / "pwned"
    msgs = _request(pallet.run_root, {"call": "os:system", "argv": [f"touch {marker}"]}, [])
    assert msgs == [{"error": "the zygote does not serve 'os:system'"}]
    r, w = os.pipe()
    try:
        msgs = _request(pallet.run_root, {"call": "cli", "argv": ["daemon"]}, [w, w, w])
        os.close(w)
        assert msgs[-1] == {"exit": 125} and "pid" in msgs[0]
        assert b"does not run 'daemon'" in os.read(r, 4096)
    finally:
        os.close(r)
    assert not marker.exists()


def test_non_root_peers_are_refused(pallet):
    pallet("ps", check=True)
    sock = zygote.cli_path(pallet.run_root)

    def as_nobody(chmod: bool) -> str:
        if chmod:
            os.chmod(sock, 0o666)
            os.chmod(pallet.run_root, 0o755)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.close(r)
                os.setgid(65534)
                os.setuid(65534)
                try:
                    s = zygote.connect(pallet.run_root, zygote.cli_socket_name())
                    msg, _ = zygote.recv_msg(s, 0)  # refused at accept, before any request
                    os.write(w, repr(msg).encode())
                except OSError as e:
                    os.write(w, type(e).__name__.encode())
            finally:
                os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        with os.fdopen(r) as f:
            return f.read()

    try:
        assert as_nobody(False) == "PermissionError"  # the socket is 0600 (and its dir 0700)
        # Even through a socket someone made world-writable, SO_PEERCRED says no.
        assert "serves root only" in as_nobody(True)
    finally:
        os.chmod(sock, 0o600)
        os.chmod(pallet.run_root, 0o700)


def test_signals_reach_the_container_through_the_worker(pallet):
    p = subprocess.Popen([PALLET, "--root", pallet.root, "run", "--rm", "busybox", "sh", "-c",
                          "trap 'echo got-term; exit 7' TERM; echo ready; "
                          "while :; do sleep 0.1; done"], env=pallet.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    assert (p.returncode, out) == (7, b"got-term\n"), err
    assert leftovers(pallet) == []


def test_a_killed_client_takes_its_worker_with_it(pallet):
    pallet("run", "-d", "--name", "svc", "busybox", "sleep", "60", check=True)
    zpid = zygote_pid(pallet.run_root)

    def workers() -> set[int]:
        return {int(p) for p in os.listdir("/proc") if p.isdigit() and ppid_of_safe(int(p)) == zpid
                and not _cmdline(int(p)).startswith(b"pallet-monitor")}

    before = workers()
    p = subprocess.Popen([PALLET, "--root", pallet.root, "logs", "-f", "svc"], env=pallet.env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not workers() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    new = workers() - before
    assert len(new) == 1
    p.kill()
    p.wait()
    assert gone(new.pop(), 5)
    pallet("rm", "-f", "svc", check=True)


def ppid_of_safe(pid: int) -> int:
    try:
        return ppid_of(pid)
    except (OSError, ValueError, IndexError):
        return 0


def test_the_cli_imports_almost_nothing(pallet):
    pallet("ps", check=True)
    out = subprocess.run([sys.executable, "-X", "importtime", PALLET, "--root", pallet.root, "ps"],
                         env=pallet.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    mods = [ln.split("|")[-1].strip() for ln in out.stderr.splitlines()
            if ln.startswith("import time:") and "imported package" not in ln]
    assert not [m for m in mods if m in ("argparse", "json", "re", "typing", "sqlite3")
                or m.startswith(("pallet.engine.containers", "pallet.image", "pallet.cli."))]
    # pallet, .errors, .cli, .engine, .engine.zygote, .oci, .oci.jsonlite
    assert sum(m.startswith("pallet") for m in mods) <= 7, mods


def test_no_zygote_runs_everything_in_process(pallet):
    env = dict(pallet.env, PALLET_NO_ZYGOTE="1")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PALLET, "--root", pallet.root, *args], env=env,
                              capture_output=True, text=True, timeout=60)

    out = run("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (out.returncode, out.stdout, out.stderr) == (3, "out\n", "err\n")
    assert run("run", "--rm", "busybox", "no-such-command").returncode == 127
    cid = run("run", "-d", "busybox", "sleep", "30").stdout.strip()
    from pallet.engine.monitor import alive

    mon = alive(pallet.engine().run_dir(cid))
    assert ppid_of(mon) == 1 or not _cmdline(ppid_of(mon)).startswith(b"pallet-zygote")
    assert run("rm", "-f", cid).returncode == 0
    assert not os.path.exists(zygote.cli_path(pallet.run_root))
    assert leftovers(pallet, [cid]) == []


def test_idle_monitors_share_the_zygotes_pages(pallet):
    # Awake ones: idle ones sleep in sh after a second (tests/engine/test_monitor_sleep.py).
    pallet.env["PALLET_MONITOR_SLEEP_AFTER"] = "never"
    ids = [pallet("run", "-d", "busybox", "sleep", "60", check=True).stdout.strip()
           for _ in range(3)]
    time.sleep(1.5)
    from pallet.engine.monitor import alive

    eng = pallet.engine()
    for cid in ids:
        m = smaps(alive(eng.run_dir(cid)))
        # A re-executed interpreter has all of its ~3 MiB to itself; a fork of the zygote
        # shares most of its pages with it (measured: ~2 MiB private, ~10 MiB shared).
        assert m["Shared_Dirty"] > 2 * m["Private_Dirty"], m
    pallet("rm", "-f", *ids, check=True)
    assert leftovers(pallet, ids) == []


def test_socket_paths_match_the_engines():
    from pallet.engine.containers import default_run_root

    for root in ("/var/lib/pallet", "/tmp/x", "relative"):
        assert zygote.default_run_root(root) == default_run_root(root)
    assert isinstance(_socket.SO_PEERCRED, int)
