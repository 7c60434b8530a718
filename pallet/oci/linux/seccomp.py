"""Seccomp for containers: compile the spec's linux.seccomp into a BPF program
in the runtime parent, and install that program in the child just before execve.

Compiling needs libseccomp (loaded lazily, only by `compile_filter`); installing
needs nothing but one seccomp(2) call, so the child does no work it could fail at
after the point of no return. A profile with SCMP_ACT_NOTIFY rules is installed
with a new listener; the child hands that fd to the runtime, which passes it on to
the agent at linux.seccomp.listenerPath (`send_to_agent`).
"""

from __future__ import annotations

import os
import sys

from pallet.errors import SpecError, SystemFailure
from pallet.oci.linux import libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes  # only compiling imports it (~2.7 ms): installing goes through libc

# OCI action name -> libseccomp action value (scmp_act); ERRNO/TRACE take a
# 16-bit return value in their low bits.
_ACT_KILL_THREAD = 0x00000000
_ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": _ACT_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": _ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,
}
_ACTIONS_WITH_RET = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

# enum scmp_compare
_OPS: dict[str, int] = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# The OCI names are libseccomp's own, upper-cased with a prefix.
_ARCHES = (
    "x86", "x86_64", "x32", "arm", "aarch64", "mips", "mips64", "mips64n32",
    "mipsel", "mipsel64", "mipsel64n32", "ppc", "ppc64", "ppc64le", "s390",
    "s390x", "parisc", "parisc64", "riscv64",
)  # fmt: skip

# OCI flag name -> SECCOMP_FILTER_FLAG_* bit for seccomp(2).
FILTER_FLAGS: dict[str, int] = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    # Only means something with a user-notification listener; the kernel rejects
    # it without one, so install_filter drops it from a filter that has none.
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}
# Not OCI names: implied by SCMP_ACT_NOTIFY rules (the listener), and needed with
# TSYNC, which the kernel refuses next to a listener unless told to report a failed
# thread sync as ESRCH instead of the thread's id (the listener fd takes the return value).
_FLAG_NEW_LISTENER = 8
_FLAG_TSYNC_ESRCH = 16
_FLAG_WAIT_KILLABLE_RECV = 32
# The child hands the listener fd to the runtime with sendmsg(2), after the filter is
# loaded and before anyone can answer a notification: a notifying sendmsg would hang
# create for ever. (runc refuses write(2) for the same reason: its hand-over uses write.)
_HANDOVER_SYSCALLS = ("sendmsg",)

_EPERM = 1
_NR_SCMP_ERROR = -1
_SCMP_FLTATR_CTL_NNP = 3
_MAX_ARGS = 6


def _action(name: object, ret: object, field: str) -> int:
    if not isinstance(name, str) or name not in _ACTIONS:
        raise SpecError(f"{field}: unknown seccomp action {name!r}")
    value = _ACTIONS[name]
    if name in _ACTIONS_WITH_RET:
        # Like runc: no errnoRet means EPERM.
        if ret is None:
            ret = _EPERM
        if isinstance(ret, bool) or not isinstance(ret, int) or not 0 <= ret <= 0xFFFF:
            raise SpecError(f"{field}: errnoRet must be an integer 0..65535, got {ret!r}")
        value |= ret
    return value


