"""`pallet run --runtime`: the same container through every runtime handler.

The in-process runtime, pallet-runc and runc as binaries, and gVisor's runsc (which
runs here only with the ptrace platform and no network, per MACHINE.md).
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

pytestmark = pytest.mark.root

PALLET_RUNC = os.path.join(os.path.dirname(sys.executable), "pallet-runc")


@pytest.mark.parametrize("runtime", ["pallet", "runc", PALLET_RUNC])
def test_run_through_each_runc_compatible_handler(pallet, runtime):
    if runtime == "runc" and not shutil.which("runc"):
        pytest.skip("runc is not installed (scripts/setup.sh installs it)")
    out = pallet("run", "--rm", "--runtime", runtime, "busybox", "sh", "-c",
                 "echo hello; exit 3")
    assert out.stdout == "hello\n", out.stderr
    assert out.returncode == 3
    assert pallet("ps", "-aq").stdout == ""


def test_run_under_gvisor(pallet):
    if not shutil.which("runsc"):
        pytest.skip("runsc (gVisor) is not installed (scripts/setup.sh installs it)")
    out = pallet("run", "--rm", "--network", "none", "--runtime", "runsc", "busybox", "sh",
                 "-c", "dmesg | head -1; echo done")
    assert out.returncode == 0, out.stderr
    assert "gVisor" in out.stdout and out.stdout.endswith("done\n")


def test_unknown_runtime_is_an_engine_error(pallet):
    out = pallet("run", "--rm", "--runtime", "no-such-runtime", "busybox", "true")
    assert out.returncode == 125
    assert "no-such-runtime" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert pallet("ps", "-aq").stdout == ""
