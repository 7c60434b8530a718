"""Per-container state directory: state.json, the start socket, and a lock.

The state dir lives under the runtime root (runc's default /run/runc; ours
/run/pallet-runc); status is derived from the process, never trusted from disk.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from pallet.errors import AlreadyExists, NotFound
from pallet.oci.spec import validate_id

DEFAULT_ROOT = "/run/pallet-runc"
START_SOCKET = "start.sock"


@dataclass
class ContainerState:
    id: str
    bundle: str
    pid: int = 0
    pid_start: int = 0          # /proc/<pid>/stat starttime, guards against pid reuse
    created: str = ""
    rootfs: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    cgroup_paths: dict[str, str] = field(default_factory=dict)
    cgroups_path: str | None = None
    owner: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # the spec at create time
    status: str = "creating"   # only a hint; status() computes the truth

    def oci(self, status: str) -> dict[str, Any]:
        out: dict[str, Any] = {"ociVersion": "1.0.2", "id": self.id, "status": status,
                               "pid": self.pid if status != "stopped" else 0,
                               "bundle": self.bundle, "rootfs": self.rootfs,
                               "created": self.created, "owner": self.owner}
        if self.annotations:
            out["annotations"] = self.annotations
        return out


class StateDir:
    def __init__(self, root: str, container_id: str):
        validate_id(container_id)
        self.root = root
        self.id = container_id
        self.path = os.path.join(root, container_id)

    @property
    def start_socket(self) -> str:
        return os.path.join(self.path, START_SOCKET)

    def create(self) -> None:
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        try:
            os.mkdir(self.path, 0o711)
        except FileExistsError:
            raise AlreadyExists(f"container with id exists: {self.id}") from None

    def exists(self) -> bool:
        return os.path.isfile(os.path.join(self.path, "state.json"))

    def load(self) -> ContainerState:
        try:
            with open(os.path.join(self.path, "state.json")) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise NotFound(f"container does not exist: {self.id}") from None
        return ContainerState(**data)

    def save(self, st: ContainerState) -> None:
        tmp = os.path.join(self.path, ".state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(st), f)
        os.rename(tmp, os.path.join(self.path, "state.json"))

    def remove(self) -> None:
        for name in os.listdir(self.path) if os.path.isdir(self.path) else []:
            try:
                os.unlink(os.path.join(self.path, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass

    @contextmanager
    def lock(self) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def list_ids(root: str) -> list[str]:
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [n for n in names if os.path.isfile(os.path.join(root, n, "state.json"))]


def proc_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat, or 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return 0  # a zombie has exited; it only waits to be reaped
    return int(fields[19])


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"
