"""The engine's containers: create from an image, start under a monitor, stop, remove,
inspect, exec, logs, copy — the one implementation behind the CLI and the CRI server.

State lives in the Store (one row per container) and in two directories: the
container dir <root>/containers/ID (bundle config.json, rootfs mount, etc files,
log, exit.json) and the run dir <run_root>/ID (attach socket, monitor.pid).
Forking calls (start, exec, restart) must be made from a process without threads.

Joining another container's namespaces (`--network/--ipc/--pid container:X`): a CLI
container is not a pod member; its network namespace is a file in its own run dir, made
at each start and released at each exit. So a joiner cannot hold a reference to X's
namespace made once at create (X's next start makes a new one, and /proc/PID of an old
process may name another's namespace after PID reuse). As docker does, X is resolved at
every start of the joiner (and every restart its monitor makes): X must then run, and the
joiner's spec names a symlink in its run dir (`join.network`...) that the start points at
/proc/<X's pid>/ns/<kind>. The joiner owns no network resource (no CNI attachment, no
/etc files: it bind-mounts X's), so removing X, as with docker, leaves nothing behind;
the joiner keeps X's namespace while it runs and cannot start again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pallet.engine import monitor
from pallet.engine.store import ContainerFilter, ContainerRecord, Store, new_id, now_ns
from pallet.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PalletError,
    SystemFailure,
)
from pallet.image.snapshot import is_mountpoint

if TYPE_CHECKING:
    # specgen (with users, ctypes and the seccomp profile) is only needed to create or
    # exec; `pallet ps`, stop, rm and the monitor's helpers do without it.
    from pallet.engine.handlers import RuntimeHandler
    from pallet.engine.logs import LogLine
    from pallet.engine.specgen import ContainerOptions
    from pallet.engine.volumes import Volumes
    from pallet.image.store import Image, ImageStore

DEFAULT_ROOT = "/var/lib/pallet"
DEFAULT_RUN_ROOT = "/run/pallet"
LOG_MAX_SIZE = 10 << 20
LOG_MAX_FILES = 3
NETWORK_MODES = ("none", "host")
CONTAINER_MODE = "container:"  # --network/--ipc/--pid container:NAME|ID
# A joined namespace's kind in the OCI spec -> its name under /proc/PID/ns, and docker's
# word for it in "cannot join ... of a non running container".
JOIN_KINDS = {"network": ("net", "network"), "ipc": ("ipc", "IPC"), "pid": ("pid", "PID")}
INIT_BINARIES = ("/usr/bin/catatonit", "/usr/libexec/podman/catatonit", "/usr/bin/tini-static",
                 "/usr/bin/docker-init")
NAME_ANNOTATION = "io.pallet.container.name"


class ContainerStartError(PalletError):
    """The runtime could not start the container's process; exit_code follows docker
    (127: command not found, 126: cannot be invoked, 125: anything else)."""

    def __init__(self, message: str, exit_code: int = 125):
        super().__init__(message)
        self.exit_code = exit_code


def default_run_root(root: str) -> str:
    """/run/pallet for the default root; else a short per-root dir (unix socket paths
    are limited to 108 bytes); PALLET_RUNROOT overrides. (The thin CLI computes it too,
    to find the zygote's socket, so it lives in the light zygote module.)"""
    from pallet.engine.zygote import default_run_root as run_root_of

    return run_root_of(root)


@dataclass
class CreateRequest:
    """What `docker create` takes beyond the OCI-level options in ContainerOptions."""

    image: str
    options: ContainerOptions = field(default_factory=lambda: _options())
    name: str = ""
    network: str = ""            # "" -> bridge; host|none|NAME|container:REF
    ports: list[str] = field(default_factory=list)      # -p specs
    expose: list[str] = field(default_factory=list)     # --expose PORT[-END][/PROTO]
    publish_all: bool = False    # -P: each exposed port (image's and --expose) on a free one
    # --ipc/--pid/--uts/--cgroupns: kind -> "host" or "container:REF" (joined at each start)
    namespaces: dict[str, str] = field(default_factory=dict)
    ip: str = ""                 # --ip, --ip6: static addresses on the network
    ip6: str = ""
    aliases: list[str] = field(default_factory=list)    # --network-alias: on its network
    extra_hosts: list[str] = field(default_factory=list)  # --add-host HOST:IP
    volumes: list[str] = field(default_factory=list)    # -v specs
    tmpfs: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)     # --mount CSV specs
    dns: list[str] = field(default_factory=list)        # resolv.conf: nameservers,
    dns_search: list[str] = field(default_factory=list)  # search domains and options
    dns_options: list[str] = field(default_factory=list)  # (each replaces the host's)
    restart: str = "no"
    auto_remove: bool = False
    runtime: str = ""
    pull: str = "missing"        # missing | always | never
    platform: str | None = None
    log_max_size: int = LOG_MAX_SIZE
    log_max_files: int = LOG_MAX_FILES
    log_driver: str = ""         # --log-driver (pallet.engine.logs.LOG_DRIVERS; "": json-file)
    log_opts: dict[str, str] = field(default_factory=dict)  # --log-opt as given (inspect)
    mac_address: str = ""        # --mac-address: the first network's interface's MAC
    # A pod's container (CRI): the pod it belongs to, its log file, and the pod's cgroup
    # parent (the container's cgroup is <cgroup_parent>/<id>, as containerd's cgroupfs).
    pod_id: str | None = None
    log_path: str = ""
    cgroup_parent: str = ""
    # Image volumes (CRI Mount.image): other images' filesystems mounted read-only.
    image_mounts: list[ImageMount] = field(default_factory=list)
    # docker's Config.Healthcheck (run --health-*, compose healthcheck:), merged over the
    # image's: {Test, Interval, Timeout, StartPeriod, StartInterval (ns), Retries}.
    healthcheck: dict[str, Any] | None = None
    # --volumes-from CTR[:ro|:rw]: CTR's volumes and binds at the same destinations.
    volumes_from: list[str] = field(default_factory=list)
    stop_timeout: int | None = None  # --stop-timeout: stop/restart's default wait (s)


@dataclass
class ImageMount:
    """An image volume: IMAGE (pulled already) read-only at DESTINATION; SUB_PATH, a path
    inside the image, mounts only that part."""

    image: str
    destination: str
    sub_path: str = ""


def _options() -> ContainerOptions:
    from pallet.engine.specgen import ContainerOptions

    return ContainerOptions()


def parse_expose(spec: str) -> list[tuple[int, str]]:
    """--expose PORT[/PROTO] or START-END[/PROTO] -> (port, protocol) pairs."""
    if ":" in spec:
        raise InvalidArgument(f"invalid port format for --expose: {spec}")
    ports, _, proto = spec.partition("/")
    start, sep, end = ports.partition("-")
    try:
        first, last = int(start), int(end if sep else start)
        if not 0 < first <= last < 65536:
            raise ValueError("invalid range")
    except ValueError:
        raise InvalidArgument(f"invalid range format for --expose: {spec}, error: invalid "
                              f"port range: {ports}") from None
    if (proto or "tcp") not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid proto: {proto}")
    return [(port, proto or "tcp") for port in range(first, last + 1)]


def validate_restart(policy: str) -> str:
    name, sep, limit = policy.partition(":")
    if name not in ("no", "always", "on-failure", "unless-stopped"):
        raise InvalidArgument(f"invalid restart policy {policy!r}: use no, always, "
                              "unless-stopped or on-failure[:max-retries]")
    if sep and (name != "on-failure" or not limit.isdigit()):
        raise InvalidArgument(f"invalid restart policy {policy!r}: only on-failure takes "
                              "a maximum retry count, as on-failure:N")
    return policy


def parse_port(spec: str) -> dict[str, Any]:
    """-p [IP:][HOST:]CTR[/PROTO] -> a CNI portmap entry (hostPort 0: picked at start)."""
    from pallet.engine.network import parse_publish

    return parse_publish(spec)


def find_init() -> str:
    return next((p for p in INIT_BINARIES if os.access(p, os.X_OK)), "")


