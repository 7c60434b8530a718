"""A compose Project acted out through the engine: its networks, volumes and containers
(named PROJECT-SERVICE-N, with docker compose's labels), up in dependency order with the
config hash deciding what is recreated, and down. Never prints: PROGRESS(kind, name,
state) reports each step, as docker compose's plain progress lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pallet.compose.model import (
    DEPENDS_LABEL,
    FILES_LABEL,
    HASH_LABEL,
    NETWORK_LABEL,
    NUMBER_LABEL,
    ONEOFF_LABEL,
    PROJECT_LABEL,
    SERVICE_LABEL,
    VERSION,
    VERSION_LABEL,
    VOLUME_LABEL,
    WORKDIR_LABEL,
    ComposeFileError,
    Project,
    file_ref_target,
)
from pallet.errors import FailedPrecondition, NotFound, PalletError

if TYPE_CHECKING:
    from pallet.engine.containers import CreateRequest, Engine
    from pallet.engine.store import ContainerRecord

Progress = Callable[[str, str, str], None]


def _quiet(kind: str, name: str, state: str) -> None:
    pass


# -- what exists ------------------------------------------------------------------------------
def containers(eng: Engine, project: str, services: Iterable[str] = (), *, all: bool = True,
               oneoff: bool | None = False) -> list[ContainerRecord]:
    """The project's containers (of SERVICES), by service then number; ONEOFF: `run`'s only
    (True), the others (False) or both (None)."""
    from pallet.engine.store import ContainerFilter

    recs = eng.list(all=all, filters=ContainerFilter(labels={PROJECT_LABEL: project}))
    wanted = set(services)
    recs = [r for r in recs if (not wanted or r.labels.get(SERVICE_LABEL) in wanted)
            and (oneoff is None or (r.labels.get(ONEOFF_LABEL) == "True") == oneoff)]
    return sorted(recs, key=lambda r: (r.labels.get(SERVICE_LABEL, ""),
                                       int(r.labels.get(NUMBER_LABEL) or 0), r.name))


def projects(eng: Engine) -> dict[str, list[ContainerRecord]]:
    """Every project with containers under this root (`compose ls`)."""
    from pallet.engine.store import ContainerFilter

    out: dict[str, list[ContainerRecord]] = {}
    for r in eng.list(all=True, filters=ContainerFilter(labels={PROJECT_LABEL: None})):
        out.setdefault(r.labels[PROJECT_LABEL], []).append(r)
    return out


def container_name(project: Project, service: str, number: int) -> str:
    return project.services[service].get("container_name") or \
        f"{project.name}-{service}-{number}"


# -- translation to the engine's request (pure) ---------------------------------------------------
def create_request(project: Project, service: str, number: int, *, name: str = "",
                   oneoff: bool = False, command: list[str] | None = None,
                   entrypoint: list[str] | None = None, environment: dict[str, str] | None = None,
                   auto_remove: bool = False, publish: bool = True, tty: bool | None = None,
                   stdin: bool | None = None, user: str = "", workdir: str = "",
                   files: Iterable[FileMount] = ()) -> CreateRequest:
    """The engine's CreateRequest for container NUMBER of SERVICE (`run`: ONEOFF with its
    overrides), its secrets and configs FILES bind-mounted read-only."""
    from pallet.engine.containers import CreateRequest
    from pallet.engine.specgen import ContainerOptions, parse_device, parse_ulimit

    svc = project.services[service]
    env = {**(svc.get("environment") or {}), **(environment or {})}
    labels = {**(svc.get("labels") or {}),
              PROJECT_LABEL: project.name, SERVICE_LABEL: service,
              NUMBER_LABEL: str(number), ONEOFF_LABEL: "True" if oneoff else "False",
              HASH_LABEL: project.config_hash(service),
              WORKDIR_LABEL: project.working_dir,
              FILES_LABEL: ",".join(project.config_files),
              DEPENDS_LABEL: ",".join(f"{d}:{c['condition']}:{str(c['required']).lower()}"
                                      for d, c in sorted((svc.get("depends_on") or {}).items())),
              VERSION_LABEL: VERSION}
    limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    opts = ContainerOptions(
        command=list(command if command is not None else svc.get("command") or []),
        env=[f"{k}={v}" for k, v in env.items() if v is not None],
        workdir=workdir or svc.get("working_dir", ""), user=user or svc.get("user", ""),
        group_add=list(svc.get("group_add") or []),
        hostname=svc.get("hostname", "") if not oneoff else "",
        tty=svc.get("tty", False) if tty is None else tty,
        stdin=svc.get("stdin_open", False) if stdin is None else stdin,
        read_only=svc.get("read_only", False), privileged=svc.get("privileged", False),
        cap_add=list(svc.get("cap_add") or []), cap_drop=list(svc.get("cap_drop") or []),
        security_opt=list(svc.get("security_opt") or []), labels=labels,
        init=svc.get("init", False), stop_signal=svc.get("stop_signal", ""),
        sysctls=dict(svc.get("sysctls") or {}),
        ulimits=[parse_ulimit(f"{k}={u['soft']}:{u['hard']}")
                 for k, u in (svc.get("ulimits") or {}).items()])
    ep = entrypoint if entrypoint is not None else svc.get("entrypoint")
    if ep is not None:
        opts.entrypoint = list(ep) or [""]
    memory = limits.get("memory", svc.get("mem_limit"))
    if memory is not None:
        opts.memory = memory
    if svc.get("memswap_limit") is not None:
        opts.memory_swap = svc["memswap_limit"]
    cpus = limits.get("cpus", svc.get("cpus"))
    if cpus is not None:
        opts.cpus = cpus
    pids = limits.get("pids", svc.get("pids_limit"))
    if pids is not None:
        opts.pids_limit = pids
    if svc.get("shm_size") is not None:
        opts.shm_size = svc["shm_size"]
    opts.devices = [parse_device(f"{d['source']}:{d['target']}:{d['permissions']}")
                    for d in svc.get("devices") or []]
    networks = service_networks(project, service)
    first = networks[0] if networks else None
    mode = svc.get("network_mode", "")
    volumes, tmpfs = [], list(svc.get("tmpfs") or [])
    for v in svc.get("volumes") or []:
        if v["type"] == "tmpfs":
            size = (v.get("tmpfs") or {}).get("size")
            tmpfs.append(v["target"] + (f":size={size}" if size else ""))
            continue
        source = v.get("source", "")
        if v["type"] == "volume" and source:
            source = project.volumes[source]["name"]
        mode_opts = [o for o in ("ro" if v.get("read_only") else "",
                                 "nocopy" if (v.get("volume") or {}).get("nocopy") else "",
                                 (v.get("bind") or {}).get("propagation", "")) if o]
        spec = f"{source}:{v['target']}" if source else v["target"]
        volumes.append(spec + (":" + ",".join(mode_opts) if mode_opts else ""))
    volumes += [f"{f.source}:{f.target}:ro" for f in files]
    ports = []
    for p in svc.get("ports") or [] if publish else []:
        host_ip = f"[{p['host_ip']}]" if ":" in p["host_ip"] else p["host_ip"]
        prefix = f"{host_ip}:{p['published']}:" if host_ip else \
            (f"{p['published']}:" if p["published"] else "")
        ports.append(f"{prefix}{p['target']}/{p['protocol']}")
    restart = svc.get("restart", "no") if not oneoff else "no"
    logging = svc.get("logging") or {}
    log_opts = dict(logging.get("options") or {})
    sizes: dict[str, int] = {}  # the model checked them (not a none driver's)
    if logging.get("driver") != "none":
        from pallet.units import ram_in_bytes

        if "max-size" in log_opts:
            sizes["log_max_size"] = ram_in_bytes(log_opts["max-size"])
        if "max-file" in log_opts:
            sizes["log_max_files"] = int(log_opts["max-file"])
    return CreateRequest(
        log_driver=logging.get("driver", ""), log_opts=log_opts, **sizes,
        image=project.image(service), options=opts,
        name=name or container_name(project, service, number),
        network=first["network"] if first else ("bridge" if mode in ("", "bridge") else mode),
        aliases=first["aliases"] if first else [], ip=first["ip"] if first else "",
        ip6=first["ip6"] if first else "",
        ports=ports, volumes=volumes, tmpfs=tmpfs, restart=restart, auto_remove=auto_remove,
        runtime=svc.get("runtime", ""), platform=svc.get("platform") or None,
        extra_hosts=list(svc.get("extra_hosts") or []),
        dns=list(svc.get("dns") or []), dns_search=list(svc.get("dns_search") or []),
        dns_options=list(svc.get("dns_opt") or []),
        healthcheck=svc.get("healthcheck") or None,
        # A service that builds its image never pulls it: up built it first.
        pull="never" if "build" in svc or svc.get("pull_policy") == "never" else
        "always" if svc.get("pull_policy") == "always" else "missing")


# -- secrets and configs --------------------------------------------------------------------------
@dataclass
class FileMount:
    """A service's secret or config as its containers see it: TARGET, bind-mounted read-only
    from SOURCE on the host. One with CONTENT (`environment:`, `content:`) is a file pallet
    writes at SOURCE, under the project's state, owned UID:GID with MODE; a `file:` one is
    the user's file itself (docker compose ignores uid, gid and mode for those)."""

    kind: str  # "secrets" or "configs"
    source: str
    target: str
    content: str | None = None
    uid: int = 0
    gid: int = 0
    mode: int = 0o444
    ignored: bool = False  # uid, gid or mode given for a `file:` one


