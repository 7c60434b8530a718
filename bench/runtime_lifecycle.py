#!/usr/bin/env python3
"""Container lifecycle latency: pallet-runc vs runc vs crun (run as root).

    .venv/bin/python bench/runtime_lifecycle.py [--runs N] [--warmup W]

One busybox bundle (rootfs from /bin/busybox, `runc spec`-style config running
/bin/true, terminal false) is shared by all runtimes. Each round runs, for every
runtime in a rotating order, one full lifecycle and times it:

    create --pid-file  ->  start  ->  wait until the process is gone  ->  delete

"wait" polls a pidfd of the container process (the same for every runtime, no
`state` polling). Every runtime gets its own --root under /tmp and unique ids
(pallet-bench-*); everything is deleted --force at the end.

crun 1.8 refuses hybrid cgroup hosts; there it is run as
`unshare -m sh -c 'umount /sys/fs/cgroup/unified; exec crun ...'` for each of its
three commands, and the wrapper's own cost is measured and printed.

The `pallet (lib)` row calls pallet.oci.api.run_lifecycle(bundle, id, root) in
process, if that exists (see LIBRARY_SLOT below to adapt it).
"""
from __future__ import annotations

import argparse
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts", "conformance"))
from rootfs import write_bundle  # noqa: E402
from runtimes import CRUN_HYBRID_WRAP, resolve  # noqa: E402

DEVNULL = subprocess.DEVNULL
PALLET_RUNC = os.path.join(REPO, ".venv", "bin", "pallet-runc")


def wait_pid_exit(pid: int, timeout: float = 10.0) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        if not p.poll(timeout * 1000):
            raise TimeoutError(f"container process {pid} still running after {timeout}s")
    finally:
        os.close(fd)


class CliRuntime:
    def __init__(self, label: str, argv: list[str], root: str, note: str = ""):
        self.label, self.argv, self.root, self.note = label, argv, root, note
        self.ids: list[str] = []

    def _run(self, *args: str) -> None:
        # stderr goes to a file: `create` hands its stdio to the container, and a pipe
        # would stay open (and be waited on) until the container exits
        errpath = os.path.join(self.root, "stderr")
        with open(errpath, "wb") as err:
            p = subprocess.Popen(self.argv + ["--root", self.root, *args], stdin=DEVNULL,
                                 stdout=DEVNULL, stderr=err)
        # Not subprocess.run(timeout=...): its wait polls with doubling sleeps (0.5, 1, 2 ...
        # 32 ms), which rounds each command's time up to the next step of that ladder.
        try:
            wait_pid_exit(p.pid, 30)
        finally:
            if p.poll() is None:
                p.kill()
        returncode = p.wait()
        if returncode != 0:
            raise RuntimeError(f"{self.label} {args[0]} exited {returncode}: "
                               f"{open(errpath, errors='replace').read().strip()[-300:]}")

    def lifecycle(self, bundle: str, cid: str) -> dict[str, float]:
        self.ids.append(cid)
        pidfile = os.path.join(self.root, cid + ".pid")
        t0 = time.perf_counter()
        self._run("create", "--bundle", bundle, "--pid-file", pidfile, cid)
        t1 = time.perf_counter()
        pid = int(open(pidfile).read())
        self._run("start", cid)
        t2 = time.perf_counter()
        wait_pid_exit(pid)
        t3 = time.perf_counter()
        self._run("delete", cid)
        t4 = time.perf_counter()
        os.unlink(pidfile)
        self.ids.remove(cid)
        return {"create": t1 - t0, "start": t2 - t1, "wait": t3 - t2, "delete": t4 - t3, "total": t4 - t0}

    def cleanup(self) -> None:
        for cid in self.ids:
            subprocess.run(self.argv + ["--root", self.root, "delete", "--force", cid],
                           stdout=DEVNULL, stderr=DEVNULL, timeout=30)
        self.ids.clear()


# ---------------------------------------------------------------- LIBRARY_SLOT
# The in-process path. Adapt here when pallet.oci's library API settles: the slot
# needs a callable (bundle, container_id, root) that creates, starts, waits for and
# deletes the container, raising on failure.
def library_slot():
    """The in-process path: pallet.oci.Runtime forks the container from this process."""
    try:
        from pallet.oci import Runtime
    except Exception as e:  # ImportError or a broken package
        return None, f"import pallet.oci failed: {type(e).__name__}: {e}"
    devnull = os.open(os.devnull, os.O_RDWR)

    def run_lifecycle(bundle: str, cid: str, root: str) -> None:
        rt = Runtime(root)
        st = rt.create(cid, bundle, stdio=(devnull, devnull, devnull))
        rt.start(cid)
        os.waitpid(st.pid, 0)  # create made us the init's subreaper
        rt.delete(cid)

    return run_lifecycle, ""


class LibRuntime:
    def __init__(self, fn, root: str):
        self.label, self.fn, self.root, self.note = "pallet (lib)", fn, root, "in-process pallet.oci.Runtime"
        self.ids: list[str] = []

    def lifecycle(self, bundle: str, cid: str) -> dict[str, float]:
        self.ids.append(cid)
        t0 = time.perf_counter()
        self.fn(bundle, cid, self.root)
        t1 = time.perf_counter()
        self.ids.remove(cid)
        return {"total": t1 - t0}

    def cleanup(self) -> None:
        if self.ids and os.path.exists(PALLET_RUNC):
            for cid in self.ids:
                subprocess.run([PALLET_RUNC, "--root", self.root, "delete", "--force", cid],
                               stdout=DEVNULL, stderr=DEVNULL, timeout=30)
        self.ids.clear()