class Engine:
    """Containers under ROOT (persistent) and RUN_ROOT (tmpfs, per boot)."""

    def __init__(self, root: str = DEFAULT_ROOT, run_root: str | None = None):
        self.root = os.path.abspath(root)
        self.run_root = run_root or default_run_root(self.root)
        self._store: Store | None = None
        self._images: ImageStore | None = None
        # Containers whose rootfs this Engine mounted in create(): `run` starts them next,
        # and mounting again would only re-read the image (~2 ms).
        self._mounted: set[str] = set()

    # -- shared resources, opened lazily so quick commands stay quick ------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.root)
        return self._store

    @property
    def images(self) -> ImageStore:
        if self._images is None:
            from pallet.image.store import ImageStore

            self._images = ImageStore(self.root)
        return self._images

    @property
    def volumes(self) -> Volumes:
        from pallet.engine.volumes import Volumes

        return Volumes(self.store, self.root)

    def close(self) -> None:
        # Before fork: an SQLite connection must never be shared with a child.
        if self._store is not None:
            self._store.close()
            self._store = None

    def ctr_dir(self, cid: str) -> str:
        return os.path.join(self.root, "containers", cid)

    def run_dir(self, cid: str) -> str:
        return os.path.join(self.run_root, cid)

    def handler(self, name: str) -> RuntimeHandler:
        from pallet.engine import handlers

        return handlers.resolve(name, self.run_root)

    # -- create ------------------------------------------------------------------------
    def create(self, req: CreateRequest) -> ContainerRecord:
        """Reserve the name, mount the rootfs and write the bundle; state 'created'."""
        from pallet.engine.handlers import handler_name, resolve
        from pallet.engine.logs import check_log_driver

        validate_restart(req.restart)
        log_driver = check_log_driver(req.log_driver)
        if req.healthcheck:
            from pallet.engine.health import validate

            validate(req.healthcheck)
        if req.auto_remove and req.restart not in ("no", ""):
            raise InvalidArgument("conflicting options: cannot combine --restart and --rm")
        network = req.network or "bridge"  # docker's default: the pallet bridge network
        donor = None  # --network container:X: X's record
        if network.startswith(CONTAINER_MODE):
            check_shared_network(req)
            donor = self.get(network[len(CONTAINER_MODE):])
            network = CONTAINER_MODE + donor.id  # docker records X's id
        elif network not in NETWORK_MODES:
            _network_available(network, self)
        ports = [parse_port(p) for p in req.ports]
        if ports and network in NETWORK_MODES:
            ports = [] if network == "host" else ports
            if network == "none" and req.ports:
                raise InvalidArgument("conflicting options: port publishing and the "
                                      "container type network mode 'none'")
        static_ips = [i for i in (req.ip, req.ip6) if i]
        if static_ips:
            _check_static_ips(self, network, req.ip, req.ip6)
        mac = parse_mac(req.mac_address) if req.mac_address else ""
        if mac and (network == "host" or network.startswith("container:")):
            raise InvalidArgument("conflicting options: mac-address and the network mode")
        if req.aliases and network in (*NETWORK_MODES, "bridge", "default"):
            raise InvalidArgument("network-scoped aliases are only supported for "
                                  "user-defined networks")
        extra_hosts = [parse_extra_host(h) for h in req.extra_hosts]
        from pallet.engine.specgen import Mount, exposed_ports
        from pallet.engine.volumes import parse_mount, parse_tmpfs, parse_volume

        vol_specs = [parse_volume(v) for v in req.volumes]
        # docker: a -v or --mount at the same destination wins over --volumes-from.
        given = {vs.destination for vs in vol_specs}
        vol_specs += [vs for ref in req.volumes_from for vs in self._volumes_from(ref)
                      if vs.destination not in given]
        tmpfs = [parse_tmpfs(t) for t in req.tmpfs]
        for m in map(parse_mount, req.mounts):
            (tmpfs if isinstance(m, Mount) else vol_specs).append(m)
        for vs in vol_specs:
            if vs.kind == "bind" and not os.path.exists(vs.source):
                raise InvalidArgument(f'invalid mount config for type "bind": bind source '
                                      f"path does not exist: {vs.source}")
        resolve(req.runtime, self.run_root)  # an unknown --runtime fails before any work
        exposed = [parse_expose(e) for e in req.expose]
        image = self._image(req.image, req.pull, req.platform)
        exposed = sorted({*exposed_ports(image.config.raw), *(p for e in exposed for p in e)})
        if req.publish_all and network not in NETWORK_MODES:
            published = {(m["containerPort"], m["protocol"]) for m in ports}
            ports += [{"hostPort": 0, "containerPort": port, "protocol": proto, "hostIP": ""}
                      for port, proto in exposed if (port, proto) not in published]
        volume_images = [self._volume_image(m) for m in req.image_mounts]

        cid = new_id()
        rec = ContainerRecord(id=cid, name=req.name or self.store.unique_container_name(),
                              image_ref=req.image, image_id=image.id,
                              labels=dict(req.options.labels),
                              runtime_handler=handler_name(req.runtime),
                              restart_policy=req.restart or "no",
                              pod_id=req.pod_id, annotations=dict(req.options.annotations),
                              log_path=req.log_path
                              or os.path.join(self.ctr_dir(cid), "container.log"))
        rec = self.store.add_container(rec)
        cdir = self.ctr_dir(cid)
        undo: list[Any] = [lambda: self.store.remove_container(cid),
                           lambda: shutil.rmtree(cdir, ignore_errors=True)]
        try:
            os.makedirs(cdir, mode=0o711)
            opts = req.options
            idmap = rootfs_idmap(opts)
            if idmap:
                _check_reachable(os.path.join(cdir, "rootfs"), idmap["uid"], idmap["gid"])
            rootfs = str(self.images.prepare_rootfs(image.id, cdir, _idmap(idmap)))
            undo.append(lambda: self.images.release_rootfs(cdir))
            image_volumes = self._mount_image_volumes(opts, req.image_mounts, volume_images,
                                                      cdir, idmap, undo)
            opts.rootfs = "rootfs"
            if req.cgroup_parent:
                opts.cgroups_path = os.path.join(req.cgroup_parent, cid)
            joins = {"network": donor.id} if donor else {}
            for kind, mode in req.namespaces.items():
                if mode.startswith(CONTAINER_MODE):
                    joins[kind] = self.get(mode[len(CONTAINER_MODE):]).id
                    opts.namespaces[kind] = self._join_path(cid, kind)
                else:
                    opts.namespaces[kind] = mode
            volume_names, anonymous = self._volume_mounts(opts, vol_specs, rootfs, image, cid)
            opts.mounts.extend(tmpfs)
            self._network_options(opts, network, cid, donor)
            etc_dir = self._etc_files(opts, cdir, network, extra_hosts, req, donor)
            if opts.init and not opts.init_path:
                opts.init_path = find_init()
            if opts.privileged:
                _add_host_devices(opts)
            if not opts.stop_signal:
                opts.stop_signal = image.config.stop_signal
            opts.annotations.setdefault(NAME_ANNOTATION, rec.name)
            spec = _generate(image.config.raw, opts, rootfs)
            with open(os.path.join(cdir, "config.json"), "w") as f:
                # dumps, not dump: only dumps uses the C encoder (4x faster here).
                f.write(json.dumps(spec))
            config = {"image": req.image, "image_config": image.config.raw.get("config") or {},
                      "network": network, "ports": ports, "auto_remove": req.auto_remove,
                      "ips": static_ips, "aliases": list(req.aliases),
                      "exposed": [f"{port}/{proto}" for port, proto in exposed],
                      "publish_all": req.publish_all, "namespace_modes": dict(req.namespaces),
                      "joins": joins, "etc_dir": etc_dir,
                      "cgroup_parent": req.cgroup_parent,
                      "extra_hosts": extra_hosts,
                      "tty": opts.tty, "stdin": opts.stdin, "volume_names": volume_names,
                      "anonymous_volumes": anonymous, "stop_signal": opts.stop_signal,
                      "stop_timeout": req.stop_timeout,
                      "hostname": spec.get("hostname", ""), "cmd": opts.command,
                      "entrypoint": opts.entrypoint, "log_max_size": req.log_max_size,
                      "log_max_files": req.log_max_files, "log_driver": log_driver,
                      "mounts": [asdict(m) for m in opts.mounts],
                      "host_config": _host_config(opts, req)}
            if uses_embedded_dns(network, self.store):
                config["embedded_dns"] = True
            if mac:
                config["mac_address"] = mac
            if idmap:
                config["rootfs_idmap"] = idmap
            if image_volumes:
                config["image_volumes"] = image_volumes
            if req.healthcheck:
                config["healthcheck"] = req.healthcheck
            rec = self.store.update_container(cid, config=config)
            self._mounted.add(cid)
            container_event(self.root, rec, "create")
            if rec.pod_id:
                self._pod_names_changed(rec.pod_id)
            return rec
        except BaseException:
            for fn in reversed(undo):
                with contextlib.suppress(Exception):
                    fn()
            raise

    def _volumes_from(self, spec: str) -> list[Any]:
        """--volumes-from CTR[:ro|:rw]: CTR's volumes and binds (not its tmpfs or its own
        /etc files) as -v specs at the same destinations; the mode overrides theirs."""
        from pallet.engine.volumes import VolumeSpec

        ref, _, mode = spec.partition(":")
        if mode not in ("", "ro", "rw"):
            raise InvalidArgument(f"invalid mode for volumes-from: {mode}")
        other = self.get(ref)
        own = os.path.join(self.root, "containers") + os.sep  # its (or its donor's) /etc files
        out = []
        for m in other.config.get("mounts") or []:
            if m.get("type", "bind") != "bind" or m["source"].startswith(own):
                continue
            ro = m["readonly"] if not mode else mode == "ro"
            if m["source"].startswith(self.volumes.dir + os.sep):
                name = os.path.basename(os.path.dirname(m["source"]))
                out.append(VolumeSpec(destination=m["destination"], source=name, readonly=ro,
                                      nocopy=True))
            else:
                out.append(VolumeSpec(destination=m["destination"], source=m["source"],
                                      kind="bind", readonly=ro,
                                      propagation=m.get("propagation") or ""))
        return out

    def _join_path(self, cid: str, kind: str) -> str:
        """What the spec of container CID names as the KIND namespace it joins: a symlink
        in its run dir, pointed at the other container's namespace at each start."""
        return os.path.join(self.run_dir(cid), f"join.{kind}")

    def link_joins(self, rec: ContainerRecord) -> None:
        """Point REC's join.KIND symlinks at the namespaces of the containers it joins, as
        they are now (docker resolves container:X at each start): each must run. Raises
        ContainerStartError (125) with docker's words (a removed one: No such container)."""
        for kind, other_id in (rec.config.get("joins") or {}).items():
            proc, word = JOIN_KINDS[kind]
            try:
                other = self.get(other_id)
            except NotFound:
                raise ContainerStartError(f"No such container: {other_id}") from None
            if other.state not in ("running", "paused") or not other.pid:
                raise ContainerStartError(f"cannot join {word} of a non running container: "
                                          f"{other.name}")
            path = self._join_path(rec.id, kind)
            tmp = f"{path}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(f"/proc/{other.pid}/ns/{proc}", tmp)
            os.replace(tmp, path)

    def _image(self, ref: str, pull: str, platform: str | None) -> Any:
        if pull not in ("missing", "always", "never"):
            raise InvalidArgument(f'invalid pull option: {pull!r}; use "always", "missing" '
                                  'or "never"')
        if pull == "always":
            return self.images.pull(ref, platform=platform)
        try:
            image = self.images.get(ref)
            mismatch = _platform_mismatch(image.config.raw, platform)
            if not mismatch:
                return image
            if pull == "never":
                raise NotFound(f"image with reference {ref} was found but does not match the "
                               f"specified platform: {mismatch}")
        except NotFound as e:
            if pull == "never":
                if "specified platform" in str(e):
                    raise
                raise NotFound(f"{ref}: image not known; pull it first or use "
                               "--pull missing") from None
        print(f"Unable to find image '{ref}' locally", file=sys.stderr)
        return self.images.pull(ref, platform=platform)

    def _volume_image(self, m: ImageMount) -> Any:
        if not m.image:
            raise InvalidArgument(f"image volume {m.destination}: no image given")
        try:
            return self.images.get(m.image)
        except NotFound:
            raise NotFound(f'failed to mount image volume {m.destination}: image "{m.image}" '
                           "not found: pull it first") from None

    def _mount_image_volumes(self, opts: ContainerOptions, mounts: list[ImageMount],
                             images: list[Any], cdir: str, idmap: dict[str, Any] | None,
                             undo: list[Any]) -> list[dict[str, Any]]:
        """Mount each image volume's image read-only under CDIR/image-volumes and bind it
        (or its sub path) into the container; returns what the record keeps of them."""
        from pallet.engine.specgen import Mount

        out = []
        for i, (m, image) in enumerate(zip(mounts, images, strict=True)):
            chain = self.images.ready_chain(image.id)
            vdir = os.path.join(cdir, "image-volumes", str(i))
            self.images.prepare_view(chain, vdir, _idmap(idmap))
            undo.append(lambda v=vdir: self.images.release_view(v))
            source = _image_sub_path(vdir, m.sub_path, m)
            opts.mounts.append(Mount(destination=m.destination, source=source, readonly=True,
                                     options=["nosuid", "nodev", "noexec"]))
            out.append({"image": m.image, "image_id": image.id, "chain": chain, "dir": vdir,
                        "destination": m.destination, "sub_path": m.sub_path})
        return out

    def _prepare_mounts(self, rec: ContainerRecord) -> None:
        """Mount what a stopped container needs again: its rootfs and image volumes."""
        cdir = self.ctr_dir(rec.id)
        idmap = _idmap(rec.config.get("rootfs_idmap"))
        self.images.prepare_rootfs(rec.image_id, cdir, idmap)
        for v in rec.config.get("image_volumes") or []:
            self.images.prepare_view(v["chain"], v["dir"], idmap)

    def _release_mounts(self, rec: ContainerRecord, final: bool) -> None:
        """Unmount the rootfs and image volumes; FINAL (removal) also drops their leases.
        Volumes with a filesystem of their own are unmounted once no container holds them."""
        self._release_volumes(rec)
        for v in rec.config.get("image_volumes") or []:
            with contextlib.suppress(PalletError, OSError):
                self.images.release_view(v["dir"], drop_lease=final)
        self.images.release_rootfs(self.ctr_dir(rec.id), drop_lease=final)

    def _acquire_volumes(self, rec: ContainerRecord) -> None:
        """Mount the filesystems of REC's volumes that have one (docker's local driver
        options) on their _data, before the runtime binds them; all or none."""
        held: list[str] = []
        try:
            for name in dict.fromkeys(rec.config.get("volume_names") or []):
                self.volumes.acquire(name, rec.id)
                held.append(name)
        except BaseException:
            for name in reversed(held):
                with contextlib.suppress(PalletError, OSError):
                    self.volumes.release(name, rec.id)
            raise

    def _release_volumes(self, rec: ContainerRecord) -> None:
        for name in dict.fromkeys(rec.config.get("volume_names") or []):
            with contextlib.suppress(PalletError, OSError):
                self.volumes.release(name, rec.id)

    def _volume_mounts(self, opts: ContainerOptions, specs: list[Any], rootfs: str,
                       image: Any, cid: str) -> tuple[list[str], list[str]]:
        names, anonymous = [], []
        vols = self.volumes
        covered = {vs.destination for vs in specs} | {m.destination for m in opts.mounts}
        from pallet.engine.specgen import Mount
        from pallet.engine.volumes import VolumeSpec

        # Image VOLUMEs no user mount covers get anonymous volumes, like docker.
        specs = list(specs) + [VolumeSpec(destination=os.path.normpath(p))
                               for p in image.config.volumes if os.path.normpath(p) not in covered]
        for vs in specs:
            if vs.kind == "bind":
                opts.mounts.append(Mount(destination=vs.destination, source=vs.source,
                                         readonly=vs.readonly, propagation=vs.propagation))
                continue
            rec = vols.create(vs.source)
            if not vs.source:
                anonymous.append(rec.name)
            names.append(rec.name)
            if not vs.nocopy:
                vols.populate(rec.name, rootfs, vs.destination, cid)
            opts.mounts.append(Mount(destination=vs.destination, source=rec.mountpoint,
                                     readonly=vs.readonly, propagation=vs.propagation))
        return names, anonymous

    def _network_options(self, opts: ContainerOptions, network: str, cid: str,
                         donor: ContainerRecord | None) -> None:
        if donor is not None:
            # docker: the joiner takes X's hostname, in a UTS namespace of its own.
            opts.namespaces["network"] = self._join_path(cid, "network")
            opts.hostname = donor.config.get("hostname", "")
            return
        if network == "host":
            opts.namespaces.setdefault("network", "host")
            if not opts.hostname:
                opts.hostname = os.uname().nodename
            # The host's UTS namespace is not shared: docker gives a host-network
            # container the host's name in a UTS namespace of its own.
        elif not opts.hostname:
            opts.hostname = cid[:12]
        if network not in NETWORK_MODES:
            # The netns is made at start (it must outlive the container's init).
            opts.namespaces["network"] = os.path.join(self.run_dir(cid), "netns")

    def _etc_files(self, opts: ContainerOptions, cdir: str, network: str,
                   extra_hosts: list[tuple[str, str]], req: CreateRequest,
                   donor: ContainerRecord | None) -> str:
        """hostname, hosts and resolv.conf of the container, bind-mounted over /etc; with
        DONOR (--network container:X) X's own files, as docker. Returns their dir."""
        from pallet.engine.specgen import Mount

        if donor is not None:
            etc_dir = donor.config.get("etc_dir") or self.ctr_dir(donor.id)
            user_dests = {m.destination for m in opts.mounts}
            for name in ("hostname", "hosts", "resolv.conf"):
                if f"/etc/{name}" not in user_dests:
                    opts.mounts.append(Mount(destination=f"/etc/{name}",
                                             source=os.path.join(etc_dir, name),
                                             readonly=opts.read_only))
            return etc_dir
        hostname = opts.hostname
        hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        if network == "host":
            with contextlib.suppress(OSError), open("/etc/hosts") as f:
                hosts = f.read()
        else:
            hosts += "".join(f"{ip}\t{host}\n" for host, ip in extra_hosts)
            hosts += f"127.0.1.1\t{hostname}\n" if network == "none" else ""
        if uses_embedded_dns(network, self.store):
            from pallet.engine import dns

            resolv = dns.resolv_conf(_host_resolv_conf(True), req.dns, req.dns_search,
                                     req.dns_options)
        else:
            resolv = container_resolv_conf(_host_resolv_conf(network == "host"), req.dns,
                                           req.dns_search, req.dns_options)
        files = {"hostname": hostname + "\n", "hosts": hosts, "resolv.conf": resolv}
        user_dests = {m.destination for m in opts.mounts}
        for name, text in files.items():
            path = os.path.join(cdir, name)
            with open(path, "w") as f:
                f.write(text)
            if f"/etc/{name}" not in user_dests:
                opts.mounts.append(Mount(destination=f"/etc/{name}", source=path,
                                         readonly=opts.read_only))
        return cdir

    # -- lookups and state ---------------------------------------------------------------
    def get(self, ref: str) -> ContainerRecord:
        try:
            rec = self.store.get_container(ref)
        except NotFound:
            raise NotFound(f"No such container: {ref}") from None
        return self._refresh(rec)

    def _refresh(self, rec: ContainerRecord) -> ContainerRecord:
        """Make the record agree with the monitor: a monitor that died (crash, reboot)
        leaves 'running' in the store; its exit file, or its absence, tells the truth."""
        if rec.state not in ("running", "paused", "restarting"):
            return rec
        if monitor.alive(self.run_dir(rec.id)):
            return rec
        exit_info = self.exit_info(rec.id)
        changes: dict[str, Any] = {"state": "exited", "pid": 0}
        if exit_info and exit_info.get("finished_at", 0) >= rec.started_at:
            changes["exit_code"] = exit_info.get("exit_code", 255)
            changes["finished_at"] = exit_info.get("finished_at", now_ns())
        else:
            changes["exit_code"], changes["finished_at"] = 255, now_ns()
        try:
            rec = self.store.update_container(rec.id, **changes)
        except NotFound:
            return rec
        # Its monitor could not record the exit: `die` is written by whoever notices.
        container_event(self.root, rec, "die", exitCode=rec.exit_code)
        return rec

    def exit_info(self, cid: str) -> dict[str, Any]:
        try:
            with open(os.path.join(self.ctr_dir(cid), monitor.EXIT_FILE)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def list(self, all: bool = False, filters: ContainerFilter | None = None
             ) -> list[ContainerRecord]:
        recs = [self._refresh(r) for r in self.store.list_containers(filters)]
        if not all:
            recs = [r for r in recs if r.state in ("running", "paused", "restarting")]
        return recs

    # -- start ---------------------------------------------------------------------------
    def _monitor_config(self, rec: ContainerRecord) -> dict[str, Any]:
        cfg = rec.config
        return {
            "id": rec.id, "root": self.root, "run_root": self.run_root,
            "ctr_dir": self.ctr_dir(rec.id), "run_dir": self.run_dir(rec.id),
            "bundle": self.ctr_dir(rec.id), "runtime": rec.runtime_handler,
            "log_path": "" if cfg.get("log_driver") == "none" else rec.log_path,
            "log_max_size": cfg.get("log_max_size", LOG_MAX_SIZE),
            "log_max_files": cfg.get("log_max_files", LOG_MAX_FILES),
            "tty": bool(cfg.get("tty")), "stdin": bool(cfg.get("stdin")),
            "stdin_once": bool(cfg.get("stdin_once")),
            "restart": rec.restart_policy, "restart_count": rec.restart_count,
            "auto_remove": bool(cfg.get("auto_remove")),
            "sys_path": [p for p in sys.path if p], "python": sys.executable,
            "lean_after": _lean_after(), "sleep_after": _sleep_after(),
            "console_size": cfg.get("console_size"),
            # Its monitor will relay a port from [::1] (pallet.engine.relay): the monitor
            # mother loads the relay for it.
            "relay": any(_relayed(m) for m in cfg.get("ports") or ()),
            # It joins other containers' namespaces: each restart looks them up again.
            "joins": bool(cfg.get("joins")),
            **self._health_config(rec),
        }

    def _health_config(self, rec: ContainerRecord) -> dict[str, Any]:
        """{"health": ...} for the monitor of a container with a health check, else {}."""
        hc = healthcheck(rec)
        if hc is None:
            return {}
        from pallet.engine.health import monitor_config

        attrs = {**rec.labels, "image": rec.image_ref or rec.image_id, "name": rec.name}
        return {"health": {**monitor_config(hc), "attrs": attrs}}

    def health(self, rec: ContainerRecord) -> dict[str, Any] | None:
        """State.Health of REC: None without a check; "starting" before its first result."""
        if healthcheck(rec) is None:
            return None
        from pallet.engine.health import read_state

        return read_state(self.ctr_dir(rec.id)) or {"Status": "starting",
                                                    "FailingStreak": 0, "Log": []}

    def start(self, ref: str, streams: str = "", stdin_once: bool = False,
              console_size: tuple[int, int] | None = None) -> tuple[ContainerRecord, int]:
        """Start the container under a new monitor. Returns the record and a client fd
        attached to STREAMS (the caller closes it); raises ContainerStartError.

        Forks (the monitor, and the child below): call it from a process without threads.
        """
        from pallet.oci.cgsync import reap_cgroup_sync, start_cgroup_sync

        # The container moves into its cgroups in a few ms, in the monitor's helper: let
        # the kernel's grace period for that pass meanwhile (see start_cgroup_sync).
        sync = start_cgroup_sync()
        try:
            return self._start(ref, streams, stdin_once, console_size)
        finally:
            reap_cgroup_sync(sync)

    def _start(self, ref: str, streams: str, stdin_once: bool,
               console_size: tuple[int, int] | None) -> tuple[ContainerRecord, int]:
        rec = self.get(ref)
        if rec.state in ("running", "restarting"):
            return rec, -1
        if rec.state == "paused":
            raise FailedPrecondition(f"cannot start a paused container {rec.id[:12]}; "
                                     "try unpause instead")
        cdir, rdir = self.ctr_dir(rec.id), self.run_dir(rec.id)
        if rec.state == "exited":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(cdir, monitor.EXIT_FILE))
        # A created container's rootfs is still mounted from create (maybe by another
        # process, e.g. the daemon): preparing it again costs ~20 ms of image store work.
        if rec.state != "created" or (rec.id not in self._mounted
                                      and not is_mountpoint(os.path.join(cdir, "rootfs"))):
            self._prepare_mounts(rec)
        self._mounted.discard(rec.id)
        shutil.rmtree(rdir, ignore_errors=True)
        os.makedirs(rdir, mode=0o700)
        if rec.config.get("joins"):
            try:
                self.link_joins(rec)
            except BaseException:
                with contextlib.suppress(PalletError, OSError):
                    self._release_mounts(rec, final=False)
                shutil.rmtree(rdir, ignore_errors=True)
                raise
        cfg = self._monitor_config(rec)
        cfg["stdin_once"] = stdin_once
        if console_size:
            cfg["console_size"] = list(console_size)
        gated = has_own_network(rec.config)
        if gated:
            # The container joins its netns when it is created; the CNI plugins configure
            # that netns meanwhile, here (tens of ms each), and the monitor's helper holds
            # the start until we say the network is ready (the "n" frame).
            from pallet.engine import netns

            netns.create("netns", rdir)
            cfg["network_gate"] = True
        self._acquire_volumes(rec)  # released by the monitor once it exists
        self.close()
        try:
            if streams:  # docker's client attaches before it starts the container
                container_event(self.root, rec, "attach")
            fd, _ = monitor.spawn(cfg, streams)
        except BaseException:
            self._release_volumes(rec)
            raise
        net_error: BaseException | None = None
        if gated:
            relayed = b""
            try:
                first = _network_setup(self, rec, os.path.join(rdir, "netns"))
                relayed = _relay_frame(first)
            except BaseException as e:  # noqa: BLE001 - re-raised once the monitor is done
                net_error = e
            with contextlib.suppress(OSError):
                os.write(fd, relayed + monitor.frame(
                    b"n", b"" if net_error is None else
                    (str(net_error) or type(net_error).__name__).encode()))
            self.close()
        kind, payload = _read_frame(fd)
        if net_error is not None:
            os.close(fd)  # the monitor has deleted the container and recorded the failure
            raise net_error
        if kind == b"p":
            # Recorded here, by the warm caller, not by the lean monitor; the monitor holds
            # its exit's record back until our "a" says this one is written.
            try:
                self.store.update_container(rec.id, state="running", pid=int(payload),
                                            started_at=now_ns(), exit_code=None,
                                            restart_count=rec.restart_count)
            finally:
                with contextlib.suppress(OSError):
                    os.write(fd, monitor.frame(b"a"))
            volume_events(self.root, rec, "mount")
            container_event(self.root, rec, "start")
            if console_size:  # docker's CLI sizes the tty once it runs
                container_event(self.root, rec, "resize", height=console_size[0],
                                width=console_size[1])
            return self.get(rec.id), fd
        os.close(fd)
        code, _, err = payload.decode(errors="replace").partition("\n")
        if kind == b"x" and not err:
            # It ran and exited before we heard it start: not an error.
            return self.get(rec.id), -1
        if gated:
            # It failed before starting (a command not found fails its create), perhaps while
            # our CNI ADDs ran: the monitor's cleanup may have looked before they were
            # recorded, so release them here too (idempotent).
            _network_teardown(self, rec, os.path.join(rdir, "netns"))
        if kind == b"x":
            raise ContainerStartError(err, int(code or 125))
        self._release_volumes(rec)
        raise SystemFailure(f"the monitor of {rec.id[:12]} died before starting it; see "
                            f"{os.path.join(cdir, 'monitor.log')}")

    # -- signals and stopping ---------------------------------------------------------------
    def kill(self, ref: str, sig: int | str = signal.SIGKILL) -> ContainerRecord:
        rec = self.get(ref)
        if rec.state not in ("running", "paused"):
            raise FailedPrecondition(f"cannot kill container: {ref}: container "
                                     f"{rec.id} is not running")
        signum = parse_signal(sig)
        self.handler(rec.runtime_handler).kill(rec.id, signum)
        container_event(self.root, rec, "kill", signal=int(signum))
        return rec

    def stop(self, ref: str, timeout: float | None = None) -> ContainerRecord:
        rec = self.get(ref)
        rdir = self.run_dir(rec.id)
        mon = monitor.alive(rdir)
        if rec.state not in ("running", "paused", "restarting") or not mon:
            return rec
        # The monitor must not restart what a user stopped.
        with open(os.path.join(rdir, monitor.STOP_MARKER), "w"):
            pass
        if timeout is None:  # docker: the container's --stop-timeout, else 10s
            timeout = rec.config.get("stop_timeout")
            timeout = 10.0 if timeout is None else timeout
        h = self.handler(rec.runtime_handler)
        with contextlib.suppress(PalletError):
            if rec.state == "paused":
                h.resume(rec.id)
        sig = parse_signal(rec.config.get("stop_signal") or "SIGTERM")
        if rec.state != "restarting":
            with contextlib.suppress(PalletError, ProcessLookupError):
                h.kill(rec.id, sig)
                container_event(self.root, rec, "kill", signal=int(sig))
        if not _wait_pid_exit(mon, timeout):
            with contextlib.suppress(PalletError, ProcessLookupError):
                h.kill(rec.id, signal.SIGKILL, all=True)
                container_event(self.root, rec, "kill", signal=int(signal.SIGKILL))
        with contextlib.suppress(ProcessLookupError):
            os.kill(mon, signal.SIGCHLD)  # wakes a monitor waiting to restart
        if not _wait_pid_exit(mon, 30):
            raise SystemFailure(f"container {rec.id[:12]}: monitor {mon} did not exit")
        container_event(self.root, rec, "stop")
        return self.get(rec.id)

    def restart(self, ref: str, timeout: float | None = None) -> ContainerRecord:
        rec = self.stop(ref, timeout)
        rec, fd = self.start(rec.id)
        if fd >= 0:
            os.close(fd)
        container_event(self.root, rec, "restart")
        return rec

    def wait(self, ref: str) -> int:
        """Block until the container is not running; return its exit code."""
        rec = self.get(ref)
        if rec.state in ("running", "paused", "restarting"):
            fd = self.attach(rec.id, "")
            if fd >= 0:
                try:
                    while True:
                        kind, payload = _read_frame(fd)
                        if kind in (b"x", b""):
                            break
                finally:
                    os.close(fd)
            pid = monitor.alive(self.run_dir(rec.id))
            if pid:
                _wait_pid_exit(pid, None)
            rec = self.get(rec.id)
        return rec.exit_code if rec.exit_code is not None else 0

    def exited(self, ref: str) -> int | None:
        """The container's exit code once it has stopped and its monitor is done with it
        (nothing will touch its record any more), else None: `wait` without blocking."""
        rec = self.get(ref)
        if rec.state in ("running", "paused", "restarting") or \
                monitor.alive(self.run_dir(rec.id)):
            return None
        return rec.exit_code if rec.exit_code is not None else 0

    def attach(self, ref: str, streams: str = "stdout,stderr") -> int:
        """A client fd on the monitor's attach socket, subscribed to STREAMS; -1 if gone."""
        import socket

        rec = self.get(ref)
        path = os.path.join(self.run_dir(rec.id), monitor.ATTACH_SOCKET)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(_short_path(path))
        except OSError:
            s.close()
            return -1
        s.sendall(monitor.frame(b"h", streams.encode()))
        if streams:  # `wait` subscribes to nothing: not an attach
            container_event(self.root, rec, "attach")
        return s.detach()

    def event(self, ref: str | ContainerRecord, action: str, **attrs: Any) -> None:
        """Record a container event that happens in a face, not here (an attached client's
        `detach` or tty `resize`)."""
        rec = ref if isinstance(ref, ContainerRecord) else self.get(ref)
        container_event(self.root, rec, action, **attrs)

    # -- remove --------------------------------------------------------------------------
    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> ContainerRecord:
        rec = self.get(ref)
        if rec.state in ("running", "paused", "restarting"):
            if not force:
                raise FailedPrecondition(
                    f"cannot remove container \"{rec.name}\": container is {rec.state}: "
                    "stop the container before removing or force remove")
            self._force_stop(rec)
        self.destroy(rec, volumes or None)
        return rec

    def _force_stop(self, rec: ContainerRecord) -> None:
        rdir = self.run_dir(rec.id)
        mon = monitor.alive(rdir)
        with contextlib.suppress(OSError):
            with open(os.path.join(rdir, monitor.STOP_MARKER), "w"):
                pass
        h = self.handler(rec.runtime_handler)
        with contextlib.suppress(PalletError, ProcessLookupError):
            if rec.state == "paused":
                h.resume(rec.id)
        with contextlib.suppress(PalletError, ProcessLookupError):
            h.kill(rec.id, signal.SIGKILL, all=True)
        if mon:
            with contextlib.suppress(ProcessLookupError):
                os.kill(mon, signal.SIGCHLD)
            _wait_pid_exit(mon, 30)

    def _pod_names_changed(self, pod_id: str) -> None:
        """A member of a `pallet pod` on a user network came, went or was renamed: the
        embedded DNS server answers the pod's address to its members' names."""
        with contextlib.suppress(NotFound):
            if self.store.get_pod(pod_id).config.get("embedded_dns"):
                _sync_dns(self)

    def destroy(self, rec: ContainerRecord, volumes: bool | None = None) -> None:
        """Release everything the container holds. Idempotent: the monitor (auto-remove)
        and `rm -f` may both get here."""
        with contextlib.suppress(PalletError, OSError):
            self.handler(rec.runtime_handler).delete(rec.id, force=True)
        if has_own_network(rec.config):
            _network_teardown(self, rec, os.path.join(self.run_dir(rec.id), "netns"))
        cdir = self.ctr_dir(rec.id)
        self._release_mounts(rec, final=True)
        shutil.rmtree(cdir, ignore_errors=True)
        shutil.rmtree(self.run_dir(rec.id), ignore_errors=True)
        try:
            self.store.remove_container(rec.id)
        except NotFound:
            pass  # the monitor (auto-remove) or another rm got here first: reported there
        else:
            container_event(self.root, rec, "destroy")
            if rec.pod_id:
                self._pod_names_changed(rec.pod_id)
        if volumes is None:
            volumes = bool(rec.config.get("auto_remove"))
        if volumes:
            for name in rec.config.get("anonymous_volumes") or []:
                with contextlib.suppress(PalletError):
                    self.volumes.remove(name)

    # -- the monitor's helpers ----------------------------------------------------------
    def release_after_exit(self, rec: ContainerRecord) -> None:
        with contextlib.suppress(PalletError, OSError):
            self.handler(rec.runtime_handler).delete(rec.id, force=True)
        if has_own_network(rec.config):
            _network_teardown(self, rec, os.path.join(self.run_dir(rec.id), "netns"))
        # Unmounted on exit like docker; start mounts it again.
        with contextlib.suppress(PalletError, OSError):
            self._release_mounts(rec, final=False)

    # -- other commands ----------------------------------------------------------------------
    def update_resources(self, ref: str, resources: dict[str, Any]) -> ContainerRecord:
        """Change a container's OCI linux.resources: live through the runtime when it runs,
        and in its bundle's config.json, so a restart (policy or CRI) keeps the change."""
        rec = self.get(ref)
        if not resources:
            return rec
        if rec.state in ("running", "paused"):
            self.handler(rec.runtime_handler).update(rec.id, resources)
        path = os.path.join(self.ctr_dir(rec.id), "config.json")
        try:
            with open(path) as f:
                spec = json.load(f)
        except (OSError, ValueError):
            return rec  # no bundle (yet): nothing to keep in step
        merged = spec.setdefault("linux", {}).setdefault("resources", {})
        for key, value in resources.items():
            merged[key] = {**(merged.get(key) or {}), **value} if isinstance(value, dict) \
                else value
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(spec))
        os.rename(tmp, path)
        return rec

    def pause(self, ref: str) -> ContainerRecord:
        rec = self.get(ref)
        if rec.state != "running":
            raise FailedPrecondition(f"container {rec.id} is not running")
        self.handler(rec.runtime_handler).pause(rec.id)
        container_event(self.root, rec, "pause")
        return self.store.update_container(rec.id, state="paused")

    def unpause(self, ref: str) -> ContainerRecord:
        rec = self.get(ref)
        if rec.state != "paused":
            raise FailedPrecondition(f"container {rec.id} is not paused")
        self.handler(rec.runtime_handler).resume(rec.id)
        container_event(self.root, rec, "unpause")
        return self.store.update_container(rec.id, state="running")

    def rename(self, ref: str, new_name: str) -> ContainerRecord:
        rec = self.get(ref)
        if rec.name == new_name.lstrip("/"):
            raise InvalidArgument(f"renaming a container with the same name as its current "
                                  f"name: {new_name}")
        new = self.store.update_container(rec.id, name=new_name)
        self._rename_endpoints(new, rec.name)
        if new.pod_id:
            self._pod_names_changed(new.pod_id)
        container_event(self.root, new, "rename", oldName=f"/{rec.name}")
        return new

    def _rename_endpoints(self, rec: ContainerRecord, old: str) -> None:
        """After a rename, the containers sharing a network with REC find it by its new
        name (and no longer by OLD) at once, as with docker's embedded DNS."""
        from pallet.engine.network import Networks

        if not has_own_network(rec.config):
            return
        nets = Networks(self.store, self.root)
        changed = set()
        for a in nets.attachments():
            if a.container_id == rec.id and old in a.aliases:
                aliases = [rec.name if n == old else n for n in a.aliases]
                if nets.set_aliases(rec.id, a.network, a.interface, aliases):
                    changed.add(a.network)
        for net in sorted(changed):
            _refresh_hosts(self, nets, net)
        if changed:
            _sync_dns(self)

    def top(self, ref: str, ps_args: list[str] | None = None
            ) -> tuple[list[str], list[list[str]]]:
        """docker top: `ps -ef` columns of the container's processes, or with PS_ARGS the
        host's `ps PS_ARGS` lines of those processes (its output needs a PID column)."""
        rec = self.get(ref)
        if rec.state not in ("running", "paused"):
            raise FailedPrecondition(f"container {rec.id} is not running")
        pids = self.handler(rec.runtime_handler).ps(rec.id)
        table = _host_ps(ps_args, pids) if ps_args else _ps_table(pids)
        container_event(self.root, rec, "top")
        return table

    def stats(self, ref: str) -> dict[str, Any]:
        rec = self.get(ref)
        if rec.state not in ("running", "paused"):
            return {}
        out = dict(self.handler(rec.runtime_handler).stats(rec.id))
        if rec.pid and (rec.config.get("network") or "none") != "host":
            out["network"] = net_dev_counters(rec.pid)
        return out

    def logs(self, ref: str, follow: bool = False, since: int = 0, until: int = 0,
             tail: int = -1) -> Iterator[LogLine]:
        from pallet.engine.logs import NO_READING, read_log

        rec = self.get(ref)
        if rec.config.get("log_driver") == "none":
            raise FailedPrecondition(NO_READING)
        rdir = self.run_dir(rec.id)
        return read_log(rec.log_path, since=since, until=until, tail=tail, follow=follow,
                        running=lambda: bool(monitor.alive(rdir)))

    def ports(self, ref: str) -> list[dict[str, Any]]:
        return list(self.get(ref).config.get("ports") or [])

    # -- exec --------------------------------------------------------------------------
    def exec_process(self, rec: ContainerRecord, argv: list[str], *, tty: bool = False,
                     env: list[str] | None = None, workdir: str = "", user: str = ""
                     ) -> dict[str, Any]:
        """The OCI process for `exec`: the container's own, with these overrides."""
        from pallet.engine.specgen import _env_merge
        from pallet.engine.users import resolve_user

        with open(os.path.join(self.ctr_dir(rec.id), "config.json")) as f:
            spec = json.load(f)
        proc = dict(spec["process"])
        proc["args"] = list(argv)
        proc["terminal"] = tty
        proc.pop("consoleSize", None)
        e = _env_merge(list(proc.get("env") or []), env or [])
        if tty and not any(x.startswith("TERM=") for x in e):
            e.append("TERM=xterm")
        proc["env"] = e
        if workdir:
            if not workdir.startswith("/"):
                raise InvalidArgument(f"the working directory {workdir!r} is invalid, it "
                                      "needs to be an absolute path")
            proc["cwd"] = workdir
        if user:
            u = resolve_user(os.path.join(self.ctr_dir(rec.id), "rootfs"), user)
            proc["user"] = {"uid": u.uid, "gid": u.gid,
                            **({"additionalGids": list(u.additional_gids)}
                               if u.additional_gids else {})}
        return proc

    def exec(self, ref: str, argv: list[str], *, tty: bool = False,
             stdio: tuple[int, int, int] | None = None, console_socket: str | None = None,
             env: list[str] | None = None, workdir: str = "", user: str = "",
             exec_id: str = "") -> int:
        """Start ARGV in the running container; return its host pid. The caller must be a
        single-threaded subreaper (it reaps the process, then reports it with exec_died
        under the same EXEC_ID, which docker's events name execID)."""
        if not argv:
            raise InvalidArgument("exec needs a command: pallet exec CONTAINER COMMAND [ARG...]")
        rec = self.get(ref)
        if rec.state == "paused":
            raise FailedPrecondition(f"container {rec.id} is paused, unpause the container "
                                     "before exec")
        if rec.state != "running":
            raise FailedPrecondition(f"container {rec.id} is not running")
        proc = self.exec_process(rec, argv, tty=tty, env=env, workdir=workdir, user=user)
        self.close()
        exec_id = exec_id or new_id()
        shown = " ".join(argv)
        container_event(self.root, rec, f"exec_create: {shown}", execID=exec_id)
        try:
            pid = self.handler(rec.runtime_handler).exec(rec.id, proc, stdio=stdio,
                                                        console_socket=console_socket)
        except PalletError as e:
            raise ContainerStartError(str(e), _start_error_code(str(e), exec=True)) from None
        container_event(self.root, rec, f"exec_start: {shown}", execID=exec_id)
        return pid

    def exec_died(self, ref: str, exec_id: str, code: int) -> None:
        """docker's exec_die event for the exec EXEC_ID that ended with CODE (none if the
        container is gone by then)."""
        try:
            rec = self.get(ref)
        except NotFound:
            return
        container_event(self.root, rec, "exec_die", execID=exec_id, exitCode=code)

    def exec_detached(self, ref: str, exec_id: str) -> None:
        """docker's exec_detach event: `exec -it`'s client left with the detach keys."""
        container_event(self.root, self.get(ref), "exec_detach", execID=exec_id)

    # -- copy --------------------------------------------------------------------------
    @contextlib.contextmanager
    def rootfs(self, ref: str) -> Iterator[str]:
        """The container's root as the host sees it, mounted for the duration if stopped."""
        rec = self.get(ref)
        cdir = self.ctr_dir(rec.id)
        # A created container's rootfs is mounted already (until it starts): leave it so.
        mounted_here = rec.state not in ("running", "paused", "restarting") and \
            not is_mountpoint(os.path.join(cdir, "rootfs"))
        if mounted_here:
            self.images.prepare_rootfs(rec.image_id, cdir)
        try:
            yield os.path.join(cdir, "rootfs")
        finally:
            if mounted_here:
                self.images.release_rootfs(cdir, drop_lease=False)

    def _in_view(self, ref: str, work: Callable[[str], None]) -> None:
        """Run WORK(ROOT), ROOT being the container's filesystem as its processes see it,
        volumes and bind mounts (/etc/hosts...) included: a running container's through
        /proc/PID/root; a stopped one's rootfs with its binds attached, as docker's daemon
        mounts them for cp, in the private mount namespace of a child that runs WORK (it
        forks: call this from a single-threaded process). Paths under ROOT must be opened
        with open_in_rootfs."""
        rec = self.get(ref)
        if rec.state in ("running", "paused") and rec.pid:
            work(f"/proc/{rec.pid}/root")
            return
        binds = [{"type": "bind", "source": m["source"], "destination": m["destination"],
                  "options": ["rbind", "ro" if m.get("readonly") else "rw"]}
                 for m in rec.config.get("mounts") or []
                 if m.get("type") == "bind" and m.get("source")
                 and os.path.lexists(m["source"])]
        # Outer mounts first, so a mount inside another volume lands on top of it.
        binds.sort(key=lambda m: os.path.normpath(m["destination"]).count("/"))
        # Volumes with a filesystem of their own are mounted for the while, as docker's
        # daemon mounts them for cp (a holder of their own: the container may start).
        holder = f"{rec.id}.cp"
        held: list[str] = []
        try:
            for name in dict.fromkeys(rec.config.get("volume_names") or []):
                with contextlib.suppress(NotFound):  # removed (forced): nothing to mount
                    self.volumes.acquire(name, holder)
                    held.append(name)
            with self.rootfs(rec.id) as rootfs:
                if not binds:
                    work(rootfs)
                    return
                _in_private_mounts(rootfs, binds, work)
        finally:
            for name in reversed(held):
                with contextlib.suppress(PalletError, OSError):
                    self.volumes.release(name, holder)

    def copy_from(self, ref: str, src: str, dest: str, follow_link: bool = False) -> None:
        """docker cp CONTAINER:SRC DEST (DEST "-": a tar stream on stdout). Every path is
        resolved inside the container's root; a symlink SRC is copied as a link unless
        FOLLOW_LINK."""
        from pallet.engine.users import open_in_rootfs

        def work(root: str) -> None:
            inner, follow = src, follow_link
            parent, name = os.path.split(inner.rstrip("/") if inner.strip("/") else "/")
            if inner.endswith("/") or name in ("", "."):
                follow = True  # SRC/ or SRC/. names the directory, not a link
            try:
                pfd = open_in_rootfs(root, parent or "/", os.O_PATH | os.O_DIRECTORY)
                try:
                    link = bool(name) and name not in (".", "..") and not follow and \
                        os.path.islink(f"/proc/self/fd/{pfd}/{name}")
                    target_link = os.readlink(name, dir_fd=pfd) if link else ""
                finally:
                    os.close(pfd)
                fd = -1 if link else open_in_rootfs(root, inner, os.O_PATH)
            except OSError as e:
                raise NotFound(f"Could not find the file {src} in container {ref}: "
                               f"{e.strerror}") from None
            base = os.path.basename(src.rstrip("/")) or "root"
            try:
                if dest == "-":
                    _tar_out(fd, target_link, base, sys.stdout.buffer)
                    return
                target = dest
                if os.path.isdir(dest) and not dest.endswith("/."):
                    target = os.path.join(dest, base)
                elif dest.endswith("/") and not os.path.exists(dest):
                    raise NotFound(f"destination directory {dest} does not exist")
                if link:
                    os.symlink(target_link, target)
                else:
                    _copy_out(fd, target)
            finally:
                if fd >= 0:
                    os.close(fd)

        self._in_view(ref, work)
        # docker cp's GET of the archive (the deprecated copy API's event was `copy`)
        container_event(self.root, self.get(ref), "archive-path")

    def copy_to(self, ref: str, src: str, dest: str) -> None:
        """docker cp SRC CONTAINER:DEST (SRC "-": a tar stream on stdin, DEST a directory).
        Nothing is written through a symlink that leads out of the container's root."""
        import tempfile

        from pallet.engine.users import open_in_rootfs

        if src != "-" and not os.path.lexists(src):
            raise NotFound(f"no such file or directory: {src}")

        def work(root: str) -> None:
            inner = dest
            try:
                dfd = open_in_rootfs(root, inner, os.O_RDONLY | os.O_DIRECTORY)
                name = os.path.basename(src.rstrip("/"))
            except (NotADirectoryError, FileNotFoundError):
                if src == "-":
                    raise NotFound(f"Could not find the directory {dest} in container {ref}: "
                                   "a tar stream is extracted into an existing directory"
                                   ) from None
                dfd, name = -1, ""
            if dfd < 0:
                parent, name = os.path.split(inner.rstrip("/"))
                try:
                    dfd = open_in_rootfs(root, parent or "/", os.O_RDONLY | os.O_DIRECTORY)
                except OSError as e:
                    raise NotFound(f"Could not find the file {os.path.dirname(dest)} in "
                                   f"container {ref}: {e.strerror}") from None
            try:
                if src != "-":
                    _copy_in(src, dfd, name)
                    return
                with tempfile.TemporaryDirectory(prefix="pallet-cp-") as tmp:
                    _untar(sys.stdin.buffer, tmp)
                    for entry in sorted(os.listdir(tmp)):
                        _copy_in(os.path.join(tmp, entry), dfd, entry)
            except OSError as e:
                if e.errno == errno.EROFS:
                    raise FailedPrecondition(f"mounted volume is marked read-only: {dest} in "
                                             f"container {ref}") from None
                raise
            finally:
                os.close(dfd)

        self._in_view(ref, work)
        container_event(self.root, self.get(ref), "extract-to-dir")  # docker cp's PUT

    # -- reporting -----------------------------------------------------------------------
    def inspect(self, ref: str) -> dict[str, Any]:
        rec = self.get(ref)
        cdir = self.ctr_dir(rec.id)
        try:
            with open(os.path.join(cdir, "config.json")) as f:
                spec = json.load(f)
        except (OSError, ValueError):
            spec = {}
        proc = spec.get("process") or {}
        cfg = rec.config
        ex = self.exit_info(rec.id)
        state = {
            "Status": rec.state, "Running": rec.state in ("running", "paused"),
            "Paused": rec.state == "paused", "Restarting": rec.state == "restarting",
            "OOMKilled": bool(ex.get("oom_killed")), "Dead": False,
            "Pid": rec.pid if rec.state in ("running", "paused") else 0,
            "ExitCode": rec.exit_code or 0, "Error": ex.get("error", ""),
            "StartedAt": _rfc3339(rec.started_at), "FinishedAt": _rfc3339(rec.finished_at),
        }
        health = self.health(rec)
        if health is not None:
            state["Health"] = health
        mounts = []
        for m in cfg.get("mounts") or []:
            if m["destination"] in ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf"):
                continue
            entry = {"Type": m["type"], "Source": m["source"], "Destination": m["destination"],
                     "Mode": "", "RW": not m["readonly"],
                     "Propagation": m["propagation"] or "rprivate"}
            if m["source"].startswith(self.volumes.dir):
                name = os.path.basename(os.path.dirname(m["source"]))
                del entry["Type"]
                entry = {"Type": "volume", "Name": name, **entry, "Driver": "local"}
            mounts.append(entry)
        args = proc.get("args") or []
        return {
            "Id": rec.id, "Created": _rfc3339(rec.created_at), "Path": args[0] if args else "",
            "Args": args[1:], "State": state, "Image": rec.image_id,
            "ResolvConfPath": os.path.join(cfg.get("etc_dir") or cdir, "resolv.conf"),
            "HostnamePath": os.path.join(cfg.get("etc_dir") or cdir, "hostname"),
            "HostsPath": os.path.join(cfg.get("etc_dir") or cdir, "hosts"),
            "LogPath": "" if cfg.get("log_driver") == "none" else rec.log_path,
            "Name": "/" + rec.name, "RestartCount": rec.restart_count,
            "Driver": "overlay", "Platform": "linux",
            "HostConfig": {
                "NetworkMode": cfg.get("network", "none"),
                "RestartPolicy": {"Name": rec.restart_policy.partition(":")[0],
                                  "MaximumRetryCount": int(rec.restart_policy.partition(":")[2]
                                                           or 0)},
                "AutoRemove": bool(cfg.get("auto_remove")),
                "Runtime": rec.runtime_handler or "pallet",
                "ReadonlyRootfs": bool((spec.get("root") or {}).get("readonly")),
                "PortBindings": _port_bindings(cfg.get("ports") or []),
                "PublishAllPorts": bool(cfg.get("publish_all")),
                **{key: (cfg.get("namespace_modes") or {}).get(kind, default)
                   for key, kind, default in (("IpcMode", "ipc", "private"),
                                              ("PidMode", "pid", ""), ("UTSMode", "uts", ""),
                                              ("CgroupnsMode", "cgroup", "private"))},
                "CgroupParent": cfg.get("cgroup_parent", ""),
                "Binds": [f"{m['source']}:{m['destination']}" + (":ro" if m["readonly"] else "")
                          for m in cfg.get("mounts") or [] if m.get("type") == "bind"
                          and not m["destination"].startswith("/etc/")
                          and not m["source"].startswith(self.volumes.dir)] or None,
                **_inspect_host_config(cfg.get("host_config") or {}, spec),
                "LogConfig": {"Type": cfg.get("log_driver") or "json-file",
                              "Config": (cfg.get("host_config") or {}).get("log_opts") or {}},
            },
            "Mounts": mounts,
            "Config": {
                "Hostname": spec.get("hostname", ""), "Domainname": spec.get("domainname", ""),
                "User": (cfg.get("host_config") or {}).get("user",
                                                            _user_str(proc.get("user"))),
                "Tty": bool(cfg.get("tty")), "OpenStdin": bool(cfg.get("stdin")),
                "Env": proc.get("env") or [], "Cmd": cfg.get("cmd") or
                (cfg.get("image_config") or {}).get("Cmd"),
                "Image": cfg.get("image", rec.image_ref), "WorkingDir": proc.get("cwd", "/"),
                "Entrypoint": cfg.get("entrypoint") if cfg.get("entrypoint") is not None
                else (cfg.get("image_config") or {}).get("Entrypoint"),
                "Labels": rec.labels, "StopSignal": cfg.get("stop_signal") or "SIGTERM",
                **({"MacAddress": cfg["mac_address"]} if cfg.get("mac_address") else {}),
                **({"StopTimeout": cfg["stop_timeout"]}
                   if cfg.get("stop_timeout") is not None else {}),
                "ExposedPorts": {p: {} for p in cfg.get("exposed") or []} or None,
                **({"Healthcheck": _merged_healthcheck(rec)} if _merged_healthcheck(rec)
                   else {}),
            },
            "NetworkSettings": self._network_settings(rec),
        }

    def _network_settings(self, rec: ContainerRecord) -> dict[str, Any]:
        """docker inspect's NetworkSettings: ports, and the address on each network."""
        cfg = rec.config
        out: dict[str, Any] = {"Ports": _port_bindings(cfg.get("ports") or []),
                               "IPAddress": "", "IPPrefixLen": 0, "Gateway": "",
                               "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                               "IPv6Gateway": "", "MacAddress": "", "Networks": {}}
        name = cfg.get("network") or "none"
        empty = {"IPAMConfig": None, "IPAddress": "", "IPPrefixLen": 0, "Gateway": "",
                 "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPv6Gateway": "",
                 "MacAddress": "", "Aliases": None, "NetworkID": ""}
        if name in NETWORK_MODES:
            out["Networks"] = {name: empty}
            return out
        if name.startswith(CONTAINER_MODE):
            return out  # docker: no endpoint of its own, no networks

        from pallet.engine.network import Networks

        nets = Networks(self.store, self.root)
        for i, n in enumerate(container_networks(cfg)):
            att = nets.attachment(rec.id, cni_network(n["name"]), n["ifname"])
            if att is None:
                out["Networks"][n["name"]] = {**empty, "Aliases": list(n.get("aliases") or [])}
                continue
            addrs = _addresses(att)
            static = n.get("ips") or []
            ipam = {"IPv4Address": next((i for i in static if ":" not in i), ""),
                    "IPv6Address": next((i for i in static if ":" in i), "")}
            out["Networks"][n["name"]] = {
                **empty, **addrs, "IPAMConfig": ipam if static else None,
                "MacAddress": att.mac, "Aliases": list(att.aliases),
                "NetworkID": nets.get(att.network).id if att.network else ""}
            if i == 0:
                out.update(addrs, MacAddress=att.mac)
        return out

    # -- network connect / disconnect ------------------------------------------------------
    def connect(self, ref: str, network: str, aliases: list[str] | tuple[str, ...] = (),
                ip: str = "", ip6: str = "") -> ContainerRecord:
        """docker network connect: join NETWORK now (CNI ADD into the container's netns,
        as its next ethN) if it runs, and at every start; names resolve both ways.
        IP/IP6: static addresses on it (docker's --ip/--ip6)."""
        from pallet.engine import netns
        from pallet.engine.network import Networks

        rec = self.get(ref)
        mode = rec.config.get("network") or "none"
        if mode.startswith(CONTAINER_MODE):
            raise FailedPrecondition("container sharing network namespace with another "
                                     "container or host cannot be connected to any other "
                                     "network")
        if "host" in (mode, network):
            raise FailedPrecondition("container cannot be disconnected from host network or "
                                     "connected to host network")
        if "none" in (mode, network):
            raise FailedPrecondition("container cannot be connected to multiple networks with "
                                     "one of the networks in private (none) mode")
        nets = Networks(self.store, self.root, netns_dir=self.run_dir(rec.id))
        try:
            net = nets.get(cni_network(network))
        except NotFound:
            raise NotFound(f"network {network} not found") from None
        joined = container_networks(rec.config)
        if any(cni_network(n["name"]) == net.name for n in joined):
            raise AlreadyExists(f"endpoint with name {rec.name} already exists in network "
                                f"{network}")
        static_ips = [i for i in (ip, ip6) if i]
        if static_ips:
            _check_static_ips(self, network, ip, ip6)
        used = {n["ifname"] for n in joined}
        ifname = next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)
        entry = {"name": network, "ifname": ifname, "aliases": list(aliases), "ips": static_ips}
        path = os.path.join(self.run_dir(rec.id), "netns")
        live = rec.state in ("running", "paused", "restarting") and netns.is_netns(path)
        if live:
            nets.attach(path, rec.id, net.name, ifname=ifname,
                        aliases=[rec.name, *aliases], default_route=not joined, ips=static_ips)
        config = {**rec.config, "networks": joined + [entry]}
        switch = not config.get("embedded_dns") and uses_embedded_dns(net.name, self.store)
        if switch:
            config["embedded_dns"] = True
        try:
            rec = self.store.update_container(rec.id, config=config)
        except BaseException:
            if live:
                with contextlib.suppress(PalletError, OSError):
                    nets.detach(rec.id, net.name, ifname, path)
            raise
        if switch:
            _use_embedded_dns(self, rec)
        if live:
            _refresh_hosts(self, nets, net.name)
            _sync_dns(self, start=bool(rec.config.get("embedded_dns")))
        return rec

    def disconnect(self, ref: str, network: str, force: bool = False) -> ContainerRecord:
        """docker network disconnect: CNI DEL of that interface (if it runs), and the
        network is no longer joined at start; the others stop resolving its name."""
        from pallet.engine.network import Networks

        rec = self.get(ref)
        if "host" in (network, rec.config.get("network")):
            raise FailedPrecondition("container cannot be disconnected from host network or "
                                     "connected to host network")
        nets = Networks(self.store, self.root)
        try:
            name = nets.get(cni_network(network)).name
        except NotFound:
            if not force:
                raise NotFound(f"network {network} not found") from None
            name = cni_network(network)
        joined = container_networks(rec.config)
        mine = [n for n in joined if cni_network(n["name"]) == name]
        if not mine:
            raise FailedPrecondition(f"container {rec.id[:12]} is not connected to network "
                                     f"{network}")
        path = os.path.join(self.run_dir(rec.id), "netns")
        if nets.attachment(rec.id, name, mine[0]["ifname"]) is not None:
            nets.detach(rec.id, name, mine[0]["ifname"], path if os.path.exists(path) else "")
        rest = [n for n in joined if n is not mine[0]]
        rec = self.store.update_container(rec.id, config={**rec.config, "networks": rest})
        _refresh_hosts(self, nets, name, also=(rec.id,))
        _sync_dns(self)
        return rec

    def container_size(self, ref: str) -> tuple[int, int]:
        """docker's SizeRw (the container's own writes) and SizeRootFs (those plus its
        image's unpacked layers), in bytes."""
        rec = self.get(ref)
        rw = _du(os.path.join(self.ctr_dir(rec.id), "upper"))
        try:
            image = self.images.unpacked_size(rec.image_id)
        except PalletError:  # its image was removed meanwhile
            image = 0
        return rw, rw + image

    def remove_image(self, ref: str, force: bool = False, prune: bool = True) -> list[str]:
        """docker's rmi: refused while a container (even a stopped one) uses the image,
        unless FORCE; by id, not even then while one runs. Untagging one of several
        names is always fine. Returns docker's Untagged:/Deleted: lines. With PRUNE, a
        deleted built image's untagged parents (its build steps) that no other image
        was built on and no container uses go too, as docker's."""
        parents = self.images.build_parents() if prune else {}
        lines = self._remove_image(ref, force)
        if not parents or not lines or not lines[-1].startswith("Deleted: "):
            return lines
        parent = parents.pop(lines[-1].split(" ", 1)[1], "")
        used = {c.image_id for c in self.store.list_containers()}
        pruned = False
        # docker stops at the first parent that is tagged, has another child or is used.
        while parent and parent not in used and parent not in parents.values():
            try:
                image = self.images.get(parent)
                if image.names:
                    break
                lines += self.images.remove(image.id, collect=False)
            except (NotFound, FailedPrecondition):
                break
            pruned = True
            parent = parents.pop(image.id, "")
        if pruned:
            self.images.garbage_collect(blocking=False)
        return lines

    def _remove_image(self, ref: str, force: bool) -> list[str]:
        image, by_name = self.images.lookup(ref)
        users = [c for c in self.store.list_containers() if c.image_id == image.id]
        if users and by_name and not force and len(image.names) <= 1:
            raise FailedPrecondition(
                f'conflict: unable to remove repository reference "{ref}" (must force) - '
                f"container {users[0].id[:12]} is using its referenced image {image.short_id}")
        if users and not by_name:
            running = [c for c in users if c.state in ("running", "paused", "restarting")]
            if running:
                raise FailedPrecondition(
                    f"conflict: unable to delete {image.short_id} (cannot be forced) - image "
                    f"is being used by running container {running[0].id[:12]}")
            if not force:
                raise FailedPrecondition(
                    f"conflict: unable to delete {image.short_id} (must be forced) - image "
                    f"is being used by stopped container {users[0].id[:12]}")
        return self.images.remove(ref, force=force)

    def prune_images(self, all: bool = False,
                     only: Callable[[Image], bool] | None = None) -> tuple[list[str], int]:
        """docker's image prune: the dangling (unnamed) images, or with ALL every image that
        no container (of any state) was made from; with ONLY, of those the ones it chooses
        (a prune's filters). Returns docker's `untagged:`/`deleted:` lines and the bytes
        freed."""
        used = {c.image_id for c in self.store.list_containers()}
        lines: list[str] = []
        # -a takes a build's intermediate step images (its cache) too.
        for image in self.images.list(intermediates=all):
            if image.id in used or (image.names and not all) or (only and not only(image)):
                continue
            with contextlib.suppress(NotFound):  # removed meanwhile by someone else
                lines += [ln[0].lower() + ln[1:]
                          for ln in self.images.remove(image.id, force=True, collect=False)]
        return lines, self.images.garbage_collect(blocking=True)["bytes"]

    def disk_usage(self) -> dict[str, tuple[int, int, int, int]]:
        """`system df`: (total, active, size, reclaimable) of images, containers' writable
        layers and volumes; reclaimable is what no container (running, for containers)
        uses."""
        images = self.images.list()
        ctrs = [self._refresh(c) for c in self.store.list_containers()]
        used_images = {c.image_id for c in ctrs}
        vols = self.volumes.list()
        ctr_sizes = {c.id: _du(os.path.join(self.ctr_dir(c.id), "upper")) for c in ctrs}
        vol_sizes = {v.name: _du(v.mountpoint) for v in vols}
        vol_used = {v.name for v in vols if self.volumes.users(v.name)}
        running = ("running", "paused", "restarting")
        return {
            "images": (len(images), sum(1 for i in images if i.id in used_images),
                       sum(i.size for i in images),
                       sum(i.size for i in images if i.id not in used_images)),
            "containers": (len(ctrs), sum(1 for c in ctrs if c.state in running),
                           sum(ctr_sizes.values()),
                           sum(ctr_sizes[c.id] for c in ctrs if c.state not in running)),
            "volumes": (len(vols), len(vol_used), sum(vol_sizes.values()),
                        sum(n for v, n in vol_sizes.items() if v not in vol_used)),
        }

    def disk_usage_detail(self) -> dict[str, list[Any]]:
        """`system df -v`: per image (Image, bytes it shares with other images, containers
        made from it), per container (record, its writable layer's bytes) and per volume
        (record, containers naming it, bytes)."""
        images = self.images.list()
        ctrs = [self._refresh(c) for c in self.store.list_containers()]
        holders: dict[str, int] = {}
        for i in images:
            for digest in {d.digest for d in i.layers}:
                holders[digest] = holders.get(digest, 0) + 1
        uses: dict[str, int] = {}
        links: dict[str, int] = {}
        for c in ctrs:
            uses[c.image_id] = uses.get(c.image_id, 0) + 1
            for name in set(c.config.get("volume_names") or []):
                links[name] = links.get(name, 0) + 1
        return {
            "images": [(i, sum(d.size for d in {d.digest: d for d in i.layers}.values()
                               if holders[d.digest] > 1), uses.get(i.id, 0))
                       for i in images],
            "containers": [(c, _du(os.path.join(self.ctr_dir(c.id), "upper"))) for c in ctrs],
            "volumes": [(v, links.get(v.name, 0), _du(v.mountpoint))
                        for v in self.volumes.list()],
        }


