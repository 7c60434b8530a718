"""bench/stats: what `pallet stats` costs with N idle containers, beside `podman stats`.

Usage: .venv/bin/python bench/stats.py [-n 40] [--seconds 15] [--runs 5] [--no-podman]

Starts N detached busybox containers (`sleep`, `--network none`) in a private root (and as
many podman containers with runc, cgroupfs and private storage, if podman is installed),
then, interleaved, each tool's
- streaming `stats` into a pipe: CPU time (utime + stime from /proc/PID/stat) of the
  command's whole process tree over SECONDS, after a 2 s warm-up, as % of one core. pallet's
  CLI runs the command in a worker of its zygote, which is not the CLI's child: the worker
  (the zygote's child that appeared with the command) is counted with it;
- `stats --no-stream` wall time (median of --runs). pallet samples twice, 0.5 s apart, as
  docker does; podman samples once (its CPU % is then the average since the start).
pallet redraws every 0.5 s, podman every 5 s by default: podman is also measured with
`--interval 1`.
Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import print_results, teardown, timed, zygote_pid  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PALLET = os.path.join(os.path.dirname(sys.executable), "pallet")
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]  # see bench/run.py
TCK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def cpu_ticks(pid: int) -> int:
    """utime + stime of pid, and of its children it has reaped (cutime + cstime)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0
    return sum(int(x) for x in fields[11:15])


def tree_ticks(roots: list[int]) -> int:
    seen, todo, total = set(), list(roots), 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += cpu_ticks(pid)
        todo += children(pid)
    return total


def streaming_cpu(argv: list[str], env: dict[str, str], seconds: float,
                  run_root: str | None) -> float:
    """% of one core a streaming stats command (and its zygote worker) uses over SECONDS."""
    zpid = zygote_pid(run_root) if run_root else None
    before = set(children(zpid)) if zpid else set()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    try:
        time.sleep(2.0)  # start-up and the first frame are not the steady cost
        if p.poll() is not None:
            raise SystemExit(f"{' '.join(argv)} exited: {p.stderr.read().decode()[-500:]}")
        roots = [p.pid] + ([c for c in children(zpid) if c not in before] if zpid else [])
        t0, c0 = time.monotonic(), tree_ticks(roots)
        time.sleep(seconds)
        t1, c1 = time.monotonic(), tree_ticks(roots)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return (c1 - c0) / TCK / (t1 - t0) * 100


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=40, help="idle containers per tool")
    ap.add_argument("--seconds", type=float, default=15, help="streaming measurement span")
    ap.add_argument("--runs", type=int, default=5, help="--no-stream runs per tool")
    ap.add_argument("--rounds", type=int, default=1, help="streaming measurements per tool")
    ap.add_argument("--no-podman", action="store_true")
    args = ap.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(HERE) + "/pallet"],
                   check=True, capture_output=True)
    base = tempfile.mkdtemp(prefix="pallet-bench-stats-")
    root = os.path.join(base, "pallet")
    run_root = f"/run/pbs-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, PALLET_RUNROOT=run_root)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    pallet = [PALLET, "--root", root]
    podman = ["podman", "--root", os.path.join(base, "podman"), "--runroot",
              os.path.join(base, "podman-run"), "--cgroup-manager", "cgroupfs",
              "--events-backend", "file", "--runtime", "runc"]
    have_podman = not args.no_podman and shutil.which("podman") is not None
    tag = uuid.uuid4().hex[:4]
    results: list[tuple[str, str, str]] = []
    try:
        subprocess.run(pallet + ["image", "build-busybox"], env=env, check=True,
                       capture_output=True)
        if have_podman:
            archive = os.path.join(base, "busybox.tar")
            subprocess.run(pallet + ["save", "busybox", "-o", archive], env=env, check=True,
                           capture_output=True)
            subprocess.run(podman + ["load", "-i", archive], check=True, capture_output=True)
        for i in range(args.n):
            subprocess.run(pallet + ["run", "-d", "--network", "none", "--name",
                                     f"st-bench-{tag}-{i}", "busybox", "sleep", "3600"],
                           env=env, check=True, capture_output=True)
            if have_podman:
                subprocess.run(podman + ["run", "-d", "--network", "none", *ULIMITS, "--name",
                                         f"st-bench-{tag}-{i}", "busybox", "sleep", "3600"],
                               check=True, capture_output=True)
        time.sleep(2.0)

        cpu_p: list[float] = []
        cpu_q: list[float] = []
        cpu_q1: list[float] = []
        for _ in range(args.rounds):
            cpu_p.append(streaming_cpu(pallet + ["stats"], env, args.seconds, run_root))
            if have_podman:
                cpu_q.append(streaming_cpu(podman + ["stats"], env, args.seconds, None))
                cpu_q1.append(streaming_cpu(podman + ["stats", "--interval", "1"], env,
                                            args.seconds, None))
        results.append((f"streaming stats, {args.n} running, CPU % of a core",
                        f"{statistics.median(cpu_p):.1f} %",
                        f"{statistics.median(cpu_q):.1f} % (every 5 s, its default), "
                        f"{statistics.median(cpu_q1):.1f} % (--interval 1)"
                        if cpu_q else "n/a"))

        tp: list[float] = []
        tq: list[float] = []
        for _ in range(args.runs):
            tp.append(timed(pallet + ["stats", "--no-stream"], env))
            if have_podman:
                tq.append(timed(podman + ["stats", "--no-stream"], env))
        results.append((f"stats --no-stream, {args.n} running (median)",
                        f"{statistics.median(tp) * 1000:.0f} ms",
                        f"{statistics.median(tq) * 1000:.0f} ms" if tq else "n/a"))
    finally:
        teardown(pallet, env, podman if have_podman else None, run_root, base)
    print_results(results, "podman", 10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
