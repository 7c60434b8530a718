"""What the benchmarks share to leave the host as they found it."""

from __future__ import annotations

import os
import shutil
import subprocess


def remove_tree(base: str) -> None:
    """Remove BASE after detaching every mount under it: podman's overlay driver keeps its
    storage dir mounted on itself, and `podman system reset` leaves that mount behind."""
    base = os.path.realpath(base)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p == base or p.startswith(base + "/")),
                        key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)
