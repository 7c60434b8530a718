"""Runtime handlers: one interface over pallet's in-process OCI runtime and any
runc-compatible binary (runc, crun, runsc, pallet-runc), chosen by name or path.

Both kinds leave the container's init reparented to the nearest subreaper above
the caller (the monitor), so they are called from a monitor's helper process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from typing import Any, Protocol

from pallet.errors import FailedPrecondition, InvalidArgument, NotFound, PalletError

IN_PROCESS = "pallet"
# Extra global flags a runtime needs on hosts like ours (see MACHINE.md).
_BINARY_DEFAULT_ARGS = {"runsc": ["--platform=ptrace", "--network=none"]}


class RuntimeFailure(PalletError):
    """The OCI runtime refused an operation; the message is the runtime's own."""


class RuntimeHandler(Protocol):
    """What the engine needs from an OCI runtime; ids are the engine's container ids."""

    name: str
    root: str

    def create(self, cid: str, bundle: str, *, stdio: tuple[int, int, int] | None = None,
               console_socket: str | None = None) -> int: ...
    def start(self, cid: str) -> None: ...
    def state(self, cid: str) -> dict[str, Any]: ...
    def kill(self, cid: str, sig: int = signal.SIGTERM, all: bool = False) -> None: ...
    def delete(self, cid: str, force: bool = False) -> None: ...
    def exec(self, cid: str, process: dict[str, Any], *,
             stdio: tuple[int, int, int] | None = None,
             console_socket: str | None = None) -> int: ...
    def pause(self, cid: str) -> None: ...
    def resume(self, cid: str) -> None: ...
    def ps(self, cid: str) -> list[int]: ...
    def stats(self, cid: str) -> dict[str, Any]: ...
    def open_usage(self, cid: str) -> Any: ...
    def update(self, cid: str, resources: dict[str, Any]) -> None: ...


class InProcessHandler:
    """pallet.oci.Runtime in this process: the fast path (no interpreter start, no exec)."""

    def __init__(self, root: str):
        from pallet.oci import Runtime

        self.name = IN_PROCESS
        self.root = root
        self.rt = Runtime(root)

    def create(self, cid: str, bundle: str, *, stdio: tuple[int, int, int] | None = None,
               console_socket: str | None = None) -> int:
        return self.rt.create(cid, bundle, console_socket=console_socket, stdio=stdio).pid

    def start(self, cid: str) -> None:
        self.rt.start(cid)

    def state(self, cid: str) -> dict[str, Any]:
        return self.rt.state(cid)

    def kill(self, cid: str, sig: int = signal.SIGTERM, all: bool = False) -> None:
        self.rt.kill(cid, sig, all=all)

    def delete(self, cid: str, force: bool = False) -> None:
        self.rt.delete(cid, force=force)

    def exec(self, cid: str, process: dict[str, Any], *,
             stdio: tuple[int, int, int] | None = None,
             console_socket: str | None = None) -> int:
        return self.rt.exec(cid, process, console_socket=console_socket, stdio=stdio)

    def pause(self, cid: str) -> None:
        self.rt.pause(cid)

    def resume(self, cid: str) -> None:
        self.rt.resume(cid)

    def ps(self, cid: str) -> list[int]:
        return self.rt.ps(cid)

    def stats(self, cid: str) -> dict[str, Any]:
        return self.rt.stats(cid)

    def open_usage(self, cid: str) -> Any:
        """A pallet.oci.cgroups.usage.UsageReader the caller closes: docker stats' numbers
        from files held open."""
        return self.rt.open_usage(cid)

    def update(self, cid: str, resources: dict[str, Any]) -> None:
        self.rt.update(cid, resources)


