"""bench/dns: pallet's embedded DNS server (127.0.0.11) vs podman's aardvark-dns (netavark).

    .venv/bin/python bench/dns.py [--runs 5] [--lookups 200]

Each tool gets a user-defined network with its DNS on (pallet: any user network; podman 4 +
netavark: a network it creates, in a private --network-config-dir) and two busybox
containers on it, `peer` and `client`. Then, interleaved, per round:
- LOOKUPS lookups of `peer` from inside `client` (one exec of a shell loop of busybox
  `nslookup -type=a peer`, each a process: the same cost on both sides), as ms per lookup;
- `run --rm --network NET busybox nslookup -type=a peer` end to end (a container joining a
  network whose DNS server runs already).
And once: the DNS server's PSS and RSS with the two containers (pallet-dns of the private
root; aardvark-dns, which serves the podman network).
Prints medians and pallet/podman ratios. Private roots, all removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import print_results, teardown, timed  # noqa: E402
from run import PALLET, ULIMITS, procs_matching, pss_kib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("Rss:"))


def run(argv: list[str], env: dict[str, str]) -> str:
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {(out.stderr or out.stdout)[-500:]}")
    return out.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--lookups", type=int, default=200)
    args = ap.parse_args()
    if not shutil.which("podman"):
        raise SystemExit("podman is not installed: nothing to compare with")
    base = tempfile.mkdtemp(prefix="pallet-bench-dns-")
    run_root = f"/run/pbd-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, PALLET_RUNROOT=run_root)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    root = os.path.join(base, "pallet")
    pallet = [PALLET, "--root", root]
    podman = ["podman", "--root", os.path.join(base, "podman"), "--runroot",
              os.path.join(base, "podman-run"), "--cgroup-manager", "cgroupfs",
              "--events-backend", "file", "--runtime", "runc", "--network-config-dir",
              os.path.join(base, "podman-net")]
    pnet, qnet = f"pbd-{uuid.uuid4().hex[:6]}", f"pbd-{uuid.uuid4().hex[:6]}"
    loop = (f"i=0; while [ $i -lt {args.lookups} ]; do nslookup -type=a peer >/dev/null "
            "|| exit 1; i=$((i+1)); done")
    results: list[tuple[str, str, str]] = []
    try:
        run(pallet + ["image", "build-busybox"], env)
        archive = os.path.join(base, "busybox.tar")
        run(pallet + ["save", "busybox", "-o", archive], env)
        run(podman + ["load", "-i", archive], env)
        run(pallet + ["network", "create", "--subnet", "10.228.1.0/24", pnet], env)
        run(podman + ["network", "create", "--subnet", "10.228.2.0/24", qnet], env)
        tools = {
            "pallet": (pallet + ["run", "-d", "--network", pnet],
                       pallet + ["exec", "client", "sh", "-c", loop],
                       pallet + ["run", "--rm", "--network", pnet, "busybox", "nslookup",
                                 "-type=a", "peer"]),
            "podman": (podman + ["run", "-d", *ULIMITS, "--network", qnet],
                       podman + ["exec", "client", "sh", "-c", loop],
                       podman + ["run", "--rm", *ULIMITS, "--network", qnet, "busybox",
                                 "nslookup", "-type=a", "peer"]),
        }
        for start, _, _ in tools.values():
            for name in ("peer", "client"):
                run(start + ["--name", name, "busybox", "sleep", "3600"], env)
        for _, lookups, once in tools.values():  # warm-up
            run(lookups, env)
            run(once, env)
        per_lookup: dict[str, list[float]] = {t: [] for t in tools}
        joined: dict[str, list[float]] = {t: [] for t in tools}
        order = list(tools)
        for i in range(args.runs):
            for t in order[i % 2:] + order[:i % 2]:
                per_lookup[t].append(timed(tools[t][1], env) * 1000 / args.lookups)
                joined[t].append(timed(tools[t][2], env) * 1000)
        a, b = (statistics.median(per_lookup[t]) for t in order)
        results.append((f"lookup of a peer's name, {args.lookups} in a loop (ms each)",
                        f"{a:.2f}", f"{b:.2f}  ({a / b:.2f})"))
        a, b = (statistics.median(joined[t]) for t in order)
        results.append(("run --rm on the network + one lookup (ms)", f"{a:.0f}",
                        f"{b:.0f}  ({a / b:.2f})"))
        mine = procs_matching(b"pallet-dns", root.encode())
        theirs = procs_matching(b"aardvark-dns")
        if mine and theirs:
            results.append(("DNS server PSS / RSS (MiB)",
                            f"{pss_kib(mine[0]) / 1024:.1f} / {rss_kib(mine[0]) / 1024:.1f}",
                            f"{pss_kib(theirs[0]) / 1024:.1f} / "
                            f"{rss_kib(theirs[0]) / 1024:.1f}"))
    finally:
        subprocess.run(podman + ["rm", "-f", "-t", "0", "-a"], capture_output=True)
        subprocess.run(podman + ["network", "rm", "-f", qnet], capture_output=True)
        subprocess.run(pallet + ["rm", "-f", "peer", "client"], env=env, capture_output=True)
        subprocess.run(pallet + ["network", "rm", pnet], env=env, capture_output=True)
        teardown(pallet, env, podman, run_root, base)
    print_results(results, "podman (ratio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
