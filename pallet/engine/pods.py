"""Pods: the holders of the network, IPC and UTS namespaces (optionally PID) that their
containers join, with CNI networking, per-pod /etc files and a durable record.

No infra container (CRI-O's pinns design): each namespace is an nsfs file bind-mounted
under <run_root>/pods/<id>/, made by a short-lived thread that unshares it (a namespace
is per thread, so the threaded daemon needs no fork), sets the hostname and sysctls, and
mounts /proc/self/task/<tid>/ns/<kind> onto the file; the mount keeps it alive with no
process inside. Only a shared PID namespace needs a process (a PID namespace whose init
died cannot take new members), so `pid = "pod"` starts a tiny reaper as its init.

A pod with a user namespace of its own (Kubernetes' `hostUsers: false`) needs a process
for it too: only a single-threaded process may unshare one, and the pod's network, IPC,
UTS (and PID) namespaces must be created inside it so that it owns them. A forked holder
does all of it and exits once the namespaces are bind-mounted (`start_userns_holder`).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import shutil
import signal
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pallet.engine import netns
from pallet.engine.specgen import ContainerOptions, Mount, validate_sysctls
from pallet.engine.store import ContainerFilter, PodFilter, PodRecord, new_id
from pallet.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PalletError
from pallet.oci.linux import syscalls

if TYPE_CHECKING:
    from pallet.engine.containers import Engine
    from pallet.engine.network import Networks

NS_MODES = ("pod", "host")
CLI_NS_MODES = ("pod", "host", "container")  # a CLI pod may leave a kind unshared
PID_MODES = ("container", "pod", "host")
_NS_FLAGS = {"ipc": syscalls.CLONE_NEWIPC, "uts": syscalls.CLONE_NEWUTS}
LOCALHOST = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


@dataclass
class PodSpec:
    """What a pod is asked to be: CRI's PodSandboxConfig in engine terms."""

    name: str
    namespace: str = "default"
    uid: str = ""
    attempt: int = 0
    hostname: str = ""
    log_directory: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    dns_servers: list[str] = field(default_factory=list)
    dns_searches: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    port_mappings: list[dict[str, Any]] = field(default_factory=list)  # CNI portMappings
    cgroup_parent: str = ""
    runtime_handler: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    network: str = "pod"  # "pod": its own netns on the CNI network; "host"
    ipc: str = "pod"
    pid: str = "container"  # "container": each its own; "pod": shared; "host"
    network_name: str = ""  # the CNI network; "" = Networks.pod_network()
    privileged: bool = False
    # A user namespace of the pod's own: one [container id, host id, size] mapping each
    # for uids and gids (the kubelet allocates the host range). None: the host's.
    uid_mappings: list[list[int]] | None = None
    gid_mappings: list[list[int]] | None = None
    # Who made it: "cri" (a kubelet's sandbox) or "cli" (`pallet pod create`, podman's
    # pods: named by NAME alone, network/ipc/uts may be "container", i.e. not shared).
    origin: str = "cri"
    uts: str = "pod"
    extra_hosts: list[list[str]] = field(default_factory=list)  # [host, ip] in /etc/hosts

    @property
    def userns(self) -> bool:
        return self.uid_mappings is not None or self.gid_mappings is not None

    def record_name(self) -> str:
        """containerd's sandbox name: unique per metadata and attempt (a CLI pod: NAME)."""
        if self.origin == "cli":
            return self.name
        return "_".join([self.name, self.namespace, self.uid, str(self.attempt)])

    def validate(self) -> None:
        if not self.name:
            raise InvalidArgument("pod metadata.name is empty")
        ns_modes = CLI_NS_MODES if self.origin == "cli" else NS_MODES
        for what, value, modes in (("network", self.network, ns_modes),
                                   ("ipc", self.ipc, ns_modes), ("uts", self.uts, ns_modes),
                                   ("pid", self.pid, PID_MODES)):
            if value not in modes:
                raise InvalidArgument(f"pod {what} namespace mode {value!r}: use one of "
                                      f"{', '.join(modes)}")
        for server in self.dns_servers:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise InvalidArgument(f"invalid DNS server {server!r}: not an IP address") \
                    from None
        for item in [*self.dns_searches, *self.dns_options, self.hostname]:
            if any(c in item for c in "\n\r\0"):
                raise InvalidArgument(f"invalid pod DNS/hostname value {item!r}")
        if self.log_directory and not os.path.isabs(self.log_directory):
            raise InvalidArgument(f"pod log_directory {self.log_directory!r} must be absolute")
        if self.userns:
            validate_id_mappings(self.uid_mappings, self.gid_mappings)
            shared = [k for k, v in (("network", self.network), ("ipc", self.ipc),
                                     ("pid", self.pid)) if v == "host"]
            if shared:
                raise InvalidArgument(f"a pod with its own user namespace cannot share the "
                                      f"host's {' and '.join(shared)} namespace")
        validate_sysctls(self.sysctls, {"network": "host" if self.network == "host" else "",
                                        "ipc": "host" if self.ipc == "host" else "",
                                        "uts": "host" if self.network == "host" else ""})


