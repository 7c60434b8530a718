"""The kernel's grace period for cgroup moves, started early so nobody waits for it.

A tiny module: pallet-runc starts one before it imports the runtime (see start_early).
"""

from __future__ import annotations

import os

_early = 0  # a child start_early forked that no start_cgroup_sync has taken over yet


def start_early() -> None:
    """Start one now for the create or exec this process is about to do; the next
    start_cgroup_sync takes it over. pallet-runc calls this before importing the runtime,
    a millisecond or two of start-up sooner, and its launcher sooner still."""
    global _early
    if not _early:
        # bin/pallet-runc's sh started one before Python did; it is our child (sh exec'd us).
        pid = os.environ.pop("PALLET_CGROUP_SYNC", "")
        _early = int(pid) if pid.isdigit() else start_cgroup_sync()


def start_cgroup_sync() -> int:
    """Fork a child that moves itself into the cgroup it is already in; return its pid
    (or take over the one start_early forked).

    Moving a process between cgroups takes a kernel lock whose first writer after a quiet
    spell waits out an RCU grace period (10-15 ms here) and whose writers within the next
    one do not. That wait, started here, passes while create prepares; the init's own
    move then finds it over. Nothing changes for the child ("0" is the writer itself), and
    where cgroupfs is not writable there is no child (0). The engine starts one as early
    as it can, too (`pallet run`, Engine.start). It forks: never call it with threads
    running. Reap the pid with reap_cgroup_sync once the move is done.
    """
    global _early
    if _early:
        pid, _early = _early, 0
        return pid
    # Found and opened here, so the child has only the write to do and gets to the lock
    # sooner; the kernel checks a cgroup.procs write against the opener's credentials.
    fd = _own_cgroup_procs()
    if fd < 0:
        return 0
    try:
        pid = os.fork()
    except OSError:
        os.close(fd)
        return 0
    if pid == 0:
        try:
            os.write(fd, b"0")
        finally:
            os._exit(0)
    os.close(fd)
    return pid


def _own_cgroup_procs() -> int:
    """A cgroup.procs of our own cgroup opened for writing (any hierarchy), or -1."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return -1
    for line in lines:
        _, ctrl, path = line.split(":", 2)
        bases = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup") if not ctrl else \
            (f"/sys/fs/cgroup/{ctrl}",) if ctrl.isalpha() else ()
        for base in bases:
            try:
                return os.open(f"{base}{path}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
            except OSError:
                continue
    return -1


def reap_cgroup_sync(pid: int) -> None:
    if pid:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