# -- the events journal --------------------------------------------------------------------------
def _merged_healthcheck(rec: ContainerRecord) -> dict[str, Any] | None:
    """inspect's Config.Healthcheck: the container's over the image's, as docker merges."""
    image = (rec.config.get("image_config") or {}).get("Healthcheck")
    if not image and not rec.config.get("healthcheck"):
        return None
    from pallet.engine.health import merge

    return merge(image, rec.config.get("healthcheck"))


def healthcheck(rec: ContainerRecord) -> dict[str, Any] | None:
    """The health check REC runs (docker's Healthcheck), None if none."""
    if not (rec.config.get("image_config") or {}).get("Healthcheck") and \
            not rec.config.get("healthcheck"):
        return None  # most containers: no import
    from pallet.engine.health import effective

    return effective((rec.config.get("image_config") or {}).get("Healthcheck"),
                     rec.config.get("healthcheck"))


def container_event(root: str, rec: ContainerRecord, action: str, **attrs: Any) -> None:
    """docker's container event: attributes image, name, the container's labels, and ATTRS."""
    from pallet.events import emit

    emit(root, "container", action, rec.id,
         {**rec.labels, "image": rec.image_ref or rec.image_id, "name": rec.name, **attrs})


def volume_events(root: str, rec: ContainerRecord, action: str) -> None:
    """docker's volume `mount` (driver, container, destination, read/write, propagation) or
    `unmount` (driver, container) of each named or anonymous volume REC has."""
    from pallet.events import emit

    names = rec.config.get("volume_names") or []
    if not names:
        return
    if action != "mount":
        for name in names:
            emit(root, "volume", action, name, {"driver": "local", "container": rec.id})
        return
    by_source = {m.get("source"): m for m in rec.config.get("mounts") or []}
    vdir = os.path.join(root, "volumes")
    for name in names:
        m = by_source.get(os.path.join(vdir, name, "_data")) or {}
        emit(root, "volume", action, name, {
            "driver": "local", "container": rec.id, "destination": m.get("destination", ""),
            "read/write": "false" if m.get("readonly") else "true",
            "propagation": m.get("propagation", "")})