# ---------------------------------------------------------------- helpers
def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def time_cmd(argv: list[str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL, check=False)
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="timed rounds (default 30)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("runtime_lifecycle.py: run as root", file=sys.stderr)
        return 2

    from rich.console import Console
    from rich.table import Table
    con = Console(width=max(110, shutil.get_terminal_size((110, 24)).columns))

    work = tempfile.mkdtemp(prefix="pallet-bench-")
    os.chmod(work, 0o755)
    bundle = write_bundle(os.path.join(work, "bundle"), ["/bin/true"])
    runtimes = []
    skipped: list[tuple[str, str]] = []

    def add_cli(label: str, spec: str) -> None:
        try:
            _, argv, note = resolve(spec)
        except FileNotFoundError as e:
            skipped.append((label, str(e)))
            return
        root = os.path.join(work, f"root-{label}")
        os.makedirs(root)
        runtimes.append(CliRuntime(label, argv, root, note))

    if os.path.exists(PALLET_RUNC):
        add_cli("pallet-runc", PALLET_RUNC)
    else:
        skipped.append(("pallet-runc", f"{PALLET_RUNC} missing"))
    add_cli("runc", "runc")
    add_cli("crun", "crun")
    fn, why = library_slot()
    if fn:
        root = os.path.join(work, "root-lib")
        os.makedirs(root)
        runtimes.append(LibRuntime(fn, root))
    else:
        skipped.append(("pallet (lib)", why))

    samples: dict[str, list[dict[str, float]]] = {}
    seq = 0
    try:
        # warm-up doubles as the "does it work at all" probe
        for rt in list(runtimes):
            try:
                for _ in range(max(1, a.warmup)):
                    seq += 1
                    rt.lifecycle(bundle, f"pallet-bench-{os.getpid()}-{seq}")
            except Exception as e:
                rt.cleanup()
                runtimes.remove(rt)
                skipped.append((rt.label, f"failed: {str(e)[:200]}"))
        samples = {rt.label: [] for rt in runtimes}
        for rnd in range(a.runs):
            k = rnd % max(1, len(runtimes))
            for rt in runtimes[k:] + runtimes[:k]:  # rotate who goes first
                seq += 1
                samples[rt.label].append(rt.lifecycle(bundle, f"pallet-bench-{os.getpid()}-{seq}"))

        # the crun wrapper's own cost, per command
        wrap_ms = None
        if any(rt.label == "crun" and len(rt.argv) > 1 for rt in runtimes):
            bare = time_cmd(["/bin/true"], 30)
            wrapped = time_cmd(["unshare", "-m", "sh", "-c", CRUN_HYBRID_WRAP, "/bin/true"], 30)
            wrap_ms = (statistics.median(wrapped) - statistics.median(bare)) * 1000

        py = sys.executable
        start_bare = time_cmd([py, "-I", "-c", "pass"], 25)
        start_cli = time_cmd([py, "-c", "import pallet.oci.cli"], 25)
        cli_ok = subprocess.run([py, "-c", "import pallet.oci.cli"], stdout=DEVNULL, stderr=DEVNULL).returncode == 0
    finally:
        for rt in runtimes:
            rt.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    # ------------------------------------------------------------ report
    med = {lb: statistics.median([s["total"] for s in ss]) * 1000 for lb, ss in samples.items() if ss}
    t = Table(title=f"container lifecycle (create+start+wait+delete of /bin/true), {a.runs} rounds, ms")
    for col in ("runtime", "median", "p90", "create", "start", "wait", "delete", "÷ runc", "÷ crun"):
        t.add_column(col, justify="left" if col == "runtime" else "right")
    for lb, ss in samples.items():
        if not ss:
            continue
        tot = [s["total"] * 1000 for s in ss]
        phase = [f"{statistics.median([s[p] for s in ss]) * 1000:.1f}" if p in ss[0] else "-"
                 for p in ("create", "start", "wait", "delete")]
        ratio = [f"{med[lb] / med[o]:.2f}x" if o in med and o != lb else "-" for o in ("runc", "crun")]
        t.add_row(lb, f"{statistics.median(tot):.1f}", f"{pct(tot, 0.9):.1f}", *phase, *ratio)
    con.print(t)
    for lb in ("pallet-runc", "pallet (lib)"):
        if lb in med:
            parts = [f"{lb}/{o} = {med[lb] / med[o]:.2f}" for o in ("runc", "crun") if o in med]
            con.print("ratio (median): " + ", ".join(parts))
    for rt in runtimes:
        if rt.note:
            con.print(f"note: {rt.label}: {rt.note}")
    if wrap_ms is not None:
        con.print(f"note: crun wrapper (unshare -m + umount) costs ~{wrap_ms:.1f} ms per command, "
                  f"~{3 * wrap_ms:.1f} ms per lifecycle (3 commands) - included in crun's numbers above")
    for lb, why in skipped:
        con.print(f"skipped: {lb}: {why}")
    con.print(f"interpreter start-up ({py}): `-I -c pass` median {statistics.median(start_bare) * 1000:.1f} ms; "
              f"`-c 'import pallet.oci.cli'` median {statistics.median(start_cli) * 1000:.1f} ms"
              + ("" if cli_ok else " (import failed: pallet.oci.cli not importable yet)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
