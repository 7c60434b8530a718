"""Sans-I/O WebSocket (RFC 6455): the server's opening handshake and the frame codec.

Pure: `server_handshake` turns request headers into the 101 response, `FrameDecoder.feed`
turns bytes into events, `encode_frame` turns a message into bytes. No sockets here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 16 << 20  # a stdin message bigger than this is abuse, not typing


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never sent: stands for "the close frame had no code"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011


# -- events -------------------------------------------------------------------

@dataclass(frozen=True)
class Message:
    """A complete (reassembled) data message."""

    data: bytes
    binary: bool = True

    @property
    def text(self) -> str:
        return self.data.decode()


@dataclass(frozen=True)
class Ping:
    data: bytes = b""


@dataclass(frozen=True)
class Pong:
    data: bytes = b""


@dataclass(frozen=True)
class Close:
    code: int = CloseCode.NO_STATUS
    reason: str = ""


Event = Message | Ping | Pong | Close


class ProtocolError(Exception):
    """The peer broke RFC 6455; `code` is what to close the connection with."""

    def __init__(self, message: str, code: int = CloseCode.PROTOCOL_ERROR):
        super().__init__(message)
        self.code = code


# -- handshake ----------------------------------------------------------------

class HandshakeError(Exception):
    """Not a WebSocket upgrade we accept; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.status = status
        self.headers = list(headers)


@dataclass(frozen=True)
class Handshake:
    protocol: str  # the negotiated subprotocol, "" if the client offered none
    response_headers: list[tuple[str, str]] = field(default_factory=list)


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def header_values(headers: Iterable[tuple[str | bytes, str | bytes]], name: str) -> list[str]:
    """All values of a header, comma-split and stripped (names compare case-insensitively)."""
    out = []
    for k, v in headers:
        k = k.decode("latin-1") if isinstance(k, bytes) else k
        if k.lower() == name:
            v = v.decode("latin-1") if isinstance(v, bytes) else v
            out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def is_upgrade(headers: Iterable[tuple[str | bytes, str | bytes]], protocol: str) -> bool:
    hs = list(headers)
    return (any(v.lower() == "upgrade" for v in header_values(hs, "connection"))
            and any(v.lower() == protocol.lower() for v in header_values(hs, "upgrade")))


def server_handshake(method: str, headers: Iterable[tuple[str | bytes, str | bytes]],
                     supported: Sequence[str], default: str = "") -> Handshake:
    """Validate a client's opening handshake and pick a subprotocol (client's order wins).

    A client that offers no subprotocol gets `default` (kubelet's streaming library treats
    that as channel.k8s.io) and no Sec-WebSocket-Protocol header back.
    """
    hs = list(headers)
    if method.upper() != "GET":
        raise HandshakeError(405, "a WebSocket upgrade must be a GET request")
    if not is_upgrade(hs, "websocket"):
        raise HandshakeError(400, "expected 'Connection: Upgrade' and 'Upgrade: websocket'")
    if "13" not in header_values(hs, "sec-websocket-version"):
        raise HandshakeError(426, "only WebSocket version 13 is supported",
                             [("Sec-WebSocket-Version", "13")])
    keys = header_values(hs, "sec-websocket-key")
    try:
        if len(keys) != 1 or len(base64.b64decode(keys[0], validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise HandshakeError(400, "Sec-WebSocket-Key must be 16 bytes in base64") from None
    offered = header_values(hs, "sec-websocket-protocol")
    response = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", accept_key(keys[0]))]
    if not offered:
        return Handshake(default, response)
    for p in offered:
        if p in supported:
            return Handshake(p, response + [("Sec-WebSocket-Protocol", p)])
    raise HandshakeError(400, f"none of the requested subprotocols ({', '.join(offered)}) is "
                              f"supported; supported: {', '.join(supported)}")


def client_handshake_headers(key: str | None = None,
                             protocols: Sequence[str] = ()) -> tuple[str, list[tuple[str, str]]]:
    """(key, headers) a client sends; tests use it to drive the server byte by byte."""
    key = key or base64.b64encode(os.urandom(16)).decode()
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    if protocols:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(protocols)))
    return key, headers


# -- frames -------------------------------------------------------------------

