"""COPY and ADD's writes into a build container's rootfs, confined to it: every directory
is opened with RESOLVE_IN_ROOT (a symlink in the image, absolute or `..`, resolves inside
the rootfs, never on the host), and every file, link or directory is made relative to
such a directory fd with O_NOFOLLOW/O_EXCL, an entry in the way unlinked first.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass

from pallet.build.context import Entry, Exclude, Source
from pallet.errors import InvalidArgument


@dataclass(frozen=True)
class Owner:
    uid: int = 0
    gid: int = 0


class RootfsWriter:
    """Writes under ROOTFS (a build container's mounted root) as OWNER, MODE (--chmod)
    overriding the sources' permission bits."""

    def __init__(self, rootfs: str, owner: Owner, mode: int | None = None):
        self.rootfs = rootfs
        self.owner = owner
        self.mode = mode
        self._dirs: dict[str, int] = {}

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def __enter__(self) -> RootfsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_dir(self, path: str) -> bool:
        from pallet.engine.users import open_in_rootfs

        try:
            os.close(open_in_rootfs(self.rootfs, path, os.O_PATH | os.O_DIRECTORY))
            return True
        except OSError:
            return False

    def directory(self, path: str, links: int = 0) -> int:
        """An fd of directory PATH (resolved in the rootfs), made with its missing
        parents (owned by the owner, 0755); a dangling link on the way is followed inside
        the rootfs and its target made, as docker does."""
        from pallet.engine.users import open_in_rootfs

        path = posixpath.normpath("/" + path)
        if path in self._dirs:
            return self._dirs[path]
        try:
            fd = open_in_rootfs(self.rootfs, path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            parent = self.directory(posixpath.dirname(path), links)
            name = posixpath.basename(path)
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
            except FileExistsError:
                if links >= 40:
                    raise InvalidArgument(f"too many levels of symbolic links: {path}"
                                          ) from None
                target = os.readlink(name, dir_fd=parent)  # not a link: raises
                fd = self.directory(posixpath.join(posixpath.dirname(path), target),
                                    links + 1)
                self._dirs[path] = os.dup(fd)
                return self._dirs[path]
            os.chown(name, self.owner.uid, self.owner.gid, dir_fd=parent,
                     follow_symlinks=False)
            fd = open_in_rootfs(self.rootfs, path, os.O_RDONLY | os.O_DIRECTORY)
        except NotADirectoryError:
            raise InvalidArgument(f"cannot copy to non-directory: {path}") from None
        self._dirs[path] = fd
        return fd

    def copy(self, source: Source, rel: str, target: str, contents: bool,
             exclude: Exclude | None = None) -> None:
        """REL of SOURCE to TARGET (a path in the rootfs): a directory's CONTENTS go into
        TARGET (docker's COPY dir/ semantics), anything else becomes TARGET; what EXCLUDE
        leaves out (COPY --exclude) is not copied."""
        for e in source.walk(rel, exclude=exclude):
            if not e.path:
                if stat.S_ISDIR(e.st.st_mode) and contents:
                    self.directory(target)
                    continue
                self._entry(e, target)
            else:
                self._entry(e, posixpath.join(target, e.path))

    def _entry(self, e: Entry, path: str) -> None:
        pfd = self.directory(posixpath.dirname(path))
        name = posixpath.basename(path)
        mode = self.mode if self.mode is not None else stat.S_IMODE(e.st.st_mode)
        kind = stat.S_IFMT(e.st.st_mode)
        try:
            old = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if kind == stat.S_IFDIR:
            if old is None or not (stat.S_ISDIR(old.st_mode) or stat.S_ISLNK(old.st_mode)):
                if old is not None:
                    os.unlink(name, dir_fd=pfd)
                os.mkdir(name, 0o700, dir_fd=pfd)
                old = None
            if old is None or stat.S_ISDIR(old.st_mode):
                os.chown(name, self.owner.uid, self.owner.gid, dir_fd=pfd,
                         follow_symlinks=False)
                os.chmod(name, mode, dir_fd=pfd)
            self.directory(path)  # a link to a directory: followed inside the rootfs
            return
        if old is not None:
            if stat.S_ISDIR(old.st_mode):
                raise InvalidArgument(f"cannot overwrite directory {path} with non-directory")
            os.unlink(name, dir_fd=pfd)
        if kind == stat.S_IFLNK:
            os.symlink(e.link, name, dir_fd=pfd)
        elif kind == stat.S_IFREG:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=pfd)
            try:
                _copy_data(e.fd, fd, e.st.st_size)
                os.fchown(fd, self.owner.uid, self.owner.gid)
                os.fchmod(fd, mode)
                os.utime(fd, ns=(e.st.st_atime_ns, e.st.st_mtime_ns))
            finally:
                os.close(fd)
            return
        elif kind == stat.S_IFIFO:
            os.mkfifo(name, 0o600, dir_fd=pfd)
        else:
            return  # sockets and device nodes are not copied
        os.chown(name, self.owner.uid, self.owner.gid, dir_fd=pfd, follow_symlinks=False)
        if kind != stat.S_IFLNK:
            os.chmod(name, mode, dir_fd=pfd)
        os.utime(name, ns=(e.st.st_atime_ns, e.st.st_mtime_ns), dir_fd=pfd,
                 follow_symlinks=False)


def _copy_data(src: int, dst: int, size: int) -> None:
    os.lseek(src, 0, os.SEEK_SET)
    with contextlib.suppress(OSError):
        while size > 0:
            n = os.copy_file_range(src, dst, size)
            if n == 0:
                break
            size -= n
        if size <= 0:
            return
    while chunk := os.read(src, 1 << 20):
        os.write(dst, chunk)


def open_archive(source: Source, rel: str) -> tarfile.TarFile | None:
    """REL of SOURCE as a tar archive (plain, gzip, bzip2 or xz) if it is one: what ADD
    extracts instead of copying."""
    if source.is_dir(rel):
        return None
    for e in source.walk(rel):
        if e.fd < 0:
            return None
        f = os.fdopen(os.dup(e.fd), "rb")
        try:
            tar = tarfile.open(fileobj=f, mode="r:*")
        except (tarfile.TarError, EOFError, OSError):
            f.close()
            return None
        tar.fileobj_to_close = f  # type: ignore[attr-defined]
        return tar
    return None


def extract_archive(tar: tarfile.TarFile, into: str) -> None:
    """TAR's entries into the empty directory INTO, confined to it (pallet's layer
    applier: `..` refused, links resolved inside INTO)."""
    from pallet.image.unpack import LayerApplier

    applier = LayerApplier(into, overlay=False, what="ADD archive")
    try:
        applier.apply(tar)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise
        raise InvalidArgument(f"cannot extract archive: {e}") from None
    finally:
        applier.close()
        tar.close()
        tar.fileobj_to_close.close()
