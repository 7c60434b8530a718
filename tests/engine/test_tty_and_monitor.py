"""`pallet run -it` through a real pseudo-terminal (typing, window size, detach and
reattach), and the monitor's own footprint once it has gone lean.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time

import pytest

from tests.engine.conftest import PALLET, leftovers

pytestmark = pytest.mark.root


class Terminal:
    """A child process on the slave side of a real pty; we hold the master."""

    def __init__(self, argv: list[str], env: dict[str, str], rows: int = 24, cols: int = 80):
        import fcntl
        import struct
        import termios

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.buf = b""

    def expect(self, needle: bytes, timeout: float = 10) -> bytes:
        deadline = time.time() + timeout
        while needle not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen; got {self.buf[-500:]!r}")
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    break
                # Answer a cursor-position query the way a real terminal does
                # (busybox's line editor asks before its first prompt).
                if b"\x1b[6n" in data:
                    os.write(self.master, b"\x1b[1;5R")
                self.buf += data
        out, self.buf = self.buf, self.buf[self.buf.index(needle) + len(needle):]
        return out

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def command(self, line: bytes) -> None:
        """Type LINE at the next shell prompt. Busybox's line editor asks for the cursor
        position at each prompt and drops typeahead that arrives with the answer."""
        self.expect(b"\x1b[6n")
        time.sleep(0.2)
        self.send(line + b"\r")

    def resize(self, rows: int, cols: int) -> None:
        import fcntl
        import struct
        import termios

        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc.send_signal(signal.SIGWINCH)

    def close(self) -> int:
        code = self.proc.wait(timeout=20)
        os.close(self.master)
        return code


def test_run_it_gives_a_working_terminal(pallet):
    t = Terminal([PALLET, "--root", pallet.root, "run", "--rm", "-it", "busybox", "sh"],
                 pallet.env, rows=33, cols=101)
    t.command(b"tty; stty size")
    out = t.expect(b"33 101")
    assert b"/dev/pts/" in out
    t.resize(40, 120)
    time.sleep(0.3)
    t.command(b"stty size")
    t.expect(b"40 120")
    t.command(b"echo $((6*7))")
    t.expect(b"42")
    t.command(b"exit 5")
    assert t.close() == 5
    assert leftovers(pallet) == []


def test_ctrl_p_ctrl_q_detaches_and_attach_reattaches(pallet):
    t = Terminal([PALLET, "--root", pallet.root, "run", "-it", "--name", "sess", "busybox",
                  "sh"], pallet.env)
    t.command(b"PS1='ready> '")
    t.expect(b"ready> ")
    t.send(b"\x10\x11")
    assert t.close() == 0
    assert "Up " in pallet("ps", "--filter", "name=sess").stdout
    t2 = Terminal([PALLET, "--root", pallet.root, "attach", "sess"], pallet.env)
    time.sleep(0.5)
    t2.send(b"\r")  # as with docker, a reattached shell shows its prompt after Enter
    t2.command(b"echo back-$((1+1))")
    t2.expect(b"back-2")
    t2.command(b"exit 0")
    assert t2.close() == 0
    assert pallet("inspect", "-f", "{{.State.Status}}", "sess").stdout.strip() == "exited"
    pallet("rm", "sess", check=True)


def test_exec_it_in_a_running_container(pallet):
    pallet("run", "-d", "--name", "host1", "busybox", "sleep", "60", check=True)
    t = Terminal([PALLET, "--root", pallet.root, "exec", "-it", "host1", "sh"], pallet.env)
    t.command(b"tty && echo exec-ok")
    t.expect(b"exec-ok")
    t.command(b"exit 3")
    assert t.close() == 3
    pallet("rm", "-f", "host1", check=True)


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))


def test_idle_monitor_goes_lean_and_stays_small(pallet):
    from pallet.engine.monitor import alive

    # In-process (no zygote): such a monitor is a fork of the CLI and re-execs lean; the
    # zygote's monitors stay forks of it (tests/engine/test_zygote.py).
    env = dict(pallet.env, PALLET_MONITOR_LEAN_AFTER="0.2", PALLET_NO_ZYGOTE="1")
    cid = subprocess.run([PALLET, "--root", pallet.root, "run", "-d", "busybox", "sh", "-c",
                          "while :; do echo tick; sleep 0.2; done"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    eng = pallet.engine()
    time.sleep(1.0)
    mon = alive(eng.run_dir(cid))
    with open(f"/proc/{mon}/cmdline", "rb") as f:
        assert b"import monitor;monitor.resume()\0--resume" in f.read()
    assert pss_kib(mon) < 8 * 1024
    # Still logging and attachable after the exec.
    n = pallet("logs", cid).stdout.count("tick")
    time.sleep(0.5)
    assert pallet("logs", cid).stdout.count("tick") > n
    pallet("stop", "-t", "1", cid, check=True)
    pallet("rm", cid, check=True)
    assert leftovers(pallet, [cid]) == []
