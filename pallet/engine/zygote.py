"""The zygote: a warm, single-threaded fork server. One worker is forked per request, and
monitors are forked from the server itself so that their pages stay shared with it.

Two ways in. The daemon's spawner (pallet.cri.spawner) hands it a SOCK_SEQPACKET
socketpair and asks for `module:function` calls (only the daemon can reach that pair). The
daemonless CLI reaches it on `<run_root>/zygote.sock`: root-only (0600, SO_PEERCRED uid 0),
started on demand by the first CLI that finds it absent or dead (`ensure_started`), and
gone after IDLE_TIMEOUT seconds without requests or live workers. A listening request may
only name an entry point the server was started with (the CLI registers "cli", which runs
one of its container commands), never an arbitrary function.

Listening protocol (SOCK_SEQPACKET, one connection per call):
  client: one message, JSON {"call": NAME, ...} with fds (stdio, cwd...) as SCM_RIGHTS.
  worker: {"pid": PID} at once (the client forwards its signals there), then {"exit": CODE}
          or {"error": MESSAGE}. A client that goes away kills its worker (SIGIO on EOF).
Monitors: a worker's monitor.spawn() sends {"cfg", "streams"} + the monitor's end of the
client socketpair over a per-worker channel; the server has its lean monitor mother
(monitor.mother_main, started on first use) fork the monitor, and answers {"pid"}. Monitor
and mother survive the server's exit (the mother ends at its EOF; monitors are orphans).
A monitor's helper may call {"call": "monitor", "op", "cfg", "arg"} on the listening socket:
the engine's part of its lifecycle, answered {"result"} by a warm worker.

This module's top level imports only C builtins: the thin CLI client runs from it.
"""

from __future__ import annotations

import _socket
import os
import sys

from pallet.errors import SystemFailure

TYPE_CHECKING = False  # typing costs ~10 ms to import on the CLI's path
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any

SOCKET_NAME = "zygote.sock"
PID_NAME = "zygote.pid"
LOCK_NAME = "zygote.lock"
LOG_NAME = "zygote.log"
IDLE_TIMEOUT = 300.0     # seconds without requests (and no live worker) before exiting
CHECK_INTERVAL = 5.0     # how often an idle server checks that its socket is still its own
START_TIMEOUT = 30.0     # how long a client waits for a zygote it started to listen
MAX_FDS = 64
MAX_MESSAGE = 1 << 20    # a request (argv + environment) is far below this
DEFAULT_ROOT = "/var/lib/pallet"
DEFAULT_RUN_ROOT = "/run/pallet"
_SOL_SOCKET, _SCM_RIGHTS = _socket.SOL_SOCKET, _socket.SCM_RIGHTS
_FD_SIZE = 4


def default_run_root(root: str) -> str:
    """/run/pallet for the default root; else a short per-root dir (unix socket paths
    are limited to 108 bytes); PALLET_RUNROOT overrides."""
    env = os.environ.get("PALLET_RUNROOT")
    if env:
        return env
    if os.path.abspath(root) == DEFAULT_ROOT:
        return DEFAULT_RUN_ROOT
    import _sha256  # hashlib's sha256 without hashlib's import cost (OpenSSL bindings)

    return "/run/pallet-" + _sha256.sha256(os.path.abspath(root).encode()).hexdigest()[:10]


def cli_socket_name() -> str:
    """The CLI's zygote socket, named after the code on disk (`zygote-STAMP.sock`): after an
    upgrade or a checkout, clients reach a new zygote running the new code, and the old
    one, unreached, idles out. STAMP hashes pallet's version and the mtimes of its package
    directories (replacing or adding a module changes them); ~6 stats."""
    import _sha256

    import pallet

    base = os.path.dirname(pallet.__file__)
    h = _sha256.sha256(pallet.__version__.encode())
    for sub in ("", "cli", "engine", "oci", "image", "cri"):
        try:
            h.update(os.stat(os.path.join(base, sub)).st_mtime_ns.to_bytes(8, "little"))
        except OSError:
            pass
    return f"zygote-{h.hexdigest()[:12]}.sock"


