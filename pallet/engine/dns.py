"""The embedded DNS server of user-defined networks: docker's 127.0.0.11.

docker's daemon answers the containers of user-defined networks at 127.0.0.11: their names
and network aliases, and everything else by asking the upstream servers. pallet has no
daemon, so one server process per run root (`pallet-dns ROOT` in ps) does it. The first
container that needs it starts it, and it exits when the last one is gone.

For each such container it holds a UDP socket and a TCP listener bound to 127.0.0.11:53
*inside the container's network namespace*: a socket stays in the namespace it was made in,
so the server setns()es into the namespace to make them and back out. No iptables rule, no
address on any interface, and the container sees an ordinary resolver at docker's address.

A query is answered from the attachments of the networks the asking container is on (its
peers' names and aliases: A, AAAA, and PTR of their addresses; TTL 600 as docker). Any other
name is forwarded from the host's namespace, to the container's --dns servers or else the
host's resolv.conf nameservers (loopback ones too, as docker does: a host with
systemd-resolved works), and the answer relayed unchanged; SERVFAIL when none answers.

The engine calls sync(root, run_root) whenever names or attachments change (a network set up
or torn down, connect, disconnect, rename). The server re-reads the attachments, opens and
closes sockets, and answers only then, so a container's resolver is there before its
process runs. The control socket and the lock that orders starting and exiting are
RUN_ROOT/dns.sock and RUN_ROOT/dns.lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ADDRESS = "127.0.0.11"
SOCKET = "dns.sock"
LOCK = "dns.lock"
LOG = "dns.log"
TTL = 600
FORWARD_TIMEOUT = 2.0   # per upstream server
START_TIMEOUT = 15.0


def resolv_conf(host_text: str, servers: list[str], search: list[str],
                options: list[str]) -> str:
    """resolv.conf of a container that uses the embedded server, as docker writes it:
    127.0.0.11, the host's (or --dns-search) domains, ndots:0 unless --dns-option sets it,
    and a note of the servers the embedded one forwards to."""
    host_search: list[str] = []
    for ln in host_text.splitlines():
        words = ln.split()
        if words and words[0] in ("search", "domain"):
            host_search = words[1:]
    domains = [d for d in search if d != "."] if search else host_search
    opts = list(options)
    if not any(o.startswith("ndots:") for o in opts):
        opts.insert(0, "ndots:0")
    lines = [f"nameserver {ADDRESS}"]
    if domains:
        lines.append("search " + " ".join(domains))
    lines.append("options " + " ".join(opts))
    ext = servers or host_nameservers(host_text)
    lines += ["", f"# ExtServers: [{' '.join(ext)}]"]
    return "\n".join(lines) + "\n"


def host_nameservers(text: str | None = None) -> list[str]:
    """The nameservers of the host's resolv.conf (docker's defaults if it has none)."""
    if text is None:
        try:
            with open("/etc/resolv.conf") as f:
                text = f.read()
        except OSError:
            text = ""
    out = [w[1] for w in (ln.split() for ln in text.splitlines())
           if len(w) > 1 and w[0] == "nameserver"]
    return out or ["8.8.8.8", "8.8.4.4"]


# -- the engine's side ------------------------------------------------------------------------
def sync(root: str, run_root: str, start: bool = False) -> None:
    """Tell RUN_ROOT's server that attachments changed and wait until it has caught up;
    with START, start it if none runs. Raises OSError if a server could not be started."""
    path = os.path.join(run_root, SOCKET)
    if _ask(path) or not start:
        return
    with _Lock(run_root):
        if _ask(path):
            return
        _spawn(root, run_root)


def _ask(path: str) -> bool:
    """Send `sync` to the server at PATH: True once it answered (it is current), False if
    none is there (or it is exiting: it waits for that, so no stale process remains)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(30)
        try:
            s.connect(path)
            s.sendall(b"sync\n")
            reply = s.recv(64)
        except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError):
            return False
        if reply.startswith(b"bye"):
            while s.recv(64):  # EOF: the server has exited
                pass
            return True
        return reply.startswith(b"ok")
    finally:
        s.close()


