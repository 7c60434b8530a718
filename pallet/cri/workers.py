"""Engine calls that fork, run inside the daemon's spawner workers (single-threaded
processes): start a container's monitor, exec in a container, pin a pod's PID namespace;
and image pulls, whose registry client is then never loaded in the daemon.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import os
import select
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from typing import Any, NoReturn

from pallet.engine.containers import Engine, _start_error_code
from pallet.engine.store import new_id
from pallet.errors import PalletError

POLL = 0.01  # s between waitpid polls when no pidfd can be had
DRAIN_AFTER_EXIT = 0.5  # s: output still in flight when the exec'd process has exited


class DeadlineExceeded(PalletError):
    """An exec ran past its timeout (and was killed). Defined here, where it is raised,
    so spawner workers need not import grpc; pallet.cri.errors maps it."""


def start_container(root: str, run_root: str, id: str) -> dict[str, Any]:
    """Start the container under a new monitor. The spawner's monitor mother forks it, so
    it holds none of this worker's fds (the daemon waits for our reply socket's EOF)."""
    from pallet.engine import monitor

    if monitor.fork_server is None:  # not in a spawner worker: keep the monitor off our fds
        return _in_clean_child(lambda: start_container(root, run_root, id))
    eng = Engine(root, run_root)
    try:
        # stdin_once: the container's stdin closes when the first attach session ends.
        once = bool((eng.get(id).config.get("cri") or {}).get("stdin_once"))
        rec, fd = eng.start(id, stdin_once=once)
        if fd >= 0:
            os.close(fd)
        return {"state": rec.state, "pid": rec.pid}
    finally:
        eng.close()


def pull_image(root: str, ref: str, registry: dict[str, Any]) -> str:
    """Pull REF into the image store at ROOT (REGISTRY: RegistryConfig.to_json()); its id.
    Here rather than in the daemon, so the registry client is gone once the pull is done."""
    from pallet.image.registry_config import RegistryConfig
    from pallet.image.store import ImageStore

    return ImageStore(root, registry=RegistryConfig.from_json(registry)).pull(ref).id


def _in_clean_child(fn: Callable[[], Any]) -> Any:
    """FN in a child holding no fd of ours but stdio. A monitor forked by FN lives on, and
    must not keep this worker's reply socket open: the daemon waits for its EOF."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.closerange(3, r)
            os.closerange(r + 1, w)
            os.closerange(w + 1, 1 << 16)
            try:
                msg: dict[str, Any] = {"result": fn()}
            except PalletError as e:
                msg = {"error": [type(e).__module__, type(e).__name__, str(e),
                                 getattr(e, "exit_code", None)]}
            # One line, read as one: a monitor FN forked holds W until it re-execs, so
            # the parent cannot wait for EOF.
            with open(w, "w") as f:
                f.write(json.dumps(msg) + "\n")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with open(r) as f:
        data = f.readline()
    os.waitpid(pid, 0)
    if not data:
        raise PalletError("the start helper died without answering; see the daemon log")
    msg = json.loads(data)
    if "error" in msg:
        module, name, text, code = msg["error"]
        cls = getattr(importlib.import_module(module), name)
        raise cls(text, code) if code is not None else cls(text)
    return msg["result"]


def pid_holder(root: str, run_root: str, ndir: str, userns: str = "") -> str:
    from pallet.engine.pods import start_pid_holder

    return start_pid_holder(ndir, userns=userns)


def userns_holder(root: str, run_root: str, ndir: str, uid_mappings: list[list[int]],
                  gid_mappings: list[list[int]], kinds: list[str], hostname: str,
                  sysctls: dict[str, str]) -> dict[str, str]:
    from pallet.engine.pods import start_userns_holder

    return start_userns_holder(ndir, uid_mappings, gid_mappings, kinds, hostname, sysctls)


def _start_exec(eng: Engine, id: str, cmd: list[str], tty: bool,
                stdio: tuple[int, int, int] | None, ctl: int, exec_id: str) -> int:
    from pallet.oci.create import _become_subreaper

    _become_subreaper()  # the exec'd process is reparented to us, and we reap it
    try:
        return _start_exec_as_subreaper(eng, id, cmd, tty, stdio, ctl, exec_id)
    except BaseException:
        # A failed exec may leave its process, already forked into the container's PID
        # namespace, exiting: reaped here, not left to the container's init (which may
        # never reap it, and `ps` in the container would show it).
        _reap_children(1.0)
        raise


