"""Functions the spawner tests ask the spawner to run (importable by module:function)."""

from __future__ import annotations

import os
import threading
import time

from pallet.errors import NotFound


def whoami() -> dict:
    return {"pid": os.getpid(), "ppid": os.getppid(), "threads": threading.active_count()}


def echo(**kwargs: object) -> object:
    return kwargs


def fail_not_found(name: str) -> None:
    raise NotFound(f"container {name!r} not found")


def fail_type() -> None:
    raise TypeError("not a pallet error")


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def interval(seconds: float) -> list[float]:
    """Sleep; return when this worker began and ended (CLOCK_MONOTONIC, system-wide)."""
    begin = time.monotonic()
    time.sleep(seconds)
    return [begin, time.monotonic()]


def die() -> None:
    os._exit(9)


def write_fds(text: str, fds: list[int]) -> int:
    for fd in fds:
        os.write(fd, text.encode())
    return len(fds)


def not_json() -> object:
    return {1, 2}
