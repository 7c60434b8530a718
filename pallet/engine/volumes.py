"""Named and anonymous volumes: a directory per volume under <root>/volumes/NAME/_data,
recorded in the store, populated from the image on first use like docker's. A volume
created with docker's `local` driver options (type, device, o) has that filesystem
mounted on _data while a container uses it (refcounted per container, as docker's).

Also parses `-v`/`--tmpfs`/`--mount` specs into VolumeSpecs and specgen Mounts (pure
functions).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pallet.engine.specgen import Mount
from pallet.engine.store import Store, VolumeRecord, new_id, validate_name
from pallet.errors import FailedPrecondition, InvalidArgument, NotFound, SystemFailure

ANONYMOUS_LABEL = "io.pallet.volume.anonymous"
_BIND_OPTIONS = {"ro", "rw", "z", "Z", "private", "rprivate", "shared", "rshared", "slave",
                 "rslave", "nocopy", "consistent", "cached", "delegated"}


@dataclass
class VolumeSpec:
    """One parsed `-v`: a bind of a host path, or a named/anonymous volume."""

    destination: str
    source: str = ""          # host path (bind) or volume name ("" = anonymous)
    kind: str = "volume"      # "bind" or "volume"
    readonly: bool = False
    propagation: str = ""
    nocopy: bool = False


def parse_volume(spec: str) -> VolumeSpec:
    """docker's -v syntax: [SRC:]DEST[:OPTS], OPTS comma-separated ro|rw|propagation|nocopy."""
    parts = spec.split(":")
    if not spec or len(parts) > 3 or any(p == "" for p in parts):
        raise InvalidArgument(f"invalid volume specification: '{spec}'; use "
                              "[HOST-DIR|NAME:]CONTAINER-DIR[:ro]")
    opts: list[str] = []
    if len(parts) == 3 or (len(parts) == 2 and not parts[1].startswith("/")):
        opts = parts.pop().split(",")
    if len(parts) == 1:
        src, dest = "", parts[0]
    else:
        src, dest = parts
    if not dest.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{spec}': the container path "
                              f"{dest!r} must be absolute")
    if dest == "/":
        raise InvalidArgument(f"invalid volume specification: '{spec}': cannot mount over /")
    vs = VolumeSpec(destination=os.path.normpath(dest), source=src,
                    kind="bind" if src.startswith("/") else "volume")
    for o in opts:
        if o not in _BIND_OPTIONS:
            raise InvalidArgument(f"invalid volume specification: '{spec}': unknown option {o!r}")
        if o == "ro":
            vs.readonly = True
        elif o in ("private", "rprivate", "shared", "rshared", "slave", "rslave"):
            vs.propagation = o
        elif o == "nocopy":
            vs.nocopy = True
    if vs.kind == "volume" and src:
        validate_name(src, "volume")
    return vs


def parse_tmpfs(spec: str) -> Mount:
    """--tmpfs DEST[:OPTS] (OPTS like size=64m,mode=1777)."""
    dest, _, opts = spec.partition(":")
    if not dest.startswith("/"):
        raise InvalidArgument(f"invalid tmpfs specification {spec!r}: the path must be absolute")
    return Mount(destination=os.path.normpath(dest), type="tmpfs",
                 options=[o for o in opts.split(",") if o])


_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


