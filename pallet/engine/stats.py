"""docker stats' numbers (CPU, memory, block I/O, pids, network bytes) of containers, sampled
cheaply frame after frame: each container's files are opened once and re-read with pread.

Containers of pallet's own runtime are read from their cgroup's usage files; those of other
runtimes (runc, crun...) through the runtime's `events --stats`, as Engine.stats does.
"""

from __future__ import annotations

import errno
import os
import time
from typing import TYPE_CHECKING, Any

from pallet.errors import PalletError
from pallet.oci.cgroups.usage import FIELDS, CgroupGone

if TYPE_CHECKING:
    from pallet.engine.containers import Engine
    from pallet.engine.handlers import RuntimeHandler
    from pallet.engine.store import ContainerRecord

LIVE_STATES = ("running", "paused")


def parse_net_dev(text: str) -> tuple[int, int]:
    """Bytes received and sent on the interfaces (lo aside) of a /proc/PID/net/dev text."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, data = line.partition(":")
        fields = data.split()
        if name.strip() != "lo" and len(fields) >= 9:
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx


def usage_from_stats(stats: dict[str, Any]) -> dict[str, int]:
    """The sample fields from a runc `events --stats` data dict (other runtimes' stats)."""
    mem = (stats.get("memory") or {}).get("usage") or {}
    blk = (stats.get("blkio") or {}).get("ioServiceBytesRecursive") or []

    def blk_sum(op: str) -> int:
        return sum(e.get("value", 0) for e in blk if (e.get("op") or "").lower() == op)

    return {"cpu_ns": ((stats.get("cpu") or {}).get("usage") or {}).get("total", 0),
            "memory": mem.get("usage", 0), "memory_limit": mem.get("limit", 0),
            "blkio_read": blk_sum("read"), "blkio_write": blk_sum("write"),
            "pids": (stats.get("pids") or {}).get("current", 0)}


class _Probe:
    """One container's open files (or, for another runtime, its handler)."""

    def __init__(self, reader: Any, handler: RuntimeHandler, cid: str, net_fd: int):
        self.reader, self.handler, self.cid, self.net_fd = reader, handler, cid, net_fd

    def read(self) -> dict[str, int]:
        if self.reader is not None:
            out = self.reader.read()
        else:
            try:
                out = usage_from_stats(self.handler.stats(self.cid))
            except PalletError:
                raise CgroupGone(self.cid) from None
        rx = tx = 0
        if self.net_fd >= 0:
            try:
                rx, tx = parse_net_dev(os.pread(self.net_fd, 65536, 0).decode())
            except OSError:
                pass
        out["rx_bytes"], out["tx_bytes"] = rx, tx
        return out

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if self.net_fd >= 0:
            os.close(self.net_fd)
            self.net_fd = -1


class StatsSampler:
    """Samples containers for `stats`; holds their files open until retain() drops them or
    close() (or the end of a `with`) releases all."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._probes: dict[str, _Probe] = {}

    def sample(self, rec: ContainerRecord) -> dict[str, int] | None:
        """FIELDS, rx_bytes, tx_bytes and `t` (time.monotonic() of the reading) of a running
        or paused container; None when it is not (or no longer) running."""
        if rec.state not in LIVE_STATES:
            self._drop(rec.id)
            return None
        probe = self._probes.get(rec.id)
        if probe is None:
            probe = self._open(rec)
            if probe is None:
                return None
            self._probes[rec.id] = probe
        try:
            out = probe.read()
        except CgroupGone:
            self._drop(rec.id)
            return None
        out["t"] = time.monotonic()  # type: ignore[assignment]
        return out

    def _open(self, rec: ContainerRecord) -> _Probe | None:
        handler = self.engine.handler(rec.runtime_handler)
        try:
            reader = handler.open_usage(rec.id)
        except (PalletError, CgroupGone):
            return None
        net_fd = -1
        if rec.pid and (rec.config.get("network") or "none") != "host":
            try:
                net_fd = os.open(f"/proc/{rec.pid}/net/dev", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ESRCH):
                    if reader is not None:
                        reader.close()
                    raise
        return _Probe(reader, handler, rec.id, net_fd)

    def _drop(self, cid: str) -> None:
        probe = self._probes.pop(cid, None)
        if probe is not None:
            probe.close()

    def retain(self, ids: set[str]) -> None:
        """Close the files of every container but these."""
        for cid in [c for c in self._probes if c not in ids]:
            self._drop(cid)

    def close(self) -> None:
        self.retain(set())

    def __enter__(self) -> StatsSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["FIELDS", "LIVE_STATES", "StatsSampler", "parse_net_dev", "usage_from_stats"]
