"""json.loads and json.dumps (default arguments, or an indent) without importing the json package.

`import json` costs pallet-runc ~8 ms per run, mostly because json.decoder and json.scanner
import re (and re imports enum); the real work happens in the C module _json either way.
These two functions drive _json directly, exactly as json does with default arguments, and
hand anything unusual (invalid JSON, a BOM, UTF-16/32 bytes, an unserializable object) to the
json package itself, so results and error messages are always json's own.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

try:
    from _json import encode_basestring_ascii as _encode_str
    from _json import make_encoder as _make_encoder
    from _json import make_scanner as _make_scanner
except ImportError:  # an interpreter without the C accelerator: use json itself
    _make_scanner = None

_WHITESPACE = " \t\n\r"  # json.decoder.WHITESPACE


class _DecoderSettings:
    """The attributes of json's default JSONDecoder that _json's scanner reads."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__


_scan = _make_scanner(_DecoderSettings()) if _make_scanner is not None else None


def loads(s: str | bytes) -> Any:
    """json.loads(s)."""
    text = s
    if isinstance(text, (bytes, bytearray)):
        # json.detect_encoding says utf-8 unless a BOM or a NUL in the first two bytes.
        if text[:1] in (b"\x00", b"\xef", b"\xfe", b"\xff") or text[1:2] == b"\x00":
            text = None
        else:
            text = text.decode("utf-8", "surrogatepass")
    if _scan is not None and isinstance(text, str) and not text.startswith("\ufeff"):
        start = len(text) - len(text.lstrip(_WHITESPACE))
        try:
            obj, end = _scan(text, start)
        except (StopIteration, ValueError, SystemError):
            # json.loads below raises json's own error. (SystemError: on invalid JSON,
            # Python 3.11's scanner looks for json.decoder.JSONDecodeError only among the
            # modules already imported, and fails that way when json is not.)
            pass
        else:
            if not text[end:].strip(_WHITESPACE):
                return obj
    import json

    return json.loads(s)


def dumps(obj: Any, indent: int | None = None) -> str:
    """json.dumps(obj) or json.dumps(obj, indent=N) (an int), with json's default separators."""
    if _make_scanner is not None and (indent is None or type(indent) is int):
        try:
            if indent is None:
                return _compact(obj)
            return "".join(_indented(obj, " " * indent, "\n"))
        except (TypeError, ValueError, RecursionError):
            pass  # json.dumps below raises json's own error
    import json

    return json.dumps(obj, indent=indent)


def _compact(obj: Any) -> str:
    # What json.JSONEncoder.iterencode builds when indent is None.
    encode = _make_encoder({}, _unserializable, _encode_str, None, ": ", ", ", False, False, True)
    return "".join(encode(obj, 0))


def _indented(obj: Any, step: str, newline: str) -> Iterator[str]:
    # json's pure-Python encoder with indent: each item of a non-empty dict or list on a line
    # of its own, "," between items, ": " after keys. Scalars and empty containers read the
    # same compact, so _compact writes those.
    if isinstance(obj, dict) and obj:
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("non-string keys: json converts those")  # json.dumps takes over
        inner = newline + step
        sep = "{" + inner
        for key, value in obj.items():
            yield sep + _encode_str(key) + ": "
            yield from _indented(value, step, inner)
            sep = "," + inner
        yield newline + "}"
    elif isinstance(obj, (list, tuple)) and obj:
        inner = newline + step
        sep = "[" + inner
        for value in obj:
            yield sep
            yield from _indented(value, step, inner)
            sep = "," + inner
        yield newline + "]"
    else:
        yield _compact(obj)


def _unserializable(o: Any) -> Any:
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")
