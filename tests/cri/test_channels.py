"""The Kubernetes channel protocols, byte by byte: binary and base64 framing, v4 status
JSON, v5 CLOSE signals, resize messages and port-forward prefixes."""

from __future__ import annotations

import json

import pytest

from pallet.cri.streaming import channels as ch
from pallet.cri.streaming.websocket import Message, Opcode


def test_binary_protocol_prefixes_the_channel_byte() -> None:
    c = ch.ChannelCodec("v4.channel.k8s.io")
    assert c.encode(ch.STDOUT, b"hi") == (Opcode.BINARY, b"\x01hi")
    assert c.decode(Message(b"\x00typed")) == ch.Data(ch.STDIN, b"typed")
    assert c.decode(Message(b"")) is None


def test_base64_protocol_uses_a_digit_and_base64() -> None:
    c = ch.ChannelCodec("v4.base64.channel.k8s.io")
    assert c.encode(ch.STDERR, b"\x00\xff") == (Opcode.TEXT, b"2AP8=")
    assert c.decode(Message(b"0aGk=", binary=False)) == ch.Data(ch.STDIN, b"hi")
    with pytest.raises(ch.ChannelError):
        c.decode(Message(b"0!!!", binary=False))
    with pytest.raises(ch.ChannelError):
        c.decode(Message(b"0aGk="))  # binary frame on a text protocol


def test_v5_close_signal_and_older_versions_without_it() -> None:
    v5 = ch.ChannelCodec("v5.channel.k8s.io")
    assert v5.decode(Message(bytes([255, 0]))) == ch.CloseChannel(ch.STDIN)
    with pytest.raises(ch.ChannelError):
        v5.decode(Message(bytes([255])))
    with pytest.raises(ch.ChannelError):  # 255 is just an unknown channel before v5
        ch.ChannelCodec("v4.channel.k8s.io").decode(Message(bytes([255, 0])))


def test_unknown_channel_is_an_error() -> None:
    with pytest.raises(ch.ChannelError):
        ch.ChannelCodec("v4.channel.k8s.io").decode(Message(b"\x07x"))


def test_exit_status_v4_json_and_v1_text() -> None:
    v4 = ch.ChannelCodec("v4.channel.k8s.io")
    assert json.loads(v4.exit_status(0)) == {"metadata": {}, "status": "Success"}
    failed = json.loads(v4.exit_status(5, cmd=["false"]))
    assert failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "5"}]
    err = json.loads(v4.exit_status(None, "container gone"))
    assert err["status"] == "Failure" and err["message"] == "container gone"
    v1 = ch.ChannelCodec("channel.k8s.io")
    assert v1.exit_status(0) == b""
    assert b"exit code 5" in v1.exit_status(5)
    assert v1.exit_status(None, "boom") == b"boom"


def test_resize_parsing() -> None:
    assert ch.parse_resize(b'{"Width": 80, "Height": 24}') == ch.TerminalSize(80, 24)
    size = ch.TerminalSize(200, 50)
    assert ch.parse_resize(ch.encode_resize(size)) == size
    for bad in (b"80x24", b'{"Width": -1, "Height": 2}', b'{"Width": 1e9, "Height": 2}',
                b'{"Width": 70000, "Height": 2}', b"[]"):
        with pytest.raises(ch.ChannelError):
            ch.parse_resize(bad)


def test_portforward_prefix_is_little_endian_port() -> None:
    assert ch.portforward_port_prefix(8080) == b"\x90\x1f"
