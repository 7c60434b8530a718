"""A StreamBackend that runs real host processes: it stands in for the engine in the
streaming tests until the engine's exec/attach lands. Processes are forked by the
daemon's spawner (never by the threaded daemon), exactly as the engine will do.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import termios
import threading
from typing import Any, BinaryIO

from pallet.cri.streaming.backend import ResizeQueue
from pallet.errors import NotFound

CONTAINER = "local"  # the one "container" this backend knows
POD = "local-pod"


def run_process(argv: list[str], tty: bool = False, fds: list[int] | None = None) -> int:
    """Runs in a spawner worker: fork, wire stdio (a pty slave for tty), exec, wait."""
    fds = fds or []
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if tty:
                fcntl.ioctl(fds[0], termios.TIOCSCTTY, 0)
                stdio = [fds[0]] * 3
            else:
                stdio = fds
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


class LocalProcessBackend:
    def __init__(self, config: Any = None, spawner: Any = None):
        self.spawner = spawner

    def check_container(self, container_id: str) -> None:
        if container_id != CONTAINER:
            raise NotFound(f"container {container_id!r} not found")

    def check_pod(self, pod_sandbox_id: str) -> None:
        if pod_sandbox_id != POD:
            raise NotFound(f"pod sandbox {pod_sandbox_id!r} not found")

    def exec(self, container_id: str, cmd: list[str], tty: bool, stdin: BinaryIO | None,
             stdout: BinaryIO | None, stderr: BinaryIO | None,
             resize_queue: ResizeQueue | None) -> int:
        self.check_container(container_id)
        if not tty:
            with open(os.devnull, "r+b") as null:
                fds = [(f or null).fileno() for f in (stdin, stdout, stderr)]
                return self.spawner.call(f"{__name__}:run_process", {"argv": cmd}, fds=fds)
        master, slave = os.openpty()
        threads = []
        try:
            if stdin:
                threads.append(_start(_copy_in, stdin, master))
            if resize_queue:
                threads.append(_start(_apply_resizes, resize_queue, master))
            out = _start(_copy_out, master, stdout)
            code = self.spawner.call(f"{__name__}:run_process", {"argv": cmd, "tty": True},
                                     fds=[slave])
        finally:
            os.close(slave)  # now the master reads EIO once the output is drained
        out.join(5)
        os.close(master)
        return code

    def attach(self, container_id: str, tty: bool, stdin: BinaryIO | None,
               stdout: BinaryIO | None, stderr: BinaryIO | None,
               resize_queue: ResizeQueue | None, client_gone: object = None) -> None:
        # "Attach" echoes stdin back: enough to test the attach path of the server.
        self.check_container(container_id)
        while stdin and (data := stdin.read(4096)):
            if stdout:
                stdout.write(data)

    def port_forward(self, pod_sandbox_id: str, port: int, stream: BinaryIO) -> None:
        self.check_pod(pod_sandbox_id)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.settimeout(None)
            t = _start(_sock_copy, conn, stream)
            while data := stream.read(4096):
                conn.sendall(data)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            t.join(5)


def _start(fn: Any, *args: Any) -> threading.Thread:
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


def _copy_in(src: BinaryIO, master: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        while data := src.read(4096):
            os.write(master, data)


def _copy_out(master: int, dst: BinaryIO | None) -> None:
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: every slave fd is closed
            return
        if not data:
            return
        if dst:
            with contextlib.suppress(OSError, ValueError):
                dst.write(data)


def _apply_resizes(q: ResizeQueue, master: int) -> None:
    while (size := q.get()) is not None:
        with contextlib.suppress(OSError):
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))


def _sock_copy(conn: socket.socket, stream: BinaryIO) -> None:
    with contextlib.suppress(OSError, ValueError):
        while data := conn.recv(4096):
            stream.write(data)
