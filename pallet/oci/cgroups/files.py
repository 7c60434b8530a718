"""Reading, writing and parsing cgroup control files; kernel errors become one-line CgroupErrors.

Every write names the file and the value, so a refused limit reads as a sentence, not a traceback.
"""

import errno
import os

from pallet.oci.cgroups.errors import CgroupError, InvalidCgroupValue

# Errnos with which cgroupfs says "this value is wrong here", as opposed to "you may not".
_VALUE_ERRNOS = {
    errno.EINVAL,
    errno.ERANGE,
    errno.EBUSY,
    errno.ENOSPC,
    errno.EOVERFLOW,
    errno.ENODEV,
}


def write(directory: str, name: str, value: str | int) -> None:
    """Write one value to a control file; cgroupfs takes a single write per value."""
    path = os.path.join(directory, name)
    text = str(value)
    try:
        # No O_CREAT/O_TRUNC: control files exist or the controller is absent.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise write_error(path, text, e) from None


def write_error(path: str, value: str, err: OSError) -> CgroupError:
    """The one-line error for a refused write of value to path."""
    shown = value.strip().replace("\n", "\\n")
    reason = os.strerror(err.errno) if err.errno else str(err)
    if err.errno in (errno.EPERM, errno.EACCES):
        return CgroupError(
            f"kernel refused {shown!r} for {path}: {reason}; this may need CAP_SYS_RESOURCE, "
            "which this process does not hold, or a cgroup delegated to it"
        )
    if err.errno == errno.ENOENT:
        return CgroupError(
            f"cannot write {shown!r} to {path}: no such file (cgroup not created, "
            "or its controller is not enabled on this host)"
        )
    if err.errno in _VALUE_ERRNOS:
        hint = ""
        if err.errno == errno.EBUSY and "limit" in os.path.basename(path):
            hint = " (below what the cgroup already uses?)"
        elif err.errno == errno.ENOSPC and "cpuset" in os.path.basename(path):
            hint = " (cpuset.cpus/mems empty?)"
        return InvalidCgroupValue(f"kernel rejected {shown!r} for {path}: {reason}{hint}")
    return CgroupError(f"cannot write {shown!r} to {path}: {reason}")


def read(directory: str, name: str) -> str:
    """The stripped content of one control file; CgroupError if it cannot be read."""
    path = os.path.join(directory, name)
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        raise CgroupError(f"cannot read {path}: {os.strerror(e.errno or 0)}") from None


def read_optional(directory: str, name: str) -> str | None:
    """Like read, but None when the file does not exist (an absent controller feature)."""
    try:
        with open(os.path.join(directory, name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CgroupError(f"cannot read {os.path.join(directory, name)}: {e.strerror}") from None


def read_int(directory: str, name: str, default: int = 0) -> int:
    """An integer control file; "max" reads as 0 (no limit), like runc's stats."""
    text = read_optional(directory, name)
    if text is None or text == "" or text == "max":
        return default
    return int(text.split()[0])


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse "key value" lines (memory.stat, cpu.stat, cpuacct.stat) into a dict."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue  # e.g. "max" in a few v2 files: not a counter
    return out


def parse_nested_keyed(text: str) -> dict[str, dict[str, int]]:
    """Parse "head k=v k=v" lines (io.stat) into {head: {k: v}}."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        fields: dict[str, int] = {}
        for part in parts[1:]:
            key, _, val = part.partition("=")
            if val.isdigit():
                fields[key] = int(val)
        out[parts[0]] = fields
    return out


def read_procs(directory: str, recursive: bool = True) -> list[int]:
    """Pids in cgroup.procs of directory (and below it); [] if the cgroup is gone."""
    pids: list[int] = []
    if recursive:
        dirs = [root for root, _, _ in os.walk(directory)]
    else:
        dirs = [directory]
    for d in dirs:
        text = read_optional(d, "cgroup.procs")
        if text:
            pids.extend(int(p) for p in text.split())
    return pids
