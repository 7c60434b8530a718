"""The CRI v1 gRPC server on a unix socket: RuntimeService and ImageService behind one
error-mapping interceptor, plus the streaming server their Exec/Attach/PortForward use.
"""

from __future__ import annotations

import contextlib
import grp
import importlib
import logging
import os
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import grpc
from cri_api.v1 import api_pb2_grpc as pb_grpc

from pallet.config import Config
from pallet.cri.errors import ErrorMapping
from pallet.cri.exec import EngineStreamBackend
from pallet.cri.image_service import ImageService
from pallet.cri.node import Node
from pallet.cri.runtime_service import RuntimeService
from pallet.cri.streaming.backend import StreamBackend
from pallet.cri.streaming.server import StreamingServer
from pallet.errors import AlreadyExists, FailedPrecondition, InvalidArgument, SystemFailure

if TYPE_CHECKING:
    from pallet.cri.spawner import Spawner

log = logging.getLogger("pallet.cri")

MAX_MESSAGE = 16 << 20  # kubelet's CRI client limit; big ListContainers answers fit


class CRIServer:
    """Owns the gRPC server, the streaming server and the socket file; `stop` releases all."""

    def __init__(self, config: Config, spawner: Spawner | None = None,
                 backend: StreamBackend | None = None):
        self.config = config
        self.spawner = spawner
        self.node = Node(config, spawner)
        self.backend = backend or load_backend(config, spawner, self.node)
        self.streaming = StreamingServer(
            self.backend, config.stream.address, config.stream.port,
            token_ttl=config.stream.token_ttl, idle_timeout=config.stream.idle_timeout,
            max_sessions=config.stream.max_sessions)
        self._grpc: grpc.Server | None = None
        self._socket_inode: tuple[int, int] | None = None

    def start(self) -> None:
        cfg = self.config
        for d in (cfg.root, cfg.state_dir):
            os.makedirs(d, mode=0o711, exist_ok=True)
        images = ImageService(cfg, spawner=self.spawner)
        self.node.reconcile()
        self.streaming.start()
        try:
            runtime = RuntimeService(cfg, self.streaming, self.node)
            server = grpc.server(
                ThreadPoolExecutor(max_workers=cfg.grpc_max_workers, thread_name_prefix="cri"),
                interceptors=[ErrorMapping()],
                options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                         ("grpc.max_send_message_length", MAX_MESSAGE),
                         ("grpc.so_reuseport", 0)],
                # More in flight than threads queue briefly; past this they get RESOURCE_EXHAUSTED.
                maximum_concurrent_rpcs=cfg.grpc_max_workers * 4,
            )
            pb_grpc.add_RuntimeServiceServicer_to_server(runtime, server)
            pb_grpc.add_ImageServiceServicer_to_server(images, server)
            self._bind(server)
            server.start()
            self._grpc = server
        except BaseException:
            self.streaming.stop()
            raise
        log.info("pallet CRI listening on unix://%s, streaming on %s",
                 cfg.socket.path, self.streaming.base_url)

    def _bind(self, server: grpc.Server) -> None:
        path = self.config.socket.path
        os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
        remove_stale_socket(path)
        # Born 0600, then widened to the configured mode: never briefly more open than asked.
        old = os.umask(0o177)
        try:
            if not server.add_insecure_port(f"unix:{path}"):
                raise SystemFailure(f"cannot listen on unix socket {path}")
        except RuntimeError as e:
            raise SystemFailure(f"cannot listen on unix socket {path}: {e}") from None
        finally:
            os.umask(old)
        if self.config.socket.group:
            os.chown(path, -1, _gid(self.config.socket.group))
        os.chmod(path, self.config.socket.mode)
        st = os.stat(path)
        self._socket_inode = (st.st_dev, st.st_ino)

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._grpc and self._grpc.wait_for_termination(timeout))

    def stop(self, grace: float = 5.0) -> None:
        """Refuse new RPCs, let running ones finish for `grace` s, close streams, unlink."""
        if self._grpc:
            self._grpc.stop(grace).wait(grace + 1)
            self._grpc = None
        self.streaming.stop()
        self.node.close()
        path = self.config.socket.path
        # Only our own socket: a newer daemon may already have replaced the file.
        with contextlib.suppress(OSError):
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == self._socket_inode:
                os.unlink(path)


def remove_stale_socket(path: str) -> None:
    """Unlink a socket nobody listens on; refuse to touch a live one or a non-socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FailedPrecondition(f"{path} exists and is not a socket; remove it or choose "
                                 f"another socket.path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # left by a daemon that died: stale
        return
    except OSError as e:
        raise FailedPrecondition(f"cannot check socket {path}: {e.strerror}") from None
    finally:
        probe.close()
    raise AlreadyExists(f"another daemon is listening on {path}; stop it or choose another "
                        f"socket.path")


def load_backend(config: Config, spawner: Spawner | None, node: Node) -> StreamBackend:
    """The exec/attach backend named by stream.backend ("module:factory"), else the engine's."""
    target = config.stream.backend
    if not target:
        return EngineStreamBackend(node)
    module, _, name = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise InvalidArgument(f"config key 'stream.backend': cannot load {target!r}: {e}") from None
    return factory(config=config, spawner=spawner)


def _gid(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise InvalidArgument(f"config key 'socket.group': no group {group!r}") from None