def cli_path(run_root: str, name: str = SOCKET_NAME) -> str:
    """RUN_ROOT's path of the CLI zygote's socket, or of its NAME sibling (PID_NAME...)."""
    return os.path.join(run_root, _sibling(cli_socket_name(), name))


class ZygoteError(SystemFailure):
    """A fork server's worker died, timed out, or failed with an error that is not pallet's."""


# -- framing: one JSON message per SEQPACKET datagram, fds alongside ------------------------
def _dumps(obj: Any) -> bytes:
    from pallet.oci.jsonlite import dumps  # drives _json without importing json (and re)

    return dumps(obj).encode()


def _loads(data: bytes) -> Any:
    from pallet.oci.jsonlite import loads

    return loads(data)


def send_msg(sock: _socket.socket, obj: Any, fds: Sequence[int] = ()) -> None:
    anc = [(_SOL_SOCKET, _SCM_RIGHTS, b"".join(fd.to_bytes(_FD_SIZE, sys.byteorder)
                                                for fd in fds))] if fds else []
    sock.sendmsg([_dumps(obj)], anc)


def recv_msg(sock: _socket.socket, max_fds: int = MAX_FDS) -> tuple[Any, list[int]]:
    """One message and the fds that came with it; (None, []) on EOF."""
    data, anc, flags, _ = sock.recvmsg(MAX_MESSAGE, _socket.CMSG_SPACE(max_fds * _FD_SIZE),
                                       _socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, kind, payload in anc:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            n = len(payload) - len(payload) % _FD_SIZE
            fds += [int.from_bytes(payload[i:i + _FD_SIZE], sys.byteorder)
                    for i in range(0, n, _FD_SIZE)]
    if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise ValueError("zygote message or its fds truncated")
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return _loads(data), fds


# -- the client: the thin CLI ----------------------------------------------------------------
class ZygoteUnavailable(Exception):  # noqa: N818 - a condition the caller falls back on
    """The zygote could not be reached or started; the caller runs the work itself."""


def connect(run_root: str, name: str = SOCKET_NAME) -> _socket.socket:
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        s.connect(os.path.join(run_root, name))
    except OSError:
        s.close()
        raise
    return s


def ensure_started(run_root: str, boot: str, sys_path: Iterable[str],
                   name: str = SOCKET_NAME) -> _socket.socket:
    """A connection to the zygote listening on RUN_ROOT/NAME, starting it (with BOOT, Python
    code that calls `serve`) when its socket is absent or dead. Raises ZygoteUnavailable."""
    try:
        return connect(run_root, name)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    except OSError as e:
        raise ZygoteUnavailable(f"cannot reach the zygote: {e}") from None
    ready = start(run_root, boot, sys_path, name)
    import select

    try:
        # The server writes one byte once it listens; EOF alone means another zygote won
        # the lock (or it failed): either way, connect again.
        select.select([ready], [], [], START_TIMEOUT)
    finally:
        os.close(ready)
    import time

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return connect(run_root, name)
        except OSError as e:
            if time.monotonic() > deadline:
                raise ZygoteUnavailable(f"the zygote did not start: {e}; see "
                                        f"{os.path.join(run_root, LOG_NAME)}") from None
            time.sleep(0.01)


def start(run_root: str, boot: str, sys_path: Iterable[str], name: str = SOCKET_NAME) -> int:
    """Double-fork a new session running `python -I -S -c BOOT` (argv: pallet-zygote RUN_ROOT
    READY_FD SYS_PATH NAME); return the read end of its readiness pipe. The zygote is
    nobody's child: the CLI exits, it stays."""
    os.makedirs(run_root, mode=0o700, exist_ok=True)
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    paths = os.pathsep.join(p for p in sys_path if p)
    argv = [sys.executable, "-I", "-S", "-c", boot, "pallet-zygote", run_root, str(wfd), paths, name]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setsid()
            if os.fork():
                os._exit(0)
            os.set_inheritable(wfd, True)
            null = os.open(os.devnull, os.O_RDWR)
            log = os.open(os.path.join(run_root, LOG_NAME),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            for i, fd in enumerate((null, null, log)):
                os.dup2(fd, i)
            os.chdir("/")
            os.umask(0o022)
            os.execv(sys.executable, argv)
        finally:
            os._exit(127)
    os.close(wfd)
    os.waitpid(pid, 0)
    return rfd


FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGWINCH", "SIGUSR1",
                     "SIGUSR2")


def call(sock: _socket.socket, request: Mapping[str, Any], fds: Sequence[int] = ()) -> int:
    """Send REQUEST with FDS on a connection from `ensure_started`, forward this process's
    signals to the worker, and return the worker's exit code."""
    import _signal

    try:
        send_msg(sock, dict(request), fds)
        msg, _ = recv_msg(sock, 0)
    except OSError as e:
        raise ZygoteUnavailable(f"the zygote hung up: {e}") from None
    if not msg or "pid" not in msg:
        raise ZygoteUnavailable(f"the zygote refused the request: {(msg or {}).get('error')}")
    pidfd = -1
    try:
        pidfd = os.pidfd_open(int(msg["pid"]))
    except OSError:
        pass
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if signum != _signal.SIGWINCH:
            received.append(signum)
        if pidfd >= 0:
            try:
                _signal.pidfd_send_signal(pidfd, signum)
            except OSError:
                pass

    for name in FORWARDED_SIGNALS:
        _signal.signal(getattr(_signal, name), forward)
    try:
        while True:
            try:
                msg, _ = recv_msg(sock, 0)
            except InterruptedError:
                continue
            except OSError:
                msg = None
            if not msg and received:
                # The worker ended on a signal we forwarded: so does this command, quietly,
                # as docker's CLI does (128 + the signal's number).
                return 128 + received[-1]
            if not msg:
                print("Error: pallet's zygote worker died without an exit code; see "
                      "`dmesg` or run with PALLET_NO_ZYGOTE=1", file=sys.stderr)
                return 125
            if "exit" in msg:
                return int(msg["exit"])
            if "error" in msg:
                print(f"Error: {msg['error']}", file=sys.stderr)
                return 125
    finally:
        for name in FORWARDED_SIGNALS:
            _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
        if pidfd >= 0:
            os.close(pidfd)
        sock.close()


# -- the server ------------------------------------------------------------------------------
class _Server:
    """The fork server's state; one per process (a zygote or the daemon's spawner)."""

    def __init__(self) -> None:
        self.workers: dict[int, int] = {}    # worker pid -> its monitor channel (server end)
        self.monitors: set[int] = set()
        self.fork_monitors = False
        self.private: list[int] = []          # fds of the server alone: children close them
        self.service = ""                     # our listening socket, for monitors' helpers
        self.mother_pid = 0                   # the lean process that forks monitors
        self.mother: _socket.socket | None = None


def serve(*, control: _socket.socket | None = None, listen: str = "",
          preload: Sequence[str] = (), entry_points: Mapping[str, Callable[..., int]] | None = None,
          fork_monitors: bool = False, idle_timeout: float = IDLE_TIMEOUT,
          ready_fd: int = -1,
          socket_name: str = SOCKET_NAME) -> int:  # pragma: no cover - server process
    """The server loop. CONTROL: the daemon's socketpair (each message: a reply socket and
    fds; its EOF ends the loop). LISTEN: a run root whose SOCKET_NAME to serve, for
    ENTRY_POINTS and monitors' helpers ("monitor") only; without CONTROL, until idle.
    FORK_MONITORS: workers' monitors are forked by a lean "monitor mother" we start."""
    import contextlib
    import gc
    import importlib
    import select
    import signal
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    server = _Server()
    server.fork_monitors = fork_monitors
    listener = lock_fd = -1
    sock_ino = 0
    if listen:
        lock_fd, listener, sock_ino = _bind(listen, socket_name)
        if listener < 0 and control is None:
            return 0  # another zygote holds the lock and serves this run root
        if listener >= 0:
            server.service = os.path.join(listen, socket_name)
        if ready_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"1")
    if ready_fd >= 0:
        os.close(ready_fd)
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError as e:
            # A module not written yet is fine: calls into it fail clearly.
            if not (isinstance(e, ModuleNotFoundError) and e.name == name):
                print(f"pallet zygote: cannot preload {name}: {e}", file=sys.stderr)
    # Everything imported so far is shared with every worker and monitor; freezing keeps
    # the collector from touching (and so copying) those pages in the children.
    gc.collect()
    gc.freeze()
    reaped = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    server.private = [fd for fd in (listener, lock_fd, *reaped,
                                    control.fileno() if control is not None else -1) if fd >= 0]
    signal.set_wakeup_fd(reaped[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)
    last_busy = time.monotonic()
    poller = select.poll()
    poller.register(reaped[0], select.POLLIN)
    if control is not None:
        poller.register(control.fileno(), select.POLLIN)
    if listener >= 0:
        poller.register(listener, select.POLLIN)
    # The CLI's zygote serves the code it preloaded: a module edited in place (which
    # leaves the directories' mtimes, and so the socket's name, as they were) ends it.
    watch = _watch_sources() if listener >= 0 and control is None else -1
    if watch >= 0:
        poller.register(watch, select.POLLIN)
        server.private.append(watch)
    channels: dict[int, int] = {}   # channel fd -> worker pid
    try:
        while True:
            timeout = None
            if listener >= 0 and control is None:
                left = idle_timeout - (time.monotonic() - last_busy)
                timeout = max(0.0, min(CHECK_INTERVAL, left)) * 1000 + 1
            try:
                events = poller.poll(timeout)
            except InterruptedError:
                events = []
            for fd, _ in events:
                if fd == reaped[0]:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(fd, 512):
                            pass
                    _reap(server, channels, poller)
                elif control is not None and fd == control.fileno():
                    try:
                        _, fds, _, _ = _socket_recv_fds(control)
                    except OSError:
                        return 0
                    if not fds:
                        return 0  # EOF: the daemon closed or died
                    _fork_worker(server, channels, poller, fds[0], fds[1:], None)
                elif fd == listener:
                    _accept(server, channels, poller, listener, entry_points or {})
                    last_busy = time.monotonic()
                elif fd in channels:
                    _serve_monitor_request(server, fd)
                elif fd == watch and _sources_changed(watch):
                    return 0  # the next command starts a zygote of the new code
            if server.workers:
                last_busy = time.monotonic()
            if listener >= 0 and control is None:
                if time.monotonic() - last_busy > idle_timeout:
                    return 0
                if _socket_inode(listen, socket_name) != sock_ino:
                    return 0  # removed (its run root was deleted) or replaced
    finally:
        if listener >= 0 and _socket_inode(listen, socket_name) == sock_ino:
            for name in (socket_name, _sibling(socket_name, PID_NAME)):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(listen, name))


