"""C calls for what Python's os module lacks, through _ctypes, the C core of ctypes.

ctypes' own __init__ builds its whole type zoo in Python: ~2.7 ms of every pallet-runc
create and exec, which need only a few libc calls with int, pointer and buffer
arguments. _ctypes gives those directly (as pallet-runc uses _signal and _socket).
Code off that path (libseccomp's compiler, bpf, the engine) keeps using ctypes.

Calls take no argtypes: a Python int goes as a C int, bytes as a pointer to them, None
as NULL, a buffer() as a pointer to it; wrap other widths (c_uint, c_long, c_ulong).
"""

from __future__ import annotations

import _ctypes
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class c_int(_ctypes._SimpleCData):
    _type_ = "i"


class c_uint(_ctypes._SimpleCData):
    _type_ = "I"


class c_long(_ctypes._SimpleCData):
    _type_ = "l"


class c_ulong(_ctypes._SimpleCData):
    _type_ = "L"


class c_char(_ctypes._SimpleCData):
    _type_ = "c"


class _IntFunction(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class _LongFunction(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_long


class Library:
    """A shared library's symbols (None: the process's own, libc's among them)."""

    def __init__(self, name: str | None = None):
        self._handle = _ctypes.dlopen(name)  # what CFuncPtr looks names up in; OSError

    def int_function(self, name: str) -> Callable[..., int]:
        return _IntFunction((name, self))

    def long_function(self, name: str) -> Callable[..., int]:
        """For functions returning long or a pointer (as an int)."""
        return _LongFunction((name, self))


LIBC = Library()
syscall = LIBC.long_function("syscall")
get_errno = _ctypes.get_errno


def buffer(size_or_data: int | bytes) -> Any:
    """A writable C buffer (char[]): SIZE zero bytes or a copy of DATA; `.raw` reads it."""
    if isinstance(size_or_data, int):
        return (c_char * size_or_data)()
    return (c_char * len(size_or_data)).from_buffer_copy(size_or_data)


def address(buf: Any) -> int:
    return _ctypes.addressof(buf)


def pack(*fields: tuple[int, int]) -> bytes:
    """A C struct's bytes from (value, size) fields in native byte order, no padding added."""
    return b"".join(v.to_bytes(n, sys.byteorder, signed=v < 0) for v, n in fields)


def unpack_u32(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 4], sys.byteorder) for i in range(0, len(data), 4)]


def u32s_at(addr: int, count: int) -> list[int]:
    """COUNT unsigned 32-bit ints read from memory at ADDR (a pointer a call returned)."""
    return list((c_uint * count).from_address(addr))
