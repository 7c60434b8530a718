"""Resource limits of the container process: validate the spec's process.rlimits
and apply them with setrlimit(2) in the child before execve.
"""

from __future__ import annotations

import resource

from pallet.errors import SpecError, SystemFailure

# OCI type name -> RLIMIT_* number; the names are the kernel's own. Python's
# resource module knows the per-architecture numbers but lacks RLIMIT_LOCKS,
# which is 10 everywhere (asm-generic).
RLIMITS: dict[str, int] = {
    name: getattr(resource, name, 10 if name == "RLIMIT_LOCKS" else None)
    for name in (
        "RLIMIT_AS",
        "RLIMIT_CORE",
        "RLIMIT_CPU",
        "RLIMIT_DATA",
        "RLIMIT_FSIZE",
        "RLIMIT_LOCKS",
        "RLIMIT_MEMLOCK",
        "RLIMIT_MSGQUEUE",
        "RLIMIT_NICE",
        "RLIMIT_NOFILE",
        "RLIMIT_NPROC",
        "RLIMIT_RSS",
        "RLIMIT_RTPRIO",
        "RLIMIT_RTTIME",
        "RLIMIT_SIGPENDING",
        "RLIMIT_STACK",
    )  # fmt: skip
}

_U64_MAX = (1 << 64) - 1


def _value(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise SpecError(f"{field}: must be an unsigned 64-bit integer, got {value!r}")
    return value


def validate(rlimits: list | None) -> None:
    """SpecError naming the entry and value for anything in process.rlimits that is not valid."""
    if rlimits is None:
        return
    if not isinstance(rlimits, list):
        raise SpecError("process.rlimits: must be a list")
    seen: set[str] = set()
    for i, rl in enumerate(rlimits):
        field = f"process.rlimits[{i}]"
        if not isinstance(rl, dict):
            raise SpecError(f"{field}: must be an object")
        kind = rl.get("type")
        if kind not in RLIMITS:
            raise SpecError(f"{field}.type: unknown rlimit {kind!r}")
        # The runtime spec forbids two entries for one type.
        if kind in seen:
            raise SpecError(f"{field}.type: {kind} is given more than once")
        seen.add(kind)
        soft = _value(rl.get("soft"), f"{field}.soft")
        hard = _value(rl.get("hard"), f"{field}.hard")
        if soft > hard:
            raise SpecError(f"{field}: {kind} soft limit {soft} is above its hard limit {hard}")


def _kernel(value: int) -> int:
    # Python's resource module spells "unlimited" as RLIM_INFINITY (-1).
    return resource.RLIM_INFINITY if value >= _U64_MAX else value


def _show(value: int) -> str:
    return "unlimited" if value in (resource.RLIM_INFINITY, _U64_MAX) else str(value)


def apply(rlimits: list | None) -> None:
    """Set each of the spec's rlimits on this process (validate() first)."""
    for rl in rlimits or ():
        kind = rl["type"]
        number = RLIMITS[kind]
        soft, hard = _kernel(rl["soft"]), _kernel(rl["hard"])
        _, current_hard = resource.getrlimit(number)
        try:
            resource.setrlimit(number, (soft, hard))
        except (ValueError, OSError) as e:
            # Python turns EPERM into ValueError; the only cause of EPERM is a
            # hard limit above the current one without CAP_SYS_RESOURCE (or
            # NOFILE above fs.nr_open).
            raising = current_hard != resource.RLIM_INFINITY and (
                hard == resource.RLIM_INFINITY or hard > current_hard
            )
            if raising:
                raise SystemFailure(
                    f"rlimit {kind}: cannot raise the hard limit to {_show(hard)} "
                    f"(the runtime's is {_show(current_hard)}): the host lacks CAP_SYS_RESOURCE"
                    + (" or the value is above fs.nr_open" if kind == "RLIMIT_NOFILE" else "")
                ) from None
            raise SystemFailure(
                f"rlimit {kind}: setting soft={_show(soft)} hard={_show(hard)} failed: {e}"
            ) from None
