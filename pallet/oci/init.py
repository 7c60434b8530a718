"""The child side of create and exec: the ordered setup that ends in execve.

Runs in forked children only (never in the caller). It reports to the runtime
parent over a SOCK_SEQPACKET socket with small JSON messages and never returns.
"""

from __future__ import annotations

# _signal and _socket are the C cores of signal and socket: those modules only add enum
# wrappers and conveniences, and cost pallet-runc ~5 ms each at start-up.
import _signal
import _socket
import os
import sys

from pallet.oci import jsonlite
from pallet.oci.linux import syscalls as sc

TYPE_CHECKING = False  # typing costs ~10 ms to import; only type checkers need it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

NS_FLAGS = {"pid": sc.CLONE_NEWPID, "network": sc.CLONE_NEWNET, "mount": sc.CLONE_NEWNS,
            "ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS, "user": sc.CLONE_NEWUSER,
            "cgroup": sc.CLONE_NEWCGROUP, "time": sc.CLONE_NEWTIME}
_FD_LIMIT = 2**31 - 1  # above any fd: os.closerange's end (exclusive) for "all the rest"
# /proc/PID/ns names, in the order exec joins them (user first, mount last).
PROC_NS = [("user", "user"), ("ipc", "ipc"), ("uts", "uts"), ("network", "net"),
           ("pid", "pid"), ("cgroup", "cgroup"), ("time", "time"), ("mount", "mnt")]


class InitContext:
    """Everything the child needs, computed by the parent before fork.

    A plain class with the fields, defaults, == and repr of the dataclass it was (importing
    dataclasses costs ~7 ms).
    """

    FIELDS = ("spec", "process", "rootfs", "bundle", "start_fd", "seccomp_bpf",
              "seccomp_listener", "console_fd", "stdio", "preserve_fds", "no_pivot",
              "cgroup_paths", "join_cgroup", "join_pid", "cgroup_procs", "idmapped_mounts",
              "mount_facts")

    def __init__(self, spec: dict[str, Any], process: dict[str, Any], rootfs: str, bundle: str,
                 start_fd: int = -1,                  # the start fifo (read-write); -1 for exec
                 seccomp_bpf: bytes | None = None,
                 seccomp_listener: bool = False,      # the filter has SCMP_ACT_NOTIFY rules
                 console_fd: int | None = None,       # connected --console-socket
                 stdio: tuple[int, int, int] | None = None,
                 preserve_fds: int = 0,
                 no_pivot: bool = False,
                 cgroup_paths: dict[str, str] | None = None,
                 join_cgroup: list[str] | None = None,  # create: files to write "0" to
                 join_pid: int = 0,                   # exec: join the namespaces of this pid
                 cgroup_procs: list[str] | None = None,  # exec: cgroup.procs files to join
                 idmapped_mounts: dict[int, int] | None = None,  # mounts[i] -> detached tree fd
                 mount_facts: Any = None):  # rootfs.MountFacts read by the parent, or None
        self.spec = spec
        self.process = process
        self.rootfs = rootfs
        self.bundle = bundle
        self.start_fd = start_fd
        self.seccomp_bpf = seccomp_bpf
        self.seccomp_listener = seccomp_listener
        self.console_fd = console_fd
        self.stdio = stdio
        self.preserve_fds = preserve_fds
        self.no_pivot = no_pivot
        self.cgroup_paths = {} if cgroup_paths is None else cgroup_paths
        self.join_cgroup = [] if join_cgroup is None else join_cgroup
        self.join_pid = join_pid
        self.cgroup_procs = [] if cgroup_procs is None else cgroup_procs
        self.idmapped_mounts = {} if idmapped_mounts is None else idmapped_mounts
        self.mount_facts = mount_facts

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.FIELDS)

    __hash__ = None  # type: ignore[assignment] - mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.FIELDS)
        return f"{self.__class__.__qualname__}({fields})"


