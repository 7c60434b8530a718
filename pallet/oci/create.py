"""The parent side of the OCI lifecycle: create, start, state, kill, delete, exec.

`Runtime` is the library API (pallet.oci.Runtime); the runc-compatible CLI is a
thin skin over it. Children are forked from the caller, never exec'd anew.
"""

from __future__ import annotations

# _signal and _socket are the C cores of signal and socket: those modules only add enum
# wrappers and conveniences, and cost pallet-runc ~5 ms each at start-up. _socket, the
# config (spec) and cgsync are imported where used: start and delete need none of them.
import _signal
import os

from pallet.errors import FailedPrecondition, NotFound, PalletError, SpecError, SystemFailure
from pallet.oci.state import (
    DEFAULT_ROOT,
    ContainerState,
    StateDir,
    list_ids,
    now_rfc3339,
    proc_start_time,
    validate_id,
)

TYPE_CHECKING = False  # typing costs ~10 ms to import; only type checkers need it
if TYPE_CHECKING:
    import _socket
    from typing import Any


class InitError(PalletError):
    """The container's init failed during setup; the message comes from the child."""


def _cgroup(st_or_spec: Any, container_id: str):  # noqa: ANN202 - lazy import of the type
    from pallet.oci.cgroups import open_cgroup

    return open_cgroup(st_or_spec, container_id)


