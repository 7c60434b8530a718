"""SPDY/3.1 as kubelet's remotecommand uses it: the sans-I/O codec byte by byte, then a
real client (Debian's moby/spdystream, in Go) doing exec through a running daemon."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2 as pb

from pallet.cri.streaming import spdy
from tests.cri.conftest import Daemon

CLIENT_SRC = Path(__file__).parent / "spdy_client"
GOPATH_SYSTEM = "/usr/share/gocode"


def test_dictionary_is_spdy3s() -> None:
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"utf-,*,enq=0.")
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2  # the DICTID both ends check


def test_syn_stream_round_trip_with_shared_compression() -> None:
    client, server = spdy.Connection(), spdy.Connection()
    frames = client.syn_stream(1, {"streamtype": "error"}) + \
        client.syn_stream(3, {"StreamType": "stdin", "x": ["a", "b"]}, priority=2)
    # Byte by byte: the second header block only inflates with the first one's context.
    events = []
    for i in range(len(frames)):
        events += server.feed(frames[i:i + 1])
    assert events == [spdy.SynStream(1, {"streamtype": ["error"]}),
                      spdy.SynStream(3, {"streamtype": ["stdin"], "x": ["a", "b"]}, priority=2)]


def test_control_frame_layout() -> None:
    assert spdy.ping(7) == bytes.fromhex("80030006000000040000000 7".replace(" ", ""))
    assert spdy.goaway(5, 1) == bytes.fromhex("80030007000000080000000500000001")
    assert spdy.rst_stream(3, 5) == bytes.fromhex("80030003000000080000000300000005")
    assert spdy.window_update(1, 100) == bytes.fromhex("80030009000000080000000100000064")
    assert spdy.data_frame(3, b"hi", fin=True) == bytes.fromhex("00000003010000026869")


def test_parse_data_and_control_frames() -> None:
    c = spdy.Connection()
    settings = spdy.control_frame(spdy.FrameType.SETTINGS, 0,
                                  struct.pack("!III", 1, (0 << 24) | 7, 65536))
    unknown = spdy.control_frame(99, 0, b"ignored")
    data = (spdy.data_frame(5, b"abc") + spdy.data_frame(5, b"", fin=True) + spdy.ping(9)
            + settings + unknown + spdy.window_update(5, 10) + spdy.rst_stream(5, 5)
            + spdy.goaway(5))
    assert c.feed(data) == [spdy.Data(5, b"abc"), spdy.Data(5, b"", fin=True), spdy.Ping(9),
                            spdy.Settings({7: 65536}), spdy.WindowUpdate(5, 10),
                            spdy.RstStream(5, 5), spdy.GoAway(5, 0)]


def test_syn_reply_decodes_on_the_client() -> None:
    server, client = spdy.Connection(), spdy.Connection()
    assert client.feed(server.syn_reply(1)) == [spdy.SynReply(1, {})]
    assert client.feed(server.syn_reply(3, {"a": "b"}, fin=True)) == \
        [spdy.SynReply(3, {"a": ["b"]}, fin=True)]


@pytest.mark.parametrize("frame,match", [
    (struct.pack("!HHI", 0x8002, 1, 0), "version 2"),
    (spdy.control_frame(spdy.FrameType.PING, 0, b"\x00"), "too short"),
    (spdy.control_frame(spdy.FrameType.SYN_STREAM, 0, b"\x00" * 10 + b"not zlib"), "decompress"),
    (struct.pack("!II", 1, 0xFFFFFF), "limit"),
])
def test_protocol_errors(frame: bytes, match: str) -> None:
    with pytest.raises(spdy.SpdyError, match=match):
        spdy.Connection(max_frame=1 << 20).feed(frame)


def test_header_block_bomb_is_refused() -> None:
    deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
    block = spdy.encode_header_block({"x": "a" * (1 << 20)})
    body = b"\x00" * 10 + deflate.compress(block) + deflate.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(spdy.SpdyError, match="over"):
        spdy.Connection().feed(spdy.control_frame(spdy.FrameType.SYN_STREAM, 0, body))


# -- a real SPDY client through the daemon -------------------------------------------------

def _go_build(tmp_path_factory: pytest.TempPathFactory, src: Path, name: str) -> str:
    """Build a Go test client offline against Debian's packaged spdystream."""
    if not shutil.which("go") or not os.path.isdir(f"{GOPATH_SYSTEM}/src/github.com/moby/spdystream"):
        pytest.skip("needs Debian's golang-go and golang-github-docker-spdystream-dev")
    out = tmp_path_factory.mktemp(name) / name
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{out.parent}:{GOPATH_SYSTEM}",
           "GOCACHE": str(out.parent / "cache"), "GOFLAGS": ""}
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=src, env=env, check=True,
                   capture_output=True, timeout=300)
    return str(out)


