"""The pods of `pallet pod` (podman's pods): made from the CLI's options, listed with a
status derived from their containers, started, stopped and removed as a group.

No infra container: a pod's namespaces are bind-mounted files (pallet.engine.pods), held
from `pod create` to `pod rm` whatever its containers do. CRI sandboxes share the store
but are not these pods (podman does not see CRI-O's either): lookups skip any pod whose
record is not marked ORIGIN.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pallet.engine.pods import Pods, PodSpec
from pallet.engine.store import ContainerFilter, ContainerRecord, PodFilter, PodRecord
from pallet.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PalletError

if TYPE_CHECKING:
    from pallet.engine.containers import CreateRequest, Engine

ORIGIN = "cli"
SHAREABLE = ("cgroup", "ipc", "net", "pid", "uts")
DEFAULT_SHARE = ("cgroup", "ipc", "net", "uts")
POD_STATUSES = ("created", "running", "stopped", "paused", "exited", "dead", "degraded",
                "error")
# podman's error for container options that belong to the pod sharing its network
_ON_POD = "network cannot be configured when it is shared with a pod"


class NoSuchPod(NotFound):
    def __init__(self, ref: str):
        super().__init__(f"no pod with name or ID {ref} found: no such pod")


@dataclass
class PodOptions:
    """What `pallet pod create` takes (podman's flags)."""

    name: str = ""
    ports: list[str] = field(default_factory=list)      # -p specs
    network: str = ""                                   # bridge (default) | none | host | NAME
    hostname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    share: str | None = None                            # None: DEFAULT_SHARE
    infra: bool = True  # podman's --infra=false: a pod that shares nothing
    extra_hosts: list[str] = field(default_factory=list)  # HOST:IP
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)


def parse_share(value: str) -> set[str]:
    """--share: a comma list of SHAREABLE kinds, or none; "+kind" adds to the default."""
    kinds = set(DEFAULT_SHARE) if value.startswith("+") else set()
    for kind in value.lstrip("+").split(","):
        kind = kind.strip()
        if kind == "none":
            kinds = set()
        elif kind in SHAREABLE:
            kinds.add(kind)
        else:
            raise InvalidArgument(f"invalid kernel namespace to share: {kind}. Options are: "
                                  "cgroup, ipc, net, pid, uts or none")
    return kinds


def _check_no_infra(o: PodOptions) -> None:
    """podman's refusals of what a pod without an infra container (sharing nothing) cannot
    have."""
    if o.share is not None:
        raise InvalidArgument(f"cannot set share({o.share}) namespaces without an infra "
                              "container")
    if o.ports:
        raise InvalidArgument("you must have an infra container to publish port bindings "
                              "to the host")
    if o.network:
        raise InvalidArgument("NoInfra and network modes cannot be used together")
    for value, what in ((o.dns, "DNSServer"), (o.dns_search, "DNSSearch"),
                        (o.dns_options, "DNSOption"), (o.extra_hosts, "HostAdd")):
        if value:
            raise InvalidArgument(f"NoInfra and {what} are mutually exclusive pod options: "
                                  "invalid pod spec")


def pod_status(states: list[str]) -> str:
    """podman's pod status from its containers' states (no infra container: an empty pod
    is Created)."""
    n = len(states)
    if n == 0:
        return "Created"
    running = sum(s in ("running", "restarting") for s in states)
    paused = states.count("paused")
    stopped = states.count("exited")
    created = states.count("created")
    if running:
        return "Running" if running == n else "Degraded"
    if paused == n:
        return "Paused"
    if stopped == n:
        return "Exited"
    if stopped:
        return "Stopped"
    if created + paused < n:
        return "Error"
    return "Created"


def rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + \
        f".{ns % 10**9:09d}Z"