class Runtime:
    """An OCI runtime rooted at a state directory, like `runc --root`."""

    def __init__(self, root: str = DEFAULT_ROOT):
        self.root = root

    # -- create -------------------------------------------------------------------
    def create(self, container_id: str, bundle: str, *, console_socket: str | None = None,
               pid_file: str | None = None, no_pivot: bool = False, preserve_fds: int = 0,
               stdio: tuple[int, int, int] | None = None) -> ContainerState:
        from pallet.oci.cgsync import reap_cgroup_sync, start_cgroup_sync

        sync = start_cgroup_sync()
        try:
            return self._create(container_id, bundle, console_socket=console_socket,
                                pid_file=pid_file, no_pivot=no_pivot,
                                preserve_fds=preserve_fds, stdio=stdio)
        finally:
            reap_cgroup_sync(sync)

    def _create(self, container_id: str, bundle: str, *, console_socket: str | None,
                pid_file: str | None, no_pivot: bool, preserve_fds: int,
                stdio: tuple[int, int, int] | None) -> ContainerState:
        from pallet.oci import spec as specmod
        from pallet.oci.init import InitContext, preload

        validate_id(container_id)
        bundle = os.path.abspath(bundle)
        spec = specmod.load(bundle)
        if not spec.get("process"):
            raise SpecError("process: the config must say which process to run")
        linux = spec.get("linux") or {}
        nss = [n["type"] for n in linux.get("namespaces") or []]
        terminal = bool(spec["process"].get("terminal"))
        if terminal and not console_socket:
            raise SpecError("process.terminal is true: use --console-socket to receive the "
                            "pty master (or run with terminal false)")
        bpf = _compile_seccomp(linux, self.root)
        idmapped = _plan_idmapped(spec, bundle)
        sd = StateDir(self.root, container_id)
        sd.create()
        cg = None
        init_pid = 0
        staged_pid_file = ""
        host_base = None
        console_sock = None
        start_fd = -1
        trees: dict[int, int] = {}
        try:
            if idmapped:
                from pallet.oci.linux import idmap

                trees = idmap.prepare(idmapped)
            # Everything that needs no cgroupfs is done before the first mkdir there: that
            # waits (on the kernel's cgroup mutex) until start_cgroup_sync's move is through.
            cg = _cgroup(linux.get("cgroupsPath"), container_id)
            if console_socket:
                console_sock = _connect(console_socket)
            rootfs = specmod.rootfs_path(spec, bundle)
            facts = None
            if "mount" not in nss:
                # The init mounts under the rootfs in our (the host's) mount namespace.
                from pallet.oci.linux.rootfs import host_mounts_at

                host_base = host_mounts_at(rootfs)
            elif not any(n["type"] == "mount" and n.get("path")
                         for n in linux.get("namespaces") or ()):
                # A new mount namespace starts as a copy of ours: read its table here.
                from pallet.oci.linux.rootfs import mount_facts

                facts = mount_facts(rootfs)
            # The init blocks reading this fifo until `start` writes a byte to it. It
            # inherits the fd, so it never reaches the state dir by path (which a
            # user-namespaced or non-dumpable init may not). Read-write: opening it never
            # blocks, and the init is its reader for as long as it lives.
            os.mkfifo(sd.start_fifo, 0o600)
            start_fd = os.open(sd.start_fifo, os.O_RDWR | os.O_CLOEXEC)
            ctx = InitContext(spec=spec, process=spec["process"], rootfs=rootfs, bundle=bundle,
                              start_fd=start_fd, seccomp_bpf=bpf,
                              seccomp_listener=_notifies(linux),
                              console_fd=console_sock.fileno() if console_sock else None,
                              stdio=stdio, preserve_fds=preserve_fds, no_pivot=no_pivot,
                              cgroup_paths=dict(cg.paths), join_cgroup=cg.join_files(),
                              idmapped_mounts=trees, mount_facts=facts)
            st = ContainerState(id=container_id, bundle=bundle, rootfs=rootfs,
                                created=now_rfc3339(),
                                annotations=spec.get("annotations") or {},
                                cgroup_paths=dict(cg.paths),
                                cgroups_path=linux.get("cgroupsPath"), config=spec,
                                host_root_base=host_base)
            preload(ctx)  # once here, not in every child (and not after the mkdir)

            def stage(pid: int) -> None:
                # Once the init's pid is known, while it builds the rootfs: only the
                # renames are left for when it reports `created`.
                nonlocal staged_pid_file
                st.pid = pid
                st.pid_start = proc_start_time(pid)
                st.status = "created"
                sd.stage(st, fast=host_base is None and not _hooks(spec, "poststart", "poststop"))
                if pid_file:
                    staged_pid_file = _stage_pid_file(pid_file, pid)

            cg.create()
            cg.set(linux.get("resources") or {})
            init_pid = self._spawn(ctx, st, spec, linux, on_pid=stage)
            sd.commit()
            if staged_pid_file:
                os.rename(staged_pid_file, pid_file)
            return st
        except BaseException:
            if staged_pid_file:
                try:
                    os.unlink(staged_pid_file)
                except OSError:
                    pass
            if init_pid:
                _kill_and_reap(init_pid)
            if host_base is not None:
                from pallet.oci.linux.rootfs import detach_host_root

                detach_host_root(specmod.rootfs_path(spec, bundle), host_base)
            if cg is not None:
                try:
                    cg.destroy()
                except Exception:  # noqa: BLE001 - the original error matters more
                    pass
            sd.remove()
            raise
        finally:
            if console_sock is not None:
                console_sock.close()
            if start_fd >= 0:
                os.close(start_fd)
            for fd in trees.values():
                os.close(fd)  # the init attached its copies (or is gone)

    def _spawn(self, ctx: Any, st: ContainerState, spec: dict, linux: dict,
               on_pid: Any = None) -> int:
        from pallet.oci.init import create_child

        def answer(msg: dict[str, Any], first: int, init_pid: int, fds: list[int]) -> None:
            if "userns" in msg:
                _write_id_maps(first, linux)
            elif "hooks" in msg:
                state = st.oci("creating") | {"pid": init_pid}
                for phase in ("prestart", "createRuntime", "createContainer"):
                    _run_hooks(spec, phase, state)
            elif "seccomp" in msg:
                _pass_listener(linux, fds, init_pid, st.oci("creating") | {"pid": init_pid})

        return _drive_child(create_child, ctx, answer=answer, on_pid=on_pid)

    # -- queries --------------------------------------------------------------------
    def load(self, container_id: str) -> ContainerState:
        return StateDir(self.root, container_id).load()

    def status(self, st: ContainerState) -> str:
        if not st.pid or proc_start_time(st.pid) != st.pid_start:
            return "stopped"
        sd = StateDir(self.root, st.id)
        if os.path.exists(sd.start_fifo) and not os.path.exists(sd.started):
            return "created"
        if st.cgroup_paths and _frozen(st):
            return "paused"
        return "running"

    def state(self, container_id: str) -> dict[str, Any]:
        st = self.load(container_id)
        return st.oci(self.status(st))

    def list(self) -> list[dict[str, Any]]:
        out = []
        for cid in list_ids(self.root):
            try:
                out.append(self.state(cid))
            except NotFound:
                continue
        return out

    # -- start / kill / delete --------------------------------------------------------
    def start(self, container_id: str) -> None:
        sd = StateDir(self.root, container_id)
        st = sd.load()
        status = self.status(st)
        if status != "created":
            raise FailedPrecondition("cannot start a container that has stopped"
                                     if status == "stopped" else
                                     "cannot start an already running container")
        _release(sd)
        _run_hooks(st.config, "poststart", st.oci("running"))

    def kill(self, container_id: str, sig: int = _signal.SIGTERM, all: bool = False) -> None:
        st = self.load(container_id)
        status = self.status(st)
        if status == "stopped":
            raise FailedPrecondition("container not running")
        if all and st.cgroup_paths:
            _cgroup(st.cgroups_path, st.id).kill_all(sig)
            return
        os.kill(st.pid, sig)

    def delete(self, container_id: str, force: bool = False) -> None:
        sd = StateDir(self.root, container_id)
        st = sd.load()
        status = self.status(st)
        if status in ("running", "paused") and not force:
            raise FailedPrecondition(f"cannot delete container {container_id} that is not "
                                     f"stopped: {status}")
        if status != "stopped":
            cg = _cgroup(st.cgroups_path, st.id) if st.cgroup_paths else None
            if cg is not None and status == "paused":
                cg.thaw()
            _kill_and_reap(st.pid)
            if cg is not None:
                cg.kill_all(_signal.SIGKILL)
        # The usual case, an exited container whose cgroup is empty, needs only rmdir of the
        # directories state.json names; anything in the way (processes left, sub-cgroups)
        # goes to the backend, which kills and retries.
        if st.cgroup_paths and not (status == "stopped" and _rmdir_cgroup(st.cgroup_paths)):
            _cgroup(st.cgroups_path, st.id).destroy()
        if st.host_root_base is not None:
            from pallet.oci.linux.rootfs import detach_host_root

            detach_host_root(st.rootfs, st.host_root_base)
        sd.remove()
        _run_hooks(st.config, "poststop", st.oci("stopped"))

    def pause(self, container_id: str) -> None:
        st = self.load(container_id)
        if self.status(st) not in ("running", "created"):
            raise FailedPrecondition("container not running")
        _cgroup(st.cgroups_path, st.id).freeze()

    def resume(self, container_id: str) -> None:
        st = self.load(container_id)
        if self.status(st) != "paused":
            raise FailedPrecondition("container not paused")
        _cgroup(st.cgroups_path, st.id).thaw()

    def ps(self, container_id: str) -> list[int]:
        st = self.load(container_id)
        return _cgroup(st.cgroups_path, st.id).pids()

    def stats(self, container_id: str) -> dict[str, Any]:
        st = self.load(container_id)
        return _cgroup(st.cgroups_path, st.id).stats()

    def open_usage(self, container_id: str):  # noqa: ANN201 - cgroups.usage is imported lazily
        """docker stats' usage files of the container's cgroup, held open (a UsageReader,
        which the caller closes); CgroupGone if the cgroup no longer exists."""
        from pallet.oci.cgroups.usage import UsageReader

        st = self.load(container_id)
        return UsageReader(_cgroup(st.cgroups_path, st.id).usage_sources())

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        sd = StateDir(self.root, container_id)
        st = sd.load()
        _cgroup(st.cgroups_path, st.id).set(resources)
        linux = st.config.setdefault("linux", {})
        merged = linux.setdefault("resources", {})
        for k, v in resources.items():
            merged[k] = (merged.get(k) or {}) | v if isinstance(v, dict) else v
        sd.save(st)

    # -- exec -------------------------------------------------------------------------
    def exec(self, container_id: str, process: dict[str, Any], *,
             console_socket: str | None = None, preserve_fds: int = 0,
             stdio: tuple[int, int, int] | None = None) -> int:
        """Start PROCESS in the container; return its host pid (the caller reaps it)."""
        from pallet.oci.cgsync import reap_cgroup_sync, start_cgroup_sync

        sync = start_cgroup_sync()  # the process joins the container's cgroups
        try:
            return self._exec(container_id, process, console_socket=console_socket,
                              preserve_fds=preserve_fds, stdio=stdio)
        finally:
            reap_cgroup_sync(sync)

    def _exec(self, container_id: str, process: dict[str, Any], *,
              console_socket: str | None, preserve_fds: int,
              stdio: tuple[int, int, int] | None) -> int:
        from pallet.oci import spec as specmod
        from pallet.oci.init import InitContext, exec_child

        st = self.load(container_id)
        status = self.status(st)
        if status == "paused":
            raise FailedPrecondition("cannot exec in a paused container")
        if status != "running" and status != "created":
            raise FailedPrecondition("cannot exec in a stopped container")
        specmod.validate_process(process, "process")
        if process.get("terminal") and not console_socket:
            raise SpecError("process.terminal is true: use --console-socket")
        bpf = _compile_seccomp(st.config.get("linux") or {}, self.root)
        console_sock = _connect(console_socket) if console_socket else None
        procs = [os.path.join(p, "cgroup.procs") for p in st.cgroup_paths.values()]
        linux = st.config.get("linux") or {}
        ctx = InitContext(spec=st.config, process=process, rootfs=st.rootfs, bundle=st.bundle,
                          seccomp_bpf=bpf, seccomp_listener=_notifies(linux), stdio=stdio,
                          preserve_fds=preserve_fds,
                          console_fd=console_sock.fileno() if console_sock else None,
                          join_pid=st.pid, cgroup_procs=sorted(set(procs)))

        def answer(msg: dict[str, Any], first: int, pid: int, fds: list[int]) -> None:
            if "seccomp" in msg:
                # Like runc: the exec'd process's pid, and the state of the container.
                _pass_listener(linux, fds, pid, st.oci(status))

        try:
            return _drive_child(exec_child, ctx, answer=answer)
        finally:
            if console_sock is not None:
                console_sock.close()


