"""CRI pod sandbox RPCs: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus
and ListPodSandbox, as translations onto the engine's Pods.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import grpc
from cri_api.v1 import api_pb2 as pb

from pallet.cri.container_config import pod_spec
from pallet.engine.store import PodFilter, PodRecord
from pallet.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from pallet.cri.node import Node

POD_STATES = {"ready": pb.PodSandboxState.SANDBOX_READY,
              "notready": pb.PodSandboxState.SANDBOX_NOTREADY}
NS_MODE = {"pod": pb.NamespaceMode.POD, "host": pb.NamespaceMode.NODE,
           "container": pb.NamespaceMode.CONTAINER}


class PodSandboxRPCs:
    node: Node

    def RunPodSandbox(self, request: pb.RunPodSandboxRequest, context: grpc.ServicerContext
                      ) -> pb.RunPodSandboxResponse:
        handler = request.runtime_handler
        self.node.runtime_handler(handler)  # an unknown or missing handler fails first
        spec = pod_spec(request.config, handler)
        if spec.userns and not self.node.config.runtime(handler).user_namespaces:
            raise InvalidArgument(f"runtime handler {handler or 'pallet'!r} does not support "
                                  "user namespaces (its user_namespaces feature is off)")
        rec = self.node.pods.run(spec)
        return pb.RunPodSandboxResponse(pod_sandbox_id=rec.id)

    def StopPodSandbox(self, request: pb.StopPodSandboxRequest, context: grpc.ServicerContext
                       ) -> pb.StopPodSandboxResponse:
        pod = self._pod_or_none(request.pod_sandbox_id)
        if pod is not None:
            ids = [c.id for c in self.node.pods.containers(pod.id)]
            self.node.pods.stop(pod.id, timeout=0)
            for cid in ids:
                self.node.events.publish(cid, pb.ContainerEventType.CONTAINER_STOPPED_EVENT,
                                         pod.id)
        return pb.StopPodSandboxResponse()

    def RemovePodSandbox(self, request: pb.RemovePodSandboxRequest,
                         context: grpc.ServicerContext) -> pb.RemovePodSandboxResponse:
        pod = self._pod_or_none(request.pod_sandbox_id)
        if pod is not None:
            ids = [c.id for c in self.node.pods.containers(pod.id)]
            self.node.pods.remove(pod.id)
            for cid in ids:
                self.node.events.publish(cid, pb.ContainerEventType.CONTAINER_DELETED_EVENT,
                                         pod.id)
        return pb.RemovePodSandboxResponse()

    def PodSandboxStatus(self, request: pb.PodSandboxStatusRequest,
                         context: grpc.ServicerContext) -> pb.PodSandboxStatusResponse:
        pod = self.node.pod(request.pod_sandbox_id)
        info = {}
        if request.verbose:
            info["info"] = json.dumps(self._pod_info(pod))
        return pb.PodSandboxStatusResponse(status=pod_status(pod), info=info)

    def ListPodSandbox(self, request: pb.ListPodSandboxRequest, context: grpc.ServicerContext
                       ) -> pb.ListPodSandboxResponse:
        f = request.filter
        flt = PodFilter(labels=dict(f.label_selector))
        if f.HasField("state"):
            flt.states = [k for k, v in POD_STATES.items() if v == f.state.state]
        pods = self._filtered(f.id, flt)
        return pb.ListPodSandboxResponse(items=[pb.PodSandbox(
            id=p.id, metadata=_metadata(p), state=POD_STATES[p.state], created_at=p.created_at,
            labels=p.labels, annotations=p.annotations, runtime_handler=_handler_name(p))
            for p in pods])

    # -- helpers ---------------------------------------------------------------------
    def _pod_or_none(self, ref: str) -> PodRecord | None:
        try:
            return self.node.pod(ref)
        except NotFound:
            return None  # Stop/Remove of a pod that is gone succeed (kubelet retries them)

    def _filtered(self, id_ref: str, flt: PodFilter) -> list[PodRecord]:
        if id_ref:
            try:
                pod = self.node.pods.get(id_ref)
            except NotFound:
                return []
            flt.id_prefix = pod.id
        return self.node.pods.list(flt)

    def _pod_info(self, pod: PodRecord) -> dict:
        cfg = pod.config
        return {"id": pod.id, "name": pod.name, "pid": 0, "runtimeHandler": _handler_name(pod),
                "userns": (cfg.get("namespaces") or {}).get("user", ""),
                "netns": pod.netns_path, "namespaces": cfg.get("namespaces"),
                "network": cfg.get("network"), "ip": cfg.get("ip"),
                "hostname": cfg.get("hostname"), "config": cfg.get("spec"),
                "podDir": self.node.pods.pod_dir(pod.id),
                "containers": [c.id for c in self.node.pods.containers(pod.id)],
                "image": "", "sandboxKind": "pause-less (pinned namespaces)"}


def _metadata(pod: PodRecord) -> pb.PodSandboxMetadata:
    s = pod.config.get("spec") or {}
    return pb.PodSandboxMetadata(name=s.get("name", ""), uid=s.get("uid", ""),
                                 namespace=s.get("namespace", ""), attempt=s.get("attempt", 0))


def _handler_name(pod: PodRecord) -> str:
    return pod.runtime_handler


def pod_status(pod: PodRecord) -> pb.PodSandboxStatus:
    cfg = pod.config
    s = cfg.get("spec") or {}
    ns = cfg.get("namespaces") or {}
    opts = pb.NamespaceOption(
        network=pb.NamespaceMode.NODE if ns.get("network") == "host" else pb.NamespaceMode.POD,
        ipc=pb.NamespaceMode.NODE if ns.get("ipc") == "host" else pb.NamespaceMode.POD,
        pid=NS_MODE.get(s.get("pid", "container"), pb.NamespaceMode.CONTAINER))
    if s.get("uid_mappings"):
        opts.userns_options.mode = pb.NamespaceMode.POD
        for field_, maps in (("uids", s.get("uid_mappings")), ("gids", s.get("gid_mappings"))):
            for c, h, n in maps or []:
                getattr(opts.userns_options, field_).add(container_id=c, host_id=h, length=n)
    ip = cfg.get("ip", "") if pod.state == "ready" else ""
    return pb.PodSandboxStatus(
        id=pod.id, metadata=_metadata(pod), state=POD_STATES[pod.state],
        created_at=pod.created_at, network=pb.PodSandboxNetworkStatus(ip=ip),
        linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=opts)),
        labels=pod.labels, annotations=pod.annotations, runtime_handler=_handler_name(pod))
