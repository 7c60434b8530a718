"""docker's health checks on real busybox containers: a passing check goes starting ->
healthy, a failing one turns unhealthy after its retries, a hanging probe is killed at its
timeout, an image's HEALTHCHECK runs unless --no-healthcheck; inspect, ps (status and
--filter health=), events and `compose up`'s service_healthy all see it.

Checks run every 200 ms here to keep the suite fast; containers use --network none."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.engine.conftest import run_detached

pytestmark = pytest.mark.root

NONE = ("--network", "none")
FAST = ("--health-interval", "200ms")


def _health(pallet, ref: str) -> dict | None:
    out = pallet("inspect", "-f", "{{json .State.Health}}", ref)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _wait_status(pallet, ref: str, status: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        h = _health(pallet, ref)
        if h and h["Status"] == status or time.monotonic() > deadline:
            assert h and h["Status"] == status, h
            return h
        time.sleep(0.1)


def _ps(pallet, *filters: str) -> dict[str, str]:
    args = [a for f in filters for a in ("--filter", f)]
    out = pallet("ps", "-a", *args, "--format", "{{.Names}}\t{{.Status}}")
    assert out.returncode == 0, out.stderr
    return dict(line.split("\t") for line in out.stdout.splitlines())


def test_a_passing_check_starts_then_is_healthy_in_inspect_ps_filters_and_events(pallet):
    cid = run_detached(pallet, *NONE, "--name", "hc-ok", "--health-cmd", "echo fine",
                       "--health-interval", "800ms", "busybox", "sleep", "60")
    run_detached(pallet, *NONE, "--name", "hc-plain", "busybox", "sleep", "60")
    assert _ps(pallet)["hc-ok"].endswith("(health: starting)")
    assert list(_ps(pallet, "health=starting")) == ["hc-ok"]
    h = _wait_status(pallet, "hc-ok", "healthy")
    assert h["FailingStreak"] == 0
    assert h["Log"][-1]["ExitCode"] == 0 and h["Log"][-1]["Output"] == "fine\n"
    assert h["Log"][-1]["Start"] <= h["Log"][-1]["End"]
    assert _ps(pallet)["hc-ok"].endswith("(healthy)")
    assert "(" not in _ps(pallet)["hc-plain"]
    assert list(_ps(pallet, "health=healthy")) == ["hc-ok"]
    assert list(_ps(pallet, "health=none")) == ["hc-plain"]
    assert _ps(pallet, "health=unhealthy") == {}
    out = pallet("ps", "--filter", "health=sick")
    assert out.returncode == 1 and "Unrecognised filter value for health: sick" in out.stderr
    cfg = json.loads(pallet("inspect", "hc-ok").stdout)[0]["Config"]["Healthcheck"]
    assert cfg == {"Test": ["CMD-SHELL", "echo fine"], "Interval": 800_000_000}
    assert _health(pallet, "hc-plain") is None
    events = pallet("events", "--since", "1m", "--until", "0s", "--filter",
                    "event=health_status", "--format", "{{.Status}} {{.Actor.ID}}")
    assert events.stdout.splitlines() == [f"health_status: healthy {cid}"]


def test_a_failing_check_turns_unhealthy_after_its_retries_with_the_last_5_results(pallet):
    run_detached(pallet, *NONE, "--name", "hc-bad", *FAST, "--health-retries", "2",
                 "--health-cmd", "head -c 5000 /dev/zero | tr '\\0' x; exit 3",
                 "busybox", "sleep", "60")
    h = _wait_status(pallet, "hc-bad", "unhealthy")
    assert h["FailingStreak"] >= 2
    last = h["Log"][-1]
    assert last["ExitCode"] == 3 and last["Output"] == "x" * 4096  # docker keeps 4096 bytes
    time.sleep(1.4)  # more probes: the log keeps the last 5, the streak grows
    h = _health(pallet, "hc-bad")
    assert len(h["Log"]) == 5 and h["FailingStreak"] >= 5 and h["Status"] == "unhealthy"
    assert _ps(pallet)["hc-bad"].endswith("(unhealthy)")
    assert list(_ps(pallet, "health=unhealthy")) == ["hc-bad"]


def test_a_hanging_probe_is_killed_at_its_timeout(pallet):
    run_detached(pallet, *NONE, "--name", "hc-hang", *FAST, "--health-timeout", "300ms",
                 "--health-retries", "1", "--health-cmd", "exec sleep 17", "busybox",
                 "sleep", "60")
    h = _wait_status(pallet, "hc-hang", "unhealthy")
    assert h["Log"][0]["ExitCode"] == -1
    assert h["Log"][0]["Output"] == "Health check exceeded timeout (300ms)"
    top = pallet("exec", "hc-hang", "ps", "-o", "pid,args").stdout
    # at most the probe running now; the killed ones are gone
    assert top.count("sleep 17") <= 1, top


def test_the_image_healthcheck_runs_unless_no_healthcheck(pallet):
    out = pallet("build", *NONE, "-t", "hc-img", "-", input=(
        "FROM busybox\nHEALTHCHECK --interval=200ms --retries=1 CMD [\"true\"]\n"))
    assert out.returncode == 0, out.stderr
    run_detached(pallet, *NONE, "--name", "hc-img-on", "hc-img", "sleep", "60")
    run_detached(pallet, *NONE, "--name", "hc-img-off", "--no-healthcheck", "hc-img",
                 "sleep", "60")
    # A flag overrides one field and keeps the image's test.
    run_detached(pallet, *NONE, "--name", "hc-img-slow", "--health-interval", "1h", "hc-img",
                 "sleep", "60")
    _wait_status(pallet, "hc-img-on", "healthy")
    assert _health(pallet, "hc-img-off") is None
    assert _health(pallet, "hc-img-slow")["Status"] == "starting"
    slow = json.loads(pallet("inspect", "hc-img-slow").stdout)[0]["Config"]["Healthcheck"]
    assert slow == {"Test": ["CMD", "true"], "Interval": 3_600_000_000_000, "Retries": 1}
    assert list(_ps(pallet, "health=none")) == ["hc-img-off"]


@pytest.mark.parametrize("flags, message", [
    (("--health-interval=-1s",), "--health-interval cannot be negative"),
    (("--health-retries=-2",), "--health-retries cannot be negative"),
    (("--health-timeout", "soon"),
     'invalid argument "soon" for "--health-timeout" flag: time: invalid duration "soon"'),
    (("--no-healthcheck", "--health-cmd", "true"),
     "--no-healthcheck conflicts with --health-* options"),
    (("--health-start-period", "10us"), "StartPeriod in Healthcheck cannot be less than 1ms"),
])
def test_bad_health_flags_fail_with_dockers_errors(pallet, flags, message):
    out = pallet("create", *NONE, *flags, "busybox", "true")
    assert out.returncode == 125 and message in out.stderr, out.stderr


COMPOSE = """
services:
  db:
    image: busybox
    network_mode: none
    command: ["sh", "-c", "sleep 0.6; touch /tmp/ready; exec sleep 60"]
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ready"]
      interval: 200ms
      retries: RETRIES
  app:
    image: busybox
    network_mode: none
    command: ["sleep", "60"]
    depends_on:
      db:
        condition: service_healthy
