"""Published ports on [::1], as docker's userland proxy answers them: the kernel cannot DNAT
::1 to a container (IPv6 has no route_localnet), so the container's monitor relays them.

Imported only by the monitors of containers with such ports (and by the engine, for the
pure `targets`), and it is the lean monitor's code too: C builtins only. A `Relay` owns a
listener on [::1]:HOSTPORT (v6only) per port, and the connections and UDP sessions it
opened to the container's address; it never blocks: the monitor's poll loop asks it which
fds to watch (`events`), hands it what came (`handle`), and when UDP sessions expire
(`timeout`).
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import time

READ_SIZE = 16384         # as the monitor's stream reads
DATAGRAM_SIZE = 65535
UDP_IDLE = 90.0           # a UDP "connection" with no datagram for this long is forgotten
MAX_UDP_SESSIONS = 256    # per relay; the least recently used goes first
BURST = 16                # accepts or datagrams per wake-up, so one port cannot starve others
LOOPBACK6 = "::1"
# Published on these host addresses, a port answers on [::1] too (docker-proxy's rule):
# all addresses ("" or ::) or ::1 itself, not an IPv4 one such as 127.0.0.1 or 0.0.0.0.
RELAYED_HOST_IPS = ("", "::", LOOPBACK6)
RELAYED_PROTOCOLS = ("tcp", "udp")

_R, _W = select.POLLIN, select.POLLOUT
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


# -- pure: what to relay -------------------------------------------------------------------
def relayed(mapping: dict) -> bool:
    """Whether a published port (a CNI portMappings entry) answers on [::1]."""
    return ((mapping.get("hostIP") or "") in RELAYED_HOST_IPS
            and (mapping.get("protocol") or "tcp") in RELAYED_PROTOCOLS)


def targets(mappings: list, ips: list) -> list[tuple[str, int, str, int]]:
    """(protocol, host port, container address, container port) for each port of MAPPINGS
    that answers on [::1], to the container's IPv4 address (IPS, CIDR form) if it has one,
    else its IPv6 one; [] without an address."""
    addrs = [ip.split("/")[0] for ip in ips if ip]
    addr = next((a for a in addrs if ":" not in a), "") or next(iter(addrs), "")
    if not addr:
        return []
    return [(m.get("protocol", "tcp"), int(m["hostPort"]), addr, int(m["containerPort"]))
            for m in mappings if relayed(m)]


def encode(tgts: list) -> bytes:
    """TARGETS as the monitor's `f` frame payload: one `PROTO HOSTPORT ADDR CTRPORT` line each."""
    return "".join(f"{p} {h} {a} {c}\n" for p, h, a, c in tgts).encode()


def decode(payload: bytes) -> list[tuple[str, int, str, int]]:
    out = []
    for line in payload.decode().splitlines():
        proto, host, addr, ctr = line.split()
        out.append((proto, int(host), addr, int(ctr)))
    return out


# -- the relay -------------------------------------------------------------------------------
class _Stream:
    """One relayed TCP connection: the client's socket and ours to the container, with the
    bytes read from each side and not yet written to the other."""

    __slots__ = ("client", "upstream", "to_up", "to_client", "connected", "client_eof",
                 "up_eof")

    def __init__(self, client: _socket.socket, upstream: _socket.socket):
        self.client, self.upstream = client, upstream
        self.to_up = self.to_client = b""
        self.connected = self.client_eof = self.up_eof = False

    def masks(self) -> tuple[int, int]:
        if not self.connected:
            return 0, _W
        # Read a side only while the other has taken everything: the backlog is one read.
        c = (_R if not self.client_eof and not self.to_up else 0) | (_W if self.to_client else 0)
        u = (_R if not self.up_eof and not self.to_client else 0) | (_W if self.to_up else 0)
        return c, u

    def done(self) -> bool:
        return self.client_eof and self.up_eof and not self.to_up and not self.to_client


class _Session:
    """One UDP client of a relayed port: its address and our socket to the container."""

    __slots__ = ("listener", "peer", "upstream", "used")

    def __init__(self, listener: _socket.socket, peer: tuple, upstream: _socket.socket):
        self.listener, self.peer, self.upstream = listener, peer, upstream
        self.used = time.monotonic()