_IN_CLOSE_WRITE, _IN_MOVED_FROM, _IN_MOVED_TO, _IN_DELETE = 0x8, 0x40, 0x80, 0x200


def _watch_sources() -> int:  # pragma: no cover - server
    """An inotify fd watching pallet's package directories for a module written, moved or
    deleted (-1 without inotify): no cost to clients, unlike stat'ing every module."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return -1
    import pallet

    mask = _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_DELETE
    for dirpath, dirnames, _ in os.walk(os.path.dirname(pallet.__file__)):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        libc.inotify_add_watch(fd, os.fsencode(dirpath), mask)
    return fd


def _sources_changed(fd: int) -> bool:  # pragma: no cover - server
    """Whether the pending inotify events name a .py file (an editor's swap file does not)."""
    import struct

    changed = False
    while True:
        try:
            buf = os.read(fd, 65536)
        except BlockingIOError:
            return changed
        i = 0
        while i + 16 <= len(buf):
            _, _, _, size = struct.unpack_from("iIII", buf, i)
            name = buf[i + 16:i + 16 + size].rstrip(b"\0")
            changed = changed or name.endswith(b".py")
            i += 16 + size


def _sibling(socket_name: str, name: str) -> str:
    """zygote.lock for zygote.sock, spawner.lock for spawner.sock."""
    return socket_name.rsplit(".", 1)[0] + "." + name.rsplit(".", 1)[1]


def _bind(run_root: str, socket_name: str = SOCKET_NAME
          ) -> tuple[int, int, int]:  # pragma: no cover - server
    """Take the run root's lock for SOCKET_NAME and listen on it: (lock, listener, inode),
    listener -1 if another server holds the lock."""
    import fcntl

    os.makedirs(run_root, mode=0o700, exist_ok=True)
    lock_fd = os.open(os.path.join(run_root, _sibling(socket_name, LOCK_NAME)),
                      os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        return -1, -1, 0
    path = os.path.join(run_root, socket_name)
    try:
        os.unlink(path)  # a dead zygote's: we hold the lock, so no live one owns it
    except FileNotFoundError:
        pass
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    old = os.umask(0o177)  # 0600 from the start: no window where others could connect
    try:
        s.bind(path)
    finally:
        os.umask(old)
    s.listen(64)
    s.setblocking(False)
    with open(os.path.join(run_root, _sibling(socket_name, PID_NAME)), "w") as f:
        f.write(f"{os.getpid()}\n")
    return lock_fd, s.detach(), _socket_inode(run_root, socket_name)


def _socket_inode(run_root: str, socket_name: str = SOCKET_NAME) -> int:
    try:
        return os.stat(os.path.join(run_root, socket_name)).st_ino
    except OSError:
        return 0


def _socket_recv_fds(sock: _socket.socket) -> tuple[bytes, list[int], int, Any]:
    import socket

    return socket.recv_fds(sock, 1, MAX_FDS + 1)


def _accept(server: _Server, channels: dict[int, int], poller: Any, listener: int,
            entry_points: Mapping[str, Callable[..., int]]) -> None:  # pragma: no cover
    lsock = _socket.socket(fileno=os.dup(listener))
    try:
        conn_fd, _ = lsock._accept()
    except OSError:
        return
    finally:
        lsock.close()
    os.set_inheritable(conn_fd, False)
    conn = _socket.socket(fileno=conn_fd)
    conn.setblocking(True)
    creds = conn.getsockopt(_SOL_SOCKET, _socket.SO_PEERCRED, 12)
    uid = int.from_bytes(creds[4:8], sys.byteorder)
    if uid != 0:
        # Only root may ask: a worker runs as root with the caller's fds and environment.
        try:
            # Discard a request already sent (closing on unread data would reset the
            # connection before the client reads why); never wait for one.
            while True:
                _, fds, _, _ = recv_msg_nowait(conn)
                for fd in fds:
                    os.close(fd)
        except (OSError, ValueError, EOFError):
            pass
        try:
            send_msg(conn, {"error": "permission denied: the pallet zygote serves root only"})
        except OSError:
            pass
        conn.close()
        return
    _fork_worker(server, channels, poller, conn.detach(), [], entry_points)


def recv_msg_nowait(sock: _socket.socket) -> tuple[bytes, list[int], int, Any]:
    """One raw message without waiting (BlockingIOError if none), its fds closed-on-exec."""
    data, anc, flags, addr = sock.recvmsg(
        MAX_MESSAGE, _socket.CMSG_SPACE(MAX_FDS * _FD_SIZE),
        _socket.MSG_DONTWAIT | _socket.MSG_CMSG_CLOEXEC)
    if not data and not anc:
        raise EOFError
    fds = [int.from_bytes(p[i:i + _FD_SIZE], sys.byteorder) for level, kind, p in anc
           if level == _SOL_SOCKET and kind == _SCM_RIGHTS
           for i in range(0, len(p) - len(p) % _FD_SIZE, _FD_SIZE)]
    return data, fds, flags, addr


def _fork_worker(server: _Server, channels: dict[int, int], poller: Any, reply_fd: int,
                 fds: list[int],
                 entry_points: Mapping[str, Callable[..., int]] | None) -> None:  # pragma: no cover
    import select

    ours = theirs = -1
    if server.fork_monitors:
        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        ours, theirs = a.detach(), b.detach()
    try:
        pid = os.fork()
    except OSError as e:
        # Out of processes: answer the caller on its reply socket, keep serving.
        _reply_raw(reply_fd, {"error": {"type": "ZygoteError", "module": __name__,
                                        "message": f"cannot fork a worker: {e.strerror}"}}
                   if entry_points is None else {"error": f"cannot fork a worker: {e.strerror}"})
        pid = -1
    if pid == 0:
        code = 1
        try:
            for fd in [*server.private, *channels, ours]:
                if fd >= 0:
                    os.close(fd)
            if theirs >= 0:
                from pallet.engine import monitor

                monitor.fork_server = _MonitorChannel(theirs)
            if entry_points is None:
                code = _work(reply_fd, fds)
            else:
                code = _work_listening(reply_fd, entry_points)
        finally:
            os._exit(code)
    for fd in [reply_fd, *fds, theirs]:
        if fd >= 0:
            os.close(fd)
    if pid > 0:
        server.workers[pid] = ours
        if ours >= 0:
            channels[ours] = pid
            poller.register(ours, select.POLLIN)
    elif ours >= 0:
        os.close(ours)


def _reap(server: _Server, channels: dict[int, int], poller: Any) -> None:  # pragma: no cover
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        server.monitors.discard(pid)
        if pid == server.mother_pid:
            _mother_gone(server)
        ch = server.workers.pop(pid, -1)
        if ch >= 0:
            # A worker's monitor requests all precede its exit, and are answered in order.
            _drain_channel(server, ch, channels)
            poller.unregister(ch)
            channels.pop(ch, None)
            os.close(ch)


def _drain_channel(server: _Server, ch: int, channels: dict[int, int]) -> None:  # pragma: no cover
    import select

    while select.select([ch], [], [], 0)[0]:
        if not _serve_monitor_request(server, ch):
            return


def _serve_monitor_request(server: _Server, ch: int) -> bool:  # pragma: no cover - server
    """Have the mother fork the monitor a worker asked for; False on the channel's EOF."""
    import contextlib

    sock = _socket.socket(fileno=os.dup(ch))
    try:
        try:
            msg, fds = recv_msg(sock, 1)
        except (OSError, ValueError):
            return False
        if msg is None:
            return False
        cfg = dict(msg["cfg"], service=server.service)
        pid = _mother_fork(server, cfg, msg.get("streams", ""), fds[0]) if fds else 0
        if pid > 0:
            for fd in fds:
                os.close(fd)
            server.monitors.add(pid)
            with contextlib.suppress(OSError):
                send_msg(sock, {"pid": pid})
            return True
        try:
            # No mother (it could not be started): fork the monitor here, as a fallback.
            pid = os.fork()
        except OSError as e:
            for fd in fds:
                os.close(fd)
            send_msg(sock, {"error": f"cannot fork a monitor: {e.strerror}"})
            return True
        if pid == 0:
            try:
                sock.close()
                from pallet.engine import monitor

                # Forked from the warm server, the monitor shares its pages: going lean
                # by exec would only trade them for a private interpreter.
                monitor.run_forked(dict(cfg, lean_after=None), fds[0], msg.get("streams", ""))
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)
        server.monitors.add(pid)
        try:
            send_msg(sock, {"pid": pid})
        except OSError:
            pass
        return True
    finally:
        sock.close()


def _start_mother(server: _Server) -> bool:  # pragma: no cover - server
    """Fork and exec the monitor mother (`python -I -S`, monitor.py and the OCI runtime's
    create path only); it forks every monitor from then on. Its EOF on our socket ends it."""
    import signal

    from pallet.engine import monitor

    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    boot = (f"import sys;sys.path[:0]=[{os.path.dirname(os.path.abspath(monitor.__file__))!r}];"
            "import monitor;monitor.mother_main()")
    paths = os.pathsep.join(p for p in sys.path if p)
    title = "pallet-monitor-mother " + (os.path.dirname(server.service) or str(os.getpid()))
    try:
        pid = os.fork()
    except OSError:
        a.close()
        b.close()
        return False
    if pid == 0:
        try:
            fd = b.fileno()
            os.set_inheritable(fd, True)
            os.closerange(3, fd)
            os.closerange(fd + 1, os.sysconf("SC_OPEN_MAX"))
            signal.set_wakeup_fd(-1)
            os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", boot,
                                      "pallet-monitor-mother", str(fd), paths, title])
        finally:
            os._exit(127)
    b.close()
    server.mother, server.mother_pid = a, pid
    server.private.append(a.fileno())
    return True