def _drive_child(target: Any, ctx: Any, *, answer: Any = None, on_pid: Any = None) -> int:
    """Fork TARGET(ctx, sock) and answer its messages until it reports `created`; return
    the host pid of the process it made (the init, or the exec'd process).

    The first child reports that pid, then exits; the made process waits for our `ok` so
    its own messages cannot overtake that report. ANSWER handles any other message
    (`userns`, `hooks`, `seccomp` with the listener fd) before we reply `ok`; fds that
    came with a message are closed after it. ON_PID(pid) runs once that pid is known and
    the made process is on its way. On any failure what was made is killed and reaped
    (we are its subreaper).
    """
    import _socket

    from pallet.oci.init import recv_with_fds, send

    _become_subreaper()
    parent, child = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    first = os.fork()
    if first == 0:
        parent.close()
        target(ctx, child)
        os._exit(1)
    child.close()
    pid = 0
    try:
        while True:
            msg, fds = _recv_or_fail(parent, recv_with_fds)
            try:
                if "pid" in msg:
                    pid = msg["pid"]
                elif "created" in msg:
                    return pid
                elif "error" in msg:
                    raise InitError(msg["error"])
                elif answer is not None:
                    answer(msg, first, pid, fds)
            finally:
                for fd in fds:
                    os.close(fd)
            send(parent, ok=True)
            if pid and first:
                # The first child has reported and exits: reap it once the made process
                # is on its way, then let ON_PID use the time it takes to get ready.
                os.waitpid(first, 0)
                first = 0
                if on_pid is not None:
                    on_pid(pid)
    except BaseException:
        if pid:
            _kill_and_reap(pid)
        raise
    finally:
        if first:
            _kill_and_reap(first)
        parent.close()


