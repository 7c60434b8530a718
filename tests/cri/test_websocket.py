"""The sans-I/O WebSocket codec, byte by byte: RFC 6455 examples, fragmentation, control
frames, masking rules, size limits, and the opening handshake."""

from __future__ import annotations

import pytest

from pallet.cri.streaming import websocket as ws

MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def test_rfc6455_single_frame_unmasked_and_masked_hello() -> None:
    # RFC 6455 §5.7 examples, verbatim.
    assert ws.encode_frame(ws.Opcode.TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    masked = bytes.fromhex("818537fa213d7f9f4d5158")
    assert ws.encode_frame(ws.Opcode.TEXT, b"Hello", mask=MASK) == masked
    assert ws.FrameDecoder(masked=True).feed(masked) == [ws.Message(b"Hello", binary=False)]
    assert ws.FrameDecoder(masked=False).feed(bytes.fromhex("810548656c6c6f")) == \
        [ws.Message(b"Hello", binary=False)]


def test_rfc6455_fragmented_text() -> None:
    d = ws.FrameDecoder(masked=False)
    assert d.feed(bytes.fromhex("010348656c")) == []
    assert d.feed(bytes.fromhex("80026c6f")) == [ws.Message(b"Hello", binary=False)]


def test_rfc6455_ping_pong_between_fragments() -> None:
    d = ws.FrameDecoder(masked=True)
    frames = (ws.encode_frame(ws.Opcode.BINARY, b"ab", fin=False, mask=MASK)
              + ws.encode_frame(ws.Opcode.PING, b"hi", mask=MASK)
              + ws.encode_frame(ws.Opcode.CONTINUATION, b"cd", mask=MASK))
    assert d.feed(frames) == [ws.Ping(b"hi"), ws.Message(b"abcd")]


def test_byte_at_a_time_gives_the_same_events() -> None:
    data = (ws.encode_frame(ws.Opcode.BINARY, bytes(range(200)), mask=MASK)
            + ws.encode_frame(ws.Opcode.BINARY, b"x" * 70000, mask=MASK)
            + ws.encode_close(1000, "bye", mask=MASK))
    d = ws.FrameDecoder()
    events = []
    for i in range(len(data)):
        events += d.feed(data[i:i + 1])
    assert events == [ws.Message(bytes(range(200))), ws.Message(b"x" * 70000),
                      ws.Close(1000, "bye")]


@pytest.mark.parametrize("n,header", [(125, "827d"), (126, "827e007e"), (65535, "827effff"),
                                      (65536, "827f0000000000010000")])
def test_length_encodings(n: int, header: str) -> None:
    frame = ws.encode_frame(ws.Opcode.BINARY, b"\0" * n)
    assert frame[:len(header) // 2] == bytes.fromhex(header)
    assert ws.FrameDecoder(masked=False).feed(frame) == [ws.Message(b"\0" * n)]


def test_close_frames() -> None:
    d = ws.FrameDecoder()
    assert d.feed(ws.encode_frame(ws.Opcode.CLOSE, b"", mask=MASK)) == [ws.Close()]
    assert d.closed
    assert d.feed(ws.encode_frame(ws.Opcode.BINARY, b"late", mask=MASK)) == []  # after Close
    assert ws.encode_close(1000, "") == bytes.fromhex("880203e8")


@pytest.mark.parametrize("frame,code", [
    (bytes.fromhex("8100"), ws.CloseCode.PROTOCOL_ERROR),  # unmasked from a client
    (bytes.fromhex("c180") + MASK, ws.CloseCode.PROTOCOL_ERROR),  # RSV1 without extension
    (bytes.fromhex("8380") + MASK, ws.CloseCode.PROTOCOL_ERROR),  # reserved opcode 3
    (bytes.fromhex("0980") + MASK, ws.CloseCode.PROTOCOL_ERROR),  # fragmented ping
    (bytes.fromhex("89fe007e") + MASK + b"\0" * 126, ws.CloseCode.PROTOCOL_ERROR),  # big ping
    (bytes.fromhex("8080") + MASK, ws.CloseCode.PROTOCOL_ERROR),  # continuation of nothing
    (bytes.fromhex("88ff8000000000000000") + MASK, ws.CloseCode.PROTOCOL_ERROR),  # top bit
    (ws.encode_frame(ws.Opcode.CLOSE, b"\x03", mask=MASK), ws.CloseCode.PROTOCOL_ERROR),
    (ws.encode_frame(ws.Opcode.CLOSE, b"\x03\xed", mask=MASK), ws.CloseCode.PROTOCOL_ERROR),
    (ws.encode_frame(ws.Opcode.TEXT, b"\xff\xfe", mask=MASK), ws.CloseCode.INVALID_DATA),
])
def test_protocol_errors_carry_their_close_code(frame: bytes, code: int) -> None:
    with pytest.raises(ws.ProtocolError) as info:
        ws.FrameDecoder().feed(frame)
    assert info.value.code == code


def test_new_message_inside_a_fragmented_one_is_an_error() -> None:
    d = ws.FrameDecoder()
    d.feed(ws.encode_frame(ws.Opcode.BINARY, b"a", fin=False, mask=MASK))
    with pytest.raises(ws.ProtocolError):
        d.feed(ws.encode_frame(ws.Opcode.BINARY, b"b", mask=MASK))


def test_message_size_limit_counts_fragments() -> None:
    d = ws.FrameDecoder(max_message=10)
    d.feed(ws.encode_frame(ws.Opcode.BINARY, b"a" * 8, fin=False, mask=MASK))
    with pytest.raises(ws.ProtocolError) as info:
        d.feed(ws.encode_frame(ws.Opcode.CONTINUATION, b"a" * 8, mask=MASK)[:4])
    assert info.value.code == ws.CloseCode.TOO_BIG


def test_handshake_rfc_example_and_protocol_choice() -> None:
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    _, headers = ws.client_handshake_headers("dGhlIHNhbXBsZSBub25jZQ==",
                                             ["v9.channel.k8s.io", "v4.channel.k8s.io",
                                              "v5.channel.k8s.io"])
    hs = ws.server_handshake("GET", headers, ["v5.channel.k8s.io", "v4.channel.k8s.io"])
    assert hs.protocol == "v4.channel.k8s.io"  # the client's order wins
    assert ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") in hs.response_headers
    assert ("Sec-WebSocket-Protocol", "v4.channel.k8s.io") in hs.response_headers


def test_handshake_without_protocol_gets_the_default_and_no_header() -> None:
    _, headers = ws.client_handshake_headers()
    hs = ws.server_handshake("GET", headers, ["x"], default="channel.k8s.io")
    assert hs.protocol == "channel.k8s.io"
    assert not any(k == "Sec-WebSocket-Protocol" for k, _ in hs.response_headers)


def test_handshake_accepts_bytes_headers_and_token_lists() -> None:
    headers = [(b"connection", b"keep-alive, Upgrade"), (b"upgrade", b"WebSocket"),
               (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
               (b"sec-websocket-version", b"13")]
    assert ws.server_handshake("GET", headers, ["a"], default="a").protocol == "a"


@pytest.mark.parametrize("change,status", [
    (lambda h: [x for x in h if x[0] != "Upgrade"], 400),
    (lambda h: [x if x[0] != "Sec-WebSocket-Version" else (x[0], "8") for x in h], 426),
    (lambda h: [x if x[0] != "Sec-WebSocket-Key" else (x[0], "short") for x in h], 400),
    (lambda h: h + [("Sec-WebSocket-Protocol", "nope")], 400),
])
def test_handshake_errors(change, status: int) -> None:
    _, headers = ws.client_handshake_headers()
    with pytest.raises(ws.HandshakeError) as info:
        ws.server_handshake("GET", change(headers), ["v4.channel.k8s.io"])
    assert info.value.status == status
    with pytest.raises(ws.HandshakeError) as info:
        ws.server_handshake("POST", headers, ["v4.channel.k8s.io"])
    assert info.value.status == 405