def _mother_gone(server: _Server) -> None:  # pragma: no cover - server
    if server.mother is not None:
        fd = server.mother.fileno()
        if fd in server.private:
            server.private.remove(fd)
        server.mother.close()
    server.mother, server.mother_pid = None, 0


def _mother_fork(server: _Server, cfg: dict[str, Any], streams: str,
                 fd: int) -> int:  # pragma: no cover - server
    """The pid of the monitor the mother forked for CFG, or 0 if it cannot."""
    import marshal

    for _ in range(2):  # a dead mother is replaced once
        if server.mother is None and not _start_mother(server):
            return 0
        assert server.mother is not None
        try:
            server.mother.sendmsg([marshal.dumps((cfg, streams))],
                                  [(_SOL_SOCKET, _SCM_RIGHTS, fd.to_bytes(_FD_SIZE, sys.byteorder))])
            answer = server.mother.recv(64)
        except OSError:
            answer = b""
        if answer:
            return int(answer)
        _mother_gone(server)
    return 0


class _MonitorChannel:
    """In a worker: monitor.spawn() asks the server to fork the monitor through this."""

    def __init__(self, fd: int):
        self.sock = _socket.socket(fileno=fd)

    def __call__(self, cfg: dict[str, Any], mon_fd: int, streams: str) -> int:
        from pallet.errors import SystemFailure

        try:
            send_msg(self.sock, {"cfg": cfg, "streams": streams}, [mon_fd])
            msg, _ = recv_msg(self.sock, 0)
        except OSError as e:
            raise SystemFailure(f"the zygote could not fork a monitor: {e}") from None
        if not msg or "pid" not in msg:
            raise SystemFailure(f"the zygote could not fork a monitor: {(msg or {}).get('error')}")
        return int(msg["pid"])


