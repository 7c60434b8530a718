"""Snapshots: one directory per layer chain id, shared between images, mounted with overlayfs.

The overlay driver stores each layer's own files (with overlay whiteouts); the copying
fallback stores each chain fully merged. Container rootfs = overlay(lowers, upper) or a copy.
A read-only *view* of an image (an image volume) = overlay(lowers) or a read-only bind.

For a container in a user namespace (`Idmap`), the layers are seen through idmapped mounts
(containerd's remapped overlay): each lower is cloned with open_tree, given the user
namespace's idmapping with mount_setattr and attached in a staging dir, overlay is mounted
over those, and the staging mounts are detached again (overlay holds its own references).
The shared snapshots on disk are never chowned.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pallet.errors import SystemFailure
from pallet.image.content import atomic_write, file_lock, transient_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    # Unpacking (tarfile, lzma, bz2, its writer threads) is imported by the calls that
    # unpack or copy, so mounting a rootfs (the daemon, its spawner) never loads it.
    from pallet.image.unpack import LayerResult

MNT_DETACH = 2


def chain_ids(diff_ids: list[str] | tuple[str, ...]) -> list[str]:
    """OCI ChainID: chain(L0)=diff(L0); chain(Ln)=sha256(chain(Ln-1) + " " + diff(Ln))."""
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


@dataclass(frozen=True)
class Mount:
    """A mount as data (type, source, options), like containerd's mount.Mount."""

    type: str
    source: str
    options: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Idmap:
    """Mount layers as seen from the user namespace `userns` (an nsfs file): on-disk id 0
    shows as the namespace's root, host `uid`:`gid`, which also owns the writable top."""

    userns: str
    uid: int = -1
    gid: int = -1


_libc: ctypes.CDLL | None = None


def _libc_fn() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        # CDLL(None) is the already-loaded libc; find_library("c") would run ldconfig.
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def mount(source: str, target: str, fstype: str, options: str, flags: int = 0) -> None:
    rc = _libc_fn().mount(source.encode(), target.encode(), fstype.encode(), flags, options.encode())
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {fstype} on {target}: {os.strerror(e)}")


def umount(target: str, flags: int = 0) -> None:
    rc = _libc_fn().umount2(target.encode(), flags)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"umount {target}: {os.strerror(e)}")


def is_mountpoint(path: str) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            real = os.path.realpath(path)
            return any(line.split()[4] == real for line in f)
    except OSError:
        return False


