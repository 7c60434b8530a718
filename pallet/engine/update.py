"""docker update: a container's resource limits and restart policy changed in place.

Limits go through the runtime's update (live cgroups) and into the bundle's config.json
(Engine.update_resources), and into the record, so inspect's HostConfig and the next start
both see them; a running container's monitor picks up a new restart policy from its run dir.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from pallet.errors import InvalidArgument

if TYPE_CHECKING:
    from pallet.engine.containers import Engine
    from pallet.engine.store import ContainerRecord


@dataclass
class Update:
    """What `docker update` changes; None leaves a setting as it is."""

    memory: int | None = None
    memory_swap: int | None = None  # memory+swap; -1 unlimited
    cpus: float | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_limit: int | None = None  # 0 or -1: unlimited
    restart: str | None = None

    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


def _spec_resources(engine: Engine, rec: ContainerRecord) -> dict[str, Any]:
    try:
        with open(os.path.join(engine.ctr_dir(rec.id), "config.json")) as f:
            return (json.load(f).get("linux") or {}).get("resources") or {}
    except (OSError, ValueError):
        return {}


def plan(current: dict[str, Any], hc: dict[str, Any], u: Update
         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The OCI resources to apply and the new host config (inspect's), from the current
    spec resources CURRENT and host config HC. Pure; docker's checks and messages."""
    from pallet.engine.specgen import ContainerOptions, HostInfo, build_resources

    res: dict[str, Any] = {}
    hc = dict(hc)
    mem_now = current.get("memory") or {}
    if u.memory is not None or u.memory_swap is not None:
        memory = u.memory if u.memory is not None else int(mem_now.get("limit") or 0)
        swap = u.memory_swap
        old_swap = int(mem_now.get("swap") or 0)
        if swap is None:
            if old_swap > 0 and memory > old_swap:
                raise InvalidArgument("Memory limit should be smaller than already set "
                                      "memoryswap limit, update the memoryswap at the same "
                                      "time")
            swap = old_swap or None  # none yet: docker's default, twice the memory
        if memory and memory < 6 << 20:
            raise InvalidArgument("Minimum memory limit allowed is 6MB")
        if swap not in (None, -1) and memory and swap < memory:
            raise InvalidArgument("Minimum memoryswap limit should be larger than memory "
                                  "limit, see usage")
        built = build_resources(ContainerOptions(memory=memory, memory_swap=swap),
                                HostInfo())
        res["memory"] = built.get("memory") or {}
        hc["memory"] = res["memory"].get("limit", 0)
        hc["memory_swap"] = res["memory"].get("swap", 0)
    cpu_now = current.get("cpu") or {}
    if any(v is not None for v in (u.cpus, u.cpu_shares, u.cpuset_cpus, u.cpuset_mems)):
        cpus = u.cpus if u.cpus is not None else hc.get("cpus") or None
        opts = ContainerOptions(
            cpus=cpus or None,
            cpu_shares=u.cpu_shares if u.cpu_shares is not None else cpu_now.get("shares"),
            cpuset_cpus=u.cpuset_cpus if u.cpuset_cpus is not None else cpu_now.get("cpus", ""),
            cpuset_mems=u.cpuset_mems if u.cpuset_mems is not None else cpu_now.get("mems", ""))
        cpu = build_resources(opts, HostInfo(ncpu=os.cpu_count() or 0)).get("cpu") or {}
        if u.cpus is not None and not cpus and cpu_now.get("quota"):
            cpu.update(quota=-1, period=100000)  # --cpus 0: no limit any more
        res["cpu"] = cpu
        hc.update(cpus=cpus or 0, cpu_shares=cpu.get("shares", 0),
                  cpuset_cpus=cpu.get("cpus", ""), cpuset_mems=cpu.get("mems", ""))
    if u.pids_limit is not None:
        res["pids"] = {"limit": u.pids_limit if u.pids_limit > 0 else -1}
        hc["pids_limit"] = u.pids_limit if u.pids_limit > 0 else 0
    return res, hc


def update(engine: Engine, ref: str, u: Update) -> ContainerRecord:
    """Apply U to container REF (running or not) and record it."""
    from pallet.engine.containers import validate_restart

    if u.empty():
        raise InvalidArgument("you must provide one or more flags when using this command")
    rec = engine.get(ref)
    changes: dict[str, Any] = {}
    if u.restart is not None:
        validate_restart(u.restart)
        if rec.config.get("auto_remove") and u.restart not in ("", "no"):
            raise InvalidArgument("Restart policy cannot be updated because AutoRemove is "
                                  "enabled for the container")
        changes["restart_policy"] = u.restart or "no"
    res, hc = plan(_spec_resources(engine, rec), rec.config.get("host_config") or {}, u)
    if res:
        engine.update_resources(rec.id, res)
        changes["config"] = {**rec.config, "host_config": hc}
    if changes:
        rec = engine.store.update_container(rec.id, **changes)
    if u.restart is not None and rec.state in ("running", "paused", "restarting"):
        from pathlib import Path

        from pallet.engine.monitor import RESTART_FILE
        from pallet.image.content import atomic_write

        atomic_write(Path(engine.run_dir(rec.id)) / RESTART_FILE,
                     changes["restart_policy"].encode())
    engine.event(rec, "update")
    return rec