class UserPods:
    """The CLI's pods of ENGINE."""

    def __init__(self, engine: Engine):
        from pallet.engine.network import Networks

        self.engine = engine
        self.networks = Networks(engine.store, engine.root)
        self.pods = Pods(engine, self.networks, origin=ORIGIN)

    # -- lookups -------------------------------------------------------------------------
    def get(self, ref: str) -> PodRecord:
        try:
            return self.pods.get(ref)
        except (NotFound, InvalidArgument):
            raise NoSuchPod(ref) from None

    def exists(self, ref: str) -> bool:
        try:
            self.get(ref)
        except NotFound:
            return False
        return True

    def list(self, labels: dict[str, str | None] | None = None) -> list[PodRecord]:
        return self.pods.list(PodFilter(labels=labels or {}))

    def containers(self, pod: PodRecord) -> list[ContainerRecord]:
        """Its containers, oldest first, their states refreshed from their monitors."""
        recs = self.engine.list(all=True, filters=ContainerFilter(pod_id=pod.id))
        return sorted(recs, key=lambda r: r.created_at)

    def status(self, pod: PodRecord, containers: list[ContainerRecord] | None = None) -> str:
        recs = self.containers(pod) if containers is None else containers
        return pod_status([r.state for r in recs])

    # -- create --------------------------------------------------------------------------
    def create(self, o: PodOptions) -> PodRecord:
        from pallet.engine.containers import cni_network, parse_extra_host
        from pallet.engine.network import parse_publish

        if not o.infra:
            _check_no_infra(o)
        share = parse_share(",".join(DEFAULT_SHARE) if o.share is None else o.share) \
            if o.infra else set()
        network = o.network or "bridge"
        if network == "host" or "net" not in share:
            mode = "host" if network == "host" else "container"
        else:
            mode = "pod"
        if o.ports and (mode != "pod" or network == "none"):
            raise InvalidArgument("PortMappings can only be used with Bridge or slirp4netns "
                                  "networking")
        if o.hostname and "uts" not in share and o.infra:
            raise InvalidArgument("invalid config provided: cannot set hostname when the pod "
                                  "does not share its UTS namespace")
        name = o.name or self.engine.store.unique_pod_name()
        with contextlib.suppress(NotFound):
            self.engine.store.get_pod(name)
            raise AlreadyExists(f'adding pod to state: name "{name}" is in use: pod already '
                                "exists")
        net_name = "none" if network == "none" else ""
        if mode == "pod" and network != "none":
            try:
                net_name = self.networks.get(cni_network(network)).name
            except NotFound:
                raise NotFound(f"unable to find network with name or ID {network}: network "
                               "not found") from None
        ports = [parse_publish(p) for p in o.ports]
        if any(not p.get("hostPort") for p in ports):
            ports = self.networks.allocate_host_ports(ports)
        hosts = [list(parse_extra_host(h)) for h in o.extra_hosts]
        spec = PodSpec(name=name, namespace="", hostname=o.hostname, labels=dict(o.labels),
                       dns_servers=list(o.dns), dns_searches=list(o.dns_search),
                       dns_options=list(o.dns_options), port_mappings=ports,
                       network=mode, network_name=net_name,
                       ipc="pod" if "ipc" in share else "container",
                       uts="pod" if "uts" in share else "container",
                       pid="pod" if "pid" in share else "container", origin=ORIGIN,
                       extra_hosts=hosts)
        rec = self.pods.run(spec)
        config = {**rec.config, "share": sorted(share), "network_mode": network}
        rec = self.engine.store.update_pod(rec.id, config=config)
        if rec.config.get("embedded_dns"):
            self._sync_dns(start=True)
        self._event(rec, "create")
        return rec

    def _event(self, pod: PodRecord, action: str) -> None:
        """podman's pod event (type pod, the pod's name) in the root's events journal."""
        from pallet.events import emit

        emit(self.engine.root, "pod", action, pod.id, {"name": pod.name})

    def _sync_dns(self, start: bool = False) -> None:
        from pallet.engine.containers import _sync_dns

        _sync_dns(self.engine, start=start)

    # -- containers join -----------------------------------------------------------------
    def join(self, ref: str, req: CreateRequest) -> PodRecord:
        """Make REQ (a `run`/`create --pod REF`) a member of the pod: its namespaces, /etc
        files and hostname; podman's refusals of what belongs to the pod."""
        pod = self.get(ref)
        share = set(pod.config.get("share", DEFAULT_SHARE))
        if "net" in share:
            why = ""
            if req.network:
                why = "networks must be defined when the pod is created"
            elif req.ports or req.publish_all:
                why = "published or exposed ports must be defined when the pod is created"
            elif req.extra_hosts:
                why = "extra host entries must be specified on the pod"
            if why:
                raise InvalidArgument(f"invalid config provided: {why}: {_ON_POD}")
        if "uts" in share and req.options.hostname:
            raise InvalidArgument("invalid config provided: cannot set hostname when joining "
                                  "the pod UTS namespace: invalid configuration")
        pid_mode = "pod" if "pid" in share and "pid" not in req.namespaces else "container"
        network = self.pods.join(pod, req.options, pid_mode)
        if network:
            req.network = network
        if req.dns or req.dns_search or req.dns_options:
            # The container's own resolv.conf (the engine writes it) wins over the pod's.
            req.options.mounts = [m for m in req.options.mounts
                                  if m.destination != "/etc/resolv.conf"
                                  or not m.source.startswith(self.pods.pod_dir(pod.id))]
        req.pod_id = pod.id
        return pod

    # -- acting on every container -------------------------------------------------------
    def _each(self, pod: PodRecord, want: tuple[str, ...], act: Any) -> None:
        """ACT(container) on each of POD's containers in a state of WANT; the first error
        is raised once all were tried (podman reports each)."""
        errors: list[PalletError] = []
        for c in self.containers(pod):
            if c.state not in want:
                continue
            try:
                act(c)
            except NotFound:
                continue
            except PalletError as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def start(self, ref: str) -> PodRecord:
        pod = self.get(ref)

        def start(c: ContainerRecord) -> None:
            _, fd = self.engine.start(c.id)
            if fd >= 0:
                os.close(fd)

        self._each(pod, ("created", "exited"), start)
        self._event(pod, "start")
        return pod

    def stop(self, ref: str, timeout: float | None = None) -> PodRecord:
        pod = self.get(ref)
        self._each(pod, ("running", "paused", "restarting"),
                   lambda c: self.engine.stop(c.id, timeout))
        self._event(pod, "stop")
        return pod

    def restart(self, ref: str, timeout: float | None = None) -> PodRecord:
        self.stop(ref, timeout)
        return self.start(ref)

    def kill(self, ref: str, signal: int) -> PodRecord:
        pod = self.get(ref)
        self._each(pod, ("running", "paused"), lambda c: self.engine.kill(c.id, signal))
        self._event(pod, "kill")
        return pod

    def pause(self, ref: str) -> PodRecord:
        pod = self.get(ref)
        self._each(pod, ("running",), lambda c: self.engine.pause(c.id))
        self._event(pod, "pause")
        return pod

    def unpause(self, ref: str) -> PodRecord:
        pod = self.get(ref)
        self._each(pod, ("paused",), lambda c: self.engine.unpause(c.id))
        self._event(pod, "unpause")
        return pod

    def remove(self, ref: str, force: bool = False, timeout: float | None = None
               ) -> PodRecord:
        """The pod, its containers, namespaces, network and files. Without FORCE a running
        or paused container refuses it (podman's message)."""
        pod = self.get(ref)
        for c in self.containers(pod):
            if c.state in ("running", "paused", "restarting"):
                if not force:
                    raise FailedPrecondition(
                        f"pod {pod.id} has containers that are not ready to be removed: "
                        f"cannot remove container {c.id} as it is running - running or "
                        "paused containers cannot be removed without force: container "
                        "state improper")
                if timeout is not None:
                    with contextlib.suppress(NotFound):
                        self.engine.stop(c.id, timeout)
        self.pods.remove(pod.id)
        if pod.config.get("embedded_dns"):
            self._sync_dns()
        self._event(pod, "remove")
        return pod

    def prune(self) -> list[str]:
        """Remove every Exited or Stopped pod (podman's rule: a Created one, empty or not,
        stays); returns their ids."""
        removed = []
        for pod in self.list():
            if self.status(pod) in ("Exited", "Stopped"):
                with contextlib.suppress(NotFound):
                    self.remove(pod.id)
                    removed.append(pod.id)
        return removed

    def top(self, ref: str, ps_args: list[str] | None = None
            ) -> tuple[list[str], list[list[str]]]:
        """The processes of the pod's running containers, one table."""
        pod = self.get(ref)
        headers: list[str] = []
        rows: list[list[str]] = []
        running = [c for c in self.containers(pod) if c.state in ("running", "paused")]
        if not running:
            raise FailedPrecondition(f"no containers in pod {pod.id} are running: container "
                                     "state improper")
        for c in running:
            with contextlib.suppress(NotFound, FailedPrecondition):
                headers, more = self.engine.top(c.id, ps_args)
                rows += more
        return headers, rows

    # -- reporting -----------------------------------------------------------------------
    def inspect(self, pod: PodRecord) -> dict[str, Any]:
        """podman pod inspect's object (4.x), the infra fields describing pallet's held
        namespaces instead of a container."""
        cfg = pod.config
        spec = cfg.get("spec") or {}
        ctrs = self.containers(pod)
        ports: dict[str, list[dict[str, str]]] = {}
        for m in spec.get("port_mappings") or []:
            ports.setdefault(f"{m['containerPort']}/{m['protocol']}", []).append(
                {"HostIp": m.get("hostIP") or "", "HostPort": str(m["hostPort"])})
        network = cfg.get("network_mode") or "bridge"
        share = sorted(s for s in cfg.get("share") or [] if s != "cgroup")
        return {
            "Id": pod.id, "Name": pod.name, "Created": rfc3339(pod.created_at),
            "ExitPolicy": "continue", "State": self.status(pod, ctrs),
            "Hostname": cfg.get("hostname", "") if "uts" in share else "",
            "Labels": dict(pod.labels), "CreateCgroup": False, "CgroupParent": "",
            "CreateInfra": False,
            "InfraConfig": {
                "PortBindings": ports, "HostNetwork": network == "host",
                "DNSServer": spec.get("dns_servers") or None,
                "DNSSearch": spec.get("dns_searches") or None,
                "DNSOption": spec.get("dns_options") or None,
                "HostAdd": [f"{h}:{ip}" for h, ip in spec.get("extra_hosts") or []] or None,
                "Networks": [network] if "net" in share and network not in ("host", "none")
                else [],
                "pid_ns": "pod" if "pid" in share else "private", "userns": "host",
                "uts_ns": "pod" if "uts" in share else "private",
            },
            "IP": cfg.get("ip", ""),
            "SharedNamespaces": share,
            "NumContainers": len(ctrs),
            "Containers": [{"Id": c.id, "Name": c.name, "State": c.state} for c in ctrs],
        }

