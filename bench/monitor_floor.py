"""What a forked CPython process costs at the least: the floor under pallet's monitors.

Usage: .venv/bin/python -I -S bench/monitor_floor.py

Imports what the monitor mother imports (pallet.engine.monitor and its preload list),
freezes the heap like the mother does, then forks children that do nothing but wait
(`pause()`, or `poll()` on a pipe as an idle monitor does) and prints each one's
Private_Dirty and PSS from /proc/PID/smaps_rollup after half a second. Private pages are
the ones a process pays for alone; conmon's *whole* PSS per idle container is ~0.34-0.40
MiB on this machine (bench/run.py), so a CPython monitor cannot go below it unless pages
are merged (KSM) or shared by several containers.
"""

from __future__ import annotations

import gc
import os
import select
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pallet.engine import monitor  # noqa: E402


def rollup(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Private_Dirty"):
                out[key] = int(rest.split()[0])
    return out


def main() -> int:
    import importlib

    for name in monitor.MOTHER_PRELOAD:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()
    kids = []
    for mode in ("pause", "poll"):
        r, _w = os.pipe()
        pid = os.fork()
        if pid == 0:
            if mode == "pause":
                import _signal

                _signal.pause()
            else:
                p = select.poll()
                p.register(r, select.POLLIN)
                p.poll()
            os._exit(0)
        kids.append((mode, pid))
    time.sleep(0.5)
    print("forked CPython child, idle     Private_Dirty      PSS")
    for mode, pid in kids:
        r = rollup(pid)
        print(f"  {mode:<28} {r['Private_Dirty'] / 1024:8.2f} MiB {r['Pss'] / 1024:6.2f} MiB")
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
