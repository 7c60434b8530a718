"""The cgroup v2 device filter: a BPF_PROG_TYPE_CGROUP_DEVICE program assembled by hand, as runc's devicefilter.

Loaded and attached with bpf(2) through ctypes (cgroup v2 has no devices.allow); replaces older filters.
"""

import ctypes
import os
import struct

from pallet.oci.cgroups.devices import WILDCARD, DeviceList
from pallet.oci.cgroups.errors import CgroupError

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

# Opcodes used (see linux/bpf_common.h): class | op | source.
LDX_MEM_W = 0x61  # dst = *(u32 *)(src + off)
ALU32_AND_K = 0x54
ALU32_RSH_K = 0x74
ALU32_MOV_K = 0xB4
ALU32_MOV_X = 0xBC
JMP_JNE_K = 0x55
JMP_JNE_X = 0x5D
JMP_EXIT = 0x95

R0, R1, R2, R3, R4, R5 = range(6)

# struct bpf_cgroup_dev_ctx.access_type: low 16 bits the device type, high 16 the access.
_TYPE = {"b": 1, "c": 2}
_ACCESS = {"m": 1, "r": 2, "w": 4}


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One struct bpf_insn: u8 code, u8 dst:4|src:4, s16 off, s32 imm (little-endian regs order)."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def assemble(state: DeviceList) -> bytes:
    """The filter program for a device state: exceptions return the opposite of the default."""
    prog = [
        insn(LDX_MEM_W, R2, R1, 0),  # R2 = access_type
        insn(ALU32_AND_K, R2, imm=0xFFFF),  # R2 = device type
        insn(LDX_MEM_W, R3, R1, 0),
        insn(ALU32_RSH_K, R3, imm=16),  # R3 = requested access
        insn(LDX_MEM_W, R4, R1, 4),  # R4 = major
        insn(LDX_MEM_W, R5, R1, 8),  # R5 = minor
    ]
    verdict = 0 if state.default_allow else 1
    for (kind, major, minor), access in sorted(state.exceptions.items()):
        block: list[bytes] = []
        if kind != "a":
            block.append(insn(JMP_JNE_K, R2, imm=_TYPE[kind]))
        bits = sum(_ACCESS[c] for c in access)
        if bits != 7:
            # Match only if every requested bit is granted by the rule: (R3 & bits) == R3.
            block.append(insn(ALU32_MOV_X, R1, R3))
            block.append(insn(ALU32_AND_K, R1, imm=bits))
            block.append(insn(JMP_JNE_X, R1, R3))
        if major != WILDCARD:
            block.append(insn(JMP_JNE_K, R4, imm=major))
        if minor != WILDCARD:
            block.append(insn(JMP_JNE_K, R5, imm=minor))
        block += [insn(ALU32_MOV_K, R0, imm=verdict), insn(JMP_EXIT)]
        # Each jump skips to the end of this block: patch offsets now that its length is known.
        n = len(block)
        for i, raw in enumerate(block):
            code = raw[0]
            if code in (JMP_JNE_K, JMP_JNE_X):
                _, regs, _, imm = struct.unpack("<BBhi", raw)
                block[i] = struct.pack("<BBhi", code, regs, n - i - 1, imm)
        prog += block
    prog += [insn(ALU32_MOV_K, R0, imm=1 - verdict), insn(JMP_EXIT)]
    return b"".join(prog)


_libc: ctypes.CDLL | None = None


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    libc = _libc
    machine = os.uname().machine  # what platform.machine() returns, without importing platform
    nr = _SYS_BPF.get(machine)
    if nr is None:
        raise CgroupError(f"bpf(2) syscall number unknown for {machine}")
    res = libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def load(program: bytes) -> int:
    """Load the program into the kernel; returns its fd. The verifier's log goes into errors."""
    try:
        return _load(program, None)
    except OSError:
        pass
    # Only a failed load pays for the verifier log, which must then fit its buffer.
    log = ctypes.create_string_buffer(1 << 20)
    try:
        return _load(program, log)
    except OSError as e:
        verifier = log.value.decode(errors="replace").strip().splitlines()
        tail = f"; verifier: {verifier[-1]}" if verifier else ""
        raise CgroupError(f"kernel refused the device filter program: {e.strerror}{tail}") from None


def _load(program: bytes, log: ctypes.Array | None) -> int:
    insns = ctypes.create_string_buffer(program, len(program))
    license = ctypes.create_string_buffer(b"Apache")
    attr = ctypes.create_string_buffer(128)
    log_level, log_size, log_addr = (1, len(log), ctypes.addressof(log)) if log else (0, 0, 0)
    # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size, log_buf.
    struct.pack_into(
        "<IIQQIIQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(program) // 8,
        ctypes.addressof(insns), ctypes.addressof(license), log_level, log_size, log_addr,
    )  # fmt: skip
    return _bpf(BPF_PROG_LOAD, attr)


def attached(dirfd: int) -> list[int]:
    """Ids of the device programs attached to a cgroup directory."""
    ids = (ctypes.c_uint32 * 64)()
    attr = ctypes.create_string_buffer(128)
    # BPF_PROG_QUERY: target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt.
    struct.pack_into("<IIIIQI", attr, 0, dirfd, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), 64)
    _bpf(BPF_PROG_QUERY, attr)
    count = struct.unpack_from("<I", attr, 24)[0]
    return list(ids[:count])


def _prog_fd(prog_id: int) -> int:
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<I", attr, 0, prog_id)
    return _bpf(BPF_PROG_GET_FD_BY_ID, attr)


def _attach_cmd(cmd: int, dirfd: int, prog_fd: int, flags: int) -> None:
    attr = ctypes.create_string_buffer(128)
    # BPF_PROG_ATTACH/DETACH: target_fd, attach_bpf_fd, attach_type, attach_flags.
    struct.pack_into("<IIII", attr, 0, dirfd, prog_fd, BPF_CGROUP_DEVICE, flags)
    _bpf(cmd, attr)


def install(cgroup_dir: str, state: DeviceList) -> None:
    """Attach the filter for state to a cgroup v2 directory, then detach the ones it replaces.

    New before old, so the container is never without a filter in between (runc does the same).
    """
    prog_fd = load(assemble(state))
    try:
        dirfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        os.close(prog_fd)
        raise CgroupError(f"cannot open cgroup {cgroup_dir}: {e.strerror}") from None
    try:
        old = attached(dirfd)
        _attach_cmd(BPF_PROG_ATTACH, dirfd, prog_fd, BPF_F_ALLOW_MULTI)
        for prog_id in old:
            fd = _prog_fd(prog_id)
            try:
                _attach_cmd(BPF_PROG_DETACH, dirfd, fd, 0)
            finally:
                os.close(fd)
    except OSError as e:
        raise CgroupError(f"cannot attach device filter to {cgroup_dir}: {e.strerror}") from None
    finally:
        os.close(dirfd)
        os.close(prog_fd)
