"""Exec, attach and port-forward through the real streaming server of a running daemon,
with a WebSocket client speaking the Kubernetes channel protocols. The daemon's stream
backend is tests.cri.local_backend, which runs host processes: it stands in for the
engine until the engine's exec/attach lands.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.request
from urllib.error import HTTPError

import pytest
from cri_api.v1 import api_pb2 as pb
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.cri.conftest import Daemon

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4


def connect(url: str, **kw) -> ClientConnection:
    # CRI hands out http:// URLs (kubelet and crictl upgrade them); websockets wants ws://.
    return ws_connect(url.replace("http://", "ws://", 1), open_timeout=10, **kw)


def exec_url(daemon: Daemon, cmd: list[str], **kw) -> str:
    kw.setdefault("stdout", True)
    return daemon.runtime.Exec(pb.ExecRequest(container_id="local", cmd=cmd, **kw)).url


def collect(ws: ClientConnection, timeout: float = 20) -> dict[int, bytes]:
    """Read until the server closes; returns bytes per channel (binary protocols)."""
    out: dict[int, bytes] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = ws.recv(timeout=deadline - time.monotonic())
            assert isinstance(msg, bytes)
            out[msg[0]] = out.get(msg[0], b"") + msg[1:]
    except ConnectionClosed:
        pass
    return out


def test_exec_streams_stdout_stderr_and_exit_status_v5(daemon: Daemon) -> None:
    url = exec_url(daemon, ["sh", "-c", "echo out; echo err >&2; exit 3"], stderr=True)
    with connect(url, subprotocols=["v5.channel.k8s.io", "v4.channel.k8s.io"]) as ws:
        assert ws.subprotocol == "v5.channel.k8s.io"
        first = ws.recv(timeout=10)
        assert first == bytes([STDOUT])  # kubelet's "connected" signal: empty stdout message
        out = collect(ws)
    assert out[STDOUT] == b"out\n"
    assert out[STDERR] == b"err\n"
    status = json.loads(out[ERROR])
    assert status["status"] == "Failure"
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


def test_exec_success_status_v4(daemon: Daemon) -> None:
    with connect(exec_url(daemon, ["true"]), subprotocols=["v4.channel.k8s.io"]) as ws:
        out = collect(ws)
    assert json.loads(out[ERROR]) == {"metadata": {}, "status": "Success"}


def test_exec_stdin_then_v5_close_gives_eof(daemon: Daemon) -> None:
    url = exec_url(daemon, ["sh", "-c", "wc -c; echo done"], stdin=True)
    with connect(url, subprotocols=["v5.channel.k8s.io"]) as ws:
        ws.send(bytes([STDIN]) + b"hello ")
        ws.send(bytes([STDIN]) + b"world\n")
        ws.send(bytes([255, STDIN]))  # v5 CLOSE signal: half-close stdin
        out = collect(ws)
    assert out[STDOUT].split() == [b"12", b"done"]
    assert json.loads(out[ERROR])["status"] == "Success"


def test_exec_with_tty_and_resize(daemon: Daemon) -> None:
    """The forked shell sees the size the client sent, and runs in a one-thread parent."""
    url = exec_url(daemon, ["sh"], stdin=True, tty=True)
    with connect(url, subprotocols=["v5.channel.k8s.io"]) as ws:
        ws.send(bytes([RESIZE]) + json.dumps({"Width": 123, "Height": 45}).encode())
        seen = b""
        deadline = time.monotonic() + 15
        while b"45 123" not in seen and time.monotonic() < deadline:
            ws.send(bytes([STDIN]) + b"stty size\n")
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                try:
                    msg = ws.recv(timeout=end - time.monotonic())
                except TimeoutError:
                    break
                if msg[0] == STDOUT:
                    seen += msg[1:]
        assert b"45 123" in seen
        ws.send(bytes([STDIN]) + b"grep Threads /proc/$PPID/status; exit 7\n")
        out = collect(ws)
    assert b"Threads:\t1" in out[STDOUT], "the process was not forked by a one-thread spawner"
    assert STDERR not in out  # a terminal merges stderr
    assert json.loads(out[ERROR])["details"]["causes"][0]["message"] == "7"


def test_exec_base64_protocol(daemon: Daemon) -> None:
    url = exec_url(daemon, ["sh", "-c", "printf '\\001\\377'"])
    with connect(url, subprotocols=["v4.base64.channel.k8s.io"]) as ws:
        got = b""
        try:
            while True:
                msg = ws.recv(timeout=10)
                assert isinstance(msg, str)
                if msg[0] == "1":
                    got += base64.b64decode(msg[1:])
        except ConnectionClosed:
            pass
    assert got == b"\x01\xff"


def test_exec_v1_protocol_reports_exit_as_text(daemon: Daemon) -> None:
    with connect(exec_url(daemon, ["sh", "-c", "exit 2"]), subprotocols=["channel.k8s.io"]) as ws:
        out = collect(ws)
    assert b"exit code 2" in out[ERROR]


def test_exec_of_missing_binary_reports_failure(daemon: Daemon) -> None:
    with connect(exec_url(daemon, ["/no/such/binary"]), subprotocols=["v4.channel.k8s.io"]) as ws:
        out = collect(ws)
    assert json.loads(out[ERROR])["details"]["causes"][0]["message"] == "127"


def test_attach_echoes_through_the_backend(daemon: Daemon) -> None:
    url = daemon.runtime.Attach(pb.AttachRequest(container_id="local", stdin=True,
                                                 stdout=True)).url
    assert "/attach/" in url
    with connect(url, subprotocols=["v5.channel.k8s.io"]) as ws:
        ws.send(bytes([STDIN]) + b"ping")
        ws.send(bytes([255, STDIN]))
        out = collect(ws)
    assert out[STDOUT] == b"ping"


def test_urls_are_one_shot(daemon: Daemon) -> None:
    url = exec_url(daemon, ["true"])
    with connect(url, subprotocols=["v4.channel.k8s.io"]) as ws:
        collect(ws)
    with pytest.raises(InvalidStatus) as info:
        connect(url, subprotocols=["v4.channel.k8s.io"])
    assert info.value.response.status_code == 404


def test_unknown_token_and_non_websocket_requests_are_refused(daemon: Daemon) -> None:
    base = exec_url(daemon, ["true"]).rsplit("/", 2)[0]
    for path, want in (("/exec/nosuchtoken", 404), ("/nothing/here", 404)):
        with pytest.raises(HTTPError) as info:
            urllib.request.urlopen(base + path, timeout=10)
        assert info.value.code == want
    with pytest.raises(HTTPError) as info:
        urllib.request.urlopen(exec_url(daemon, ["true"]), timeout=10)
    assert info.value.code == 400


def test_unsupported_subprotocol_is_refused(daemon: Daemon) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(exec_url(daemon, ["true"]), subprotocols=["v9.channel.k8s.io"])
    assert info.value.response.status_code == 400


def test_garbage_on_stream_port_leaves_server_working(daemon: Daemon) -> None:
    url = exec_url(daemon, ["echo", "still here"])
    host, port = url.split("/")[2].split(":")
    for junk in (b"\x00" * 100, b"GET /exec/x HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 5000, b""):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            try:
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                s.recv(1024)
            except OSError:
                pass
    with connect(url, subprotocols=["v4.channel.k8s.io"]) as ws:
        assert collect(ws)[STDOUT] == b"still here\n"


def test_port_forward_copies_both_ways(daemon: Daemon) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data.upper())

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    url = daemon.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id="local-pod",
                                                           port=[port])).url
    with connect(url, subprotocols=["portforward.k8s.io"]) as ws:
        prefix = port.to_bytes(2, "little")
        first = {ws.recv(timeout=10), ws.recv(timeout=10)}
        assert first == {bytes([0]) + prefix, bytes([1]) + prefix}
        ws.send(bytes([0]) + b"hello")
        got = b""
        while len(got) < 5:
            msg = ws.recv(timeout=10)
            if msg[0] == 0:
                got += msg[1:]
        assert got == b"HELLO"
    server.close()