# -- workers ---------------------------------------------------------------------------------
def _worker_signals() -> None:  # pragma: no cover - worker
    import signal

    signal.set_wakeup_fd(-1)
    # The function may wait for children of its own; the server's reaper must not steal them.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _work(reply_fd: int, fds: list[int]) -> int:  # pragma: no cover - worker
    """The daemon's kind of call: read {"target", "kwargs"}, reply {"result"} or {"error"}."""
    import importlib
    import json
    import traceback

    from pallet.errors import PalletError

    _worker_signals()
    for fd in fds:
        os.set_inheritable(fd, False)
    sock = _socket.socket(fileno=reply_fd)
    sock.setblocking(True)
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
        payload = json.dumps({"result": fn(**kwargs)}).encode()
    except PalletError as e:
        payload = json.dumps({"error": {"type": type(e).__name__, "module": type(e).__module__,
                                        "message": str(e)}}).encode()
    except BaseException as e:  # noqa: BLE001 - report any failure to the caller, never hang it
        traceback.print_exc()
        payload = json.dumps({"error": {"type": "ZygoteError", "module": __name__,
                                        "message": f"{type(e).__name__}: {e}"}}).encode()
    try:
        sock.sendall(payload)
    except OSError:
        return 1  # the caller gave up (timeout) and closed its end
    finally:
        sock.close()
    return 0