def parse_mount(spec: str) -> VolumeSpec | Mount:
    """docker's --mount CSV: type=bind|volume|tmpfs,source=,target=[,readonly]
    [,bind-propagation=][,volume-nocopy][,tmpfs-size=][,tmpfs-mode=]; a bind or a volume
    as `-v` gives it (a VolumeSpec), a tmpfs as `--tmpfs` (a Mount)."""
    import csv

    from pallet.units import ram_in_bytes

    def bad(why: str) -> InvalidArgument:
        return InvalidArgument(f'invalid argument "{spec}" for "--mount" flag: {why}')

    def parse_bool(key: str, val: str) -> bool:
        if val not in _TRUE + _FALSE:
            raise bad(f"invalid value for {key}: {val}")
        return val in _TRUE

    try:
        fields = next(csv.reader([spec]), [])
    except csv.Error as e:
        raise bad(str(e)) from None
    kind, source, target, readonly = "volume", "", "", False
    propagation, nocopy, tmpfs_opts = "", False, []
    used: set[str] = set()  # the bind-/volume-/tmpfs- families given
    for field in fields:
        key, sep, val = field.partition("=")
        key = key.lower()  # docker's CLI reads keys case-insensitively
        if not sep:
            if key in ("readonly", "ro"):
                readonly = True
            elif key == "volume-nocopy":
                nocopy = True
                used.add("volume")
            else:
                raise bad(f"invalid field '{field}' must be a key=value pair")
            continue
        if key == "type":
            kind = val.lower()
        elif key in ("source", "src"):
            source = os.path.abspath(val) if val == "." or val.startswith("./") else val
        elif key in ("target", "dst", "destination"):
            target = val
        elif key in ("readonly", "ro"):
            readonly = parse_bool(key, val)
        elif key == "consistency":
            pass  # macOS's; docker ignores it on Linux
        elif key == "bind-propagation":
            propagation = val.lower()
            used.add("bind")
        elif key == "volume-nocopy":
            nocopy = parse_bool(key, val)
            used.add("volume")
        elif key == "tmpfs-size":
            try:
                tmpfs_opts.append(f"size={ram_in_bytes(val)}")
            except ValueError:
                raise bad(f"invalid value for {key}: {val}") from None
            used.add("tmpfs")
        elif key == "tmpfs-mode":
            try:
                tmpfs_opts.append(f"mode={int(val, 8):o}")
            except ValueError:
                raise bad(f"invalid value for {key}: {val}") from None
            used.add("tmpfs")
        else:
            raise bad(f"unexpected key '{key}' in '{field}'")
    if not kind:
        raise bad("type is required")
    if not target:
        raise bad("target is required")
    for family in sorted(used - {kind}):
        raise bad(f"cannot mix '{family}-*' options with mount type '{kind}'")
    # The rest is what docker's daemon checks: the same words, exit 125 too.
    where = f'invalid mount config for type "{kind}"'
    if kind not in ("bind", "volume", "tmpfs"):
        raise InvalidArgument(f"{where}: mount type unknown")
    if not target.startswith("/"):
        raise InvalidArgument(f"{where}: invalid mount path: '{target}' mount path must be "
                              "absolute")
    if os.path.normpath(target) == "/":
        raise InvalidArgument(f"{where}: invalid specification: destination can't be '/'")
    target = os.path.normpath(target)
    if kind == "tmpfs":
        if source:
            raise InvalidArgument(f"{where}: field Source must not be specified")
        return Mount(destination=target, type="tmpfs", readonly=readonly, options=tmpfs_opts)
    if kind == "bind":
        if not source:
            raise InvalidArgument(f"{where}: field Source must not be empty")
        if not source.startswith("/"):
            raise InvalidArgument(f"{where}: invalid mount path: '{source}' mount path must "
                                  "be absolute")
        if propagation and propagation not in _PROPAGATIONS:
            raise InvalidArgument(f"{where}: invalid propagation mode: {propagation}")
    elif source:
        if source.startswith("/"):
            raise InvalidArgument(f'{where}: invalid mount source: "{source}"')
        validate_name(source, "volume")
    return VolumeSpec(destination=target, source=os.path.normpath(source) if kind == "bind"
                      else source, kind=kind, readonly=readonly, propagation=propagation,
                      nocopy=nocopy)


# docker's local driver on Linux (moby volume/local/local_unix.go): the options it takes,
# and the others each one needs.
LOCAL_OPTIONS = ("type", "o", "device", "size")
_REQUIRED = (("device", ("type",)), ("type", ("device",)), ("o", ("device", "type")))


def _quoted(s: str) -> str:
    """Go's %q of S, as docker's messages quote a value."""
    import json

    return json.dumps(s, ensure_ascii=False)


def validate_local_options(opts: dict[str, str]) -> None:
    """docker's checks of `volume create -o` for the local driver, in its words."""
    for key in opts:
        if key not in LOCAL_OPTIONS:
            raise InvalidArgument(f"invalid option: {_quoted(key)}")
    if "size" in opts:
        from pallet.units import ram_in_bytes

        try:
            size = ram_in_bytes(opts["size"])
        except ValueError:
            raise InvalidArgument(f"invalid size: '{opts['size']}'") from None
        if size > 0:  # docker needs project quotas (xfs/ext4 prjquota) under its root
            raise InvalidArgument("quota size requested but no quota support")
    for key, needs in _REQUIRED:
        for need in needs if key in opts else ():
            if need not in opts:
                raise InvalidArgument(f"missing required option: {_quoted(need)}")


def needs_mount(opts: dict[str, str]) -> bool:
    """Whether a volume of these options is a filesystem mounted on its _data."""
    return bool(opts.get("device") or opts.get("type"))


def _go_strerror(errno: int) -> str:
    """An errno as Go's syscall.Errno says it (lower case)."""
    text = os.strerror(errno)
    return text[:1].lower() + text[1:]


