#!/usr/bin/env python3
"""Build a minimal busybox root filesystem (and OCI bundle) from Debian's busybox-static.

Reusable from other scripts:

    sys.path.insert(0, "<repo>/scripts/conformance")
    from rootfs import build_rootfs, make_tarball, write_bundle, default_config

CLI:
    rootfs.py DIR                 # populate DIR with a busybox rootfs
    rootfs.py DIR --tar FILE      # ... and pack it as FILE (contents at the top level,
                                  #     the layout runtime-tools' rootfs-<arch>.tar.gz has)
    rootfs.py --bundle DIR [--args true]   # DIR/rootfs + DIR/config.json (runc-spec style)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import tarfile

BUSYBOX = "/bin/busybox"

# What `runc spec` (runc 1.1.5) writes, with terminal=false.
RUNC_SPEC_DEFAULT: dict = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "cwd": "/",
        "capabilities": {
            k: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            for k in ("bounding", "effective", "permitted", "ambient")
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "runc",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}


def default_config(args: list[str] | None = None) -> dict:
    cfg = copy.deepcopy(RUNC_SPEC_DEFAULT)
    if args is not None:
        cfg["process"]["args"] = list(args)
    return cfg


def build_rootfs(dest: str, busybox: str = BUSYBOX) -> str:
    """Populate *dest* with busybox and a symlink per applet (idempotent)."""
    if not os.path.exists(busybox):
        raise FileNotFoundError(f"{busybox} missing: apt-get install busybox-static")
    os.makedirs(dest, exist_ok=True)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp",
              "root", "var", "run", "mnt"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    target = os.path.join(dest, "bin", "busybox")
    if not os.path.exists(target):
        shutil.copy2(busybox, target)
        os.chmod(target, 0o755)
    applets = subprocess.run([busybox, "--list-full"], check=True, capture_output=True,
                             text=True).stdout.split()
    for rel in applets:
        if rel == "linuxrc" or rel == "bin/busybox":
            continue
        link = os.path.join(dest, rel)
        if os.path.lexists(link):
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(target, os.path.dirname(link)), link)
    files = {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        "etc/group": "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
        "etc/hostname": "pallet\n",
    }
    for rel, text in files.items():
        p = os.path.join(dest, rel)
        if not os.path.exists(p):
            with open(p, "w") as f:
                f.write(text)
    return dest


def make_tarball(rootfs: str, out: str) -> str:
    """Pack *rootfs* contents at the top level of a gzip tarball."""
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for name in sorted(os.listdir(rootfs)):
            tar.add(os.path.join(rootfs, name), arcname=name)
    os.replace(tmp, out)
    return out


def write_bundle(bundle: str, args: list[str] | None = None, config: dict | None = None,
                 rootfs_src: str | None = None) -> str:
    """Create bundle/rootfs (copy of *rootfs_src* or fresh busybox tree) + bundle/config.json."""
    os.makedirs(bundle, exist_ok=True)
    rootfs = os.path.join(bundle, "rootfs")
    if rootfs_src and not os.path.exists(rootfs):
        shutil.copytree(rootfs_src, rootfs, symlinks=True)
    else:
        build_rootfs(rootfs)
    cfg = config if config is not None else default_config(args or ["sh"])
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return bundle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--tar", help="also write this .tar.gz of the rootfs")
    ap.add_argument("--bundle", action="store_true", help="DIR is a bundle: write DIR/rootfs and DIR/config.json")
    ap.add_argument("--args", nargs="+", default=["sh"], help="process.args for --bundle")
    a = ap.parse_args()
    if a.bundle:
        write_bundle(a.dir, a.args)
        print(a.dir)
        return
    build_rootfs(a.dir)
    if a.tar:
        make_tarball(a.dir, a.tar)
        print(a.tar)
    else:
        print(a.dir)


if __name__ == "__main__":
    main()