def state_dir(root: str, project: str) -> str:
    """Where a project keeps what it writes on the host (its secrets and configs); `down`
    removes it."""
    return os.path.join(root, "compose", project)


def file_mounts(project: Project, service: str, state: str) -> list[FileMount]:
    """SERVICE's secrets and configs as mounts (pure); docker compose's errors for an
    external one and for an `environment:` variable that is not set."""
    svc = project.services[service]
    out = []
    for kind in ("secrets", "configs"):
        defined = project.secrets if kind == "secrets" else project.configs
        for ref in svc.get(kind) or []:
            obj = defined[ref["source"]]
            target = file_ref_target(kind, ref)
            if obj.get("external"):
                raise FailedPrecondition(f"unsupported external {kind[:-1]} {obj['name']}")
            if "file" in obj:
                out.append(FileMount(kind, obj["file"], target,
                                     ignored=any(k in ref for k in ("uid", "gid", "mode"))))
                continue
            if "environment" in obj:
                var = obj["environment"]
                if var not in project.environment:
                    raise FailedPrecondition(f"environment variable {var!r} required by file "
                                             f"{obj['name']!r} is not set".replace("'", '"'))
                content = project.environment[var]
            else:
                content = obj["content"]
            digest = hashlib.sha256(target.encode()).hexdigest()[:12]
            name = re.sub(r"[^A-Za-z0-9._-]", "_", ref["source"])
            out.append(FileMount(kind, os.path.join(state, service, kind, f"{name}-{digest}"),
                                 target, content, uid=int(ref.get("uid") or 0),
                                 gid=int(ref.get("gid") or 0), mode=ref.get("mode", 0o444)))
    return out