def mount_local(opts: dict[str, str], target: str) -> None:
    """Mount the filesystem of a local volume's OPTS on TARGET as moby's mount.Mount does:
    `o` split into mount flags and filesystem data, then propagation, then a read-only
    remount of a bind. Raises SystemFailure in docker's words."""
    from pallet.oci.linux import syscalls as sc
    from pallet.oci.linux.mounts import parse_options

    device, fstype = opts.get("device", ""), opts.get("type", "")
    if not device:
        raise SystemFailure("missing device in volume options")
    plan = parse_options([o for o in opts.get("o", "").split(",") if o])
    flags, data = plan.flags, ",".join(plan.data)
    try:
        sc.mount(device, target, fstype or None, flags, data or None)
    except OSError as e:
        what = f"mount {device}:{target}" + (f", flags: 0x{flags:x}" if flags else "") + \
            (f", data: {data}" if data else "")
        password = next((o[9:] for o in plan.data if o.startswith("password=")), "")
        if password:
            what = what.replace(f"password={password}", "password=********", 1)
        raise SystemFailure(f"failed to mount local volume: {what}: "
                            f"{_go_strerror(e.errno or 0)}") from None
    try:
        for prop in plan.propagation:
            sc.mount(None, target, None, prop)
        if flags & sc.MS_BIND and flags & sc.MS_RDONLY:
            sc.mount(None, target, None, flags | sc.MS_REMOUNT)
    except OSError as e:
        unmount_all(target)
        raise SystemFailure(f"failed to mount local volume: {e}") from None


def unmount_all(path: str) -> None:
    """Detach whatever is mounted on PATH (a volume's _data); SystemFailure if it stays."""
    from pallet.image.snapshot import is_mountpoint
    from pallet.oci.linux import syscalls as sc

    for _ in range(8):  # mounts may be stacked
        if not is_mountpoint(path):
            return
        try:
            sc.umount2(path, sc.MNT_DETACH)
        except OSError as e:
            raise SystemFailure(f"cannot unmount volume data {path}: {e.strerror}") from None
    if is_mountpoint(path):
        raise SystemFailure(f"cannot unmount volume data {path}: still mounted")


