"""Linux capabilities of the container process: validate the spec's
process.capabilities and apply the bounding, permitted, effective, inheritable and ambient sets.

Intended call order in the container child (as runc does it):

    capabilities.drop_bounding(caps)   # while still root with CAP_SETPCAP
    capabilities.set_keepcaps(True)    # so setuid() keeps the permitted set
    os.setgroups(...); os.setgid(...); os.setuid(...)
    capabilities.apply(caps)           # bounding again (idempotent), capset, ambient;
                                       # also clears keepcaps

`apply` alone is enough too: it first re-raises the effective set that setuid()
cleared, so it can still drop from the bounding set.

Capabilities this kernel does not know (above /proc/sys/kernel/cap_last_cap) and
ones the runtime itself does not hold (this host has no CAP_SYS_RESOURCE) are
skipped with a debug message, like runc, rather than failing the container.
"""

from __future__ import annotations

import os

from pallet.errors import SpecError, SystemFailure
from pallet.oci import debuglog
from pallet.oci.linux import libc


def _debug(message: str, *args: object) -> None:
    # Not logging: it costs milliseconds to import on every container start, and this runs
    # in the container's init after pivot_root, where the library can no longer be imported.
    debuglog.debug(__name__, message, *args)


_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

CAPS: dict[str, int] = {name: number for number, name in enumerate(_NAMES)}

SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")

_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_SET_KEEPCAPS = 8
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_prctl = libc.LIBC.int_function("prctl")
_capget = libc.LIBC.int_function("capget")
_capset = libc.LIBC.int_function("capset")
# struct __user_cap_header_struct {u32 version; int pid} (pid 0: this thread); the data
# is two struct __user_cap_data_struct {u32 effective, permitted, inheritable}: the low
# 32 capabilities, then the high.
_HEADER = libc.pack((_LINUX_CAPABILITY_VERSION_3, 4), (0, 4))


def validate(caps: dict | None) -> None:
    """SpecError naming the set and value for anything in process.capabilities that is not valid."""
    if caps is None:
        return
    if not isinstance(caps, dict):
        raise SpecError("process.capabilities: must be an object")
    for key, names in caps.items():
        field = f"process.capabilities.{key}"
        if key not in SETS:
            raise SpecError(f"{field}: unknown capability set (expected one of {', '.join(SETS)})")
        if names is None:
            continue
        if not isinstance(names, list):
            raise SpecError(f"{field}: must be a list of capability names")
        for name in names:
            if name not in CAPS:
                raise SpecError(f'{field}: unknown capability "{name}"')


def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read())
    except OSError:
        # No /proc yet (or a masked one): assume every capability we can name.
        return len(_NAMES) - 1


def _mask(names: list[str] | None, last: int) -> int:
    mask = 0
    for name in names or ():
        number = CAPS.get(name)
        if number is None:
            raise SpecError(f'process.capabilities: unknown capability "{name}"')
        if number > last:
            _debug("capability %s is not known to this kernel; skipped", name)
            continue
        mask |= 1 << number
    return mask


def _fail(what: str) -> SystemFailure:
    err = libc.get_errno()
    return SystemFailure(f"capabilities: {what}: {os.strerror(err)}")


def _get() -> tuple[int, int, int]:
    data = libc.buffer(24)
    if _capget(_HEADER, data) != 0:
        raise _fail("capget")
    low, high = libc.unpack_u32(data.raw[:12]), libc.unpack_u32(data.raw[12:])
    return tuple(low[i] | high[i] << 32 for i in range(3))  # type: ignore[return-value]


def _set(effective: int, permitted: int, inheritable: int) -> None:
    data = libc.pack(*((value >> shift & 0xFFFFFFFF, 4) for shift in (0, 32)
                       for value in (effective, permitted, inheritable)))
    if _capset(_HEADER, data) != 0:
        raise _fail(
            f"capset(effective={effective:#x}, permitted={permitted:#x}, inheritable={inheritable:#x})"
        )


def _names(mask: int) -> str:
    return ", ".join(name for name, n in CAPS.items() if mask >> n & 1)


def drop_bounding(caps: dict | None) -> None:
    """Drop every capability not in caps["bounding"] from the bounding set.

    Needs CAP_SETPCAP in the effective set; None leaves everything as it is.
    """
    if caps is None:
        return
    last = last_cap()
    keep = _mask(caps.get("bounding"), last)
    for number in range(last + 1):
        if keep >> number & 1:
            continue
        # Only drop what is still there, so a second call needs no privilege.
        if _prctl(_PR_CAPBSET_READ, number, 0, 0, 0) != 1:
            continue
        if _prctl(_PR_CAPBSET_DROP, number, 0, 0, 0) != 0:
            raise _fail(f"dropping {_NAMES[number]} from the bounding set")


def set_keepcaps(on: bool) -> None:
    """PR_SET_KEEPCAPS: whether setuid() away from root keeps the permitted set."""
    if _prctl(_PR_SET_KEEPCAPS, int(on), 0, 0, 0) != 0:
        raise _fail("PR_SET_KEEPCAPS")


def apply(caps: dict | None) -> None:
    """Give this process exactly the spec's capability sets; call after setuid/setgid.

    None means the spec has no process.capabilities: nothing changes (runc).
    """
    set_keepcaps(False)
    if caps is None:
        return
    last = last_cap()
    _, held, inheritable_now = _get()
    # setuid() with keepcaps emptied the effective set; bring it back so the
    # bounding set can still be changed.
    _set(held, held, inheritable_now)
    drop_bounding(caps)

    wanted = {
        key: _mask(caps.get(key), last)
        for key in ("effective", "permitted", "inheritable", "ambient")
    }
    # The kernel never lets a process gain a capability it does not hold:
    # skip those, like runc, instead of failing the container.
    for key, mask in wanted.items():
        missing = mask & ~held
        if missing:
            _debug(
                "capabilities %s in %s are not held by the runtime; skipped", _names(missing), key
            )
            wanted[key] = mask & held
    # capset() insists effective is within permitted; a spec asking for more
    # gets what the kernel can give.
    _set(wanted["effective"] & wanted["permitted"], wanted["permitted"], wanted["inheritable"])

    if _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        raise _fail("clearing the ambient set")
    for number in range(last + 1):
        if not wanted["ambient"] >> number & 1:
            continue
        if _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, number, 0, 0) != 0:
            # runc only warns here: its own default spec lists ambient caps that are
            # not inheritable, which the kernel refuses to raise.
            _debug("capabilities: cannot raise %s in the ambient set: %s (it must also be "
                   "permitted and inheritable); skipped", _NAMES[number],
                   os.strerror(libc.get_errno()))
