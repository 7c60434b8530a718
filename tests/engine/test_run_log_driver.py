"""`run --log-driver` as a docker user types it: json-file, local and k8s-file keep the log
`logs` reads; none keeps no log (attached output still shows, `logs` fails with docker's
words); other drivers are refused, nothing created; compose's logging.driver.

Real CLI, real kernel, the busybox image.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from tests.engine.conftest import leftovers

pytestmark = pytest.mark.root

NONE = ("--network", "none")


@pytest.mark.parametrize("driver", ["json-file", "local", "k8s-file"])
def test_file_drivers_keep_the_log_and_inspect_names_them(pallet, driver):
    out = pallet("run", *NONE, "--name", "vo-log", "--log-driver", driver, "--log-opt",
                 "max-size=1m", "busybox", "sh", "-c", "echo out; echo err >&2")
    assert (out.returncode, out.stdout, out.stderr) == (0, "out\n", "err\n")
    logs = pallet("logs", "--details", "vo-log")
    assert (logs.returncode, logs.stdout, logs.stderr) == (0, "out\n", "err\n")
    out = pallet("inspect", "-f", "{{json .HostConfig.LogConfig}}", "vo-log")
    assert json.loads(out.stdout) == {"Type": driver, "Config": {"max-size": "1m"}}
    pallet("rm", "vo-log", check=True)


def test_default_driver_is_json_file(pallet):
    pallet("create", *NONE, "--name", "vo-dflt", "busybox", "true", check=True)
    out = pallet("inspect", "-f", "{{.HostConfig.LogConfig.Type}}", "vo-dflt")
    assert out.stdout == "json-file\n"


def test_none_writes_no_log_and_logs_says_so(pallet):
    # Attached, the output still reaches the user: it never goes through the log.
    out = pallet("run", "--rm", *NONE, "--log-driver", "none", "busybox", "echo", "attached")
    assert (out.returncode, out.stdout) == (0, "attached\n"), out.stderr
    cid = pallet("run", "-d", "-i", *NONE, "--name", "vo-quiet", "--log-driver", "none",
                 "busybox", "sh", "-c", "echo lost; read x; echo got $x").stdout.strip()
    out = pallet("logs", "vo-quiet")
    assert out.returncode == 1
    assert out.stderr == "Error: configured logging driver does not support reading\n"
    out = pallet("inspect", "-f", "{{.HostConfig.LogConfig.Type}}|{{.LogPath}}", "vo-quiet")
    assert out.stdout == "none|\n"
    assert "container.log" not in os.listdir(os.path.join(pallet.root, "containers", cid))
    # attach still works: it is the monitor's stream, not the log.
    out = pallet("attach", "vo-quiet", input="hi\n")
    assert (out.returncode, out.stdout) == (0, "got hi\n"), out.stderr
    pallet("rm", "-f", "vo-quiet", check=True)
    assert leftovers(pallet, [cid]) == []


@pytest.mark.parametrize("driver, message", [
    ("syslog", 'logging driver "syslog" is not supported by pallet: use json-file, local, '
               "k8s-file, none"),
    ("bogus", "logger: no log driver named 'bogus' is registered"),
])
def test_other_drivers_are_refused_and_nothing_is_created(pallet, driver, message):
    out = pallet("run", "--rm", *NONE, "--log-driver", driver, "busybox", "true")
    assert out.returncode == 125 and out.stderr == f"Error: {message}\n"
    out = pallet("create", *NONE, "--log-driver", driver, "busybox", "true")
    assert out.returncode == 125 and message in out.stderr
    assert pallet("ps", "-aq").stdout == ""
    assert leftovers(pallet) == []


COMPOSE = """
services:
  quiet:
    image: busybox
    command: ["echo", "quiet"]
    network_mode: none
    logging:
      driver: DRIVER
      options: {max-size: 1m}
"""


@pytest.mark.parametrize("driver", ["none", "local", "fluentd"])
def test_compose_logging_driver(pallet, tmp_path, driver):
    (tmp_path / "compose.yaml").write_text(COMPOSE.replace("DRIVER", driver))
    name = f"vo{uuid.uuid4().hex[:6]}"

    def compose(*args: str):
        return pallet("compose", "-f", str(tmp_path / "compose.yaml"), "-p", name, *args)

    try:
        out = compose("up", "-d")
        if driver == "fluentd":
            assert out.returncode == 1
            assert 'logging driver "fluentd" is not supported by pallet' in out.stderr
            assert pallet("ps", "-aq").stdout == ""
            return
        assert out.returncode == 0 and "is ignored" not in out.stderr, out.stderr
        ctr = f"{name}-quiet-1"
        out = pallet("inspect", "-f", "{{json .HostConfig.LogConfig}}", ctr)
        assert json.loads(out.stdout) == {"Type": driver, "Config": {"max-size": "1m"}}
        pallet("wait", ctr, check=True)
        logs = compose("logs", "--no-log-prefix")
        assert (logs.returncode, logs.stdout) == (0, "" if driver == "none" else "quiet\n")
    finally:
        compose("down")
    assert leftovers(pallet) == []
