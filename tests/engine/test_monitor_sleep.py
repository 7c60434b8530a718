"""An idle monitor sleeps: it execs /bin/sh blocked in read() (~0.1 MiB private instead of
a CPython's ~1 MiB) and the kernel wakes it with SIGIO (output or EOF on the container's
pipes, a connection to its attach socket), when it execs the lean interpreter again
(pallet.engine.monitor.Monitor._sleep). Nothing a user sees may change: logs, attach, exit
codes, restarts, stop. Real containers, real kernel; the monitor sleeps after 0.3 s here.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from tests.engine.conftest import leftovers

pytestmark = pytest.mark.root

SLEEP_AFTER = "0.3"


@pytest.fixture
def sleepy(pallet):
    pallet.env["PALLET_MONITOR_SLEEP_AFTER"] = SLEEP_AFTER
    return pallet


def monitor_pid(p, cid: str) -> int:
    from pallet.engine.monitor import alive

    return alive(p.engine().run_dir(cid))


def cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def asleep(pid: int) -> bool:
    return os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath("/bin/sh")


def wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def rollup(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if v.strip().endswith("kB"):
                out[k] = int(v.split()[0])
    return out


def ppid_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


def test_an_idle_monitor_sleeps_in_sh_and_stays_the_inits_parent(sleepy):
    p = sleepy
    cid = p("run", "-d", "busybox", "sleep", "60", check=True).stdout.strip()
    mon = monitor_pid(p, cid)
    assert wait_for(lambda: asleep(mon)), cmdline(mon)[:200]
    # `ps` still says whose monitor it is.
    assert cmdline(mon).startswith(f"pallet-monitor {cid} {p.root}\0".encode())
    m = rollup(mon)
    assert m["Private_Dirty"] < 256, m  # an awake forked monitor: ~1000 KiB
    init = int(p("inspect", "-f", "{{.State.Pid}}", cid, check=True).stdout)
    assert ppid_of(init) == mon
    # Nothing about the container changed.
    assert p("ps", "--format", "{{.ID}} {{.Status}}").stdout.startswith(cid[:12] + " Up")
    assert p("exec", cid, "echo", "exec-ok", check=True).stdout == "exec-ok\n"
    p("rm", "-f", cid, check=True)
    assert leftovers(p, [cid]) == []


def test_output_wakes_it_and_every_line_is_logged_in_order(sleepy):
    p = sleepy
    # Pauses longer than SLEEP_AFTER, so the monitor sleeps between lines: each one must wake it.
    cid = p("run", "-d", "busybox", "sh", "-c",
            "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; sleep 0.5; done; sleep 60",
            check=True).stdout.strip()
    mon = monitor_pid(p, cid)
    assert wait_for(lambda: p("logs", cid).stdout.count("out") == 5)
    logs = p("logs", cid)
    assert logs.stdout == "".join(f"out{i}\n" for i in range(1, 6))
    assert logs.stderr == "".join(f"err{i}\n" for i in range(1, 6))
    assert wait_for(lambda: asleep(mon))
    # Output written from outside the init (exec into its stdout) wakes it too.
    p("exec", cid, "sh", "-c", "echo late > /proc/1/fd/1", check=True)
    assert wait_for(lambda: p("logs", "--tail", "1", cid).stdout == "late\n")
    assert monitor_pid(p, cid) == mon
    p("rm", "-f", cid, check=True)
    assert leftovers(p, [cid]) == []


def test_a_burst_racing_the_sleep_loses_nothing(sleepy):
    """Lines spaced about as long as the monitor waits before sleeping: some land while it
    is going to sleep (before sh's trap is set, before the fds are armed)."""
    p = sleepy
    cid = p("run", "-d", "busybox", "sh", "-c",
            "i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo line$i; usleep 290000; done; "
            "sleep 60", check=True).stdout.strip()
    assert wait_for(lambda: p("logs", cid).stdout.count("line") == 40, timeout=30)
    assert p("logs", cid).stdout == "".join(f"line{i}\n" for i in range(1, 41))
    p("rm", "-f", cid, check=True)
    assert leftovers(p, [cid]) == []


def test_attach_and_logs_follow_wake_it(sleepy):
    import subprocess

    from tests.engine.conftest import PALLET

    p = sleepy
    cid = p("run", "-d", "-i", "busybox", "sh", "-c", "read x; echo got-$x",
            check=True).stdout.strip()
    mon = monitor_pid(p, cid)
    assert wait_for(lambda: asleep(mon))
    follow = subprocess.Popen([PALLET, "--root", p.root, "logs", "-f", cid], env=p.env,
                              stdout=subprocess.PIPE, text=True)
    try:
        # Each connection to the attach socket wakes it; stdin goes through to the container.
        r = subprocess.run([PALLET, "--root", p.root, "attach", cid], input="hello\n",
                           env=p.env, capture_output=True, text=True, timeout=30)
        assert (r.returncode, r.stdout) == (0, "got-hello\n"), r.stderr
        assert follow.communicate(timeout=30)[0] == "got-hello\n"
    finally:
        follow.kill()
        follow.wait()
    p("rm", "-f", cid, check=True)
    assert leftovers(p, [cid]) == []


def state(p, cid: str) -> list[str]:
    """ExitCode and Status, from the store: unlike `wait`, nothing that wakes the monitor."""
    return p("inspect", "-f", "{{.State.ExitCode}} {{.State.Status}}", cid).stdout.split()


def test_exit_while_asleep_records_the_code_and_restarts(sleepy):
    p = sleepy
    cid = p("run", "-d", "busybox", "sh", "-c", "sleep 1.5; exit 3", check=True).stdout.strip()
    mon = monitor_pid(p, cid)
    assert wait_for(lambda: asleep(mon))
    assert wait_for(lambda: state(p, cid) == ["3", "exited"])
    # on-failure:1: exits while asleep, restarts once, exits again.
    rid = p("run", "-d", "--restart", "on-failure:1", "busybox", "sh", "-c",
            "sleep 1; exit 4", check=True).stdout.strip()
    assert wait_for(lambda: p("inspect", "-f", "{{.RestartCount}} {{.State.Status}}",
                              rid).stdout.split() == ["1", "exited"], timeout=30)
    assert p("inspect", "-f", "{{.State.ExitCode}}", rid).stdout.strip() == "4"
    p("rm", cid, rid, check=True)
    assert leftovers(p, [cid, rid]) == []


def test_a_container_restarted_by_a_slept_monitor_does_not_inherit_its_signals(sleepy):
    p = sleepy
    cid = p("run", "-d", "--restart", "always", "busybox", "sh", "-c",
            "cat /proc/self/status | grep -E '^Sig(Ign|Blk)'; sleep 1; exit 1",
            check=True).stdout.strip()
    assert wait_for(lambda: p("logs", cid).stdout.count("SigIgn") >= 2, timeout=30)
    for line in p("logs", cid).stdout.splitlines():
        # SIGIO (29) and SIGCHLD (17) neither ignored nor blocked in the restarted one.
        mask = int(line.split()[1], 16)
        assert not mask & (1 << 28 | 1 << 16), line
    p("rm", "-f", cid, check=True)
    assert leftovers(p, [cid]) == []


def test_stop_and_kill_while_asleep(sleepy):
    p = sleepy
    cid = p("run", "-d", "busybox", "sh", "-c", "trap 'exit 0' TERM; sleep 60 & wait",
            check=True).stdout.strip()
    kid = p("run", "-d", "busybox", "sleep", "60", check=True).stdout.strip()
    for c in (cid, kid):
        assert wait_for(lambda c=c: asleep(monitor_pid(p, c)))
    t0 = time.monotonic()
    p("stop", "-t", "10", cid, check=True)
    assert time.monotonic() - t0 < 5  # the TERM trap ended it; no 10 s wait for a KILL
    assert p("inspect", "-f", "{{.State.ExitCode}}", cid).stdout.strip() == "0"
    p("kill", kid, check=True)
    assert p("wait", kid, timeout=30).stdout.strip() == "137"
    p("rm", cid, kid, check=True)
    assert leftovers(p, [cid, kid]) == []


def test_a_tty_containers_monitor_sleeps_and_hears_output_and_exit(sleepy):
    """A pty master gets SIGIO for output but none on hangup: the container's cgroup v2
    (cgroup.events, through inotify) tells the init's death."""
    p = sleepy
    cid = p("run", "-d", "-t", "busybox", "sh", "-c", "sleep 1.5; echo tty-out; sleep 1.5; "
            "exit 6", check=True).stdout.strip()
    mon = monitor_pid(p, cid)
    if not _cgroup_v2_of(p, cid):
        p("rm", "-f", cid, check=True)
        pytest.skip("the container has no cgroup v2 of its own here: its monitor stays awake")
    assert wait_for(lambda: asleep(mon))
    assert wait_for(lambda: p("logs", cid).stdout.strip() == "tty-out")
    assert wait_for(lambda: asleep(mon))
    assert wait_for(lambda: state(p, cid) == ["6", "exited"])
    p("rm", cid, check=True)
    assert leftovers(p, [cid]) == []


def test_an_init_that_closed_its_stdio_is_still_heard_exiting(sleepy):
    p = sleepy
    cid = p("run", "-d", "busybox", "sh", "-c", "exec >/dev/null 2>&1; sleep 2; exit 5",
            check=True).stdout.strip()
    mon = monitor_pid(p, cid)
    if not _cgroup_v2_of(p, cid):
        p("rm", "-f", cid, check=True)
        pytest.skip("the container has no cgroup v2 of its own here: its monitor stays awake")
    assert wait_for(lambda: asleep(mon))
    assert wait_for(lambda: state(p, cid) == ["5", "exited"])
    p("rm", cid, check=True)
    assert leftovers(p, [cid]) == []


@pytest.mark.parametrize("tty", [True, False], ids=["tty", "pipes"])
def test_an_init_whose_exit_waits_in_its_namespace_teardown_is_still_heard(sleepy, tty):
    """A dying init leaves its cgroup (and closes its stdio) before it becomes a zombie; as
    the init of a pid namespace it first waits for every process of the namespace to be
    reaped, and one whose parent is outside (here the test's, an exec'd process in real
    life) can keep it waiting. The monitor must not fall asleep meanwhile: nothing but
    SIGCHLD is left to come."""
    import subprocess

    p = sleepy
    cid = p("run", "-d", *(["-t"] if tty else []), "busybox", "sleep", "100",
            check=True).stdout.strip()
    mon = monitor_pid(p, cid)
    if not _cgroup_v2_of(p, cid):
        p("rm", "-f", cid, check=True)
        pytest.skip("the container has no cgroup v2 of its own here")
    init = p("inspect", "-f", "{{.State.Pid}}", cid, check=True).stdout.strip()
    # A child in the container's pid namespace whose parent (outside it) reaps it only
    # when its stdin closes.
    holder = subprocess.Popen(
        ["nsenter", "-t", init, "-p", "--no-fork", "--", sys.executable, "-c",
         "import os, sys\npid = os.fork()\nif pid == 0:\n    os.execvp('sleep', ['sleep', "
         "'100'])\nsys.stdin.read()\nos.waitpid(pid, 0)"], stdin=subprocess.PIPE)
    try:
        assert wait_for(lambda: asleep(mon))
        p("kill", cid, check=True)
        time.sleep(2.0)  # the init waits for the holder's child; the monitor stays awake
        assert not asleep(mon)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert wait_for(lambda: state(p, cid) == ["137", "exited"])
    p("rm", cid, check=True)
    assert leftovers(p, [cid]) == []


def _cgroup_v2_of(p, cid: str) -> bool:
    from pallet.engine.monitor import _cgroup_events

    pid = int(p("inspect", "-f", "{{.State.Pid}}", cid, check=True).stdout)
    return bool(_cgroup_events(pid))


@pytest.mark.parametrize("flags", [["--pid", "host"], ["--health-cmd", "true"]],
                         ids=["pid-host", "healthcheck"])
def test_monitors_that_could_miss_news_stay_awake(sleepy, flags):
    """Without a pid namespace of its own the init's death need not close the pipes nor
    empty its cgroup; a health check needs a timer."""
    p = sleepy
    cid = p("run", "-d", *flags, "busybox", "sleep", "60", check=True).stdout.strip()
    mon = monitor_pid(p, cid)
    time.sleep(1.2)
    assert not asleep(mon)
    p("rm", "-f", cid, check=True)
    assert leftovers(p, [cid]) == []
