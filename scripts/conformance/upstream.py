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
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rootfs import build_rootfs, make_tarball  # noqa: E402
from runtimes import resolve  # noqa: E402

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


def _yaml_errors(text: str) -> list[str]:
    """"error" values from the TAP YAML blocks (tap-go writes them as JSON)."""
    errs = []
    for block in re.findall(r"^  ---\n(.*?)^  \.\.\.$", text, re.S | re.M):
        try:
            d = json.loads(block)
        except ValueError:
            continue
        if isinstance(d, dict) and d.get("error"):
            errs.append(str(d["error"]))
    return errs


def parse_tap(text: str, rc: int, stderr: str = "") -> tuple[str, str]:
    """Classify one validation program's run.

    - any `not ok` -> fail
    - non-zero exit -> fail (the programs exit 1 through util.Fatal when the runtime
      or runtimetest reported an error; stderr says which)
    - only `# SKIP` test points -> skip
    - test points, exit 0 -> pass
    - no test point at all: several programs (prestart, poststart, poststop, *_fail,
      process_*_fail, hooks) print only a YAML `error` block when something went wrong,
      and nothing but the plan `1..0` when it did not -> fail if such a block is there,
      else pass.
    """
    lines = text.splitlines()
    oks = [ln for ln in lines if ln.startswith("ok ")]
    nots = [ln for ln in lines if ln.startswith("not ok ")]
    last_err = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if nots:
        msg = "; ".join(n[7:] for n in nots[:3])
        errs = _yaml_errors(text)
        if errs:
            msg += " | " + errs[0].replace("\n", " ")
        return "fail", msg[:300]
    if rc != 0:
        return "fail", f"exit {rc}: {last_err or text.strip()[-200:]}"[:300]
    if oks and all("# SKIP" in o.upper() for o in oks):
        return "skip", oks[0].split("# SKIP", 1)[-1].strip()[:200]
    if oks:
        return "pass", ""
    errs = _yaml_errors(text)
    if errs:
        return "fail", errs[0].replace("\n", " ")[:300]
    return "pass", "no test point; exit 0 and no error reported"


def root_wrapper(spec: str, dest_dir: str, state_dir: str) -> str:
    """An executable for RUNTIME=<path> that runs the runtime with a private --root.

    The validation programs call `$RUNTIME create/start/state/kill/delete ...` with the
    runtime's default state directory; a private one keeps the suite's containers apart
    from anything else using that runtime on the machine. Also wraps crun on hybrid
    cgroup hosts (runtimes.resolve).
    """
    label, argv, _ = resolve(spec)
    os.makedirs(dest_dir, exist_ok=True)
    os.makedirs(state_dir, exist_ok=True)
    out = os.path.join(dest_dir, label)
    with open(out, "w") as f:
        f.write("#!/bin/sh\n# generated by scripts/conformance/upstream.py\n")
        f.write("exec " + " ".join(shlex.quote(a) for a in argv) + f" --root {shlex.quote(state_dir)} \"$@\"\n")
    os.chmod(out, 0o755)
    return out