def send(sock: _socket.socket, **msg: Any) -> None:
    sock.send(jsonlite.dumps(msg).encode())


def recv(sock: _socket.socket) -> dict[str, Any]:
    data = sock.recv(65536)
    if not data:
        raise EOFError("runtime parent went away")
    return jsonlite.loads(data)


def recv_with_fds(sock: _socket.socket) -> tuple[dict[str, Any], list[int]]:
    """A message and the fds that came with it (SCM_RIGHTS); the caller owns the fds."""
    data, ancdata, _flags, _addr = sock.recvmsg(65536, _socket.CMSG_SPACE(4 * 4))
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            n = len(payload) - len(payload) % 4
            fds += [int.from_bytes(payload[i:i + 4], sys.byteorder) for i in range(0, n, 4)]
    if not data:
        for fd in fds:
            os.close(fd)
        raise EOFError("container init went away")
    return jsonlite.loads(data), fds


def _fail(sock: _socket.socket, e: BaseException) -> None:
    try:
        msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
            msg = f"{msg}: {e.filename}"
    except Exception:  # noqa: BLE001 - never let reporting hide the exit
        msg = type(e).__name__
    try:
        send(sock, error=msg or type(e).__name__)
    except OSError:
        # After `created` the parent is gone: tell the container's stderr, like runc.
        try:
            os.write(2, f"pallet-runc: {msg}\n".encode())
        except OSError:
            pass
    os._exit(1)


def _namespaces(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return (spec.get("linux") or {}).get("namespaces") or []


def preload(ctx: InitContext) -> None:
    """Import what the child needs: after setns/pivot_root the package is out of its reach.

    Create calls it before it forks (its children then have it all); the children call it
    again, which costs nothing when that was done.
    """
    from pallet.oci.linux import capabilities, process, rlimits, rootfs  # noqa: F401

    if ctx.process.get("terminal"):
        import socket  # noqa: F401 - console.send_fd_on imports it

        from pallet.oci.linux import console  # noqa: F401
    if ctx.seccomp_bpf is not None:
        from pallet.oci.linux import seccomp  # noqa: F401
    if (ctx.spec.get("hooks") or {}).get("startContainer"):
        import subprocess  # noqa: F401 - hooks.run_hooks imports it

        from pallet.oci import hooks  # noqa: F401


def create_child(ctx: InitContext, sock: _socket.socket) -> None:
    """First child of create: enter namespaces, fork the container init (pid 1), exit."""
    try:
        preload(ctx)
        from pallet.oci.cgroups import files
        from pallet.oci.linux import process

        process.set_dumpable(False)   # keep /proc/<pid>/exe of this interpreter unreachable
        _close_leaked_fds(ctx, sock)
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        # Into the container's cgroup before any namespace: a cgroup namespace is rooted
        # where we are when we make it. We are single-threaded (forked), so moving ourselves
        # moves the whole process (see Cgroup.join_files).
        for path in ctx.join_cgroup:
            files.write(os.path.dirname(path), os.path.basename(path), "0")
        nss = _namespaces(ctx.spec)
        # Open every namespace to join first, as runc does: once in a user namespace we
        # are no longer root on the host, and their directories may not let us in.
        fds = {ns["type"]: os.open(ns["path"], os.O_RDONLY | os.O_CLOEXEC)
               for ns in nss if ns.get("path")}
        user = next((n for n in nss if n["type"] == "user"), None)
        if user is not None:
            if user.get("path"):
                fd = fds.pop("user")
                sc.setns(fd, sc.CLONE_NEWUSER)
                os.close(fd)
            else:
                sc.unshare(sc.CLONE_NEWUSER)
                send(sock, userns=True)
                recv(sock)  # the parent wrote uid_map and gid_map
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        flags = 0
        for ns in nss:
            if ns["type"] == "user":
                continue
            if ns.get("path"):
                fd = fds.pop(ns["type"])
                sc.setns(fd, NS_FLAGS[ns["type"]])
                os.close(fd)
            else:
                flags |= NS_FLAGS[ns["type"]]
        sc.unshare(flags)
        pid = os.fork()
        if pid:
            send(sock, pid=pid)
            os._exit(0)
        # Wait until the parent has our host pid: otherwise our own messages could
        # overtake the first child's report, and the parent would not know who we are.
        recv(sock)
        container_init(ctx, sock)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, then _exit
        _fail(sock, e)


def _close_leaked_fds(ctx: InitContext, sock: _socket.socket) -> None:
    """Close every fd the caller had open that the container must not get.

    Done first, before any chdir or namespace change: a leaked fd to a host
    directory used as cwd is the CVE-2024-21626 escape.
    """
    keep = {sock.fileno(), ctx.start_fd, ctx.console_fd if ctx.console_fd is not None else -1}
    keep.update(ctx.idmapped_mounts.values())
    keep.update(ctx.stdio or ())
    keep.update(range(3 + ctx.preserve_fds))
    # os.closerange is close_range(2) over each gap: a few syscalls, not a listing of
    # /proc/self/fd and a close per fd.
    low = 0
    for fd in sorted(fd for fd in keep if fd >= 0):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _FD_LIMIT)


