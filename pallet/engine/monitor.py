"""The container monitor: one small process per container, its parent and subreaper,
holding its stdio, writing its CRI-format log, serving attach, recording its exit.

Lifecycle. `spawn()` in a fork server's worker (the CLI's zygote, the daemon's spawner)
asks its server, which has the lean *mother* (`mother_main`, a `python -I -S` importing
only this file and the OCI runtime's create path) fork the monitor; such a monitor never
re-executes. Without a server (`PALLET_NO_ZYGOTE=1`) `spawn()` double-forks the monitor
from the caller, and once the container has run for `lean_after` seconds it re-executes
itself as a bare `python -I -S monitor.py` (this file at top level imports only C
builtins). Either way the monitor only moves bytes: a forked *helper* creates and starts
the container through the runtime (its init is reparented to the monitor, a subreaper);
the engine's part (records, release, auto-remove) is done by the caller for the start and,
after an exit, by a worker of the fork server named in cfg["service"] (or the run root's
zygote), the helper importing the engine itself only when none answers.

Attach protocol on <run_dir>/attach (and on the socketpair spawn() returns):
frames of 1 type byte + 4-byte big-endian length + payload. Client to monitor:
h=hello (payload: subscribed streams, e.g. b"stdin,stdout,stderr"), i=stdin data,
e=stdin EOF, r=resize (b"ROWS COLS"), o=reopen the log, a=the start is recorded (from
the spawning client only; the exit is recorded after it), n=the container's network is
ready (empty payload) or failed (the error), from the spawning client only when its cfg
has "network_gate": the setup helper holds the start until then, f=the published ports to
relay from [::1] (relay.encode's lines; from the spawning client, before its "n").
Monitor to client:
1=stdout, 2=stderr, p=started (b"PID"), x=exited (b"CODE\\nERROR").
"""

from __future__ import annotations

# Only C builtins here: this module is also the lean monitor's __main__.
import _signal
import os
import select
import sys
import time

FRAME_HEADER = 5
MAX_CLIENT_BACKLOG = 4 << 20   # a client this far behind is dropped, not waited for
MAX_STDIN_BACKLOG = 1 << 20
READ_SIZE = 16384              # conmon reads 8 KiB; a 64 KiB buffer dirtied 64 KiB of heap
PIPE_BUF = 4096                # what one write to a pipe delivers whole
DRAIN_TIMEOUT = 2.0            # after the init exits, how long to wait for pipe EOF
DEFAULT_LEAN_AFTER = 1.0
DEFAULT_SLEEP_AFTER = 1.0      # seconds without an event before an idle monitor sleeps
SH = "/bin/sh"
# What a sleeping monitor runs (see Monitor._sleep): blocked in read() on a pipe nobody
# writes, until SIGIO's trap execs "$@" (the resume command). The trap ignores SIGIO first:
# an ignored signal stays ignored across exec, so one more cannot kill the Python that
# starts (its default action is to terminate) before it has switched O_ASYNC off.
# Should read() ever return (it cannot: the pipe's write end is ours too), it wakes the same way.
SLEEP_SCRIPT = """trap 'trap "" IO; exec "$@"' IO
read -r _
trap "" IO
exec "$@"
"""
EXIT_FILE = "exit.json"
PID_FILE = "monitor.pid"
ATTACH_SOCKET = "attach"
STOP_MARKER = "stopped-by-user"
RESTART_FILE = "restart-policy"  # `pallet update --restart` of a running container


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + len(payload).to_bytes(4, "big") + payload


def parse_frames(buf: bytearray) -> list[tuple[bytes, bytes]]:
    """Pop every complete frame from BUF (in place)."""
    out = []
    while len(buf) >= FRAME_HEADER:
        n = int.from_bytes(buf[1:5], "big")
        if len(buf) < FRAME_HEADER + n:
            break
        out.append((bytes(buf[0:1]), bytes(buf[5:5 + n])))
        del buf[:FRAME_HEADER + n]
    return out


def rfc3339nano(ns: int) -> str:
    sec, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"


class CRILog:
    """The CRI log format: `TIMESTAMP STREAM P|F CONTENT\\n`, rotated by size."""

    def __init__(self, path: str, max_size: int, max_files: int):
        self.path, self.max_size, self.max_files = path, max_size, max_files
        self.fd = -1
        self.size = 0
        if path:
            self.reopen()

    def reopen(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                          0o640)
        self.size = os.fstat(self.fd).st_size

    def write(self, stream: str, data: bytes) -> None:
        if self.fd < 0 or not data:
            return
        ts = rfc3339nano(time.time_ns()).encode()
        tag = stream.encode()
        lines = data.split(b"\n")
        out = bytearray()
        # Every complete line is F; trailing bytes without a newline are written
        # now as P (like conmon) rather than held, so nothing waits in memory.
        for i, line in enumerate(lines):
            last = i == len(lines) - 1
            if last and not line:
                break
            out += b"%s %s %s %s\n" % (ts, tag, b"P" if last else b"F", line)
        if self.max_size and self.size + len(out) > self.max_size and self.size:
            self.rotate()
        os.write(self.fd, out)
        self.size += len(out)

    def rotate(self) -> None:
        os.close(self.fd)
        self.fd = -1
        for i in range(self.max_files - 1, 0, -1):
            src = self.path if i == 1 else f"{self.path}.{i - 1}"
            try:
                os.rename(src, f"{self.path}.{i}")
            except FileNotFoundError:
                pass
        if self.max_files <= 1:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self.reopen()


class Client:
    __slots__ = ("fd", "streams", "rbuf", "wbuf")

    def __init__(self, fd: int, streams: str = ""):
        self.fd = fd
        self.streams = set(streams.split(",")) if streams else set()
        self.rbuf = bytearray()
        self.wbuf = bytearray()


def _restart_wanted(policy: str, code: int, restarts: int, stopped_by_user: bool) -> bool:
    if stopped_by_user:
        return False
    name, _, limit = policy.partition(":")
    if name in ("always", "unless-stopped"):
        return True
    if name == "on-failure":
        return code != 0 and (not limit or restarts < int(limit))
    return False


