#!/usr/bin/env python3
"""Build and run the opencontainers/runtime-tools validation suite (GOPATH mode, offline).

    upstream.py find                     # print the source dir or, exit 2, what is missing
    upstream.py build SRC CACHE          # go build runtimetest + validation/*/*.go -> CACHE/bin
    upstream.py run CACHE --json OUT [--timeout S] RUNTIME...

Debian's golang-github-opencontainers-runtime-tools-dev ships only the library
packages (generate, validate, specerror, ...), not validation/ or cmd/runtimetest,
and Debian has no package for github.com/mndrix/tap-go which the validation
programs import. A full source tree (upstream checkout with its vendor/ dir, or the
Debian source package's orig tarball) can be given with RUNTIME_TOOLS_SRC=DIR.
Results are written in native.py's JSON format so table.py prints both.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rootfs import build_rootfs, make_tarball  # noqa: E402
from runtimes import resolve, wrapper_script  # noqa: E402

IMPORT = "github.com/opencontainers/runtime-tools"
DEBIAN_GOCODE = "/usr/share/gocode/src"
CACHE = os.environ.get("PALLET_CONFORMANCE_CACHE", "/var/cache/pallet-conformance")
APT_OPTS = [f"-o=Dir::Etc::SourceList={CACHE}/apt/sources.list", "-o=Dir::Etc::SourceParts=/dev/null",
            f"-o=Dir::State::Lists={CACHE}/apt/lists"]


def complete(src: str) -> bool:
    return os.path.isdir(os.path.join(src, "validation")) and os.path.isdir(os.path.join(src, "cmd", "runtimetest"))


def try_debian_source() -> str | None:
    """apt-get source through a private deb-src list (the host's sources are left alone)."""
    dest = os.path.join(CACHE, "debsrc")
    os.makedirs(os.path.join(CACHE, "apt", "lists", "partial"), exist_ok=True)
    with open(os.path.join(CACHE, "apt", "sources.list"), "w") as f:
        f.write("deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                "http://deb.debian.org/debian bookworm main\n")
    os.makedirs(dest, exist_ok=True)
    q = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["apt-get", *APT_OPTS, "update"], **q)
    subprocess.run(["apt-get", *APT_OPTS, "--download-only", "source",
                    "golang-github-opencontainers-runtime-tools"], cwd=dest, **q)
    tars = glob.glob(os.path.join(dest, "golang-github-opencontainers-runtime-tools_*.orig.tar.*"))
    if not tars:
        return None
    out = os.path.join(CACHE, "runtime-tools-src")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    subprocess.run(["tar", "-xf", tars[0], "-C", out, "--strip-components=1"], check=True)
    return out if complete(out) else None


def find() -> tuple[str | None, list[str]]:
    missing = []
    cands = [os.environ.get("RUNTIME_TOOLS_SRC", ""), os.path.join(CACHE, "runtime-tools-src"),
             os.path.join(DEBIAN_GOCODE, IMPORT)]
    for c in cands:
        if c and complete(c):
            return c, []
    missing.append(f"{DEBIAN_GOCODE}/{IMPORT}: Debian's -dev package has no validation/ and no cmd/runtimetest")
    src = try_debian_source()
    if src:
        return src, []
    missing.append("apt-get source golang-github-opencontainers-runtime-tools: the .orig.tar.xz is not "
                   "served by this machine's Debian mirror (404)")
    missing.append("no RUNTIME_TOOLS_SRC=DIR given (an upstream checkout incl. vendor/ would do)")
    missing.append("github.com/mndrix/tap-go (imported by validation/util): not packaged in Debian; "
                   "needed from the checkout's vendor/ dir")
    return None, missing


def build(src: str, cache: str) -> None:
    gopath = os.path.join(cache, "gopath")
    dst = os.path.join(gopath, "src", IMPORT)
    if not os.path.exists(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copytree(src, dst, symlinks=True)
    env = dict(os.environ, GOPATH=f"{gopath}:/usr/share/gocode", GO111MODULE="off", GOFLAGS="",
               GOCACHE=os.path.join(cache, "gocache"), CGO_ENABLED="0", GOPROXY="off")
    bindir = os.path.join(cache, "bin")
    os.makedirs(os.path.join(bindir, "validation"), exist_ok=True)
    subprocess.run(["go", "build", "-o", os.path.join(bindir, "runtimetest"), "./cmd/runtimetest"],
                   cwd=dst, env=env, check=True)
    failed = []
    for prog in sorted(glob.glob(os.path.join(dst, "validation", "*", "*.go"))):
        name = os.path.basename(os.path.dirname(prog))
        if name == "util":
            continue
        out = os.path.join(bindir, "validation", name + ".t")
        if os.path.exists(out) and os.path.getmtime(out) > os.path.getmtime(prog):
            continue
        r = subprocess.run(["go", "build", "-o", out, prog], cwd=dst, env=env)
        if r.returncode:
            failed.append(name)
    if failed:
        print(f"upstream: {len(failed)} validation programs did not build: {' '.join(failed)}", file=sys.stderr)


def parse_tap(text: str, rc: int) -> tuple[str, str]:
    oks = [ln for ln in text.splitlines() if ln.startswith("ok ")]
    nots = [ln for ln in text.splitlines() if ln.startswith("not ok ")]
    if nots:
        return "fail", "; ".join(n[7:] for n in nots[:3])[:300]
    if "# SKIP" in text.upper() and not [o for o in oks if "# SKIP" not in o.upper()]:
        return "skip", text.strip().splitlines()[-1][:200] if text.strip() else ""
    if oks and rc == 0:
        return "pass", ""
    return "error", f"exit {rc}, no TAP result: {text.strip()[-200:]}"


def run(cache: str, runtimes: list[str], timeout: float, out_json: str, only: set[str] | None) -> None:
    bindir = os.path.join(cache, "bin")
    work = tempfile.mkdtemp(prefix="pallet-conf-upstream-")
    runs = []
    try:
        rf = build_rootfs(os.path.join(work, "rootfs"))
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
        make_tarball(rf, os.path.join(work, f"rootfs-{arch}.tar.gz"))
        shutil.copy2(os.path.join(bindir, "runtimetest"), os.path.join(work, "runtimetest"))
        tests = sorted(glob.glob(os.path.join(bindir, "validation", "*.t")))
        for spec in runtimes:
            try:
                label, _, note = resolve(spec)
                path = wrapper_script(spec, os.path.join(cache, "wrappers"))
            except FileNotFoundError as e:
                runs.append({"runtime": spec, "error": str(e), "results": {}})
                continue
            results = {}
            for t in tests:
                name = os.path.basename(t)[:-2]
                if only and name not in only:
                    continue
                t0 = time.monotonic()
                try:
                    p = subprocess.run([t], cwd=work, env=dict(os.environ, RUNTIME=path), capture_output=True,
                                       text=True, timeout=timeout)
                    status, msg = parse_tap(p.stdout, p.returncode)
                except subprocess.TimeoutExpired:
                    status, msg = "timeout", f"exceeded {timeout}s"
                dt = time.monotonic() - t0
                results[name] = {"status": status, "message": msg, "seconds": round(dt, 2)}
                print(f"{label:>12} {status:>7} {name:<40} {dt:5.2f}s {msg[:120]}", flush=True)
            runs.append({"runtime": label, "path": path, "note": note, "results": results})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(out_json, "w") as f:
        json.dump({"suite": "opencontainers/runtime-tools validation", "runs": runs}, f, indent=1)


def main() -> int:
    a = sys.argv[1:]
    if not a:
        print(__doc__)
        return 2
    if a[0] == "find":
        src, missing = find()
        if src:
            print(src)
            return 0
        print("\n".join(missing))
        return 2
    if a[0] == "build":
        build(a[1], a[2])
        return 0
    if a[0] == "run":
        import argparse
        ap = argparse.ArgumentParser()
        ap.add_argument("cache")
        ap.add_argument("runtimes", nargs="+")
        ap.add_argument("--json", required=True)
        ap.add_argument("--timeout", type=float, default=60)
        ap.add_argument("--only")
        o = ap.parse_args(a[1:])
        run(o.cache, o.runtimes, o.timeout, o.json, set(o.only.split(",")) if o.only else None)
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
