"""CRI ExecSync, Exec, Attach and PortForward, and the engine-backed StreamBackend that
serves the streaming URLs: exec through the spawner, attach through the monitor's socket.
"""

from __future__ import annotations

import base64
import contextlib
import os
import select
import socket
import threading
from typing import TYPE_CHECKING, BinaryIO

import grpc
from cri_api.v1 import api_pb2 as pb

from pallet.cri.streaming.backend import (
    AttachRequest,
    ExecRequest,
    PortForwardRequest,
    ResizeQueue,
)
from pallet.engine import monitor, netns
from pallet.errors import FailedPrecondition, InvalidArgument, NotFound

if TYPE_CHECKING:
    from pallet.cri.node import Node
    from pallet.cri.streaming.server import StreamingServer

# Bytes kept of stdout and of stderr each: both together fit a client's default 4 MiB gRPC
# message limit (kubelet allows 16), and a chatty command cannot make the daemon grow.
EXEC_SYNC_LIMIT = (2 << 20) - (32 << 10)
MAX_EXEC_SYNC_TIMEOUT = 24 * 3600


class ExecRPCs:
    node: Node
    streaming: StreamingServer

    def ExecSync(self, request: pb.ExecSyncRequest, context: grpc.ServicerContext
                 ) -> pb.ExecSyncResponse:
        rec = self.node.container(request.container_id)
        if not request.cmd:
            raise InvalidArgument("ExecSync needs a command (cmd is empty)")
        if not 0 <= request.timeout <= MAX_EXEC_SYNC_TIMEOUT:
            raise InvalidArgument(f"timeout {request.timeout} s out of range")
        if rec.state != "running":
            raise FailedPrecondition(f"container {rec.id[:12]} is not running")
        out = self.node.call("pallet.cri.workers:exec_sync", {
            "id": rec.id, "cmd": list(request.cmd), "timeout": request.timeout,
            "limit": EXEC_SYNC_LIMIT})
        return pb.ExecSyncResponse(stdout=base64.b64decode(out["stdout"]),
                                   stderr=base64.b64decode(out["stderr"]),
                                   exit_code=out["exit_code"])

    def Exec(self, request: pb.ExecRequest, context: grpc.ServicerContext) -> pb.ExecResponse:
        if not request.cmd:
            raise InvalidArgument("Exec needs a command (cmd is empty)")
        if not (request.stdin or request.stdout or request.stderr):
            raise InvalidArgument("one of stdin, stdout or stderr must be true")
        if request.tty and request.stderr:
            raise InvalidArgument("tty and stderr cannot both be true")
        url = self.streaming.exec_url(ExecRequest(
            request.container_id, tuple(request.cmd), request.tty, request.stdin,
            request.stdout, request.stderr))
        return pb.ExecResponse(url=url)

    def Attach(self, request: pb.AttachRequest, context: grpc.ServicerContext
               ) -> pb.AttachResponse:
        if not (request.stdin or request.stdout or request.stderr):
            raise InvalidArgument("one of stdin, stdout or stderr must be true")
        url = self.streaming.attach_url(AttachRequest(
            request.container_id, request.tty, request.stdin, request.stdout, request.stderr))
        return pb.AttachResponse(url=url)

    def PortForward(self, request: pb.PortForwardRequest, context: grpc.ServicerContext
                    ) -> pb.PortForwardResponse:
        for p in request.port:
            if not 0 < p < 65536:
                raise InvalidArgument(f"port {p} out of range")
        url = self.streaming.port_forward_url(PortForwardRequest(
            request.pod_sandbox_id, tuple(request.port)))
        return pb.PortForwardResponse(url=url)


