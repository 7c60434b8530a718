"""Sizes and durations as docker spells them (pure): `512m`, `1g`, `1.5GB`; `1m30s`;
"About an hour"."""

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


def human_duration(seconds: float) -> str:
    """docker's units.HumanDuration: the coarsest unit that still says something."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(s / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{s // 3600 // 24 // 365} years"