"""


@pytest.fixture
def project(tmp_path, pallet):
    name = f"hc{uuid.uuid4().hex[:6]}"
    d = tmp_path / "proj"
    d.mkdir()

    def compose(*args: str, **kw):
        return pallet("compose", "-f", str(d / "compose.yaml"), "-p", name, *args, **kw)

    compose.dir, compose.name = d, name
    yield compose
    compose("down", "-t", "0")


def test_compose_service_healthy_waits_for_the_dependency_to_be_healthy(project, pallet):
    (project.dir / "compose.yaml").write_text(COMPOSE.replace("RETRIES", "10"))
    out = project("up", "-d")
    assert out.returncode == 0, out.stderr
    assert "service_healthy" not in out.stderr  # no warning any more
    n = project.name
    assert _health(pallet, f"{n}-db-1")["Status"] == "healthy"
    ps = project("ps", "--format", "{{.Service}} {{.Health}}").stdout.split("\n")
    assert "db healthy" in ps


def test_compose_up_fails_when_the_dependency_turns_unhealthy(project, pallet):
    (project.dir / "compose.yaml").write_text(COMPOSE.replace("RETRIES", "1")
                                              .replace("test -f /tmp/ready", "false"))
    out = project("up", "-d")
    assert out.returncode != 0
    assert f"dependency failed to start: container {project.name}-db-1 is unhealthy" \
        in out.stderr
