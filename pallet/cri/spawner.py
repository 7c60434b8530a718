"""A fork server started before any thread: it runs fork-heavy engine calls for the daemon.

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
import importlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from pallet.errors import PalletError, SystemFailure

MAX_FDS = 64  # per call: stdio for exec plus a console socket is far below this
_HELLO = b"C"


class SpawnerError(SystemFailure):
    """The spawner or its worker died, timed out, or returned something unreadable."""


class Spawner:
    """The daemon's handle on the fork server; `call` is safe from any thread."""

    def __init__(self, pid: int, control: socket.socket):
        self.pid = pid
        self._control = control
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def start(cls, preload: Sequence[str] = (), *, allow_threads: bool = False) -> Spawner:
        """Fork the spawner. Call before starting any thread (it refuses otherwise;
        `allow_threads` is for test processes that cannot promise that)."""
        if threading.active_count() != 1 and not allow_threads:
            raise RuntimeError("Spawner.start() must run before any thread is started")
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked process
            code = 1
            try:
                parent.close()
                code = _serve(child, preload)
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
        if isinstance(cls, type) and issubclass(cls, PalletError):
            return cls(message)
    return SpawnerError(message)


# -- the spawner process ------------------------------------------------------

def _serve(control: socket.socket, preload: Sequence[str]) -> int:  # pragma: no cover - child
    # Leave the terminal's process group: Ctrl-C goes to the daemon, which then closes the
    # control socket; a worker halfway through creating a container is not interrupted.
    with contextlib.suppress(OSError):
        os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, _reap)
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError as e:
            # A module not written yet (the engine) is fine: calls into it fail clearly.
            if not (isinstance(e, ModuleNotFoundError) and e.name == name):
                print(f"pallet spawner: cannot preload {name}: {e}", file=sys.stderr)
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(control, 1, MAX_FDS + 1)
        except OSError:
            return 0
        if not fds:
            return 0  # EOF: the daemon closed or died
        try:
            worker = os.fork()
        except OSError as e:
            # Out of processes: answer the caller on its reply socket, keep serving.
            _reply_raw(fds[0], {"error": {"type": "SpawnerError", "module": __name__,
                                          "message": f"cannot fork a worker: {e.strerror}"}})
            worker = -1
        if worker == 0:
            control.close()
            os._exit(_work(fds[0], fds[1:]))
        for fd in fds:
            os.close(fd)


def _reap(signum: int, frame: object) -> None:  # pragma: no cover - child
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _work(reply_fd: int, fds: list[int]) -> int:  # pragma: no cover - worker
    # The function may wait for children of its own; the spawner's reaper must not steal them.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    for fd in fds:
        os.set_inheritable(fd, False)
    sock = socket.socket(fileno=reply_fd)
    try:
        chunks = []
        while data := sock.recv(1 << 16):
            chunks.append(data)
        req = json.loads(b"".join(chunks))
        module, _, func = str(req["target"]).partition(":")
        fn = getattr(importlib.import_module(module), func)
        kwargs = dict(req.get("kwargs") or {})
        if fds:
            kwargs["fds"] = fds
        reply: dict[str, Any] = {"result": fn(**kwargs)}
        payload = json.dumps(reply).encode()
    except PalletError as e:
        payload = json.dumps({"error": {"type": type(e).__name__, "module": type(e).__module__,
                                        "message": str(e)}}).encode()
    except BaseException as e:  # noqa: BLE001 - report any failure to the caller, never hang it
        traceback.print_exc()
        payload = json.dumps({"error": {"type": "SpawnerError", "module": __name__,
                                        "message": f"{type(e).__name__}: {e}"}}).encode()
    try:
        sock.sendall(payload)
    except OSError:
        return 1  # the caller gave up (timeout) and closed its end
    finally:
        sock.close()
    return 0


def _reply_raw(fd: int, msg: Mapping[str, Any]) -> None:  # pragma: no cover - child
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(msg).encode())