# -- the monitor's helpers run these (in a child of the monitor) ------------------------------
def monitor_op(op: str, cfg: dict[str, Any], arg: dict[str, Any]) -> dict[str, Any]:
    """What a monitor's helper asks of the engine (in a fork server's worker, or itself)."""
    if op == "finish":
        return monitor_finish(cfg, arg)
    if op == "started":
        return monitor_started(cfg, arg)
    if op == "rejoin":
        return monitor_rejoin(cfg)
    raise InvalidArgument(f"unknown monitor operation {op!r}")


def monitor_started(cfg: dict[str, Any], arg: dict[str, Any]) -> dict[str, Any]:
    """A monitor restarted its container: record it running again."""
    store = Store(cfg["root"])
    try:
        rec = store.update_container(cfg["id"], state="running", pid=int(arg["pid"]),
                                     started_at=now_ns(), exit_code=None,
                                     restart_count=int(arg.get("restart_count", 0)))
    except NotFound:
        pass  # removed meanwhile
    else:
        container_event(cfg["root"], rec, "start")
    finally:
        store.close()
    return {}


def monitor_rejoin(cfg: dict[str, Any]) -> dict[str, Any]:
    """Before a monitor restarts a container that joins others' namespaces: look them up
    again ({"error": why} if one no longer runs)."""
    eng = Engine(cfg["root"], cfg["run_root"])
    try:
        eng.link_joins(eng.store.get_container(cfg["id"]))
    except PalletError as e:
        return {"error": str(e)}
    finally:
        eng.close()
    return {}


