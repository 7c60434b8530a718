"""Pure translations of OCI resource values into cgroup file values, v1 and v2.

The v1→v2 formulas are runc's, so a spec means the same limits under either runtime.
"""

from pallet.oci.cgroups.errors import InvalidCgroupValue


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] → cpu.weight [1, 10000], runc's linear map; 0 stays unset."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] → io.weight [1, 10000], runc's linear map; 0 stays unset."""
    if weight == 0:
        return 0
    return 1 + ((weight - 10) * 9999) // 990


def v2_limit(value: int) -> str:
    """A v2 limit file value: negative means "max"."""
    return "max" if value < 0 else str(value)


def swap_to_v2(swap: int, memory: int) -> int:
    """OCI swap is memory+swap (v1 memsw); memory.swap.max is swap alone. -1 means max, 0 unset."""
    if swap == -1:
        return -1
    if swap == 0:
        return 0
    if memory in (0, -1):
        raise InvalidCgroupValue(
            f"memory.swap {swap} needs a memory limit too: on cgroup v2 swap is set as "
            "memory+swap minus memory"
        )
    if swap < memory:
        raise InvalidCgroupValue(
            f"memory.swap {swap} (memory+swap) must be at least memory.limit {memory}"
        )
    return swap - memory


def cpu_max(quota: int, period: int) -> str | None:
    """cpu.max from OCI quota/period like runc: None if neither is set, "max" for no quota."""
    if quota == 0 and period == 0:
        return None
    text = str(quota) if quota > 0 else "max"
    if period:
        text += f" {period}"
    return text


def hugepage_size_name(size_kb: int) -> str:
    """The kernel's hugetlb file infix for a page size: 2048 → "2MB", 1048576 → "1GB"."""
    units = ["KB", "MB", "GB", "TB"]
    i = 0
    while size_kb >= 1024 and size_kb % 1024 == 0 and i < len(units) - 1:
        size_kb //= 1024
        i += 1
    return f"{size_kb}{units[i]}"


def hugepage_sizes(sysfs_dir: str = "/sys/kernel/mm/hugepages") -> list[str]:
    """The page sizes this kernel offers, as hugetlb file infixes ("2MB", "1GB")."""
    import os

    try:
        names = os.listdir(sysfs_dir)
    except FileNotFoundError:
        return []
    sizes = []
    for n in names:
        if n.startswith("hugepages-") and n.endswith("kB"):
            sizes.append(hugepage_size_name(int(n[len("hugepages-") : -2])))
    return sorted(sizes)


def check_page_size(page_size: str, available: list[str]) -> str:
    """Validate an OCI pageSize against the host's sizes; the kernel's spelling is returned."""
    if page_size not in available:
        raise InvalidCgroupValue(
            f"hugepageLimits pageSize {page_size!r} is not offered by this kernel "
            f"(available: {', '.join(available) or 'none'})"
        )
    return page_size


def ticks_to_ns(ticks: int, hz: int = 100) -> int:
    """cpuacct.stat counts USER_HZ ticks; runc reports nanoseconds."""
    return ticks * (1_000_000_000 // hz)


def device_number(dev: dict, what: str) -> str:
    """ "major:minor" of an OCI blockIO device entry."""
    try:
        return f"{int(dev['major'])}:{int(dev['minor'])}"
    except (KeyError, TypeError, ValueError):
        raise InvalidCgroupValue(
            f"blockIO {what} entry {dev!r} needs integer major and minor"
        ) from None
