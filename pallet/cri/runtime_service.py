"""CRI v1 RuntimeService: Version, Status, RuntimeConfig, UpdateRuntimeConfig and the
streaming URLs (Exec/Attach/PortForward) now; pod and container RPCs once the engine lands.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import grpc
from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as pb_grpc

from pallet import __version__
from pallet.config import Config
from pallet.cri.errors import Unimplemented
from pallet.cri.streaming.backend import AttachRequest, ExecRequest, PortForwardRequest
from pallet.cri.streaming.server import StreamingServer
from pallet.errors import InvalidArgument

RUNTIME_NAME = "pallet"
RUNTIME_API_VERSION = "v1"
KUBE_API_VERSION = "0.1.0"  # what CRI's VersionResponse.version means: the kubelet API version
CNI_EXTENSIONS = (".conf", ".conflist", ".json")
POD_CIDR_FILE = "pod-cidr"  # under state_dir; the engine's CNI setup reads it


def engine_pending(rpc: str) -> Unimplemented:
    return Unimplemented(f"{rpc} is not implemented yet: it needs pallet's engine "
                         f"(pods and containers), which has not landed in this build")


class RuntimeService(pb_grpc.RuntimeServiceServicer):
    def __init__(self, config: Config, streaming: StreamingServer):
        self.config = config
        self.streaming = streaming
        self.pod_cidr = self._read_pod_cidr()

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
        return pb.UpdateRuntimeConfigResponse()

    def Exec(self, request: pb.ExecRequest, context: grpc.ServicerContext) -> pb.ExecResponse:
        url = self.streaming.exec_url(ExecRequest(
            request.container_id, tuple(request.cmd), request.tty, request.stdin,
            request.stdout, request.stderr))
        return pb.ExecResponse(url=url)

    def Attach(self, request: pb.AttachRequest, context: grpc.ServicerContext
               ) -> pb.AttachResponse:
        url = self.streaming.attach_url(AttachRequest(
            request.container_id, request.tty, request.stdin, request.stdout, request.stderr))
        return pb.AttachResponse(url=url)

    def PortForward(self, request: pb.PortForwardRequest, context: grpc.ServicerContext
                    ) -> pb.PortForwardResponse:
        url = self.streaming.port_forward_url(PortForwardRequest(
            request.pod_sandbox_id, tuple(request.port)))
        return pb.PortForwardResponse(url=url)

    # -- waiting for the engine ----------------------------------------------------------
    def RunPodSandbox(self, request, context):  # noqa: ANN001, ANN201 - see engine_pending
        raise engine_pending("RunPodSandbox")

    def StopPodSandbox(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("StopPodSandbox")

    def RemovePodSandbox(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("RemovePodSandbox")

    def PodSandboxStatus(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("PodSandboxStatus")

    def ListPodSandbox(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("ListPodSandbox")

    def CreateContainer(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("CreateContainer")

    def StartContainer(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("StartContainer")

    def StopContainer(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("StopContainer")

    def RemoveContainer(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("RemoveContainer")

    def ListContainers(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("ListContainers")

    def ContainerStatus(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("ContainerStatus")

    def UpdateContainerResources(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("UpdateContainerResources")

    def ReopenContainerLog(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("ReopenContainerLog")

    def ExecSync(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("ExecSync")

    def ContainerStats(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("ContainerStats")

    def ListContainerStats(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("ListContainerStats")

    def PodSandboxStats(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("PodSandboxStats")

    def ListPodSandboxStats(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("ListPodSandboxStats")

    def GetContainerEvents(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("GetContainerEvents")

    def ListMetricDescriptors(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("ListMetricDescriptors")

    def ListPodSandboxMetrics(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("ListPodSandboxMetrics")

    def UpdatePodSandboxResources(self, request, context):  # noqa: ANN001, ANN201
        raise engine_pending("UpdatePodSandboxResources")

    def CheckpointContainer(self, request, context):  # noqa: ANN001, ANN201
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
        conf_dir = self.config.cni.conf_dir
        try:
            found = [n for n in os.listdir(conf_dir) if n.endswith(CNI_EXTENSIONS)]
        except OSError:
            found = []
        if found:
            return True, "", ""
        return False, "NetworkPluginNotReady", f"no CNI network config in {conf_dir}"

    def _read_pod_cidr(self) -> str:
        try:
            return (Path(self.config.state_dir) / POD_CIDR_FILE).read_text().strip()
        except OSError:
            return ""
