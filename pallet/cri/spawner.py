"""A fork server started before any thread: it runs fork-heavy engine calls for the daemon.
The server itself is pallet.engine.zygote's (the CLI's zygote is the same loop, listening).

gRPC and HTTP servers run threads, and forking a threaded process for a container is unsafe
(locks held by other threads stay locked in the child), so the daemon forks this small
process first and asks it, over a socketpair, to run `module:function(**kwargs)`.

Protocol (one per call, so calls run concurrently and any size fits):
  daemon: makes a stream socketpair (a, b); sends b, plus any fds the call passes along,
          over the control SOCK_SEQPACKET socket with SCM_RIGHTS; writes the JSON request
          {"target": "module:function", "kwargs": {...}} on a and shuts down a's write side.
  spawner: forks a worker per request (it stays single-threaded, so forking is safe); the
          worker reads the request from b, calls the function, writes the JSON reply
          {"result": ...} or {"error": {"type", "module", "message"}} on b and exits.
A worker that dies without answering is reported as SpawnerError; so is the spawner gone.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pallet.engine import zygote
from pallet.errors import PalletError

MAX_FDS = 64  # per call: stdio for exec plus a console socket is far below this
_HELLO = b"C"


class SpawnerError(zygote.ZygoteError):
    """The spawner or its worker died, timed out, or returned something unreadable."""


class Spawner:
    """The daemon's handle on the fork server; `call` is safe from any thread."""

    def __init__(self, pid: int, control: socket.socket):
        self.pid = pid
        self._control = control
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def start(cls, preload: Sequence[str] = (), *, allow_threads: bool = False,
              listen: str = "") -> Spawner:
        """Fork the spawner. Call before starting any thread (it refuses otherwise;
        `allow_threads` is for test processes that cannot promise that). LISTEN: the state
        dir whose spawner.sock (root-only) serves monitors' helpers: a container's exit is
        recorded by a warm worker of ours rather than by a cold interpreter."""
        if threading.active_count() != 1 and not allow_threads:
            raise RuntimeError("Spawner.start() must run before any thread is started")
        # PRELOAD is imported here, before the fork, rather than by the spawner: the daemon
        # needs most of it too, and pages imported once are shared by both processes (the
        # spawner's own imports cost it ~5 MiB RSS, ~2 MiB of it private, on top).
        for name in preload:
            try:
                importlib.import_module(name)
            except ImportError as e:  # as the fork server's preload: calls into it fail clearly
                if not (isinstance(e, ModuleNotFoundError) and e.name == name):
                    print(f"pallet daemon: cannot preload {name}: {e}", file=sys.stderr)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Those pages stay shared only while neither side writes them: frozen, the objects
        # are never visited (and so never copied) by either side's garbage collector.
        gc.collect()
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked process
            code = 1
            try:
                parent.close()
                code = _serve(child, preload, listen)
            finally:
                os._exit(code)
        child.close()
        return cls(pid, parent)

    def call(self, target: str, kwargs: Mapping[str, Any] | None = None, *,
             fds: Sequence[int] = (), timeout: float | None = None) -> Any:
        """Run `target` ("module:function") in a fresh worker and return its JSON result.

        `fds` are passed to the function as `fds=[...]` (duplicated into the worker; the
        caller keeps and closes its own). PalletErrors raised there are raised here with the
        same class and message.
        """
        if ":" not in target:
            raise ValueError(f"spawner target must be 'module:function', not {target!r}")
        if len(fds) > MAX_FDS:
            raise ValueError(f"at most {MAX_FDS} fds per spawner call")
        request = json.dumps({"target": target, "kwargs": dict(kwargs or {})}).encode()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours:
            try:
                with self._lock:
                    if self._closed:
                        raise SpawnerError("the spawner is shut down")
                    socket.send_fds(self._control, [_HELLO], [theirs.fileno(), *fds])
            except OSError as e:
                raise SpawnerError(f"the spawner is gone ({e.strerror}); restart pallet daemon") from None
            finally:
                theirs.close()
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                ours.sendall(request)
                ours.shutdown(socket.SHUT_WR)
            except OSError as e:
                raise SpawnerError(f"spawner worker for {target} died before reading its request "
                                   f"({e.strerror})") from None
            reply = _read_all(ours, deadline, target)
        if not reply:
            raise SpawnerError(f"spawner worker for {target} died without answering")
        try:
            msg = json.loads(reply)
        except ValueError:
            raise SpawnerError(f"spawner worker for {target} sent an unreadable reply") from None
        if "error" in msg:
            raise _rebuild_error(msg["error"])
        return msg.get("result")

    def close(self, timeout: float = 5.0) -> None:
        """Stop the spawner: it exits once the control socket closes (workers finish)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._control.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)

    def __enter__(self) -> Spawner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_all(sock: socket.socket, deadline: float | None, target: str) -> bytes:
    chunks = []
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                raise SpawnerError(f"spawner call {target} timed out")
        data = sock.recv(1 << 16)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _rebuild_error(err: Mapping[str, Any]) -> PalletError:
    """The worker's PalletError, same class when it can be imported; else a SpawnerError."""
    message = str(err.get("message", "unknown error"))
    with contextlib.suppress(Exception):
        cls = getattr(importlib.import_module(str(err["module"])), str(err["type"]))
        # The fork server reports its own failures as ZygoteError; here they are ours.
        if isinstance(cls, type) and issubclass(cls, PalletError) and cls is not zygote.ZygoteError:
            return cls(message)
    return SpawnerError(message)


# -- the spawner process ------------------------------------------------------

SOCKET_NAME = "spawner.sock"


def _serve(control: socket.socket, preload: Sequence[str],
           listen: str = "") -> int:  # pragma: no cover - child
    # Leave the terminal's process group: Ctrl-C goes to the daemon, which then closes the
    # control socket; a worker halfway through creating a container is not interrupted.
    with contextlib.suppress(OSError):
        os.setsid()
    # The same fork server as the CLI's zygote, reached through this socketpair (and, for
    # monitors' helpers only, on LISTEN/spawner.sock). Monitors are forked by its lean
    # monitor mother, so they hold none of a worker's fds and share the mother's pages.
    return zygote.serve(control=control, preload=preload, listen=listen,
                        socket_name=SOCKET_NAME, fork_monitors=True)