class Volumes:
    """Volumes of one pallet root."""

    def __init__(self, store: Store, root: str):
        self.store = store
        self.root = root
        self.dir = os.path.join(root, "volumes")

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name, "_data")

    def create(self, name: str = "", labels: dict[str, str] | None = None,
               driver: str = "local", options: dict[str, str] | None = None) -> VolumeRecord:
        """An existing volume of that NAME as it is (docker's), else a new one; OPTIONS:
        docker's local driver options (type, device, o), checked here."""
        if driver != "local":
            raise InvalidArgument(f"volume driver {driver!r} is not supported; use 'local'")
        anonymous = not name
        name = name or new_id()
        options = dict(options or {})
        try:
            validate_local_options(options)
        except InvalidArgument as e:
            raise InvalidArgument(f"create {name}: {e}") from None
        try:
            return self.store.get_volume(name) if not anonymous else \
                self._add(name, labels, True, options)
        except NotFound:
            return self._add(name, labels, False, options)

    def _add(self, name: str, labels: dict[str, str] | None, anonymous: bool,
             options: dict[str, str]) -> VolumeRecord:
        labels = dict(labels or {})
        if anonymous:
            labels[ANONYMOUS_LABEL] = "true"
        data = self.path(name)
        os.makedirs(data, mode=0o755, exist_ok=True)
        try:
            rec = self.store.add_volume(VolumeRecord(name=name, mountpoint=data, labels=labels,
                                                     options=options))
        except Exception:
            shutil.rmtree(os.path.dirname(data), ignore_errors=True)
            raise
        self.event(name, "create")
        return rec

    def event(self, name: str, action: str, **attrs: str) -> None:
        """docker's volume event (driver and ATTRS) in the root's events journal."""
        from pallet.events import emit

        emit(self.root, "volume", action, name, {"driver": "local", **attrs})

    def get(self, name: str) -> VolumeRecord:
        try:
            return self.store.get_volume(name)
        except NotFound:
            raise NotFound(f"no such volume: {name}") from None

    def list(self) -> list[VolumeRecord]:
        return self.store.list_volumes()

    def users(self, name: str) -> list[str]:
        """Ids of containers whose config names this volume."""
        return [c.id for c in self.store.list_containers()
                if name in (c.config.get("volume_names") or [])]

    def remove(self, name: str, force: bool = False) -> None:
        rec = self.get(name)
        used = self.users(rec.name)
        if used and not force:
            raise FailedPrecondition(f"remove {rec.name}: volume is in use - "
                                     f"[{', '.join(used)}]")
        # Never delete through a mount: _data may be a bind of a host directory.
        unmount_all(self.path(rec.name))
        self.store.remove_volume(rec.name)
        shutil.rmtree(os.path.join(self.dir, rec.name), ignore_errors=True)
        self.event(rec.name, "destroy")

    def prune(self, all: bool = True,
              only: Callable[[VolumeRecord], bool] | None = None) -> list[str]:
        """Remove the anonymous volumes no container names (ALL: every such volume; ONLY:
        of those, the ones it chooses, a prune's filters); returns their names."""
        removed = []
        for v in self.list():
            if not all and v.labels.get(ANONYMOUS_LABEL) != "true":
                continue
            if only and not only(v):
                continue
            if not self.users(v.name):
                self.remove(v.name)
                removed.append(v.name)
        return removed

    def populate(self, name: str, rootfs: str, dest: str, holder: str) -> None:
        """Copy the image's content at DEST into an empty volume, once (docker's rule); a
        volume with a filesystem of its own is mounted for the copy (for HOLDER), as
        docker's daemon does at create (a tmpfs then loses it again when unmounted)."""
        from pallet.engine.users import open_in_rootfs

        try:
            fd = open_in_rootfs(rootfs, dest, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return  # nothing in the image at that path
        try:
            try:
                self.acquire(name, holder)
            except SystemFailure as e:
                raise SystemFailure(f"failed to populate volume: {e}") from None
            try:
                data = self.path(name)
                if os.listdir(data):
                    return
                _copy_dir_fd(fd, data)
                st = os.fstat(fd)
                os.chown(data, st.st_uid, st.st_gid)
                os.chmod(data, st.st_mode & 0o7777)
            finally:
                self.release(name, holder)
        finally:
            os.close(fd)

    # -- the mounts of volumes with options (docker's local driver Mount/Unmount) ----------
    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[str]:
        """The volume's dir, under an exclusive lock on its refcount."""
        import fcntl

        vdir = os.path.join(self.dir, name)
        fd = os.open(os.path.join(vdir, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield vdir
        finally:
            os.close(fd)

    def _holders(self, active: str) -> set[str]:
        """Who holds a volume mounted: container ids, or ID.WHAT for a while (ID.cp: a copy
        into a stopped container); a record of a container that is gone is dropped."""
        out = set()
        for h in os.listdir(active) if os.path.isdir(active) else ():
            try:
                self.store.get_container(h.partition(".")[0])
            except NotFound:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(active, h))
                continue
            out.add(h)
        return out

    def acquire(self, name: str, holder: str) -> None:
        """Mount the volume's filesystem on its _data for HOLDER (a container id) unless it
        is mounted already; a volume without options has nothing to mount."""
        from pallet.image.snapshot import is_mountpoint

        rec = self.get(name)
        if not needs_mount(rec.options):
            return
        data = self.path(rec.name)
        with self._locked(rec.name) as vdir:
            active = os.path.join(vdir, "active")
            if not is_mountpoint(data):
                # Holders recorded with nothing mounted are from before a reboot.
                shutil.rmtree(active, ignore_errors=True)
                try:
                    mount_local(rec.options, data)
                except SystemFailure as e:
                    raise SystemFailure(f"error while mounting volume '{data}': {e}") from None
            try:
                os.makedirs(active, mode=0o700, exist_ok=True)
                with open(os.path.join(active, holder), "w"):
                    pass
            except OSError:
                if not self._holders(active):
                    unmount_all(data)
                raise

    def release(self, name: str, holder: str) -> None:
        """HOLDER no longer uses the volume: the last one out unmounts it (idempotent)."""
        try:
            rec = self.get(name)
        except NotFound:
            return  # removed (forced) meanwhile: unmounted then
        if not needs_mount(rec.options):
            return
        with self._locked(rec.name) as vdir:
            active = os.path.join(vdir, "active")
            try:
                os.unlink(os.path.join(active, holder))
            except FileNotFoundError:
                return  # not held by HOLDER: leave the others' mount alone
            if not self._holders(active):
                unmount_all(self.path(rec.name))


def _copy_dir_fd(src_fd: int, dest: str) -> None:
    """Copy a directory given by fd into DEST without following any symlink in it."""
    for entry in os.scandir(src_fd):
        target = os.path.join(dest, entry.name)
        st = entry.stat(follow_symlinks=False)
        if entry.is_symlink():
            os.symlink(os.readlink(entry.name, dir_fd=src_fd), target)
        elif entry.is_dir(follow_symlinks=False):
            os.mkdir(target, st.st_mode & 0o7777)
            sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                          dir_fd=src_fd)
            try:
                _copy_dir_fd(sub, target)
            finally:
                os.close(sub)
        elif entry.is_file(follow_symlinks=False):
            fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=src_fd)
            try:
                with open(fd, "rb", closefd=False) as fsrc, open(target, "wb") as fdst:
                    shutil.copyfileobj(fsrc, fdst)
            finally:
                os.close(fd)
            os.chmod(target, st.st_mode & 0o7777)
        else:
            continue  # devices, fifos and sockets are not copied
        os.lchown(target, st.st_uid, st.st_gid)