def container_init(ctx: InitContext, sock: _socket.socket) -> None:
    """PID 1 of the container: build the rootfs, wait for start, exec the user process."""
    try:
        from pallet.oci.linux import rootfs

        spec, linux = ctx.spec, ctx.spec.get("linux") or {}
        nss = {n["type"]: n for n in _namespaces(spec)}
        if ctx.stdio:
            _dup_stdio(ctx.stdio)
        host_ns = "mount" not in nss
        root_fd = rootfs.prepare_root(ctx.rootfs, linux.get("rootfsPropagation"), host_ns,
                                      ctx.mount_facts)
        spec_mounts = spec.get("mounts") or []
        rootfs.mount_all(root_fd, spec_mounts, ctx.bundle, ctx.cgroup_paths,
                         "cgroup" in nss and not nss["cgroup"].get("path"),
                         ctx.idmapped_mounts, ctx.mount_facts)
        binds_dev = any(m["destination"].rstrip("/") == "/dev" and
                        "bind" in (m.get("options") or []) + [m.get("type")]
                        for m in spec_mounts)
        if not binds_dev:
            rootfs.create_devices(root_fd, linux.get("devices") or [], "user" in nss)
            rootfs.dev_symlinks(root_fd, any(m["destination"] == "/dev/pts"
                                             for m in spec_mounts))
        if any((spec.get("hooks") or {}).get(p)
               for p in ("prestart", "createRuntime", "createContainer")):
            send(sock, hooks=True)
            recv(sock)  # the parent ran them
        os.close(root_fd)
        rootfs.pivot(ctx.rootfs, ctx.no_pivot, linux.get("rootfsPropagation"), host_ns)
        if spec.get("hostname") and "uts" in nss:
            sc.sethostname(spec["hostname"])
        if spec.get("domainname") and "uts" in nss:
            sc.setdomainname(spec["domainname"])
        rootfs.write_sysctls(linux.get("sysctl") or {})
        rootfs.mask_paths(linux.get("maskedPaths") or [])
        rootfs.readonly_paths(linux.get("readonlyPaths") or [])
        if (spec.get("root") or {}).get("readonly"):
            rootfs.readonly_root()
        def wait_for_start() -> None:
            send(sock, created=True)
            sock.close()
            # Blocks until `start` writes its byte to the start fifo (never EOF: we hold
            # the fifo read-write).
            os.read(ctx.start_fd, 1)
            os.close(ctx.start_fd)

        prepare_process(ctx, sock, wait_for_start)
        exec_process(ctx)
    except BaseException as e:  # noqa: BLE001
        _fail(sock, e)


