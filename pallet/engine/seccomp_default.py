"""Docker's default seccomp profile, and the evaluation that turns a Docker-format
profile (archMap, includes/excludes by capability, arch and kernel) into OCI linux.seccomp.

The rules are moby's profiles/seccomp/default.json (Apache-2.0), restated as
Python data so the package needs no data files. A rule whose `includes` are not
all met, or any of whose `excludes` is met, is left out at spec-generation time,
exactly as moby's setupSeccomp does: e.g. `mount` is allowed only when the
container's bounding set holds CAP_SYS_ADMIN.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from pallet.errors import InvalidArgument

# Syscalls every container may make. One string, split, to keep ~370 names readable.
_ALLOWED = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
fchmod fchmodat fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr
flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync
ftruncate ftruncate64 futex futex_time64 futex_waitv futimesat getcpu getcwd getdents
getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32
getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid
getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid getsockname
getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr
inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy
io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit
io_uring_enter io_uring_register io_uring_setup ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat
listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise
membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2
mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget
msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat
_newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc
pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64
process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead
readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg
remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq
rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity
sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min
sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp
select semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64
sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32
setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid
setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid
setsockopt set_thread_area set_tid_address setuid setuid32 setxattr shmat shmctl shmdt
shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall
socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete
timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64
timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times
tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat utime utimensat
utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
""".split()

_ALLOW = "SCMP_ACT_ALLOW"
# CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET: without CAP_SYS_ADMIN,
# clone may not create namespaces (the flags must all be clear under the mask).
_CLONE_NS_MASK = 2114060288
_AF_VSOCK = 40


def _allow_if_cap(names: list[str], cap: str) -> dict[str, Any]:
    return {"names": names, "action": _ALLOW, "includes": {"caps": [cap]}}


def _personality(value: int) -> dict[str, Any]:
    return {
        "names": ["personality"],
        "action": _ALLOW,
        "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}],
    }


