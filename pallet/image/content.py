"""The content store: an OCI image layout (oci-layout, index.json, blobs/sha256/<hex>).

Blobs are written to a temp file, hashed and counted while streaming, fsynced and
renamed into place only if digest and size match; nothing half-written is visible.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from pallet.errors import FailedPrecondition, InvalidArgument, NotFound, SystemFailure

OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


class DigestMismatch(InvalidArgument):
    """A blob whose bytes do not hash to, or do not have the size of, its descriptor."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def split_digest(digest: str) -> tuple[str, str]:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise InvalidArgument(f"unsupported or malformed digest {digest!r} (want sha256:<64 hex>)")
    return algo, hexpart


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so a reader sees the old or the new file, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: Path, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """Hold an flock on `path` for the block; yields False if non-blocking and busy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        flags = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if not blocking:
            flags |= fcntl.LOCK_NB
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def transient_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive flock on `path` whose file exists only while someone holds or awaits it.

    The holder unlinks the file before it lets go. A waiter that was blocked on the old
    file then finds `path` gone or naming another file, and starts over on the current one;
    so two holders never lock different files under the same name. Yields False if
    non-blocking and busy. (Per-object locks that would otherwise pile up forever.)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        except BaseException:
            os.close(fd)
            raise
        try:
            st = os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            continue
        held = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)
    try:
        yield True
    finally:
        try:
            os.unlink(path)  # still ours: only a holder unlinks, and we checked it is this file
        finally:
            os.close(fd)


class BlobWriter:
    """Receives a blob's bytes; `commit()` verifies and publishes it atomically."""

    def __init__(self, store: ContentStore, digest: str | None, size: int | None):
        self._store = store
        self.expected_digest = digest
        self.expected_size = size
        self._hash = hashlib.sha256()
        self.written = 0
        self._fd, self._tmp = tempfile.mkstemp(dir=store.ingest_dir, prefix="blob-")
        self._file: IO[bytes] = os.fdopen(self._fd, "wb", buffering=1 << 20)
        self.digest: str | None = None

    def write(self, chunk: bytes) -> int:
        if self.expected_size is not None and self.written + len(chunk) > self.expected_size:
            raise DigestMismatch(
                f"blob {self.expected_digest} is larger than its descriptor's {self.expected_size} bytes"
            )
        self._hash.update(chunk)
        self._file.write(chunk)
        self.written += len(chunk)
        return len(chunk)

    def commit(self) -> str:
        digest = "sha256:" + self._hash.hexdigest()
        if self.expected_size is not None and self.written != self.expected_size:
            raise DigestMismatch(
                f"blob {self.expected_digest} is truncated: got {self.written} of {self.expected_size} bytes"
            )
        if self.expected_digest is not None and digest != self.expected_digest:
            raise DigestMismatch(f"blob {self.expected_digest} has wrong content (hashes to {digest})")
        self._file.flush()
        os.fchmod(self._file.fileno(), 0o644)
        os.fsync(self._file.fileno())
        self._file.close()
        # rename over an existing identical blob is harmless: same bytes, same name.
        os.rename(self._tmp, self._store.blob_path(digest))
        self._tmp = ""
        self.digest = digest
        return digest

    def abort(self) -> None:
        if not self._file.closed:
            # Closing flushes the buffer, which fails again on a full disk; the fd is
            # closed regardless, and the bytes are being thrown away anyway.
            with contextlib.suppress(OSError):
                self._file.close()
        if self._tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = ""


class ContentStore:
    """An OCI image layout under `<root>/content`; index.json is the table of names."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.blobs = self.path / "blobs" / "sha256"
        # Temp files live beside the blobs (same filesystem, so rename is atomic) but
        # outside blobs/sha256, so tools listing the layout never see them.
        self.ingest_dir = self.path / "ingest"
        self._index_lock = self.path / "index.json.lock"

    def ensure(self) -> ContentStore:
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
            self.ingest_dir.mkdir(exist_ok=True)
            if not (self.path / "oci-layout").exists():
                atomic_write(self.path / "oci-layout", json.dumps(OCI_LAYOUT).encode())
            if not (self.path / "index.json").exists():
                self._write_index({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []})
        except PermissionError as e:
            raise SystemFailure(f"cannot create image store at {self.path}: {e.strerror}") from e
        return self

    # -- blobs ---------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / split_digest(digest)[1]

    def has(self, digest: str, size: int | None = None) -> bool:
        try:
            st = self.blob_path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def open(self, digest: str) -> IO[bytes]:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the content store") from None

    def read(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def size(self, digest: str) -> int:
        return self.blob_path(digest).stat().st_size

    @contextlib.contextmanager
    def writer(self, digest: str | None = None, size: int | None = None) -> Iterator[BlobWriter]:
        """Stream a blob in; it is published on clean exit, discarded on any error."""
        w = BlobWriter(self, digest, size)
        try:
            yield w
            w.commit()
        except OSError as e:
            w.abort()
            if e.errno == errno.ENOSPC:
                raise SystemFailure(f"no space left writing blob {digest or ''} in {self.path}") from e
            raise
        except BaseException:
            w.abort()
            raise

    def ingest(self, chunks: Iterable[bytes], digest: str | None = None, size: int | None = None) -> str:
        with self.writer(digest, size) as w:
            for chunk in chunks:
                w.write(chunk)
        assert w.digest is not None
        return w.digest

    def put(self, data: bytes, digest: str | None = None) -> str:
        digest = digest or sha256_digest(data)
        if self.has(digest, len(data)):
            return digest
        return self.ingest([data], digest, len(data))

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.blob_path(digest).unlink()

    def all_blobs(self) -> list[str]:
        return ["sha256:" + p.name for p in self.blobs.iterdir() if len(p.name) == 64]

    def clean_ingest(self, older_than: float = 3600.0) -> None:
        """Remove temp files left by a crashed writer (old enough not to be live)."""
        import time

        now = time.time()
        for p in self.ingest_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if now - p.stat().st_mtime > older_than:
                    p.unlink()

    # -- index.json: the names ---------------------------------------------
    def read_index(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "index.json").read_bytes())
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}
        except json.JSONDecodeError as e:
            raise FailedPrecondition(f"{self.path}/index.json is corrupt: {e}") from e

    def _write_index(self, index: dict[str, Any]) -> None:
        atomic_write(self.path / "index.json", json.dumps(index, indent=2).encode())

    @contextlib.contextmanager
    def update_index(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write index.json under an exclusive lock; written on clean exit."""
        with file_lock(self._index_lock):
            index = self.read_index()
            yield index
            self._write_index(index)