def _dup_stdio(stdio: tuple[int, int, int]) -> None:
    for target, fd in enumerate(stdio):
        if fd != target:
            os.dup2(fd, target)


class _Prepared:
    path = ""
    env: dict[str, str] = {}


_PREPARED = _Prepared()


def prepare_process(ctx: InitContext, sock: _socket.socket, ready: Callable[[], None]) -> None:
    """Everything up to the point of exec: terminal, limits, identity, capabilities.

    READY is called once all of it is done, privileges dropped too (runc's order: an
    error in any of it is create's or exec's, and after `start` only exec is left);
    SOCK is the parent's, still open until READY.
    """
    from pallet.oci.linux import capabilities, process, rlimits

    proc = ctx.process
    if proc.get("terminal"):
        _setup_terminal(ctx)
    elif ctx.join_pid == 0:
        os.setsid()
    if proc.get("oomScoreAdj") is not None:
        process.set_oom_score_adj(proc["oomScoreAdj"])
    rlimits.apply(proc.get("rlimits"))
    if (ctx.spec.get("linux") or {}).get("personality"):
        process.set_personality(ctx.spec["linux"]["personality"].get("domain", "LINUX"))
    user = proc.get("user") or {}
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    env = _env(proc.get("env") or [])
    cwd = proc.get("cwd") or "/"
    os.chdir(cwd)
    try:
        os.getcwd()  # fails when cwd lies outside the container's root
    except FileNotFoundError:
        raise FileNotFoundError(2, f"process.cwd {cwd} is outside the container") from None
    _PREPARED.path = _lookup(proc["args"][0], env.get("PATH"))
    _PREPARED.env = env
    if ctx.seccomp_listener and ctx.seccomp_bpf is not None:
        _install_seccomp_listener(ctx, sock)
    caps = proc.get("capabilities")
    nnp = bool(proc.get("noNewPrivileges"))
    if ctx.seccomp_bpf is not None and not nnp:
        # Without no_new_privs the filter can only be loaded while we still hold
        # CAP_SYS_ADMIN, so before dropping privileges (as runc does).
        from pallet.oci.linux import seccomp

        seccomp.install_filter(ctx.seccomp_bpf,
                               ((ctx.spec.get("linux") or {}).get("seccomp") or {})
                               .get("flags"))
    capabilities.drop_bounding(caps)
    capabilities.set_keepcaps(True)
    gids = user.get("additionalGids")
    if gids is not None or not _setgroups_denied():
        os.setgroups(list(gids or []))
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    capabilities.apply(caps)
    if "umask" in user:
        os.umask(user["umask"])
    if nnp:
        process.set_no_new_privs()
    ready()


def _install_seccomp_listener(ctx: InitContext, sock: _socket.socket) -> None:
    """Load the filter with a notification listener and hand that fd to the runtime parent.

    This must happen while the parent still listens, so before READY: earlier than a
    filter without a listener, which waits until just before exec. It is the order runc
    keeps for every filter: the rest of setup (waiting for start, dropping privileges)
    runs under the filter, and the agent answers what it notifies. Loaded while we still
    hold CAP_SYS_ADMIN, so no_new_privs is not needed for it.
    """
    from pallet.oci.linux import seccomp

    flags = ((ctx.spec.get("linux") or {}).get("seccomp") or {}).get("flags")
    # Prepared before the filter, so nothing but sendmsg runs between it and the hand-over.
    msg = jsonlite.dumps({"seccomp": True}).encode()
    anc_level, anc_type = _socket.SOL_SOCKET, _socket.SCM_RIGHTS
    fd = seccomp.install_filter(ctx.seccomp_bpf, flags, listener=True)
    ctx.seccomp_bpf = None  # loaded: nothing left to install before exec
    try:
        sock.sendmsg([msg], [(anc_level, anc_type, fd.to_bytes(4, sys.byteorder))])
    finally:
        os.close(fd)  # the container must never hold its own listener
    recv(sock)  # the parent passed it to the agent


