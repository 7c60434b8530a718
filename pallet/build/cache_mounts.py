"""RUN --mount=type=cache's directories: kept across builds under ROOT/builder/cache, one
entry per cache id, never part of an image; `builder prune` and `system prune` remove them.

An entry's `lock` is held shared by every RUN using it (prune takes it exclusively and
skips an entry in use). Its data is `data/`; sharing=locked holds `data.lock` exclusively
(a second build waits), shared holds it shared, private takes the first instance
(`data`, `data-1`...) no one else holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from pallet.build.mounts import RunMount


class CacheMounts:
    def __init__(self, root: str):
        self.dir = os.path.join(root, "builder", "cache")

    def _entry(self, cache_id: str) -> str:
        return os.path.join(self.dir, hashlib.sha256(cache_id.encode()).hexdigest()[:32])

    @contextlib.contextmanager
    def use(self, m: RunMount) -> Iterator[str]:
        """The host directory for cache mount M (made on first use with M's mode, uid and
        gid), held per M's sharing while the RUN runs."""
        entry = self._entry(m.id)
        with contextlib.ExitStack() as stack:
            while True:
                os.makedirs(entry, mode=0o700, exist_ok=True)
                fd = os.open(os.path.join(entry, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                             0o600)
                fcntl.flock(fd, fcntl.LOCK_SH)
                try:
                    same = os.stat(os.path.join(entry, "lock")).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    stack.callback(os.close, fd)
                    break
                os.close(fd)  # pruned meanwhile: make it again
            meta = os.path.join(entry, "meta.json")
            if not os.path.exists(meta):
                tmp = f"{meta}.{os.getpid()}.tmp"  # concurrent builds: a tmp file each
                with open(tmp, "w") as f:
                    json.dump({"id": m.id}, f)
                os.replace(tmp, meta)
            name = "data"
            for n in range(1000):
                name = "data" if n == 0 else f"data-{n}"
                lfd = os.open(os.path.join(entry, name + ".lock"),
                              os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                stack.callback(os.close, lfd)
                if m.sharing == "private":
                    try:
                        fcntl.flock(lfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                else:
                    fcntl.flock(lfd, fcntl.LOCK_EX if m.sharing == "locked" else fcntl.LOCK_SH)
                break
            path = os.path.join(entry, name)
            if not os.path.isdir(path):
                tmp = tempfile.mkdtemp(prefix=name + ".new-", dir=entry)
                os.chown(tmp, m.uid or 0, m.gid or 0)
                os.chmod(tmp, 0o755 if m.mode is None else m.mode)
                try:
                    os.rename(tmp, path)
                except OSError:  # another build made it first
                    shutil.rmtree(tmp, ignore_errors=True)
            yield path

    def list(self) -> list[dict[str, Any]]:
        """Every entry (`system df`): its name (what prune prints), bytes, when it was made
        and last written (unix seconds), and whether a build holds it now."""
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            entry = os.path.join(self.dir, name)
            try:
                created = os.stat(os.path.join(entry, "meta.json")).st_mtime
                fd = os.open(os.path.join(entry, "lock"), os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue  # being made or pruned
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    in_use = False
                except BlockingIOError:
                    in_use = True
            finally:
                os.close(fd)
            used = max([created] + [os.stat(os.path.join(entry, d)).st_mtime
                                    for d in os.listdir(entry) if d.startswith("data")])
            out.append({"id": name, "size": _size(entry), "created": created,
                        "last_used": used, "in_use": in_use})
        return out

    def prune(self) -> tuple[list[str], int]:
        """Remove every entry no build is using: their names and the bytes freed."""
        removed, freed = [], 0
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return [], 0
        for name in names:
            entry = os.path.join(self.dir, name)
            try:
                fd = os.open(os.path.join(entry, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                             0o600)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a build is using it
                freed += _size(entry)
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(name)
            finally:
                os.close(fd)
        for d in (self.dir, os.path.dirname(self.dir)):
            with contextlib.suppress(OSError):
                os.rmdir(d)  # empty: leave no trace of the feature
        return removed, freed


def _size(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total
