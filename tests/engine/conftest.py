"""Fixtures for engine and `pallet` CLI tests: a private root and run root per test,
with the busybox image built from the host's busybox-static, and a CLI runner.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.host import process_cmdlines

PALLET = os.path.join(os.path.dirname(sys.executable), "pallet")


@pytest.fixture(scope="session")
def busybox_store(tmp_path_factory) -> str:
    """One root with the busybox image; tests copy its content store (cheap, no rebuild)."""
    root = str(tmp_path_factory.mktemp("busybox-root"))
    out = subprocess.run([PALLET, "--root", root, "image", "build-busybox"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return root


class Pallet:
    """Runs the real `pallet` CLI against this test's root and run root."""

    def __init__(self, root: str, run_root: str):
        self.root, self.run_root = root, run_root
        self.env = dict(os.environ, PALLET_RUNROOT=run_root)

    def __call__(self, *args: str, timeout: float = 60, input: str | None = None,
                 check: bool = False) -> subprocess.CompletedProcess:
        out = subprocess.run([PALLET, "--root", self.root, *args], capture_output=True,
                             text=True, timeout=timeout, env=self.env, input=input,
                             stdin=None if input is not None else subprocess.DEVNULL)
        if check:
            assert out.returncode == 0, f"pallet {' '.join(args)}: {out.stderr}"
        return out

    def engine(self):  # noqa: ANN201 - the engine type is imported lazily
        from pallet.engine.containers import Engine

        return Engine(self.root, self.run_root)


@pytest.fixture
def pallet(tmp_path, busybox_store) -> Iterator[Pallet]:
    root = str(tmp_path / "root")
    shutil.copytree(busybox_store, root, symlinks=True)
    # Short and on tmpfs: unix socket paths are limited to 108 bytes.
    run_root = f"/run/pallet-t-{uuid.uuid4().hex[:8]}"
    p = Pallet(root, run_root)
    bridges = _bridges()
    yield p
    # Whatever a failing test left running, force-remove it.
    ids = p("ps", "-aq", "--no-trunc").stdout.split()
    if ids:
        p("rm", "-f", *ids)
    # A network's bridge is made at `network create` and lives until `network rm`: the
    # test's root is deleted after this, so its networks go now (if it made any bridge).
    if _bridges() - bridges:
        p("network", "prune", "-f")
    shutil.rmtree(run_root, ignore_errors=True)


def _bridges() -> set[str]:
    return {n for n in os.listdir("/sys/class/net") if os.path.isdir(f"/sys/class/net/{n}/bridge")}


def leftovers(p: Pallet, ids: list[str] = ()) -> list[str]:
    """Mounts, cgroups, processes and CNI attachments this test's pallet left on the host. Scoped to the
    test's root, run root and container ids: other suites may share the machine."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = line.split()[4]
            if mnt.startswith((p.root, p.run_root)):
                out.append(f"mount {mnt}")
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        if any(i in dirpath for i in ids):
            out.append(f"cgroup {dirpath}")
        if dirpath.count("/") > 6:
            dirnames.clear()
    for pid, cmd in process_cmdlines():
        if p.root.encode() in cmd or any(i.encode() in cmd for i in ids):
            out.append(f"process {pid} {cmd[:200]!r}")
    # A CNI result kept means an attachment never DELeted (its veth, IP and NAT rules stay).
    for dirpath, _, files in os.walk(os.path.join(p.root, "cni", "results")):
        out += [f"cni attachment {os.path.join(dirpath, f)}" for f in files
                if f.endswith(".json")]
    return out


V6_FORWARDING = "/proc/sys/net/ipv6/conf/all/forwarding"


@contextlib.contextmanager
def network_lab(p: Pallet, prefix: str, v4: list[str], v6: list[str],
                **attrs: object) -> Iterator[Any]:
    """A test's networks: `lab.network(*flags)` makes one named PREFIX-xxxxxx; LAB.v4/v6 are
    its subnets (plus ATTRS). Afterwards the test's containers and networks are removed and
    IPv6 forwarding, which the bridge plugin turns on, is put back."""
    with open(V6_FORWARDING) as f:
        forwarding = f.read().strip()
    names: list[str] = []

    class Lab:
        def network(self, *flags: str) -> str:
            name = f"{prefix}-{uuid.uuid4().hex[:6]}"
            out = p("network", "create", *flags, name)
            assert out.returncode == 0, out.stderr
            names.append(name)
            return name

    lab = Lab()
    lab.v4, lab.v6, lab.names = v4, v6, names  # type: ignore[attr-defined]
    for k, v in attrs.items():
        setattr(lab, k, v)
    try:
        yield lab
    finally:
        ids = p("ps", "-aq", "--no-trunc").stdout.split()
        if ids:
            p("rm", "-f", *ids)
        for name in names:
            p("network", "rm", name)
        if forwarding == "0":
            with open(V6_FORWARDING, "w") as f:
                f.write("0")


def run_detached(p: Pallet, *argv: str) -> str:
    """`pallet run -d ARGV`'s container id (asserting it started)."""
    out = p("run", "-d", *argv)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def network_cli(tmp_path, monkeypatch, capsys):
    """`pallet network ARGV...` run in process with a private root and CNI conf dir:
    returns (exit code, stdout, stderr); a usage error's SystemExit is its exit code."""
    from pallet.cli import main

    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    config = tmp_path / "pallet.toml"
    config.write_text(f'[cni]\nconf_dir = "{conf_dir}"\n')
    monkeypatch.setenv("PALLET_CONFIG", str(config))
    root = str(tmp_path / "root")

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(["--root", root, "network", *argv])
        except SystemExit as e:  # a usage error
            code = int(e.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    yield run
    run("prune", "-f")  # the bridges its networks made at create
