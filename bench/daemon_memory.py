"""bench/daemon_memory: what `pallet daemon` and the processes it starts hold in memory, idle
and with N pods running; RSS, PSS and private (USS) per process, from /proc/PID/smaps_rollup.

Usage: .venv/bin/python bench/daemon_memory.py [--runs 3] [--pods 20] [--concurrency 8]
                                              [--env K=V ...] [--verbose]
Each run starts a fresh daemon (own dirs under /tmp/hmem-*, own CNI bridge in 10.241.x.0/24,
busybox from a loopback registry) and measures it four times: just started; after a pull; after
one pod lifecycle (the state bench/cri.py calls idle); with N pods of one sleeping container
each. "bench/cri" is bench/cri.py's figure: VmRSS of the daemon plus its direct children.
Prints the median over the runs. Everything is removed at the end.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cri.kubelet import (  # noqa: E402
    CNI_BIN,
    container_config,
    make_cni_network,
    pod_config,
    start_registry_with_busybox,
)

BUSYBOX = "docker.io/library/busybox:latest"
KINDS = ("daemon", "spawner", "mother", "monitors", "other")
FIELDS = ("Rss", "Pss", "Private")
VERBOSE = False


def rollup(pid: int) -> dict[str, int]:
    out = dict.fromkeys(FIELDS, 0)
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for ln in f:
            key, _, rest = ln.partition(":")
            if key in ("Rss", "Pss"):
                out[key] = int(rest.split()[0])
            elif key in ("Private_Clean", "Private_Dirty"):
                out["Private"] += int(rest.split()[0])
    return out


def vmrss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))


def parents() -> dict[int, int]:
    out = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    out[int(p)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return out


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def interpreters(mark: str) -> list[int]:
    """This daemon's Python processes that are not its descendants (monitors, reparented):
    their command line (title) names the daemon's directory."""
    exe = os.path.realpath(sys.executable)
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit() and mark.encode() in cmdline(int(p)):
            try:
                if os.path.realpath(f"/proc/{p}/exe") == exe:
                    out.append(int(p))
            except OSError:
                continue
    return out


def measure(daemon_pid: int, mark: str, phase: str) -> dict[str, dict[str, int]]:
    if VERBOSE:
        print(phase)
    ppid = parents()
    tree = {daemon_pid}
    grew = True
    while grew:
        new = {p for p, pp in ppid.items() if pp in tree} - tree
        grew = bool(new)
        tree |= new
    totals = {k: dict.fromkeys((*FIELDS, "n"), 0) for k in KINDS}
    for pid in sorted(tree | set(interpreters(mark))):
        cmd = cmdline(pid)
        if pid == daemon_pid:
            kind = "daemon"
        elif ppid.get(pid) == daemon_pid and b"daemon" in cmd:
            kind = "spawner"
        elif b"mother" in cmd:
            kind = "mother"
        elif b"monitor" in cmd:
            kind = "monitors"
        elif pid in tree and os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(
                sys.executable):
            kind = "other"
        else:
            continue  # a container's own processes
        try:
            r = rollup(pid)
        except OSError:
            continue
        if VERBOSE:
            title = cmd[:100].replace(b"\0", b" ").decode(errors="replace")
            print(f"  {pid:>7} {kind:<9} rss {r['Rss']:>6} pss {r['Pss']:>6} "
                  f"private {r['Private']:>6}  {title}")
        for k in FIELDS:
            totals[kind][k] += r[k]
        totals[kind]["n"] += 1
    totals["bench/cri"] = {"Rss": sum(_safe(vmrss, p) for p in (daemon_pid, *[
        p for p, pp in ppid.items() if pp == daemon_pid])), "Pss": 0, "Private": 0, "n": 0}
    return totals


def _safe(fn, pid: int) -> int:  # noqa: ANN001
    try:
        return fn(pid)
    except (OSError, StopIteration):
        return 0


