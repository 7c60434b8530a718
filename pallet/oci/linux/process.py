"""Small per-process settings of the container child: no_new_privs, personality,
oom_score_adj, dumpable, and marking inherited fds close-on-exec.
"""

from __future__ import annotations

import errno
import os

from pallet.errors import SpecError, SystemFailure
from pallet.oci.linux import libc

# linux.personality.domain -> the persona for personality(2).
PERSONALITIES: dict[str, int] = {"LINUX": 0x0000, "LINUX32": 0x0008}

_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_NR_CLOSE_RANGE = 436  # the same on every architecture (added after the syscall table unification)
_CLOSE_RANGE_CLOEXEC = 1 << 2
_UINT_MAX = 0xFFFFFFFF

_prctl = libc.LIBC.int_function("prctl")
_personality = libc.LIBC.int_function("personality")


def _fail(what: str) -> SystemFailure:
    return SystemFailure(f"{what}: {os.strerror(libc.get_errno())}")


def set_no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS: execve can no longer grant privileges (setuid bits, file caps)."""
    if _prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _fail("setting no_new_privs")


def personality_value(domain: object) -> int:
    """The persona number for a linux.personality.domain; SpecError naming an unknown one."""
    if domain not in PERSONALITIES:
        raise SpecError(
            f"linux.personality.domain: unknown domain {domain!r} (expected LINUX or LINUX32)"
        )
    return PERSONALITIES[domain]  # type: ignore[index]


def set_personality(domain: str) -> None:
    """personality(2) for the spec's domain (LINUX32 makes uname report a 32-bit machine)."""
    if _personality(personality_value(domain)) == -1:
        raise _fail(f"setting personality {domain}")


def set_oom_score_adj(value: int) -> None:
    """Write /proc/self/oom_score_adj.

    Lowering it needs CAP_SYS_RESOURCE; the error says so and the caller
    decides whether to clamp (containerd's restrict_oom_score_adj) or fail.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not -1000 <= value <= 1000:
        raise SpecError(f"process.oomScoreAdj: must be -1000..1000, got {value!r}")
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            raise SystemFailure(
                f"process.oomScoreAdj: cannot set {value}: {e.strerror}; lowering "
                "oom_score_adj needs CAP_SYS_RESOURCE, which this runtime does not have"
            ) from None
        raise SystemFailure(f"process.oomScoreAdj: cannot set {value}: {e.strerror}") from None


def set_dumpable(flag: bool) -> None:
    """PR_SET_DUMPABLE. Off while the runtime is in the container, so its
    /proc/self/exe and fds cannot be opened from inside (CVE-2019-5736 class)."""
    if _prctl(_PR_SET_DUMPABLE, int(flag), 0, 0, 0) != 0:
        raise _fail("setting dumpable")


def close_fds_from(first: int, keep: set[int] | frozenset[int] = frozenset()) -> None:
    """Mark every fd >= first close-on-exec except those in `keep`.

    A runtime fd leaking into the container is a host escape (CVE-2024-21626
    class); close-on-exec rather than close so the runtime's own fds still work
    until execve.
    """
    bounds = sorted(fd for fd in keep if fd >= first)
    ranges = []
    start = first
    for fd in bounds:
        if fd > start:
            ranges.append((start, fd - 1))
        start = fd + 1
    ranges.append((start, _UINT_MAX))
    if all(_close_range(lo, hi) for lo, hi in ranges):
        return
    _cloexec_by_walking(first, keep)


def _close_range(lo: int, hi: int) -> bool:
    rc = libc.syscall(libc.c_long(_NR_CLOSE_RANGE), libc.c_uint(lo), libc.c_uint(hi),
                      libc.c_uint(_CLOSE_RANGE_CLOEXEC))
    # ENOSYS before 5.9, EINVAL before CLOSE_RANGE_CLOEXEC (5.11), and any errno the
    # container's seccomp filter (already loaded here) returns for a syscall its
    # profile predates, e.g. EPERM from a default errno action: walk instead.
    return rc == 0


def _cloexec_by_walking(first: int, keep: set[int] | frozenset[int]) -> None:
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError as e:
        raise SystemFailure(
            f"listing /proc/self/fd to mark fds close-on-exec: {e.strerror}"
        ) from None
    for fd in fds:
        if fd < first or fd in keep:
            continue
        try:
            os.set_inheritable(fd, False)
        except OSError as e:
            # The listing's own directory fd is gone by now.
            if e.errno != errno.EBADF:
                raise SystemFailure(f"marking fd {fd} close-on-exec: {e.strerror}") from None