# The profile in Docker's format. Kept as a function so callers get their own copy.
def docker_default_profile() -> dict[str, Any]:
    """Docker's default profile, in Docker's (not OCI's) format."""
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {
                "architecture": "SCMP_ARCH_X86_64",
                "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            },
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
            {
                "architecture": "SCMP_ARCH_MIPS64",
                "subArchitectures": ["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"],
            },
            {
                "architecture": "SCMP_ARCH_MIPS64N32",
                "subArchitectures": ["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"],
            },
            {
                "architecture": "SCMP_ARCH_MIPSEL64",
                "subArchitectures": ["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"],
            },
            {
                "architecture": "SCMP_ARCH_MIPSEL64N32",
                "subArchitectures": ["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"],
            },
            {"architecture": "SCMP_ARCH_S390X", "subArchitectures": ["SCMP_ARCH_S390"]},
            {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": []},
        ],
        "syscalls": [
            {"names": list(_ALLOWED), "action": _ALLOW},
            {
                "names": ["process_vm_readv", "process_vm_writev", "ptrace"],
                "action": _ALLOW,
                # Before 4.8 ptrace could bypass seccomp itself.
                "includes": {"minKernel": "4.8"},
            },
            {
                "names": ["socket"],
                "action": _ALLOW,
                "args": [{"index": 0, "value": _AF_VSOCK, "op": "SCMP_CMP_NE"}],
            },
            # Only the harmless execution domains: PER_LINUX, PER_LINUX32,
            # UNAME26 variants, and the 0xffffffff query.
            _personality(0),
            _personality(8),
            _personality(131072),
            _personality(131080),
            _personality(4294967295),
            {
                "names": ["sync_file_range2", "swapcontext"],
                "action": _ALLOW,
                "includes": {"arches": ["ppc64le"]},
            },
            {
                "names": [
                    "arm_fadvise64_64",
                    "arm_sync_file_range",
                    "sync_file_range2",
                    "breakpoint",
                    "cacheflush",
                    "set_tls",
                ],
                "action": _ALLOW,
                "includes": {"arches": ["arm", "arm64"]},
            },
            {"names": ["arch_prctl"], "action": _ALLOW, "includes": {"arches": ["amd64", "x32"]}},
            {
                "names": ["modify_ldt"],
                "action": _ALLOW,
                "includes": {"arches": ["amd64", "x32", "x86"]},
            },
            {
                "names": ["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"],
                "action": _ALLOW,
                "includes": {"arches": ["s390", "s390x"]},
            },
            {
                "names": ["riscv_flush_icache"],
                "action": _ALLOW,
                "includes": {"arches": ["riscv64"]},
            },
            _allow_if_cap(["open_by_handle_at"], "CAP_DAC_READ_SEARCH"),
            _allow_if_cap(
                [
                    "bpf",
                    "clone",
                    "clone3",
                    "fanotify_init",
                    "fsconfig",
                    "fsmount",
                    "fsopen",
                    "fspick",
                    "lookup_dcookie",
                    "mount",
                    "mount_setattr",
                    "move_mount",
                    "open_tree",
                    "perf_event_open",
                    "quotactl",
                    "quotactl_fd",
                    "setdomainname",
                    "sethostname",
                    "setns",
                    "syslog",
                    "umount",
                    "umount2",
                    "unshare",
                ],  # fmt: skip
                "CAP_SYS_ADMIN",
            ),
            {
                "names": ["clone"],
                "action": _ALLOW,
                "args": [{"index": 0, "value": _CLONE_NS_MASK, "op": "SCMP_CMP_MASKED_EQ"}],
                "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]},
            },
            {
                "names": ["clone"],
                "action": _ALLOW,
                # s390 passes clone's flags as the second argument.
                "args": [{"index": 1, "value": _CLONE_NS_MASK, "op": "SCMP_CMP_MASKED_EQ"}],
                "includes": {"arches": ["s390", "s390x"]},
                "excludes": {"caps": ["CAP_SYS_ADMIN"]},
            },
            {
                # clone3 passes flags in memory seccomp cannot inspect; ENOSYS makes
                # libc fall back to clone, which the rule above can check.
                "names": ["clone3"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 38,
                "excludes": {"caps": ["CAP_SYS_ADMIN"]},
            },
            _allow_if_cap(["reboot"], "CAP_SYS_BOOT"),
            _allow_if_cap(["chroot"], "CAP_SYS_CHROOT"),
            _allow_if_cap(["delete_module", "init_module", "finit_module"], "CAP_SYS_MODULE"),
            _allow_if_cap(["acct"], "CAP_SYS_PACCT"),
            _allow_if_cap(
                [
                    "kcmp",
                    "pidfd_getfd",
                    "process_madvise",
                    "process_vm_readv",
                    "process_vm_writev",
                    "ptrace",
                ],
                "CAP_SYS_PTRACE",
            ),
            _allow_if_cap(["iopl", "ioperm"], "CAP_SYS_RAWIO"),
            _allow_if_cap(
                ["settimeofday", "stime", "clock_settime", "clock_settime64"], "CAP_SYS_TIME"
            ),
            _allow_if_cap(["vhangup"], "CAP_SYS_TTY_CONFIG"),
            _allow_if_cap(
                ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
                "CAP_SYS_NICE",
            ),
            _allow_if_cap(["syslog"], "CAP_SYSLOG"),
            _allow_if_cap(["bpf"], "CAP_BPF"),
            _allow_if_cap(["perf_event_open"], "CAP_PERFMON"),
        ],
    }


# Host machine (uname -m) -> (Go arch name used by profile `arches`, native SCMP arch).
_MACHINES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "amd64": ("amd64", "SCMP_ARCH_X86_64"),
    "i386": ("386", "SCMP_ARCH_X86"),
    "i686": ("386", "SCMP_ARCH_X86"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "arm64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "armv6l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "mips64": ("mips64", "SCMP_ARCH_MIPS64"),
}

_ACTIONS = {
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
}  # fmt: skip
_OPS = {
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
    "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ",
}  # fmt: skip


def machine_arches(machine: str) -> tuple[str, str]:
    """(Go arch, native SCMP arch) for a `uname -m` value; unknown machines are refused."""
    try:
        return _MACHINES[machine]
    except KeyError:
        raise InvalidArgument(
            f"seccomp: unsupported machine {machine!r}; known: {', '.join(sorted(_MACHINES))}"
        ) from None


def _kernel_at_least(kernel: str, wanted: str) -> bool:
    def parse(text: str) -> tuple[int, int]:
        m = re.match(r"(\d+)\.(\d+)", text)
        if not m:
            raise InvalidArgument(
                f"seccomp: cannot read kernel version {text!r}; expected MAJOR.MINOR"
            )
        return int(m.group(1)), int(m.group(2))

    return parse(kernel) >= parse(wanted)


def render_oci(
    profile: dict[str, Any],
    *,
    capabilities: Iterable[str],
    machine: str,
    kernel: str,
) -> dict[str, Any]:
    """Evaluate a Docker-format (or plain OCI) profile into an OCI linux.seccomp object.

    `capabilities` is the container's bounding set; `machine` is `uname -m` and
    `kernel` the kernel release, both of the host that will run the container.
    """
    if not isinstance(profile, dict):
        raise InvalidArgument("seccomp profile must be a JSON object")
    caps = set(capabilities)
    goarch, native = machine_arches(machine)
    if profile.get("architectures") and profile.get("archMap"):
        raise InvalidArgument(
            "seccomp profile has both 'architectures' and 'archMap'; use one of them"
        )
    default = profile.get("defaultAction")
    if default not in _ACTIONS:
        raise InvalidArgument(f"seccomp profile: unknown defaultAction {default!r}")
    out: dict[str, Any] = {"defaultAction": default}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = int(profile["defaultErrnoRet"])
    if profile.get("architectures"):
        out["architectures"] = list(profile["architectures"])
    elif profile.get("archMap"):
        # Only the host's own family: its native arch plus compat sub-arches.
        for entry in profile["archMap"]:
            if entry.get("architecture") == native:
                out["architectures"] = [native, *(entry.get("subArchitectures") or [])]
    for key in ("flags", "listenerPath", "listenerMetadata"):
        if profile.get(key):
            out[key] = copy.deepcopy(profile[key])
    syscalls = []
    for index, rule in enumerate(profile.get("syscalls") or []):
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        if rule.get("name") and rule.get("names"):
            raise InvalidArgument(
                f"seccomp profile rule {index} has both 'name' and 'names'; use 'names'"
            )
        if not names:
            raise InvalidArgument(f"seccomp profile rule {index} names no syscalls")
        if rule.get("action") not in _ACTIONS:
            raise InvalidArgument(
                f"seccomp profile rule {index}: unknown action {rule.get('action')!r}"
            )
        if not _included(rule.get("includes"), caps, goarch, kernel):
            continue
        if _excluded(rule.get("excludes"), caps, goarch, kernel):
            continue
        entry: dict[str, Any] = {"names": list(names), "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            entry["errnoRet"] = int(rule["errnoRet"])
        if rule.get("args"):
            entry["args"] = [_arg(a, index) for a in rule["args"]]
        syscalls.append(entry)
    out["syscalls"] = syscalls
    return out


def _included(cond: dict[str, Any] | None, caps: set[str], goarch: str, kernel: str) -> bool:
    # Every stated condition must hold: all arches-of-one, all caps, kernel >= min.
    if not cond:
        return True
    if cond.get("arches") and goarch not in cond["arches"]:
        return False
    if cond.get("caps") and not all(c in caps for c in cond["caps"]):
        return False
    if cond.get("minKernel") and not _kernel_at_least(kernel, str(cond["minKernel"])):
        return False
    return True


def _excluded(cond: dict[str, Any] | None, caps: set[str], goarch: str, kernel: str) -> bool:
    # Any one stated condition excludes the rule.
    if not cond:
        return False
    if cond.get("arches") and goarch in cond["arches"]:
        return True
    if cond.get("caps") and any(c in caps for c in cond["caps"]):
        return True
    if cond.get("minKernel") and _kernel_at_least(kernel, str(cond["minKernel"])):
        return True
    return False


def _arg(arg: dict[str, Any], index: int) -> dict[str, Any]:
    if arg.get("op") not in _OPS:
        raise InvalidArgument(
            f"seccomp profile rule {index}: unknown argument op {arg.get('op')!r}"
        )
    out = {"index": int(arg["index"]), "value": int(arg["value"]), "op": arg["op"]}
    if arg.get("valueTwo"):
        out["valueTwo"] = int(arg["valueTwo"])
    return out
