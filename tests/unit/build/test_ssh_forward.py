"""A RUN's ssh socket, relayed: what a client sends reaches the agent's socket and what the
agent answers comes back, in order, however large, through a half-close; the relay (a real
forwarder process) ends with the context and its sockets go. No root: the agent here is a
unix socket echo server of the test's."""

from __future__ import annotations

import os
import socket
import stat
import threading

from pallet.build.ssh import SSHAgents


def _echo_server(path: str) -> threading.Thread:
    """Answers one connection on PATH with every byte it sent, until it shuts its side."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, srv:
            while data := conn.recv(65536):
                conn.sendall(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def test_the_forwarder_relays_both_ways_and_ends_with_the_run(tmp_path):
    agent = str(tmp_path / "agent.sock")
    server = _echo_server(agent)
    payload = os.urandom(3 << 20)  # more than the forwarder holds for a slow reader
    agents = SSHAgents([], str(tmp_path / "a-build's-tmp" / ("long-" * 20) / "ssh"))
    with agents.forward([(agent, 0o640, os.getuid(), os.getgid())]) as paths:
        (path,) = paths
        assert len(path) > 108  # bound through the dir's fd: sun_path would not hold it
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
        got = bytearray()
        dfd = os.open(os.path.dirname(path), os.O_PATH)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(20)
            c.connect(f"/proc/self/fd/{dfd}/{os.path.basename(path)}")
            os.close(dfd)

            def send() -> None:
                c.sendall(payload)
                c.shutdown(socket.SHUT_WR)  # the client is done: the agent hears EOF

            writer = threading.Thread(target=send)
            writer.start()
            while data := c.recv(65536):
                got += data
            writer.join()
        assert bytes(got) == payload
        server.join(10)
    assert not os.path.exists(path)
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_forwarder(p, path)]


def _is_forwarder(pid: str, path: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        return any(a.endswith(b"ssh_forward.py") for a in argv) and \
            os.readlink(f"/proc/{pid}/cwd").startswith(os.path.dirname(path))
    except OSError:
        return False
