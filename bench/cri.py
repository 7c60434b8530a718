"""bench/cri: the pod lifecycle RPCs and 50 pods started at once, pallet daemon vs Debian's
containerd (CRI plugin, runc), driven by one gRPC client, interleaved; daemon RSS idle and busy.

Usage: .venv/bin/python bench/cri.py [--runs 15] [--concurrent 50] [--many 100]
Each daemon gets a private socket, root, state and CNI network (own bridge, 10.211.x.0/24);
images come from a loopback registry (containerd's pause image is busybox sleeping).
Everything is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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

from pallet.image.busybox import busybox_layer  # noqa: E402
from pallet.image.layout import write_image_layout  # noqa: E402
from tests.cri.kubelet import (  # noqa: E402
    CNINet,
    cleanup_pods,
    container_config,
    make_cni_network,
    pod_config,
    start_pod_daemon,
    start_registry_with_busybox,
)

BUSYBOX = "docker.io/library/busybox:latest"
STEPS = ("RunPodSandbox", "CreateContainer", "StartContainer", "StopContainer",
         "RemoveContainer", "StopPodSandbox", "RemovePodSandbox")
# Dies at SIGTERM, so StopContainer measures the runtime, not a grace period.
WORKLOAD = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


class Runtime:
    def __init__(self, name: str, socket: str, pid: int):
        self.name, self.socket, self.pid = name, socket, pid
        self.channel = grpc.insecure_channel(f"unix://{socket}", options=[
            ("grpc.max_receive_message_length", 16 << 20)])
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.rt = pb_grpc.RuntimeServiceStub(self.channel)
        self.img = pb_grpc.ImageServiceStub(self.channel)


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
    return total


def children(pid: int) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(p))
            except (OSError, ValueError, IndexError):
                continue
    return out


def start_containerd(d: Path, net: CNINet, registry: str) -> tuple[subprocess.Popen, str]:
    sock = str(d / "containerd.sock")
    mirror = f'endpoint = ["http://{registry}"]'
    (d / "config.toml").write_text(f"""version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{registry}/library/pause:bench"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{net.conf_dir}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    {mirror}
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    {mirror}
""")
    log = open(d / "containerd.log", "wb")
    proc = subprocess.Popen(["containerd", "--config", str(d / "config.toml")], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 30
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"containerd did not start: {(d / 'containerd.log').read_text()[-2000:]}")
        time.sleep(0.05)
    return proc, sock


def push_pause(registry, tmp: Path) -> None:  # noqa: ANN001
    layout = tmp / "pause"
    write_image_layout(layout, [busybox_layer()], {
        "Env": ["PATH=/bin"], "Entrypoint": ["sleep", "2147483647"]}, ref_name="bench")
    registry.push_layout(layout, "bench", "library/pause:bench")


def lifecycle(r: Runtime, logdir: str, n: int) -> dict[str, float]:
    times: dict[str, float] = {}

    def timed(step: str, fn, req):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        out = fn(req)
        times[step] = (time.perf_counter() - t) * 1000
        return out

    cfg = pod_config(f"bench-{r.name}-{n}", logdir)
    pod = timed("RunPodSandbox", r.rt.RunPodSandbox,
                pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    cid = timed("CreateContainer", r.rt.CreateContainer, pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=container_config("c", WORKLOAD), sandbox_config=cfg)
    ).container_id
    timed("StartContainer", r.rt.StartContainer, pb.StartContainerRequest(container_id=cid))
    time.sleep(0.05)  # the shell installs its trap
    timed("StopContainer", r.rt.StopContainer, pb.StopContainerRequest(container_id=cid,
                                                                       timeout=10))
    timed("RemoveContainer", r.rt.RemoveContainer, pb.RemoveContainerRequest(container_id=cid))
    timed("StopPodSandbox", r.rt.StopPodSandbox, pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    timed("RemovePodSandbox", r.rt.RemovePodSandbox,
          pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    return times


def start_pods(r: Runtime, logdir: str, count: int, tag: str, workers: int) -> tuple[float, list]:
    def one(i: int) -> str:
        cfg = pod_config(f"{tag}-{r.name}-{i}", logdir)
        pod = r.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=300).pod_sandbox_id
        cid = r.rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config("c", WORKLOAD), sandbox_config=cfg),
            timeout=300).container_id
        r.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=300)
        return pod

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        pods = list(ex.map(one, range(count)))
    return time.perf_counter() - t, pods


def remove_pods(r: Runtime, pods: list[str]) -> None:
    def one(pod: str) -> None:
        r.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=300)
        r.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=300)

    with ThreadPoolExecutor(16) as ex:
        list(ex.map(one, pods))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--concurrent", type=int, default=50)
    ap.add_argument("--many", type=int, default=100)
    args = ap.parse_args()
    if not shutil.which("containerd"):
        raise SystemExit("containerd is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="pcri-bench-"))
    logdir = str(tmp / "logs")
    nets = [make_cni_network(), make_cni_network()]
    registry = start_registry_with_busybox(tmp)
    push_pause(registry, tmp)
    pallet_d = start_pod_daemon(nets[0], registry)
    # containerd puts pods under /k8s.io in each hierarchy: removed after, if we made it.
    k8s_cgroups = [p for p in Path("/sys/fs/cgroup").glob("*/") if not (p / "k8s.io").exists()]
    (tmp / "containerd").mkdir()
    ctrd, ctrd_sock = start_containerd(tmp / "containerd", nets[1], registry.host)
    runtimes = [Runtime("pallet", pallet_d.socket, pallet_d.proc.pid),
                Runtime("containerd", ctrd_sock, ctrd.pid)]
    try:
        for r in runtimes:
            r.img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=BUSYBOX)))
            lifecycle(r, logdir, -1)  # warm-up (containerd pulls its pause image here)
        time.sleep(2)
        idle = {r.name: rss_kib([r.pid, *children(r.pid)] if r.name == "pallet" else [r.pid])
                for r in runtimes}
        samples: dict[str, dict[str, list[float]]] = {r.name: {s: [] for s in STEPS}
                                                      for r in runtimes}
        totals: dict[str, list[float]] = {r.name: [] for r in runtimes}
        for i in range(args.runs):
            for r in (runtimes if i % 2 == 0 else runtimes[::-1]):
                t = lifecycle(r, logdir, i)
                for s in STEPS:
                    samples[r.name][s].append(t[s])
                totals[r.name].append(sum(t.values()))
        walls: dict[str, float] = {}
        for r in runtimes[::-1]:
            wall, pods = start_pods(r, logdir, args.concurrent, "conc", args.concurrent)
            walls[r.name] = wall
            remove_pods(r, pods)
        busy: dict[str, int] = {}
        for r in runtimes:
            _, pods = start_pods(r, logdir, args.many, "many", 16)
            time.sleep(3)
            busy[r.name] = rss_kib([r.pid, *children(r.pid)] if r.name == "pallet" else [r.pid])
            remove_pods(r, pods)
    finally:
        cleanup_pods(pallet_d)
        for r in runtimes[1:]:
            try:
                for p in r.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items:
                    r.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=p.id))
                    r.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id))
            except grpc.RpcError:
                pass
        pallet_d.stop()
        if ctrd.poll() is None:
            ctrd.send_signal(signal.SIGTERM)
            try:
                ctrd.wait(20)
            except subprocess.TimeoutExpired:
                ctrd.kill()
                ctrd.wait()
            subprocess.run(["umount", "-R", str(tmp / "containerd" / "root")], capture_output=True)
            subprocess.run(["umount", "-R", str(tmp / "containerd" / "state")],
                           capture_output=True)
        for p in k8s_cgroups:
            with contextlib.suppress(OSError):
                (p / "k8s.io").rmdir()
        registry.stop()
        for n in nets:
            n.remove()
        shutil.rmtree(pallet_d.dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)

    p, c = "pallet", "containerd"
    print(f"\nCRI pod lifecycle, median of {args.runs} interleaved runs (ms)")
    print(f"{'RPC':<18} {'pallet':>9} {'containerd':>11} {'ratio':>7}")
    for s in (*STEPS, "total"):
        a = statistics.median(totals[p] if s == "total" else samples[p][s])
        b = statistics.median(totals[c] if s == "total" else samples[c][s])
        print(f"{s:<18} {a:>9.1f} {b:>11.1f} {a / b:>7.2f}")
    a, b = walls[p], walls[c]
    print(f"{args.concurrent} pods at once (s) {a:>6.2f} {b:>11.2f} {a / b:>7.2f}")
    print(f"daemon RSS idle (MiB) {idle[p] / 1024:>6.1f} {idle[c] / 1024:>11.1f} "
          f"{idle[p] / idle[c]:>7.2f}")
    print(f"RSS, {args.many} pods (MiB) {busy[p] / 1024:>6.1f} {busy[c] / 1024:>11.1f} "
          f"{busy[p] / busy[c]:>7.2f}")
    print("(pallet's RSS includes its spawner; containerd's excludes its shims)")
    print(json.dumps({"samples": {k: {s: statistics.median(v) for s, v in d.items()}
                                  for k, d in samples.items()}, "walls": walls,
                      "idle_kib": idle, "busy_kib": busy}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