def monitor_finish(cfg: dict[str, Any], arg: dict[str, Any]) -> dict[str, Any]:
    """After the container's init exited (or failed to start): record it, release the
    runtime state, and auto-remove or report whether to restart."""
    eng = Engine(cfg["root"], cfg["run_root"])
    try:
        try:
            rec = eng.store.get_container(cfg["id"])
        except NotFound:
            return {"restart": False}  # removed meanwhile (rm -f)
        restart = bool(arg.get("restart"))
        # Read before delete removes the cgroup; only after a SIGKILL (as the OOM killer's)
        # for the event, so that an ordinary exit does not pay for the read.
        oom = arg["exit_code"] == 128 + signal.SIGKILL and oom_killed(eng.ctr_dir(rec.id),
                                                                       rec.id)
        if not arg.get("error"):
            if oom:
                container_event(eng.root, rec, "oom")
            container_event(eng.root, rec, "die", exitCode=arg["exit_code"])
            if not restart:
                volume_events(eng.root, rec, "unmount")
        if arg.get("error"):
            changes: dict[str, Any] = {"state": "created", "exit_code": arg["exit_code"],
                                       "pid": 0}
        else:
            changes = {"state": "restarting" if restart else "exited",
                       "exit_code": arg["exit_code"], "finished_at": arg["finished_at"],
                       "pid": 0, "restart_count": arg.get("restart_count", 0)}
        if restart:
            with contextlib.suppress(PalletError, OSError):
                eng.handler(rec.runtime_handler).delete(rec.id, force=True)
            eng.store.update_container(rec.id, **changes)
            return {"restart": True}
        if rec.config.get("auto_remove"):
            eng.destroy(rec, volumes=True)
            return {"restart": False}
        if oom or oom_killed(eng.ctr_dir(rec.id), rec.id):
            changes["config"] = {**rec.config, "oom_killed": True}
        eng.release_after_exit(rec)
        eng.store.update_container(rec.id, **changes)
        return {"restart": False}
    finally:
        eng.close()