class Relay:
    """The [::1] listeners of one container's published ports and what they relay."""

    def __init__(self, tgts: list, label: str = "") -> None:
        self.label = label
        self.listeners: dict[int, tuple[_socket.socket, tuple]] = {}  # fd -> (sock, target)
        self.streams: dict[int, _Stream] = {}       # both fds of each stream
        self.sessions: dict[int, _Session] = {}     # upstream fd -> session
        self.peers: dict[tuple, _Session] = {}      # (listener fd, client address) -> session
        for t in tgts:
            self._listen(tuple(t))

    def _warn(self, text: str) -> None:
        try:
            os.write(2, f"monitor {self.label}: {text}\n".encode())
        except OSError:
            pass

    def _listen(self, t: tuple) -> None:
        proto, port = t[0], t[1]
        kind = _socket.SOCK_STREAM if proto == "tcp" else _socket.SOCK_DGRAM
        try:
            s = _socket.socket(_socket.AF_INET6, kind)
        except OSError as e:  # no IPv6 in this kernel
            self._warn(f"not relaying [::1]:{port}/{proto}: {e.strerror}")
            return
        try:
            s.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1)
            if kind == _socket.SOCK_STREAM:
                # A relay restarted with its container must not wait out TIME_WAIT.
                s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            s.bind((LOOPBACK6, port))
            if kind == _socket.SOCK_STREAM:
                s.listen(128)
            s.setblocking(False)
        except OSError as e:
            # Taken by another process, or no IPv6 loopback: the container runs without it.
            self._warn(f"not relaying [::1]:{port}/{proto}: {e.strerror}")
            s.close()
            return
        self.listeners[s.fileno()] = (s, t)

    # -- the monitor's loop ------------------------------------------------------------------
    def events(self) -> list[tuple[int, int]]:
        """(fd, poll mask) of everything to watch now."""
        out = [(fd, _R) for fd in self.listeners]
        seen = set()
        for st in self.streams.values():
            if id(st) in seen:
                continue
            seen.add(id(st))
            c, u = st.masks()
            if c:
                out.append((st.client.fileno(), c))
            if u:
                out.append((st.upstream.fileno(), u))
        out += [(fd, _R) for fd in self.sessions]
        return out

    def timeout(self) -> float | None:
        """Seconds until the oldest UDP session expires (None without sessions)."""
        if not self.sessions:
            return None
        oldest = min(s.used for s in self.sessions.values())
        return max(0.0, oldest + UDP_IDLE - time.monotonic())

    def handle(self, fd: int, ev: int) -> bool:
        """Act on poll's EV for FD; False if FD is not ours."""
        if fd in self.listeners:
            sock, t = self.listeners[fd]
            if t[0] == "tcp":
                self._accept(sock, t)
            else:
                self._datagrams_in(sock, t)
        elif fd in self.streams:
            self._stream_event(self.streams[fd], fd, ev)
        elif fd in self.sessions:
            self._datagrams_back(self.sessions[fd])
        else:
            return False
        self.expire()
        return True

    def fds(self) -> list[int]:
        return [*self.listeners, *self.streams, *self.sessions]

    def close(self) -> None:
        """Stop listening and drop every connection (the container is gone)."""
        for sock, _ in self.listeners.values():
            sock.close()
        for st in set(self.streams.values()):
            st.client.close()
            st.upstream.close()
        for se in self.sessions.values():
            se.upstream.close()
        self.listeners.clear()
        self.streams.clear()
        self.sessions.clear()
        self.peers.clear()

    # -- TCP ----------------------------------------------------------------------------
    def _accept(self, lsock: _socket.socket, t: tuple) -> None:
        _, _, addr, port = t
        for _ in range(BURST):
            try:
                cfd, _ = lsock._accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._warn(f"[::1]:{t[1]}: cannot accept: {e.strerror}")
                    return
                continue  # ECONNABORTED and the like: that client is gone
            client = _socket.socket(fileno=cfd)
            client.setblocking(False)
            family = _socket.AF_INET6 if ":" in addr else _socket.AF_INET
            try:
                up = _socket.socket(family, _socket.SOCK_STREAM)
            except OSError as e:
                self._warn(f"[::1]:{t[1]}: cannot connect to the container: {e.strerror}")
                client.close()
                return
            up.setblocking(False)
            err = up.connect_ex((addr, port))
            if err not in (0, errno.EINPROGRESS):
                client.close()
                up.close()
                continue
            st = _Stream(client, up)
            st.connected = err == 0
            self.streams[client.fileno()] = self.streams[up.fileno()] = st

    def _stream_event(self, st: _Stream, fd: int, ev: int) -> None:
        from_client = fd == st.client.fileno()
        try:
            if not from_client and not st.connected:
                err = st.upstream.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                st.connected = True
                return
            cmask, umask = st.masks()
            mask = cmask if from_client else umask
            if ev & (_W | _GONE) and mask & _W:
                self._flush(st, from_client)  # raises on a connection that was reset
            if ev & (_R | _GONE) and mask & _R:
                self._pull(st, from_client)
            elif ev & _GONE and not mask & _W:
                raise OSError(errno.ECONNRESET, "hung up")
        except OSError:
            self._drop(st)
            return
        if st.done():
            self._drop(st)

    def _pull(self, st: _Stream, from_client: bool) -> None:
        src = st.client if from_client else st.upstream
        data = src.recv(READ_SIZE)
        if from_client:
            if not data:
                st.client_eof = True
            st.to_up = data
        else:
            if not data:
                st.up_eof = True
            st.to_client = data
        self._flush(st, not from_client)

    def _flush(self, st: _Stream, to_client: bool) -> None:
        """Write what waits for the client (TO_CLIENT) or the container; pass an EOF on."""
        dst = st.client if to_client else st.upstream
        buf = st.to_client if to_client else st.to_up
        if buf:
            try:
                n = dst.send(buf)
            except BlockingIOError:
                n = 0
            buf = buf[n:]
            if to_client:
                st.to_client = buf
            else:
                st.to_up = buf
        if not buf and (st.up_eof if to_client else st.client_eof):
            try:
                dst.shutdown(_socket.SHUT_WR)
            except OSError:
                pass  # not connected any more: the other side's read says so

    def _drop(self, st: _Stream) -> None:
        for s in (st.client, st.upstream):
            self.streams.pop(s.fileno(), None)
            s.close()

    # -- UDP ----------------------------------------------------------------------------
    def _datagrams_in(self, lsock: _socket.socket, t: tuple) -> None:
        _, _, addr, port = t
        lfd = lsock.fileno()
        for _ in range(BURST):
            try:
                data, peer = lsock.recvfrom(DATAGRAM_SIZE)
            except BlockingIOError:
                return
            except OSError:
                continue
            se = self.peers.get((lfd, peer))
            if se is None:
                se = self._session(lsock, peer, addr, port)
                if se is None:
                    continue
            se.used = time.monotonic()
            try:
                se.upstream.send(data)
            except OSError:
                pass  # dropped, as the network may drop any datagram

    def _session(self, lsock: _socket.socket, peer: tuple, addr: str, port: int
                 ) -> _Session | None:
        if len(self.sessions) >= MAX_UDP_SESSIONS:
            self._end(min(self.sessions.values(), key=lambda s: s.used))
        family = _socket.AF_INET6 if ":" in addr else _socket.AF_INET
        try:
            up = _socket.socket(family, _socket.SOCK_DGRAM)
        except OSError as e:
            self._warn(f"[::1]:{lsock.getsockname()[1]}/udp: {e.strerror}")
            return None
        try:
            up.setblocking(False)
            up.connect((addr, port))
        except OSError as e:
            self._warn(f"[::1]:{lsock.getsockname()[1]}/udp: {e.strerror}")
            up.close()
            return None
        se = _Session(lsock, peer, up)
        self.sessions[up.fileno()] = se
        self.peers[(lsock.fileno(), peer)] = se
        return se

    def _datagrams_back(self, se: _Session) -> None:
        for _ in range(BURST):
            try:
                data = se.upstream.recv(DATAGRAM_SIZE)
            except BlockingIOError:
                return
            except OSError:  # ECONNREFUSED: nothing listens in the container
                self._end(se)
                return
            se.used = time.monotonic()
            try:
                se.listener.sendto(data, se.peer)
            except OSError:
                pass

    def _end(self, se: _Session) -> None:
        self.sessions.pop(se.upstream.fileno(), None)
        self.peers.pop((se.listener.fileno(), se.peer), None)
        se.upstream.close()

    def expire(self) -> None:
        """Forget UDP sessions idle for UDP_IDLE (the loop calls it when `timeout` ran out)."""
        if not self.sessions:
            return
        old = time.monotonic() - UDP_IDLE
        for se in [s for s in self.sessions.values() if s.used <= old]:
            self._end(se)

    # -- across the lean monitor's exec ---------------------------------------------------
    def snapshot(self) -> dict:
        """Plain data (for marshal) with the fds to keep open across an exec."""
        streams = []
        for st in set(self.streams.values()):
            streams.append((st.client.fileno(), st.upstream.fileno(), st.to_up, st.to_client,
                            st.connected, st.client_eof, st.up_eof))
        now = time.monotonic()
        return {"label": self.label,
                "listeners": [(fd, t) for fd, (_, t) in self.listeners.items()],
                "streams": streams,
                "sessions": [(se.listener.fileno(), se.peer, fd, now - se.used)
                             for fd, se in self.sessions.items()]}

    def detach_fds(self) -> list[int]:
        """Every fd, made inheritable and left open when this object goes (for the exec)."""
        fds = self.fds()
        for fd in fds:
            os.set_inheritable(fd, True)
        return fds


def restore(state: dict) -> Relay:
    """The relay SNAPSHOT described, in the process the fds were carried into."""
    r = Relay([], state.get("label", ""))

    def sock(fd: int) -> _socket.socket:
        os.set_inheritable(fd, False)
        return _socket.socket(fileno=fd)

    for fd, t in state["listeners"]:
        r.listeners[fd] = (sock(fd), tuple(t))
    for cfd, ufd, to_up, to_client, connected, ceof, ueof in state["streams"]:
        st = _Stream(sock(cfd), sock(ufd))
        st.to_up, st.to_client = to_up, to_client
        st.connected, st.client_eof, st.up_eof = connected, ceof, ueof
        r.streams[cfd] = r.streams[ufd] = st
    now = time.monotonic()
    for lfd, peer, ufd, age in state["sessions"]:
        if lfd not in r.listeners:
            os.close(ufd)
            continue
        se = _Session(r.listeners[lfd][0], tuple(peer), sock(ufd))
        se.used = now - age
        r.sessions[ufd] = se
        r.peers[(lfd, se.peer)] = se
    return r