@pytest.fixture(scope="module")
def spdy_client(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _go_build(tmp_path_factory, CLIENT_SRC, "spdy_client")


def run_client(client: str, url: str, stdin: str, size: str = "") -> dict:
    proc = subprocess.run([client, url, stdin, *([size] if size else [])], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_spdy_exec_with_stdin_stderr_and_exit_code(daemon: Daemon, spdy_client: str) -> None:
    url = daemon.runtime.Exec(pb.ExecRequest(
        container_id="local", cmd=["sh", "-c", "cat; echo err >&2; exit 4"], stdin=True,
        stdout=True, stderr=True)).url
    out = run_client(spdy_client, url, "hello spdy\n")
    assert out["stdout"] == "hello spdy\n"
    assert out["stderr"] == "err\n"
    status = json.loads(out["status"])
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"][0]["message"] == "4"
    assert "[sh -c cat; echo err >&2; exit 4]" in status["message"]


def test_spdy_exec_with_tty_and_resize(daemon: Daemon, spdy_client: str) -> None:
    url = daemon.runtime.Exec(pb.ExecRequest(container_id="local", cmd=["sh", "-c", "sleep 0.5; stty size"],
                                             stdin=True, stdout=True, tty=True)).url
    out = run_client(spdy_client, url, "", "99x33")
    assert out["stdout"].strip() == "33 99"
    assert json.loads(out["status"]) == {"metadata": {}, "status": "Success"}


def test_spdy_without_a_known_protocol_version_is_refused(daemon: Daemon) -> None:
    import socket

    url = daemon.runtime.Exec(pb.ExecRequest(container_id="local", cmd=["true"],
                                             stdout=True)).url
    host, _, path = url.removeprefix("http://").partition("/")
    h, p = host.split(":")
    with socket.create_connection((h, int(p)), timeout=10) as s:
        s.sendall(f"POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
                  f"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: channel.k8s.io\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.1 403")


@pytest.fixture(scope="module")
def spdy_port_forward(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _go_build(tmp_path_factory, CLIENT_SRC.parent / "spdy_portforward", "spdy_portforward")


def test_spdy_port_forward_reaches_the_port(daemon: Daemon, spdy_port_forward: str) -> None:
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def upper_echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data.upper())

    t = threading.Thread(target=upper_echo, daemon=True)
    t.start()
    url = daemon.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id="local-pod",
                                                           port=[port])).url
    proc = subprocess.run([spdy_port_forward, url, str(port), "hello over spdy"],
                          capture_output=True, text=True, timeout=60)
    server.close()
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {"data": "HELLO OVER SPDY", "error": ""}


def test_spdy_port_forward_to_a_closed_port_reports_on_the_error_stream(
        daemon: Daemon, spdy_port_forward: str) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    url = daemon.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id="local-pod",
                                                           port=[port])).url
    proc = subprocess.run([spdy_port_forward, url, str(port), "x"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["data"] == "" and out["error"]
