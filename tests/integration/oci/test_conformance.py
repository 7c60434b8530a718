"""pallet-runc passes the project's OCI conformance checks (scripts/conformance/native.py).

The official runtime-tools validation suite cannot be built offline here (see
docs/conformance.md); these checks follow its test list and also run against runc.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
NATIVE = os.path.join(ROOT, "scripts", "conformance", "native.py")
PALLET_RUNC = os.path.join(os.path.dirname(sys.executable), "pallet-runc")


def test_pallet_runc_passes_every_conformance_check(tmp_path):
    report = tmp_path / "report.json"
    # Bundles go under /tmp (the default workdir), not tmp_path: the user-namespace check
    # needs every parent directory to be searchable by the mapped root.
    out = subprocess.run([sys.executable, NATIVE, "--json", str(report), PALLET_RUNC],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    results = json.loads(report.read_text())["runs"][0]["results"]
    failed = {name: r["message"] for name, r in results.items() if r["status"] != "pass"}
    assert len(results) >= 50
    assert not failed, failed
