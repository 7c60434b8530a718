"""CRI container RPCs: CreateContainer, StartContainer, StopContainer, RemoveContainer,
ListContainers, ContainerStatus, UpdateContainerResources and ReopenContainerLog.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Any

import grpc
from cri_api.v1 import api_pb2 as pb

from pallet.cri.container_config import (
    ContainerPlan,
    clamp_oom_score_adj,
    container_plan,
    log_path_in,
)
from pallet.engine.containers import CreateRequest
from pallet.engine.monitor import frame
from pallet.engine.store import ContainerFilter, ContainerRecord
from pallet.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PalletError

if TYPE_CHECKING:
    from pallet.cri.node import Node

CREATED = pb.ContainerState.CONTAINER_CREATED
RUNNING = pb.ContainerState.CONTAINER_RUNNING
EXITED = pb.ContainerState.CONTAINER_EXITED
UNKNOWN = pb.ContainerState.CONTAINER_UNKNOWN
EV = pb.ContainerEventType


def cri_state(rec: ContainerRecord) -> int:
    if rec.state == "created":
        # A start that failed leaves "created" with an exit code: it ran, and is over.
        return EXITED if rec.exit_code is not None else CREATED
    if rec.state in ("running", "paused", "restarting"):
        return RUNNING
    if rec.state == "exited":
        return EXITED
    return UNKNOWN


class ContainerRPCs:
    node: Node

    def CreateContainer(self, request: pb.CreateContainerRequest,
                        context: grpc.ServicerContext) -> pb.CreateContainerResponse:
        node = self.node
        pod = node.pod(request.pod_sandbox_id)
        spec = pod.config.get("spec") or {}
        if not request.HasField("config"):
            raise InvalidArgument("CreateContainer needs a container config")
        plan = container_plan(request.config, pod_privileged=bool(spec.get("privileged")))
        name = "_".join([plan.name, spec.get("name", ""), spec.get("namespace", ""),
                         spec.get("uid", ""), str(plan.attempt)])
        with contextlib.suppress(NotFound):
            other = node.engine.store.get_container(name)
            if other.name == name:
                raise AlreadyExists(f'failed to reserve container name "{name}": name '
                                    f'"{name}" is reserved for "{other.id}"')
        log_path = log_path_in(pod.log_directory, plan.log_path)
        target_pid = 0
        pid_mode = plan.pid_mode
        if pid_mode == "pod" and (pod.config.get("namespaces") or {}).get("pid") in (None, "host"):
            pid_mode = "container"  # the pod has no shared PID namespace to join
        if pid_mode == "target":
            target = node.container(plan.target_id)
            if target.pod_id != pod.id:
                raise InvalidArgument(f"target container {plan.target_id} is in another pod")
            target_pid = target.pid if target.state == "running" else 0
        _check_userns(plan, spec)
        network = node.pods.join(pod, plan.options, pid_mode, target_pid)
        req = CreateRequest(image=plan.image, options=plan.options, name=name,
                            image_mounts=plan.image_mounts,
                            network=network, runtime=node.runtime_handler(pod.runtime_handler),
                            pull="never", pod_id=pod.id, log_path=log_path,
                            cgroup_parent=pod.cgroup_parent, log_max_size=max(
                                0, node.config.logs.max_size), log_max_files=1)
        rec = node.engine.create(req)
        cri = {"name": plan.name, "attempt": plan.attempt, "image": plan.image,
               "mounts": plan.mounts, "privileged": plan.privileged,
               "stdin_once": bool(request.config.stdin and request.config.stdin_once),
               "resources": _resources_dict(request.config.linux.resources)}
        rec = node.engine.store.update_container(rec.id, config={**rec.config, "cri": cri})
        node.events.publish(rec.id, EV.CONTAINER_CREATED_EVENT, pod.id)
        return pb.CreateContainerResponse(container_id=rec.id)

    def StartContainer(self, request: pb.StartContainerRequest,
                       context: grpc.ServicerContext) -> pb.StartContainerResponse:
        rec = self.node.container(request.container_id)
        if rec.state != "created" or rec.exit_code is not None:
            raise FailedPrecondition(f"container {rec.id[:12]} is {rec.state}: only a created "
                                     "container can be started")
        pod = self.node.pod(rec.pod_id or "")
        if pod.state != "ready":
            raise FailedPrecondition(f"pod sandbox {pod.id[:12]} is not ready")
        self.node.call("pallet.cri.workers:start_container", {"id": rec.id})
        self.node.events.publish(rec.id, EV.CONTAINER_STARTED_EVENT, pod.id)
        return pb.StartContainerResponse()

    def StopContainer(self, request: pb.StopContainerRequest, context: grpc.ServicerContext
                      ) -> pb.StopContainerResponse:
        rec = self._container_or_none(request.container_id)
        if rec is not None:
            if request.timeout < 0:
                raise InvalidArgument(f"timeout {request.timeout} is negative")
            self.node.engine.stop(rec.id, float(request.timeout))
            self.node.events.publish(rec.id, EV.CONTAINER_STOPPED_EVENT, rec.pod_id or "")
        return pb.StopContainerResponse()

    def RemoveContainer(self, request: pb.RemoveContainerRequest,
                        context: grpc.ServicerContext) -> pb.RemoveContainerResponse:
        rec = self._container_or_none(request.container_id)
        if rec is not None:
            with contextlib.suppress(NotFound):
                self.node.engine.remove(rec.id, force=True)
            self.node.events.publish(rec.id, EV.CONTAINER_DELETED_EVENT, rec.pod_id or "")
        return pb.RemoveContainerResponse()

    def ListContainers(self, request: pb.ListContainersRequest, context: grpc.ServicerContext
                       ) -> pb.ListContainersResponse:
        f = request.filter
        recs = self._list(f.id, f.pod_sandbox_id, dict(f.label_selector))
        if f.HasField("state"):
            recs = [r for r in recs if cri_state(r) == f.state.state]
        return pb.ListContainersResponse(containers=[pb.Container(
            id=r.id, pod_sandbox_id=r.pod_id, metadata=_metadata(r),
            image=pb.ImageSpec(image=_cri(r).get("image", r.image_ref)), image_ref=r.image_id,
            image_id=r.image_id, state=cri_state(r), created_at=r.created_at, labels=r.labels,
            annotations=r.annotations) for r in recs])

    def ContainerStatus(self, request: pb.ContainerStatusRequest,
                        context: grpc.ServicerContext) -> pb.ContainerStatusResponse:
        rec = self.node.container(request.container_id)
        info = {}
        if request.verbose:
            info["info"] = json.dumps(self._info(rec))
        return pb.ContainerStatusResponse(status=self._status(rec), info=info)

    def UpdateContainerResources(self, request: pb.UpdateContainerResourcesRequest,
                                 context: grpc.ServicerContext
                                 ) -> pb.UpdateContainerResourcesResponse:
        rec = self.node.container(request.container_id)
        r = request.linux
        resources = oci_resources(r)
        self.node.engine.update_resources(rec.id, resources)
        cfg = dict(rec.config)
        cfg["cri"] = {**(cfg.get("cri") or {}), "resources": _resources_dict(r)}
        self.node.engine.store.update_container(rec.id, config=cfg)
        self.node.engine.event(rec, "update")
        return pb.UpdateContainerResourcesResponse()

    def ReopenContainerLog(self, request: pb.ReopenContainerLogRequest,
                           context: grpc.ServicerContext) -> pb.ReopenContainerLogResponse:
        rec = self.node.container(request.container_id)
        if rec.state != "running":
            raise FailedPrecondition(f"container {rec.id[:12]} is not running: its log is "
                                     "not open")
        fd = self.node.engine.attach(rec.id, "")
        if fd < 0:
            raise FailedPrecondition(f"container {rec.id[:12]}: its monitor is gone")
        try:
            os.write(fd, frame(b"o"))
        finally:
            os.close(fd)
        return pb.ReopenContainerLogResponse()

    # -- helpers -------------------------------------------------------------------------
    def _container_or_none(self, ref: str) -> ContainerRecord | None:
        if not ref:
            raise InvalidArgument("container id is empty")
        try:
            return self.node.container(ref)
        except NotFound:
            return None  # kubelet retries Stop/Remove: an id already gone is success

    def _list(self, id_ref: str, pod_ref: str, labels: dict[str, str]) -> list[ContainerRecord]:
        flt = ContainerFilter(labels=labels)
        if pod_ref:
            try:
                flt.pod_id = self.node.pods.get(pod_ref).id
            except NotFound:
                return []
        if id_ref:
            try:
                flt.id_prefix = self.node.container(id_ref).id
            except (NotFound, InvalidArgument):
                return []
        ids = self.node.sandbox_ids()
        return [r for r in self.node.engine.list(all=True, filters=flt) if r.pod_id in ids]

    def _status(self, rec: ContainerRecord) -> pb.ContainerStatus:
        state = cri_state(rec)
        ex = self.node.engine.exit_info(rec.id) if state == EXITED else {}
        reason = message = ""
        code = rec.exit_code or 0
        if state == EXITED:
            if ex.get("error"):
                reason, message = "StartError", str(ex["error"])
            elif ex.get("oom_killed") or rec.config.get("oom_killed"):
                reason = "OOMKilled"
            else:
                reason = "Completed" if code == 0 else "Error"
        cri = _cri(rec)
        return pb.ContainerStatus(
            id=rec.id, metadata=_metadata(rec), state=state, created_at=rec.created_at,
            started_at=rec.started_at, finished_at=rec.finished_at if state == EXITED else 0,
            exit_code=code if state == EXITED else 0,
            image=pb.ImageSpec(image=cri.get("image", rec.image_ref)), image_ref=rec.image_id,
            image_id=rec.image_id, reason=reason, message=message, labels=rec.labels,
            annotations=rec.annotations, log_path=rec.log_path,
            mounts=[pb.Mount(container_path=m["container_path"], host_path=m["host_path"],
                             readonly=m["readonly"], propagation=m["propagation"],
                             image=pb.ImageSpec(image=m["image"]) if m.get("image") else None,
                             image_sub_path=m.get("image_sub_path", ""))
                    for m in cri.get("mounts") or []],
            resources=pb.ContainerResources(linux=_resources_pb(cri.get("resources") or {})))

    def _info(self, rec: ContainerRecord) -> dict[str, Any]:
        try:
            with open(os.path.join(self.node.engine.ctr_dir(rec.id), "config.json")) as f:
                spec = json.load(f)
        except (OSError, ValueError):
            spec = {}
        # The CRI handler name the pod was run with (the record keeps the binary's path).
        handler = ""
        with contextlib.suppress(PalletError):
            handler = self.node.pod(rec.pod_id).runtime_handler if rec.pod_id else ""
        return {"sandboxID": rec.pod_id, "pid": rec.pid if rec.state == "running" else 0,
                "runtimeSpec": spec, "runtimeHandler": handler or "pallet",
                "runtimeBinary": rec.runtime_handler or "",
                "state": rec.state, "exit": self.node.engine.exit_info(rec.id),
                "config": {k: v for k, v in rec.config.items() if k != "image_config"},
                "logPath": rec.log_path, "containerDir": self.node.engine.ctr_dir(rec.id)}


def _check_userns(plan: ContainerPlan, pod_spec: dict[str, Any]) -> None:
    """A container runs in its pod's user namespace: its own userns_options, when the
    kubelet sends them, must say the same (containers cannot differ within a pod)."""
    if plan.userns is None:
        return
    uids, gids = plan.userns
    pod_uids = [list(m) for m in pod_spec.get("uid_mappings") or []]
    pod_gids = [list(m) for m in pod_spec.get("gid_mappings") or []]
    if (uids, gids) != (pod_uids, pod_gids):
        def show(maps: list[list[int]]) -> str:
            return ",".join(":".join(map(str, m)) for m in maps) or "none (NODE)"
        raise InvalidArgument(f"container user namespace (uids {show(uids)}, gids "
                              f"{show(gids)}) differs from its pod's (uids {show(pod_uids)}, "
                              f"gids {show(pod_gids)})")


def _cri(rec: ContainerRecord) -> dict[str, Any]:
    return rec.config.get("cri") or {}


def _metadata(rec: ContainerRecord) -> pb.ContainerMetadata:
    cri = _cri(rec)
    return pb.ContainerMetadata(name=cri.get("name", rec.name), attempt=cri.get("attempt", 0))


_RES_FIELDS = ("cpu_period", "cpu_quota", "cpu_shares", "memory_limit_in_bytes",
               "oom_score_adj", "cpuset_cpus", "cpuset_mems", "memory_swap_limit_in_bytes")


def _resources_dict(r: pb.LinuxContainerResources) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(r, k) for k in _RES_FIELDS if getattr(r, k)}
    if r.hugepage_limits:
        out["hugepage_limits"] = {h.page_size: h.limit for h in r.hugepage_limits}
    return out


def _resources_pb(d: dict[str, Any]) -> pb.LinuxContainerResources:
    r = pb.LinuxContainerResources(**{k: v for k, v in d.items() if k in _RES_FIELDS})
    for size, limit in (d.get("hugepage_limits") or {}).items():
        r.hugepage_limits.add(page_size=size, limit=limit)
    return r


def oci_resources(r: pb.LinuxContainerResources) -> dict[str, Any]:
    """The OCI linux.resources an update changes (only what was given)."""
    cpu: dict[str, Any] = {}
    if r.cpu_shares:
        cpu["shares"] = min(max(r.cpu_shares, 2), 262144)
    if r.cpu_quota:
        cpu["quota"] = r.cpu_quota
    if r.cpu_period:
        cpu["period"] = r.cpu_period
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    out: dict[str, Any] = {}
    if cpu:
        out["cpu"] = cpu
    if r.memory_limit_in_bytes < 0:
        raise InvalidArgument(f"memory_limit_in_bytes {r.memory_limit_in_bytes} is negative")
    if r.memory_limit_in_bytes:
        out["memory"] = {"limit": r.memory_limit_in_bytes,
                         "swap": r.memory_swap_limit_in_bytes or r.memory_limit_in_bytes}
    if r.hugepage_limits:
        out["hugepageLimits"] = [{"pageSize": h.page_size, "limit": h.limit}
                                 for h in r.hugepage_limits]
    if r.oom_score_adj:
        clamp_oom_score_adj(r.oom_score_adj)  # validated; applies to new processes only
    return out