def _setgroups_denied() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "deny"
    except OSError:
        return False


def _setup_terminal(ctx: InitContext) -> None:
    from pallet.oci.linux import console

    master, slave_path = console.open_pty_in("/dev/ptmx")
    slave = console.open_slave(master, slave_path)
    size = (ctx.process.get("consoleSize") or {})
    if size.get("height") and size.get("width"):
        console.set_winsize(slave, size["height"], size["width"])
    if ctx.console_fd is not None:
        console.send_fd_on(ctx.console_fd, master)
        os.close(ctx.console_fd)
    os.close(master)
    console.set_ctty(slave)


def exec_process(ctx: InitContext) -> None:
    from pallet.oci.linux import process

    # startContainer hooks run in the container, after start and before the user process.
    hooks = (ctx.spec.get("hooks") or {}).get("startContainer")
    if hooks and ctx.start_fd >= 0:
        from pallet.oci import hooks as hk

        hk.run_hooks(ctx.spec, "startContainer", {})
    if ctx.seccomp_bpf is not None and ctx.process.get("noNewPrivileges"):
        from pallet.oci.linux import seccomp

        seccomp.install_filter(ctx.seccomp_bpf,
                               ((ctx.spec.get("linux") or {}).get("seccomp") or {})
                               .get("flags"))
    process.close_fds_from(3 + ctx.preserve_fds)
    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
    os.execve(_PREPARED.path, ctx.process["args"], _PREPARED.env)


def _env(entries: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for e in entries:
        k, _, v = e.partition("=")
        env[k] = v
    return env


def _lookup(name: str, path: str | None) -> str:
    if "/" in name:
        if not os.path.exists(name):
            raise FileNotFoundError(2, f'exec: "{name}": stat {name}: no such file or directory')
        if os.path.isdir(name) or not os.access(name, os.X_OK):
            # Checked here, before start, so create fails as runc's does (docker's 126).
            raise PermissionError(13, f'exec: "{name}": permission denied')
        return name
    for d in (path or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        candidate = os.path.join(d or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(2, f'exec: "{name}": executable file not found in $PATH')


def exec_child(ctx: InitContext, sock: _socket.socket) -> None:
    """First child of exec: join the container's cgroup and namespaces, fork, exec."""
    try:
        preload(ctx)
        from pallet.oci.linux import process

        process.set_dumpable(False)
        _close_leaked_fds(ctx, sock)
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        for procs in ctx.cgroup_procs:
            try:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))
            except FileNotFoundError:
                pass
        fds = []
        same_mnt = True
        for _spec_name, proc_name in PROC_NS:
            mine = os.readlink(f"/proc/self/ns/{proc_name}") if os.path.exists(
                f"/proc/self/ns/{proc_name}") else None
            path = f"/proc/{ctx.join_pid}/ns/{proc_name}"
            try:
                theirs = os.readlink(path)
            except FileNotFoundError:
                continue
            if theirs != mine:
                fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
                same_mnt = same_mnt and proc_name != "mnt"
        # A container without a mount namespace of its own is only chrooted: take its root.
        root = os.open(f"/proc/{ctx.join_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) \
            if same_mnt else -1
        for fd in fds:
            sc.setns(fd, 0)
            os.close(fd)
        if root >= 0:
            os.fchdir(root)
            os.chroot(".")
            os.close(root)
        if ctx.stdio:
            _dup_stdio(ctx.stdio)
        pid = os.fork()
        if pid:
            send(sock, pid=pid)
            os._exit(0)
        recv(sock)  # the parent has our host pid (see create_child)

        def report() -> None:
            send(sock, created=True)
            sock.close()

        prepare_process(ctx, sock, report)
        exec_process(ctx)
    except BaseException as e:  # noqa: BLE001
        _fail(sock, e)
    sys.exit(1)
