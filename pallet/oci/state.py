"""Per-container state directory under the runtime root (runc's default /run/runc; ours
/run/pallet-runc). Status is derived from the process, never trusted from disk.

    state.json   what ContainerState holds (written whole, then renamed into place)
    exec.fifo    the start fifo: the init, created, blocks reading it; `start` writes a byte
    started      made (O_EXCL) by the `start` that released the init: the container is no
                 longer "created"
    fastpath     "PID STARTTIME" of the init, then one cgroup directory a line: all that
                 bin/pallet-runc's sh fast paths for `start` and `delete` need. Only when
                 those commands have nothing else to do (no poststart or poststop hooks,
                 no rootfs mounts in the host's namespace).
"""

from __future__ import annotations

import os
import time

from pallet.errors import AlreadyExists, NotFound, SpecError
from pallet.oci import jsonlite

TYPE_CHECKING = False  # keep typing (and dataclasses, contextlib) off pallet-runc's start-up path
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ROOT = "/run/pallet-runc"
START_FIFO = "exec.fifo"
STARTED = "started"
FASTPATH = "fastpath"
# Container ids name state dirs (so here, not in spec: start and delete need no spec).
# ASCII letters and digits, "_", "+", "-" and "." (not re: it costs pallet-runc ~6 ms to import).
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-.")


def validate_id(container_id: str) -> None:
    if not container_id:
        raise SpecError("container id cannot be empty")
    if container_id in (".", "..") or not set(container_id) <= _ID_CHARS:
        raise SpecError(f"invalid container id {container_id!r}: use letters, digits, "
                        "'_', '+', '-' and '.' only (no '/' or '..')")


class ContainerState:
    """What state.json holds about one container.

    A plain class with the fields, defaults, ==, and repr of the dataclass it was: importing
    dataclasses costs pallet-runc ~7 ms.
    """

    FIELDS = ("id", "bundle", "pid", "pid_start", "created", "rootfs", "annotations",
              "cgroup_paths", "cgroups_path", "owner", "config", "status", "host_root_base")

    def __init__(self, id: str, bundle: str, pid: int = 0,
                 pid_start: int = 0,  # /proc/<pid>/stat starttime, guards against pid reuse
                 created: str = "", rootfs: str = "",
                 annotations: dict[str, str] | None = None,
                 cgroup_paths: dict[str, str] | None = None,
                 cgroups_path: str | None = None, owner: str = "",
                 config: dict[str, Any] | None = None,  # the spec at create time
                 status: str = "creating",  # only a hint; status() computes the truth
                 # no mount namespace: how many mounts the rootfs path had before create
                 host_root_base: int | None = None):
        self.id = id
        self.bundle = bundle
        self.pid = pid
        self.pid_start = pid_start
        self.created = created
        self.rootfs = rootfs
        self.annotations = {} if annotations is None else annotations
        self.cgroup_paths = {} if cgroup_paths is None else cgroup_paths
        self.cgroups_path = cgroups_path
        self.owner = owner
        self.config = {} if config is None else config
        self.status = status
        self.host_root_base = host_root_base

    def asdict(self) -> dict[str, Any]:
        """The fields in declaration order, as state.json stores them."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.asdict() == other.asdict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment] - mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.asdict().items())
        return f"{self.__class__.__qualname__}({fields})"

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
    def start_fifo(self) -> str:
        return os.path.join(self.path, START_FIFO)

    @property
    def started(self) -> str:
        return os.path.join(self.path, STARTED)

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
                data = jsonlite.loads(f.read())
        except FileNotFoundError:
            raise NotFound(f"container does not exist: {self.id}") from None
        return ContainerState(**data)

    def save(self, st: ContainerState) -> None:
        self.stage(st)
        self.commit()

    def stage(self, st: ContainerState, fast: bool = False) -> None:
        """Write ST beside state.json (and, if FAST, the fastpath file beside its place);
        commit() puts them in place, each atomically."""
        with open(os.path.join(self.path, ".state.json.tmp"), "w") as f:
            f.write(jsonlite.dumps(st.asdict()))
        dirs = sorted(set(st.cgroup_paths.values()))
        if fast and not any("\n" in d for d in dirs):
            with open(os.path.join(self.path, ".fastpath.tmp"), "w") as f:
                f.write("".join(f"{line}\n" for line in [f"{st.pid} {st.pid_start}", *dirs]))

    def commit(self) -> None:
        os.rename(os.path.join(self.path, ".state.json.tmp"),
                  os.path.join(self.path, "state.json"))
        try:
            os.rename(os.path.join(self.path, ".fastpath.tmp"),
                      os.path.join(self.path, FASTPATH))
        except FileNotFoundError:
            pass

    def remove(self) -> None:
        for name in ("state.json", START_FIFO, STARTED, FASTPATH):  # what start leaves
            try:
                os.unlink(os.path.join(self.path, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.path)
            return
        except FileNotFoundError:
            return
        except OSError:
            pass  # something else in it (a staged file, the lock)
        for name in os.listdir(self.path):
            try:
                os.unlink(os.path.join(self.path, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass

    def lock(self) -> _DirLock:
        """`with sd.lock():` holds an exclusive flock on the state directory."""
        return _DirLock(self.path)


class _DirLock:
    """flock on a directory as a context manager (contextlib costs ~4 ms to import)."""

    def __init__(self, path: str):
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        import fcntl

        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


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
