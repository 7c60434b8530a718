"""CRI's PodSandboxConfig and ContainerConfig translated into the engine's PodSpec and
ContainerOptions: pure functions (bar stat-ing host devices, mount sources, a seccomp file).
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from cri_api.v1 import api_pb2 as pb

from pallet.engine.containers import ImageMount
from pallet.engine.pods import PodSpec
from pallet.engine.specgen import ContainerOptions, Device, Mount, list_host_devices
from pallet.errors import InvalidArgument

NS_POD, NS_CONTAINER, NS_NODE, NS_TARGET = (pb.NamespaceMode.POD, pb.NamespaceMode.CONTAINER,
                                            pb.NamespaceMode.NODE, pb.NamespaceMode.TARGET)
PROPAGATION = {pb.MountPropagation.PROPAGATION_PRIVATE: "rprivate",
               pb.MountPropagation.PROPAGATION_HOST_TO_CONTAINER: "rslave",
               pb.MountPropagation.PROPAGATION_BIDIRECTIONAL: "rshared"}
PROTOCOLS = {pb.Protocol.TCP: "tcp", pb.Protocol.UDP: "udp", pb.Protocol.SCTP: "sctp"}
_CAP_CAP_SYS_RESOURCE = 24
_PAGE_SIZE = re.compile(r"^(\d+)(KB|MB|GB|TB|PB)$")


@dataclass
class ContainerPlan:
    """A ContainerConfig in engine terms: options plus what the engine keeps beside them."""

    options: ContainerOptions
    name: str
    attempt: int
    image: str
    pid_mode: str = "container"  # container | pod | host | target
    target_id: str = ""
    log_path: str = ""  # relative to the pod's log directory
    privileged: bool = False
    mounts: list[dict[str, Any]] = field(default_factory=list)
    image_mounts: list[ImageMount] = field(default_factory=list)
    # The container's own namespace_options.userns_options: None (not given), or
    # (uid mappings, gid mappings), empty for mode NODE; it must match the pod's.
    userns: tuple[list[list[int]], list[list[int]]] | None = None


def pod_spec(config: pb.PodSandboxConfig, runtime_handler: str) -> PodSpec:
    md = config.metadata
    if not md.name or not md.namespace or not md.uid:
        raise InvalidArgument("pod sandbox metadata needs name, namespace and uid")
    linux = config.linux
    sc = linux.security_context
    ns = sc.namespace_options
    dns = config.dns_config
    ports = []
    for p in config.port_mappings:
        if p.protocol not in PROTOCOLS:
            raise InvalidArgument(f"port mapping {p.container_port}: unknown protocol {p.protocol}")
        ports.append({"hostPort": p.host_port, "containerPort": p.container_port,
                      "protocol": PROTOCOLS[p.protocol], "hostIP": p.host_ip})
    uids, gids = userns_mappings(ns, "pod")
    return PodSpec(
        name=md.name, namespace=md.namespace, uid=md.uid, attempt=md.attempt,
        hostname=config.hostname, log_directory=config.log_directory,
        labels=dict(config.labels), annotations=dict(config.annotations),
        dns_servers=list(dns.servers), dns_searches=list(dns.searches),
        dns_options=list(dns.options), port_mappings=ports,
        cgroup_parent=linux.cgroup_parent, runtime_handler=runtime_handler,
        sysctls=dict(linux.sysctls),
        network="host" if ns.network == NS_NODE else "pod",
        ipc="host" if ns.ipc == NS_NODE else "pod",
        # A shared PID namespace is CRI's default (POD = 0); kubelet asks CONTAINER unless
        # shareProcessNamespace is set.
        pid={NS_NODE: "host", NS_CONTAINER: "container"}.get(ns.pid, "pod"),
        privileged=sc.privileged,
        uid_mappings=uids or None, gid_mappings=gids or None,
    )


def userns_mappings(ns: pb.NamespaceOption, what: str
                    ) -> tuple[list[list[int]], list[list[int]]]:
    """namespace_options.userns_options as ([container, host, size] uid mappings, gid
    mappings): both empty for mode NODE (or no options: the host's user namespace, which is
    what a kubelet not asking for one means). POD wants exactly one mapping of each."""
    if not ns.HasField("userns_options"):
        return [], []
    u = ns.userns_options
    if u.mode == NS_NODE:
        if u.uids or u.gids:
            raise InvalidArgument(f"{what} user namespace mode NODE takes no uid/gid mappings")
        return [], []
    if u.mode != NS_POD:
        raise InvalidArgument(f"{what} user namespace mode {pb.NamespaceMode.Name(u.mode)} is "
                              "not supported: use POD or NODE")
    if len(u.uids) != 1 or len(u.gids) != 1:
        raise InvalidArgument(f"{what} user namespace mode POD needs exactly one uid and one "
                              f"gid mapping, got {len(u.uids)} and {len(u.gids)}")
    out = []
    for kind, m in (("uid", u.uids[0]), ("gid", u.gids[0])):
        if m.length == 0:
            raise InvalidArgument(f"{what} user namespace {kind} mapping {m.container_id}:"
                                  f"{m.host_id}:0 has size 0")
        if m.host_id + m.length > 1 << 32 or m.container_id + m.length > 1 << 32:
            raise InvalidArgument(f"{what} user namespace {kind} mapping {m.container_id}:"
                                  f"{m.host_id}:{m.length} goes past the 32-bit id range")
        out.append([[m.container_id, m.host_id, m.length]])
    return out[0], out[1]


def container_plan(config: pb.ContainerConfig, *, pod_privileged: bool,
                   cgroup_parent: str = "") -> ContainerPlan:
    md = config.metadata
    if not md.name:
        raise InvalidArgument("container metadata.name is empty")
    if not config.image.image:
        raise InvalidArgument("container image.image is empty")
    sc = config.linux.security_context
    opts = ContainerOptions(
        command=list(config.args),
        entrypoint=list(config.command) if config.command else None,
        env=[_env(kv.key, kv.value) for kv in config.envs],
        workdir=config.working_dir, tty=config.tty, stdin=config.stdin,
        labels=dict(config.labels), annotations=dict(config.annotations),
        stop_signal=pb.Signal.Name(config.stop_signal) if config.stop_signal else "",
    )
    plan = ContainerPlan(opts, md.name, md.attempt, config.image.image,
                         log_path=config.log_path, privileged=sc.privileged)
    if sc.privileged and not pod_privileged:
        raise InvalidArgument("no privileged container allowed in a sandbox that is not "
                              "privileged (pod security_context.privileged)")
    _security(opts, sc, plan)
    _resources(opts, config.linux.resources)
    for m in config.mounts:
        if m.HasField("image") and m.image.image:
            plan.image_mounts.append(_image_mount(m))
        else:
            opts.mounts.append(_mount(m))
        plan.mounts.append({"container_path": m.container_path, "host_path": m.host_path,
                            "readonly": m.readonly, "propagation": m.propagation,
                            **({"image": m.image.image, "image_sub_path": m.image_sub_path}
                               if m.image.image else {})})
    for d in config.devices:
        if not d.host_path.startswith("/") or not d.container_path.startswith("/"):
            raise InvalidArgument(f"device {d.host_path!r} -> {d.container_path!r}: paths must "
                                  "be absolute")
        opts.devices.append(Device.from_host(d.host_path, d.container_path,
                                             d.permissions or "rwm"))
    if sc.privileged:
        have = {d.path_in_container for d in opts.devices}
        opts.devices += [d for d in list_host_devices() if d.path_in_container not in have]
    return plan


def _env(key: str, value: str) -> str:
    if not key or "=" in key:
        raise InvalidArgument(f"invalid environment variable name {key!r}")
    return f"{key}={value}"


def _security(opts: ContainerOptions, sc: pb.LinuxContainerSecurityContext,
              plan: ContainerPlan) -> None:
    opts.privileged = sc.privileged
    opts.cap_add = list(sc.capabilities.add_capabilities)
    opts.cap_drop = list(sc.capabilities.drop_capabilities)
    opts.read_only = sc.readonly_rootfs
    opts.no_new_privileges = sc.no_new_privs
    has_user = sc.HasField("run_as_user") or bool(sc.run_as_username)
    if sc.HasField("run_as_group") and not has_user:
        raise InvalidArgument("run_as_group is set without run_as_user or run_as_username")
    if sc.HasField("run_as_user") and sc.run_as_username:
        raise InvalidArgument("give run_as_user or run_as_username, not both")
    user = str(sc.run_as_user.value) if sc.HasField("run_as_user") else sc.run_as_username
    if user and sc.HasField("run_as_group"):
        user += f":{sc.run_as_group.value}"
    opts.user = user
    opts.group_add = [str(g) for g in sc.supplemental_groups]
    # Empty lists mean "not given" in proto3: the defaults apply (as containerd).
    if sc.masked_paths:
        opts.masked_paths = [_abs(p, "masked path") for p in sc.masked_paths]
    if sc.readonly_paths:
        opts.readonly_paths = [_abs(p, "readonly path") for p in sc.readonly_paths]
    opts.security_opt.append("seccomp=" + _seccomp(sc))
    ns = sc.namespace_options
    if ns.HasField("userns_options"):
        plan.userns = userns_mappings(ns, "container")
    if ns.pid == NS_TARGET:
        if not ns.target_id:
            raise InvalidArgument("pid namespace mode TARGET needs target_id")
        plan.pid_mode, plan.target_id = "target", ns.target_id
    else:
        plan.pid_mode = {NS_NODE: "host", NS_CONTAINER: "container"}.get(ns.pid, "pod")


def _seccomp(sc: pb.LinuxContainerSecurityContext) -> str:
    """containerd's rules: the typed field first, then the deprecated path; neither given
    means unconfined."""
    if sc.HasField("seccomp"):
        kind = sc.seccomp.profile_type
        if kind == pb.SecurityProfile.ProfileType.RuntimeDefault:
            return "builtin"
        if kind == pb.SecurityProfile.ProfileType.Unconfined:
            return "unconfined"
        return _localhost_profile(sc.seccomp.localhost_ref)
    path = sc.seccomp_profile_path
    if not path or path == "unconfined":
        return "unconfined"
    if path in ("runtime/default", "docker/default"):
        return "builtin"
    if path.startswith("localhost/"):
        return _localhost_profile(path[len("localhost/"):])
    raise InvalidArgument(f"unknown seccomp profile {path!r}: use runtime/default, unconfined "
                          "or localhost/<path>")


def _localhost_profile(path: str) -> str:
    if not path.startswith("/"):
        raise InvalidArgument(f"seccomp localhost profile {path!r} must be an absolute path")
    try:
        with open(path) as f:
            text = f.read(1 << 20)
    except OSError as e:
        raise InvalidArgument(f"cannot read seccomp profile {path}: {e.strerror}") from None
    if not text.lstrip().startswith("{"):
        raise InvalidArgument(f"seccomp profile {path} is not a JSON object")
    return text


def _abs(path: str, what: str) -> str:
    if not path.startswith("/") or ".." in path.split("/"):
        raise InvalidArgument(f"invalid {what} {path!r}: use an absolute path without '..'")
    return path


def _resources(opts: ContainerOptions, r: pb.LinuxContainerResources) -> None:
    opts.cpu_period = r.cpu_period or None
    opts.cpu_quota = r.cpu_quota or None
    opts.cpu_shares = r.cpu_shares or None
    if r.memory_limit_in_bytes < 0:
        raise InvalidArgument(f"memory_limit_in_bytes {r.memory_limit_in_bytes} is negative")
    opts.memory = r.memory_limit_in_bytes or None
    if opts.memory:
        # Kubernetes runs without swap unless told: memory+swap = memory.
        opts.memory_swap = r.memory_swap_limit_in_bytes or opts.memory
    opts.cpuset_cpus, opts.cpuset_mems = r.cpuset_cpus, r.cpuset_mems
    if r.oom_score_adj:
        opts.oom_score_adj = clamp_oom_score_adj(r.oom_score_adj)
    for h in r.hugepage_limits:
        if not _PAGE_SIZE.match(h.page_size):
            raise InvalidArgument(f"invalid hugepage size {h.page_size!r}: use e.g. 2MB or 1GB")
        opts.hugepage_limits[h.page_size] = h.limit


def clamp_oom_score_adj(value: int) -> int:
    """containerd's restrict_oom_score_adj: without CAP_SYS_RESOURCE a value below our own
    cannot be set (EPERM), so it is raised to ours rather than failing the container."""
    if not -1000 <= value <= 1000:
        raise InvalidArgument(f"oom_score_adj {value} out of range -1000..1000")
    try:
        with open("/proc/self/status") as f:
            caps = next(int(ln.split()[1], 16) for ln in f if ln.startswith("CapEff:"))
        with open("/proc/self/oom_score_adj") as f:
            own = int(f.read())
    except (OSError, ValueError, StopIteration):
        return value
    if caps >> _CAP_CAP_SYS_RESOURCE & 1:
        return value
    return max(value, own)


def _image_mount(m: pb.Mount) -> ImageMount:
    """An image volume: the image's filesystem, read-only (the kubelet pulled it and gives
    its image id or reference)."""
    if m.host_path:
        raise InvalidArgument(f"mount {m.container_path}: host_path and image exclude each "
                              "other")
    if not m.container_path.startswith("/"):
        raise InvalidArgument(f"image volume container_path {m.container_path!r} must be "
                              "absolute")
    if m.propagation not in (pb.MountPropagation.PROPAGATION_PRIVATE,):
        raise InvalidArgument(f"image volume {m.container_path}: only private propagation")
    return ImageMount(image=m.image.image, destination=m.container_path,
                      sub_path=m.image_sub_path)


def _idmaps(m: pb.Mount) -> tuple[list[list[int]], list[list[int]]]:
    """A mount's uidMappings/gidMappings (the kubelet idmaps a user-namespaced pod's
    volumes): both or neither."""
    uids = [[x.container_id, x.host_id, x.length] for x in m.uidMappings]
    gids = [[x.container_id, x.host_id, x.length] for x in m.gidMappings]
    if bool(uids) != bool(gids):
        raise InvalidArgument(f"mount {m.container_path}: give both uidMappings and "
                              "gidMappings, or neither")
    for c, h, n in uids + gids:
        if n == 0:
            raise InvalidArgument(f"mount {m.container_path}: id mapping {c}:{h}:0 has size 0")
    return uids, gids


def _mount(m: pb.Mount) -> Mount:
    host = m.host_path
    if not host.startswith("/") or ".." in host.split("/"):
        raise InvalidArgument(f"mount host_path {host!r} must be an absolute path without '..'")
    if m.propagation not in PROPAGATION:
        raise InvalidArgument(f"mount {m.container_path}: unknown propagation {m.propagation}")
    # containerd resolves symlinks (so the runtime binds what was checked) and creates a
    # missing source as a directory.
    if not os.path.lexists(host):
        os.makedirs(host, mode=0o755, exist_ok=True)
    host = os.path.realpath(host)
    uids, gids = _idmaps(m)
    return Mount(destination=m.container_path, source=host, readonly=m.readonly,
                 propagation=PROPAGATION[m.propagation], uid_mappings=uids, gid_mappings=gids)


def log_path_in(log_directory: str, log_path: str) -> str:
    """The container log's host path: LOG_PATH inside LOG_DIRECTORY, refusing anything that
    escapes it (absolute, '..', or a symlinked directory pointing elsewhere)."""
    if not log_path:
        return ""
    if not log_directory:
        raise InvalidArgument(f"log_path {log_path!r} needs the pod's log_directory")
    if log_path.startswith("/") or ".." in log_path.split("/") or "\0" in log_path:
        raise InvalidArgument(f"log_path {log_path!r} must be relative to the pod's "
                              "log_directory and may not contain '..'")
    full = posixpath.normpath(os.path.join(log_directory, log_path))
    parent = os.path.dirname(full)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    base = os.path.realpath(log_directory)
    real_parent = os.path.realpath(parent)
    if real_parent != base and not real_parent.startswith(base + "/"):
        raise InvalidArgument(f"log_path {log_path!r} escapes the pod's log_directory "
                              "through a symlink")
    if os.path.islink(full):
        raise InvalidArgument(f"log_path {log_path!r} is a symlink; refusing to follow it")
    return full
