"""A container-like child opens a pty, sends the master to a --console-socket
listener exactly like runc, takes the slave as its controlling terminal and
execs a shell; the listener drives the shell through the master it received."""

import errno
import os
import select
import signal
import socket
import time

import pytest

from pallet.oci.linux import console

pytestmark = pytest.mark.root


def read_until(fd: int, needle: bytes, timeout: float = 10.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no {needle!r} within {timeout}s; got {out!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError as e:
            if e.errno == errno.EIO:  # the slave side is closed: the shell exited
                break
            raise
        if not chunk:
            break
        out += chunk
    return out


def wait_child(pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("child did not exit")


SCRIPT = "read line; stty size; echo got:$line; tty; exit 7"


def test_shell_runs_on_the_pty_received_over_the_console_socket(tmp_path):
    path = str(tmp_path / "console.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(10)

    pid = os.fork()
    if pid == 0:
        code = 100
        try:
            master, slave_path = console.open_pty()
            slave = console.open_slave(master, slave_path)
            console.send_fd(path, master)
            os.close(master)
            console.set_ctty(slave)
            os.execv("/bin/sh", ["sh", "-c", SCRIPT])
        except BaseException as e:
            os.write(2, f"child failed: {e!r}\n".encode())
        finally:
            os._exit(code)

    master = None
    try:
        with listener:
            conn, _ = listener.accept()
        with conn:
            master, name = console.recv_fd(conn)
        assert name == "/dev/ptmx"
        console.set_winsize(master, 33, 111)
        os.write(master, b"hello\n")
        out = read_until(master, b"\n/dev/pts/")
        out += read_until(master, b"\r\n")
        status = wait_child(pid)
        pid = None
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        if master is not None:
            os.close(master)

    assert os.waitstatus_to_exitcode(status) == 7
    text = out.decode()
    assert "hello\r\n" in text  # the terminal echoed the input
    assert "33 111\r\n" in text
    assert "got:hello\r\n" in text
    # tty(1) names the slave: the shell's stdin is the controlling terminal.
    assert "\n/dev/pts/" in text and "not a tty" not in text


def test_the_child_is_a_session_leader_with_the_pty_as_its_terminal():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 100
        try:
            os.close(r)
            master, slave_path = console.open_pty()
            console.set_ctty(console.open_slave(master, slave_path))
            # After set_ctty, 0/1/2 are the slave, so report through the pipe.
            with open("/proc/self/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            session, tty_nr = int(fields[3]), int(fields[4])
            rdev = os.fstat(0).st_rdev
            ok = session == os.getpid() and tty_nr == rdev and os.isatty(1) and os.isatty(2)
            os.write(w, b"ok" if ok else f"bad {session} {tty_nr} {rdev}".encode())
            code = 0
        except BaseException as e:
            os.write(w, repr(e).encode())
        finally:
            os._exit(code)
    os.close(w)
    try:
        msg = read_until(r, b"\0", timeout=10)
    finally:
        os.close(r)
        status = wait_child(pid)
    assert os.waitstatus_to_exitcode(status) == 0, msg
    assert msg == b"ok"
