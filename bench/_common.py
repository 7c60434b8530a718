"""What the benchmarks share: leaving the host as they found it, printing their table."""

from __future__ import annotations

import os
import shutil
import subprocess


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Seconds ARGV takes to run to the end; exits the bench if it fails."""
    import time

    t = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True)
    dt = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {out.stderr.decode()[-500:]}")
    return dt


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


def zygote_pid(run_root: str) -> int | None:
    """The live CLI zygote of RUN_ROOT, if any."""
    from pallet.engine import zygote

    try:
        with open(zygote.cli_path(run_root, zygote.PID_NAME)) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


def teardown(pallet: list[str], env: dict[str, str], podman: list[str] | None,
             run_root: str, base: str) -> None:
    """Remove every container of the pallet command PALLET (and of PODMAN, then reset its
    storage), stop the zygote, and remove RUN_ROOT and BASE."""
    import contextlib
    import signal

    ids = subprocess.run(pallet + ["ps", "-aq", "--no-trunc"], env=env, capture_output=True,
                         text=True).stdout.split()
    for i in range(0, len(ids), 20):
        subprocess.run(pallet + ["rm", "-f", *ids[i:i + 20]], env=env, capture_output=True)
    if podman:
        subprocess.run(podman + ["rm", "-f", "-t", "0", "-a"], capture_output=True)
        subprocess.run(podman + ["system", "reset", "-f"], capture_output=True)
    zpid = zygote_pid(run_root)
    if zpid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(zpid, signal.SIGTERM)
    remove_tree(base)
    shutil.rmtree(run_root, ignore_errors=True)


def print_results(results: list[tuple[str, str, str]], peer: str, width: int = 10) -> None:
    """The (name, pallet, PEER) rows as an aligned table under a header."""
    w = max(len(r[0]) for r in results)
    print(f"{'benchmark'.ljust(w)}  {'pallet':>{width}}  {peer}")
    for name, a, b in results:
        print(f"{name.ljust(w)}  {a:>{width}}  {b}")
