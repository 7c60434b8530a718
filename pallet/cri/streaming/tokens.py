"""One-shot URLs: a random token per Exec/Attach/PortForward request, valid for a short
time and for one connection, like the kubelet streaming library's request cache.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from pallet.cri.errors import ResourceExhausted

T = TypeVar("T")
MAX_IN_FLIGHT = 1000  # kubelet's limit: unused URLs cannot grow memory without bound


class RequestCache(Generic[T]):
    def __init__(self, ttl: float = 60.0, max_in_flight: int = MAX_IN_FLIGHT,
                 clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()  # oldest first

    def insert(self, request: T) -> str:
        with self._lock:
            self._expire()
            if len(self._items) >= self.max_in_flight:
                raise ResourceExhausted(f"{len(self._items)} streaming URLs are waiting to be "
                                      f"used; try again in {int(self.ttl)} s")
            # 128 bits, URL-safe: tokens are the only credential these URLs carry.
            token = secrets.token_urlsafe(16)
            self._items[token] = (self._clock() + self.ttl, request)
            return token

    def consume(self, token: str) -> T | None:
        """The request for token, once; None when unknown, used or expired."""
        with self._lock:
            self._expire()
            item = self._items.pop(token, None)
            return item[1] if item else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _expire(self) -> None:
        now = self._clock()
        while self._items:
            token, (deadline, _) = next(iter(self._items.items()))
            if deadline > now:
                break
            del self._items[token]
