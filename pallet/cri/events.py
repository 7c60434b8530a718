"""GetContainerEvents: container lifecycle events for the kubelet's evented PLEG, from the
RPCs that cause them and from a poller that notices containers exiting on their own.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
from cri_api.v1 import api_pb2 as pb

from pallet.cri.errors import ResourceExhausted
from pallet.errors import PalletError

if TYPE_CHECKING:
    from pallet.cri.node import Node

log = logging.getLogger("pallet.cri")

MAX_SUBSCRIBERS = 8  # each stream holds a gRPC thread; more would starve the other RPCs
QUEUE_SIZE = 1024  # events a slow subscriber may lag behind before it loses some
POLL_INTERVAL = 1.0  # s between looks for containers that exited by themselves

CREATED = pb.ContainerEventType.CONTAINER_CREATED_EVENT
STARTED = pb.ContainerEventType.CONTAINER_STARTED_EVENT
STOPPED = pb.ContainerEventType.CONTAINER_STOPPED_EVENT
DELETED = pb.ContainerEventType.CONTAINER_DELETED_EVENT


class EventBus:
    """Fan-out of events to at most MAX_SUBSCRIBERS bounded queues. The poller thread runs
    only while someone subscribes, so an idle daemon does no periodic work."""

    def __init__(self, node: Node):
        self.node = node
        self._lock = threading.Lock()
        self._subs: list[queue.Queue[pb.ContainerEventResponse]] = []
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._running: set[str] = set()

    def publish(self, container_id: str, kind: int, pod_id: str = "") -> None:
        with self._lock:
            if not self._subs:
                return
            subs = list(self._subs)
        ev = pb.ContainerEventResponse(container_id=container_id, container_event_type=kind,
                                       created_at=time.time_ns())
        if pod_id:
            ev.pod_sandbox_status.id = pod_id
        for q in subs:
            try:
                q.put_nowait(ev)
            except queue.Full:
                pass  # a stalled subscriber loses events rather than stalling the daemon
        if kind == STARTED:
            self._running.add(container_id)
        elif kind in (STOPPED, DELETED):
            self._running.discard(container_id)

    def subscribe(self, context: grpc.ServicerContext) -> Iterator[pb.ContainerEventResponse]:
        q: queue.Queue[pb.ContainerEventResponse] = queue.Queue(QUEUE_SIZE)
        with self._lock:
            if len(self._subs) >= MAX_SUBSCRIBERS:
                raise ResourceExhausted(f"at most {MAX_SUBSCRIBERS} GetContainerEvents streams "
                                        "at once; close one and retry")
            self._subs.append(q)
            if self._poller is None:
                self._running = {c.id for c in self._containers() if c.state == "running"}
                self._stop.clear()
                self._poller = threading.Thread(target=self._poll, name="cri-events",
                                                daemon=True)
                self._poller.start()
        try:
            while context.is_active() and not self._stop.is_set():
                try:
                    yield q.get(timeout=0.5)
                except queue.Empty:
                    continue
        finally:
            with self._lock:
                self._subs.remove(q)

    def _containers(self) -> list:
        ids = self.node.sandbox_ids()
        return [c for c in self.node.engine.list(all=True) if c.pod_id in ids]

    def _poll(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):
            with self._lock:
                if not self._subs:
                    self._poller = None
                    return
            try:
                now = {c.id: c for c in self._containers()}
            except (PalletError, OSError) as e:
                log.warning("event poller: %s", e)
                continue
            for cid in list(self._running):
                c = now.get(cid)
                if c is None or c.state != "running":
                    self.publish(cid, STOPPED if c else DELETED, (c.pod_id or "") if c else "")

    def close(self) -> None:
        self._stop.set()