def check_file_mounts(project: Project, services: Iterable[str], state: str) -> None:
    """Before anything is made: every secret and config SERVICES mount can be (docker's
    error for a missing file), with docker compose's warning for ignored uid/gid/mode."""
    for service in services:
        for m in file_mounts(project, service, state):
            if m.content is None and not os.path.exists(m.source):
                raise FailedPrecondition('Error response from daemon: invalid mount config for '
                                         f'type "bind": bind source path does not exist: '
                                         f"{m.source}")
            warning = f"{'secrets' if m.kind == 'secrets' else 'config'} `uid`, `gid` and " \
                "`mode` are not supported, they will be ignored"
            if m.ignored and warning not in project.warnings:
                project.warnings.append(warning)


def write_file_mounts(mounts: Iterable[FileMount], state: str, undo: Rollback) -> None:
    """Write the content of MOUNTS that have some under STATE (made 0700 if missing, and
    removed again by UNDO). A file is rewritten in place: containers that mount it already
    see the new content."""
    mounts = [m for m in mounts if m.content is not None]
    if not mounts:
        return
    if not os.path.isdir(state):
        os.makedirs(state, mode=0o700)
        undo.add(lambda: _remove_state_dir(state))
    for m in mounts:
        os.makedirs(os.path.dirname(m.source), mode=0o700, exist_ok=True)
        fd = os.open(m.source, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, m.mode)
            data = (m.content or "").encode()
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)