class Monitor:
    """The event loop. CFG is plain data (see containers.Engine._monitor_config)."""

    def __init__(self, cfg: dict, state: dict | None = None):
        self.cfg = cfg
        self.run_dir = cfg["run_dir"]
        self.clients: dict[int, Client] = {}
        self.out_fd = self.err_fd = self.in_fd = self.pty_fd = -1
        self.stdin_buf = bytearray()
        self.stdin_closed = False
        self.pid = 0                     # the container's init
        self.exit_status: int | None = None
        self.exit_at = 0.0
        self.helper = 0                  # pid of the running helper
        self.helper_kind = ""
        self.helper_fd = -1
        self.helper_buf = bytearray()
        self.error = ""
        self.error_code = 0
        self.restarts = cfg.get("restart_count", 0)
        self.started_at = 0.0
        self.restart_at = 0.0
        self.backoff = 0.1
        self.listen_fd = -1
        self.console_fd = -1             # listening console socket during a tty setup
        self.exited_code: int | None = None
        self.early_exits: dict[int, int] = {}
        self.finishing = False           # a finish helper was started for this exit
        self.final_code = 0
        self.first = True                # the first setup: the spawning caller records it
        self.unacked = -1                # client fd whose "a" (store updated) must precede finish
        self.lean = state is not None
        self.log = CRILog(cfg.get("log_path", ""), cfg.get("log_max_size", 0),
                          cfg.get("log_max_files", 1))
        self.pending: tuple[dict, list[int]] | None = None  # a setup prepared by the mother
        self.gate_w = -1                 # the first setup's helper waits on this for "n"
        self.relay = None                # published ports on [::1] (relay.Relay), if any
        self.probe = 0                   # pid of a running health probe (cfg["health"])
        self.probe_at = 0.0              # when the next one is due (monotonic)
        self.active_at = 0.0             # when the last event came (monotonic)
        self.pidns_pid = 0               # the init _can_sleep() looked at, and what it found:
        self.pidns_lead = False          # it leads its own pid namespace
        self.cg_events = ""              # its own cgroup v2's cgroup.events, if any
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_r, self.wake_w = rfd, wfd
        if state is not None:
            self._restore(state)

    # -- state carried across the exec into the lean interpreter ---------------------
    def _snapshot(self) -> dict:
        return {"out": self.out_fd, "err": self.err_fd, "in": self.in_fd, "pty": self.pty_fd,
                "listen": self.listen_fd, "pid": self.pid, "restarts": self.restarts,
                "started_at": self.started_at, "stdin_closed": self.stdin_closed,
                "unacked": self.unacked,
                "clients": [(c.fd, ",".join(sorted(c.streams))) for c in self.clients.values()],
                "log_fd": self.log.fd, "probe": self.probe, "probe_at": self.probe_at,
                "relay": self.relay.snapshot() if self.relay is not None else None}

    def _restore(self, st: dict) -> None:
        self.out_fd, self.err_fd, self.in_fd = st["out"], st["err"], st["in"]
        self.pty_fd, self.listen_fd, self.pid = st["pty"], st["listen"], st["pid"]
        self.restarts, self.started_at = st["restarts"], st["started_at"]
        self.stdin_closed = st["stdin_closed"]
        self.unacked = st.get("unacked", -1)
        self.probe, self.probe_at = st.get("probe", 0), st.get("probe_at", 0.0)
        self.first = False
        for fd, streams in st["clients"]:
            self.clients[fd] = Client(fd, streams)
        if self.log.fd >= 0:
            os.close(self.log.fd)
        self.log.fd = st["log_fd"]
        self.log.size = os.fstat(self.log.fd).st_size if self.log.fd >= 0 else 0
        if st.get("relay"):
            self.relay = _relay_module().restore(st["relay"])
        self.active_at = time.monotonic()

    def _resume_args(self, st: dict) -> list[str]:
        """The arguments of the lean interpreter that carries on with state ST (the id
        and root are in plain text at the end, so `ps` shows whose monitor it is)."""
        import marshal

        keep = [fd for fd in (self.out_fd, self.err_fd, self.in_fd, self.pty_fd,
                              self.listen_fd, self.log.fd, *self.clients) if fd >= 0]
        for fd in keep:
            os.set_inheritable(fd, True)
        if self.relay is not None:
            self.relay.detach_fds()
        blob = marshal.dumps((self.cfg, st)).hex()
        # Imported by name from its own dir so the cached bytecode is used: compiling
        # the source in the lean process would leave the compiler's garbage in its heap.
        boot = (f"import sys;sys.path[:0]=[{os.path.dirname(os.path.abspath(__file__))!r}];"
                "import monitor;monitor.resume()")
        return ["-I", "-S", "-c", boot, "--resume", blob, self.cfg["id"], self.cfg["root"]]

    def _title(self) -> str:
        return f"pallet-monitor {self.cfg['id']} {self.cfg['root']}"

    def _go_lean(self) -> None:
        python = self.cfg["python"]
        os.execv(python, [python, *self._resume_args(self._snapshot())])

    # -- sleeping: an idle monitor is /bin/sh until the kernel has news ---------------------
    def _can_sleep(self) -> bool:
        """Nothing to do until the kernel says so: no client, helper, probe, timer, relay
        or pending byte. And a sleeping monitor must hear of the init's death without
        SIGCHLD (sh reaps children it does not know, and their exit status with them): the
        init must lead its own pid namespace, so that its death kills every process of the
        container, which closes our pipes' write ends (EOF) and empties its cgroup. A pty
        master gets no SIGIO on hangup, and an init may close its stdout and stderr: then
        the container's own cgroup v2 must be there to watch (cgroup.events)."""
        if not (self.pid and self.exit_status is None and self.helper == 0 and not self.probe
                and not self.cfg.get("health") and self.relay is None and not self.clients
                and self.unacked < 0 and self.gate_w < 0 and not self.stdin_buf
                and not self.restart_at and self.pending is None and self.console_fd < 0):
            return False
        if self.pidns_pid != self.pid:
            self.pidns_pid, self.pidns_lead = self.pid, _leads_pid_namespace(self.pid)
            self.cg_events = _cgroup_events(self.pid) if self.pidns_lead else ""
        if not self.pidns_lead:
            return False
        if self.out_fd >= 0 or self.err_fd >= 0:
            return True
        # An empty cgroup with the init not reaped yet: it is exiting (an init's exit can
        # wait a while in its namespace's teardown, after its cgroup emptied): no event
        # is left to come but SIGCHLD, so stay awake for it.
        return bool(self.cg_events) and _populated(self.cg_events)

    def _sleep(self) -> None:
        """Exec /bin/sh in read() on a pipe nobody writes (SLEEP_SCRIPT): ~0.1 MiB of
        private memory where an idle CPython has ~1 MiB (a forked one) or ~2.5 (a fresh
        one). Same pid, same fds, still the init's parent and subreaper (both survive
        exec). The kernel wakes it with SIGIO (O_ASYNC): output or EOF on the container's
        pipes or pty, a connection to the attach socket, a change of the container's
        cgroup.events when no pipe is left to tell its death; its trap execs the lean interpreter with
        our state (resume()), which carries on and sleeps again when idle. SIGCHLD stays
        blocked while sh runs, so sh reaps nothing; the init's exit status waits for us.

        The fds are armed by a forked *armer* only once sh has installed its trap: SIGIO
        before that would kill it. The armer then looks whether anything came meanwhile
        and wakes sh at once if so. Returns only if sh could not be run."""
        if not os.access(SH, os.X_OK):
            self.cfg["sleep_after"] = None
            return
        watch = [fd for fd in (self.out_fd, self.err_fd, self.pty_fd, self.listen_fd)
                 if fd >= 0]
        cg_watch = -1
        if self.out_fd < 0 and self.err_fd < 0:  # no pipe whose EOF tells the init's death
            cg_watch = _watch_file(self.cg_events)
            if cg_watch < 0:
                self.cg_events = ""
                return
            if not _populated(self.cg_events):  # emptied before the watch: stay awake
                os.close(cg_watch)
                return
            watch.append(cg_watch)
        # sh cannot trap a signal ignored when it starts: it would sleep for good.
        _signal.signal(_signal.SIGIO, _signal.SIG_DFL)
        hold_r, hold_w = os.pipe()
        armer = os.fork()
        if armer == 0:
            _arm(os.getppid(), self.pid, watch)
        st = self._snapshot()
        st["sleep"] = (armer, hold_w, cg_watch)
        resume = [self.cfg["python"], *self._resume_args(st)]
        for fd in (hold_w, cg_watch):
            if fd >= 0:
                os.set_inheritable(fd, True)
        os.dup2(hold_r, 0)
        os.close(hold_r)
        _signal.pthread_sigmask(_signal.SIG_BLOCK, [_signal.SIGCHLD])
        try:
            # sh's argv[0] is what `ps` shows of a sleeping monitor.
            os.execv(SH, [self._title(), "-c", SLEEP_SCRIPT, "pallet-monitor", *resume])
        except OSError as e:
            os.write(2, f"monitor {self.cfg['id'][:12]}: cannot sleep: {e}\n".encode())
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [_signal.SIGCHLD])
        os.kill(armer, _signal.SIGKILL)
        _woken(st)  # undoes the rest
        self.cfg["sleep_after"] = None

    # -- the loop ------------------------------------------------------------------------
    def fds(self) -> list[int]:
        """Every fd this monitor holds (the mother closes its copies after forking us)."""
        pending = self.pending[1] if self.pending else []
        relayed = self.relay.fds() if self.relay is not None else []
        return [fd for fd in (self.wake_r, self.wake_w, self.log.fd, self.listen_fd,
                              self.out_fd, self.err_fd, self.in_fd, self.console_fd,
                              self.gate_w, *pending, *self.clients, *relayed) if fd >= 0]

    def run(self) -> None:
        _signal.set_wakeup_fd(self.wake_w)
        _signal.signal(_signal.SIGCHLD, _noop)
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [_signal.SIGCHLD])  # blocked in sleep
        _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
        try:
            self._reap()
            if not self.pid and not self.lean:
                self._setup()
            self._loop()
        except BaseException as e:  # noqa: BLE001 - last words go to the monitor log
            try:
                os.write(2, f"monitor {self.cfg['id'][:12]}: {type(e).__name__}: {e}\n"
                         .encode())
            except OSError:
                pass
            os._exit(1)
        os._exit(0)

    def _loop(self) -> None:
        poller = select.poll()
        while True:
            if self._finished():
                return
            now = time.monotonic()
            timeout = None
            if self._may_finish():
                timeout = max(0.0, self.exit_at + DRAIN_TIMEOUT - now)
            if self.restart_at:
                timeout = max(0.0, self.restart_at - now)
                if os.path.exists(os.path.join(self.run_dir, STOP_MARKER)):
                    # Stopped while waiting to restart: record it as exited instead.
                    self.restart_at = 0.0
                    self._finish(self.final_code)
                    continue
                if timeout == 0.0:
                    self.restart_at = 0.0
                    self._setup()
                    continue
            lean_after = self.cfg.get("lean_after", DEFAULT_LEAN_AFTER)
            if (not self.lean and lean_after is not None and self.pid and self.helper == 0
                    and self.exit_status is None):
                left = self.started_at + lean_after - now
                if left <= 0:
                    self._go_lean()
                timeout = left if timeout is None else min(timeout, left)
            sleep_after = self.cfg.get("sleep_after")
            if sleep_after is not None and self._can_sleep():
                left = max(self.active_at, self.started_at) + sleep_after - now
                if left <= 0:
                    self._sleep()
                    continue
                timeout = left if timeout is None else min(timeout, left)
            if self.probe_at and not self.probe and self.pid and self.exit_status is None:
                left = self.probe_at - now
                if left <= 0:
                    self._spawn_probe()
                else:
                    timeout = left if timeout is None else min(timeout, left)
            if self.relay is not None:
                self.relay.expire()
                left = self.relay.timeout()
                if left is not None:
                    timeout = left if timeout is None else min(timeout, left)
            registered = self._register(poller)
            try:
                events = poller.poll(None if timeout is None else int(timeout * 1000) + 1)
            except InterruptedError:
                events = []
            if events:
                self.active_at = time.monotonic()
            for fd, ev in events:
                self._dispatch(fd, ev)
            for fd in registered:
                try:
                    poller.unregister(fd)
                except KeyError:
                    pass
            if self._may_finish() and (self._streams_done()
                                       or time.monotonic() >= self.exit_at + DRAIN_TIMEOUT):
                self._container_gone()

    def _may_finish(self) -> bool:
        # The caller that spawned us records the start in the store after our "p"; the finish
        # helper's record must come after it, so it waits for that caller's "a" (or EOF).
        return (self.exit_status is not None and self.helper == 0 and not self.finishing
                and self.unacked < 0)

    def _register(self, poller: select.poll) -> list[int]:
        fds = []
        R, W = select.POLLIN, select.POLLOUT

        def reg(fd: int, mask: int) -> None:
            if fd >= 0:
                poller.register(fd, mask)
                fds.append(fd)

        reg(self.wake_r, R)
        if self.pid or self.exit_status is not None:
            # Output waits in the pipe until clients have heard "started".
            reg(self.out_fd, R)
            reg(self.err_fd, R)
            reg(self.pty_fd, R | (W if self.stdin_buf else 0))
        if self.in_fd >= 0 and self.stdin_buf:
            reg(self.in_fd, W)
        reg(self.helper_fd, R)
        reg(self.listen_fd, R)
        for c in self.clients.values():
            reg(c.fd, R | (W if c.wbuf else 0))
        if self.relay is not None:
            for fd, mask in self.relay.events():
                reg(fd, mask)
        return fds

    def _dispatch(self, fd: int, ev: int) -> None:
        if fd == self.wake_r:
            try:
                while os.read(fd, 512):
                    pass
            except BlockingIOError:
                pass
            self._reap()
        elif fd in (self.out_fd, self.err_fd, self.pty_fd):
            if ev & select.POLLOUT and fd == self.pty_fd:
                self._flush_stdin()
            if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                self._read_stream(fd)
        elif fd == self.in_fd:
            self._flush_stdin()
        elif fd == self.helper_fd:
            self._read_helper()
        elif fd == self.listen_fd:
            self._accept()
        elif fd in self.clients:
            c = self.clients[fd]
            if ev & select.POLLOUT:
                self._flush_client(c)
            if ev & (select.POLLIN | select.POLLHUP | select.POLLERR) and fd in self.clients:
                self._read_client(c)
        elif self.relay is not None:
            self.relay.handle(fd, ev)

    # -- children ----------------------------------------------------------------------
    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid and self.exit_status is None:
                self.exit_status = status
                self.exit_at = time.monotonic()
            elif pid == self.helper:
                self._read_helper()
                self._helper_done(os.waitstatus_to_exitcode(status))
            elif pid == self.probe:
                self.probe = 0
                self.probe_at = time.monotonic() + self._probe_interval()
            elif len(self.early_exits) < 64:
                # Maybe the init, exiting before the helper told us its pid.
                self.early_exits[pid] = status

    def _streams_done(self) -> bool:
        return self.out_fd < 0 and self.err_fd < 0 and self.pty_fd < 0

    def _close_streams(self) -> None:
        for name in ("out_fd", "err_fd", "pty_fd", "in_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        self.stdin_buf.clear()

    def _spawn_helper(self, kind: str, arg: dict, child_fds: list[int]) -> None:
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(rfd)
                for c in list(self.clients):
                    os.close(c)
                # Our copies of the relay's sockets would keep its connections open.
                for fd in self.relay.fds() if self.relay is not None else ():
                    os.close(fd)
                if self.gate_w >= 0:
                    os.close(self.gate_w)  # so a monitor gone without a word reads as EOF
                code = _helper_main(kind, self.cfg, arg, wfd, self.lean)
            except BaseException as e:  # noqa: BLE001 - reported to the monitor
                _report(wfd, {"error": f"{type(e).__name__}: {e}", "code": 125})
            finally:
                os._exit(code)
        os.close(wfd)
        for fd in child_fds:
            os.close(fd)
        self.helper, self.helper_kind, self.helper_fd = pid, kind, rfd
        self.helper_buf.clear()

    def _read_helper(self) -> None:
        if self.helper_fd < 0:
            return
        while True:
            try:
                data = os.read(self.helper_fd, READ_SIZE)
            except BlockingIOError:
                return
            if not data:
                os.close(self.helper_fd)
                self.helper_fd = -1
                return
            self.helper_buf += data

    def _helper_result(self) -> dict:
        import marshal

        try:
            return marshal.loads(bytes(self.helper_buf)) if self.helper_buf else {}
        except (EOFError, ValueError, TypeError):
            return {}

    def _helper_done(self, code: int) -> None:
        kind, res = self.helper_kind, self._helper_result()
        self.helper, self.helper_kind = 0, ""
        if self.helper_fd >= 0:
            os.close(self.helper_fd)
            self.helper_fd = -1
        if kind == "setup":
            if res.get("pid"):
                self.pid = res["pid"]
                self.started_at = time.monotonic()
                if self.cfg.get("health"):
                    self._health_reset()
                self._broadcast_control(frame(b"p", str(self.pid).encode()))
                if self.pid in self.early_exits:
                    self.exit_status = self.early_exits.pop(self.pid)
                    self.exit_at = time.monotonic()
                self.early_exits.clear()
            else:
                self.error = res.get("error") or f"setup helper failed with status {code}"
                self.error_code = res.get("code", 125)
                self._close_streams()
                self._finish(self.error_code)
        elif kind == "finish":
            if res.get("restart"):
                self.restarts += 1
                ran = time.monotonic() - self.started_at
                self.backoff = 0.1 if ran > 10 else min(self.backoff * 2, 60.0)
                self.restart_at = time.monotonic() + self.backoff
                self.exit_status = None
                self.finishing = False
            else:
                self.exited_code = self.final_code

    # -- health checks: only for a container with cfg["health"] ----------------------------
    def _health_reset(self) -> None:
        """A (re)started container's health is "starting" until its first probe's due."""
        _atomic_write(os.path.join(self.cfg["ctr_dir"], "health.json"),
                      '{"Status": "starting", "FailingStreak": 0, "Log": []}\n')
        self.probe_at = time.monotonic() + self._probe_interval()

    def _probe_interval(self) -> float:
        hc = self.cfg["health"]
        starting = time.monotonic() - self.started_at < hc["start_period"]
        return hc["start_interval"] if starting else hc["interval"]

    def _spawn_probe(self) -> None:
        """Fork a child that runs one probe (pallet.engine.health, imported there only)."""
        in_start_period = time.monotonic() - self.started_at < self.cfg["health"]["start_period"]
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for fd in (*self.clients, *(self.relay.fds() if self.relay else ())):
                    os.close(fd)
                sys.path[:0] = [p for p in self.cfg.get("sys_path", []) if p not in sys.path]
                from pallet.engine import health

                code = health.probe(self.cfg, in_start_period)
            except BaseException as e:  # noqa: BLE001 - last words go to the monitor log
                os.write(2, f"health probe {self.cfg['id'][:12]}: {type(e).__name__}: {e}\n"
                         .encode())
            finally:
                os._exit(code)
        self.probe = pid

    # -- setup and teardown, in helpers ---------------------------------------------------
    def _setup(self) -> None:
        """Fork a helper that creates and starts the container with our pipes as its stdio."""
        if self.pending is None:
            self._prepare_setup()
        assert self.pending is not None
        arg, child_fds = self.pending
        self.pending = None
        self.exit_status = None
        self.finishing = False
        self._spawn_helper("setup", arg, child_fds)
        if self.cfg.get("tty"):
            # The init sends the pty master while the helper waits in create.
            self.pty_fd = _recv_console(self.console_fd, self.helper)
            os.close(self.console_fd)
            self.console_fd = -1
            try:
                os.unlink(arg["console_socket"])
            except FileNotFoundError:
                pass
            if self.pty_fd >= 0:
                os.set_blocking(self.pty_fd, False)
                size = self.cfg.get("console_size")
                if size:
                    _set_winsize(self.pty_fd, size[0], size[1])

    def _prepare_setup(self) -> None:
        """The setup's pipes (or console socket) and the helper's argument: done by the
        mother before it forks us, so the monitor itself touches less of its memory."""
        cfg = self.cfg
        child_fds: list[int] = []
        # A restart has no caller to record it running: the helper does (via the engine).
        arg: dict = {"restart_count": self.restarts, "record": not self.first}
        if self.first and cfg.get("network_gate"):
            # The caller configures the container's network while the helper creates it.
            r, w = os.pipe2(os.O_CLOEXEC)
            child_fds.append(r)
            arg["gate"] = r
            self.gate_w = w
        self.first = False
        if cfg.get("tty"):
            arg["console_socket"] = os.path.join(self.run_dir, "console.sock")
            self.console_fd = _listen_unix(arg["console_socket"])
        else:
            if cfg.get("stdin"):
                r, w = os.pipe2(os.O_CLOEXEC)
                os.set_blocking(w, False)
                self.in_fd = w
                child_fds.append(r)
                arg["stdin"] = r
            r1, w1 = os.pipe2(os.O_CLOEXEC)
            r2, w2 = os.pipe2(os.O_CLOEXEC)
            self.out_fd, self.err_fd = r1, r2
            child_fds += [w1, w2]
            arg["stdout"], arg["stderr"] = w1, w2
            os.set_blocking(r1, False)
            os.set_blocking(r2, False)
        self.pending = (arg, child_fds)

    @property
    def exit_code(self) -> int:
        if self.exit_status is None:
            return self.error_code
        return os.waitstatus_to_exitcode(self.exit_status) if os.WIFEXITED(self.exit_status) \
            else 128 + os.WTERMSIG(self.exit_status)

    def _container_gone(self) -> None:
        self._close_streams()
        self._finish(self.exit_code)

    def _finish(self, code: int) -> None:
        finished = time.time_ns()
        err = self.error.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
        # Written by hand: the lean monitor has no json module, and the format is tiny.
        _atomic_write(os.path.join(self.cfg["ctr_dir"], EXIT_FILE),
                      f'{{"exit_code": {code}, "finished_at": {finished}, "error": "{err}", '
                      f'"restart_count": {self.restarts}}}\n')
        stopped = os.path.exists(os.path.join(self.run_dir, STOP_MARKER))
        restart = not self.error and _restart_wanted(self._restart_policy(), code,
                                                     self.restarts, stopped)
        self.finishing = True
        self.final_code = code
        if self.probe:
            os.kill(self.probe, _signal.SIGKILL)
        self.probe_at = 0.0
        if not restart:
            self._stop_relay()
        self._spawn_helper("finish", {"exit_code": code, "finished_at": finished,
                                      "error": self.error, "restart": restart,
                                      "restart_count": self.restarts}, [])
        self.pid = 0

    def _restart_policy(self) -> str:
        """The policy given at start, or the one `update --restart` left since."""
        try:
            with open(os.path.join(self.run_dir, RESTART_FILE)) as f:
                return f.read().strip() or "no"
        except OSError:
            return self.cfg.get("restart", "no")

    def _finished(self) -> bool:
        if self.exited_code is None or self.helper:
            return False
        self._stop_relay()
        for name in (PID_FILE, ATTACH_SOCKET):
            try:
                os.unlink(os.path.join(self.run_dir, name))
            except FileNotFoundError:
                pass
        payload = f"{self.exited_code}\n{self.error}".encode()
        self._broadcast_control(frame(b"x", payload))
        deadline = time.monotonic() + 2.0
        for c in list(self.clients.values()):
            os.set_blocking(c.fd, True)
            try:
                _settimeout_send(c, deadline)
            except OSError:
                pass
            os.close(c.fd)
        self.clients.clear()
        return True

    # -- streams -----------------------------------------------------------------------
    def _read_stream(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO from a pty master once the slave side is gone
        if not data:
            os.close(fd)
            for name in ("out_fd", "err_fd", "pty_fd"):
                if getattr(self, name) == fd:
                    setattr(self, name, -1)
            return
        stream = "stderr" if fd == self.err_fd else "stdout"
        self.log.write(stream, data)
        out = frame(b"2" if stream == "stderr" else b"1", data)
        for c in list(self.clients.values()):
            if stream in c.streams:
                self._send(c, out)

    def _flush_stdin(self) -> None:
        fd = self.pty_fd if self.pty_fd >= 0 else self.in_fd
        if fd < 0:
            self.stdin_buf.clear()
            return
        try:
            n = os.write(fd, self.stdin_buf)
            del self.stdin_buf[:n]
        except BlockingIOError:
            pass
        except OSError:
            self.stdin_buf.clear()
        if not self.stdin_buf and self.stdin_closed and self.in_fd >= 0:
            os.close(self.in_fd)
            self.in_fd = -1

    # -- clients -----------------------------------------------------------------------
    def _accept(self) -> None:
        import _socket

        lsock = _socket.socket(fileno=os.dup(self.listen_fd))
        try:
            fd, _ = lsock._accept()
        except OSError:
            return
        finally:
            lsock.close()
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)
        self.clients[fd] = Client(fd)

    def _drop(self, c: Client) -> None:
        if c.fd == self.unacked:
            self.unacked = -1
            self._open_gate(b"Ethe caller went away before the container's network was ready")
        self.clients.pop(c.fd, None)
        os.close(c.fd)

    def _send(self, c: Client, data: bytes) -> None:
        if len(c.wbuf) + len(data) > MAX_CLIENT_BACKLOG:
            self._drop(c)
            return
        c.wbuf += data
        self._flush_client(c)

    def _broadcast_control(self, data: bytes) -> None:
        for c in list(self.clients.values()):
            self._send(c, data)

    def _flush_client(self, c: Client) -> None:
        try:
            n = os.write(c.fd, c.wbuf)
            del c.wbuf[:n]
        except BlockingIOError:
            pass
        except OSError:
            self._drop(c)

    def _read_client(self, c: Client) -> None:
        try:
            data = os.read(c.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if "stdin" in c.streams and self.cfg.get("stdin_once"):
                self._stdin_eof()
            self._drop(c)
            return
        c.rbuf += data
        for kind, payload in parse_frames(c.rbuf):
            if kind == b"h":
                c.streams = set(payload.decode().split(",")) if payload else set()
                if self.pid:
                    self._send(c, frame(b"p", str(self.pid).encode()))
            elif kind == b"i":
                if self.stdin_closed or len(self.stdin_buf) > MAX_STDIN_BACKLOG:
                    continue
                self.stdin_buf += payload
                self._flush_stdin()
            elif kind == b"e":
                self._stdin_eof()
            elif kind == b"r" and self.pty_fd >= 0:
                rows, _, cols = payload.decode().partition(" ")
                _set_winsize(self.pty_fd, int(rows), int(cols))
            elif kind == b"o":
                self.log.reopen()
            elif kind == b"a" and c.fd == self.unacked:
                self.unacked = -1
            elif kind == b"n" and c.fd == self.unacked:
                self._open_gate(b"E" + payload if payload else b"go")
            elif kind == b"f" and c.fd == self.unacked and self.relay is None:
                self._start_relay(payload)

    def _start_relay(self, payload: bytes) -> None:
        """Listen on [::1] for the published ports in PAYLOAD, for as long as the container
        lives (restarts included); a port that cannot be bound is logged and left out."""
        try:
            relay = _relay_module()
            targets = relay.decode(payload)
        except (ImportError, ValueError) as e:
            os.write(2, f"monitor {self.cfg['id'][:12]}: bad relay frame: {e}\n".encode())
            return
        if targets:
            self.relay = relay.Relay(targets, self.cfg["id"][:12])

    def _stop_relay(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None

    def _open_gate(self, word: bytes) -> None:
        """Tell the setup helper waiting for the network: b"go", or b"E" and why not."""
        if self.gate_w < 0:
            return
        try:
            os.write(self.gate_w, word[:PIPE_BUF])
        except OSError:
            pass  # the helper is gone already
        os.close(self.gate_w)
        self.gate_w = -1

    def _stdin_eof(self) -> None:
        if self.pty_fd >= 0:
            return  # a terminal has no EOF to pass on; ^D is a byte like any other
        self.stdin_closed = True
        self._flush_stdin()


def _noop(signum: int, frame: object) -> None:
    pass


def _relay_module():  # noqa: ANN202 - the module, imported only when a port is relayed
    # The mother and the lean monitor import this file as the top-level `monitor`, with its
    # directory on sys.path; forked from an engine process it is pallet.engine.monitor.
    if __package__:
        from pallet.engine import relay
    else:
        import relay  # type: ignore[no-redef]
    return relay


def _settimeout_send(c: Client, deadline: float) -> None:
    while c.wbuf and time.monotonic() < deadline:
        _, w, _ = select.select([], [c.fd], [], max(0.0, deadline - time.monotonic()))
        if not w:
            return
        n = os.write(c.fd, c.wbuf)
        del c.wbuf[:n]


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _report(fd: int, msg: dict) -> None:
    import marshal

    data = marshal.dumps(msg)
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _listen_unix(path: str) -> int:
    import _socket

    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.bind(path)
    s.listen(4)
    return s.detach()


def _recv_console(listen_fd: int, helper: int) -> int:
    """Accept the runtime's connection on the console socket and take the pty master."""
    import _socket

    lsock = _socket.socket(fileno=listen_fd)
    lsock.settimeout(0.05)
    try:
        while True:
            try:
                conn_fd, _ = lsock._accept()
                break
            except TimeoutError:
                # The helper exited without the runtime ever connecting: no pty.
                # WNOWAIT leaves it for _reap, which reads its report.
                if os.waitid(os.P_PID, helper, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    return -1
        conn = _socket.socket(fileno=conn_fd)
        conn.settimeout(30)
        try:
            size = _socket.CMSG_SPACE(4)
            _, anc, _, _ = conn.recvmsg(4096, size)
            for level, kind, data in anc:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    return int.from_bytes(data[:4], sys.byteorder)
            return -1
        except OSError:
            return -1
        finally:
            conn.close()
    finally:
        lsock.detach()


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import termios

    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, (rows).to_bytes(2, sys.byteorder)
                    + (cols).to_bytes(2, sys.byteorder) + b"\0\0\0\0")
    except OSError:
        pass


# -- helpers: short-lived children of the monitor ----------------------------------------
# They must stay quick in a monitor forked from the lean mother, which has none of the engine
# loaded: setup needs only the OCI runtime (preloaded by the mother); the store updates,
# release and auto-remove ask the warm fork server that started us (cfg["service"]) or the
# run root's zygote, and import the engine themselves only when neither answers.
def _helper_main(kind: str, cfg: dict, arg: dict, report_fd: int, lean: bool) -> int:
    sys.path[:0] = [p for p in cfg.get("sys_path", []) if p not in sys.path]
    if kind == "setup":
        res = _helper_setup(cfg, arg)
    else:
        res = _engine_op(cfg, "finish", arg)
    _report(report_fd, res)
    return 0


def start_error_code(message: str, exec: bool = False) -> int:
    """The exit code docker gives a container whose process could not be started."""
    low = message.lower()
    if "executable file not found" in low or "no such file or directory" in low and \
            "exec" in low:
        return 126 if exec else 127
    if "permission denied" in low or "exec format error" in low or "is a directory" in low:
        return 126
    return 126 if exec else 125


def _helper_setup(cfg: dict, arg: dict) -> dict:
    """Create and start the container with our pipes as its stdio; its init is reparented
    to the monitor (a subreaper) when the runtime's intermediate process exits."""
    from pallet.errors import PalletError

    cid, runtime = cfg["id"], cfg.get("runtime") or ""
    if runtime in ("", "pallet"):
        from pallet.oci.create import Runtime

        h = Runtime(os.path.join(cfg["run_root"], "runtime"))
    else:
        from pallet.engine.handlers import resolve

        h = resolve(runtime, cfg["run_root"])
    if cfg.get("joins") and arg.get("record"):
        # A restart of a container that joins others' namespaces (container:X): X may
        # have restarted since (new namespaces, another pid): look it up again, as docker.
        res = _engine_op(cfg, "rejoin", {})
        if res.get("error"):
            return {"error": res["error"], "code": 125}
    devnull = -1
    stdio = None
    if not cfg.get("tty"):
        devnull = os.open(os.devnull, os.O_RDWR)
        stdio = (arg.get("stdin", devnull), arg["stdout"], arg["stderr"])
    try:
        if runtime in ("", "pallet"):
            pid = h.create(cid, cfg["bundle"], console_socket=arg.get("console_socket"),
                           stdio=stdio).pid
        else:
            pid = h.create(cid, cfg["bundle"], stdio=stdio,
                           console_socket=arg.get("console_socket"))
    except PalletError as e:
        return {"error": str(e), "code": start_error_code(str(e))}
    finally:
        for fd in (devnull, arg.get("stdin", -1), arg.get("stdout", -1), arg.get("stderr", -1)):
            if fd >= 0:
                os.close(fd)
    if arg.get("gate") is not None:
        word = _read_to_eof(arg["gate"])
        if word != b"go":
            try:
                h.delete(cid, force=True)
            except PalletError:
                pass
            return {"error": word[1:].decode(errors="replace") or "the network setup ended "
                    "without a word", "code": 125}
    try:
        h.start(cid)
    except PalletError as e:
        try:
            h.delete(cid, force=True)
        except PalletError:
            pass
        return {"error": str(e), "code": start_error_code(str(e))}
    if arg.get("record"):
        _engine_op(cfg, "started", {"pid": pid, "restart_count": arg.get("restart_count", 0)})
    return {"pid": pid}


def _read_to_eof(fd: int) -> bytes:
    data = b""
    try:
        while chunk := os.read(fd, PIPE_BUF):
            data += chunk
    except OSError:
        pass
    os.close(fd)
    return data


def _engine_op(cfg: dict, op: str, arg: dict) -> dict:
    """containers.monitor_<OP>(cfg, arg) in a worker of a warm fork server if one answers,
    else here (importing the engine: slow, but only when no server is left)."""
    if "pallet.engine.containers" not in sys.modules:
        from pallet.engine.zygote import cli_socket_name

        root_sock = os.path.join(cfg["run_root"], cli_socket_name())
        for path in dict.fromkeys(p for p in (cfg.get("service"), root_sock) if p):
            res = _service_call(path, {"call": "monitor", "op": op, "cfg": cfg, "arg": arg})
            if res is not None:
                return res
    from pallet.engine import containers

    return containers.monitor_op(op, cfg, arg)


def _service_call(path: str, req: dict) -> dict | None:
    """REQ to the fork server listening on PATH; its result, or None if it cannot serve it."""
    from pallet.engine import zygote

    try:
        sock = zygote.connect(os.path.dirname(path), os.path.basename(path))
    except OSError:
        return None
    try:
        zygote.send_msg(sock, req)
        while True:
            msg, _ = zygote.recv_msg(sock, 0)
            if not msg or "error" in msg or "exit" in msg:
                # Refused (an old server) or died before doing it: do it ourselves.
                return None
            if "result" in msg:
                return msg["result"]
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


_prctl = None         # the mother resolves these once, before freezing, for its monitors
_title_area = (0, 0)


def _become_subreaper() -> None:
    global _prctl
    if _prctl is None:
        import ctypes

        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _find_title_area() -> tuple[int, int]:
    fields = _stat("self")
    try:
        return int(fields[45]), int(fields[46])
    except (ValueError, IndexError):
        return 0, 0


def set_title(title: str) -> None:
    """Overwrite the command line (what ps shows) in place, as setproctitle does."""
    start, end = _title_area if _title_area[0] else _find_title_area()
    size = end - start
    if size <= 1:
        return
    import ctypes

    data = title.encode()[:size - 1]
    ctypes.memmove(start, data, len(data))
    ctypes.memset(start + len(data), 0, size - len(data))


# -- the mother: a lean fork server for monitors -------------------------------------------
MOTHER_PRELOAD = ("pallet.errors", "pallet.oci.create", "pallet.oci.init", "pallet.oci.hooks",
                  "pallet.oci.jsonlite", "pallet.oci.cgroups", "pallet.oci.cgroups.v1",
                  "pallet.oci.cgroups.v2", "pallet.oci.cgroups.hybrid",
                  "pallet.oci.cgroups.bpf", "pallet.oci.linux.seccomp",
                  "pallet.oci.linux.rootfs", "pallet.oci.linux.process",
                  "pallet.oci.linux.capabilities", "pallet.oci.linux.console",
                  "pallet.oci.linux.rlimits")


def mother_main() -> None:
    """Entry of the monitor mother (`python -I -S`, started by a zygote or the daemon's
    spawner): argv is [-c, pallet-monitor-mother, CONTROL_FD, SYS_PATH, TITLE].

    It imports only this file, ctypes and the OCI runtime's create path, freezes them, and
    then does nothing but fork monitors, so every page of it stays clean and shared by all
    of its monitors. One request per SEQPACKET message on CONTROL: marshal((cfg, streams))
    with the monitor's client fd; answer: the monitor's pid in ASCII (b"" if the fork
    failed). EOF on CONTROL (its server exited) ends it; monitors live on.
    """
    global _prctl, _title_area
    import _socket
    import ctypes
    import gc
    import marshal

    ctl_fd = int(sys.argv[2])
    sys.path[:0] = [p for p in sys.argv[3].split(os.pathsep) if p and p not in sys.path]
    _title_area = _find_title_area()
    title = sys.argv[4] if len(sys.argv) > 4 else "pallet-monitor-mother"
    set_title(title)
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
    import importlib

    # The setup helper's imports (the in-process runtime's create path, ~6 ms and ~1 MiB):
    # loaded once here, they are clean pages shared by every monitor, never touched by one.
    for name in MOTHER_PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError as e:
            os.write(2, f"pallet monitor mother: cannot preload {name}: {e}\n".encode())
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
    # Monitors are reparented to init when we exit; meanwhile no zombies are left here.
    _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)
    ctl = _socket.socket(fileno=ctl_fd)
    fd_space = _socket.CMSG_SPACE(4)
    gc.collect()
    gc.freeze()
    while True:
        try:
            data, anc, _, _ = ctl.recvmsg(1 << 20, fd_space, _socket.MSG_CMSG_CLOEXEC)
        except InterruptedError:
            continue
        except OSError:
            os._exit(0)
        fds = [int.from_bytes(p[:4], sys.byteorder) for lvl, kind, p in anc
               if lvl == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS and len(p) >= 4]
        if not data:
            os._exit(0)
        m = None
        stdio = (-1, -1)
        try:
            cfg, streams = marshal.loads(data)
            cfg["lean_after"] = None  # already as lean as it gets: never re-exec
            if cfg.get("relay") and "relay" not in sys.modules:
                # Imported in a forked monitor, the relay would cost it ~0.7 MiB of copied
                # pages (the import machinery's allocations land all over our frozen heap);
                # imported here, once the first container with a published port comes, it
                # is shared by the monitors forked since. The others never touch it.
                try:
                    importlib.import_module("relay")
                except ImportError as e:  # the monitor says why it relays nothing
                    os.write(2, f"pallet monitor mother: cannot preload relay: {e}\n".encode())
                gc.collect()
                gc.freeze()
            # Everything the monitor needs is made here, before the fork, so that the
            # monitor itself runs as little as possible (each object it touches is a page
            # of ours it copies); its title too, which we then take back.
            m, stdio = _prepare(cfg, fds[0], streams)
            set_title(f"pallet-monitor {cfg['id']} {cfg['root']}")
            pid = os.fork()
        except (OSError, ValueError, EOFError, TypeError, KeyError, IndexError) as e:
            os.write(2, f"pallet monitor mother: {type(e).__name__}: {e}\n".encode())
            pid = -1
        if pid == 0:
            try:
                ctl.close()
                _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
                os.setsid()
                _enter(m, *stdio)
            except BaseException as e:  # noqa: BLE001 - stderr is the monitor log by now
                os.write(2, f"monitor: {type(e).__name__}: {e}\n".encode())
            finally:
                os._exit(1)
        set_title(title)
        for fd in {*fds, *stdio, *(m.fds() if m is not None else ())}:
            if fd >= 0:
                os.close(fd)
        m = None
        if pid > 0:
            try:
                _atomic_write(os.path.join(cfg["run_dir"], PID_FILE),
                              f"{pid} {_start_time(pid)}\n")
            except OSError as e:
                os.write(2, f"pallet monitor mother: {e}\n".encode())
        try:
            ctl.send(str(pid).encode() if pid > 0 else b"")
        except OSError:
            os._exit(0)


# Set in a zygote worker (pallet.engine.zygote): called as fork_server(cfg, mon_fd, streams),
# it has the zygote fork the monitor, whose pages then stay shared with the zygote's.
fork_server = None


def spawn(cfg: dict, streams: str = "") -> tuple[int, int]:
    """Start the monitor for CFG; return (connected client fd, monitor pid).

    Must be called while the caller has no threads: it forks. The client fd is
    subscribed to STREAMS already, so nothing the container prints is missed.
    """
    import _socket

    os.makedirs(cfg["run_dir"], mode=0o700, exist_ok=True)
    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    cli_fd, mon_fd = a.detach(), b.detach()
    if fork_server is not None:
        try:
            pid = fork_server(cfg, mon_fd, streams)
        except BaseException:
            os.close(cli_fd)
            raise
        finally:
            os.close(mon_fd)
        return cli_fd, pid
    rpid, wpid = os.pipe2(os.O_CLOEXEC)
    for f in (sys.stdout, sys.stderr):
        f.flush()
    first = os.fork()
    if first == 0:
        try:
            os.close(cli_fd)
            os.close(rpid)
            os.setsid()
            if os.fork():
                os._exit(0)
            _monitor_child(cfg, mon_fd, streams, wpid)
        except BaseException as e:  # noqa: BLE001 - stderr is the monitor log by now
            os.write(2, f"monitor {cfg['id'][:12]}: {type(e).__name__}: {e}\n".encode())
        finally:
            os._exit(1)
    os.close(mon_fd)
    os.close(wpid)
    os.waitpid(first, 0)
    data = b""
    while chunk := os.read(rpid, 64):
        data += chunk
    os.close(rpid)
    return cli_fd, int(data or 0)


def run_forked(cfg: dict, client_fd: int, streams: str) -> None:
    """Entry of a monitor the zygote forked (for a worker's spawn()): a session of its own,
    `ps` showing whose monitor it is, and no fd of the zygote's."""
    _signal.set_wakeup_fd(-1)  # the zygote's, about to be closed
    os.setsid()
    set_title(f"pallet-monitor {cfg['id']} {cfg['root']}")
    _monitor_child(cfg, client_fd, streams, -1)


def _monitor_child(cfg: dict, client_fd: int, streams: str, pid_fd: int) -> None:
    # Whatever the forking process held (its caller's terminal, a zygote's socket and lock)
    # must not live on for the container's lifetime.
    _close_fds_except((client_fd, pid_fd))
    m, stdio = _prepare(cfg, client_fd, streams)
    me = os.getpid()
    _atomic_write(os.path.join(cfg["run_dir"], PID_FILE), f"{me} {_start_time(me)}\n")
    if pid_fd >= 0:
        os.write(pid_fd, str(me).encode())
        os.close(pid_fd)
    _enter(m, *stdio)


def _prepare(cfg: dict, client_fd: int, streams: str) -> tuple[Monitor, tuple[int, int]]:
    """The monitor for CFG, ready to run, and its stdio (devnull, monitor.log)."""
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    log = os.open(os.path.join(cfg["ctr_dir"], "monitor.log"),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    m = Monitor(cfg)
    os.set_blocking(client_fd, False)
    m.clients[client_fd] = Client(client_fd, streams)
    m.unacked = client_fd
    m.listen_fd = _listen_unix(os.path.join(cfg["run_dir"], ATTACH_SOCKET))
    m._prepare_setup()
    return m, (devnull, log)


def _enter(m: Monitor, devnull: int, log: int) -> None:
    """Become the monitor M: subreaper, stdio, signals; then run it (never returns)."""
    _become_subreaper()
    # Monitors run the same code on the same data, so most pages they copy from the mother
    # are identical across them: let KSM merge them where the admin runs it (a no-op else).
    assert _prctl is not None
    _prctl(67, 1, 0, 0, 0)  # PR_SET_MEMORY_MERGE (Linux 6.4); EINVAL on older kernels
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(log, 2)
    os.close(devnull)
    os.close(log)
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    # Forked from an in-process CLI (PALLET_NO_ZYGOTE=1), which unwinds on SIGTERM.
    _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
    os.chdir("/")
    m.run()


def _close_fds_except(keep: tuple[int, ...]) -> None:
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _stat(pid: int | str) -> list[bytes]:
    """The fields of /proc/PID/stat after the command name (the state first); [] if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2:].split()
    except (OSError, ValueError):
        return []


def _status(pid: int, *keys: bytes) -> dict[bytes, list[bytes]]:
    """The lines of /proc/PID/status named KEYS (b"NSpid"...): {key: its values}."""
    out = {}
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            key, _, rest = line.partition(b":")
            if key in keys:
                out[key] = rest.split()
    return out


def _start_time(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[19]) if len(fields) > 19 else 0


def _running(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] != b"Z"


def alive(run_dir: str) -> int:
    """The monitor's pid if it is still running (pid-reuse safe), else 0."""
    try:
        with open(os.path.join(run_dir, PID_FILE)) as f:
            pid_s, _, start = f.read().partition(" ")
        pid = int(pid_s)
    except (OSError, ValueError):
        return 0
    started = _start_time(pid)  # one /proc read: `pallet ps` does this per container
    return pid if started and started == int(start or 0) else 0


def resume() -> None:
    """Entry of the lean monitor: argv is [-c, --resume, HEX(marshal(cfg, state)), id, root]."""
    import marshal

    cfg, state = marshal.loads(bytes.fromhex(sys.argv[2]))
    if "sleep" in state:
        _woken(state)
    Monitor(cfg, state).run()


def _leads_pid_namespace(pid: int) -> bool:
    """Is PID the init (pid 1) of a pid namespace below ours?"""
    try:
        ids = _status(pid, b"NSpid").get(b"NSpid", [])
    except OSError:
        return False
    return len(ids) > 1 and ids[-1] == b"1"


def _cgroup_events(pid: int) -> str:
    """The cgroup.events file of PID's cgroup v2 if that cgroup is PID's own (not the root,
    not ours: a runtime may have left it where it was made), else ""."""
    def v2(p: int | str) -> str:
        with open(f"/proc/{p}/cgroup", "rb") as f:
            for line in f:
                if line.startswith(b"0::"):
                    return line[3:].strip().decode()
        return ""

    try:
        path, ours = v2(pid), v2("self")
        with open("/proc/self/mountinfo") as f:
            mnt = next((line.split()[4] for line in f if " - cgroup2 " in line), "")
    except OSError:
        return ""
    events = f"{mnt}{path}/cgroup.events"
    return events if mnt and path not in ("", "/", ours) and os.path.exists(events) else ""


def _populated(events: str) -> bool:
    """Does the cgroup whose cgroup.events file is EVENTS hold a process?"""
    try:
        with open(events, "rb") as f:
            return b"populated 1" in f.read()
    except OSError:
        return False


def _watch_file(path: str) -> int:
    """An inotify fd (non-blocking, close-on-exec) readable once PATH is modified (a
    cgroup's populated 1 -> 0), or -1."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return -1
    if libc.inotify_add_watch(fd, path.encode(), 0x2) < 0:  # IN_MODIFY
        os.close(fd)
        return -1
    return fd


def _arm(parent: int, init: int, fds: list[int]) -> None:
    """The armer (a child of a monitor going to sleep; never returns): once PARENT is sh
    with its SIGIO trap set, have the kernel send it SIGIO for FDS (O_ASYNC), then wake it
    at once if something came before that, or if INIT is dead already."""
    code = 0
    try:
        import fcntl

        bit = 1 << (_signal.SIGIO - 1)
        pause = 0.0005
        while True:  # until sh has set its trap: ~1 ms, longer on a loaded machine
            masks = _status(parent, b"SigCgt", b"SigIgn")
            caught, ignored = (int(masks[k][0], 16) for k in (b"SigCgt", b"SigIgn"))
            if ignored & bit:
                return  # woken already: the trap has run (its Python waits for us)
            if caught & bit:
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        for fd in fds:
            fcntl.fcntl(fd, fcntl.F_SETOWN, parent)
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
        p = select.poll()
        for fd in fds:
            p.register(fd, select.POLLIN)
        if p.poll(0) or not _running(init):
            os.kill(parent, _signal.SIGIO)
    except BaseException as e:  # noqa: BLE001 - last words go to the monitor log
        os.write(2, f"monitor armer: {type(e).__name__}: {e}\n".encode())
        code = 1
    finally:
        os._exit(code)


def _woken(st: dict) -> None:
    """Undo a sleep in the process that slept (state ST): wait for the armer (so that it
    arms nothing after this), switch O_ASYNC off, SIGIO back to its default (children
    inherit an ignored signal), stdin back to /dev/null, the cgroup watch closed."""
    import fcntl

    armer, hold, cg_watch = st["sleep"]
    try:
        os.waitpid(armer, 0)
    except ChildProcessError:
        pass
    for fd in (st["out"], st["err"], st["pty"], st["listen"]):
        if fd >= 0:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_ASYNC)
    _signal.signal(_signal.SIGIO, _signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.close(hold)
    if cg_watch >= 0:
        os.close(cg_watch)
