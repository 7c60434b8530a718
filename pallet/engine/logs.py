"""Reading a container's CRI-format log (written by the monitor): whole lines put
back together from P/F entries, across rotated files, with --since, --tail and follow.
"""

from __future__ import annotations

import calendar
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pallet.errors import InvalidArgument

# docker's json-file (its default) and local, podman's k8s-file: pallet writes its one log
# (the CRI format) for each of them; none writes nothing (and `logs` cannot read it).
LOG_DRIVERS = ("json-file", "local", "k8s-file", "none")
# docker's other built-in drivers ship the output elsewhere; pallet has none of them.
_SHIPPING_DRIVERS = ("syslog", "journald", "gelf", "fluentd", "awslogs", "splunk", "etwlogs",
                     "gcplogs", "logentries")
NO_READING = "configured logging driver does not support reading"


def check_log_driver(name: str) -> str:
    """--log-driver NAME as pallet runs it ("" is json-file, docker's default)."""
    name = name or "json-file"
    if name in LOG_DRIVERS:
        return name
    if name in _SHIPPING_DRIVERS:
        raise InvalidArgument(f'logging driver "{name}" is not supported by pallet: use '
                              f"{', '.join(LOG_DRIVERS)}")
    raise InvalidArgument(f"logger: no log driver named '{name}' is registered")


@dataclass
class LogLine:
    stream: str        # "stdout" or "stderr"
    timestamp: str     # RFC 3339 with nanoseconds, as written
    ts_ns: int
    content: bytes     # the line, with its newline unless it was a final partial


def parse_ts(ts: str) -> int:
    """RFC 3339 (as the monitor writes it, or with an offset) to ns since the epoch."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$", ts)
    if not m:
        raise ValueError(ts)
    sec = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    frac = int((m.group(2) or "0").ljust(9, "0"))
    if m.group(3) != "Z":
        sign = 1 if m.group(3)[0] == "+" else -1
        hh, mm = m.group(3)[1:].split(":")
        sec -= sign * (int(hh) * 3600 + int(mm) * 60)
    return sec * 1_000_000_000 + frac


def parse_since(value: str, now: float | None = None) -> int:
    """docker's --since/--until: a duration ago (10m, 1h30m, 45s), RFC 3339, or unix seconds."""
    now = time.time() if now is None else now
    m = re.fullmatch(r"((?:\d+(?:\.\d+)?(?:ns|us|ms|s|m|h))+)", value)
    if m:
        units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
        total = sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)",
                                                                 value))
        return int((now - total) * 1e9)
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return int(float(value) * 1e9)
    try:
        if "T" not in value:
            return calendar.timegm(time.strptime(value, "%Y-%m-%d")) * 1_000_000_000
        return parse_ts(value if value[-1] == "Z" or "+" in value[10:] or value.count("-") > 2
                        else value + "Z")
    except ValueError:
        raise InvalidArgument(f"invalid value for --since: {value!r}; use a duration like 10m, "
                              "an RFC 3339 time or unix seconds") from None


def parse_entry(raw: bytes) -> tuple[str, str, bool, bytes] | None:
    """One log line -> (timestamp, stream, partial, content) or None if malformed."""
    parts = raw.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    ts, stream, tag = parts[0].decode(), parts[1].decode(), parts[2]
    return ts, stream, tag == b"P", parts[3] if len(parts) == 4 else b""


def _files(path: str) -> list[str]:
    rotated = []
    i = 1
    while os.path.exists(f"{path}.{i}"):
        rotated.append(f"{path}.{i}")
        i += 1
    return list(reversed(rotated)) + ([path] if os.path.exists(path) else [])


class _Assembler:
    """Joins P entries with the following F entry of the same stream."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[str, bytearray]] = {}

    def feed(self, raw: bytes) -> LogLine | None:
        e = parse_entry(raw)
        if e is None:
            return None
        ts, stream, partial, content = e
        first_ts, buf = self.pending.pop(stream, (ts, bytearray()))
        buf += content
        if partial:
            self.pending[stream] = (first_ts, buf)
            return None
        try:
            ns = parse_ts(first_ts)
        except ValueError:
            ns = 0
        return LogLine(stream, first_ts, ns, bytes(buf) + b"\n")

    def flush(self) -> list[LogLine]:
        out = []
        for stream, (ts, buf) in self.pending.items():
            try:
                ns = parse_ts(ts)
            except ValueError:
                ns = 0
            out.append(LogLine(stream, ts, ns, bytes(buf)))
        self.pending.clear()
        return out


def read_log(path: str, *, since: int = 0, until: int = 0, tail: int = -1,
             follow: bool = False, running: Callable[[], bool] | None = None,
             poll: float = 0.1) -> Iterator[LogLine]:
    """Lines of the log at PATH (and its rotations). With FOLLOW, keep reading new
    lines until RUNNING() says the container is gone and nothing more arrives."""
    asm = _Assembler()

    def keep(line: LogLine) -> bool:
        return (not since or line.ts_ns >= since) and (not until or line.ts_ns <= until)

    lines: deque[LogLine] | list[LogLine] = deque(maxlen=tail) if tail >= 0 else []
    fh = None
    for name in _files(path):
        f = open(name, "rb")  # noqa: SIM115 - the last one stays open for follow
        for raw in f:
            line = asm.feed(raw)
            if line is not None and keep(line):
                lines.append(line)
        if name == path:
            fh = f
        else:
            f.close()
    if tail != 0:
        yield from lines
    if not follow:
        if fh:
            fh.close()
        for line in asm.flush():
            if keep(line) and tail != 0:
                yield line
        return
    ino = os.fstat(fh.fileno()).st_ino if fh else 0
    try:
        while True:
            got = False
            if fh is not None:
                for raw in fh:
                    got = True
                    line = asm.feed(raw)
                    if line is not None and keep(line):
                        yield line
            # Rotation: the monitor renamed the file and opened a new one.
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is not None and st.st_ino != ino:
                if fh:
                    fh.close()
                fh = open(path, "rb")  # noqa: SIM115
                ino = st.st_ino
                continue
            if not got:
                if running is not None and not running():
                    if fh is not None:
                        for raw in fh:
                            line = asm.feed(raw)
                            if line is not None and keep(line):
                                yield line
                    for line in asm.flush():
                        if keep(line):
                            yield line
                    return
                time.sleep(poll)
    finally:
        if fh:
            fh.close()