def remove_state(root: str, project: str) -> None:
    """`down`: the project's state (its secrets' and configs' files) removed."""
    state = state_dir(root, project)
    if os.path.isdir(state):
        _remove_state_dir(state)


def _remove_state_dir(state: str) -> None:
    shutil.rmtree(state)
    with contextlib.suppress(OSError):  # other projects' states may be there
        os.rmdir(os.path.dirname(state))


def shared_network(eng: Engine, project: Project, service: str) -> str:
    """The engine's network mode for SERVICE's `network_mode: service:NAME`: the first
    container of NAME (a running one if any), as docker compose; "" for other modes."""
    mode = project.services[service].get("network_mode") or ""
    if not mode.startswith("service:"):
        return ""
    other = mode.partition(":")[2]
    recs = containers(eng, project.name, [other])
    running = [r for r in recs if r.state in ("running", "paused", "restarting")]
    if not recs:
        raise FailedPrecondition(f"service {service!r} shares the network of service "
                                 f"{other!r} (network_mode: {mode}), which has no container: "
                                 f"start {other!r} first")
    return "container:" + (running or recs)[0].id


def host_paths(svc: dict[str, Any]) -> list[str]:
    """The bind sources of SVC that compose makes when missing."""
    return [v["source"] for v in svc.get("volumes") or []
            if v["type"] == "bind" and (v.get("bind") or {}).get("create_host_path")]


def service_networks(project: Project, service: str) -> list[dict[str, Any]]:
    """The engine networks SERVICE joins, the first carrying its ports: [{network, aliases,
    ip, ip6}] (aliases: the service's name, then its own)."""
    out = []
    for key, conf in sorted((project.services[service].get("networks") or {}).items()):
        conf = conf or {}
        out.append({"network": project.networks[key]["name"],
                    "aliases": [service, *conf.get("aliases", [])],
                    "ip": conf.get("ipv4_address", ""), "ip6": conf.get("ipv6_address", "")})
    return out


# -- up -------------------------------------------------------------------------------------------
@dataclass
class Rollback:
    """What this `up` made, undone in reverse if it fails halfway."""

    steps: list[Callable[[], None]] = field(default_factory=list)

    def add(self, fn: Callable[[], None]) -> None:
        self.steps.append(fn)

    def run(self) -> None:
        for fn in reversed(self.steps):
            with contextlib.suppress(PalletError, OSError):
                fn()
        self.steps.clear()


def ensure_networks(eng: Engine, project: Project, keys: Iterable[str], undo: Rollback,
                    progress: Progress = _quiet) -> None:
    from pallet.engine.network import Networks

    nets = Networks(eng.store, eng.root)
    for key in sorted(set(keys)):
        conf = project.networks[key]
        try:
            rec = nets.get(conf["name"])
        except NotFound:
            rec = None
        if conf.get("external"):
            if rec is None:
                raise NotFound(f"network {conf['name']} declared as external, but could not "
                               "be found")
            continue
        if rec is not None:
            if rec.labels.get(PROJECT_LABEL) not in (None, project.name):
                project.warnings.append(f"a network with name {conf['name']} exists but was "
                                        f"not created for project {project.name!r}")
            continue
        progress("Network", conf["name"], "Creating")
        ipam = (conf.get("ipam") or {}).get("config") or []
        labels = {**(conf.get("labels") or {}), PROJECT_LABEL: project.name,
                  NETWORK_LABEL: key, VERSION_LABEL: VERSION}
        made = nets.create(conf["name"], subnets=[c["subnet"] for c in ipam],
                           gateways=[c["gateway"] for c in ipam if c.get("gateway")],
                           ip_ranges=[c["ip_range"] for c in ipam if c.get("ip_range")],
                           aux_addresses={k: v for c in ipam
                                          for k, v in (c.get("aux_addresses") or {}).items()},
                           internal=conf.get("internal", False),
                           ipv6=conf.get("enable_ipv6", False), labels=labels,
                           options=conf.get("driver_opts") or {})
        # Fresh objects when undoing: starting a container closes the engine's store.
        undo.add(lambda n=made.name: Networks(eng.store, eng.root).remove(n))
        progress("Network", conf["name"], "Created")