def _u64(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise SpecError(f"{field}: must be an unsigned 64-bit integer, got {value!r}")
    return value


def _conditions(args: object, field: str) -> list[tuple[int, int, int, int]]:
    if args is None:
        return []
    if not isinstance(args, list):
        raise SpecError(f"{field}: must be a list")
    out = []
    for i, arg in enumerate(args):
        f = f"{field}[{i}]"
        if not isinstance(arg, dict):
            raise SpecError(f"{f}: must be an object")
        index = arg.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < _MAX_ARGS:
            raise SpecError(f"{f}.index: must be 0..5, got {index!r}")
        op = arg.get("op")
        if op not in _OPS:
            raise SpecError(f"{f}.op: unknown seccomp operator {op!r}")
        value = _u64(arg.get("value", 0), f"{f}.value")
        value_two = _u64(arg.get("valueTwo", 0), f"{f}.valueTwo")
        # For MASKED_EQ libseccomp takes (mask, expected) in that order, which
        # is what the OCI spec means by (value, valueTwo).
        out.append((index, _OPS[op], value, value_two))
    return out


def uses_notify(seccomp: dict) -> bool:
    """Whether any rule of an OCI linux.seccomp object has the SCMP_ACT_NOTIFY action."""
    return any(isinstance(call, dict) and call.get("action") == "SCMP_ACT_NOTIFY"
               for call in seccomp.get("syscalls") or ())


def _check_listener(seccomp: dict) -> None:
    path = seccomp.get("listenerPath")
    if path is not None and (not isinstance(path, str) or not path):
        raise SpecError(f"linux.seccomp.listenerPath: must be a socket path, got {path!r}")
    meta = seccomp.get("listenerMetadata")
    if meta is not None and not isinstance(meta, str):
        raise SpecError(f"linux.seccomp.listenerMetadata: must be a string, got {meta!r}")
    if meta and not path:
        raise SpecError("linux.seccomp.listenerMetadata: set without linux.seccomp.listenerPath")
    if not path and uses_notify(seccomp):
        raise SpecError("linux.seccomp.listenerPath: required when SCMP_ACT_NOTIFY is used "
                        "(the unix socket of the seccomp agent that answers the notifications)")


def check_flags(flags: object, field: str = "linux.seccomp.flags") -> int:
    """The seccomp(2) flag bits for the spec's flag names; SpecError on an unknown one."""
    if flags is None:
        return 0
    if not isinstance(flags, list):
        raise SpecError(f"{field}: must be a list")
    bits = 0
    for flag in flags:
        if flag not in FILTER_FLAGS:
            raise SpecError(f"{field}: unknown seccomp flag {flag!r}")
        bits |= FILTER_FLAGS[flag]
    return bits


class _Libseccomp:
    """The few libseccomp calls compiling needs, loaded on first use."""

    def __init__(self) -> None:
        import ctypes

        class ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
            _fields_ = [
                ("arg", ctypes.c_uint),
                ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64),
            ]

        self.arg_cmp = ArgCmp
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as e:
            raise SystemFailure(
                f"seccomp: cannot load libseccomp.so.2 ({e}); install libseccomp2"
            ) from None
        c_void_p, c_uint32, c_int, c_char_p = (
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_char_p,
        )
        lib.seccomp_init.argtypes = (c_uint32,)
        lib.seccomp_init.restype = c_void_p
        lib.seccomp_release.argtypes = (c_void_p,)
        lib.seccomp_release.restype = None
        lib.seccomp_attr_set.argtypes = (c_void_p, c_int, c_uint32)
        lib.seccomp_attr_set.restype = c_int
        lib.seccomp_arch_add.argtypes = (c_void_p, c_uint32)
        lib.seccomp_arch_add.restype = c_int
        lib.seccomp_arch_resolve_name.argtypes = (c_char_p,)
        lib.seccomp_arch_resolve_name.restype = c_uint32
        lib.seccomp_syscall_resolve_name.argtypes = (c_char_p,)
        lib.seccomp_syscall_resolve_name.restype = c_int
        lib.seccomp_rule_add_array.argtypes = (c_void_p, c_uint32, c_int, ctypes.c_uint, c_void_p)
        lib.seccomp_rule_add_array.restype = c_int
        lib.seccomp_export_bpf.argtypes = (c_void_p, c_int)
        lib.seccomp_export_bpf.restype = c_int
        self.lib = lib


_lib: _Libseccomp | None = None


def _libseccomp() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        _lib = _Libseccomp()
    return _lib.lib


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise SystemFailure(f"seccomp: {what}: {os.strerror(-rc)}")