def apply_mask(data: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key, done on one big int (fast in pure Python)."""
    n = len(data)
    if not n:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True,
                 mask: bytes | None = None) -> bytes:
    """One frame. Servers send unmasked frames; clients must pass a 4-byte `mask`."""
    b0 = (0x80 if fin else 0) | int(opcode)
    n = len(payload)
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask is not None:
        if len(mask) != 4:
            raise ValueError("a WebSocket mask is 4 bytes")
        return head + mask + apply_mask(payload, mask)
    return head + payload


def encode_close(code: int = CloseCode.NORMAL, reason: str = "",
                 mask: bytes | None = None) -> bytes:
    payload = struct.pack("!H", code) + reason.encode()[:123]
    return encode_frame(Opcode.CLOSE, payload, mask=mask)


def _valid_close_code(code: int) -> bool:
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) \
        or 3000 <= code <= 4999


class FrameDecoder:
    """Bytes in, events out. `masked=True` for a server reading a client (RFC: must be)."""

    def __init__(self, *, masked: bool = True, max_message: int = MAX_MESSAGE):
        self.masked = masked
        self.max_message = max_message
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_op: int | None = None
        self._fragment_size = 0
        self.closed = False  # a Close was received: later bytes are ignored

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        events: list[Event] = []
        while not self.closed:
            ev = self._next()
            if ev is None:
                break
            if ev is not _NOTHING:
                events.append(ev)  # type: ignore[arg-type]
        return events

    def _next(self) -> Event | object | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        fin, rsv, opcode = b0 & 0x80, b0 & 0x70, b0 & 0x0F
        masked, n = b1 & 0x80, b1 & 0x7F
        if rsv:
            raise ProtocolError("reserved bits set without a negotiated extension")
        if opcode not in Opcode.__members__.values():
            raise ProtocolError(f"unknown opcode {opcode:#x}")
        if bool(masked) != self.masked:
            raise ProtocolError("client frames must be masked" if self.masked
                                else "server frames must not be masked")
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            n = struct.unpack_from("!H", buf, 2)[0]
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n = struct.unpack_from("!Q", buf, 2)[0]
            if n >> 63:
                raise ProtocolError("64-bit payload length with the top bit set")
            pos = 10
        control = opcode >= 0x8
        if control and (n > 125 or not fin):
            raise ProtocolError("control frames must be unfragmented and at most 125 bytes")
        if not control and self._fragment_size + n > self.max_message:
            raise ProtocolError(f"message larger than {self.max_message} bytes", CloseCode.TOO_BIG)
        key = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            key = bytes(buf[pos:pos + 4])
            pos += 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos:pos + n])
        del buf[:pos + n]
        if masked:
            payload = apply_mask(payload, key)
        return self._frame(bool(fin), opcode, payload)

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> Event | object:
        if opcode == Opcode.PING:
            return Ping(payload)
        if opcode == Opcode.PONG:
            return Pong(payload)
        if opcode == Opcode.CLOSE:
            self.closed = True
            return _parse_close(payload)
        if opcode == Opcode.CONTINUATION:
            if self._fragment_op is None:
                raise ProtocolError("continuation frame without a message to continue")
        elif self._fragment_op is not None:
            raise ProtocolError("new message started before the fragmented one ended")
        else:
            self._fragment_op = opcode
        self._fragments.append(payload)
        self._fragment_size += len(payload)
        if not fin:
            return _NOTHING
        data = b"".join(self._fragments)
        binary = self._fragment_op == Opcode.BINARY
        self._fragments, self._fragment_op, self._fragment_size = [], None, 0
        if not binary:
            try:
                data.decode()
            except UnicodeDecodeError:
                raise ProtocolError("text message is not UTF-8", CloseCode.INVALID_DATA) from None
        return Message(data, binary)


_NOTHING = object()  # a frame that completes no event (a fragment)


def _parse_close(payload: bytes) -> Close:
    if not payload:
        return Close()
    if len(payload) == 1:
        raise ProtocolError("close frame with a 1-byte payload")
    code = struct.unpack_from("!H", payload)[0]
    if not _valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolError("close reason is not UTF-8", CloseCode.INVALID_DATA) from None
    return Close(code, reason)