def ensure_volumes(eng: Engine, project: Project, keys: Iterable[str], undo: Rollback,
                   progress: Progress = _quiet) -> None:
    vols = eng.volumes
    for key in sorted(set(keys)):
        conf = project.volumes[key]
        try:
            vols.get(conf["name"])
            continue
        except NotFound:
            if conf.get("external"):
                raise NotFound(f"external volume \"{conf['name']}\" not found") from None
        progress("Volume", conf["name"], "Creating")
        labels = {**(conf.get("labels") or {}), PROJECT_LABEL: project.name,
                  VOLUME_LABEL: key, VERSION_LABEL: VERSION}
        vols.create(conf["name"], labels, options=conf.get("driver_opts") or {})
        undo.add(lambda n=conf["name"]: eng.volumes.remove(n))
        progress("Volume", conf["name"], "Created")


def resources_of(project: Project, services: Iterable[str]) -> tuple[set[str], set[str]]:
    """The network and volume keys SERVICES use."""
    nets, vols = set(), set()
    for s in services:
        svc = project.services[s]
        nets |= set(svc.get("networks") or {})
        vols |= {v["source"] for v in svc.get("volumes") or []
                 if v["type"] == "volume" and v.get("source")}
    return nets, vols


def create_container(eng: Engine, req: CreateRequest, undo: Rollback,
                     extra_networks: list[dict[str, Any]],
                     host_paths: Iterable[str] = ()) -> ContainerRecord:
    """Create REQ (making its bind mounts' missing HOST_PATHS first, as docker compose's
    create_host_path) and join its other networks (recorded; joined at start)."""
    for path in host_paths:
        if not os.path.exists(path):
            os.makedirs(path)
            undo.add(lambda p=path: os.rmdir(p))
    rec = eng.create(req)
    undo.add(lambda: eng.remove(rec.id, force=True))
    for n in extra_networks:
        eng.connect(rec.id, n["network"], aliases=n["aliases"], ip=n["ip"], ip6=n["ip6"])
    return rec


def up(eng: Engine, project: Project, services: Iterable[str] = (), *,
       force_recreate: bool = False, no_recreate: bool = False, start: bool = True,
       remove_orphans: bool = False, timeout: float | None = None,
       progress: Progress = _quiet) -> list[ContainerRecord]:
    """Create what SERVICES (default all) and their dependencies need, (re)create the
    containers whose config changed, start them in dependency order. A failure undoes what
    this call made (networks, volumes, containers) and raises."""
    order = project.order(services or None)
    undo = Rollback()
    out: list[ContainerRecord] = []
    try:
        orphans = [r for r in containers(eng, project.name)
                   if r.labels.get(SERVICE_LABEL) not in project.services]
        if orphans and remove_orphans:
            for r in orphans:
                _remove(eng, r, timeout, progress)
        elif orphans:
            project.warnings.append(
                f"Found orphan containers ({', '.join(r.name for r in orphans)}) for this "
                "project. If you removed or renamed this service in your compose file, you "
                "can run this command with the --remove-orphans flag to clean it up.")
        check_file_mounts(project, order, state_dir(eng.root, project.name))
        nets, vols = resources_of(project, order)
        ensure_networks(eng, project, nets, undo, progress)
        ensure_volumes(eng, project, vols, undo, progress)
        for service in order:
            _wait_dependencies(eng, project, service)
            out += _converge(eng, project, service, undo, force_recreate=force_recreate,
                             no_recreate=no_recreate, start=start, timeout=timeout,
                             progress=progress)
    except BaseException:
        undo.run()
        raise
    return out


