"""pty pairs and fd passing: the slave path names the slave of the master,
and a sent fd arrives with its name like runc's --console-socket message."""

import os
import socket
import stat

import pytest

from pallet.errors import SystemFailure
from pallet.oci.linux import console


@pytest.fixture
def pty():
    master, slave_path = console.open_pty()
    yield master, slave_path
    os.close(master)


def test_open_pty_gives_the_devpts_path_of_its_slave(pty):
    master, slave_path = pty
    assert slave_path.startswith("/dev/pts/") and slave_path[len("/dev/pts/") :].isdigit()
    slave = console.open_slave(master)
    try:
        assert os.fstat(slave).st_rdev == os.stat(slave_path).st_rdev
        assert stat.S_ISCHR(os.fstat(slave).st_mode)
        assert not os.get_inheritable(master)
    finally:
        os.close(slave)


def test_a_devpts_ptmx_gives_a_sibling_slave_path():
    if not os.path.exists("/dev/pts/ptmx"):
        pytest.skip("no /dev/pts/ptmx")
    master, slave_path = console.open_pty_in("/dev/pts/ptmx")
    try:
        assert os.path.dirname(slave_path) == "/dev/pts"
        slave = console.open_slave(master, slave_path)
        os.close(slave)
    finally:
        os.close(master)


def test_data_flows_between_master_and_slave(pty):
    master, slave_path = pty
    slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(slave, b"out\n")
        assert os.read(master, 100) == b"out\r\n"
    finally:
        os.close(slave)


def test_window_size_round_trips(pty):
    master, _ = pty
    console.set_winsize(master, 40, 132)
    assert console.get_winsize(master) == (40, 132)


def test_a_missing_ptmx_is_a_clear_failure(tmp_path):
    with pytest.raises(SystemFailure, match=f"console: opening {tmp_path}/ptmx: No such file"):
        console.open_pty_in(str(tmp_path / "ptmx"))


def test_an_fd_travels_with_its_name_over_a_socketpair(pty):
    master, _ = pty
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        console.send_fd_on(left.fileno(), master, "/dev/ptmx")
        fd, name = console.recv_fd(right)
    try:
        assert name == "/dev/ptmx"
        assert fd != master
        assert os.fstat(fd).st_rdev == os.fstat(master).st_rdev
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)


def test_a_message_without_an_fd_is_refused():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        left.send(b"/dev/ptmx")
        with pytest.raises(SystemFailure, match="carried no fd"):
            console.recv_fd(right)


def test_no_one_listening_on_the_console_socket_is_a_clear_failure(pty, tmp_path):
    master, _ = pty
    path = str(tmp_path / "console.sock")
    with pytest.raises(SystemFailure, match=f"console: connecting to console socket {path}"):
        console.send_fd(path, master)