def _reap_children(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            time.sleep(0.005)


def _start_exec_as_subreaper(eng: Engine, id: str, cmd: list[str], tty: bool,
                             stdio: tuple[int, int, int] | None, ctl: int, exec_id: str) -> int:
    if not tty:
        return eng.exec(id, cmd, stdio=stdio, exec_id=exec_id)
    with tempfile.TemporaryDirectory(prefix="pallet-exec-") as tmp:
        path = os.path.join(tmp, "console.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as lsock:
            lsock.bind(path)
            lsock.listen(1)
            lsock.settimeout(30)
            pid = eng.exec(id, cmd, tty=True, console_socket=path, exec_id=exec_id)
            conn, _ = lsock.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    # The daemon copies the terminal and applies resizes; we only wait for the exit.
    with socket.socket(fileno=os.dup(ctl)) as c:
        socket.send_fds(c, [b"m"], fds[:1])
    for fd in fds:
        os.close(fd)
    return pid


def _reaped(pid: int) -> int | None:
    """The exit code of our (reparented) child PID if it has exited, else None."""
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 255  # reaped elsewhere: its code is lost
    if not got:
        return None
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else \
        128 + os.WTERMSIG(status)


def _wait(pid: int, timeout: float) -> int | None:
    """The exit code of our child PID, or None after TIMEOUT s (0: no limit)."""
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        code = _reaped(pid)
        if code is not None:
            return code
        if deadline is not None and time.monotonic() >= deadline:
            return None
        try:
            pfd = os.pidfd_open(pid)
        except OSError:
            time.sleep(0.01)  # no pidfd for it (old kernel): poll
            continue
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            select.select([pfd], [], [], left)
        finally:
            os.close(pfd)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def exec_process(root: str, run_root: str, id: str, cmd: list[str], tty: bool = False,
                 timeout: float = 0, fds: list[int] | None = None) -> int:
    """Exec CMD with FDS [stdin, stdout, stderr], or with TTY [control socket] that is sent
    the pty master; wait and return its exit code."""
    fds = fds or []
    eng = Engine(root, run_root)
    exec_id = new_id()
    try:
        pid = _start_exec(eng, id, cmd, tty, None if tty else (fds[0], fds[1], fds[2]),
                          fds[0] if tty else -1, exec_id)
    finally:
        eng.close()
    for fd in fds:
        os.close(fd)  # only the exec'd process holds the session's streams now
    code = _wait(pid, timeout)
    if code is None:
        _timed_out(eng, id, exec_id, pid, cmd, timeout)
    eng.exec_died(id, exec_id, code)
    return code


def _timed_out(eng: Engine, id: str, exec_id: str, pid: int, cmd: list[str],
               timeout: float) -> NoReturn:
    _kill(pid)
    eng.exec_died(id, exec_id, 128 + signal.SIGKILL)
    raise DeadlineExceeded(f"command {cmd!r} timed out after {timeout:g} s")


def exec_sync(root: str, run_root: str, id: str, cmd: list[str], timeout: float = 0,
              limit: int = 4 << 20) -> dict[str, Any]:
    """ExecSync: run CMD, collect at most LIMIT bytes of stdout and of stderr (the rest is
    read and dropped, so the process never blocks on a full pipe); exit code and output."""
    r_out, w_out = os.pipe2(os.O_CLOEXEC)
    r_err, w_err = os.pipe2(os.O_CLOEXEC)
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    eng = Engine(root, run_root)
    exec_id = new_id()
    try:
        pid = _start_exec(eng, id, cmd, False, (devnull, w_out, w_err), -1, exec_id)
    except PalletError as e:
        for fd in (r_out, r_err):
            os.close(fd)
        if not _cannot_invoke(str(e)):
            raise
        code = _start_error_code(str(e), exec=True)
        # A command that is missing or cannot run is the command's failure, not the
        # runtime's: answer as a shell (and `docker exec`) would, 126 with the reason.
        return {"stdout": "", "stderr": base64.b64encode(f"{e}\n".encode()).decode(),
                "exit_code": code}
    except BaseException:
        for fd in (r_out, r_err):
            os.close(fd)
        raise
    finally:
        eng.close()
        for fd in (w_out, w_err, devnull):
            os.close(fd)
    bufs = {r_out: bytearray(), r_err: bytearray()}
    open_fds = [r_out, r_err]
    try:
        pfd = os.pidfd_open(pid)
    except OSError:
        pfd = -1  # then the loop below polls waitpid every POLL s
    deadline = time.monotonic() + timeout if timeout else None
    exited_at: float | None = None
    code: int | None = None
    try:
        while open_fds:
            now = time.monotonic()
            if exited_at is not None and now - exited_at > DRAIN_AFTER_EXIT:
                break  # a background child keeps the pipe open: do not wait for it
            if code is None and deadline is not None and now >= deadline:
                _timed_out(eng, id, exec_id, pid, cmd, timeout)
            wait = [*open_fds] + ([pfd] if code is None and pfd >= 0 else [])
            left = None if deadline is None or code is not None else deadline - now
            if exited_at is not None:
                left = DRAIN_AFTER_EXIT
            elif pfd < 0:
                left = POLL if left is None else min(left, POLL)
            ready = select.select(wait, [], [], left)[0]
            if code is None and (pfd in ready or pfd < 0):
                code = _reaped(pid)
                if code is not None:
                    exited_at = time.monotonic()
            for fd in ready:
                if fd == pfd:
                    continue
                data = os.read(fd, 65536)
                if not data:
                    open_fds.remove(fd)
                    continue
                room = limit - len(bufs[fd])
                if room > 0:
                    bufs[fd] += data[:room]
        if code is None:
            left = max(0.0, deadline - time.monotonic()) if deadline else 0
            code = _wait(pid, left)
            if code is None:
                _timed_out(eng, id, exec_id, pid, cmd, timeout)
    finally:
        if pfd >= 0:
            os.close(pfd)
        for fd in (r_out, r_err):
            os.close(fd)
    eng.exec_died(id, exec_id, code)
    return {"exit_code": code, "stdout": base64.b64encode(bytes(bufs[r_out])).decode(),
            "stderr": base64.b64encode(bytes(bufs[r_err])).decode()}


def _cannot_invoke(message: str) -> bool:
    low = message.lower()
    return any(w in low for w in ("executable file not found", "no such file or directory",
                                  "permission denied", "exec format error", "is a directory"))