def _converge(eng: Engine, project: Project, service: str, undo: Rollback, *,
              force_recreate: bool, no_recreate: bool, start: bool, timeout: float | None,
              progress: Progress) -> list[ContainerRecord]:
    svc = project.services[service]
    digest = project.config_hash(service)
    have = {int(r.labels.get(NUMBER_LABEL) or 0): r for r in containers(eng, project.name,
                                                                        [service])}
    image_id = _image_id(eng, project.image(service))
    shared = shared_network(eng, project, service)
    out = []
    for number, rec in sorted(have.items()):
        if number > svc["scale"]:
            _remove(eng, rec, timeout, progress)
    for number in range(1, svc["scale"] + 1):
        rec = have.get(number)
        # A new image under the service's name (rebuilt, pulled) recreates, as docker compose.
        changed = rec is not None and (rec.labels.get(HASH_LABEL) != digest or
                                       (image_id is not None and rec.image_id != image_id) or
                                       # network_mode: service:X and X was recreated
                                       (bool(shared) and rec.config.get("network") != shared))
        if rec is not None and (force_recreate or changed) and not no_recreate:
            progress("Container", rec.name, "Recreate")
            _remove(eng, rec, svc.get("stop_grace_period", timeout), _quiet)
            rec = None
            recreated = True
        else:
            recreated = False
        made = rec is None
        if made:
            state = state_dir(eng.root, project.name)
            files = file_mounts(project, service, state)
            write_file_mounts(files, state, undo)
            req = create_request(project, service, number, files=files)
            req.network = shared or req.network
            progress("Container", req.name, "Creating")
            nets = service_networks(project, service)[1:]
            rec = create_container(eng, req, undo, nets, host_paths(svc))
            progress("Container", rec.name, "Recreated" if recreated else "Created")
        if start and rec.state not in ("running", "paused", "restarting"):
            progress("Container", rec.name, "Starting")
            rec = _start(eng, rec)
            progress("Container", rec.name, "Started")
        elif not made:  # a new one has said so already
            progress("Container", rec.name, "Running" if rec.state == "running" else "Created")
        out.append(rec)
    return out


def _image_id(eng: Engine, ref: str) -> str | None:
    """The id of the local image REF, None if there is none (up pulls it)."""
    try:
        return eng.images.get(ref).id
    except NotFound:
        return None


def _start(eng: Engine, rec: ContainerRecord) -> ContainerRecord:
    from pallet.engine.containers import ContainerStartError

    try:
        rec, fd = eng.start(rec.id)
    except ContainerStartError as e:
        raise FailedPrecondition(f"Error response from daemon: failed to start container "
                                 f"{rec.name}: {e}") from None
    if fd >= 0:
        os.close(fd)
    return rec


def _wait_dependencies(eng: Engine, project: Project, service: str) -> None:
    for dep, conf in sorted((project.services[service].get("depends_on") or {}).items()):
        if dep not in project.services:
            continue
        if conf["condition"] == "service_completed_successfully":
            for rec in containers(eng, project.name, [dep]):
                code = eng.wait(rec.id)
                if code != 0:
                    raise FailedPrecondition(f"service {dep!r} didn't complete successfully: "
                                             f"exit {code}")
        elif conf["condition"] == "service_healthy":
            for rec in containers(eng, project.name, [dep]):
                _wait_healthy(eng, rec)


HEALTH_POLL = 0.1


def _wait_healthy(eng: Engine, rec: ContainerRecord) -> None:
    """Until REC's health check passes; docker compose's errors if it fails or has none."""
    import time

    if eng.health(rec) is None:
        raise FailedPrecondition(f"dependency failed to start: container {rec.name} has no "
                                 "healthcheck configured")
    while True:
        rec = eng.get(rec.id)
        health = eng.health(rec) or {}
        if rec.state not in ("running", "restarting"):
            raise FailedPrecondition(f"dependency failed to start: container {rec.name} "
                                     f"exited ({rec.exit_code})")
        if health.get("Status") == "healthy":
            return
        if health.get("Status") == "unhealthy":
            raise FailedPrecondition(f"dependency failed to start: container {rec.name} "
                                     "is unhealthy")
        time.sleep(HEALTH_POLL)


def _remove(eng: Engine, rec: ContainerRecord, timeout: float | None,
            progress: Progress) -> None:
    if rec.state in ("running", "paused", "restarting"):
        progress("Container", rec.name, "Stopping")
        eng.stop(rec.id, timeout)
        progress("Container", rec.name, "Stopped")
    progress("Container", rec.name, "Removing")
    eng.remove(rec.id, force=True, volumes=True)
    progress("Container", rec.name, "Removed")


