"""The one interface every cgroup backend (v1, v2, hybrid) implements, with the parts they share.

Removal, killing and pid listing work the same everywhere and live here; limits live in backends.
"""

import _signal  # signal's C core: the signal module adds enums and costs ~5 ms to import
import errno
import os
import time

from pallet.oci import debuglog
from pallet.oci.cgroups import files
from pallet.oci.cgroups.errors import CgroupError

# Not logging.getLogger: logging costs pallet-runc ~10 ms to import (see pallet.oci.debuglog).
log = debuglog.Logger("pallet.oci.cgroups")


class Cgroup:
    """A container's cgroup in every hierarchy of the host.

    Backends override every method here that raises NotImplementedError.
    """

    mode: str = ""

    @property
    def paths(self) -> dict[str, str]:
        """Controller (or "unified", or "name=x") -> absolute cgroup directory."""
        raise NotImplementedError

    def create(self) -> None:
        """Make the directory in every hierarchy, parents included; idempotent."""
        raise NotImplementedError

    def apply(self, pid: int) -> None:
        """Move pid into the cgroup in every hierarchy."""
        raise NotImplementedError

    def join_files(self) -> list[str]:
        """The control files, in order, to which a single-threaded process writes "0" to
        move itself into the cgroup in every hierarchy (what create's first child does).

        On v1 that is each hierarchy's `tasks`: moving one thread (itself) needs no hold on
        the kernel's global threadgroup lock, so it never waits for the RCU grace period a
        cgroup.procs write may (see cgsync.start_cgroup_sync). cgroup2 has only cgroup.procs.
        """
        raise NotImplementedError

    def set(self, resources: dict) -> None:
        """Apply an OCI linux.resources dict (also what `update` passes)."""
        raise NotImplementedError

    def freeze(self) -> None:
        """Freeze every process; returns once the kernel reports frozen."""
        raise NotImplementedError

    def thaw(self) -> None:
        """Let frozen processes run again."""
        raise NotImplementedError

    def is_frozen(self) -> bool:
        """Whether the cgroup is frozen now."""
        raise NotImplementedError

    def stats(self) -> dict:
        """Usage numbers shaped like the "data" of runc `events --stats`."""
        raise NotImplementedError

    def usage_sources(self) -> list[tuple[str, str, str]]:
        """The files behind docker stats' columns: (field(s), path, parser) for
        pallet.oci.cgroups.usage.UsageReader, which keeps them open between samples."""
        raise NotImplementedError

    def _procs_dir(self) -> str:
        """The directory whose cgroup.procs lists the container's processes."""
        raise NotImplementedError

    def _kill_file(self) -> str | None:
        """A cgroup.kill file that kills everything at once, if the kernel has one."""
        return None

    def _can_freeze(self) -> bool:
        return True

    def exists(self) -> bool:
        """Whether any of the cgroup's directories is still there."""
        return any(os.path.isdir(p) for p in set(self.paths.values()))

    def pids(self) -> list[int]:
        """Every pid in the cgroup and its sub-cgroups; [] when the cgroup is gone."""
        return sorted(set(files.read_procs(self._procs_dir())))

    def kill_all(self, sig: int = _signal.SIGKILL) -> None:
        """Signal every process; frozen meanwhile (v1-style) so none forks away unseen."""
        kill_file = self._kill_file()
        if sig == _signal.SIGKILL and kill_file:
            try:
                files.write(os.path.dirname(kill_file), "cgroup.kill", "1")
                return
            except CgroupError:
                if not os.path.isdir(os.path.dirname(kill_file)):
                    return
                raise
        if not self.exists():
            return
        was_frozen = self._can_freeze() and self.is_frozen()
        froze = False
        if self._can_freeze() and not was_frozen:
            try:
                self.freeze()
                froze = True
            except CgroupError as e:
                log.debug("kill_all: signalling without freezing: %s", e)
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            # A paused container stays paused, except that SIGKILL only lands on thawed tasks.
            if froze or (was_frozen and sig == _signal.SIGKILL):
                self.thaw()

    def destroy(self) -> None:
        """Remove the cgroup (and sub-cgroups) everywhere; kill and retry while busy; idempotent."""
        dirs = sorted(set(self.paths.values()))
        delay = 0.01
        busy: list[str] = []
        for attempt in range(8):
            busy = [d for d in dirs if not _remove_tree(d)]
            if not busy:
                return
            if attempt == 0:
                self.kill_all(_signal.SIGKILL)
            _wait_exit(self.pids(), delay)
            delay = min(delay * 2, 0.5)
        raise CgroupError(
            f"cannot remove cgroup {busy[0]}: still busy after killing its processes "
            f"(pids left: {self.pids() or 'none'})"
        )


def _wait_exit(pids: list[int], timeout: float) -> None:
    """Wait up to TIMEOUT for PIDS to exit: on their pidfds, so it returns as soon as they
    have; a plain sleep when there are none (a task that has exited can still hold its
    cgroup for a moment)."""
    fds = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            continue
    if not fds:
        time.sleep(timeout)
        return
    import select

    try:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        left = len(fds)
        deadline = time.monotonic() + timeout
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0:
                return
            for fd, _ in poller.poll(wait * 1000):
                poller.unregister(fd)
                left -= 1
    finally:
        for fd in fds:
            os.close(fd)


def _remove_tree(top: str) -> bool:
    """rmdir top and its sub-cgroups, deepest first; True once top is gone."""
    if not os.path.isdir(top):
        return True
    for root, _dirs, _files in os.walk(top, topdown=False):
        try:
            os.rmdir(root)
        except FileNotFoundError:
            continue
        except OSError as e:
            if e.errno == errno.EBUSY:
                return False
            raise CgroupError(f"cannot remove cgroup {root}: {e.strerror}") from None
    return not os.path.isdir(top)
