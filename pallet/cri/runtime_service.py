"""CRI v1 RuntimeService: Version, Status, RuntimeConfig, UpdateRuntimeConfig, events and
checkpoint here; each group of pod, container, exec and stats RPCs in a file of its own.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as pb_grpc

from pallet import __version__
from pallet.config import Config
from pallet.cri.containers import ContainerRPCs
from pallet.cri.errors import Unimplemented
from pallet.cri.exec import ExecRPCs
from pallet.cri.node import Node
from pallet.cri.pods import PodSandboxRPCs
from pallet.cri.stats import StatsRPCs
from pallet.cri.streaming.server import StreamingServer
from pallet.errors import InvalidArgument

RUNTIME_NAME = "pallet"
RUNTIME_API_VERSION = "v1"
KUBE_API_VERSION = "0.1.0"  # what CRI's VersionResponse.version means: the kubelet API version
CNI_EXTENSIONS = (".conf", ".conflist", ".json")
POD_CIDR_FILE = "pod-cidr"  # under state_dir; the engine's CNI setup reads it


class RuntimeService(PodSandboxRPCs, ContainerRPCs, ExecRPCs, StatsRPCs,
                     pb_grpc.RuntimeServiceServicer):
    def __init__(self, config: Config, streaming: StreamingServer, node: Node):
        self.config = config
        self.streaming = streaming
        self.node = node
        self.pod_cidr = self._read_pod_cidr()
        self._init_stats()

    # -- implemented ------------------------------------------------------------
    def Version(self, request: pb.VersionRequest, context: grpc.ServicerContext
                ) -> pb.VersionResponse:
        return pb.VersionResponse(version=KUBE_API_VERSION, runtime_name=RUNTIME_NAME,
                                  runtime_version=__version__,
                                  runtime_api_version=RUNTIME_API_VERSION)

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext
               ) -> pb.StatusResponse:
        net_ok, net_reason, net_msg = self._network_ready()
        status = pb.RuntimeStatus(conditions=[
            pb.RuntimeCondition(type="RuntimeReady", status=True),
            pb.RuntimeCondition(type="NetworkReady", status=net_ok, reason=net_reason,
                                message=net_msg),
        ])
        info = {}
        if request.verbose:
            info["config"] = json.dumps(self.config.to_dict())
            info["streamServer"] = self.streaming.base_url
            info["podCIDR"] = self.pod_cidr
        return pb.StatusResponse(status=status, info=info, runtime_handlers=self._handlers(),
                                 features=pb.RuntimeFeatures(supplemental_groups_policy=False))

    def RuntimeConfig(self, request: pb.RuntimeConfigRequest, context: grpc.ServicerContext
                      ) -> pb.RuntimeConfigResponse:
        driver = pb.CgroupDriver.SYSTEMD if self.config.cgroup_driver == "systemd" \
            else pb.CgroupDriver.CGROUPFS
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver))

    def UpdateRuntimeConfig(self, request: pb.UpdateRuntimeConfigRequest,
                            context: grpc.ServicerContext) -> pb.UpdateRuntimeConfigResponse:
        cidr = request.runtime_config.network_config.pod_cidr
        if not cidr:
            return pb.UpdateRuntimeConfigResponse()  # kubelet sends empty updates; no-op
        # Dual-stack clusters send "v4cidr,v6cidr".
        for part in cidr.split(","):
            try:
                ipaddress.ip_network(part.strip(), strict=False)
            except ValueError:
                raise InvalidArgument(
                    f"runtime_config.network_config.pod_cidr {cidr!r}: {part.strip()!r} "
                    f"is not a CIDR") from None
        self.pod_cidr = cidr
        path = Path(self.config.state_dir) / POD_CIDR_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(cidr + "\n")
        os.replace(tmp, path)
        v4 = [p.strip() for p in cidr.split(",") if ":" not in p]
        if v4 and self.node.networks is not None:
            # Pods on pallet's default network get addresses from it from now on; a CNI
            # conflist in cni.conf_dir keeps its own subnet (as containerd's template-less).
            self.node.networks.default_subnet = str(ipaddress.ip_network(v4[0], strict=False))
        return pb.UpdateRuntimeConfigResponse()

    def GetContainerEvents(self, request: pb.GetEventsRequest, context: grpc.ServicerContext
                           ) -> Iterator[pb.ContainerEventResponse]:
        yield from self.node.events.subscribe(context)

    def UpdatePodSandboxResources(self, request: pb.UpdatePodSandboxResourcesRequest,
                                  context: grpc.ServicerContext
                                  ) -> pb.UpdatePodSandboxResourcesResponse:
        # The kubelet owns the pod-level cgroup (cgroup_parent); pallet has no sandbox
        # container whose resources it would change.
        self.node.pod(request.pod_sandbox_id)
        return pb.UpdatePodSandboxResourcesResponse()

    def CheckpointContainer(self, request: pb.CheckpointContainerRequest,
                            context: grpc.ServicerContext) -> pb.CheckpointContainerResponse:
        raise Unimplemented("CheckpointContainer is not supported by pallet")

    # -- helpers -----------------------------------------------------------------
    def _handlers(self) -> list[pb.RuntimeHandler]:
        out = []
        default = self.config.runtime()
        # containerd's convention: the default handler is also listed under the empty name.
        for name, h in [("", default), *self.config.runtimes.items()]:
            if h.type == "binary" and not os.access(h.path, os.X_OK):
                continue  # configured but not installed: kubelet must not pick it
            out.append(pb.RuntimeHandler(name=name, features=pb.RuntimeHandlerFeatures(
                recursive_read_only_mounts=h.recursive_read_only_mounts,
                user_namespaces=h.user_namespaces)))
        return out

    def _network_ready(self) -> tuple[bool, str, str]:
        nets = self.node.networks
        if nets is None:
            return False, "NetworkPluginNotReady", "pallet's CNI support is not installed"
        ok, message = nets.network_ready()
        if ok:
            return True, "", ""
        return False, "NetworkPluginNotReady", (
            f"{message} (networks come from {self.config.cni.conf_dir} or pallet's default)")

    def _read_pod_cidr(self) -> str:
        try:
            return (Path(self.config.state_dir) / POD_CIDR_FILE).read_text().strip()
        except OSError:
            return ""