def compile_filter(seccomp: dict) -> bytes:
    """The raw BPF program (struct sock_filter array) for an OCI linux.seccomp object.

    Raises SpecError naming the field and value for anything libseccomp cannot
    express, so the runtime fails before it has created anything.
    """
    if not isinstance(seccomp, dict):
        raise SpecError("linux.seccomp: must be an object")
    check_flags(seccomp.get("flags"))
    _check_listener(seccomp)
    if seccomp.get("defaultAction") == "SCMP_ACT_NOTIFY":
        # Like runc: it would notify the hand-over of the listener itself.
        raise SpecError("linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default "
                        "action; name the syscalls to notify in linux.seccomp.syscalls")
    default = _action(
        seccomp.get("defaultAction"), seccomp.get("defaultErrnoRet"), "linux.seccomp.defaultAction"
    )
    lib = _libseccomp()

    arches = seccomp.get("architectures") or []
    if not isinstance(arches, list):
        raise SpecError("linux.seccomp.architectures: must be a list")
    arch_tokens = []
    for i, arch in enumerate(arches):
        name = (
            arch[len("SCMP_ARCH_") :].lower()
            if isinstance(arch, str) and arch.startswith("SCMP_ARCH_")
            else None
        )
        token = lib.seccomp_arch_resolve_name(name.encode()) if name in _ARCHES else 0
        if not token:
            raise SpecError(f"linux.seccomp.architectures[{i}]: unknown architecture {arch!r}")
        arch_tokens.append(token)

    syscalls = seccomp.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise SpecError("linux.seccomp.syscalls: must be a list")
    rules: list[tuple[int, int, list[tuple[int, int, int, int]]]] = []
    for i, call in enumerate(syscalls):
        field = f"linux.seccomp.syscalls[{i}]"
        if not isinstance(call, dict):
            raise SpecError(f"{field}: must be an object")
        action = _action(call.get("action"), call.get("errnoRet"), f"{field}.action")
        conds = _conditions(call.get("args"), f"{field}.args")
        names = call.get("names")
        if not isinstance(names, list) or not names:
            raise SpecError(f"{field}.names: must be a non-empty list of syscall names")
        for name in names:
            if not isinstance(name, str) or not name:
                raise SpecError(f"{field}.names: {name!r} is not a syscall name")
            if name in _HANDOVER_SYSCALLS and call.get("action") == "SCMP_ACT_NOTIFY":
                raise SpecError(
                    f"{field}: SCMP_ACT_NOTIFY cannot be used for {name}: the container's init "
                    "passes the notification fd to the runtime with it"
                )
            # For a name that exists only on other architectures libseccomp
            # returns a negative pseudo-number and places the rule only where
            # it exists; -1 means no architecture has it: a typo.
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == _NR_SCMP_ERROR:
                raise SpecError(f'{field}.names: unknown syscall "{name}"')
            # libseccomp refuses a rule whose action is the default one; it
            # would change nothing anyway (runc skips it too).
            if action != default:
                rules.append((nr, action, conds))

    ctx = lib.seccomp_init(default)
    if not ctx:
        raise SystemFailure(
            f"seccomp: cannot create a filter with default action {seccomp.get('defaultAction')}"
        )
    try:
        # The child sets no_new_privs itself when the spec asks; the filter
        # must not force it.
        _check(lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_NNP, 0), "clearing the NNP attribute")
        for token in arch_tokens:
            rc = lib.seccomp_arch_add(ctx, token)
            if rc < 0 and rc != -17:  # -EEXIST: the native arch is always there
                _check(rc, f"adding architecture {token:#x}")
        for nr, action, conds in rules:
            _add_rule(lib, ctx, nr, action, conds)
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _add_rule(
    lib: ctypes.CDLL, ctx: int, nr: int, action: int, conds: list[tuple[int, int, int, int]]
) -> None:
    # Several conditions on the same argument cannot be ANDed in one libseccomp
    # rule; like runc, each then becomes a rule of its own (so they are ORed).
    indexes = [c[0] for c in conds]
    groups = [[c] for c in conds] if len(set(indexes)) != len(indexes) else [conds]
    for group in groups:
        arr = (_lib.arg_cmp * max(len(group), 1))()  # type: ignore[union-attr]
        for j, (index, op, a, b) in enumerate(group):
            arr[j].arg, arr[j].op, arr[j].datum_a, arr[j].datum_b = index, op, a, b
        rc = lib.seccomp_rule_add_array(ctx, action, nr, len(group), arr)
        if rc < 0 and nr < _NR_SCMP_ERROR:
            # A syscall that none of this filter's architectures has: nothing
            # to filter.
            continue
        _check(rc, f"adding a rule for syscall {nr}")


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    fd = os.memfd_create("pallet-seccomp", os.MFD_CLOEXEC)
    try:
        _check(lib.seccomp_export_bpf(ctx, fd), "exporting the BPF program")
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# --- installing: runs in the container child, so everything is prepared here.

_prctl = libc.LIBC.int_function("prctl")
_SECCOMP_SET_MODE_FILTER = 1
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_ENOSYS = 38
_ESRCH = 3
_EFAULT = 14
# seccomp(2) has a different number on each architecture.
_NR_SECCOMP = {
    "x86_64": 317, "i386": 354, "i686": 354, "aarch64": 277, "armv7l": 383, "armv8l": 383,
    "ppc64le": 358, "ppc64": 358, "s390x": 348, "riscv64": 277, "mips64": 5312,
}.get(os.uname().machine)  # fmt: skip


