"""pallet-runc parses its per-container command lines without argparse; the result must be
exactly argparse's, and anything unusual must fall back to argparse.

The command lines are the ones containerd's shim and podman's conmon actually run.
"""

from __future__ import annotations

import pytest

from pallet.oci import cli

SHIM_LINES = [
    ["--root", "/run/containerd/runc/k8s.io", "--log", "/run/x/log.json", "--log-format",
     "json", "create", "--bundle", "/run/b", "--pid-file", "/run/b/init.pid", "abc"],
    ["--root", "/run/runc", "--systemd-cgroup", "create", "--bundle", "/b", "--pid-file",
     "/b/pid", "--console-socket", "/tmp/c.sock", "--no-new-keyring", "id1"],
    ["--root", "/r", "start", "id1"],
    ["--root", "/r", "state", "id1"],
    ["--root", "/r", "kill", "id1", "9"],
    ["--root", "/r", "kill", "--all", "id1", "SIGKILL"],
    ["--root", "/r", "kill", "id1"],
    ["--root", "/r", "delete", "--force", "id1"],
    ["--root", "/r", "delete", "id1"],
    ["--root", "/r", "list", "--format", "json"],
    ["--root=/r", "list", "-q"],
    ["run", "-d", "--bundle=/b", "--preserve-fds", "2", "x"],
    ["--debug", "pause", "x"],
    ["resume", "x"],
]


@pytest.mark.parametrize("argv", SHIM_LINES, ids=lambda a: " ".join(a)[:60])
def test_fast_parse_equals_argparse(argv):
    fast = cli._parse_fast(argv)
    assert fast is not None, "this common command line should take the fast path"
    slow = cli._parser().parse_args(argv)
    assert vars(fast) == {k: v for k, v in vars(slow).items() if k in vars(fast)}
    # Every field argparse sets is set by the fast path too.
    assert set(vars(slow)) <= set(vars(fast))


@pytest.mark.parametrize("argv", [
    ["--help"], ["create", "--help"], ["create", "--bun", "/b", "x"],   # abbreviation
    ["--log-format", "yaml", "list"], ["create", "--preserve-fds", "x", "id"],
    ["exec", "id", "ls"], ["create", "--bundle", "/b"], ["create", "a", "b"],
    ["kill", "id", "-9"], ["-v"], [],
])
def test_unusual_lines_are_left_to_argparse(argv):
    assert cli._parse_fast(argv) is None