class _Lock:
    def __init__(self, run_root: str):
        os.makedirs(run_root, exist_ok=True)
        self.fd = os.open(os.path.join(run_root, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                          0o600)

    def __enter__(self) -> _Lock:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _spawn(root: str, run_root: str) -> None:
    """Start the server, detached (a grandchild in a session of its own), and wait until it
    has made its sockets; its errors go to RUN_ROOT/dns.log."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the starter child
        try:
            os.close(r)
            os.setsid()
            if os.fork() == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                log = os.open(os.path.join(run_root, LOG),
                              os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                os.dup2(devnull, 0)
                os.dup2(devnull, 1)
                os.dup2(log, 2)
                os.closerange(3, w)
                os.closerange(w + 1, 1 << 16)
                os.set_inheritable(w, True)
                os.execv(sys.executable, [sys.executable, "-m", "pallet.engine.dns", root,
                                          run_root, str(w)])
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        ready = f.read(1)
    if ready != b"r":
        raise OSError(errno.EIO, "the embedded DNS server did not start; see "
                      f"{os.path.join(run_root, LOG)}")


# -- the server -------------------------------------------------------------------------------
class Member:
    """A network namespace the server answers in: one container (or the containers sharing
    its namespace) on one or more user-defined networks."""

    def __init__(self, netns: str, udp: socket.socket, tcp: socket.socket):
        self.netns, self.udp, self.tcp = netns, udp, tcp
        self.networks: set[str] = set()
        self.upstreams: list[str] = []

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


class Server:
    def __init__(self, root: str, run_root: str):
        import threading

        self.root, self.run_root = root, run_root
        self.host_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.members: dict[str, Member] = {}
        self.by_fd: dict[int, Member] = {}
        self.names: dict[str, dict[str, list[str]]] = {}   # network -> name -> ips
        self.ptrs: dict[str, dict[str, str]] = {}          # network -> ip -> name
        self.pending: dict[int, dict[str, Any]] = {}       # forwarded queries by socket fd
        self.lock = threading.Lock()
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        path = os.path.join(run_root, SOCKET)
        if os.path.exists(path):
            os.unlink(path)  # a dead server's (we hold the lock)
        old = os.umask(0o077)
        try:
            self.control.bind(path)
        finally:
            os.umask(old)
        self.control.listen(64)

    # -- tables ---------------------------------------------------------------------------
    def sync(self) -> None:
        """Re-read the attachments: tables of names, and one Member per namespace of a
        running container that uses us."""
        from pallet.engine.network import DEFAULT_NETWORK, LOOPBACK_NETWORK, Networks, dns_enabled
        from pallet.engine.store import ContainerFilter, Store
        from pallet.errors import NotFound

        store = Store(self.root)
        try:
            names: dict[str, dict[str, list[str]]] = {}
            ptrs: dict[str, dict[str, str]] = {}
            wanted: dict[str, tuple[set[str], list[str]]] = {}
            skip = {DEFAULT_NETWORK, LOOPBACK_NETWORK}
            skip |= {r.name for r in store.list_networks() if not dns_enabled(r)}
            for a in Networks(store, self.root).attachments():
                if a.network in skip:
                    continue
                aliases = list(a.aliases)
                try:
                    config = store.get_container(a.container_id).config
                    servers = (config.get("host_config") or {}).get("dns") or []
                except NotFound:
                    try:  # a `pallet pod`'s: its name, and its members' names
                        pod = store.get_pod(a.container_id)
                    except NotFound:
                        continue
                    config = pod.config
                    if not config.get("embedded_dns"):
                        continue  # a CRI pod's: cluster DNS is Kubernetes' business
                    servers = (config.get("spec") or {}).get("dns_servers") or []
                    aliases += [c.name for c in
                                store.list_containers(ContainerFilter(pod_id=pod.id))]
                table = names.setdefault(a.network, {})
                for ip in a.ips:
                    ip = ip.split("/")[0]
                    for alias in aliases:
                        table.setdefault(alias.lower().rstrip("."), []).append(ip)
                    if aliases:
                        ptrs.setdefault(a.network, {})[ip] = aliases[0]
                if config.get("embedded_dns") and a.netns and os.path.exists(a.netns):
                    nets, _ = wanted.setdefault(a.netns, (set(), []))
                    nets.add(a.network)
                    wanted[a.netns] = (nets, servers)
        finally:
            store.close()
        for netns in list(self.members):
            if netns not in wanted:
                self._drop(netns)
        for netns, (nets, servers) in wanted.items():
            m = self.members.get(netns)
            if m is None:
                try:
                    m = self._member(netns)
                except OSError as e:
                    print(f"pallet-dns: cannot listen in {netns}: {e}", file=sys.stderr)
                    continue
            m.networks, m.upstreams = nets, servers
        with self.lock:
            self.names, self.ptrs = names, ptrs

    def _member(self, netns: str) -> Member:
        from pallet.oci.linux import syscalls

        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            syscalls.setns(fd, syscalls.CLONE_NEWNET)
            try:
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                try:
                    for s in (udp, tcp):
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        s.bind((ADDRESS, 53))
                    tcp.listen(16)
                except OSError:
                    udp.close()
                    tcp.close()
                    raise
            finally:
                syscalls.setns(self.host_ns, syscalls.CLONE_NEWNET)
        finally:
            os.close(fd)
        udp.setblocking(False)
        m = Member(netns, udp, tcp)
        self.members[netns] = m
        self.by_fd[udp.fileno()] = self.by_fd[tcp.fileno()] = m
        return m

    def _drop(self, netns: str) -> None:
        m = self.members.pop(netns)
        self.by_fd.pop(m.udp.fileno(), None)
        self.by_fd.pop(m.tcp.fileno(), None)
        m.close()

    # -- answers ----------------------------------------------------------------------------
    def answer(self, m: Member, wire: bytes) -> bytes | None:
        """The reply to WIRE from our tables, or None: forward it."""
        import ipaddress

        from dnslib import AAAA, PTR, QTYPE, RR, A, DNSRecord

        try:
            q = DNSRecord.parse(wire)
        except Exception:  # noqa: BLE001 - anything malformed is dropped, as docker does
            return b""
        if len(q.questions) != 1:
            return None
        qname, qtype = q.q.qname, q.q.qtype
        name = str(qname).rstrip(".").lower()
        with self.lock:
            names, ptrs = self.names, self.ptrs
        r = q.reply()  # QR, RA, the question, the query's id
        if qtype == QTYPE.PTR:
            ip = _reverse_address(name)
            host = next((ptrs[n][ip] for n in m.networks if ip in ptrs.get(n, {})), None) \
                if ip else None
            if host is None:
                return None
            r.add_answer(RR(qname, QTYPE.PTR, rdata=PTR(host + "."), ttl=TTL))
            return r.pack()
        ips = [ip for n in sorted(m.networks) for ip in names.get(n, {}).get(name, [])]
        if not ips:
            return None
        if qtype in (QTYPE.A, QTYPE.AAAA):
            v6 = qtype == QTYPE.AAAA
            found = [ip for ip in dict.fromkeys(ips) if (":" in ip) == v6]
            random.shuffle(found)  # docker's: replicas of a service share the load
            for ip in found:  # none: NODATA, the name is ours, of the other family only
                rdata = AAAA(ipaddress.ip_address(ip).exploded) if v6 else A(ip)
                r.add_answer(RR(qname, qtype, rdata=rdata, ttl=TTL))
        return r.pack()

    def servfail(self, wire: bytes) -> bytes:
        from dnslib import RCODE, DNSRecord

        try:
            r = DNSRecord.parse(wire).reply()
        except Exception:  # noqa: BLE001
            return b""
        r.header.rcode = RCODE.SERVFAIL
        return r.pack()

    def upstreams(self, m: Member) -> list[str]:
        return list(m.upstreams) or host_nameservers()

    # -- UDP ------------------------------------------------------------------------------------
    def on_udp(self, m: Member) -> None:
        while True:
            try:
                data, addr = m.udp.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:
                return
            reply = self.answer(m, data)
            if reply is None:
                self.forward(m, data, addr, self.upstreams(m))
            elif reply:
                _sendto(m.udp, reply, addr)

    def forward(self, m: Member, data: bytes, addr: Any, servers: list[str]) -> None:
        while servers:
            server, servers = servers[0], servers[1:]
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            s = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                s.setblocking(False)
                s.connect((server, 53))
                s.send(data)
            except OSError:
                s.close()
                continue
            self.pending[s.fileno()] = {"sock": s, "member": m, "data": data, "addr": addr,
                                        "rest": servers,
                                        "deadline": time.monotonic() + FORWARD_TIMEOUT}
            return
        reply = self.servfail(data)
        if reply:
            _sendto(m.udp, reply, addr)

    def on_upstream(self, fd: int) -> None:
        p = self.pending.pop(fd)
        try:
            reply = p["sock"].recv(65535)
        except OSError:  # refused: the next one
            p["sock"].close()
            self.forward(p["member"], p["data"], p["addr"], p["rest"])
            return
        p["sock"].close()
        if p["member"].netns in self.members:
            _sendto(p["member"].udp, reply, p["addr"])

    def expire(self) -> float | None:
        now = time.monotonic()
        for fd, p in list(self.pending.items()):
            if p["deadline"] <= now:
                del self.pending[fd]
                p["sock"].close()
                if p["member"].netns in self.members:
                    self.forward(p["member"], p["data"], p["addr"], p["rest"])
        return min((p["deadline"] for p in self.pending.values()), default=None)

    # -- TCP (a thread per connection: rare, after a truncated UDP answer) -------------------
    def on_tcp(self, m: Member) -> None:
        import threading

        try:
            conn, _ = m.tcp.accept()
        except OSError:
            return
        threading.Thread(target=self._tcp_conn, args=(m, conn), daemon=True).start()

    def _tcp_conn(self, m: Member, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                while True:
                    head = _recv_exact(conn, 2)
                    if len(head) < 2:
                        return
                    data = _recv_exact(conn, int.from_bytes(head, "big"))
                    reply = self.answer(m, data)
                    if reply is None:
                        reply = self._tcp_forward(data, self.upstreams(m)) or \
                            self.servfail(data)
                    if not reply:
                        return
                    conn.sendall(len(reply).to_bytes(2, "big") + reply)
            except OSError:
                return

    def _tcp_forward(self, data: bytes, servers: list[str]) -> bytes:
        for server in servers:
            try:
                with socket.create_connection((server, 53), timeout=FORWARD_TIMEOUT) as s:
                    s.sendall(len(data).to_bytes(2, "big") + data)
                    head = _recv_exact(s, 2)
                    if len(head) == 2:
                        return _recv_exact(s, int.from_bytes(head, "big"))
            except OSError:
                continue
        return b""

    # -- the loop ---------------------------------------------------------------------------
    def on_control(self) -> None:
        """Serve one `sync`; exit when no member is left."""
        conn, _ = self.control.accept()
        with conn:
            conn.settimeout(10)
            try:
                if not conn.recv(64).startswith(b"sync"):
                    return
            except OSError:
                return
            self.sync()
            if self.members:
                with _suppress_oserror():
                    conn.sendall(b"ok\n")
                return
            # The last one has gone: exit, and tell the caller only once our socket is gone;
            # it then waits for this connection's EOF (our exit) so that no server of a
            # removed container is left running.
            with _Lock(self.run_root):
                with _suppress_oserror():
                    os.unlink(os.path.join(self.run_root, SOCKET))
                self.control.close()
            with _suppress_oserror():
                conn.sendall(b"bye\n")
            # Exit now, CONN still open: the kernel closes it after our memory is gone, so
            # the caller's EOF means no `pallet-dns ROOT` is left in ps (an interpreter's
            # teardown would take tens of ms after a close here).
            os._exit(0)

    def run(self, ready_fd: int) -> None:
        import select

        self.sync()
        os.write(ready_fd, b"r")
        os.close(ready_fd)
        if not self.members:  # raced with the container's exit: nothing to serve
            with _suppress_oserror():
                os.unlink(os.path.join(self.run_root, SOCKET))  # our starter holds the lock
            os._exit(0)
        poller = select.poll()
        while True:
            fds = {self.control.fileno(): "control"}
            for m in self.members.values():
                fds[m.udp.fileno()] = "udp"
                fds[m.tcp.fileno()] = "tcp"
            for fd in self.pending:
                fds[fd] = "upstream"
            for fd in fds:
                poller.register(fd, select.POLLIN)
            deadline = self.expire()
            timeout = None if deadline is None else \
                max(0, int((deadline - time.monotonic()) * 1000) + 1)
            try:
                events = poller.poll(timeout)
            except InterruptedError:
                events = []
            for fd in fds:
                poller.unregister(fd)
            for fd, _ in events:
                try:
                    self.dispatch(fds[fd], fd)
                except Exception:  # noqa: BLE001 - one bad event must not end every answer
                    import traceback

                    traceback.print_exc()  # to RUN_ROOT/dns.log

    def dispatch(self, kind: str, fd: int) -> None:
        if kind == "control":
            self.on_control()
        elif kind == "upstream" and fd in self.pending:
            self.on_upstream(fd)
        elif fd in self.by_fd:
            m = self.by_fd[fd]
            (self.on_udp if kind == "udp" else self.on_tcp)(m)


class _suppress_oserror:  # contextlib costs an import in the engine's hot paths
    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: object, *_: object) -> bool:
        return typ is not None and issubclass(typ, OSError)  # type: ignore[arg-type]


def _reverse_address(name: str) -> str:
    """The address a PTR query's NAME (d.c.b.a.in-addr.arpa, or ip6.arpa nibbles) asks
    about, "" if it is not one."""
    import ipaddress

    labels = name.split(".")
    try:
        if name.endswith(".in-addr.arpa") and len(labels) == 6:
            return str(ipaddress.IPv4Address(".".join(reversed(labels[:4]))))
        if name.endswith(".ip6.arpa") and len(labels) == 34:
            nibbles = "".join(reversed(labels[:32]))
            return str(ipaddress.IPv6Address(int(nibbles, 16)))
    except ValueError:
        pass
    return ""


def _sendto(s: socket.socket, data: bytes, addr: Any) -> None:
    try:
        s.sendto(data, addr)
    except OSError:
        pass  # the client has gone (its namespace too, perhaps)


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def main(argv: list[str]) -> int:  # pragma: no cover - the server process
    root, run_root, ready = argv[0], argv[1], int(argv[2])
    from pallet.engine.monitor import set_title

    set_title(f"pallet-dns {root}")
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    # Started under RUN_ROOT's lock, which our starter holds until we are ready.
    Server(root, run_root).run(ready)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
