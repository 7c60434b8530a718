"""What the streaming server asks of the engine: run an exec, attach, or forward a port,
with the session's streams. The engine implements `StreamBackend`; tests plug in others.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from pallet.cri.streaming.channels import TerminalSize


@dataclass(frozen=True)
class ExecRequest:
    container_id: str
    cmd: tuple[str, ...]
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True)
class PortForwardRequest:
    pod_sandbox_id: str
    ports: tuple[int, ...] = ()


StreamRequest = ExecRequest | AttachRequest | PortForwardRequest


class ResizeQueue:
    """Terminal sizes from the client, in order; `get` returns None once the session ends."""

    def __init__(self) -> None:
        self._q: queue.Queue[TerminalSize | None] = queue.Queue(maxsize=64)

    def put(self, size: TerminalSize) -> None:
        try:
            self._q.put_nowait(size)
        except queue.Full:
            pass  # a client flooding resizes loses some; the last ones still arrive

    def get(self, timeout: float | None = None) -> TerminalSize | None:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        try:
            self._q.put_nowait(None)
        except queue.Full:
            self._q.get_nowait()
            self._q.put_nowait(None)


class StreamBackend(Protocol):
    """Implemented by the engine. Streams are pipe ends the server owns and closes after the
    call returns: `stdin` is readable (EOF when the client closes it), `stdout`/`stderr` are
    writable; each has a real fileno() that can be handed to a process. With tty=True there
    is no stderr (the terminal merges it). Raise PalletErrors: their message reaches the
    client on the error channel.
    """

    def check_container(self, container_id: str) -> None:
        """Raise NotFound (or FailedPrecondition if not running) before a URL is handed out."""

    def check_pod(self, pod_sandbox_id: str) -> None:
        """Raise NotFound (or FailedPrecondition) for a pod that cannot forward ports."""

    def exec(self, container_id: str, cmd: list[str], tty: bool, stdin: BinaryIO | None,
             stdout: BinaryIO | None, stderr: BinaryIO | None,
             resize_queue: ResizeQueue | None) -> int:
        """Run cmd in the container until it exits; return its exit code."""
        ...

    def attach(self, container_id: str, tty: bool, stdin: BinaryIO | None,
               stdout: BinaryIO | None, stderr: BinaryIO | None,
               resize_queue: ResizeQueue | None,
               client_gone: threading.Event | None = None) -> None:
        """Connect to the container's main process until it exits or the client leaves
        (CLIENT_GONE is set then: a silent container gives no write to fail on)."""

    def port_forward(self, pod_sandbox_id: str, port: int, stream: BinaryIO) -> None:
        """Copy between `stream` (a socket file) and the pod's `port` until either closes."""
