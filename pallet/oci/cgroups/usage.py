"""The few usage numbers `docker stats` shows, from control files opened once and re-read.

A cgroup control file regenerates its content on every read from offset 0, so a reader
keeps one fd per file and takes a sample with one pread each: no path walk, no open.
"""

from __future__ import annotations

import errno
import os

from pallet.oci.cgroups import files

# The fields of a sample; absent controllers read as 0.
FIELDS = ("cpu_ns", "memory", "memory_limit", "blkio_read", "blkio_write", "pids")

# How each kind of file turns into fields (the names the backends give in usage_sources()).


def _int(text: str) -> int:
    # "max" (v2: no limit) reads as 0, as files.read_int does.
    word = text.split(maxsplit=1)[0] if text.strip() else ""
    return int(word) if word.isdigit() else 0


def _usec_total(text: str) -> int:
    return files.parse_flat_keyed(text).get("usage_usec", 0) * 1000


def _v1_blkio(text: str) -> tuple[int, int]:
    # "maj:min Op value" lines; "Total" lines and the last "Total N" are not Read/Write.
    rd = wr = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            op = parts[1].lower()
            if op == "read":
                rd += int(parts[2])
            elif op == "write":
                wr += int(parts[2])
    return rd, wr


def _io_stat(text: str) -> tuple[int, int]:
    rd = wr = 0
    for fields in files.parse_nested_keyed(text).values():
        rd += fields.get("rbytes", 0)
        wr += fields.get("wbytes", 0)
    return rd, wr


PARSERS = {"int": _int, "usec_total": _usec_total, "v1_blkio": _v1_blkio, "io_stat": _io_stat}


class CgroupGone(Exception):  # noqa: N818 - a condition, not a failure: the caller shows zeros
    """The cgroup was removed (the container stopped) since its files were opened."""


class UsageReader:
    """One cgroup's usage files, held open; the owner calls close() (or uses `with`).

    sources: (field or "a,b" for a parser that yields two, path, parser name), as a
    backend's usage_sources() gives them.
    """

    def __init__(self, sources: list[tuple[str, str, str]]):
        self._files: list[tuple[int, tuple[str, ...], str]] = []
        try:
            for field, path, kind in sources:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    if not os.path.isdir(os.path.dirname(path)):
                        raise CgroupGone(path) from None
                    continue  # an optional file this kernel lacks: the field stays 0
                self._files.append((fd, tuple(field.split(",")), kind))
        except BaseException:
            self.close()
            raise

    def read(self) -> dict[str, int]:
        """A sample: FIELDS -> int; CgroupGone once the cgroup has been removed."""
        out = dict.fromkeys(FIELDS, 0)
        for fd, names, kind in self._files:
            try:
                text = os.pread(fd, 65536, 0).decode()
            except OSError as e:
                if e.errno in (errno.ENODEV, errno.ENOENT, errno.ESTALE):
                    raise CgroupGone(str(e)) from None
                raise
            value = PARSERS[kind](text)
            if len(names) == 1:
                out[names[0]] = value
            else:
                out.update(zip(names, value, strict=True))
        return out

    def close(self) -> None:
        files_, self._files = self._files, []
        for fd, _, _ in files_:
            os.close(fd)

    def __enter__(self) -> UsageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