class BinaryHandler:
    """A runc-compatible command line, driven with its own --root and a JSON error log."""

    def __init__(self, path: str, root: str, extra_args: list[str] | None = None):
        self.path = path
        self.name = os.path.basename(path)
        self.root = root
        self.extra_args = list(extra_args if extra_args is not None
                               else _BINARY_DEFAULT_ARGS.get(self.name, []))

    def _argv(self, log: str | None, *args: str) -> list[str]:
        argv = [self.path, "--root", self.root, *self.extra_args]
        if log:
            argv += ["--log", log, "--log-format", "json"]
        return argv + list(args)

    def _run(self, *args: str, stdio: tuple[int, int, int] | None = None,
             input: bytes | None = None) -> bytes:
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix="pallet-rt-", suffix=".log") as log:
            kw: dict[str, Any]
            if stdio is not None:
                # The container inherits the runtime's stdio; its output is read
                # back from a file so a chatty runtime cannot fill a pipe and hang.
                kw = {"stdin": stdio[0], "stdout": stdio[1], "stderr": stdio[2]}
            else:
                kw = {"stdin": subprocess.DEVNULL if input is None else subprocess.PIPE,
                      "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
            try:
                proc = subprocess.run(self._argv(log.name, *args), input=input, check=False,
                                      **kw)
            except OSError as e:
                raise RuntimeFailure(f"cannot run {self.path}: {e.strerror}") from None
            if proc.returncode != 0:
                raise _runtime_error(self.name, _last_error(log.name)
                                     or (proc.stderr or b"").decode(errors="replace").strip()
                                     or f"exit status {proc.returncode}")
            return proc.stdout or b""

    def create(self, cid: str, bundle: str, *, stdio: tuple[int, int, int] | None = None,
               console_socket: str | None = None) -> int:
        with tempfile.TemporaryDirectory(prefix="pallet-rt-") as tmp:
            pid_file = os.path.join(tmp, "pid")
            args = ["create", "--bundle", bundle, "--pid-file", pid_file]
            if console_socket:
                args += ["--console-socket", console_socket]
            devnull = None
            if stdio is None:
                devnull = os.open(os.devnull, os.O_RDWR)
                stdio = (devnull, devnull, devnull)
            try:
                self._run(*args, cid, stdio=stdio)
            finally:
                if devnull is not None:
                    os.close(devnull)
            with open(pid_file) as f:
                return int(f.read().strip())

    def start(self, cid: str) -> None:
        self._run("start", cid)

    def state(self, cid: str) -> dict[str, Any]:
        return json.loads(self._run("state", cid))

    def kill(self, cid: str, sig: int = signal.SIGTERM, all: bool = False) -> None:
        self._run("kill", *(["--all"] if all else []), cid, str(int(sig)))

    def delete(self, cid: str, force: bool = False) -> None:
        self._run("delete", *(["--force"] if force else []), cid)

    def exec(self, cid: str, process: dict[str, Any], *,
             stdio: tuple[int, int, int] | None = None,
             console_socket: str | None = None) -> int:
        with tempfile.TemporaryDirectory(prefix="pallet-rt-") as tmp:
            proc_file, pid_file = os.path.join(tmp, "process.json"), os.path.join(tmp, "pid")
            with open(proc_file, "w") as f:
                json.dump(process, f)
            args = ["exec", "--detach", "--process", proc_file, "--pid-file", pid_file]
            if console_socket:
                args += ["--console-socket", console_socket]
            self._run(*args, cid, stdio=stdio or _devnull3())
            with open(pid_file) as f:
                return int(f.read().strip())

    def pause(self, cid: str) -> None:
        self._run("pause", cid)

    def resume(self, cid: str) -> None:
        self._run("resume", cid)

    def ps(self, cid: str) -> list[int]:
        return list(json.loads(self._run("ps", "--format", "json", cid) or b"[]") or [])

    def open_usage(self, cid: str) -> Any:
        """None: where another runtime put the cgroup is its business; stats() asks it."""
        return None

    def stats(self, cid: str) -> dict[str, Any]:
        out = json.loads(self._run("events", "--stats", cid))
        return out.get("data") or {}

    def update(self, cid: str, resources: dict[str, Any]) -> None:
        self._run("update", "--resources", "-", cid, input=json.dumps(resources).encode())


def _devnull3() -> tuple[int, int, int]:
    fd = os.open(os.devnull, os.O_RDWR)
    return (fd, fd, fd)


def _last_error(log_path: str) -> str:
    """The last error-level message of a runtime's JSON log (runc's --log-format json)."""
    msg = ""
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    if line.strip():
                        msg = line.strip()
                    continue
                if entry.get("level") in ("error", "fatal"):
                    msg = str(entry.get("msg") or msg)
    except OSError:
        pass
    return msg


def _runtime_error(name: str, message: str) -> PalletError:
    low = message.lower()
    if "does not exist" in low or "not found" in low and "container" in low:
        return NotFound(f"{name}: {message}")
    if "not running" in low or "not stopped" in low or "cannot" in low and "state" in low:
        return FailedPrecondition(f"{name}: {message}")
    return RuntimeFailure(f"{name}: {message}")


def resolve(runtime: str | None, run_root: str) -> RuntimeHandler:
    """The handler for --runtime NAME|PATH ('' or 'pallet': in-process), rooted in run_root."""
    if not runtime or runtime == IN_PROCESS:
        return InProcessHandler(os.path.join(run_root, "runtime"))
    path = runtime if "/" in runtime else shutil.which(runtime)
    if not path or not os.access(path, os.X_OK):
        raise InvalidArgument(
            f"unknown or invalid runtime name: {runtime}; give 'pallet', the name of a "
            "runc-compatible runtime on $PATH (runc, crun, runsc) or its absolute path")
    return BinaryHandler(path, os.path.join(run_root, "rt-" + os.path.basename(path)))


def handler_name(runtime: str | None) -> str:
    """What is recorded in the store: '' means pallet's in-process runtime."""
    return "" if not runtime or runtime == IN_PROCESS else runtime