def oom_killed(ctr_dir: str, cid: str) -> bool:
    """Whether the kernel's OOM killer killed a process of the container (its memory cgroup's
    oom_kill count, v1 memory.oom_control or v2 memory.events); False when unknown."""
    try:
        with open(os.path.join(ctr_dir, "config.json")) as f:
            path = (json.load(f).get("linux") or {}).get("cgroupsPath")
        from pallet.oci.cgroups import detect_layout
        from pallet.oci.cgroups.layout import cgroup_dir, normalize_cgroups_path

        layout = detect_layout()
        rel = normalize_cgroups_path(path, cid)
        if not rel.startswith("/"):
            return False  # relative to the runtime's own cgroup: not ours to find
        if layout.v1 and "memory" in layout.v1:
            d, name = cgroup_dir(layout.v1["memory"], rel, None), "memory.oom_control"
        elif layout.unified is not None:
            d, name = cgroup_dir(layout.unified, rel, None), "memory.events"
        else:
            return False
        with open(os.path.join(d, name)) as f:
            return any(ln.split()[0] == "oom_kill" and int(ln.split()[1]) > 0
                       for ln in f if ln.strip())
    except (OSError, ValueError, IndexError, PalletError):
        return False


# -- networking hook ---------------------------------------------------------------------------
def _addresses(att: Any) -> dict[str, Any]:
    """docker inspect's per-family address fields of one attachment."""
    out: dict[str, Any] = {}
    for cidr in att.ips:
        ip, _, plen = cidr.partition("/")
        if ":" in ip and "GlobalIPv6Address" not in out:
            out.update(GlobalIPv6Address=ip, GlobalIPv6PrefixLen=int(plen or 0))
        elif ":" not in ip and "IPAddress" not in out:
            out.update(IPAddress=ip, IPPrefixLen=int(plen or 0))
    # The CNI result has one gateway per address: the bridge's in that family.
    for gw in att.gateways:
        out["IPv6Gateway" if ":" in gw else "Gateway"] = gw
    return out



def _check_static_ips(engine: Engine, network: str, ip: str, ip6: str) -> None:
    """docker's refusals of --ip/--ip6 at create: a network mode without addresses, the
    wrong family, outside the network's subnets, its gateway. (An address another
    container holds is refused when this one starts, as in docker.)"""
    from pallet.engine.network import Networks, static_ip_error

    if network in ("host", "none"):
        raise InvalidArgument("user specified IP address is supported on user defined "
                              "networks only")
    for value, version in ((ip, 4), (ip6, 6)):
        if value and static_ip_error(value, [], version=version).startswith("invalid"):
            raise InvalidArgument(static_ip_error(value, [], version=version))
    nets = Networks(engine.store, engine.root)
    nets.check_static_ips(nets.get(cni_network(network)), [i for i in (ip, ip6) if i],
                          held=False)


def _network_available(network: str, engine: Engine) -> None:
    try:
        from pallet.engine.network import DEFAULT_NETWORK, Networks
    except ImportError:
        raise InvalidArgument(f"network {network!r} not found: only --network none and "
                              "host are available in this build") from None
    name = DEFAULT_NETWORK if network in ("bridge", "default") else network
    try:
        Networks(engine.store, engine.root).get(name)
    except NotFound:
        raise NotFound(f"network {network} not found") from None


def has_own_network(config: dict[str, Any]) -> bool:
    """Whether a container (its record's config) has a network namespace of its own on CNI
    networks: not host, none, or another container's (container:X)."""
    mode = config.get("network") or "none"
    return mode not in NETWORK_MODES and not mode.startswith(CONTAINER_MODE)


def check_shared_network(req: CreateRequest) -> None:
    """docker's refusals of what a container joining another's network (--network
    container:X) cannot have of its own, in docker's order and words."""
    if not req.network[len(CONTAINER_MODE):]:
        raise InvalidArgument("Invalid network mode: invalid container format "
                              "container:<name|id>")
    if req.options.hostname:
        raise InvalidArgument("conflicting options: hostname and the network mode")
    if req.dns:
        raise InvalidArgument("conflicting options: dns and the network mode")
    if req.extra_hosts:
        raise InvalidArgument("conflicting options: custom host-to-IP mapping and the "
                              "network mode")
    if req.ports or req.publish_all:
        raise InvalidArgument("conflicting options: port publishing and the container type "
                              "network mode")
    if req.expose:
        raise InvalidArgument("conflicting options: port exposing and the container type "
                              "network mode")
    if req.ip or req.ip6:
        raise InvalidArgument("user specified IP address is supported on user defined "
                              "networks only")
    if req.aliases:
        raise InvalidArgument("network-scoped aliases are only supported for user-defined "
                              "networks")


