"""Shared fixtures: real busybox bundles, a private runtime root, and a host-clean check.

Tests that need root and the real kernel skip with the reason printed when not root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.fixtures.host import process_cmdlines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("PALLET_TEST_CACHE", "/var/tmp/pallet-test-cache")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root and the real kernel (run the suite as root)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _default_run_roots() -> Iterator[None]:
    """A test that runs the CLI with --root alone gets that root's default run root,
    /run/pallet-<hash> (the CLI's zygote listens there): remove the ones the test made, as
    the test's root goes with its tmp dir. Their zygotes, whose socket is gone, exit."""
    import glob
    import re

    def made() -> set[str]:  # default_run_root's form only (not pallet-ipam, pallet-runc...)
        return {d for d in glob.glob("/run/pallet-*")
                if re.fullmatch(r"/run/pallet-[0-9a-f]{10}", d)}

    before = made()
    yield
    for d in made() - before:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def cache_dir() -> str:
    os.makedirs(CACHE, exist_ok=True)
    return CACHE


@pytest.fixture
def runtime_root(tmp_path) -> Iterator[str]:
    root = str(tmp_path / "runtime-root")
    yield root
    # Whatever a test left, force-delete it so one failure does not leak into the next.
    if os.path.isdir(root):
        for cid in os.listdir(root):
            subprocess.run(pallet_runc(root, "delete", "--force", cid), capture_output=True)


def pallet_runc(root: str, *args: str) -> list[str]:
    exe = shutil.which("pallet-runc", path=os.path.dirname(sys.executable)) or "pallet-runc"
    return [exe, "--root", root, *args]


@pytest.fixture
def runc_cli(runtime_root) -> Callable[..., subprocess.CompletedProcess]:
    """Run pallet-runc with the test's root; returns the completed process (text)."""

    def run(*args: str, check: bool = False, timeout: float = 30,
            **kw) -> subprocess.CompletedProcess:
        # Files, not pipes: a detached container inherits stdio and would hold a pipe open.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(pallet_runc(runtime_root, *args), stdout=out, stderr=err,
                                  stdin=kw.pop("stdin", subprocess.DEVNULL), check=check,
                                  timeout=timeout, **kw)
            out.seek(0)
            err.seek(0)
            proc.stdout = out.read().decode()
            proc.stderr = err.read().decode()
        return proc

    return run


@pytest.fixture
def bundle(tmp_path, cache_dir) -> Callable[..., str]:
    from tests.fixtures.bundle import make_bundle

    def make(args: list[str] | None = None, **kw) -> str:
        dest = str(tmp_path / f"bundle-{uuid.uuid4().hex[:6]}")
        return make_bundle(dest, args, cache_dir=cache_dir, **kw)

    return make


@pytest.fixture
def cid() -> str:
    return f"pt-{uuid.uuid4().hex[:10]}"


class HostState:
    """What a container could leave behind on the host, to compare before and after."""

    def __init__(self) -> None:
        self.mounts = self._mounts()
        self.cgroups = self._cgroups()

    @staticmethod
    def _mounts() -> set[str]:
        with open("/proc/self/mountinfo") as f:
            return {" ".join(line.split()[3:5]) for line in f}

    @staticmethod
    def _cgroups() -> set[str]:
        found = set()
        for base in ("/sys/fs/cgroup",):
            for dirpath, dirnames, _ in os.walk(base):
                # The shared parent (…/pallet) stays, like runc's; containers' dirs must not.
                if "pallet" in dirpath and not dirpath.endswith("/pallet"):
                    found.add(dirpath)
                if dirpath.count("/") > 6:
                    dirnames.clear()
        return found

    def leftovers(self, ident: str, scope: str = "") -> list[str]:
        out = []
        for m in self._mounts() - self.mounts:
            # Other test runs may share the machine: count mounts of this test's own
            # dirs or naming its container; every new mount when no scope is given.
            if not scope or scope in m or (ident and ident in m):
                out.append(f"mount {m}")
        for c in self._cgroups() - self.cgroups:
            # Other runs may share the machine: with an ident, only its cgroups count.
            if ident in c or (ident == "\0never\0" and not scope):
                out.append(f"cgroup {c}")
        for pid, cmd in process_cmdlines():
            if ident.encode() in cmd:
                out.append(f"process {pid} {cmd!r}")
        return out


@pytest.fixture
def host_clean(tmp_path) -> Callable[[str], None]:
    """Call with a marker string; asserts no mounts, cgroups or processes were left."""
    before = HostState()
    scope = "" if os.environ.get("CI") else str(tmp_path)

    def check(ident: str = "") -> None:
        left = before.leftovers(ident or "\0never\0", scope)
        assert not left, f"host not clean: {left}"

    return check
