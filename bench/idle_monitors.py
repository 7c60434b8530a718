"""Idle monitor memory of one checkout, for A/B comparisons between commits.

Usage: VENV/bin/python bench/idle_monitors.py N [--tag T] [--warm]

Starts N `run -d --network none busybox sleep 1000` containers with this checkout's
pallet (the `pallet` next to sys.executable) under its own root (/tmp/pss-T) and run
root (/run/pss-T), waits 3 s, prints one JSON line: the monitors' median Pss, Private_Dirty
and Rss (KiB, /proc/PID/smaps_rollup) and their mean Private_Dirty per mapping
(anon = obmalloc arenas, [heap] = malloc, python3.11 = the interpreter's data), then
removes the containers and stops the zygotes it started, so each round starts a fresh
mother. --warm first runs `run --rm busybox true` 5 times with --network none and 5 on
the default network (the mother has then forked monitors before, as in bench/run.py).
For two commits: a worktree and a venv each (same interpreter), rounds interleaved.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import json
import os
import signal
import statistics
import subprocess
import sys
import time

PALLET = os.path.join(os.path.dirname(sys.executable), "pallet")


def rollup(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for ln in f:
            p = ln.split()
            if len(p) >= 2 and p[1].isdigit():
                out[p[0].rstrip(":")] = int(p[1])
    return out


def private_dirty_by_mapping(pid: int) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    cur = "[anon]"
    with open(f"/proc/{pid}/smaps") as f:
        for ln in f:
            p = ln.split()
            if not p[0].endswith(":"):  # a mapping's header: range perms offset dev inode [path]
                cur = os.path.basename(p[5]) if len(p) > 5 else "[anon]"
            elif p[0] == "Private_Dirty:":
                out[cur] += int(p[1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("--tag", default=str(os.getpid()))
    ap.add_argument("--warm", action="store_true")
    args = ap.parse_args()
    root, run_root = f"/tmp/pss-{args.tag}", f"/run/pss-{args.tag}"
    pallet = [PALLET, "--root", root]
    env = dict(os.environ, PALLET_RUNROOT=run_root)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not os.path.exists(os.path.join(root, ".bench-busybox")):
        subprocess.run(pallet + ["image", "build-busybox"], env=env, check=True,
                       capture_output=True)
        open(os.path.join(root, ".bench-busybox"), "w").close()
    ids: list[str] = []
    try:
        for net in ("none", "bridge") if args.warm else ():
            for _ in range(5):
                subprocess.run(pallet + ["run", "--rm", *(["--network", "none"] if net == "none"
                                                         else []), "busybox", "true"],
                               env=env, check=True, capture_output=True)
        for i in range(args.n):
            r = subprocess.run(pallet + ["run", "-d", "--name", f"ps-{args.tag}-{i}", "--network",
                                         "none", "busybox", "sleep", "1000"],
                               env=env, capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(r.stderr)
            ids.append(r.stdout.strip())
        time.sleep(3.0)
        mons = []
        for name in os.listdir(run_root):
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(os.path.join(run_root, name, "monitor.pid")) as f:
                    mons.append(int(f.read().split()[0]))
        rs = [rollup(p) for p in mons]
        maps: collections.Counter[str] = collections.Counter()
        for p in mons:
            maps.update(private_dirty_by_mapping(p))
        print(json.dumps({"n": len(mons),
                          **{k.lower(): statistics.median(r[k] for r in rs)
                             for k in ("Pss", "Private_Dirty", "Rss")},
                          "private_dirty_by_mapping": {k: round(v / len(mons))
                                                       for k, v in maps.most_common(4)}}))
    finally:
        for i in range(0, len(ids), 25):
            subprocess.run(pallet + ["rm", "-f", *ids[i:i + 25]], env=env, capture_output=True)
        for pf in glob.glob(os.path.join(run_root, "zygote*.pid")):
            with contextlib.suppress(OSError, ValueError), open(pf) as f:
                os.kill(int(f.read().split()[0]), signal.SIGTERM)
    return 0


if __name__ == "__main__":
    sys.exit(main())