def probe_overlay(base: Path) -> bool:
    """Can we mount overlayfs with whiteouts here? (root, kernel support, a usable fs)."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/filesystems") as f:
            if "overlay" not in f.read():
                return False
    except OSError:
        return False
    with tempfile.TemporaryDirectory(dir=base, prefix=".probe-") as tmp:
        t = Path(tmp)
        for d in ("lower", "upper", "work", "merged"):
            (t / d).mkdir()
        try:
            os.mknod(t / "lower" / "wh", 0o020000, os.makedev(0, 0))
            os.setxattr(t / "lower", "trusted.overlay.opaque", b"y")
            mount("overlay", str(t / "merged"), "overlay",
                  f"lowerdir={t}/lower,upperdir={t}/upper,workdir={t}/work")
        except OSError:
            return False
        hidden = not (t / "merged" / "wh").exists()
        umount(str(t / "merged"))
        return hidden


OVERLAY_PARAMETERS = "/sys/module/overlay/parameters"


def overlay_upper_options(parameters: str = OVERLAY_PARAMETERS) -> list[str]:
    """`redirect_dir=off` and `metacopy=off`, each only if this kernel's overlay knows it.

    With either on, a rename or a chmod in the container is stored partly in the lower
    layers, and diff/commit, which read the upper dir alone, would miss it. Both are off by
    default on most kernels, but the host (module parameters, CONFIG_OVERLAY_FS_*) decides
    the default: say it. A kernel knows an option when it has the module parameter.
    """
    return [f"{name}=off" for name in ("redirect_dir", "metacopy")
            if os.path.exists(os.path.join(parameters, name))]


def mount_overlay(target: str, options: list[str], writable: bool) -> None:
    """Mount overlayfs at TARGET; a WRITABLE one (with an upper dir) gets
    `overlay_upper_options()`, dropped again if the kernel refuses them (EINVAL)."""
    extra = overlay_upper_options() if writable else []
    if extra:
        try:
            mount("overlay", target, "overlay", _overlay_data([*options, *extra]))
            return
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            # Refused (an older kernel, or a build where one conflicts with its defaults):
            # mount with the kernel's defaults; diff.py refuses uppers it cannot read.
    mount("overlay", target, "overlay", _overlay_data(options))


def _overlay_data(options: list[str]) -> str:
    data = ",".join(options)
    if len(data) >= 4096:
        lowers = next((o for o in options if o.startswith("lowerdir=")), "").count(":") + 1
        raise SystemFailure(f"too many layers for one overlay mount ({lowers})")
    return data


MS_RDONLY, MS_REMOUNT, MS_BIND = 0x1, 0x20, 0x1000


def _bind_read_only(source: str, target: str) -> None:
    mount(source, target, "", "", MS_BIND)
    try:
        mount("", target, "", "", MS_BIND | MS_REMOUNT | MS_RDONLY)
    except OSError:
        umount(target, MNT_DETACH)
        raise


class Snapshotter:
    """Layer snapshots under `<root>/snapshots/<chain hex>/fs`."""

    def __init__(self, root: str | os.PathLike[str], driver: str | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.driver = driver or self._detect_driver()

    def _detect_driver(self) -> str:
        marker = self.root / "driver"
        # The driver is fixed once snapshots exist: overlay dirs are not merged trees.
        with contextlib.suppress(FileNotFoundError):
            return marker.read_text().strip()
        with file_lock(self.root / "driver.lock"):
            with contextlib.suppress(FileNotFoundError):
                return marker.read_text().strip()
            driver = "overlay" if probe_overlay(self.root) else "copy"
            atomic_write(marker, driver.encode())
            return driver

    def dir(self, chain_id: str) -> Path:
        return self.root / chain_id.split(":", 1)[1]

    def fs(self, chain_id: str) -> Path:
        return self.dir(chain_id) / "fs"

    def exists(self, chain_id: str) -> bool:
        return (self.dir(chain_id) / "fs").is_dir()

    def all(self) -> set[str]:
        return {"sha256:" + p.name for p in self.root.iterdir() if len(p.name) == 64}

    def ensure_layer(
        self, chain_id: str, parent: str | None, open_layer: Callable[[], IO[bytes]],
        diff_id: str, what: str,
    ) -> LayerResult | None:
        """Unpack a layer into its chain's snapshot unless it exists; atomic and lock-guarded."""
        if self.exists(chain_id):
            return None
        with self._lock(chain_id):
            if self.exists(chain_id):
                return None  # a concurrent pull made it while we waited
            from pallet.image.unpack import apply_layer, copy_tree

            tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".tmp-"))
            try:
                fs = tmp / "fs"
                fs.mkdir()
                os.chmod(fs, 0o755)
                if self.driver == "copy" and parent:
                    copy_tree(str(self.fs(parent)), str(fs))
                with open_layer() as stream:
                    result = apply_layer(stream, str(fs), overlay=self.driver == "overlay",
                                         what=what, expected_diff_id=diff_id)
                (tmp / "meta.json").write_text(json.dumps(
                    {"chain_id": chain_id, "parent": parent, "diff_id": diff_id,
                     "size": result.bytes_written}))
                os.rename(tmp, self.dir(chain_id))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return result

    def _lock(self, chain_id: str, blocking: bool = True) -> contextlib.AbstractContextManager[bool]:
        """The lock that makes and removes CHAIN_ID's snapshot; its file goes with it."""
        return transient_lock(self.root / f".{chain_id.split(':', 1)[1]}.lock", blocking)

    def remove(self, chain_id: str) -> None:
        d = self.dir(chain_id)
        with self._lock(chain_id):
            if d.exists():
                # Rename first so a crash mid-delete never leaves a half snapshot under its id.
                trash = self.root / f".rm-{d.name}-{os.getpid()}"
                os.rename(d, trash)
                shutil.rmtree(trash, ignore_errors=True)

    def clean_temp(self) -> None:
        for p in self.root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".rm-*"):
            shutil.rmtree(p, ignore_errors=True)
        # Lock files of holders that died (or of pallet versions that kept them): taking a
        # free one removes it; a busy one belongs to a live holder, who removes it.
        for p in self.root.glob(".*.lock"):
            hexid = p.name[1:-5]
            if len(hexid) == 64:
                with self._lock("sha256:" + hexid, blocking=False):
                    pass

    def mounts(self, chain: list[str], upper: str | None = None, work: str | None = None) -> list[Mount]:
        """How to mount the rootfs for a layer chain (bottom first), overlay or bind."""
        if self.driver == "copy" or not chain:
            src = str(self.fs(chain[-1])) if chain else ""
            return [Mount("bind", src, ["rbind", "ro" if upper is None else "rw"])]
        lowers = ":".join(str(self.fs(c)) for c in reversed(chain))
        opts = [f"lowerdir={lowers}"]
        if upper and work:
            opts += [f"upperdir={upper}", f"workdir={work}", *overlay_upper_options()]
        return [Mount("overlay", "overlay", opts)]

    def prepare_rootfs(self, chain: list[str], container_dir: str | os.PathLike[str],
                       idmap: Idmap | None = None, image: dict | None = None) -> Path:
        """Make `<container_dir>/rootfs` writable over the image; the caller releases it.

        IMAGE (the image's manifest descriptor and blobs, `ImageStore.prepare_rootfs`) is
        kept in the lease, so the image outlives its removal while the container exists."""
        cdir = Path(container_dir)
        rootfs = cdir / "rootfs"
        rootfs.mkdir(parents=True, exist_ok=True)
        if idmap is not None and self.driver != "overlay":
            raise SystemFailure("a container in a user namespace needs the overlay snapshot "
                                "driver (this image store copies layers)")
        self._write_lease(cdir, chain, image)
        try:
            if self.driver == "overlay":
                if not is_mountpoint(str(rootfs)):
                    upper, work = cdir / "upper", cdir / "work"
                    upper.mkdir(exist_ok=True)
                    work.mkdir(exist_ok=True)
                    if not chain:
                        # No layers (a build FROM scratch): the container writes into
                        # its upper dir all the same, where diff and commit look.
                        mount(str(upper), str(rootfs), "", "", MS_BIND)
                        return rootfs
                    if idmap is not None:
                        # Files the container makes are stored with its host ids; its root
                        # must own the top of the writable layer to write to "/".
                        if idmap.uid >= 0 and idmap.gid >= 0:
                            os.chown(upper, idmap.uid, idmap.gid)
                        self._mount_layers(chain, rootfs, cdir / ".idmap-rootfs", idmap,
                                           [f"upperdir={upper}", f"workdir={work}"])
                        return rootfs
                    lowers = ":".join(str(self.fs(c)) for c in reversed(chain))
                    mount_overlay(str(rootfs), [f"lowerdir={lowers}", f"upperdir={upper}",
                                                f"workdir={work}"], writable=True)
            elif chain and not any(rootfs.iterdir()):
                from pallet.image.unpack import copy_tree

                copy_tree(str(self.fs(chain[-1])), str(rootfs))
        except OSError as e:
            self._drop_lease(cdir)
            raise SystemFailure(f"cannot prepare rootfs in {cdir}: {e}") from None
        return rootfs

    def prepare_view(self, chain: list[str], view_dir: str | os.PathLike[str],
                     idmap: Idmap | None = None) -> Path:
        """Mount the image of CHAIN read-only at VIEW_DIR (an image volume), leased so
        prune keeps its snapshots while VIEW_DIR exists; `release_view` undoes it."""
        view = Path(view_dir)
        if not chain:
            raise SystemFailure(f"cannot mount an image without layers at {view}")
        view.mkdir(parents=True, exist_ok=True)
        self._write_lease(view, chain)
        if is_mountpoint(str(view)):
            return view
        try:
            if self.driver == "copy":
                layers = [chain[-1]]  # merged: the top one is the whole image
            else:
                layers = chain
            if idmap is not None:
                self._mount_layers(layers, view, view.parent / f".idmap-{view.name}", idmap, [])
            elif len(layers) == 1:
                _bind_read_only(str(self.fs(layers[0])), str(view))
            else:
                lowers = ":".join(str(self.fs(c)) for c in reversed(layers))
                mount_overlay(str(view), [f"lowerdir={lowers}"], writable=False)
        except OSError as e:
            self._drop_lease(view)
            raise SystemFailure(f"cannot mount the image at {view}: {e}") from None
        return view

    def release_view(self, view_dir: str | os.PathLike[str], drop_lease: bool = True) -> None:
        """Unmount a view; DROP_LEASE=False keeps its snapshots for the next mount."""
        view = Path(view_dir)
        if is_mountpoint(str(view)):
            try:
                umount(str(view))
            except OSError:
                umount(str(view), MNT_DETACH)
        if drop_lease:
            self._drop_lease(view)

    def _mount_layers(self, layers: list[str], target: Path, stage: Path, idmap: Idmap,
                      extra: list[str]) -> None:
        """Overlay (or, for one layer and no upper, a read-only bind) of idmapped LAYERS
        at TARGET, staged in STAGE, which is gone again afterwards."""
        from pallet.oci.linux import syscalls as sc

        try:
            ns_fd = os.open(idmap.userns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SystemFailure(f"cannot open user namespace {idmap.userns}: "
                                f"{e.strerror}") from None
        stage.mkdir(exist_ok=True)
        attached: list[str] = []
        try:
            for i, c in enumerate(reversed(layers)):  # overlay wants the top layer first
                d = stage / str(i)
                d.mkdir(exist_ok=True)
                tree = sc.open_tree(-100, str(self.fs(c)), sc.OPEN_TREE_CLONE)
                try:
                    sc.mount_setattr(tree, "", sc.AT_EMPTY_PATH, sc.MOUNT_ATTR_IDMAP,
                                     userns_fd=ns_fd)
                    sc.move_mount(tree, "", -100, str(d), sc.MOVE_MOUNT_F_EMPTY_PATH)
                finally:
                    os.close(tree)
                attached.append(str(d))
            if len(attached) == 1 and not extra:
                _bind_read_only(attached[0], str(target))
            else:
                mount_overlay(str(target), [f"lowerdir={':'.join(attached)}", *extra],
                              writable=bool(extra))
        finally:
            os.close(ns_fd)
            for d in attached:
                with contextlib.suppress(OSError):
                    umount(d, MNT_DETACH)
            # rmdir, never rmtree: a stage dir still mounted holds a shared snapshot.
            for d in [*sorted(stage.iterdir()), stage] if stage.is_dir() else []:
                with contextlib.suppress(OSError):
                    os.rmdir(d)

    def release_rootfs(self, container_dir: str | os.PathLike[str],
                       drop_lease: bool = True) -> None:
        """Unmount a rootfs; DROP_LEASE=False (a container that only stopped) keeps its
        image for the next start."""
        cdir = Path(container_dir)
        rootfs = cdir / "rootfs"
        if is_mountpoint(str(rootfs)):
            try:
                umount(str(rootfs))
            except OSError:
                # Busy (a process still holds it): detach so the dir can still be removed.
                umount(str(rootfs), MNT_DETACH)
        if drop_lease:
            self._drop_lease(cdir)

    # Leases keep a running container's snapshots safe from prune.
    def _lease_path(self, cdir: Path) -> Path:
        key = hashlib.sha256(str(cdir.resolve()).encode()).hexdigest()[:32]
        return self.root.parent / "leases" / f"{key}.json"

    def _write_lease(self, cdir: Path, chain: list[str], image: dict | None = None) -> None:
        p = self._lease_path(cdir)
        p.parent.mkdir(exist_ok=True)
        doc: dict = {"container_dir": str(cdir.resolve()), "chain": chain}
        if image:
            doc["image"] = image
        atomic_write(p, json.dumps(doc).encode())

    def _drop_lease(self, cdir: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._lease_path(cdir).unlink()

    def lease(self, container_dir: str | os.PathLike[str]) -> dict | None:
        """The lease CONTAINER_DIR holds, if any."""
        with contextlib.suppress(OSError, ValueError):
            return json.loads(self._lease_path(Path(container_dir)).read_text())
        return None

    def leased(self) -> set[str]:
        out: set[str] = set()
        for doc in live_leases(self.root.parent / "leases"):
            out.update(doc["chain"])
        return out


def live_leases(leases_dir: Path) -> list[dict]:
    """The leases whose holder (a container or view dir) still exists."""
    out = []
    if not leases_dir.is_dir():
        return out
    for p in leases_dir.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            doc = json.loads(p.read_text())
            if Path(doc["container_dir"]).exists():
                out.append(doc)
    return out
