"""bench/run: `pallet run --rm busybox true` vs `podman run --rm` (runc) interleaved,
monitor PSS vs conmon PSS per idle container, and `pallet ps` with 100 containers.

Usage: .venv/bin/python bench/run.py [--runs 15] [--idle 1,20,100] [--ksm] [--networks none]
                                     [--publish-subnet CIDR [--publish-port N]]
--runs 0 skips the `run --rm` timings (which use the default bridge network).
--publish-subnet also measures idle monitors on a network of that subnet, as many as the
largest --idle step: without a published port, with `-p PORT:80` (their monitors relay
[::1]:PORT, see pallet/engine/relay.py), the latter again after one request each through
[::1], and again without a port (forked after the monitor mother loaded the relay). Host
ports are N, N+1... (default 18700).
--networks picks the `run --rm` rows: none, bridge (each tool's default network).
--ksm also measures the monitors with the kernel's samepage merging running (monitors opt
in with PR_SET_MEMORY_MERGE; conmon does not): ksmd is switched on for that measurement
and restored (unmerged, then its previous setting) right after.
Monitors are found by their pid files; the PSS of the zygote and of the monitor mother (the
lean process that forks them) is also reported shared among them, and the monitors' again
once those two have exited (as they do after 5 idle minutes: stopped here). An idle monitor
sleeps as /bin/sh after 1 s (pallet/engine/monitor.py, Monitor._sleep).
Everything runs in private roots and is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
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
# podman's default rlimits exceed this sandbox's hard limits (no CAP_SYS_RESOURCE).
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("Pss:"))


def monitor_pids(run_root: str) -> list[int]:
    out = []
    for name in os.listdir(run_root) if os.path.isdir(run_root) else []:
        try:
            with open(os.path.join(run_root, name, "monitor.pid")) as f:
                out.append(int(f.read().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    return [p for p in out if os.path.exists(f"/proc/{p}")]


def procs_matching(*needles: bytes) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if all(n in cmd for n in needles):
            out.append(int(pid))
    return out


KSM = "/sys/kernel/mm/ksm/"


@contextlib.contextmanager
def ksm_running():  # noqa: ANN201
    """ksmd on until it has scanned everything twice; then unmerged and as it was."""
    def read(name: str) -> int:
        with open(KSM + name) as f:
            return int(f.read())

    def write(name: str, value: int) -> None:
        with open(KSM + name, "w") as f:
            f.write(str(value))

    before = read("run")
    scans = read("full_scans")
    write("run", 1)
    try:
        deadline = time.monotonic() + 60
        while read("full_scans") < scans + 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        yield
    finally:
        write("run", 2)  # unmerge everything, so the next measurement starts clean
        write("run", before)


def published_pss(pallet: list[str], env: dict[str, str], run_root: str, subnet: str,
                  port: int, count: int) -> list[tuple[str, str, str]]:
    """Median PSS of COUNT idle monitors on a network of SUBNET, without and with a port
    published (then after one request each through [::1]): the relay's cost."""
    import urllib.request

    net = f"bench-{uuid.uuid4().hex[:6]}"
    subprocess.run(pallet + ["network", "create", "--subnet", subnet, net], env=env,
                   check=True, capture_output=True)
    serve = ["busybox", "httpd", "-f", "-p", "80", "-h", "/etc"]
    out = []

    def start(publish: bool) -> list[str]:
        ids = []
        for i in range(count):
            flags = ["-p", f"{port + i}:80"] if publish else []
            ids.append(subprocess.run(pallet + ["run", "-d", "--network", net, *flags, *serve],
                                      env=env, check=True, capture_output=True,
                                      text=True).stdout.strip())
        time.sleep(2.0)
        return ids

    def median_pss(ids: list[str]) -> str:
        pss = []
        for cid in ids:
            with open(os.path.join(run_root, cid, "monitor.pid")) as f:
                pss.append(pss_kib(int(f.read().split()[0])))
        return f"{statistics.median(pss):.0f} KiB"

    try:
        plain = start(False)
        out.append((f"idle monitor PSS on a network, {count} (median)", median_pss(plain), ""))
        published = start(True)
        out.append(("  with -p PORT:80 (relaying [::1]:PORT)", median_pss(published), ""))
        for i in range(count):
            urllib.request.urlopen(f"http://[::1]:{port + i}/hostname", timeout=5).read()
        time.sleep(0.5)
        out.append(("  after one request through [::1] each", median_pss(published), ""))
        later = start(False)
        out.append(("  without -p, forked after those (median)", median_pss(later), ""))
    finally:
        ids = subprocess.run(pallet + ["ps", "-aq", "--no-trunc", "-f", f"network={net}"],
                             env=env, capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(pallet + ["rm", "-f", *ids], env=env, capture_output=True)
        subprocess.run(pallet + ["network", "rm", net], env=env, capture_output=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--idle", type=lambda v: [int(x) for x in v.split(",")],
                    default=[1, 20, 100], help="idle container counts to measure PSS at")
    ap.add_argument("--ksm", action="store_true",
                    help="also measure idle monitors with KSM running (restored after)")
    ap.add_argument("--publish-subnet", default="",
                    help="also measure monitors of containers with a published port, on a "
                         "network of this subnet")
    ap.add_argument("--publish-port", type=int, default=18700,
                    help="the first host port --publish-subnet publishes")
    ap.add_argument("--networks", default="none,bridge",
                    help="which run --rm rows: none, bridge (each tool's default network)")
    args = ap.parse_args()
    # A real install has bytecode; this tree may not (PYTHONDONTWRITEBYTECODE).
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(HERE) + "/pallet"],
                   check=True, capture_output=True)
    base = tempfile.mkdtemp(prefix="pallet-bench-")
    root = os.path.join(base, "pallet")
    run_root = f"/run/pb-{uuid.uuid4().hex[:6]}"  # socket paths under it must fit 108 bytes
    env = dict(os.environ, PALLET_RUNROOT=run_root)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    pallet = [PALLET, "--root", root]
    podman = ["podman", "--root", os.path.join(base, "podman"), "--runroot",
              os.path.join(base, "podman-run"), "--cgroup-manager", "cgroupfs",
              "--events-backend", "file", "--runtime", "runc"]
    results: list[tuple[str, str, str]] = []
    try:
        subprocess.run(pallet + ["image", "build-busybox"], env=env, check=True,
                       capture_output=True)
        archive = os.path.join(base, "busybox.tar")
        subprocess.run(pallet + ["save", "busybox", "-o", archive], env=env, check=True,
                       capture_output=True)
        have_podman = shutil.which("podman") is not None
        if have_podman:
            subprocess.run(podman + ["load", "-i", archive], check=True, capture_output=True)

        # 1. run --rm true, interleaved (one warm-up each): with no network on both
        #    sides, then each with its default bridge network (CNI on both).
        modes = {"none": ("--network none", ["--network", "none"], ["--network", "none"]),
                 "bridge": ("default bridge", [], [])}
        for label, p_net, q_net in ((modes[m] for m in args.networks.split(","))
                                    if args.runs else ()):
            p_cmd = pallet + ["run", "--rm", *p_net, "busybox", "true"]
            q_cmd = podman + ["run", "--rm", *q_net, *ULIMITS, "busybox", "true"]
            timed(p_cmd, env)
            if have_podman:
                timed(q_cmd, env)
            tp, tq = [], []
            for _ in range(args.runs):
                tp.append(timed(p_cmd, env))
                if have_podman:
                    tq.append(timed(q_cmd, env))
            mp = statistics.median(tp)
            results.append((f"run --rm busybox true, {label} (median)", f"{mp * 1000:.0f} ms",
                            f"{statistics.median(tq) * 1000:.0f} ms" if tq else "n/a"))
            if tq:
                results.append(("  ratio pallet/podman", f"{mp / statistics.median(tq):.2f}",
                                "target < 0.5"))

        # 2. Idle monitors vs conmon at each step, then `pallet ps` with the most.
        env_idle = dict(env, PALLET_MONITOR_LEAN_AFTER="0.5")
        n_pallet = n_podman = 0
        for step in sorted(set(args.idle)):
            t0 = time.perf_counter()
            for _ in range(step - n_pallet):
                subprocess.run(pallet + ["run", "-d", "--network", "none", "busybox", "sleep",
                                         "3600"], env=env_idle,
                               check=True, capture_output=True)
            started = time.perf_counter() - t0
            if have_podman:
                for _ in range(step - n_podman):
                    subprocess.run(podman + ["run", "-d", "--network", "none", *ULIMITS,
                                             "busybox", "sleep", "3600"], check=True,
                                   capture_output=True)
            if step - n_pallet > 1:
                results.append((f"  start {step - n_pallet} detached (pallet)",
                                f"{started:.1f} s", ""))
            n_pallet = n_podman = step
            time.sleep(2.0)  # monitors settle: idle for 1 s, they sleep (exec /bin/sh)
            mons = monitor_pids(run_root)
            pss = [pss_kib(p) for p in mons]
            pm = statistics.median(pss) if pss else 0
            servers = [p for p in [zygote_pid(run_root)] if p] + procs_matching(b"pallet-monitor-mother",
                                                             run_root.encode())
            extra = [pss_kib(p) for p in servers]
            per = (sum(pss) + sum(extra)) / len(pss) if pss else 0
            conmons = procs_matching(b"conmon", base.encode())
            pc = statistics.median(pss_kib(p) for p in conmons) if conmons else 0
            results.append((f"idle monitor PSS, {len(mons)} running (median)",
                            f"{pm / 1024:.2f} MiB",
                            f"{pc / 1024:.2f} MiB (conmon, {len(conmons)})" if conmons
                            else "n/a"))
            results.append(("  incl. the zygote's and mother's share", f"{per / 1024:.2f} MiB",
                            f"{len(extra)} server process(es)"))
            if args.ksm:
                with ksm_running():
                    pss = [pss_kib(p) for p in mons]
                    extra = [pss_kib(p) for p in servers]
                    pc = statistics.median(pss_kib(p) for p in conmons) if conmons else 0
                results.append(("  with KSM running (median)",
                                f"{statistics.median(pss) / 1024:.2f} MiB",
                                f"{pc / 1024:.2f} MiB (conmon)" if conmons else "n/a"))
                results.append(("    incl. the zygote's and mother's share",
                                f"{(sum(pss) + sum(extra)) / len(pss) / 1024:.2f} MiB", ""))
        # Steady state: the zygote exits after 5 idle minutes, its monitor mother with it;
        # the monitors (and conmon) are then all that is left. Stopped here, not waited for.
        servers = [p for p in [zygote_pid(run_root)] if p] + procs_matching(
            b"pallet-monitor-mother", run_root.encode())
        for pid in servers[:1]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in servers):
            time.sleep(0.1)
        mons = monitor_pids(run_root)
        if mons:
            results.append(("  after the zygote and mother exit (median)",
                            f"{statistics.median(pss_kib(p) for p in mons) / 1024:.2f} MiB",
                            f"{len(mons)} monitors, no server left"))
        if args.publish_subnet:
            results += published_pss(pallet, env_idle, run_root, args.publish_subnet,
                                      args.publish_port, max(args.idle))
        if have_podman:
            subprocess.run(podman + ["rm", "-f", "-a"], capture_output=True)
        ps = [timed(pallet + ["ps"], env) for _ in range(10)]
        n = len(subprocess.run(pallet + ["ps", "-q"], env=env, capture_output=True,
                               text=True).stdout.split())
        results.append((f"pallet ps with {n} running (median)",
                        f"{statistics.median(ps) * 1000:.0f} ms", ""))
    finally:
        teardown(pallet, env, podman if shutil.which("podman") else None, run_root, base)
    print_results(results, "podman/conmon", 12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
