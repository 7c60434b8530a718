"""The container's terminal: open a pty pair in the container's devpts, hand the
master to whoever listens on --console-socket (as runc does), and make the slave the controlling tty.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios

from pallet.errors import SystemFailure

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing costs ~10 ms to import
if TYPE_CHECKING:
    # socket (and the selectors it pulls in) loads only when a console socket is used.
    import socket

_TIOCSPTLCK = 0x40045431  # _IOW('T', 0x31, int)
_TIOCGPTN = 0x80045430  # _IOR('T', 0x30, unsigned int)
_TIOCGPTPEER = 0x5441  # _IO('T', 0x41), Linux 4.13
# runc's limit for the name that travels with the fd.
MAX_NAME_LEN = 4096


def _fail(what: str, e: OSError) -> SystemFailure:
    return SystemFailure(f"console: {what}: {e.strerror}")


def open_pty_in(ptmx_path: str) -> tuple[int, str]:
    """Open a new pty master through `ptmx_path`; return (master_fd, slave path).

    `ptmx_path` is a devpts ptmx (".../dev/pts/ptmx") or the /dev/ptmx next to
    a ".../dev/pts" mount; the slave path is the matching ".../pts/N".
    """
    try:
        master = os.open(ptmx_path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise _fail(f"opening {ptmx_path}", e) from None
    try:
        fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))  # unlockpt
        number = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, b"\0" * 4))[0]
    except OSError as e:
        os.close(master)
        raise _fail(f"unlocking the pty from {ptmx_path}", e) from None
    directory = os.path.dirname(ptmx_path)
    pts = directory if os.path.basename(directory) == "pts" else os.path.join(directory, "pts")
    return master, os.path.join(pts, str(number))


def open_pty() -> tuple[int, str]:
    """A pty pair from the current /dev/ptmx: (master_fd, "/dev/pts/N")."""
    return open_pty_in("/dev/ptmx")


def open_slave(master_fd: int, slave_path: str | None = None) -> int:
    """Open the slave of `master_fd` without a path lookup where the kernel
    allows (TIOCGPTPEER), so a swapped /dev/pts cannot hand us another file."""
    flags = os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC
    try:
        return fcntl.ioctl(master_fd, _TIOCGPTPEER, flags)
    except OSError as e:
        if slave_path is None:
            raise _fail("opening the pty slave (TIOCGPTPEER)", e) from None
    try:
        return os.open(slave_path, flags)
    except OSError as e:
        raise _fail(f"opening {slave_path}", e) from None


def send_fd_on(sock_fd: int, fd: int, name: str = "/dev/ptmx") -> None:
    """Send `fd` with `name` as payload in one sendmsg over a connected unix socket."""
    data = name.encode()
    if len(data) >= MAX_NAME_LEN:
        raise SystemFailure(f"console: fd name {name!r} is too long to send")
    import socket

    sock = socket.socket(fileno=os.dup(sock_fd))
    try:
        socket.send_fds(sock, [data], [fd])
    except OSError as e:
        raise _fail("sending the pty master over the console socket", e) from None
    finally:
        sock.close()


def send_fd(console_socket_path: str, fd: int, name: str = "/dev/ptmx") -> None:
    """Connect to the --console-socket unix socket and send it `fd`, as runc does."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect(console_socket_path)
        except OSError as e:
            raise _fail(f"connecting to console socket {console_socket_path}", e) from None
        send_fd_on(sock.fileno(), fd, name)
    finally:
        sock.close()


def recv_fd(sock: socket.socket) -> tuple[int, str]:
    """Receive one fd and its name sent by send_fd (the --console-socket side)."""
    import socket

    data, fds, _, _ = socket.recv_fds(sock, MAX_NAME_LEN, 1)
    if not fds:
        raise SystemFailure("console: the message on the console socket carried no fd")
    for extra in fds[1:]:
        os.close(extra)
    os.set_inheritable(fds[0], False)
    return fds[0], data.decode(errors="replace")


def set_ctty(slave_fd: int) -> None:
    """Make `slave_fd` this process's controlling terminal and its stdin, stdout and stderr."""
    try:
        os.setsid()
    except PermissionError as e:
        # Already a session leader (setsid was done earlier) is fine.
        if os.getsid(0) != os.getpid():
            raise _fail("setsid for a new session", e) from None
    try:
        fcntl.ioctl(slave_fd, termios.TIOCSCTTY, 0)
        for target in (0, 1, 2):
            if slave_fd != target:
                os.dup2(slave_fd, target)
    except OSError as e:
        raise _fail("making the pty the controlling terminal", e) from None
    if slave_fd > 2:
        os.close(slave_fd)


def set_winsize(fd: int, rows: int, cols: int) -> None:
    """TIOCSWINSZ: the terminal size the container's programs see."""
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    except OSError as e:
        raise _fail(f"setting the window size to {rows}x{cols}", e) from None


def get_winsize(fd: int) -> tuple[int, int]:
    """(rows, cols) of the terminal on `fd`."""
    try:
        raw = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError as e:
        raise _fail("reading the window size", e) from None
    rows, cols, _, _ = struct.unpack("HHHH", raw)
    return rows, cols
