"""Apply one image layer (gzip, zstd or plain tar) into a directory, confined to it.

Every path is resolved component by component from a root fd, with symlinks kept
inside the root (like openat2 RESOLVE_IN_ROOT); `..` entries are refused. Whiteouts
become overlay whiteouts (char 0/0, trusted.overlay.opaque) or are applied in place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import stat
import tarfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from pallet.errors import InvalidArgument, SystemFailure

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
MAX_SYMLINKS = 40
CHUNK = 1 << 20
WRITERS = 2  # threads creating regular files (see LayerApplier._submit)
INLINE_FILE = 1 << 20  # files up to this size are read whole and handed to a writer
MAX_PENDING_BYTES = 64 << 20  # bytes read but not yet written: bounds memory
MAX_PENDING_FILES = 512
MAX_CACHED_DIRS = 256  # resolved parent dir fds kept open per layer

O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeLayer(InvalidArgument):
    """A layer entry that tries to reach outside the snapshot it is unpacked into."""


class CorruptLayer(InvalidArgument):
    """A layer that is not a valid (compressed) tar, or whose content hash is wrong."""


@dataclass
class LayerResult:
    diff_id: str  # sha256 of the uncompressed tar
    entries: int
    bytes_written: int


# -- decompression ----------------------------------------------------------


class _HashingReader:
    """Reads the uncompressed stream, hashing it; decoder failures become CorruptLayer."""

    def __init__(self, raw: IO[bytes], what: str):
        self._what = what
        self.hash = hashlib.sha256()
        if hasattr(raw, "peek"):
            head, rest = raw.peek(4)[:4], raw
        else:
            head = raw.read(4)
            rest = io.BufferedReader(_Prefixed(head, raw), CHUNK)  # type: ignore[assignment]
        try:
            if head[:2] == b"\x1f\x8b":
                from isal import igzip

                self._src: IO[bytes] = igzip.IGzipFile(fileobj=rest, mode="rb")  # type: ignore[assignment]
            elif head == b"\x28\xb5\x2f\xfd":
                import zstandard

                self._src = zstandard.ZstdDecompressor().stream_reader(rest, read_across_frames=True)  # type: ignore[assignment]
            else:
                self._src = rest  # type: ignore[assignment]
        except Exception as e:  # decoder constructors raise library-specific errors
            raise CorruptLayer(f"{what}: cannot decompress: {e}") from None

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._src.read(n)
        except (OSError, EOFError, ValueError, RuntimeError) as e:
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EIO):
                raise
            raise CorruptLayer(f"{self._what}: corrupt compressed data: {e}") from None
        except Exception as e:  # zstandard.ZstdError and isal errors have no common base
            raise CorruptLayer(f"{self._what}: corrupt compressed data: {e}") from None
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


class _Prefixed(io.RawIOBase):
    """A raw stream that yields `head` and then the rest of `raw` (for unpeekable sources)."""

    def __init__(self, head: bytes, raw: IO[bytes]):
        self._head, self._raw = head, raw

    def readinto(self, b: Any) -> int:
        if self._head:
            data, self._head = self._head[: len(b)], self._head[len(b) :]
        else:
            data = self._raw.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


# -- confined path resolution ----------------------------------------------


def clean_name(name: str) -> list[str]:
    """Split a tar entry name into components; absolute paths become relative, `..` is refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"entry {name!r} contains '..' and would escape the snapshot")
    return parts