def container_networks(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The networks a container joins when it starts, in order, as {"name", "ifname",
    "aliases"}: its --network, then what `network connect` added (or less, after
    `network disconnect`). host and none join none."""
    if "networks" in config:
        return [dict(n) for n in config["networks"]]
    mode = config.get("network") or "none"
    return [] if not has_own_network(config) else [
        {"name": mode, "ifname": "eth0", "aliases": list(config.get("aliases") or []),
         "ips": list(config.get("ips") or []), "mac": config.get("mac_address", "")}]


def parse_mac(text: str) -> str:
    """--mac-address as Go's net.ParseMAC reads it (aa:bb:cc:dd:ee:ff, aa-bb-..., or
    aabb.ccdd.eeff), for an Ethernet interface (6 bytes, unicast); lower case with colons."""
    s = text.strip()
    groups: list[str] = []
    if len(s) >= 14 and s[2] in ":-":
        groups = s.split(s[2])
        ok = all(len(g) == 2 for g in groups)
    elif len(s) >= 14 and s[4] == ".":
        groups = [g[i:i + 2] for g in s.split(".") for i in (0, 2)]
        ok = all(len(g) == 4 for g in s.split("."))
    else:
        ok = False
    ok = ok and all(c in "0123456789abcdefABCDEF" for g in groups for c in g)
    octets = bytes(int(g, 16) for g in groups) if ok else b""
    if len(octets) != 6:
        raise InvalidArgument(f"{text} is not a valid mac address")
    if octets[0] & 1:
        raise InvalidArgument(f"{text} is not a valid mac address: a multicast address "
                              "cannot be an interface's")
    return ":".join(f"{o:02x}" for o in octets)


def parse_extra_host(spec: str) -> tuple[str, str]:
    """--add-host HOST:IP (or HOST=IP; an IPv6 address may be in brackets)."""
    import ipaddress

    host, sep, ip = spec.partition("=") if "=" in spec else spec.partition(":")
    ip = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise InvalidArgument(f"invalid argument {spec!r} for --add-host: use HOST:IP") from None
    if not sep or not host:
        raise InvalidArgument(f"invalid argument {spec!r} for --add-host: use HOST:IP")
    return host, ip


def uses_embedded_dns(network: str, store: Store) -> bool:
    """docker's rule: containers on a user-defined network resolve at 127.0.0.11 (see
    pallet/engine/dns.py); on the default bridge, host and none, and on a network made with
    --disable-dns (podman's), with the host's servers."""
    from pallet.engine.network import DEFAULT_NETWORK, dns_enabled

    if not has_own_network({"network": network}) or cni_network(network) == DEFAULT_NETWORK:
        return False
    try:
        return dns_enabled(store.get_network(cni_network(network)))
    except NotFound:
        return True  # not made yet (compose) or a typo, which attaching reports


def cni_network(name: str) -> str:
    """The network record behind a name a user gives: bridge is pallet's default."""
    from pallet.engine.network import DEFAULT_NETWORK

    return DEFAULT_NETWORK if name in ("bridge", "default") else name


def _network_setup(engine: Engine, rec: ContainerRecord, netns_path: str) -> Any:
    """The hook bridge and named networks use: make the container's netns at NETNS_PATH
    (or take the one made already) and attach it to each of its networks via CNI (the
    first with rec.config["ports"] and the default route). Returns the first attachment
    (None without networks)."""
    from pallet.engine import netns
    from pallet.engine.network import Networks

    path = netns.create(os.path.basename(netns_path), os.path.dirname(netns_path))
    nets = Networks(engine.store, engine.root, netns_dir=os.path.dirname(netns_path))
    joined = container_networks(rec.config)
    first = None
    try:
        nets.loopback_up(path, rec.id)
        for i, n in enumerate(joined):
            ports: list[dict[str, Any]] = []
            if i == 0:
                ports = rec.config.get("ports") or []
                if any(not p.get("hostPort") for p in ports):
                    # docker's `-p 80`: an ephemeral host port, kept so `pallet port` shows it.
                    ports = nets.allocate_host_ports(ports)
                    engine.store.update_container(rec.id, config={**rec.config, "ports": ports})
            att = nets.attach(path, rec.id, cni_network(n["name"]), ports, ifname=n["ifname"],
                              aliases=[rec.name, *n.get("aliases", [])], default_route=i == 0,
                              ips=n.get("ips") or (), mac=n.get("mac") or "")
            first = first or att
    except BaseException:
        with contextlib.suppress(PalletError, OSError):
            nets.detach_all(rec.id, path)
        netns.remove(path)
        raise
    for n in joined:
        _refresh_hosts(engine, nets, cni_network(n["name"]))
    _sync_dns(engine, start=bool(rec.config.get("embedded_dns")))
    return first


def _use_embedded_dns(engine: Engine, rec: ContainerRecord) -> None:
    """A container that joins its first user-defined network (docker's libnetwork: the
    resolver starts when an endpoint needs one) resolves through the embedded server from
    now on: its resolv.conf, bind-mounted, is rewritten in place (same inode)."""
    from pallet.engine import dns

    hc = rec.config.get("host_config") or {}
    text = dns.resolv_conf(_host_resolv_conf(True), hc.get("dns") or [],
                           hc.get("dns_search") or [], hc.get("dns_options") or [])
    with contextlib.suppress(FileNotFoundError), \
            open(os.path.join(engine.ctr_dir(rec.id), "resolv.conf"), "r+") as f:
        f.write(text)
        f.truncate()


def _sync_dns(engine: Engine, start: bool = False) -> None:
    """Bring the embedded DNS server up to date with the attachments (START: start it if
    none runs, for a container that resolves through it)."""
    from pallet.engine import dns

    try:
        dns.sync(engine.root, engine.run_root, start=start)
    except OSError as e:
        if start:
            raise SystemFailure(str(e)) from None


def _relayed(mapping: dict[str, Any]) -> bool:
    from pallet.engine import relay

    return relay.relayed(mapping)


def _relay_frame(att: Any) -> bytes:
    """The monitor's `f` frame for the published ports of ATT (the first attachment) that
    answer on [::1] (docker-proxy's rule), b"" if none: the monitor relays them."""
    if att is None or not att.port_mappings:
        return b""
    from pallet.engine import relay

    targets = relay.targets(att.port_mappings, att.ips)
    return monitor.frame(b"f", relay.encode(targets)) if targets else b""


def _refresh_hosts(engine: Engine, nets: Any, net: str, also: tuple[str, ...] = ()) -> None:
    """Rewrite /etc/hosts of every container on NET (and of the containers ALSO) so each
    finds by name the others on every network it shares with them.

    No DNS server: the files are bind-mounted into the containers, so they are rewritten
    in place (same inode) and running containers see the change at once.
    """
    every = nets.attachments()
    for cid in {a.container_id for a in every if a.network == net} | set(also):
        path = os.path.join(engine.ctr_dir(cid), "hosts")
        try:
            with open(os.path.join(engine.ctr_dir(cid), "hostname")) as f:
                hostname = f.read().strip()
        except OSError:
            continue  # not a pallet CLI container (a CRI pod keeps its own files)
        mine = {a.network for a in every if a.container_id == cid}
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        with contextlib.suppress(NotFound):
            extra = engine.store.get_container(cid).config.get("extra_hosts") or []
            lines += [f"{ip}\t{host}" for host, ip in extra]
        seen = set()
        for a in every:
            if a.network not in mine or not a.aliases:
                continue
            for ip in a.ips:
                ip = ip.split("/")[0]
                names = ([hostname] if a.container_id == cid else []) + list(a.aliases)
                if (ip, tuple(names)) not in seen:
                    seen.add((ip, tuple(names)))
                    lines.append(f"{ip}\t" + " ".join(names))
        if not mine:
            lines.append(f"127.0.1.1\t{hostname}")
        text = "\n".join(lines) + "\n"
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "w") as f:
                f.write(text)


def _network_teardown(engine: Engine, rec: ContainerRecord, netns_path: str) -> None:
    try:
        from pallet.engine import netns
        from pallet.engine.network import Networks
    except ImportError:
        return
    nets = Networks(engine.store, engine.root)
    with contextlib.suppress(PalletError, OSError):
        nets.detach_all(rec.id, netns_path)
    with contextlib.suppress(PalletError, OSError):
        if os.path.exists(netns_path):
            netns.remove(netns_path)
    for n in container_networks(rec.config):
        with contextlib.suppress(PalletError, OSError):
            _refresh_hosts(engine, nets, cni_network(n["name"]))
    _sync_dns(engine)


# -- small pure helpers ----------------------------------------------------------------------
def _host_config(opts: ContainerOptions, req: CreateRequest) -> dict[str, Any]:
    """What inspect's HostConfig reports of the options, kept with the container."""
    return {"memory": opts.memory or 0, "memory_swap": opts.memory_swap or 0,
            "cpus": opts.cpus or 0, "pids_limit": opts.pids_limit,
            "cap_add": list(opts.cap_add), "cap_drop": list(opts.cap_drop),
            "security_opt": list(opts.security_opt), "privileged": opts.privileged,
            "init": opts.init, "shm_size": opts.shm_size, "user": opts.user,
            "sysctls": dict(opts.sysctls), "tmpfs": list(req.tmpfs),
            "mounts": [_mount_json(spec) for spec in req.mounts],
            "devices": [{"PathOnHost": d.path_on_host, "PathInContainer": d.path_in_container,
                         "CgroupPermissions": d.permissions} for d in opts.devices],
            "device_cgroup_rules": list(opts.device_cgroup_rules),
            "dns": list(req.dns), "dns_search": list(req.dns_search),
            "dns_options": list(req.dns_options), "domainname": opts.domainname,
            "ulimits": [{"Name": u.name, "Hard": u.hard, "Soft": u.soft} for u in opts.ulimits],
            "cpu_shares": opts.cpu_shares or 0, "cpu_period": opts.cpu_period or 0,
            "cpu_quota": opts.cpu_quota or 0, "cpuset_cpus": opts.cpuset_cpus,
            "cpuset_mems": opts.cpuset_mems,
            "memory_reservation": opts.memory_reservation or 0,
            "oom_kill_disable": opts.oom_kill_disable, "oom_score_adj": opts.oom_score_adj or 0,
            "blkio_weight": opts.blkio_weight, "log_opts": dict(req.log_opts),
            "annotations": {k: v for k, v in opts.annotations.items() if k != NAME_ANNOTATION}}


def _mount_json(spec: str) -> dict[str, Any]:
    """A --mount as inspect's HostConfig.Mounts shows it (docker's mount.Mount)."""
    from pallet.engine.volumes import VolumeSpec, parse_mount

    m = parse_mount(spec)
    out: dict[str, Any] = {"Type": m.kind if isinstance(m, VolumeSpec) else "tmpfs",
                           "Source": m.source if isinstance(m, VolumeSpec) else "",
                           "Target": m.destination}
    if m.readonly:
        out["ReadOnly"] = True
    if isinstance(m, VolumeSpec) and m.propagation:
        out["BindOptions"] = {"Propagation": m.propagation}
    if isinstance(m, VolumeSpec) and m.nocopy:
        out["VolumeOptions"] = {"NoCopy": True}
    if not isinstance(m, VolumeSpec) and m.options:
        kv = dict(o.partition("=")[::2] for o in m.options)
        out["TmpfsOptions"] = {**({"SizeBytes": int(kv["size"])} if "size" in kv else {}),
                               **({"Mode": int(kv["mode"], 8)} if "mode" in kv else {})}
    return out


