"""A RUN's ssh mounts, served: each connection to one of the listening sockets the builder
bound is relayed, both ways, to a new connection to that mount's agent.

Run by pallet.build.ssh as `python -I -S ssh_forward.py LIFE FD:AGENT...` (stdlib only, no
pallet import): FD a listening unix socket, AGENT the agent's socket path (a relative one
in the cwd), LIFE a pipe whose write end the builder holds: its EOF (the RUN is done, or
the builder died) ends the relay. Runs as the builder's user (root), whom ssh-agent
accepts whatever user the RUN connects as.
"""

from __future__ import annotations

import selectors
import socket
import sys

CHUNK = 65536
HELD = 1 << 20  # bytes held for a side that does not read: its peer is not read meanwhile
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Direction:
    """One direction of a relayed connection: what SRC sent that DST has not taken yet."""

    def __init__(self, src: socket.socket, dst: socket.socket):
        self.src, self.dst = src, dst
        self.buf = bytearray()
        self.eof = False   # SRC sent its last byte
        self.done = False  # ... and DST has had it all (its write side shut)


class Relay:
    def __init__(self, life: int, listeners: dict[socket.socket, str]):
        self.life = life
        self.listeners = listeners
        self.sel = selectors.DefaultSelector()
        self.events: dict[socket.socket, int] = {}
        # socket -> (the direction it reads for, the direction it writes for)
        self.conns: dict[socket.socket, tuple[Direction, Direction]] = {}

    def run(self) -> None:
        self.sel.register(self.life, READ)
        for sock in self.listeners:
            self.sel.register(sock, READ)
        while True:
            for sock, (out, into) in list(self.conns.items()):
                want = (READ if not out.eof and len(out.buf) < HELD else 0) | \
                    (WRITE if into.buf else 0)
                self._watch(sock, want)
            for key, mask in self.sel.select():
                obj = key.fileobj
                if obj == self.life:
                    return
                if obj in self.listeners:
                    self._accept(obj)  # type: ignore[arg-type]
                elif obj in self.conns:
                    self._move(obj, mask)  # type: ignore[arg-type]
            for sock, (out, _) in list(self.conns.items()):
                if sock not in self.conns:
                    continue  # dropped with its peer
                if out.eof and not out.buf and not out.done:
                    out.done = True
                    try:
                        out.dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        self._drop(sock)
                        continue
                if sock in self.conns and out.done and self.conns[sock][1].done:
                    self._drop(sock)

    def _watch(self, sock: socket.socket, want: int) -> None:
        have = self.events.get(sock, 0)
        if want == have:
            return
        if not want:
            self.sel.unregister(sock)
            del self.events[sock]
        elif not have:
            self.sel.register(sock, want)
            self.events[sock] = want
        else:
            self.sel.modify(sock, want)
            self.events[sock] = want

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            agent.connect(self.listeners[listener])
        except OSError:
            # The agent is gone: the RUN's client sees its connection closed.
            client.close()
            agent.close()
            return
        client.setblocking(False)
        agent.setblocking(False)
        up, down = Direction(client, agent), Direction(agent, client)
        self.conns[client] = (up, down)
        self.conns[agent] = (down, up)

    def _move(self, sock: socket.socket, mask: int) -> None:
        out, into = self.conns[sock]
        try:
            if mask & READ:
                data = sock.recv(CHUNK)
                if data:
                    out.buf += data
                else:
                    out.eof = True
            if mask & WRITE and into.buf:
                del into.buf[:sock.send(into.buf)]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        """Close SOCK and its peer."""
        out, _ = self.conns[sock]
        for s in (out.src, out.dst):
            self.conns.pop(s, None)
            if self.events.pop(s, 0):
                self.sel.unregister(s)
            s.close()


def main(argv: list[str]) -> int:
    listeners = {}
    for arg in argv[1:]:
        fd, _, agent = arg.partition(":")
        sock = socket.socket(fileno=int(fd))
        sock.setblocking(False)
        listeners[sock] = agent
    Relay(int(argv[0]), listeners).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