def start_daemon(d: Path, conf: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    sock = str(d / "cri.sock")
    pallet = shutil.which("pallet", path=os.path.dirname(sys.executable)) or "pallet"
    log = open(d / "daemon.log", "wb")
    proc = subprocess.Popen(
        [pallet, "daemon", "--config", str(conf), "--socket", sock, "--root", str(d / "root"),
         "--state-dir", str(d / "run")], stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, env={**os.environ, "PALLET_CONFIG": "", **env})
    log.close()
    channel = grpc.insecure_channel(f"unix://{sock}")
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"daemon did not start: {(d / 'daemon.log').read_text()[-2000:]}")
        try:
            grpc.channel_ready_future(channel).result(timeout=1)
            break
        except grpc.FutureTimeoutError:
            pass
    channel.close()
    return proc, sock


def one_run(args: argparse.Namespace, registry_host: str, env: dict[str, str]) -> dict:
    d = Path(tempfile.mkdtemp(prefix="hmem-"))
    net = make_cni_network("hmem", "10.241")
    conf = d / "pallet.toml"
    conf.write_text(f'[cni]\nconf_dir = "{net.conf_dir}"\nbin_dirs = ["{CNI_BIN}"]\n'
                    f'[registry]\nauths = {{}}\n[registry.mirrors]\n"docker.io" = '
                    f'["{registry_host}"]\n')
    proc, sock = start_daemon(d, conf, env)
    channel = grpc.insecure_channel(f"unix://{sock}")
    rt, img = pb_grpc.RuntimeServiceStub(channel), pb_grpc.ImageServiceStub(channel)
    logdir = str(d / "logs")
    out = {}
    pods: list[str] = []
    try:
        time.sleep(2)
        out["started"] = measure(proc.pid, str(d), "started")
        img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=BUSYBOX)))
        time.sleep(1)
        out["pulled"] = measure(proc.pid, str(d), "pulled")
        pods = start_pods(rt, logdir, 1, "warm", 1)
        remove_pods(rt, pods)
        time.sleep(2)
        out["idle"] = measure(proc.pid, str(d), "idle")
        pods = start_pods(rt, logdir, args.pods, "many", args.concurrency)
        time.sleep(3)
        out[f"{args.pods} pods"] = measure(proc.pid, str(d), f"{args.pods} pods")
        remove_pods(rt, pods)
        pods = []
    finally:
        if pods:
            remove_pods(rt, pods)
        channel.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        net.remove()
        shutil.rmtree(d, ignore_errors=True)
    return out


def start_pods(rt, logdir: str, count: int, tag: str, workers: int) -> list[str]:  # noqa: ANN001
    def one(i: int) -> str:
        cfg = pod_config(f"hmem-{tag}-{i}", logdir)
        pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=300).pod_sandbox_id
        cid = rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config("c", ["sleep", "3600"]),
            sandbox_config=cfg), timeout=300).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=300)
        return pod

    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(one, range(count)))


def remove_pods(rt, pods: list[str]) -> None:  # noqa: ANN001
    def one(pod: str) -> None:
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=300)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=300)

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(one, pods))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=8, help="pods started at once")
    ap.add_argument("--env", action="append", default=[], metavar="K=V",
                    help="extra environment for the daemon (e.g. MALLOC_ARENA_MAX=8)")
    ap.add_argument("--verbose", action="store_true", help="print each process measured")
    args = ap.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    env = dict(e.split("=", 1) for e in args.env)
    tmp = Path(tempfile.mkdtemp(prefix="hmem-reg-"))
    registry = start_registry_with_busybox(tmp)
    runs = []
    try:
        for _ in range(args.runs):
            runs.append(one_run(args, registry.host, env))
    finally:
        registry.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    kib = 1024
    for phase in runs[0]:
        print(f"\n{phase} (MiB, median of {len(runs)})")
        print(f"{'process':<10} {'n':>4} {'RSS':>7} {'PSS':>7} {'private':>8}")
        for kind in (*KINDS, "total", "bench/cri"):
            def med(field: str, kind: str = kind, phase: str = phase) -> float:
                if kind == "total":
                    return statistics.median(sum(r[phase][k][field] for k in KINDS)
                                             for r in runs)
                return statistics.median(r[phase][kind][field] for r in runs)
            if kind == "bench/cri":
                print(f"{kind:<10} {'':>4} {med('Rss') / kib:>7.1f}")
            elif med("n") or kind == "total":
                print(f"{kind:<10} {med('n'):>4.0f} {med('Rss') / kib:>7.1f} "
                      f"{med('Pss') / kib:>7.1f} {med('Private') / kib:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
