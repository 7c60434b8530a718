"""Sans-I/O SPDY/3.1 framing, as kubectl/kubelet's remotecommand and portforward use it
(through the API server's stream translator): bytes in, frame events out, frames encoded.

Header blocks are zlib-compressed with SPDY/3's fixed dictionary, one compression
context per direction for the whole connection, each block ended by a sync flush.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

VERSION = 3
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
MAX_FRAME = 16 << 20  # far above what remotecommand sends; keeps one frame from eating memory
MAX_HEADER_BLOCK = 256 << 10  # decompressed; stops a zlib bomb in a header block

# The SPDY/3 header compression dictionary (draft 3 §2.6.10.1): length-prefixed words,
# then a run of common header values. Both ends must seed zlib with exactly these bytes.
_DICT_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding "
    "accept-language accept-ranges age allow authorization cache-control connection "
    "content-base content-encoding content-language content-length content-location "
    "content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning "
    "www-authenticate method get status"
).split() + ["200 OK"] + "version HTTP/1.1 url public set-cookie keep-alive origin".split()
_DICT_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
    "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack("!I", len(w)) + w.encode() for w in _DICT_WORDS) \
    + _DICT_TAIL.encode()


class FrameType(IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    CANCEL = 5
    INTERNAL_ERROR = 6
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9


class GoAwayStatus(IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


Headers = dict[str, list[str]]


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers
    fin: bool = False
    associated_id: int = 0
    priority: int = 0


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    values: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = 0


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool = False


Event = SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway | \
    WindowUpdate | Data


class SpdyError(Exception):
    """The peer broke SPDY/3.1: the connection ends with GOAWAY(PROTOCOL_ERROR)."""


class Connection:
    """One SPDY connection's codec state: the buffer and both zlib contexts."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self.max_frame = max_frame
        self._buf = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zdict=DICTIONARY)

    # -- reading -----------------------------------------------------------------
    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        events = []
        while (ev := self._next()) is not None:
            if ev is not _SKIP:
                events.append(ev)
        return events  # type: ignore[return-value]

    def _next(self) -> Event | object | None:
        buf = self._buf
        if len(buf) < 8:
            return None
        word, flags_len = struct.unpack_from("!II", buf)
        flags, length = flags_len >> 24, flags_len & 0xFFFFFF
        if length > self.max_frame:
            raise SpdyError(f"frame of {length} bytes is over the {self.max_frame} limit")
        if len(buf) < 8 + length:
            return None
        payload = bytes(buf[8:8 + length])
        del buf[:8 + length]
        if not word & 0x80000000:
            return Data(word & 0x7FFFFFFF, payload, bool(flags & FLAG_FIN))
        version, ftype = (word >> 16) & 0x7FFF, word & 0xFFFF
        if version != VERSION:
            raise SpdyError(f"SPDY version {version}; only 3 is spoken here")
        return self._control(ftype, flags, payload)

    def _control(self, ftype: int, flags: int, p: bytes) -> Event | object:
        fin = bool(flags & FLAG_FIN)
        try:
            if ftype == FrameType.SYN_STREAM:
                sid, assoc = struct.unpack_from("!II", p)
                return SynStream(sid & 0x7FFFFFFF, self._headers(p[10:]), fin,
                                 assoc & 0x7FFFFFFF, p[8] >> 5)
            if ftype == FrameType.SYN_REPLY:
                return SynReply(struct.unpack_from("!I", p)[0] & 0x7FFFFFFF,
                                self._headers(p[4:]), fin)
            if ftype == FrameType.HEADERS:
                return HeadersFrame(struct.unpack_from("!I", p)[0] & 0x7FFFFFFF,
                                    self._headers(p[4:]), fin)
            if ftype == FrameType.RST_STREAM:
                sid, status = struct.unpack_from("!II", p)
                return RstStream(sid & 0x7FFFFFFF, status)
            if ftype == FrameType.SETTINGS:
                (n,) = struct.unpack_from("!I", p)
                values = {}
                for i in range(n):
                    idflags, value = struct.unpack_from("!II", p, 4 + 8 * i)
                    values[idflags & 0xFFFFFF] = value
                return Settings(values)
            if ftype == FrameType.PING:
                return Ping(struct.unpack_from("!I", p)[0])
            if ftype == FrameType.GOAWAY:
                last, status = struct.unpack_from("!II", p) if len(p) >= 8 else (
                    struct.unpack_from("!I", p)[0], 0)
                return GoAway(last & 0x7FFFFFFF, status)
            if ftype == FrameType.WINDOW_UPDATE:
                sid, delta = struct.unpack_from("!II", p)
                return WindowUpdate(sid & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        except struct.error:
            raise SpdyError(f"control frame type {ftype} is too short") from None
        return _SKIP  # unknown control frames are ignored (draft 3 §2.2.1)

    def _headers(self, block: bytes) -> Headers:
        try:
            raw = self._inflate.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as e:
            raise SpdyError(f"header block does not decompress: {e}") from None
        if self._inflate.unconsumed_tail:
            raise SpdyError(f"header block is over {MAX_HEADER_BLOCK} bytes")
        return decode_header_block(raw)

    # -- writing -----------------------------------------------------------------
    def _compress(self, headers: Mapping[str, str | Sequence[str]]) -> bytes:
        block = encode_header_block(headers)
        return self._deflate.compress(block) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def syn_stream(self, stream_id: int, headers: Mapping[str, str | Sequence[str]],
                   fin: bool = False, associated_id: int = 0, priority: int = 0) -> bytes:
        body = struct.pack("!IIBB", stream_id, associated_id, priority << 5, 0) \
            + self._compress(headers)
        return control_frame(FrameType.SYN_STREAM, FLAG_FIN if fin else 0, body)

    def syn_reply(self, stream_id: int, headers: Mapping[str, str | Sequence[str]] | None = None,
                  fin: bool = False) -> bytes:
        body = struct.pack("!I", stream_id) + self._compress(headers or {})
        return control_frame(FrameType.SYN_REPLY, FLAG_FIN if fin else 0, body)


_SKIP = object()


def control_frame(ftype: int, flags: int, body: bytes) -> bytes:
    return struct.pack("!HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(body)) + body


def data_frame(stream_id: int, data: bytes, fin: bool = False) -> bytes:
    return struct.pack("!II", stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) \
        + data


def rst_stream(stream_id: int, status: int) -> bytes:
    return control_frame(FrameType.RST_STREAM, 0, struct.pack("!II", stream_id, status))


def ping(ping_id: int) -> bytes:
    return control_frame(FrameType.PING, 0, struct.pack("!I", ping_id))


def goaway(last_good_stream_id: int, status: int = GoAwayStatus.OK) -> bytes:
    return control_frame(FrameType.GOAWAY, 0, struct.pack("!II", last_good_stream_id, status))


def window_update(stream_id: int, delta: int) -> bytes:
    return control_frame(FrameType.WINDOW_UPDATE, 0, struct.pack("!II", stream_id, delta))


def encode_header_block(headers: Mapping[str, str | Sequence[str]]) -> bytes:
    """Names lowercased; several values of one name are joined by NUL (draft 3 §2.6.10)."""
    out = [struct.pack("!I", len(headers))]
    for name, value in headers.items():
        values = [value] if isinstance(value, str) else list(value)
        n, v = name.lower().encode(), "\0".join(values).encode()
        out += [struct.pack("!I", len(n)), n, struct.pack("!I", len(v)), v]
    return b"".join(out)


def decode_header_block(raw: bytes) -> Headers:
    try:
        (count,) = struct.unpack_from("!I", raw)
        pos, out = 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from("!I", raw, pos)
            name = raw[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
            (v,) = struct.unpack_from("!I", raw, pos)
            value = raw[pos + 4:pos + 4 + v].decode()
            pos += 4 + v
            if pos > len(raw):
                raise SpdyError("header block ends inside a name or value")
            out.setdefault(name.lower(), []).extend(value.split("\0"))
        return out
    except (struct.error, UnicodeDecodeError):
        raise SpdyError("malformed header block") from None
