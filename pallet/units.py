"""Sizes and durations as docker spells them (pure): `512m`, `1g`, `1.5GB`; `1m30s`."""

from __future__ import annotations

_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION = r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)"
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def ram_in_bytes(value: str) -> int:
    """docker's RAMInBytes: 512m, 1g, 100k, 1024, 2GiB (binary units); ValueError if not."""
    v = value.strip().lower()
    num = v.rstrip("bkmgti")
    unit = v[len(num):].rstrip("ib") or "b"
    if unit not in _UNITS:
        raise ValueError(value)
    n = float(num)
    if n < 0:
        raise ValueError(value)
    return int(n * _UNITS[unit])


def duration_seconds(value: str) -> float:
    """Go's time.ParseDuration (`10s`, `1m30s`, `500ms`) in seconds; ValueError if not."""
    import re  # not at the top: `run --memory` parses a size on the CLI's path, and re costs ~6 ms

    text = value.strip()
    pos, total = 0, 0.0
    for m in re.finditer(_DURATION, text):
        if m.start() != pos:
            raise ValueError(value)
        total += float(m.group(1)) * _SECONDS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(value)
    return total