def cleanup(runtime: str, state_dir: str) -> list[str]:
    """Force-delete containers a test left in the private state dir (timeouts, early exits)."""
    left = [d for d in (os.listdir(state_dir) if os.path.isdir(state_dir) else [])
            if os.path.isdir(os.path.join(state_dir, d))]
    for cid in left:
        subprocess.run([runtime, "delete", "--force", cid], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
    return left


def detach_mounts_under(path: str) -> int:
    """Lazily unmount everything mounted below PATH, deepest first; return how many.

    runc 1.1 leaves a mount-namespace-less container's rootfs mounts (proc, dev, sys,
    binds) in the caller's namespace after delete; rmtree must never walk into those.
    """
    prefix = os.path.realpath(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [ln.split()[4].replace("\\040", " ") for ln in f]
    below = sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)
    for p in below:
        subprocess.run(["umount", "-l", p], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return len(below)


# The cgroups the linux_cgroups_* programs name (runtime-tools' cgroups.AbsCgroupPath and
# RelCgroupPath): the runtime removes the container's own cgroup at delete, but the parents it
# made for a relative path (testdir/cgrouptest) stay. runc and pallet-runc put those under
# their own cgroup, crun 1.8 (v1 memory) under the hierarchy's root: both are looked at.
ABS_TEST_CGROUPS = ("cgrouptest",)
REL_TEST_CGROUPS = ("testdir/cgrouptest/container", "testdir/cgrouptest", "testdir")  # deepest first


def own_cgroup_dirs(mountinfo: str, proc_cgroup: str) -> list[tuple[str, str]]:
    """(hierarchy mount point, this process's cgroup dir in it) for each mounted hierarchy.

    v1 hierarchies are matched to /proc/self/cgroup lines by their controllers (or name=),
    cgroup2 to the "0::" line; works on v1, v2 and hybrid hosts, and inside a cgroup
    namespace (a mount whose root is not "/").
    """
    paths = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            paths[parts[1]] = parts[2]
    out = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line:
            continue
        after = line.split(" - ", 1)[1].split()
        fstype, opts = after[0], after[2] if len(after) > 2 else ""
        root, point = fields[3], fields[4].replace("\\040", " ")
        if fstype == "cgroup2":
            cg = paths.get("")
        elif fstype == "cgroup":
            cg = None
            for key, value in paths.items():
                if key and set(key.split(",")) <= set(opts.split(",")):
                    cg = value
                    break
        else:
            continue
        if cg is None:
            continue
        if root != "/" and (cg == root or cg.startswith(root + "/")):
            cg = cg[len(root):] or "/"
        out.append((point, os.path.join(point, cg.lstrip("/"))))
    return out


def test_cgroup_dirs() -> list[str]:
    """The cgroup dirs the cgroup tests may create, deepest first, in every hierarchy."""
    with open("/proc/self/mountinfo") as f:
        mountinfo = f.read()
    with open("/proc/self/cgroup") as f:
        proc_cgroup = f.read()
    dirs = []
    for point, own in own_cgroup_dirs(mountinfo, proc_cgroup):
        for base in dict.fromkeys([os.path.normpath(own), point]):
            dirs += [os.path.join(base, rel) for rel in REL_TEST_CGROUPS]
        dirs += [os.path.join(point, rel) for rel in ABS_TEST_CGROUPS]
    return dirs


def remove_test_cgroups(created: list[str]) -> list[str]:
    """rmdir the given cgroup dirs (the ones that were not there before the run).

    Only rmdir: a cgroup that still has processes or children stays, and is reported.
    """
    left = []
    for d in created:
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError as e:
            left.append(f"{d}: {e.strerror}")
    return left


def run(cache: str, runtimes: list[str], timeout: float, out_json: str, only: set[str] | None) -> None:
    bindir = os.path.join(cache, "bin")
    work = tempfile.mkdtemp(prefix="conf-upstream-", dir="/tmp")
    runs = []
    # The runtimes run in this process's cgroups; note which test cgroups exist already so
    # that only the ones this run made are removed afterwards.
    new_cgroups = [d for d in test_cgroup_dirs() if not os.path.exists(d)]
    try:
        rf = build_rootfs(os.path.join(work, "rootfs"))
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
        make_tarball(rf, os.path.join(work, f"rootfs-{arch}.tar.gz"))
        shutil.copy2(os.path.join(bindir, "runtimetest"), os.path.join(work, "runtimetest"))
        tests = sorted(glob.glob(os.path.join(bindir, "validation", "*.t")))
        tmp = os.path.join(work, "tmp")
        os.makedirs(tmp)
        for spec in runtimes:
            try:
                label, _, note = resolve(spec)
                path = root_wrapper(spec, os.path.join(work, "bin"), os.path.join(work, "state", label))
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
                    # TMPDIR: the programs make their bundles with os.MkdirTemp("", ...) and
                    # leave them behind when they stop early; keep them under the work dir.
                    p = subprocess.run([t], cwd=work, env=dict(os.environ, RUNTIME=path, TMPDIR=tmp),
                                       capture_output=True, text=True, timeout=timeout)
                    status, msg = parse_tap(p.stdout, p.returncode, p.stderr)
                except subprocess.TimeoutExpired:
                    status, msg = "timeout", f"exceeded {timeout}s"
                dt = time.monotonic() - t0
                results[name] = {"status": status, "message": msg, "seconds": round(dt, 2)}
                print(f"{label:>12} {status:>7} {name:<40} {dt:5.2f}s {msg[:120]}", flush=True)
            leftover = cleanup(path, os.path.join(work, "state", label))
            if leftover:
                print(f"{label:>12} cleanup: force-deleted {len(leftover)} leftover container(s)", flush=True)
            runs.append({"runtime": label, "path": path, "note": note, "results": results})
    finally:
        for msg in remove_test_cgroups(new_cgroups):
            print(f"# test cgroup left in place: {msg}", flush=True)
        leaked = detach_mounts_under(work)
        if leaked:
            print(f"# detached {leaked} mount(s) left under {work} in this mount namespace "
                  "(a runtime that ran a container without a mount namespace and did not "
                  "clean up)", flush=True)
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