def _compile_seccomp(linux: dict[str, Any], root: str) -> bytes | None:
    """The BPF program for linux.seccomp, cached under ROOT by a hash of the profile.

    Compiling Docker's default profile takes ~17 ms of every create and exec, and it
    is the same profile nearly every time. The key covers everything the program
    depends on: the profile's JSON, the libseccomp version and the machine. Only a
    profile that compiled (and so validated) is ever cached.
    """
    if not linux.get("seccomp"):
        return None
    from pallet.oci import jsonlite
    from pallet.oci.linux import seccomp

    try:
        from _sha256 import sha256  # the builtin: hashlib's OpenSSL import costs ~2 ms
    except ImportError:
        from hashlib import sha256
    profile = jsonlite.dumps(linux["seccomp"])
    key = sha256(f"{_libseccomp_version()} {os.uname().machine} {profile}"
                 .encode()).hexdigest()
    # Not a valid place for a container: list_ids wants a state.json in it.
    cache = os.path.join(root, ".cache", "seccomp")
    path = os.path.join(cache, key + ".bpf")
    try:
        with open(path, "rb") as f:
            bpf = f.read()
        if bpf and len(bpf) % 8 == 0:
            return bpf
    except OSError:
        pass
    bpf = seccomp.compile_filter(linux["seccomp"])
    try:
        os.makedirs(cache, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, bpf)
        finally:
            os.close(fd)
        os.rename(tmp, path)  # atomic: a concurrent create reads all of it or nothing
    except OSError:
        pass  # a read-only or full root only costs the next create a compile
    return bpf