def install_filter(bpf: bytes, flags: list[str] | None = None, listener: bool = False) -> int:
    """Load `bpf` (from compile_filter) as this thread's seccomp filter.

    `flags` are the OCI names (SECCOMP_FILTER_FLAG_*). Without CAP_SYS_ADMIN
    the caller must have set no_new_privs first. With `listener` the filter gets
    a user-notification listener, whose fd (close-on-exec) is returned; else -1.
    """
    if not bpf or len(bpf) % 8:
        raise SystemFailure(
            f"seccomp: BPF program of {len(bpf)} bytes is not a whole number of instructions"
        )
    bits = check_flags(flags or [])
    if listener:
        bits |= _FLAG_NEW_LISTENER | (_FLAG_TSYNC_ESRCH if bits & 1 else 0)
    else:
        bits &= ~_FLAG_WAIT_KILLABLE_RECV
    buf = libc.buffer(bpf)
    # struct sock_fprog {unsigned short len; (padding) struct sock_filter *filter}
    prog = libc.pack((len(bpf) // 8, 2), (0, 6), (libc.address(buf), 8))
    err = _ENOSYS
    if _NR_SECCOMP is not None:
        rc = libc.syscall(libc.c_long(_NR_SECCOMP), libc.c_long(_SECCOMP_SET_MODE_FILTER),
                          libc.c_long(bits), prog)
        if listener and rc >= 0:
            return rc
        if rc == 0:
            return -1
        if rc > 0:
            # With TSYNC the kernel names the thread it could not synchronize.
            raise SystemFailure(f"seccomp: cannot synchronize the filter to thread {rc}")
        err = libc.get_errno()
    if err == _ENOSYS and not bits:
        # Kernels before 3.17 only have prctl, which cannot take flags.
        rc = _prctl(_PR_SET_SECCOMP, libc.c_ulong(_SECCOMP_MODE_FILTER), prog,
                    libc.c_ulong(0), libc.c_ulong(0))
        if rc == 0:
            return -1
        err = libc.get_errno()
    if listener and err == _ESRCH:
        raise SystemFailure("seccomp: cannot synchronize the filter to all threads")
    raise SystemFailure(f"seccomp: installing the filter failed: {os.strerror(err)}")


def supported_flags() -> list[str]:
    """The OCI flag names this kernel accepts, probed the way libseccomp does: an invalid
    flag fails with EINVAL before the kernel reads the (NULL) program, a valid one EFAULT."""
    if _NR_SECCOMP is None:
        return []
    out = []
    for name, bit in FILTER_FLAGS.items():
        if bit & _FLAG_WAIT_KILLABLE_RECV:
            bit |= _FLAG_NEW_LISTENER  # alone it is always invalid
        rc = libc.syscall(libc.c_long(_NR_SECCOMP), libc.c_long(_SECCOMP_SET_MODE_FILTER),
                          libc.c_long(bit), None)
        if rc < 0 and libc.get_errno() == _EFAULT:
            out.append(name)
    return out


# --- the agent: runs in the runtime parent, which received the listener from the child.


def process_state(seccomp: dict, pid: int, state: dict) -> dict:
    """The runtime spec's container process state for the agent at listenerPath.

    PID is the process the filter belongs to; STATE the container's state (runtime.md).
    """
    keep = ("ociVersion", "id", "status", "pid", "bundle", "annotations")
    msg = {"ociVersion": state.get("ociVersion", "1.0.2"), "fds": ["seccompFd"], "pid": pid,
           "state": {k: state[k] for k in keep if k in state}}
    if seccomp.get("listenerMetadata"):
        msg["metadata"] = seccomp["listenerMetadata"]
    return msg


def send_to_agent(path: str, payload: bytes, fd: int, connect: object = None) -> None:
    """Send PAYLOAD and FD (SCM_RIGHTS, with the first bytes) over one new connection to
    the unix socket PATH, then close it: one container process state per connection.

    CONNECT(sock, path) may replace sock.connect (for paths longer than sun_path).
    """
    import _socket

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            if connect is not None:
                connect(s, path)  # type: ignore[operator]
            else:
                s.connect(path)
        except OSError as e:
            raise SystemFailure(f"linux.seccomp.listenerPath {path}: cannot connect to the "
                                f"seccomp agent: {e.strerror}") from None
        try:
            sent = s.sendmsg([payload], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                          fd.to_bytes(4, sys.byteorder))])
            if sent < len(payload):
                s.sendall(payload[sent:])
        except OSError as e:
            raise SystemFailure(f"linux.seccomp.listenerPath {path}: cannot send the seccomp "
                                f"fd to the agent: {e.strerror}") from None
    finally:
        s.close()
