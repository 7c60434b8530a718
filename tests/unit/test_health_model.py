"""Health checks computed without containers: docker's merge of a container's check over
its image's, the state after each probe result, and compose's healthcheck key."""

from __future__ import annotations

import pytest

from pallet.compose.model import ComposeFileError, load
from pallet.engine.health import effective, merge, monitor_config, probe_argv, record


def test_flags_override_the_image_check_field_by_field_and_none_disables_it():
    image = {"Test": ["CMD", "true"], "Interval": 5_000_000_000, "Retries": 1}
    assert merge(image, {"Test": [], "Interval": 200_000_000}) == \
        {"Test": ["CMD", "true"], "Interval": 200_000_000, "Retries": 1}
    assert effective(image, {"Test": ["NONE"]}) is None
    assert effective(None, None) is None
    cfg = monitor_config(effective(image, None))
    assert cfg == {"test": ["CMD", "true"], "retries": 1, "interval": 5.0, "timeout": 30.0,
                   "start_period": 0.0, "start_interval": 5.0}
    assert probe_argv(["CMD-SHELL", "echo a && true"]) == ["/bin/sh", "-c", "echo a && true"]


def _result(code: int) -> dict:
    return {"Start": "s", "End": "e", "ExitCode": code, "Output": ""}


def test_failures_count_after_the_start_period_and_a_success_is_healthy_at_once():
    st = {"Status": "starting", "FailingStreak": 0, "Log": []}
    st = record(st, _result(1), retries=2, in_start_period=True)
    assert (st["Status"], st["FailingStreak"]) == ("starting", 0)
    st = record(st, _result(1), retries=2, in_start_period=False)
    st = record(st, _result(1), retries=2, in_start_period=False)
    assert (st["Status"], st["FailingStreak"]) == ("unhealthy", 2)
    for _ in range(5):
        st = record(st, _result(0), retries=2, in_start_period=False)
    assert (st["Status"], st["FailingStreak"], len(st["Log"])) == ("healthy", 0, 5)


def test_compose_healthcheck_is_dockers_config(tmp_path):
    (tmp_path / "compose.yaml").write_text(
        "services:\n  a:\n    image: busybox\n    healthcheck:\n      test: curl -f x\n"
        "      interval: 1m30s\n      retries: 4\n      start_period: 2s\n"
        "  b:\n    image: busybox\n    healthcheck: {disable: true}\n")
    p = load([], cwd=str(tmp_path), environ={})
    assert p.services["a"]["healthcheck"] == {"Test": ["CMD-SHELL", "curl -f x"],
                                              "Interval": 90_000_000_000,
                                              "StartPeriod": 2_000_000_000, "Retries": 4}
    assert p.services["b"]["healthcheck"] == {"Test": ["NONE"]}
    (tmp_path / "compose.yaml").write_text(
        "services:\n  a:\n    image: busybox\n    healthcheck: {test: [WHAT, x]}\n")
    with pytest.raises(ComposeFileError, match="CMD, CMD-SHELL or NONE"):
        load([], cwd=str(tmp_path), environ={})