def _libseccomp_version() -> str:
    """libseccomp's version, without ctypes (or libseccomp's compiler set-up): a cached
    program is used without either."""
    from pallet.oci.linux import libc

    try:
        version = libc.Library("libseccomp.so.2").long_function("seccomp_version")
    except OSError:
        return "none"  # compiling says what is missing
    return ".".join(str(n) for n in libc.u32s_at(version(), 3))


def _plan_idmapped(spec: dict[str, Any], bundle: str) -> list[Any]:
    """The idmapped mounts to prepare (checked now, before anything exists); mostly none."""
    for m in spec.get("mounts") or ():
        if m.get("uidMappings") or m.get("gidMappings") or \
                "idmap" in (m.get("options") or ()) or "ridmap" in (m.get("options") or ()):
            break
    else:
        return []  # the usual case, without importing idmap on pallet-runc's hot path
    from pallet.oci.linux import idmap

    return idmap.plan(spec, bundle)


def _notifies(linux: dict[str, Any]) -> bool:
    seccomp = linux.get("seccomp")
    if not seccomp:
        return False
    from pallet.oci.linux.seccomp import uses_notify

    return uses_notify(seccomp)


def _pass_listener(linux: dict[str, Any], fds: list[int], pid: int,
                   state: dict[str, Any]) -> None:
    """Send the child's seccomp listener to the agent at linux.seccomp.listenerPath."""
    from pallet.oci import jsonlite
    from pallet.oci.linux import seccomp

    if len(fds) != 1:
        raise SystemFailure(f"seccomp: the container's init sent {len(fds)} fds, expected its "
                            "notification listener")
    cfg = linux["seccomp"]
    payload = jsonlite.dumps(seccomp.process_state(cfg, pid, state)).encode()
    # Absolute, for _connect_short; a relative path is taken from our cwd, as runc does.
    path = os.path.abspath(cfg["listenerPath"])
    seccomp.send_to_agent(path, payload, fds[0], connect=_connect_short)


def _recv_or_fail(sock: _socket.socket, recv: Any) -> Any:
    try:
        return recv(sock)
    except EOFError:
        raise InitError("container init exited during setup") from None


