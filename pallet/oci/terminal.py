"""A terminal for `pallet-runc run`/`exec` without --console-socket, as runc gives one.

Receives the container's pty master over a private console socket and copies bytes
between it and the caller's terminal, following window-size changes.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import tempfile


class ConsoleReceiver:
    """A private --console-socket: its path for create/exec, then the pty master."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="pallet-console-")
        self.path = os.path.join(self._dir, "console.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(1)

    def master(self) -> int:
        from pallet.oci.linux.console import recv_fd

        conn, _ = self._listener.accept()
        with conn:
            fd, _name = recv_fd(conn)
        return fd

    def close(self) -> None:
        self._listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.rmdir(self._dir)


def proxy(master: int, pid: int) -> None:
    """Copy stdin to the pty and the pty to stdout until the container's process ends."""
    import termios
    import tty

    from pallet.oci.linux.console import get_winsize, set_winsize

    stdin_tty = os.isatty(0)
    saved = termios.tcgetattr(0) if stdin_tty else None

    def resize(_sig: int = 0, _frame: object = None) -> None:
        if stdin_tty:
            rows, cols = get_winsize(0)
            set_winsize(master, rows, cols)

    if stdin_tty:
        tty.setraw(0)
        resize()
        signal.signal(signal.SIGWINCH, resize)
    pidfd = os.pidfd_open(pid)  # readable once the process exits; it is not reaped here
    readers = [master, 0, pidfd]
    try:
        while True:
            try:
                ready, _, _ = select.select(readers, [], [])
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""  # EIO: every slave fd is closed
                if not data:
                    break
                os.write(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    readers.remove(0)
            if pidfd in ready:
                readers.remove(pidfd)
                # Drain what the process wrote before exiting, without blocking.
                while select.select([master], [], [], 0.05)[0]:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    os.write(1, data)
                break
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)
        os.close(pidfd)