def resolve_dir(root_fd: int, parts: list[str], create: bool) -> int:
    """An O_PATH fd for directory `parts` under root; symlinks are followed but stay in root.

    Missing directories are created (0755) when `create`. The caller closes the fd.
    """
    fds = [os.dup(root_fd)]
    todo = list(reversed(parts))
    links = 0
    try:
        while todo:
            c = todo.pop()
            if c in ("", "."):
                continue
            if c == "..":
                # `..` from a symlink target: clamp at the root, as RESOLVE_IN_ROOT does.
                if len(fds) > 1:
                    os.close(fds.pop())
                continue
            try:
                st = os.stat(c, dir_fd=fds[-1], follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(c, 0o755, dir_fd=fds[-1])
                st = os.stat(c, dir_fd=fds[-1], follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise UnsafeLayer(f"too many levels of symlinks resolving {'/'.join(parts)!r}")
                target = os.readlink(c, dir_fd=fds[-1])
                if target.startswith("/"):
                    for fd in fds[1:]:
                        os.close(fd)
                    del fds[1:]
                todo.extend(reversed(target.split("/")))
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", "/".join(parts))
            fds.append(os.open(c, O_PATH_DIR, dir_fd=fds[-1]))
        result = fds.pop()
        return result
    finally:
        for fd in fds:
            os.close(fd)


def _proc_path(dir_fd: int, name: str) -> str:
    # setxattr has no *at form; the fd's magic link names the resolved dir safely.
    return f"/proc/self/fd/{dir_fd}/{name}"


def remove_entry(dir_fd: int, name: str) -> None:
    """Remove `name` (any type, dirs recursively) inside dir_fd, never following symlinks."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            for child in os.listdir(fd):
                remove_entry(fd, child)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


# -- applying a layer --------------------------------------------------------


class LayerApplier:
    """Applies tar entries under `root`; `overlay=True` writes overlay-style whiteouts."""

    def __init__(self, root: str, overlay: bool, what: str = "layer"):
        self.root = root
        self.overlay = overlay
        self.what = what
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._dir_times: list[tuple[list[str], float]] = []
        self._added: set[str] = set()
        self.bytes_written = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[Future[int], str, int]] = deque()
        self._pending_bytes = 0
        self._dirs: dict[tuple[str, ...], int] = {}
        self._stale = False  # a dir or symlink was removed: cached parents may be wrong

    def close(self) -> None:
        self._forget_dirs()
        os.close(self.root_fd)

    @contextlib.contextmanager
    def _parent(self, parts: list[str]) -> Iterator[int]:
        # Resolved parents are cached: most entries share a few directories, and each
        # resolution costs a stat and an open per path component. Anything that removes
        # an entry drops the cache, so a cached fd never stands for a path that changed.
        key = tuple(parts[:-1])
        fd = self._dirs.get(key)
        if fd is None:
            fd = resolve_dir(self.root_fd, parts[:-1], create=True)
            if len(self._dirs) >= MAX_CACHED_DIRS:
                self._forget_dirs()
            self._dirs[key] = fd
        try:
            yield fd
        finally:
            if self._stale:
                self._stale = False
                self._forget_dirs()

    def _forget_dirs(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def apply(self, tar: tarfile.TarFile) -> int:
        count = 0
        pool = ThreadPoolExecutor(WRITERS, thread_name_prefix="unpack")
        self._pool = pool
        try:
            for info in tar:
                count += 1
                self.apply_entry(info, tar)
            self._drain()
        finally:
            self._pool = None
            # On error, queued writes are dropped and running ones finish before the caller
            # removes the half-made snapshot.
            pool.shutdown(wait=True, cancel_futures=True)
            for _, _, job_fd in self._pending:
                with contextlib.suppress(OSError):
                    os.close(job_fd)
            self._pending.clear()
        self._finish_dirs()
        return count

    # Regular files are created by a few writer threads: on filesystems where each create
    # costs a fraction of a millisecond, creates, not bytes, dominate unpacking a base image.
    # The reading thread keeps the order that matters: directories are made before their
    # children are queued, and anything that replaces, removes or links to an entry of this
    # layer (duplicates, whiteouts, hardlinks) first waits for every queued write.
    def _submit(self, name: str, pfd: int, base: str, info: tarfile.TarInfo, data: bytes) -> None:
        assert self._pool is not None
        job_fd = os.dup(pfd)
        try:
            fut = self._pool.submit(self._write_file, job_fd, base, info, data)
        except BaseException:
            os.close(job_fd)
            raise
        self._pending.append((fut, name, job_fd))
        self._pending_bytes += len(data)
        while self._pending and (self._pending_bytes > MAX_PENDING_BYTES
                                 or len(self._pending) > MAX_PENDING_FILES
                                 or self._pending[0][0].done()):
            self._reap_one()

    def _reap_one(self) -> None:
        fut, name, _ = self._pending.popleft()
        try:
            self._pending_bytes -= fut.result()
        except OSError as e:
            raise self._os_error(e, name) from None

    def _drain(self) -> None:
        while self._pending:
            self._reap_one()

    def _write_file(self, dir_fd: int, base: str, info: tarfile.TarInfo, data: bytes) -> int:
        """Writer thread: create one regular file from bytes already read; closes dir_fd."""
        try:
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=dir_fd)
            try:
                if data:
                    _write_all(fd, data)
                self._finish_file(fd, dir_fd, base, info)
            finally:
                os.close(fd)
        finally:
            os.close(dir_fd)
        return len(data)

    def _finish_file(self, fd: int, pfd: int, base: str, info: tarfile.TarInfo) -> None:
        # chown first: it clears setuid/setgid, which chmod then sets.
        os.fchown(fd, info.uid, info.gid)
        os.fchmod(fd, info.mode & 0o7777)
        self._set_xattrs(pfd, base, info)
        os.utime(fd, (info.mtime, info.mtime))

    def _os_error(self, e: OSError, name: str) -> Exception:
        if e.errno == errno.ENOSPC:
            return SystemFailure(f"{self.what}: no space left unpacking {name!r}")
        if e.errno in (errno.ELOOP, errno.EEXIST, errno.EPERM, errno.ENOENT, errno.EINVAL):
            return UnsafeLayer(f"{self.what}: cannot apply entry {name!r}: {e.strerror}")
        return e

    def apply_entry(self, info: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        parts = clean_name(info.name)
        if not parts:
            return  # the root itself: its metadata belongs to the snapshot, not the layer
        base = parts[-1]
        key = "/".join(parts)
        try:
            if base.startswith(WHITEOUT_PREFIX) or info.islnk() or key in self._added:
                self._drain()
            if base.startswith(WHITEOUT_PREFIX):
                self._whiteout(parts, info.name)
                return
            self._added.add(key)
            with self._parent(parts) as pfd:
                self._create(pfd, base, info, tar)
        except NotADirectoryError:
            raise UnsafeLayer(
                f"{self.what}: entry {info.name!r} needs a directory where a file is"
            ) from None
        except OSError as e:
            err = self._os_error(e, info.name)
            if err is e:
                raise
            raise err from None

    def _whiteout(self, parts: list[str], raw: str) -> None:
        base = parts[-1]
        with self._parent(parts) as pfd:
            if base == OPAQUE_MARKER:
                if self.overlay:
                    os.setxattr(_proc_path(pfd, "."), OPAQUE_XATTR, b"y")
                else:
                    prefix = "/".join(parts[:-1])
                    for child in os.listdir(_proc_path(pfd, ".")):
                        key = f"{prefix}/{child}" if prefix else child
                        if key not in self._added:
                            self._stale = True
                            remove_entry(pfd, child)
                return
            target = base[len(WHITEOUT_PREFIX):]
            if target in ("", ".", "..") or "/" in target:
                raise UnsafeLayer(f"{self.what}: whiteout {raw!r} names no file in its directory")
            self._stale = True
            remove_entry(pfd, target)
            if self.overlay:
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)

    def _create(self, pfd: int, base: str, info: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        mode = info.mode & 0o7777
        try:
            existing = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None and not (info.isdir() and stat.S_ISDIR(existing.st_mode)):
            if stat.S_ISDIR(existing.st_mode) or stat.S_ISLNK(existing.st_mode):
                self._stale = True
            remove_entry(pfd, base)
        if info.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(base, 0o700, dir_fd=pfd)
            os.chown(base, info.uid, info.gid, dir_fd=pfd, follow_symlinks=False)
            os.chmod(base, mode, dir_fd=pfd)
            self._set_xattrs(pfd, base, info)
            self._dir_times.append((self._path_of(pfd, base), info.mtime))
            return
        if info.isreg():
            src = tar.extractfile(info)
            if self._pool is not None and info.size <= INLINE_FILE:
                data = src.read() if src is not None else b""
                self.bytes_written += len(data)
                self._submit(info.name, pfd, base, info, data)
                return
            # Big files stream from the reading thread: no point holding them in memory.
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=pfd)
            try:
                if src is not None:
                    while chunk := src.read(CHUNK):
                        _write_all(fd, chunk)
                        self.bytes_written += len(chunk)
                self._finish_file(fd, pfd, base, info)
            finally:
                os.close(fd)
            return
        if info.issym():
            # The target is only text; nothing we do later follows it outside the root.
            os.symlink(info.linkname, base, dir_fd=pfd)
        elif info.islnk():
            self._hardlink(pfd, base, info)
            return  # a hardlink shares the source's inode and metadata
        elif info.ischr() or info.isblk():
            kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK
            os.mknod(base, kind | 0o600, os.makedev(info.devmajor, info.devminor), dir_fd=pfd)
        elif info.isfifo():
            os.mkfifo(base, 0o600, dir_fd=pfd)
        else:
            raise UnsafeLayer(f"{self.what}: entry {info.name!r} has unsupported tar type {info.type!r}")
        os.chown(base, info.uid, info.gid, dir_fd=pfd, follow_symlinks=False)
        if not info.issym():
            os.chmod(base, mode, dir_fd=pfd)
        self._set_xattrs(pfd, base, info)
        os.utime(base, (info.mtime, info.mtime), dir_fd=pfd, follow_symlinks=False)

    def _hardlink(self, pfd: int, base: str, info: tarfile.TarInfo) -> None:
        src_parts = clean_name(info.linkname)
        if not src_parts:
            raise UnsafeLayer(f"{self.what}: hardlink {info.name!r} has no target")
        try:
            sfd = resolve_dir(self.root_fd, src_parts[:-1], create=False)
        except (FileNotFoundError, NotADirectoryError):
            raise UnsafeLayer(
                f"{self.what}: hardlink {info.name!r} -> {info.linkname!r} points outside the layer"
            ) from None
        try:
            st = os.stat(src_parts[-1], dir_fd=sfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise UnsafeLayer(f"{self.what}: hardlink {info.name!r} to a directory")
            os.link(src_parts[-1], base, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            raise UnsafeLayer(
                f"{self.what}: hardlink {info.name!r} -> {info.linkname!r} points outside the layer"
            ) from None
        finally:
            os.close(sfd)

    def _set_xattrs(self, pfd: int, base: str, info: tarfile.TarInfo) -> None:
        for key, value in info.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            # A layer must not forge overlay metadata (opaque dirs, redirects) of its own.
            if name.startswith("trusted.overlay.") or name.startswith("user.overlay."):
                continue
            raw = value.encode("utf-8", "surrogateescape")
            try:
                os.setxattr(_proc_path(pfd, base), name, raw, follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise

    def _path_of(self, pfd: int, base: str) -> list[str]:
        real = os.readlink(f"/proc/self/fd/{pfd}")
        rootreal = os.readlink(f"/proc/self/fd/{self.root_fd}")
        rel = os.path.relpath(real, rootreal)
        return ([] if rel == "." else rel.split("/")) + [base]

    def _finish_dirs(self) -> None:
        # Directory mtimes last: creating children would otherwise bump them.
        for parts, mtime in reversed(self._dir_times):
            try:
                fd = resolve_dir(self.root_fd, parts[:-1], create=False)
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                os.utime(parts[-1], (mtime, mtime), dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def apply_layer(
    stream: IO[bytes], dest: str, overlay: bool, what: str = "layer",
    expected_diff_id: str | None = None,
) -> LayerResult:
    """Unpack a (possibly compressed) layer tar into `dest` and verify its diff id."""
    reader = _HashingReader(stream, what)
    applier = LayerApplier(dest, overlay, what)
    try:
        try:
            tar = tarfile.open(fileobj=reader, mode="r|")  # type: ignore[call-overload]
            count = applier.apply(tar)
        except tarfile.TarError as e:
            raise CorruptLayer(f"{what}: not a valid tar: {e}") from None
        reader.drain()
    finally:
        applier.close()
    diff_id = "sha256:" + reader.hash.hexdigest()
    if expected_diff_id and diff_id != expected_diff_id:
        raise CorruptLayer(
            f"{what}: uncompressed content hashes to {diff_id}, but the image config says {expected_diff_id}"
        )
    return LayerResult(diff_id, count, applier.bytes_written)


def copy_tree(src: str, dest: str) -> None:
    """Copy a snapshot tree preserving everything (the copying snapshotter's base step)."""
    import subprocess

    try:
        subprocess.run(["cp", "-a", "--reflink=auto", f"{src}/.", dest], check=True,
                       capture_output=True)
    except subprocess.CalledProcessError as e:
        raise SystemFailure(f"copying snapshot {src} failed: {e.stderr.decode(errors='replace').strip()}") from None
    except FileNotFoundError:
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