def _connect(path: str) -> _socket.socket:
    import _socket

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        _connect_short(s, path)
    except OSError as e:
        s.close()
        raise NotFound(f"--console-socket {path}: {e.strerror}") from None
    return s


def _write_id_maps(pid: int, linux: dict[str, Any]) -> None:
    def fmt(maps: list[dict[str, int]]) -> str:
        return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)

    try:
        if linux.get("gidMappings"):
            with open(f"/proc/{pid}/gid_map", "w") as f:
                f.write(fmt(linux["gidMappings"]))
        if linux.get("uidMappings"):
            with open(f"/proc/{pid}/uid_map", "w") as f:
                f.write(fmt(linux["uidMappings"]))
    except OSError as e:
        raise SystemFailure(f"writing user namespace id maps: {e.strerror}") from None


def _write_pid_file(path: str, pid: int) -> None:
    os.rename(_stage_pid_file(path, pid), path)


def _stage_pid_file(path: str, pid: int) -> str:
    """Write PID beside PATH; the caller renames the file it returns onto PATH."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(str(pid))
    return tmp


def _short_path(path: str) -> tuple[str, int]:
    """A socket path that fits sun_path (108 bytes) however deep the state dir is.

    /proc/self/fd/N names the directory through an fd we hold; the kernel follows it.
    """
    fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{os.path.basename(path)}", fd


def _connect_short(sock: _socket.socket, path: str) -> None:
    short, fd = _short_path(path)
    try:
        sock.connect(short)
    finally:
        os.close(fd)


def _release(sd: StateDir) -> None:
    """Let a created container's init go on to exec: the start protocol of the state dir
    (pallet.oci.state), which bin/pallet-runc's sh fast path follows too."""
    try:  # no reader: the init is gone
        fd = os.open(sd.start_fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise FailedPrecondition(f"container {sd.id} init exited before start") from None
    try:
        try:  # one start only, however many race for it
            os.close(os.open(sd.started, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             0o600))
        except FileExistsError:
            raise FailedPrecondition("cannot start an already running container") from None
        os.write(fd, b"0")
    finally:
        os.close(fd)


def _hooks(spec: dict[str, Any], *phases: str) -> bool:
    hooks = spec.get("hooks") or {}
    return any(hooks.get(p) for p in phases)


def _run_hooks(spec: dict[str, Any], phase: str, state: dict[str, Any]) -> None:
    """hooks.run_hooks, without importing hooks when the phase has none (start, delete)."""
    if (spec.get("hooks") or {}).get(phase):
        from pallet.oci import hooks

        hooks.run_hooks(spec, phase, state)


def _rmdir_cgroup(paths: dict[str, str]) -> bool:
    """rmdir each of a container's cgroup directories; False (the rest left) at the first
    that is busy (processes or sub-cgroups in it) or cannot be removed for another reason.

    No cgroup backend (mountinfo, layout, its imports) for what is one rmdir per hierarchy.
    """
    for d in sorted(set(paths.values())):
        try:
            os.rmdir(d)
        except FileNotFoundError:
            continue
        except OSError:
            return False
    return True


def _frozen(st: ContainerState) -> bool:
    try:
        return bool(_cgroup(st.cgroups_path, st.id).is_frozen())
    except Exception:  # noqa: BLE001 - a vanished cgroup is simply not frozen
        return False


def _become_subreaper() -> None:
    from pallet.oci.linux import libc

    libc.LIBC.int_function("prctl")(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _kill_and_reap(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL PID and wait until it is gone (reaping it when it is our child)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        try:
            _signal.pidfd_send_signal(pidfd, _signal.SIGKILL)
        except ProcessLookupError:
            return
        import select

        select.select([pidfd], [], [], timeout)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    finally:
        os.close(pidfd)


def wait_exit(pid: int) -> int:
    """Wait for a child (or reparented) PID; return a shell-style exit code."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else \
            128 + os.WTERMSIG(status)
