"""The engine as the CRI server sees it: one Engine, its Pods and Networks, the spawner
for anything that forks, and the event bus; shared by every RPC group of the server.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from typing import TYPE_CHECKING, Any

from pallet.config import Config
from pallet.cri.events import EventBus
from pallet.engine.containers import Engine
from pallet.engine.pods import Pods
from pallet.engine.store import ContainerRecord, PodRecord
from pallet.errors import InvalidArgument, NotFound, PalletError

if TYPE_CHECKING:
    from pallet.cri.spawner import Spawner
    from pallet.engine.network import Networks

log = logging.getLogger("pallet.cri")


class Node:
    """Built once per daemon. Engine calls that fork (start, exec, a pod PID holder) go
    through `spawner`; everything else runs on the RPC's own thread."""

    def __init__(self, config: Config, spawner: Spawner | None):
        self.config = config
        self.spawner = spawner
        self.engine = Engine(config.root, run_root=config.state_dir)
        _ = self.engine.store  # open once, before threads race to open it lazily
        self.networks = self._networks()
        self.pods = Pods(self.engine, self.networks, pid_holder=self._pid_holder,
                         userns_holder=self._userns_holder)
        self.events = EventBus(self)

    def _networks(self) -> Networks | None:
        try:
            from pallet.engine.network import DEFAULT_SUBNET, Networks
        except ImportError:
            return None
        subnet = DEFAULT_SUBNET
        cidr = _read(os.path.join(self.config.state_dir, "pod-cidr")).strip()
        for part in cidr.split(","):
            if part.strip() and ":" not in part:
                with contextlib.suppress(ValueError):
                    subnet = str(ipaddress.ip_network(part.strip(), strict=False))
        return Networks(self.engine.store, self.engine.root, bin_dirs=self.config.cni.bin_dirs,
                        conf_dir=self.config.cni.conf_dir, default_subnet=subnet,
                        netns_dir=os.path.join(self.config.state_dir, "pods"))

    # -- forking, via the spawner -------------------------------------------------------
    def call(self, target: str, kwargs: dict[str, Any], fds: list[int] | None = None,
             timeout: float | None = None) -> Any:
        if self.spawner is None:
            raise InvalidArgument("this server has no spawner: it cannot start processes")
        base = {"root": self.engine.root, "run_root": self.engine.run_root}
        return self.spawner.call(target, {**base, **kwargs}, fds=fds or [], timeout=timeout)

    def _pid_holder(self, ndir: str, userns: str = "") -> str:
        return str(self.call("pallet.cri.workers:pid_holder", {"ndir": ndir, "userns": userns}))

    def _userns_holder(self, ndir: str, uid_mappings: list[list[int]],
                       gid_mappings: list[list[int]], kinds: list[str], hostname: str,
                       sysctls: dict[str, str]) -> dict[str, str]:
        return dict(self.call("pallet.cri.workers:userns_holder", {
            "ndir": ndir, "uid_mappings": uid_mappings, "gid_mappings": gid_mappings,
            "kinds": kinds, "hostname": hostname, "sysctls": dict(sysctls)}))

    # -- lookups ------------------------------------------------------------------------
    def container(self, ref: str) -> ContainerRecord:
        """A CRI container (one that belongs to a pod) by id or unique id prefix."""
        if not ref:
            raise InvalidArgument("container id is empty")
        try:
            rec = self.engine.get(ref)
        except NotFound:
            raise NotFound(f"container {ref!r} not found") from None
        try:
            self.pods.get(rec.pod_id or "")  # a CLI pod's member is not ours either
        except (NotFound, InvalidArgument):
            raise NotFound(f"container {ref!r} not found (it is not a pod sandbox's "
                           "container)") from None
        return rec

    def sandbox_ids(self) -> set[str]:
        """The ids of the CRI's pods (the CLI's pods and their containers are not ours)."""
        return {p.id for p in self.pods.list()}

    def pod(self, ref: str) -> PodRecord:
        if not ref:
            raise InvalidArgument("pod sandbox id is empty")
        return self.pods.get(ref)

    def runtime_handler(self, name: str) -> str:
        """The engine's handler for a CRI runtime_handler: "" (in-process) or a binary path."""
        h = self.config.runtime(name)
        if h.type == "in-process":
            return ""
        if not os.access(h.path, os.X_OK):
            raise InvalidArgument(f"runtime handler {name!r}: {h.path} is not installed")
        return h.path

    def reconcile(self) -> None:
        """At start: pods whose namespaces vanished (reboot) are NOTREADY; containers whose
        monitor died while we were away get their exit code from exit.json (engine.list)."""
        try:
            changed = self.pods.reconcile()
            self.engine.list(all=True)
        except (PalletError, OSError) as e:
            log.warning("reconciling pods and containers at start failed: %s", e)
            return
        if changed:
            log.info("pods no longer ready after restart: %s", ", ".join(c[:12] for c in changed))

    def close(self) -> None:
        self.events.close()


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