# -- down -----------------------------------------------------------------------------------------
def down(eng: Engine, project: Project, *, volumes: bool = False, remove_orphans: bool = False,
         timeout: float | None = None, images: str = "",
         progress: Progress = _quiet) -> None:
    """Stop and remove the project's containers (the orphans too with REMOVE_ORPHANS), its
    networks, and with VOLUMES its named volumes; IMAGES "all"/"local" removes images."""
    recs = containers(eng, project.name, oneoff=None)
    known = set(project.services) | set(project.disabled)
    orphans = [r for r in recs if r.labels.get(SERVICE_LABEL) not in known]
    if orphans and not remove_orphans:
        project.warnings.append(
            f"Found orphan containers ({', '.join(r.name for r in orphans)}) for this project. "
            "If you removed or renamed this service in your compose file, you can run this "
            "command with the --remove-orphans flag to clean it up.")
        recs = [r for r in recs if r not in orphans]
    # Dependents first: the reverse of the start order.
    rank = {s: i for i, s in enumerate(project.order(with_deps=True))} \
        if project.services else {}
    recs.sort(key=lambda r: -rank.get(r.labels.get(SERVICE_LABEL, ""), -1))
    for rec in recs:
        svc = project.services.get(rec.labels.get(SERVICE_LABEL, "")) or {}
        _remove(eng, rec, svc.get("stop_grace_period", timeout), progress)
    from pallet.engine.network import Networks

    nets = Networks(eng.store, eng.root)
    for rec in sorted(nets.list(), key=lambda n: n.name):
        if rec.labels.get(PROJECT_LABEL) == project.name:
            progress("Network", rec.name, "Removing")
            try:
                nets.remove(rec.id)
            except FailedPrecondition as e:
                project.warnings.append(str(e))
                continue
            progress("Network", rec.name, "Removed")
    remove_state(eng.root, project.name)
    if volumes:
        for v in eng.volumes.list():
            if v.labels.get(PROJECT_LABEL) == project.name:
                progress("Volume", v.name, "Removing")
                eng.volumes.remove(v.name)
                progress("Volume", v.name, "Removed")
    if images:
        for name, svc in sorted(project.services.items()):
            if images == "local" and svc.get("image"):
                continue  # "local": only the images named after the project (built ones)
            image = project.image(name)
            with contextlib.suppress(PalletError):
                progress("Image", image, "Removing")
                eng.remove_image(image)
                progress("Image", image, "Removed")


# -- run ------------------------------------------------------------------------------------------
def run_container(eng: Engine, project: Project, service: str, *,
                  command: list[str] | None, entrypoint: list[str] | None,
                  environment: dict[str, str], name: str, auto_remove: bool,
                  publish: bool, tty: bool, stdin: bool, user: str, workdir: str,
                  with_deps: bool = True, progress: Progress = _quiet) -> ContainerRecord:
    """docker compose run's one-off container (created, not started), its dependencies up."""
    if with_deps:
        deps = [s for s in project.order([service]) if s != service]
        if deps:
            up(eng, project, deps, progress=progress)
    undo = Rollback()
    try:
        state = state_dir(eng.root, project.name)
        check_file_mounts(project, [service], state)
        files = file_mounts(project, service, state)
        write_file_mounts(files, state, undo)
        nets, vols = resources_of(project, [service])
        ensure_networks(eng, project, nets, undo, progress)
        ensure_volumes(eng, project, vols, undo, progress)
        existing = containers(eng, project.name, [service], oneoff=True)
        number = 1 + max((int(r.labels.get(NUMBER_LABEL) or 0) for r in existing), default=0)
        req = create_request(project, service, number, oneoff=True, command=command,
                             entrypoint=entrypoint, environment=environment,
                             name=name or f"{project.name}-{service}-run-"
                                          f"{secrets.token_hex(6)}",
                             auto_remove=auto_remove, publish=publish, tty=tty, stdin=stdin,
                             user=user, workdir=workdir, files=files)
        req.network = shared_network(eng, project, service) or req.network
        return create_container(eng, req, undo, service_networks(project, service)[1:],
                                host_paths(project.services[service]))
    except BaseException:
        undo.run()
        raise


def check_services(project: Project, names: Iterable[str]) -> list[str]:
    """NAMES, each a service of PROJECT (an error naming the first that is not)."""
    out = []
    for n in names:
        if n not in project.services:
            if n in project.disabled:
                raise ComposeFileError(f"service {n!r} is not enabled by the active profiles")
            raise NotFound(f"no such service: {n}")
        out.append(n)
    return out
