"""Cold pull + unpack from a local registry: pallet vs `podman pull` vs `skopeo copy` + `umoci unpack`.

Run as root from the repo root: `.venv/bin/python bench/pull.py [--runs N]`; prints medians, p90, ratios.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pallet.image.layout import TarEntry, make_tar, write_image_layout  # noqa: E402
from tests.fixtures.registry import Registry, start_registry  # noqa: E402

CACHE = Path("/var/cache/pallet-bench")
MINBASE_TAR = CACHE / "debian-bookworm-minbase.tar"
BIG_LAYOUT = CACHE / "big-layout"
PALLET = REPO / ".venv" / "bin" / "pallet"


def debian_mirror() -> str:
    """The Debian mirror apt is configured with (the only network this machine has)."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if line.startswith("URIs:") and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and "security" not in line:
                return next(w for w in words[1:] if "://" in w)
    return "http://deb.debian.org/debian"


def minbase_tar() -> bytes:
    """A debootstrap minbase bookworm root as a tar, built once and cached."""
    if not MINBASE_TAR.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            root = Path(tmp) / "root"
            print(f"building debian minbase with debootstrap from {debian_mirror()} ...", flush=True)
            subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root), debian_mirror()],
                           check=True, stdout=subprocess.DEVNULL)
            part = Path(tmp) / "rootfs.tar"
            subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(part), "."],
                           check=True)
            os.rename(part, MINBASE_TAR)
    return MINBASE_TAR.read_bytes()


def minbase_layout(dest: Path) -> Path:
    write_image_layout(dest, [minbase_tar()], {"Cmd": ["bash"], "Env": ["PATH=/usr/bin:/bin"]},
                       ref_name="latest")
    return dest


def big_layers(layers: int = 10, layer_mb: int = 50, seed: int = 1) -> list[bytes]:
    """~layers*layer_mb MB in files of mixed sizes; half random, half text, so gzip gets ~2x."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(2000)]
    out = []
    for n in range(layers):
        entries = [TarEntry(f"layer{n}/", "dir", mode=0o755)]
        entries += [TarEntry(f"layer{n}/d{d}/", "dir", mode=0o755) for d in range(16)]
        budget, i = layer_mb << 20, 0
        while budget > 0:
            size = min(budget, rng.choice([512, 4096, 20000, 100_000, 1 << 20, 4 << 20]))
            half = size // 2
            text = b" ".join(rng.choices(words, k=half // 5 + 1))[: size - half]
            entries.append(TarEntry(f"layer{n}/d{i % 16}/f{i}", data=rng.randbytes(half) + text))
            budget -= size
            i += 1
        out.append(make_tar(entries))
    return out


def big_layout() -> Path:
    """The ~500 MB, 10-layer image as an OCI layout, built once and cached."""
    if not (BIG_LAYOUT / "index.json").exists():
        print("building the ~500 MB 10-layer image ...", flush=True)
        tmp = BIG_LAYOUT.with_name(BIG_LAYOUT.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        write_image_layout(tmp, big_layers(), {"Cmd": ["sh"]}, ref_name="latest")
        os.rename(tmp, BIG_LAYOUT)
    return BIG_LAYOUT


# -- contenders: each pulls `ref` into a fresh dir under `work` and unpacks it ------------

def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}… failed ({r.returncode}): {r.stderr.strip()[-500:]}")


def pull_pallet(ref: str, work: Path) -> None:
    _run([str(PALLET), "--root", str(work / "root"), "pull", "-q", ref])


def pull_podman(ref: str, work: Path) -> None:
    # podman refuses a runroot path longer than 50 characters.
    run = Path(tempfile.mkdtemp(prefix="pb-", dir="/run"))
    try:
        _run(["podman", "--root", str(work / "root"), "--runroot", str(run),
              "--cgroup-manager=cgroupfs", "--events-backend=none", "--storage-driver=overlay",
              "pull", "-q", "--tls-verify=false", ref])
    finally:
        cleanup(run)


def pull_skopeo_umoci(ref: str, work: Path) -> None:
    _run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{work}/oci:latest"])
    _run(["umoci", "unpack", "--image", f"{work}/oci:latest", str(work / "bundle")])


CONTENDERS: dict[str, Callable[[str, Path], None]] = {
    "pallet": pull_pallet, "podman": pull_podman, "skopeo+umoci": pull_skopeo_umoci,
}


def cleanup(work: Path) -> None:
    # podman's overlay driver may leave its home bind-mounted private; lift it before rm.
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    for m in sorted((m for m in mounts if m.startswith(str(work))), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    shutil.rmtree(work, ignore_errors=True)


def timed(fn: Callable[[str, Path], None], ref: str, base: Path) -> float:
    work = Path(tempfile.mkdtemp(dir=base, prefix="run-"))
    try:
        os.sync()  # start each run without another run's dirty pages still being written
        t0 = time.perf_counter()
        fn(ref, work)
        return time.perf_counter() - t0
    finally:
        cleanup(work)


def p90(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--only", choices=["minbase", "big"], default=None, help="one image only")
    ap.add_argument("--tools", default=",".join(CONTENDERS), help="comma-separated contenders")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/pull.py must run as root (podman/umoci unpack and overlay snapshots)")
        return 2
    from rich.console import Console
    from rich.table import Table

    tools = [t for t in args.tools.split(",") if t in CONTENDERS]
    base = Path(tempfile.mkdtemp(prefix="pallet-bench-pull-", dir="/var/tmp"))
    registry: Registry | None = None
    try:
        registry = start_registry()
        images = {}
        if args.only in (None, "minbase"):
            registry.push_layout(minbase_layout(base / "minbase-layout"), "latest", "bench/minbase:1")
            images["debian minbase"] = f"{registry.host}/bench/minbase:1"
        if args.only in (None, "big"):
            registry.push_layout(big_layout(), "latest", "bench/big:1")
            images["500MB/10 layers"] = f"{registry.host}/bench/big:1"
        times: dict[tuple[str, str], list[float]] = {(i, t): [] for i in images for t in tools}
        for ref in images.values():
            for t in tools:  # warm-up: page cache holds the registry's blobs for everyone alike
                timed(CONTENDERS[t], ref, base)
        for n in range(args.runs):
            for img, ref in images.items():
                order = tools[n % len(tools):] + tools[:n % len(tools)]  # rotate who goes first
                for t in order:
                    times[(img, t)].append(timed(CONTENDERS[t], ref, base))
            print(f"round {n + 1}/{args.runs} done", flush=True)
        table = Table(title=f"cold pull + unpack from a loopback registry ({args.runs} runs, seconds)")
        for col in ["image", "tool", "median", "p90", "pallet ratio"]:
            table.add_column(col, justify="left" if col in ("image", "tool") else "right")
        for img in images:
            pallet = statistics.median(times[(img, "pallet")]) if "pallet" in tools else None
            for t in tools:
                med = statistics.median(times[(img, t)])
                ratio = "" if t == "pallet" or pallet is None else f"{pallet / med:.2f}"
                table.add_row(img, t, f"{med:.2f}", f"{p90(times[(img, t)]):.2f}", ratio)
        Console().print(table)
    finally:
        if registry:
            registry.stop()
        cleanup(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
