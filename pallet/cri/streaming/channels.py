"""Sans-I/O Kubernetes channel protocols over WebSocket: remotecommand (exec/attach) and
portforward. WebSocket messages in, (channel, data) events out, and the reverse.

remotecommand channels: 0 stdin, 1 stdout, 2 stderr, 3 error (status), 4 resize.
Binary protocols prefix each message with the channel byte; base64 ones with the channel
digit and base64 the rest. v4 writes a metav1.Status JSON on the error channel, older
ones plain text; v5 adds a CLOSE signal (channel 255 carrying the channel to half-close).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from pallet.cri.streaming.websocket import Message, Opcode

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_SIGNAL = 255

# Client-go's preference order; the server honours the client's order among these.
REMOTECOMMAND_PROTOCOLS = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
)
PORTFORWARD_PROTOCOLS = ("portforward.k8s.io", "v4.channel.k8s.io")


class ChannelError(Exception):
    """A message that breaks the channel protocol (unknown channel, bad base64, bad resize)."""


@dataclass(frozen=True)
class Data:
    channel: int
    data: bytes


@dataclass(frozen=True)
class CloseChannel:
    channel: int


ChannelEvent = Data | CloseChannel


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


class ChannelCodec:
    """One negotiated protocol: decode client messages, encode server messages."""

    def __init__(self, protocol: str, channels: int = 5):
        if protocol in ("", "portforward.k8s.io"):
            protocol = "channel.k8s.io" if protocol == "" else protocol
        self.protocol = protocol
        self.base64 = "base64" in protocol
        self.version = 5 if protocol.startswith("v5.") else 4 if protocol.startswith("v4.") else 1
        self.supports_close = self.version >= 5
        self.channels = channels

    def decode(self, msg: Message) -> ChannelEvent | None:
        """None for an empty message (clients send those as keep-alives)."""
        data = msg.data
        if not data:
            return None
        if self.base64:
            if msg.binary:
                raise ChannelError(f"{self.protocol} expects text messages")
            ch = data[0] - ord("0")
            try:
                payload = base64.b64decode(data[1:], validate=True)
            except binascii.Error:
                raise ChannelError(f"channel {ch}: payload is not base64") from None
        else:
            ch, payload = data[0], data[1:]
        if ch == CLOSE_SIGNAL and self.supports_close:
            if len(payload) != 1:
                raise ChannelError("a CLOSE signal carries exactly one channel byte")
            return CloseChannel(payload[0])
        if not 0 <= ch < self.channels:
            raise ChannelError(f"message on unknown channel {ch}")
        return Data(ch, payload)

    def encode(self, channel: int, data: bytes) -> tuple[Opcode, bytes]:
        if self.base64:
            return Opcode.TEXT, str(channel).encode() + base64.b64encode(data)
        return Opcode.BINARY, bytes([channel]) + data

    def exit_status(self, exit_code: int | None, error: str = "",
                    cmd: Sequence[str] = ()) -> bytes:
        """What goes on the error channel when the command ends (b"" is never sent)."""
        if self.version < 4:
            # v1-v3: plain text, and nothing at all on success.
            if error:
                return error.encode()
            if exit_code:
                return (f"command terminated with non-zero exit code: error executing command "
                        f"{_go_list(cmd)}, exit code {exit_code}").encode()
            return b""
        return json.dumps(status_json(exit_code, error, cmd)).encode()


def status_json(exit_code: int | None, error: str = "", cmd: Sequence[str] = ()) -> dict:
    """metav1.Status as kubelet writes it; client-go reads the exit code from the causes."""
    if error:
        return {"metadata": {}, "status": "Failure", "message": error,
                "reason": "InternalError", "code": 500}
    if not exit_code:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (f"command terminated with non-zero exit code: error executing command "
                    f"{_go_list(cmd)}, exit code {exit_code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def _go_list(cmd: Sequence[str]) -> str:
    # kubelet formats the command with Go's %v: [sh -c exit 3]
    return "[" + " ".join(cmd) + "]"


def parse_resize(data: bytes) -> TerminalSize:
    """The resize channel carries JSON {"Width": w, "Height": h} (uint16 each)."""
    try:
        doc = json.loads(data)
        w, h = doc["Width"], doc["Height"]
    except (ValueError, KeyError, TypeError):
        raise ChannelError(f"resize message is not {{\"Width\", \"Height\"}} JSON: {data[:64]!r}") \
            from None
    if not (isinstance(w, int) and isinstance(h, int) and 0 <= w < 1 << 16 and 0 <= h < 1 << 16):
        raise ChannelError(f"resize to {w}x{h} is out of range")
    return TerminalSize(w, h)


def encode_resize(size: TerminalSize) -> bytes:
    return json.dumps({"Width": size.width, "Height": size.height}).encode()


def portforward_port_prefix(port: int) -> bytes:
    """The first message on each port-forward channel: the port, uint16 little-endian."""
    return struct.pack("<H", port)