class EngineStreamBackend:
    """Exec, attach and port-forward on the engine's containers and pods."""

    def __init__(self, node: Node):
        self.node = node

    def check_container(self, container_id: str) -> None:
        rec = self.node.container(container_id)
        if rec.state != "running":
            raise FailedPrecondition(f"container {rec.id[:12]} is not running")

    def check_pod(self, pod_sandbox_id: str) -> None:
        pod = self.node.pod(pod_sandbox_id)
        if pod.state != "ready":
            raise FailedPrecondition(f"pod sandbox {pod.id[:12]} is not ready")

    def exec(self, container_id: str, cmd: list[str], tty: bool, stdin: BinaryIO | None,
             stdout: BinaryIO | None, stderr: BinaryIO | None,
             resize_queue: ResizeQueue | None) -> int:
        self.check_container(container_id)
        rec = self.node.container(container_id)
        target = "pallet.cri.workers:exec_process"
        kw = {"id": rec.id, "cmd": list(cmd), "tty": tty}
        if not tty:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            try:
                fds = [s.fileno() if s is not None else null for s in (stdin, stdout, stderr)]
                return int(self.node.call(target, kw, fds=fds))
            finally:
                os.close(null)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        box: dict[str, object] = {}

        def run() -> None:
            try:
                box["code"] = self.node.call(target, kw, fds=[theirs.fileno()])
            except BaseException as e:  # handed to the session thread below
                box["error"] = e
            finally:
                ours.shutdown(socket.SHUT_RDWR)

        t = threading.Thread(target=run, name="cri-exec-tty", daemon=True)
        t.start()
        try:
            ours.settimeout(60)
            try:
                _, fds, _, _ = socket.recv_fds(ours, 16, 1)
            except OSError:
                fds = []
            theirs.close()
            if fds:
                _pump_terminal(fds[0], stdin, stdout, resize_queue)
            t.join()
        finally:
            ours.close()
            with contextlib.suppress(OSError):
                theirs.close()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return int(box["code"])  # type: ignore[call-overload]

    def attach(self, container_id: str, tty: bool, stdin: BinaryIO | None,
               stdout: BinaryIO | None, stderr: BinaryIO | None,
               resize_queue: ResizeQueue | None,
               client_gone: threading.Event | None = None) -> None:
        rec = self.node.container(container_id)
        streams = ",".join(n for n, s in (("stdin", stdin), ("stdout", stdout),
                                          ("stderr", stderr)) if s is not None)
        fd = self.node.engine.attach(rec.id, streams)
        if fd < 0:
            raise FailedPrecondition(f"container {rec.id[:12]} is not running")
        sock = socket.socket(fileno=fd)
        done = threading.Event()
        feeders = []
        if stdin is not None:
            # The client's end of stdin closes the container's only with stdin_once (as
            # containerd): otherwise a later attach can still write to it.
            once = bool((rec.config.get("cri") or {}).get("stdin_once"))
            feeders.append(threading.Thread(target=_feed_stdin, args=(sock, stdin, done, once),
                                            daemon=True))
        if resize_queue is not None and tty:
            feeders.append(threading.Thread(target=_feed_resize, args=(sock, resize_queue, done),
                                            daemon=True))
        for t in feeders:
            t.start()
        try:
            buf = bytearray()
            while True:
                # Wake now and then to notice a client that left while the container is
                # silent; otherwise this session would last as long as the container.
                if client_gone is not None and not select.select([sock], [], [], 0.5)[0]:
                    if client_gone.is_set():
                        return
                    continue
                data = sock.recv(65536)
                if not data:
                    break
                buf += data
                for kind, payload in monitor.parse_frames(buf):
                    out = stdout if kind == b"1" else stderr if kind == b"2" else None
                    if out is not None:
                        out.write(payload)
                        out.flush()
                    if kind == b"x":
                        return
        finally:
            done.set()
            sock.close()

    def port_forward(self, pod_sandbox_id: str, port: int, stream: BinaryIO) -> None:
        pod = self.node.pod(pod_sandbox_id)
        path = (pod.config.get("namespaces") or {}).get("network", "")
        if path == "host":
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        elif path and netns.is_netns(path):
            conn = netns.run_in(path, lambda: socket.create_connection(("127.0.0.1", port),
                                                                        timeout=10))
        else:
            raise NotFound(f"pod sandbox {pod.id[:12]} has no network namespace")
        with conn:
            conn.settimeout(None)
            _splice(conn, stream)


def _feed_stdin(sock: socket.socket, stdin: BinaryIO, done: threading.Event,
                close_on_eof: bool = True) -> None:
    with contextlib.suppress(OSError, ValueError):
        while not done.is_set():
            data = os.read(stdin.fileno(), 65536)
            if not data:
                if close_on_eof:
                    sock.sendall(monitor.frame(b"e"))
                return
            sock.sendall(monitor.frame(b"i", data))


def _feed_resize(sock: socket.socket, q: ResizeQueue, done: threading.Event) -> None:
    with contextlib.suppress(OSError):
        while not done.is_set():
            size = q.get(timeout=1.0)
            if size is None:
                continue
            sock.sendall(monitor.frame(b"r", f"{size.height} {size.width}".encode()))


def _pump_terminal(master: int, stdin: BinaryIO | None, stdout: BinaryIO | None,
                   resize_queue: ResizeQueue | None) -> None:
    """Copy between the exec's pty master and the session until the pty closes."""
    from pallet.oci.linux import console

    done = threading.Event()

    def resizes() -> None:
        while not done.is_set() and resize_queue is not None:
            size = resize_queue.get(timeout=0.5)
            if size is not None:
                with contextlib.suppress(OSError):
                    console.set_winsize(master, size.height, size.width)

    def feed() -> None:
        with contextlib.suppress(OSError, ValueError):
            while not done.is_set() and stdin is not None:
                data = os.read(stdin.fileno(), 65536)
                if not data:
                    os.write(master, b"\x04")  # EOF for the terminal's line discipline
                    return
                os.write(master, data)

    threads = [threading.Thread(target=f, daemon=True) for f in (resizes, feed)]
    for t in threads:
        t.start()
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break  # EIO: the last process holding the terminal is gone
            if not data:
                break
            if stdout is not None:
                stdout.write(data)
                stdout.flush()
    finally:
        done.set()
        os.close(master)


def _splice(conn: socket.socket, stream: BinaryIO) -> None:
    sfd = stream.fileno()
    cfd = conn.fileno()
    open_in = open_out = True
    while open_in or open_out:
        ready = select.select([fd for fd, on in ((sfd, open_in), (cfd, open_out)) if on],
                              [], [])[0]
        if sfd in ready:
            data = os.read(sfd, 65536)
            if not data:
                open_in = False
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_WR)
            else:
                conn.sendall(data)
        if cfd in ready:
            data = conn.recv(65536)
            if not data:
                open_out = False
                return
            stream.write(data)
            stream.flush()