def validate_id_mappings(uids: list[list[int]] | None, gids: list[list[int]] | None) -> None:
    """Exactly one mapping each, like the kubelet sends and containerd accepts; sizes > 0
    and every id within 32 bits."""
    for what, maps in (("uid", uids), ("gid", gids)):
        if not maps or len(maps) != 1:
            raise InvalidArgument(f"user namespace {what} mappings: exactly one mapping is "
                                  f"supported, got {len(maps or [])}")
        container, host, size = maps[0]
        if size <= 0:
            raise InvalidArgument(f"user namespace {what} mapping {container}:{host}:{size}: "
                                  "the size must be at least 1")
        if any(v < 0 for v in (container, host)) or max(container, host) + size > 1 << 32:
            raise InvalidArgument(f"user namespace {what} mapping {container}:{host}:{size}: "
                                  "ids must fit in 32 bits")


def pod_origin(pod: PodRecord) -> str:
    """"cri" or "cli": which face made POD (older records: the CRI's)."""
    return (pod.config.get("spec") or {}).get("origin") or "cri"


class Pods:
    """The pods of one engine (its store, root and run root); `networks` gives CNI.
    get and list see only the pods of ORIGIN: the CRI server's sandboxes and the CLI's
    pods share the store, and neither face lists or finds the other's."""

    def __init__(self, engine: Engine, networks: Networks | None = None,
                 pid_holder: Callable[..., str] | None = None,
                 userns_holder: Callable[..., dict[str, str]] | None = None,
                 origin: str = "cri"):
        self.engine = engine
        self.origin = origin
        self.networks = networks
        # Starting the PID and user namespace holders forks: a threaded caller passes
        # spawner-backed ones.
        self.pid_holder = pid_holder or start_pid_holder
        self.userns_holder = userns_holder or start_userns_holder
        self._lock = threading.Lock()  # one RunPodSandbox per name at a time

    # -- paths -------------------------------------------------------------------
    def pod_dir(self, pid: str) -> str:
        return os.path.join(self.engine.root, "pods", pid)

    def ns_dir(self, pid: str) -> str:
        return os.path.join(self.engine.run_root, "pods", pid)

    # -- lookups -----------------------------------------------------------------
    def get(self, ref: str) -> PodRecord:
        try:
            pod = self.engine.store.get_pod(ref)
        except NotFound:
            raise NotFound(f"pod sandbox {ref!r} not found") from None
        if pod_origin(pod) != self.origin:
            raise NotFound(f"pod sandbox {ref!r} not found")
        return pod

    def list(self, flt: PodFilter | None = None) -> list[PodRecord]:
        return [p for p in self.engine.store.list_pods(flt) if pod_origin(p) == self.origin]

    # -- run -----------------------------------------------------------------------
    def run(self, spec: PodSpec) -> PodRecord:
        """Create the pod's namespaces, network and files; idempotent per metadata and
        attempt: a ready pod of the same name is returned as it is."""
        spec.validate()
        name = spec.record_name()
        with self._lock:
            with contextlib.suppress(NotFound):
                old = self.engine.store.get_pod(name)
                if old.name == name:
                    if old.state == "ready":
                        return old
                    raise AlreadyExists(f'failed to reserve sandbox name "{name}": name '
                                        f'"{name}" is reserved for "{old.id}"')
            pid = new_id()
            rec = PodRecord(id=pid, name=name, state="notready", labels=dict(spec.labels),
                            annotations=dict(spec.annotations),
                            runtime_handler=spec.runtime_handler,
                            cgroup_parent=spec.cgroup_parent,
                            log_directory=spec.log_directory, config={"spec": asdict(spec)})
            rec = self.engine.store.add_pod(rec)
        undo: list[Callable[[], None]] = [lambda: self.engine.store.remove_pod(pid)]
        try:
            config = self._make(rec, spec, undo)
            return self.engine.store.update_pod(pid, state="ready", config=config,
                                                netns_path=config["namespaces"].get("network", ""))
        except BaseException:
            for fn in reversed(undo):
                with contextlib.suppress(Exception):
                    fn()
            raise

    def _make(self, rec: PodRecord, spec: PodSpec, undo: list[Callable[[], None]]
              ) -> dict[str, Any]:
        pid = rec.id
        pdir, ndir = self.pod_dir(pid), self.ns_dir(pid)
        os.makedirs(pdir, mode=0o711)
        undo.append(lambda: shutil.rmtree(pdir, ignore_errors=True))
        os.makedirs(ndir, mode=0o711, exist_ok=True)
        undo.append(lambda: _remove_ns_dir(ndir))
        namespaces: dict[str, str] = {}
        hostname = spec.hostname or (os.uname().nodename if spec.network == "host"
                                     else spec.name[:63])
        ip, network = "", ""
        if spec.userns:
            # The holder makes the user namespace and, inside it, every namespace the pod
            # owns, and sets the hostname and sysctls there (host sharing was refused).
            sysctls = validate_sysctls(spec.sysctls, {})
            made = self.userns_holder(ndir, spec.uid_mappings, spec.gid_mappings,
                                      ["net", "ipc", "uts"], hostname, sysctls)
            namespaces.update(made)
        if spec.network == "pod" and spec.network_name == "none":
            # A CLI pod's --network none: a namespace of its own with only lo.
            path = namespaces.get("network") or netns.create("net", ndir)
            namespaces["network"] = path
            netns.loopback_up(path)
        elif spec.network == "pod":
            path = namespaces.get("network") or netns.create("net", ndir)
            namespaces["network"] = path
            if self.networks is None:
                raise FailedPrecondition("pod networking is not configured (no CNI)")
            nets = self.networks
            network = nets.pod_network(spec.network_name)
            undo.append(lambda: nets.detach_all(pid, path))
            nets.loopback_up(path, pid)
            cni_args = {} if spec.origin == "cli" else {
                "K8S_POD_NAMESPACE": spec.namespace, "K8S_POD_NAME": spec.name,
                "K8S_POD_INFRA_CONTAINER_ID": pid, "K8S_POD_UID": spec.uid}
            # A CLI pod answers by its name on a user network (its members by theirs: the
            # embedded DNS server looks them up); a CRI pod leaves names to cluster DNS.
            aliases = [spec.name] if spec.origin == "cli" else []
            att = nets.attach(path, pid, network, spec.port_mappings, cni_args=cni_args,
                              aliases=aliases)
            ip = att.ip
        elif spec.network == "host":
            namespaces["network"] = "host"
            namespaces["uts"] = "host"
        if spec.ipc == "host":
            namespaces["ipc"] = "host"
        if not spec.userns:
            kinds = [k for k in ("ipc", "uts") if k not in namespaces
                     and getattr(spec, k) == "pod"]
            sysctls = validate_sysctls(spec.sysctls, namespaces)
            namespaces.update(_hold_namespaces(ndir, kinds, hostname,
                                               namespaces.get("network", ""), sysctls))
        if spec.pid == "pod" and spec.userns:
            namespaces["pid"] = self.pid_holder(ndir, userns=namespaces["user"])
        elif spec.pid == "pod":
            namespaces["pid"] = self.pid_holder(ndir)
        elif spec.pid == "host":
            namespaces["pid"] = "host"
        from pallet.engine.containers import uses_embedded_dns

        embedded = spec.origin == "cli" and network != "" and \
            uses_embedded_dns(network, self.engine.store)
        self._write_etc(pdir, spec, hostname, ip, embedded)
        config = {"spec": asdict(spec), "namespaces": namespaces, "ip": ip, "network": network,
                  "hostname": hostname}
        if embedded:
            config["embedded_dns"] = True
        return config

    def _write_etc(self, pdir: str, spec: PodSpec, hostname: str, ip: str,
                   embedded_dns: bool = False) -> None:
        if spec.network == "host":
            hosts = _read("/etc/hosts") or LOCALHOST
        else:
            hosts = LOCALHOST + (f"{ip}\t{hostname}\n" if ip else f"127.0.1.1\t{hostname}\n")
        hosts += "".join(f"{ip_}\t{host}\n" for host, ip_ in spec.extra_hosts)
        if embedded_dns:  # a CLI pod on a user network: docker's/podman's resolver
            from pallet.engine.dns import resolv_conf

            resolv = resolv_conf(_read("/etc/resolv.conf"), spec.dns_servers, spec.dns_searches,
                                 spec.dns_options)
        elif spec.dns_servers or spec.dns_searches or spec.dns_options:
            lines = [f"search {' '.join(spec.dns_searches)}"] if spec.dns_searches else []
            lines += [f"nameserver {s}" for s in spec.dns_servers]
            lines += [f"options {' '.join(spec.dns_options)}"] if spec.dns_options else []
            resolv = "\n".join(lines) + "\n"
        else:
            resolv = _read("/etc/resolv.conf")  # containerd copies the host's
        for name, text in (("hostname", hostname + "\n"), ("hosts", hosts),
                           ("resolv.conf", resolv)):
            with open(os.path.join(pdir, name), "w") as f:
                f.write(text)

    # -- containers join -----------------------------------------------------------------
    def join(self, pod: PodRecord, opts: ContainerOptions, pid_mode: str = "container",
             target_pid: int = 0) -> str:
        """Point OPTS at the pod's namespaces and /etc files; returns the engine's network
        mode for the container ("host" or "none": the pod, not the engine, owns CNI; ""
        for a CLI pod that does not share its network: the container's own choice)."""
        if pod.state != "ready":
            raise FailedPrecondition(f"pod sandbox {pod.id[:12]} is not ready (stopped); "
                                     "create containers in a running pod")
        ns = pod.config.get("namespaces") or {}
        for kind in ("user", "network", "ipc", "uts"):
            value = ns.get(kind, "")
            if value and value != "host" and not os.path.exists(value):
                raise FailedPrecondition(f"pod sandbox {pod.id[:12]}: its {kind} namespace "
                                         f"{value} is gone")
            if value:
                opts.namespaces[kind] = value
        if ns.get("user"):
            spec = pod.config.get("spec") or {}
            opts.uid_mappings = [list(m) for m in spec.get("uid_mappings") or []]
            opts.gid_mappings = [list(m) for m in spec.get("gid_mappings") or []]
            if pid_mode == "host":
                raise InvalidArgument("a container of a pod with its own user namespace "
                                      "cannot share the host's pid namespace")
        if pid_mode == "pod":
            if not ns.get("pid") or ns.get("pid") == "host":
                raise InvalidArgument("pid namespace mode POD needs a pod created with a "
                                      "shared pid namespace (namespace_options.pid = POD)")
            opts.namespaces["pid"] = ns["pid"]
        elif pid_mode == "host":
            opts.namespaces["pid"] = "host"
        elif pid_mode == "target":
            if target_pid <= 0:
                raise FailedPrecondition("the target container of pid mode TARGET is not running")
            opts.namespaces["pid"] = f"/proc/{target_pid}/ns/pid"
        # A CLI pod may leave the network or UTS namespace unshared: then its members keep
        # their own (and their own /etc files and hostname).
        shared = {"hostname": "uts" in ns, "hosts": "network" in ns,
                  "resolv.conf": "network" in ns}
        if shared["hostname"]:
            opts.hostname = opts.hostname or pod.config.get("hostname", "")
        pdir = self.pod_dir(pod.id)
        taken = {m.destination for m in opts.mounts}
        for name in ("hostname", "hosts", "resolv.conf"):
            if f"/etc/{name}" not in taken and shared[name]:
                opts.mounts.append(Mount(destination=f"/etc/{name}",
                                         source=os.path.join(pdir, name),
                                         readonly=opts.read_only))
        if "network" not in ns:
            return ""
        return "host" if ns.get("network") == "host" else "none"

    # -- stop and remove -----------------------------------------------------------------
    def containers(self, pod_id: str) -> list[Any]:
        return self.engine.store.list_containers(ContainerFilter(pod_id=pod_id))

    def stop(self, ref: str, timeout: float = 0) -> PodRecord | None:
        """Stop every container (TIMEOUT then SIGKILL), tear the network down and release
        the namespaces; NOTREADY. Idempotent; None for a pod that does not exist."""
        try:
            pod = self.engine.store.get_pod(ref)
        except NotFound:
            return None
        errors: list[PalletError] = []
        for c in self.containers(pod.id):
            try:
                self.engine.stop(c.id, timeout)
            except NotFound:
                pass
            except PalletError as e:
                errors.append(e)
        if errors:
            raise errors[0]
        self._release(pod)
        with contextlib.suppress(NotFound):
            return self.engine.store.update_pod(pod.id, state="notready")
        return None

    def _release(self, pod: PodRecord) -> None:
        ndir = self.ns_dir(pod.id)
        ns = pod.config.get("namespaces") or {}
        net = ns.get("network", "")
        if net and net != "host" and self.networks is not None:
            self.networks.detach_all(pod.id, net if netns.is_netns(net) else "")
        _remove_ns_dir(ndir)

    def remove(self, ref: str) -> PodRecord | None:
        """Remove the pod's containers, namespaces, files and record. Idempotent."""
        try:
            pod = self.engine.store.get_pod(ref)
        except NotFound:
            return None
        for c in self.containers(pod.id):
            with contextlib.suppress(NotFound):
                self.engine.remove(c.id, force=True)
        self._release(pod)
        shutil.rmtree(self.pod_dir(pod.id), ignore_errors=True)
        with contextlib.suppress(NotFound):
            self.engine.store.remove_pod(pod.id)
        return pod

    def reconcile(self) -> list[str]:
        """After a restart or reboot: a ready pod whose network namespace is gone is
        NOTREADY. Returns the ids changed."""
        changed = []
        for pod in self.list(PodFilter(states=("ready",))):
            net = (pod.config.get("namespaces") or {}).get("network", "")
            if net and net != "host" and not netns.is_netns(net):
                with contextlib.suppress(NotFound):
                    self.engine.store.update_pod(pod.id, state="notready")
                    changed.append(pod.id)
        return changed