def _inspect_host_config(hc: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    res = (spec.get("linux") or {}).get("resources") or {}
    pids = (res.get("pids") or {}).get("limit")
    return {"Privileged": bool(hc.get("privileged")),
            "Memory": hc.get("memory") or (res.get("memory") or {}).get("limit") or 0,
            "MemorySwap": hc.get("memory_swap") or 0,
            "NanoCpus": int((hc.get("cpus") or 0) * 1e9),
            "CpuShares": hc.get("cpu_shares") or (res.get("cpu") or {}).get("shares") or 0,
            "CpusetCpus": hc.get("cpuset_cpus") or (res.get("cpu") or {}).get("cpus") or "",
            "CpusetMems": hc.get("cpuset_mems") or (res.get("cpu") or {}).get("mems") or "",
            "PidsLimit": hc.get("pids_limit") if hc.get("pids_limit") is not None else pids,
            "CapAdd": hc.get("cap_add") or None, "CapDrop": hc.get("cap_drop") or None,
            "SecurityOpt": hc.get("security_opt") or None, "Init": hc.get("init") or None,
            "ShmSize": hc.get("shm_size", 0), "Sysctls": hc.get("sysctls") or None,
            "Mounts": hc.get("mounts") or None, "Devices": hc.get("devices") or [],
            "DeviceCgroupRules": hc.get("device_cgroup_rules") or None,
            "Dns": hc.get("dns") or [], "DnsSearch": hc.get("dns_search") or [],
            "DnsOptions": hc.get("dns_options") or [], "Ulimits": hc.get("ulimits") or None,
            "CpuPeriod": hc.get("cpu_period") or 0, "CpuQuota": hc.get("cpu_quota") or 0,
            "MemoryReservation": hc.get("memory_reservation") or 0,
            "OomKillDisable": bool(hc.get("oom_kill_disable")),
            "OomScoreAdj": hc.get("oom_score_adj") or 0,
            "BlkioWeight": hc.get("blkio_weight") or 0,
            "Annotations": hc.get("annotations") or None}


def net_dev_counters(pid: int) -> dict[str, int]:
    """Bytes received and sent on the interfaces (lo aside) of PID's network namespace."""
    from pallet.engine.stats import parse_net_dev

    try:
        with open(f"/proc/{pid}/net/dev") as f:
            rx, tx = parse_net_dev(f.read())
    except OSError:
        return {"rx_bytes": 0, "tx_bytes": 0}
    return {"rx_bytes": rx, "tx_bytes": tx}


def rootfs_idmap(opts: ContainerOptions) -> dict[str, Any] | None:
    """How the image must be seen by a container joining an existing user namespace (a
    pod's): through that namespace's idmapping, its root owning the writable layer."""
    userns = opts.namespaces.get("user", "")
    if not userns.startswith("/"):
        return None  # the host's, or a new one of the container's own (ids as on disk)
    from pallet.engine.specgen import root_ids

    uid, gid = root_ids(opts.uid_mappings, opts.gid_mappings)
    return {"userns": userns, "uid": uid, "gid": gid}


def _check_reachable(path: str, uid: int, gid: int) -> None:
    """The runtime binds the rootfs from inside the user namespace, as host UID:GID: every
    directory above PATH must let it through (containerd's 0711 state dirs)."""
    d = os.path.dirname(os.path.abspath(path))
    while True:
        st = os.stat(d)
        ok = st.st_mode & 0o001 or (st.st_uid == uid and st.st_mode & 0o100) \
            or (st.st_gid == gid and st.st_mode & 0o010)
        if not ok:
            raise FailedPrecondition(
                f"a container in a user namespace (root = host uid {uid}) cannot reach its "
                f"rootfs {path}: {d} (mode {st.st_mode & 0o7777:04o}) is closed to it; make "
                "the directories above pallet's root searchable (chmod o+x)")
        if d == "/":
            return
        d = os.path.dirname(d)


def _idmap(d: dict[str, Any] | None) -> Any:
    if not d:
        return None
    from pallet.image.snapshot import Idmap

    return Idmap(d["userns"], d.get("uid", -1), d.get("gid", -1))


def _image_sub_path(view: str, sub_path: str, m: ImageMount) -> str:
    """VIEW/SUB_PATH resolved inside the image (symlinks confined to it), as a host path."""
    if not sub_path:
        return view
    if sub_path.startswith("/") or ".." in sub_path.split("/") or "\0" in sub_path:
        raise InvalidArgument(f"image volume {m.destination}: image_sub_path {sub_path!r} must "
                              "be relative to the image root, without '..'")
    from pallet.oci.linux import syscalls as sc

    root = os.open(view, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = sc.openat2(root, sub_path, os.O_PATH, sc.RESOLVE_IN_ROOT)
    except FileNotFoundError:
        raise InvalidArgument(f'image volume {m.destination}: image_sub_path "{sub_path}" does '
                              f'not exist in image "{m.image}"') from None
    finally:
        os.close(root)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _add_host_devices(opts: ContainerOptions) -> None:
    """--privileged: every host device node, as docker gives it (and the CRI face)."""
    from pallet.engine.specgen import list_host_devices

    have = {d.path_in_container for d in opts.devices}
    opts.devices += [d for d in list_host_devices() if d.path_in_container not in have]


def _platform_mismatch(image_config: dict[str, Any], platform: str | None) -> str:
    """'' if the image suits --platform OS/ARCH[/VARIANT], else what docker says."""
    if not platform:
        return ""
    want = platform.lower().split("/")
    aliases = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}
    os_ = image_config.get("os") or "linux"
    arch = image_config.get("architecture") or ""
    have = [os_, arch] + ([image_config["variant"]] if image_config.get("variant") else [])
    if len(want) == 1:
        want = ["linux", want[0]]
    want[1] = aliases.get(want[1], want[1])
    if want[0] == os_ and (not arch or want[1] == arch) and (
            len(want) < 3 or len(have) < 3 or want[2] == have[2]):
        return ""
    return f"wanted {'/'.join(want)}, actual: {'/'.join(h for h in have if h)}"


def _generate(image_config: dict[str, Any], opts: ContainerOptions, rootfs: str
              ) -> dict[str, Any]:
    from pallet.engine.specgen import generate_spec, user_spec
    from pallet.engine.users import resolve_user

    user = resolve_user(rootfs, user_spec(image_config, opts), opts.group_add)
    return generate_spec(image_config, opts, user)


_start_error_code = monitor.start_error_code


def parse_signal(sig: int | str) -> int:
    if isinstance(sig, int):
        return sig
    s = sig.strip().upper()
    if s.isdigit():
        return int(s)
    if not s.startswith("SIG"):
        s = "SIG" + s
    try:
        return int(signal.Signals[s])
    except KeyError:
        raise InvalidArgument(f"invalid signal: {sig}") from None


def _host_resolv_conf(host_network: bool) -> str:
    try:
        with open("/etc/resolv.conf") as f:
            text = f.read()
    except OSError:
        text = ""
    if host_network:
        return text
    # Loopback resolvers of the host are unreachable from another netns (docker's rule).
    lines = [ln for ln in text.splitlines()
             if not (ln.startswith("nameserver") and (" 127." in ln or " ::1" in ln))]
    if not any(ln.startswith("nameserver") for ln in lines):
        lines += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return "\n".join(lines) + "\n"


def container_resolv_conf(host: str, dns: list[str], search: list[str],
                          options: list[str]) -> str:
    """The container's resolv.conf: HOST's, with --dns, --dns-search and --dns-option each
    replacing the host's nameservers, search domains and options (docker's rule; a search
    domain "." means none)."""
    replaced = (("nameserver",) if dns else ()) + (("search", "domain") if search else ()) \
        + (("options",) if options else ())
    lines = [ln for ln in host.splitlines() if (ln.split() or [""])[0] not in replaced]
    lines += [f"nameserver {ip}" for ip in dns]
    domains = [d for d in search if d != "."]
    if domains:
        lines.append("search " + " ".join(domains))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def _lean_after() -> float | None:
    v = os.environ.get("PALLET_MONITOR_LEAN_AFTER")
    if v is None:
        return monitor.DEFAULT_LEAN_AFTER
    return None if v in ("", "never") else float(v)


def _sleep_after() -> float | None:
    """Seconds without an event before an idle monitor sleeps (monitor.Monitor._sleep)."""
    v = os.environ.get("PALLET_MONITOR_SLEEP_AFTER")
    if v is None:
        return monitor.DEFAULT_SLEEP_AFTER
    return None if v in ("", "never") else float(v)


def _read_frame(fd: int) -> tuple[bytes, bytes]:
    """Read one frame from a blocking fd: (kind, payload), or (b"", b"") on EOF."""
    head = _read_exact(fd, monitor.FRAME_HEADER)
    if len(head) < monitor.FRAME_HEADER:
        return b"", b""
    return head[:1], _read_exact(fd, int.from_bytes(head[1:5], "big"))


def _read_exact(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        try:
            chunk = os.read(fd, n - len(buf))
        except InterruptedError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return buf


def _short_path(path: str) -> str:
    """Unix socket paths must fit 108 bytes: reach long ones through /proc/self/fd."""
    if len(path) < 100:
        return path
    fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
    # The fd is deliberately kept for the process's life: the path is used after return.
    return f"/proc/self/fd/{fd}/{os.path.basename(path)}"


def _wait_pid_exit(pid: int, timeout: float | None) -> bool:
    import select

    try:
        pfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        r, _, _ = select.select([pfd], [], [], timeout)
        return bool(r)
    finally:
        os.close(pfd)


def _rfc3339(ns: int) -> str:
    if not ns:
        return "0001-01-01T00:00:00Z"
    return monitor.rfc3339nano(ns)


def _user_str(user: dict[str, Any] | None) -> str:
    if not user:
        return ""
    return f"{user.get('uid', 0)}:{user.get('gid', 0)}"


def _port_bindings(ports: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in ports:
        out.setdefault(f"{p['containerPort']}/{p['protocol']}", []).append(
            {"HostIp": p.get("hostIP", ""), "HostPort": str(p["hostPort"])})
    return out


def _du(path: str) -> int:
    """Bytes under PATH as docker counts a container's SizeRw or a volume's size (moby's
    directory.Size): the files' apparent sizes, a hard-linked file once, directories
    not at all."""
    total, seen = 0, set()
    for dirpath, dirnames, files in os.walk(path):
        for f in files + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, f))
                if st.st_size and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


def _ps_table(pids: list[int]) -> tuple[list[str], list[list[str]]]:
    """docker top's default `ps -ef` columns, read from /proc."""
    import pwd

    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        btime = next(int(ln.split()[1]) for ln in f if ln.startswith("btime"))
    rows = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        comm = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
        ppid = fields[1].decode()
        cpu_s = (int(fields[11]) + int(fields[12])) // hz
        start = btime + int(fields[19]) // hz
        try:
            uname = pwd.getpwuid(uid).pw_name
        except KeyError:
            uname = str(uid)
        rows.append([uname, str(pid), ppid, "0", time.strftime("%H:%M", time.localtime(start)),
                     "?", time.strftime("%H:%M:%S", time.gmtime(cpu_s)), cmd or f"[{comm}]"])
    return ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], rows


def _host_ps(ps_args: list[str], pids: list[int]) -> tuple[list[str], list[list[str]]]:
    """The lines of the host's `ps PS_ARGS` whose PID is one of PIDS (docker's way)."""
    import subprocess

    try:
        out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, timeout=30)
    except OSError as e:
        raise SystemFailure(f"cannot run ps: {e.strerror}; install procps") from None
    if out.returncode != 0:
        raise InvalidArgument(f"ps {' '.join(ps_args)}: {out.stderr.strip() or 'failed'}")
    lines = out.stdout.splitlines()
    headers = lines[0].split() if lines else []
    if "PID" not in headers:
        raise InvalidArgument(f"couldn't find PID field in ps output of "
                              f"'ps {' '.join(ps_args)}'")
    col, wanted = headers.index("PID"), {str(p) for p in pids}
    rows = []
    for line in lines[1:]:
        cells = line.split(None, len(headers) - 1)
        if len(cells) > col and cells[col] in wanted:
            rows.append(cells)
    return headers, rows


def _in_private_mounts(rootfs: str, binds: list[dict[str, Any]],
                       work: Callable[[str], None]) -> None:
    """WORK(ROOTFS) in a forked child that attaches BINDS (spec mount entries) inside
    ROOTFS in a private mount namespace of its own: they vanish with it, the host never
    sees them. The child's PalletError (or OSError) is raised here."""
    from pallet import errors

    r, w = os.pipe2(os.O_CLOEXEC)
    for f in (sys.stdout, sys.stderr):
        f.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            from pallet.oci.linux import mounts as oci_mounts
            from pallet.oci.linux import syscalls as sc

            sc.unshare(sc.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
            root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            for m in binds:
                try:
                    oci_mounts.mount_entry(root_fd, m)
                except OSError as e:
                    raise SystemFailure(f"cannot mount {m['source']} at {m['destination']} "
                                        f"to copy: {e.strerror or e}") from None
            work(rootfs)
            sys.stdout.flush()
            code = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
            if isinstance(e, OSError):
                report = ["OSError", [e.errno or errno.EIO, e.strerror or str(e)]]
            else:
                report = [type(e).__name__ if isinstance(e, errors.PalletError) else "", str(e)]
            try:
                os.write(w, json.dumps(report).encode())
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    try:
        while chunk := os.read(r, 65536):
            data += chunk
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    if not data:
        return
    kind, message = json.loads(data)
    if kind == "OSError":
        raise OSError(*message)
    cls = getattr(errors, kind, None) or SystemFailure
    raise cls(message)


def _copy_out(src_fd: int, target: str) -> None:
    """Copy what the O_PATH fd names (file, dir, symlink) to the host path TARGET."""
    import stat as st_mod

    st = os.fstat(src_fd)
    if st_mod.S_ISDIR(st.st_mode):
        from pallet.engine.volumes import _copy_dir_fd

        os.makedirs(target, exist_ok=True)
        dfd = os.open(f"/proc/self/fd/{src_fd}", os.O_RDONLY | os.O_DIRECTORY)
        try:
            _copy_dir_fd(dfd, target)
        finally:
            os.close(dfd)
    elif st_mod.S_ISREG(st.st_mode):
        rfd = os.open(f"/proc/self/fd/{src_fd}", os.O_RDONLY)
        with open(rfd, "rb") as fsrc, open(target, "wb") as fdst:
            shutil.copyfileobj(fsrc, fdst)
        os.chmod(target, st.st_mode & 0o7777)
    elif st_mod.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(f"/proc/self/fd/{src_fd}"), target)
    else:
        raise InvalidArgument("only files, directories and symlinks can be copied")


def _tar_out(src_fd: int, link_target: str, name: str, out: Any) -> None:
    """A tar stream of what the O_PATH fd names (or of a symlink to LINK_TARGET), as NAME.
    tarfile walks /proc/self/fd/N: it lstat()s every entry and descends only into real
    directories, so no symlink in the container leads it out."""
    import tarfile

    with tarfile.open(fileobj=out, mode="w|") as tar:
        if src_fd < 0:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, link_target
            tar.addfile(info)
        elif os.path.isdir(f"/proc/self/fd/{src_fd}"):
            # "/." steps through the fd's magic link to the directory itself.
            tar.add(f"/proc/self/fd/{src_fd}/.", arcname=name)
        else:
            with open(f"/proc/self/fd/{src_fd}", "rb") as f:
                tar.addfile(tar.gettarinfo(arcname=name, fileobj=f), f)
    out.flush()


def _untar(stream: Any, dest: str) -> None:
    """Extract a tar stream into the host dir DEST with tarfile's "data" filter: no
    absolute names, no .., no links out of DEST, no devices."""
    from pallet.tarfilter import tarfile

    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            tar.extractall(dest, filter="data")
    except tarfile.TarError as e:
        raise InvalidArgument(f"the input is not a valid tar stream: {e}") from None


def _copy_in(src: str, dir_fd: int, name: str) -> None:
    """Copy host path SRC as NAME into the directory DIR_FD, never following a
    symlink inside the container (each component is opened relative and O_NOFOLLOW)."""
    if os.path.islink(src):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
        os.symlink(os.readlink(src), name, dir_fd=dir_fd)
    elif os.path.isdir(src):
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, os.stat(src).st_mode & 0o7777, dir_fd=dir_fd)
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            for entry in os.listdir(src):
                _copy_in(os.path.join(src, entry), sub, entry)
        finally:
            os.close(sub)
    else:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            if os.path.islink(f"/proc/self/fd/{dir_fd}/{name}"):
                os.unlink(name, dir_fd=dir_fd)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     os.stat(src).st_mode & 0o7777, dir_fd=dir_fd)
        with open(fd, "wb") as fdst, open(src, "rb") as fsrc:
            shutil.copyfileobj(fsrc, fdst)


__all__ = ["AlreadyExists", "ContainerStartError", "CreateRequest", "Engine"]
