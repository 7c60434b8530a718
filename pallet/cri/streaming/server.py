"""The streaming HTTP server: hands out one-shot Exec/Attach/PortForward URLs and serves
them over WebSocket, with threads (the backend is blocking and pipes are real fds).

Per session: the connection thread runs the backend call, one thread reads the client,
one thread pumps each output pipe. Sessions are bounded by `max_sessions`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import h11

from pallet.cri.errors import ResourceExhausted
from pallet.cri.streaming import channels as ch
from pallet.cri.streaming import spdy
from pallet.cri.streaming import websocket as ws
from pallet.cri.streaming.backend import (
    AttachRequest,
    ExecRequest,
    PortForwardRequest,
    ResizeQueue,
    StreamBackend,
    StreamRequest,
)
from pallet.cri.streaming.tokens import RequestCache
from pallet.errors import InvalidArgument, PalletError

log = logging.getLogger("pallet.cri.streaming")

HANDSHAKE_TIMEOUT = 30.0  # s for the client to send its HTTP request after connecting
CLOSE_WAIT = 2.0  # s to wait for the client's Close reply before dropping the socket
READ_SIZE = 32 << 10
STREAM_CREATION_TIMEOUT = 30.0  # s for a SPDY client to open its streams (kubelet's value)
SPDY_REMOTECOMMAND_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io")


class StreamingServer:
    def __init__(self, backend: StreamBackend, address: str = "127.0.0.1", port: int = 0,
                 token_ttl: float = 60.0, idle_timeout: float = 4 * 3600.0,
                 max_sessions: int = 64):
        self.backend = backend
        self.address = address
        self.port = port
        self.idle_timeout = idle_timeout
        self.cache: RequestCache[StreamRequest] = RequestCache(ttl=token_ttl)
        self._sessions = threading.BoundedSemaphore(max_sessions)
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.address, self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._thread = threading.Thread(target=self._accept_loop, name="stream-accept",
                                        daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._stopping.set()
        if self._listener:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._conns_lock:
            for c in list(self._conns):
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
        if self._thread:
            self._thread.join(5)

    # -- URLs (called from the CRI RPCs) --------------------------------------------
    def exec_url(self, req: ExecRequest) -> str:
        if not req.container_id:
            raise InvalidArgument("container_id is required")
        if not req.cmd or not req.cmd[0]:
            raise InvalidArgument("cmd is required: give the command to run in the container")
        _check_streams(req.stdin, req.stdout, req.stderr, req.tty)
        self.backend.check_container(req.container_id)
        return f"{self.base_url}/exec/{self.cache.insert(req)}"

    def attach_url(self, req: AttachRequest) -> str:
        if not req.container_id:
            raise InvalidArgument("container_id is required")
        _check_streams(req.stdin, req.stdout, req.stderr, req.tty)
        self.backend.check_container(req.container_id)
        return f"{self.base_url}/attach/{self.cache.insert(req)}"

    def port_forward_url(self, req: PortForwardRequest) -> str:
        if not req.pod_sandbox_id:
            raise InvalidArgument("pod_sandbox_id is required")
        for p in req.ports:
            if not 0 < p < 65536:
                raise InvalidArgument(f"port {p} is not in 1..65535")
        self.backend.check_pod(req.pod_sandbox_id)
        return f"{self.base_url}/portforward/{self.cache.insert(req)}"

    # -- connections ------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)  # EMFILE and friends: back off instead of spinning
                continue
            if not self._sessions.acquire(blocking=False):
                threading.Thread(target=self._refuse, args=(conn,), daemon=True).start()
                continue
            threading.Thread(target=self._serve, args=(conn,), name="stream-session",
                             daemon=True).start()

    def _refuse(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                conn.sendall(_plain_response(503, "too many streaming sessions; try again later"))

    def _serve(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.add(conn)
        try:
            self._handle(conn)
        except Exception:  # noqa: BLE001 - one broken session must not take the server down
            log.exception("streaming session failed")
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()
            self._sessions.release()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(HANDSHAKE_TIMEOUT)
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=16 << 10)
        request = _read_request(conn, http)
        if request is None:
            return
        method = request.method.decode()
        url = urllib.parse.urlsplit(request.target.decode("latin-1"))
        parts = url.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ("exec", "attach", "portforward"):
            conn.sendall(_plain_response(404, f"no such streaming endpoint {url.path}"))
            return
        kind, token = parts
        req = self.cache.consume(token)
        want = {"exec": ExecRequest, "attach": AttachRequest, "portforward": PortForwardRequest}
        if not isinstance(req, want[kind]):
            conn.sendall(_plain_response(404, "unknown or expired streaming URL; ask for a new one"))
            return
        if ws.is_upgrade(request.headers, "SPDY/3.1"):
            if isinstance(req, PortForwardRequest):
                self._serve_spdy_port_forward(conn, http, request, req)
            else:
                self._serve_spdy(conn, http, request, req)
            return
        if not ws.is_upgrade(request.headers, "websocket"):
            conn.sendall(_plain_response(400, "expected a WebSocket or SPDY/3.1 upgrade"))
            return
        supported = ch.PORTFORWARD_PROTOCOLS if kind == "portforward" else ch.REMOTECOMMAND_PROTOCOLS
        try:
            hs = ws.server_handshake(method, request.headers, supported,
                                     default="portforward.k8s.io" if kind == "portforward"
                                     else "channel.k8s.io")
        except ws.HandshakeError as e:
            conn.sendall(_plain_response(e.status, str(e), e.headers))
            return
        leftover = _switch_protocols(conn, http, hs)
        conn.settimeout(None)  # from here: select() for reads, blocking sends
        peer = WebSocketConnection(conn, leftover, self.idle_timeout, self._stopping)
        if isinstance(req, PortForwardRequest):
            ports = _query_ports(url.query) or req.ports
            PortForwardSession(self.backend, peer, req.pod_sandbox_id, ports).run()
        else:
            codec = ch.ChannelCodec(hs.protocol)
            RemoteCommandSession(self.backend, WebSocketTransport(peer, codec), codec, req).run()


    def _serve_spdy(self, conn: socket.socket, http: h11.Connection, request: h11.Request,
                    req: ExecRequest | AttachRequest) -> None:
        offered = ws.header_values(request.headers, "x-stream-protocol-version")
        protocol = next((p for p in offered if p in SPDY_REMOTECOMMAND_PROTOCOLS), None)
        if protocol is None:
            # No version at all is the pre-1.2 v1 protocol; nobody speaks it any more.
            conn.sendall(_plain_response(
                403, f"none of the stream protocols {offered} is supported",
                [("X-Accepted-Stream-Protocol-Versions", ", ".join(SPDY_REMOTECOMMAND_PROTOCOLS))]))
            return
        conn.sendall(http.send(h11.InformationalResponse(status_code=101, headers=[
            ("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", protocol)])))
        leftover = bytes(http.trailing_data[0])
        conn.settimeout(None)
        peer = SpdyConnection(conn, leftover, self.idle_timeout, self._stopping)
        expected = {"error"}
        expected |= {"stdin"} if req.stdin else set()
        expected |= {"stdout"} if req.stdout else set()
        expected |= {"stderr"} if req.stderr and not req.tty else set()
        expected |= {"resize"} if req.tty and protocol != "v2.channel.k8s.io" else set()
        transport = SpdyTransport(peer, expected)
        if not transport.setup(STREAM_CREATION_TIMEOUT):
            peer.close(spdy.GoAwayStatus.PROTOCOL_ERROR)
            return
        RemoteCommandSession(self.backend, transport, ch.ChannelCodec(protocol), req).run()

    def _serve_spdy_port_forward(self, conn: socket.socket, http: h11.Connection,
                                 request: h11.Request, req: PortForwardRequest) -> None:
        offered = ws.header_values(request.headers, "x-stream-protocol-version")
        if "portforward.k8s.io" not in offered:
            conn.sendall(_plain_response(
                403, f"none of the stream protocols {offered} is supported",
                [("X-Accepted-Stream-Protocol-Versions", "portforward.k8s.io")]))
            return
        conn.sendall(http.send(h11.InformationalResponse(status_code=101, headers=[
            ("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "portforward.k8s.io")])))
        leftover = bytes(http.trailing_data[0])
        conn.settimeout(None)
        peer = SpdyConnection(conn, leftover, self.idle_timeout, self._stopping)
        SpdyPortForwardSession(self.backend, peer, req.pod_sandbox_id).run()


def _check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> None:
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout or stderr must be true")
    if tty and stderr:
        # kubelet's rule: a terminal merges stderr into stdout, so asking for both is an error.
        raise InvalidArgument("tty and stderr cannot both be true")


def _query_ports(query: str) -> tuple[int, ...]:
    out = []
    for value in urllib.parse.parse_qs(query).get("port", []):
        for p in value.split(","):
            if not p.isdigit() or not 0 < int(p) < 65536:
                raise InvalidArgument(f"port {p!r} is not in 1..65535")
            out.append(int(p))
    return tuple(out)


# -- HTTP via h11 ---------------------------------------------------------------

def _read_request(conn: socket.socket, http: h11.Connection) -> h11.Request | None:
    request = None
    while True:
        try:
            ev = http.next_event()
        except h11.RemoteProtocolError as e:
            with contextlib.suppress(OSError):
                conn.sendall(_plain_response(400, f"bad HTTP request: {e}"))
            return None
        if ev is h11.NEED_DATA:
            try:
                data = conn.recv(READ_SIZE)
            except (TimeoutError, OSError):
                return None
            http.receive_data(data)
            if not data:
                return None
        elif isinstance(ev, h11.Request):
            request = ev
        elif ev is h11.PAUSED or isinstance(ev, h11.EndOfMessage):
            return request
        elif isinstance(ev, h11.ConnectionClosed):
            return None


def _switch_protocols(conn: socket.socket, http: h11.Connection, hs: ws.Handshake) -> bytes:
    conn.sendall(http.send(h11.InformationalResponse(status_code=101, headers=hs.response_headers)))
    data, _ = http.trailing_data
    return bytes(data)


def _plain_response(status: int, message: str, headers: list[tuple[str, str]] | None = None
                    ) -> bytes:
    body = (message + "\n").encode()
    reason = _REASONS.get(status, "Error")
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/plain; charset=utf-8",
             f"Content-Length: {len(body)}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers or [])]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_REASONS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            426: "Upgrade Required", 501: "Not Implemented", 503: "Service Unavailable"}


# -- WebSocket over a socket ------------------------------------------------------

class WebSocketConnection:
    """Thread-safe sends; one reader iterating `events()`. Pings are answered here."""

    def __init__(self, sock: socket.socket, leftover: bytes, idle_timeout: float,
                 stopping: threading.Event):
        self.sock = sock
        self.decoder = ws.FrameDecoder(masked=True)
        self._leftover = leftover
        self._send_lock = threading.Lock()
        self._idle_timeout = idle_timeout
        self._stopping = stopping
        self.last_activity = time.monotonic()
        self.closed_sent = False
        self.peer_closed = threading.Event()

    def send(self, opcode: int, payload: bytes) -> bool:
        """False once the client is gone (the caller keeps draining, and stops sending)."""
        with self._send_lock:
            if self.closed_sent:
                return False
            try:
                self.sock.sendall(ws.encode_frame(opcode, payload))
            except OSError:
                self.closed_sent = True
                return False
        self.last_activity = time.monotonic()
        return True

    def close(self, code: int = ws.CloseCode.NORMAL, reason: str = "") -> None:
        with self._send_lock:
            if not self.closed_sent:
                self.closed_sent = True
                with contextlib.suppress(OSError):
                    self.sock.sendall(ws.encode_close(code, reason))
        # Give the reader a moment to see the client's Close, then end the TCP stream.
        self.peer_closed.wait(CLOSE_WAIT)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def events(self) -> Iterator[ws.Message]:
        """Data messages until the client closes, errs, goes idle, or the server stops."""
        try:
            pending = self._leftover
            while True:
                if pending:
                    try:
                        evs = self.decoder.feed(pending)
                    except ws.ProtocolError as e:
                        log.info("websocket protocol error: %s", e)
                        self.close(e.code, str(e)[:100])
                        return
                    for ev in evs:
                        if isinstance(ev, ws.Message):
                            yield ev
                        elif isinstance(ev, ws.Ping):
                            self.send(ws.Opcode.PONG, ev.data)
                        elif isinstance(ev, ws.Close):
                            # Echo the close (RFC 6455 §5.5.1) unless we started it.
                            with self._send_lock:
                                if not self.closed_sent:
                                    self.closed_sent = True
                                    with contextlib.suppress(OSError):
                                        self.sock.sendall(ws.encode_close(
                                            ws.CloseCode.NORMAL if ev.code == ws.CloseCode.NO_STATUS
                                            else ev.code))
                            return
                pending = self._recv()
                if pending is None:
                    return
        finally:
            self.peer_closed.set()

    def _recv(self) -> bytes | None:
        while True:
            if self._stopping.is_set():
                return None
            try:
                ready, _, _ = select.select([self.sock], [], [], 1.0)
            except (OSError, ValueError):
                return None
            if ready:
                try:
                    data = self.sock.recv(READ_SIZE)
                except OSError:
                    return None
                if not data:
                    return None
                self.last_activity = time.monotonic()
                return data
            if time.monotonic() - self.last_activity > self._idle_timeout:
                log.info("closing a streaming session idle for %.0f s", self._idle_timeout)
                self.close(ws.CloseCode.GOING_AWAY, "idle timeout")
                return None


# -- SPDY/3.1 over a socket ---------------------------------------------------------

class SpdyConnection:
    """Thread-safe frame sends; one reader iterating `events()`. Streams are opened by the
    client (kubelet's remotecommand); each is answered with SYN_REPLY on arrival."""

    def __init__(self, sock: socket.socket, leftover: bytes, idle_timeout: float,
                 stopping: threading.Event):
        self.sock = sock
        self.codec = spdy.Connection()
        self._leftover = leftover
        self._send_lock = threading.Lock()
        self._idle_timeout = idle_timeout
        self._stopping = stopping
        self.last_activity = time.monotonic()
        self.last_stream = 0
        self.closed = False
        self.peer_closed = threading.Event()

    def send(self, frame: bytes | Callable[[], bytes]) -> bool:
        with self._send_lock:
            if self.closed:
                return False
            try:
                # Header frames are built under the lock: the zlib context is ordered.
                self.sock.sendall(frame() if callable(frame) else frame)
            except OSError:
                self.closed = True
                return False
        self.last_activity = time.monotonic()
        return True

    def close(self, status: int = spdy.GoAwayStatus.OK) -> None:
        self.send(spdy.goaway(self.last_stream, status))
        with self._send_lock:
            self.closed = True
        self.peer_closed.wait(CLOSE_WAIT)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def events(self) -> Iterator[spdy.Event]:
        try:
            pending = self._leftover
            while True:
                if pending:
                    try:
                        evs = self.codec.feed(pending)
                    except spdy.SpdyError as e:
                        log.info("SPDY protocol error: %s", e)
                        self.send(spdy.goaway(self.last_stream, spdy.GoAwayStatus.PROTOCOL_ERROR))
                        return
                    for ev in evs:
                        if isinstance(ev, spdy.Ping):
                            self.send(spdy.ping(ev.ping_id))
                        elif isinstance(ev, spdy.SynStream):
                            self.last_stream = max(self.last_stream, ev.stream_id)
                            sid = ev.stream_id
                            self.send(lambda sid=sid: self.codec.syn_reply(sid))
                            yield ev
                        elif isinstance(ev, spdy.Data):
                            if ev.data:
                                # SPDY/3.1 flow control: give back the window we used, for the
                                # stream and the session, so strict clients never stall.
                                self.send(spdy.window_update(ev.stream_id, len(ev.data))
                                          + spdy.window_update(0, len(ev.data)))
                            yield ev
                        elif isinstance(ev, spdy.GoAway):
                            return
                        elif isinstance(ev, spdy.RstStream | spdy.HeadersFrame):
                            yield ev
                pending = _recv(self.sock, self._stopping, self, self._idle_timeout)
                if pending is None:
                    return
        finally:
            self.peer_closed.set()


def _recv(sock: socket.socket, stopping: threading.Event, owner: SpdyConnection,
          idle_timeout: float) -> bytes | None:
    while True:
        if stopping.is_set():
            return None
        try:
            ready, _, _ = select.select([sock], [], [], 1.0)
        except (OSError, ValueError):
            return None
        if ready:
            try:
                data = sock.recv(READ_SIZE)
            except OSError:
                return None
            if not data:
                return None
            owner.last_activity = time.monotonic()
            return data
        if time.monotonic() - owner.last_activity > idle_timeout:
            return None


_SPDY_CHANNELS = {"stdin": ch.STDIN, "stdout": ch.STDOUT, "stderr": ch.STDERR,
                  "error": ch.ERROR, "resize": ch.RESIZE}


class SpdyTransport:
    """remotecommand channels as SPDY streams, one per `streamtype` header."""

    def __init__(self, conn: SpdyConnection, expected: set[str]):
        self.conn = conn
        self.expected = expected
        self.streams: dict[int, int] = {}  # channel -> stream id
        self._channel_of: dict[int, int] = {}  # stream id -> channel
        self._frames = conn.events()
        self._early: list[spdy.Event] = []
        self._resize_buf = b""

    def setup(self, timeout: float) -> bool:
        """Wait for the client to open every stream the request needs."""
        deadline = time.monotonic() + timeout
        for ev in self._frames:
            if isinstance(ev, spdy.SynStream):
                kind = (ev.headers.get("streamtype") or [""])[0]
                if kind not in _SPDY_CHANNELS or _SPDY_CHANNELS[kind] in self.streams:
                    self.conn.send(spdy.rst_stream(ev.stream_id, spdy.RstStatus.REFUSED_STREAM))
                    continue
                self.streams[_SPDY_CHANNELS[kind]] = ev.stream_id
                self._channel_of[ev.stream_id] = _SPDY_CHANNELS[kind]
            else:
                self._early.append(ev)  # stdin may arrive before the last stream opens
            if {_SPDY_CHANNELS[k] for k in self.expected} <= set(self.streams):
                return True
            if time.monotonic() > deadline:
                break
        log.info("SPDY client opened %s, expected %s", sorted(self.streams), sorted(self.expected))
        return False

    def start(self, first_channel: int) -> None:
        pass

    def send(self, channel: int, data: bytes) -> bool:
        sid = self.streams.get(channel)
        return sid is not None and self.conn.send(spdy.data_frame(sid, data))

    def close_channel(self, channel: int) -> None:
        sid = self.streams.get(channel)
        if sid is not None:
            self.conn.send(spdy.data_frame(sid, b"", fin=True))

    def events(self) -> Iterator[ch.ChannelEvent]:
        for ev in self._replay():
            channel = self._channel_of.get(getattr(ev, "stream_id", -1))
            if channel is None:
                continue
            if isinstance(ev, spdy.Data):
                if channel == ch.RESIZE:
                    yield from self._resizes(ev.data)
                elif ev.data:
                    yield ch.Data(channel, ev.data)
                if ev.fin:
                    yield ch.CloseChannel(channel)
            elif isinstance(ev, spdy.RstStream):
                yield ch.CloseChannel(channel)

    def _replay(self) -> Iterator[spdy.Event]:
        yield from self._early
        self._early = []
        yield from self._frames

    def _resizes(self, data: bytes) -> Iterator[ch.Data]:
        # The resize stream is a sequence of JSON objects (Go's json.Encoder: one per line).
        self._resize_buf += data
        if len(self._resize_buf) > 4096:
            raise ch.ChannelError("resize stream carries something other than sizes")
        while b"}" in self._resize_buf:
            obj, _, self._resize_buf = self._resize_buf.partition(b"}")
            yield ch.Data(ch.RESIZE, obj.strip() + b"}")

    def abort(self, reason: str) -> None:
        self.conn.close(spdy.GoAwayStatus.PROTOCOL_ERROR)

    def finish(self, status: bytes) -> None:
        sid = self.streams.get(ch.ERROR)
        if sid is not None:
            if status:
                self.conn.send(spdy.data_frame(sid, status))
            self.conn.send(spdy.data_frame(sid, b"", fin=True))
        self.conn.close()


# -- sessions -------------------------------------------------------------------

class _Pipe:
    """An os.pipe whose two ends are closed exactly once, from whichever thread."""

    def __init__(self) -> None:
        r, w = os.pipe()
        self.r: BinaryIO | None = os.fdopen(r, "rb", buffering=0)
        self.w: BinaryIO | None = os.fdopen(w, "wb", buffering=0)
        self._lock = threading.Lock()

    def close_r(self) -> None:
        with self._lock:
            f, self.r = self.r, None
        if f:
            f.close()

    def close_w(self) -> None:
        with self._lock:
            f, self.w = self.w, None
        if f:
            f.close()


def _thread(target: Callable[..., Any], *args: Any) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


class WebSocketTransport:
    """remotecommand channels as WebSocket messages (channel byte or digit + payload)."""

    def __init__(self, peer: WebSocketConnection, codec: ch.ChannelCodec):
        self.peer = peer
        self.codec = codec

    def start(self, first_channel: int) -> None:
        # kubelet announces the session with an empty message on the lowest writable channel.
        self.send(first_channel, b"")

    def send(self, channel: int, data: bytes) -> bool:
        return self.peer.send(*self.codec.encode(channel, data))

    def close_channel(self, channel: int) -> None:
        pass  # WebSocket streams end with the connection

    def events(self) -> Iterator[ch.ChannelEvent]:
        for msg in self.peer.events():
            ev = self.codec.decode(msg)
            if ev is not None:
                yield ev

    def abort(self, reason: str) -> None:
        self.peer.close(ws.CloseCode.POLICY_VIOLATION, reason[:100])

    def finish(self, status: bytes) -> None:
        if status:
            self.send(ch.ERROR, status)
        self.peer.close()


class RemoteCommandSession:
    """exec or attach over one transport (WebSocket or SPDY), in remotecommand channels."""

    def __init__(self, backend: StreamBackend, transport: WebSocketTransport | SpdyTransport,
                 codec: ch.ChannelCodec, req: ExecRequest | AttachRequest):
        self.backend = backend
        self.transport = transport
        self.codec = codec  # for the exit status format of the negotiated version
        self.req = req
        self.stdin = _Pipe() if req.stdin else None
        self.stdout = _Pipe() if req.stdout else None
        self.stderr = _Pipe() if req.stderr and not req.tty else None
        self.resize = ResizeQueue() if req.tty else None
        self.client_gone = threading.Event()

    def run(self) -> None:
        req = self.req
        self.transport.start(ch.STDOUT if self.stdout else ch.STDERR if self.stderr else ch.ERROR)
        pumps = [_thread(self._pump, p, n) for p, n in ((self.stdout, ch.STDOUT),
                                                        (self.stderr, ch.STDERR)) if p]
        reader = _thread(self._read_client)
        code: int | None = None
        error = ""
        try:
            if isinstance(req, ExecRequest):
                code = self.backend.exec(
                    req.container_id, list(req.cmd), req.tty,
                    self.stdin.r if self.stdin else None, self.stdout.w if self.stdout else None,
                    self.stderr.w if self.stderr else None, self.resize)
            else:
                self.backend.attach(
                    req.container_id, req.tty, self.stdin.r if self.stdin else None,
                    self.stdout.w if self.stdout else None, self.stderr.w if self.stderr else None,
                    self.resize, self.client_gone)
        except PalletError as e:
            error = str(e)
        except Exception as e:  # noqa: BLE001 - reported on the error channel, logged here
            log.exception("streaming backend failed")
            error = f"internal error in pallet: {type(e).__name__}: {e}"
        finally:
            for p in (self.stdout, self.stderr):
                if p:
                    p.close_w()  # the process holds its own copies; EOF comes when it exits
            if self.stdin:
                self.stdin.close_r()
            if self.resize:
                self.resize.close()
        for t in pumps:
            t.join()
        status = self.codec.exit_status(code, error, req.cmd if isinstance(req, ExecRequest) else ())
        self.transport.finish(status)
        reader.join(CLOSE_WAIT)
        if self.stdin:
            self.stdin.close_w()

    def _pump(self, pipe: _Pipe, channel: int) -> None:
        assert pipe.r is not None
        fd = pipe.r.fileno()
        try:
            while data := os.read(fd, READ_SIZE):
                # A client that went away: keep reading so the process never blocks on a full pipe.
                self.transport.send(channel, data)
        finally:
            pipe.close_r()
            self.transport.close_channel(channel)

    def _read_client(self) -> None:
        try:
            for ev in self.transport.events():
                if isinstance(ev, ch.CloseChannel):
                    if ev.channel == ch.STDIN and self.stdin:
                        self.stdin.close_w()
                elif ev.channel == ch.STDIN:
                    self._write_stdin(ev.data)
                elif ev.channel == ch.RESIZE:
                    if self.resize:
                        self.resize.put(ch.parse_resize(ev.data))
                # Data on output channels from a client is meaningless: ignore it, as kubelet.
        except (ch.ChannelError, spdy.SpdyError) as e:
            log.info("bad streaming message: %s", e)
            self.transport.abort(str(e))
        finally:
            # The client is gone or closed: the process sees EOF on stdin, and an attach
            # (which would otherwise wait for output to fail on) ends.
            self.client_gone.set()
            if self.stdin:
                self.stdin.close_w()

    def _write_stdin(self, data: bytes) -> None:
        if not self.stdin or not data:
            return
        w = self.stdin.w
        if w is None:
            return
        try:
            w.write(data)
        except (BrokenPipeError, ValueError, OSError):
            self.stdin.close_w()  # the process stopped reading: drop the rest


class PortForwardSession:
    """Port forwarding over one WebSocket: channels 2i (data) and 2i+1 (error) per port."""

    def __init__(self, backend: StreamBackend, peer: WebSocketConnection, pod_id: str,
                 ports: tuple[int, ...]):
        self.backend = backend
        self.peer = peer
        self.pod_id = pod_id
        self.ports = ports
        self.codec = ch.ChannelCodec("portforward.k8s.io", channels=2 * len(ports))
        self.socks: list[socket.socket] = []

    def run(self) -> None:
        if not self.ports:
            self.peer.close(ws.CloseCode.POLICY_VIOLATION, "no port to forward")
            return
        workers = []
        for i, port in enumerate(self.ports):
            ours, theirs = socket.socketpair()
            self.socks.append(ours)
            prefix = ch.portforward_port_prefix(port)
            self.peer.send(*self.codec.encode(2 * i, prefix))
            self.peer.send(*self.codec.encode(2 * i + 1, prefix))
            workers.append(_thread(self._forward, i, port, theirs))
            workers.append(_thread(self._pump, i, ours))
        self._read_client()
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in workers:
            t.join(5)
        self.peer.close()
        for s in self.socks:
            s.close()

    def _forward(self, i: int, port: int, theirs: socket.socket) -> None:
        try:
            with theirs, theirs.makefile("rwb", buffering=0) as f:
                self.backend.port_forward(self.pod_id, port, f)  # type: ignore[arg-type]
        except PalletError as e:
            self.peer.send(*self.codec.encode(2 * i + 1, str(e).encode()))
        except OSError as e:  # the pod's port refused or vanished: the user's to see
            self.peer.send(*self.codec.encode(2 * i + 1, _connect_error(self.pod_id, port, e)))
        except Exception as e:  # noqa: BLE001 - reported on the port's error channel
            log.exception("port-forward backend failed")
            self.peer.send(*self.codec.encode(2 * i + 1, f"internal error: {e}".encode()))

    def _pump(self, i: int, ours: socket.socket) -> None:
        while True:
            try:
                data = ours.recv(READ_SIZE)
            except OSError:
                return
            if not data:
                return
            self.peer.send(*self.codec.encode(2 * i, data))

    def _read_client(self) -> None:
        for msg in self.peer.events():
            try:
                ev = self.codec.decode(msg)
            except ch.ChannelError as e:
                self.peer.close(ws.CloseCode.POLICY_VIOLATION, str(e)[:100])
                return
            if isinstance(ev, ch.Data) and ev.channel % 2 == 0:
                with contextlib.suppress(OSError):
                    self.socks[ev.channel // 2].sendall(ev.data)


class SpdyPortForwardSession:
    """Port forwarding over SPDY/3.1 as the kubelet serves it: the client opens an `error`
    and a `data` stream per connection, both carrying `port` and `requestID` headers."""

    def __init__(self, backend: StreamBackend, peer: SpdyConnection, pod_id: str):
        self.backend = backend
        self.peer = peer
        self.pod_id = pod_id
        self.pairs: dict[str, dict[str, int]] = {}   # requestID -> {"error": sid, "data": sid}
        self.socks: dict[int, socket.socket] = {}     # data stream id -> our socket end
        self.workers: list[threading.Thread] = []

    def run(self) -> None:
        try:
            for ev in self.peer.events():
                if isinstance(ev, spdy.SynStream):
                    self._open(ev)
                elif isinstance(ev, spdy.Data) and ev.stream_id in self.socks:
                    sock = self.socks[ev.stream_id]
                    with contextlib.suppress(OSError):
                        if ev.data:
                            sock.sendall(ev.data)
                        if ev.fin:
                            sock.shutdown(socket.SHUT_WR)
                elif isinstance(ev, spdy.RstStream) and ev.stream_id in self.socks:
                    with contextlib.suppress(OSError):
                        self.socks[ev.stream_id].shutdown(socket.SHUT_RDWR)
        finally:
            for sock in self.socks.values():
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            for t in self.workers:
                t.join(5)
            self.peer.close()
            for sock in self.socks.values():
                sock.close()

    def _open(self, ev: spdy.SynStream) -> None:
        def header(name: str) -> str:
            return (ev.headers.get(name) or [""])[0]

        kind, request_id = header("streamtype"), header("requestid")
        if kind not in ("error", "data") or not request_id:
            self.peer.send(spdy.rst_stream(ev.stream_id, spdy.RstStatus.REFUSED_STREAM))
            return
        pair = self.pairs.setdefault(request_id, {})
        pair[kind] = ev.stream_id
        if "error" in pair and "data" in pair:
            self._start(pair, header("port"))

    def _start(self, pair: dict[str, int], port_text: str) -> None:
        err_sid, data_sid = pair["error"], pair["data"]
        try:
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            self.peer.send(spdy.data_frame(err_sid, f"invalid port {port_text!r}".encode(),
                                           fin=True))
            self.peer.send(spdy.data_frame(data_sid, b"", fin=True))
            return
        ours, theirs = socket.socketpair()
        self.socks[data_sid] = ours
        self.workers.append(_thread(self._forward, port, theirs, err_sid))
        self.workers.append(_thread(self._pump, ours, data_sid))

    def _forward(self, port: int, theirs: socket.socket, err_sid: int) -> None:
        try:
            with theirs, theirs.makefile("rwb", buffering=0) as f:
                self.backend.port_forward(self.pod_id, port, f)  # type: ignore[arg-type]
        except PalletError as e:
            self.peer.send(spdy.data_frame(err_sid, str(e).encode()))
        except OSError as e:  # the pod's port refused or vanished: the user's to see, not ours
            self.peer.send(spdy.data_frame(err_sid, _connect_error(self.pod_id, port, e)))
        except Exception as e:  # noqa: BLE001 - reported on the connection's error stream
            log.exception("port-forward backend failed")
            self.peer.send(spdy.data_frame(err_sid, f"internal error: {e}".encode()))
        finally:
            self.peer.send(spdy.data_frame(err_sid, b"", fin=True))

    def _pump(self, ours: socket.socket, data_sid: int) -> None:
        with contextlib.suppress(OSError):
            while data := ours.recv(READ_SIZE):
                self.peer.send(spdy.data_frame(data_sid, data))
        self.peer.send(spdy.data_frame(data_sid, b"", fin=True))


def _connect_error(pod_id: str, port: int, e: OSError) -> bytes:
    return (f"error forwarding port {port} to pod {pod_id[:12]}: "
            f"{e.strerror or e}").encode()


__all__ = ["StreamingServer", "ResourceExhausted"]