# -- namespace files ---------------------------------------------------------------------------
def _sysctl_path(name: str) -> str:
    # validate_sysctls allowed only [A-Za-z0-9_-] parts: no '..', no absolute path.
    return "/proc/sys/" + (name if "/" in name else name.replace(".", "/"))


def _write_sysctl(name: str, value: str) -> None:
    try:
        with open(_sysctl_path(name), "w") as f:
            f.write(value)
    except OSError as e:
        raise InvalidArgument(f"cannot set sysctl {name}={value!r}: {e.strerror}") from None


def _hold_namespaces(ndir: str, kinds: list[str], hostname: str, net_path: str,
                     sysctls: Mapping[str, str]) -> dict[str, str]:
    """New IPC/UTS namespaces (KINDS) bind-mounted as files in NDIR; sets the hostname
    and the pod's sysctls inside the pod's namespaces. Nothing is left on error."""
    paths = {k: os.path.join(ndir, k) for k in kinds}
    for path in paths.values():
        os.close(os.open(path, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o444))

    def body() -> None:
        flags = 0
        for k in kinds:
            flags |= _NS_FLAGS[k]
        if flags:
            syscalls.unshare(flags)
        if "uts" in kinds and hostname:
            syscalls.sethostname(hostname)
        if net_path and net_path != "host" and sysctls:
            fd = os.open(net_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                syscalls.setns(fd, syscalls.CLONE_NEWNET)
            finally:
                os.close(fd)
        for name, value in sysctls.items():
            _write_sysctl(name, value)
        tid = threading.get_native_id()
        for k, path in paths.items():
            syscalls.mount(f"/proc/self/task/{tid}/ns/{k}", path, None, syscalls.MS_BIND)

    try:
        netns._run_in_thread(body)
    except BaseException:
        for path in paths.values():
            _unmount_unlink(path)
        raise
    return paths


def start_pid_holder(ndir: str, userns: str = "") -> str:
    """A PID namespace for the pod, held by a reaper as its init; returns its ns file.
    USERNS: the pod's user namespace file, which is to own it. It forks: a threaded
    process must call it through a fork server (the daemon's spawner)."""
    path = os.path.join(ndir, "pid")
    os.close(os.open(path, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o444))
    r, w = os.pipe()
    first = os.fork()
    if first == 0:  # pragma: no cover - child
        try:
            os.close(r)
            os.setsid()
            # The holder outlives its caller: it must not keep the caller's stdio (a
            # CLI's pipes) open.
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            if userns:
                _setns(userns, syscalls.CLONE_NEWUSER)
            syscalls.unshare(syscalls.CLONE_NEWPID)
            init = os.fork()
            if init == 0:
                os.close(w)
                _pid_init()
            os.write(w, str(init).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(first, 0)
    data = b""
    while chunk := os.read(r, 32):
        data += chunk
    os.close(r)
    init = int(data or 0)
    if not init:
        _unmount_unlink(path)
        raise FailedPrecondition("cannot start the pod's pid namespace holder")
    try:
        syscalls.mount(f"/proc/{init}/ns/pid", path, None, syscalls.MS_BIND)
    except OSError as e:
        os.kill(init, signal.SIGKILL)
        _unmount_unlink(path)
        raise FailedPrecondition(f"cannot pin the pod's pid namespace: {e.strerror}") from None
    with open(os.path.join(ndir, "pid.holder"), "w") as f:
        f.write(str(init))
    return path


def start_userns_holder(ndir: str, uid_mappings: list[list[int]],
                        gid_mappings: list[list[int]], kinds: list[str], hostname: str,
                        sysctls: Mapping[str, str]) -> dict[str, str]:
    """A user namespace with the given mappings and, owned by it, new namespaces of KINDS
    ("net", "ipc", "uts"), each bind-mounted as a file in NDIR; the hostname and sysctls
    are set inside them. Returns {"user": path, "network"|"ipc"|"uts": path}. Forks (a
    threaded process calls it through its fork server); nothing is left on error.

    The child unshares the user namespace, we write its maps, it becomes the namespace's
    root and unshares the rest (so the user namespace owns them), we bind-mount its
    /proc/PID/ns files, and it exits."""
    names = {"net": "network", "ipc": "ipc", "uts": "uts"}
    files = {"user": os.path.join(ndir, "user"), **{k: os.path.join(ndir, k) for k in kinds}}
    for path in files.values():
        os.close(os.open(path, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o444))
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            parent_sock.close()
            _userns_child(child_sock, kinds, hostname, sysctls)
        finally:
            os._exit(0)
    child_sock.close()
    mounted: list[str] = []
    try:
        with parent_sock:
            if parent_sock.recv(16) != b"u":
                raise FailedPrecondition("cannot create the pod's user namespace")
            try:
                for name, maps in (("gid_map", gid_mappings), ("uid_map", uid_mappings)):
                    with open(f"/proc/{pid}/{name}", "w") as f:
                        f.write("".join(f"{c} {h} {n}\n" for c, h, n in maps))
            except OSError as e:
                raise InvalidArgument(f"cannot write the pod's user namespace {name}: "
                                      f"{e.strerror}") from None
            parent_sock.send(b"m")
            reply = parent_sock.recv(4096).decode(errors="replace")
            if reply != "ok":
                kind, _, msg = reply.partition(":")
                err = InvalidArgument if kind == "invalid" else FailedPrecondition
                raise err(msg or "the pod's user namespace holder died")
            for kind, path in files.items():
                syscalls.mount(f"/proc/{pid}/ns/{kind}", path, None, syscalls.MS_BIND)
                mounted.append(path)
    except BaseException:
        for path in files.values():
            _unmount_unlink(path)
        raise
    finally:
        os.waitpid(pid, 0)
    return {"user": files["user"], **{names[k]: files[k] for k in kinds}}


def _userns_child(sock: socket.socket, kinds: list[str], hostname: str,
                  sysctls: Mapping[str, str]) -> None:  # pragma: no cover - child
    try:
        syscalls.unshare(syscalls.CLONE_NEWUSER)
        sock.send(b"u")
        if sock.recv(16) != b"m":
            return
        # Root of the new namespace (its maps are written): it owns what we unshare next,
        # and the sysctls of those namespaces are its to write.
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        flags = 0
        for k in kinds:
            flags |= {"net": syscalls.CLONE_NEWNET, **_NS_FLAGS}[k]
        syscalls.unshare(flags)
        if "uts" in kinds and hostname:
            syscalls.sethostname(hostname)
        for name, value in sysctls.items():
            _write_sysctl(name, value)
        sock.send(b"ok")
    except InvalidArgument as e:
        sock.send(f"invalid:{e}".encode())
        return
    except OSError as e:
        sock.send(f"failed:cannot set up the pod's user namespace: {e.strerror}".encode())
        return
    sock.recv(16)  # until the parent has bind-mounted our namespaces (it closes)


def _setns(path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.setns(fd, nstype)
    finally:
        os.close(fd)


def _pid_init() -> None:  # pragma: no cover - the holder process
    """PID 1 of a shared pod PID namespace: reap orphans until SIGTERM/SIGKILL."""
    for fd in range(3, 1024):
        with contextlib.suppress(OSError):
            os.close(fd)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        try:
            os.wait()
        except ChildProcessError:
            signal.pause()
        except InterruptedError:
            continue


def _unmount_unlink(path: str) -> None:
    while True:
        try:
            syscalls.umount2(path, syscalls.MNT_DETACH)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                break
            raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _remove_ns_dir(ndir: str) -> None:
    """Unmount and delete every namespace file of a pod, stop its PID holder, rmdir."""
    holder = _read(os.path.join(ndir, "pid.holder")).strip()
    if holder.isdigit():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(holder), signal.SIGKILL)
    for kind in ("net", "ipc", "uts", "pid", "user"):
        path = os.path.join(ndir, kind)
        if kind == "net":
            netns.remove(path)
        else:
            _unmount_unlink(path)
    shutil.rmtree(ndir, ignore_errors=True)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