def _work_listening(conn_fd: int,
                    entry_points: Mapping[str, Callable[..., int]]) -> int:  # pragma: no cover
    import fcntl
    import signal

    _worker_signals()
    conn = _socket.socket(fileno=conn_fd)
    try:
        req, fds = recv_msg(conn)
    except (OSError, ValueError):
        return 1
    if not isinstance(req, dict):
        return 1
    if req.get("call") == "monitor":
        return _monitor_service(conn, req)
    fn = entry_points.get(str(req.get("call")))
    if fn is None:
        for fd in fds:
            os.close(fd)
        try:
            send_msg(conn, {"error": f"the zygote does not serve {str(req.get('call'))!r}"})
        except OSError:
            pass
        return 1

    def client_gone(signum: int, frame: object) -> None:
        # Like the in-process CLI killed outright: whatever it started keeps running.
        try:
            if conn.recv(1, _socket.MSG_PEEK | _socket.MSG_DONTWAIT) == b"":
                os._exit(1)
        except BlockingIOError:
            pass
        except OSError:
            os._exit(1)

    signal.signal(signal.SIGIO, client_gone)
    fcntl.fcntl(conn_fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(conn_fd, fcntl.F_SETFL, fcntl.fcntl(conn_fd, fcntl.F_GETFL) | os.O_ASYNC)
    try:
        send_msg(conn, {"pid": os.getpid()})
    except OSError:
        return 1
    client_gone(signal.SIGIO, None)  # it may have gone before O_ASYNC was set
    code = 1
    try:
        code = fn(req, fds)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt as e:  # ctrl-C, or a termination signal the entry point raised
        code = 128 + getattr(e, "signum", 2)
    except BaseException:  # noqa: BLE001 - the caller sees what Python would have printed
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except (OSError, ValueError):
                pass
    try:
        send_msg(conn, {"exit": int(code)})
    except OSError:
        return 1
    return 0


def _monitor_service(conn: _socket.socket, req: Mapping[str, Any]) -> int:  # pragma: no cover
    """A monitor's helper asks for the engine's part of its container's lifecycle (record the
    exit, release, auto-remove): done here, warm, rather than by importing the engine."""
    try:
        from pallet.engine import containers

        res = containers.monitor_op(str(req.get("op")), dict(req["cfg"]), dict(req.get("arg") or {}))
        msg: dict[str, Any] = {"result": res}
    except BaseException as e:  # noqa: BLE001 - the helper then does it itself
        import traceback

        traceback.print_exc()
        msg = {"error": f"{type(e).__name__}: {e}"}
    try:
        send_msg(conn, msg)
    except OSError:
        return 1
    return 0


def adopt_client(req: Mapping[str, Any], fds: list[int]) -> None:  # pragma: no cover - worker
    """Become the caller for the length of a call: its stdin/stdout/stderr (fds 0-2), its
    working directory (fd 3), environment and umask."""
    import io

    for i, fd in enumerate(fds[:3]):
        os.dup2(fd, i)
    if len(fds) > 3:
        os.fchdir(fds[3])
    for fd in fds:
        if fd > 2:
            os.close(fd)
    if isinstance(req.get("env"), dict):
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in req["env"].items()})
    if "umask" in req:
        os.umask(int(req["umask"]))
    # Python chose the server's buffering (/dev/null: block); the caller's stdout may be a tty.
    sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False), encoding="utf-8",
                                 errors="surrogateescape")
    sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), encoding="utf-8",
                                  errors="surrogateescape", line_buffering=os.isatty(1))
    sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)


def _reply_raw(fd: int, msg: Mapping[str, Any]) -> None:  # pragma: no cover - server
    import contextlib
    import json

    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(msg).encode())


def set_title(title: str) -> None:
    """Overwrite this process's command line (what ps shows): a forked process would
    otherwise show the zygote's. The monitor module holds the one implementation."""
    from pallet.engine.monitor import set_title as _set_title

    _set_title(title)
