"""docker's health checks: the effective check of a container (image config merged with
`run --health-*`), and one probe, run in a short-lived child of the container's monitor.

The monitor only keeps the schedule (monitor.Monitor._health_due); the state docker shows
as State.Health (status, failing streak, last 5 results) lives in <ctr_dir>/health.json and
is read, updated and rewritten by each probe, so monitors hold nothing of it. This module is
imported by the engine and by probes, never by a monitor itself: keep it light (os, time).
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATE_FILE = "health.json"
# docker's defaults (container/container.go, daemon/health.go)
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_START_PERIOD = 0.0
DEFAULT_START_INTERVAL = 5.0
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096
MIN_DURATION_NS = 1_000_000  # docker refuses a non-zero duration under 1 ms
STARTING, HEALTHY, UNHEALTHY, NONE = "starting", "healthy", "unhealthy", "none"
STATUSES = (STARTING, HEALTHY, UNHEALTHY, NONE)
_DURATIONS = (("Interval", "interval"), ("Timeout", "timeout"),
              ("StartPeriod", "start_period"), ("StartInterval", "start_interval"))


def merge(image: dict[str, Any] | None, override: dict[str, Any] | None) -> dict[str, Any]:
    """docker's merge of a container's Healthcheck (run --health-*, compose) over its image's:
    a field left unset (empty Test, zero duration or retries) comes from the image."""
    out = dict(image or {})
    for key, value in (override or {}).items():
        if value:
            out[key] = value
    return out


def effective(image: dict[str, Any] | None, override: dict[str, Any] | None
              ) -> dict[str, Any] | None:
    """The merged Healthcheck if it runs a test, else None (none, NONE or disabled)."""
    hc = merge(image, override)
    test = hc.get("Test") or []
    if not test or test[0] == "NONE" or len(test) < 2:
        return None
    return hc


def validate(hc: dict[str, Any]) -> None:
    """docker's daemon-side checks of a Healthcheck (InvalidArgument, exit 125)."""
    from pallet.errors import InvalidArgument

    for key, _ in _DURATIONS:
        ns = hc.get(key) or 0
        if ns and ns < MIN_DURATION_NS:
            raise InvalidArgument(f"{key} in Healthcheck cannot be less than 1ms")
    if (hc.get("Retries") or 0) < 0:
        raise InvalidArgument("Retries in Healthcheck cannot be negative")
    test = hc.get("Test") or []
    if test and test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise InvalidArgument(f"unknown Healthcheck Test type {test[0]!r}: use CMD, CMD-SHELL "
                              "or NONE")


def monitor_config(hc: dict[str, Any]) -> dict[str, Any]:
    """The effective check as plain data for the monitor's cfg (seconds, defaults filled)."""
    defaults = {"interval": DEFAULT_INTERVAL, "timeout": DEFAULT_TIMEOUT,
                "start_period": DEFAULT_START_PERIOD, "start_interval": DEFAULT_START_INTERVAL}
    out: dict[str, Any] = {"test": list(hc["Test"]),
                           "retries": int(hc.get("Retries") or DEFAULT_RETRIES)}
    for key, name in _DURATIONS:
        out[name] = (hc.get(key) or 0) / 1e9 or defaults[name]
    return out


def probe_argv(test: list[str]) -> list[str]:
    """What runs in the container: CMD's argv, or CMD-SHELL's string under /bin/sh -c."""
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    return list(test[1:])


def read_state(ctr_dir: str) -> dict[str, Any] | None:
    """State.Health as recorded, None if no probe cycle has begun."""
    import json

    try:
        with open(os.path.join(ctr_dir, STATE_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def record(state: dict[str, Any], result: dict[str, Any], retries: int,
           in_start_period: bool) -> dict[str, Any]:
    """STATE after one probe's RESULT, as docker's handleProbeResult: success is healthy at
    once; a failure counts toward RETRIES, except during the start period while starting."""
    log = [*(state.get("Log") or []), result][-MAX_LOG_ENTRIES:]
    status = state.get("Status") or STARTING
    streak = state.get("FailingStreak") or 0
    if result["ExitCode"] == 0:
        status, streak = HEALTHY, 0
    elif not (in_start_period and status == STARTING):
        streak += 1
        if streak >= retries and status != UNHEALTHY:
            status = UNHEALTHY
    return {"Status": status, "FailingStreak": streak, "Log": log}


def _timestamp(ns: int) -> str:
    from pallet.engine.monitor import rfc3339nano

    return rfc3339nano(ns)


# -- the probe: a short-lived child of the monitor --------------------------------------------
def probe(cfg: dict[str, Any], in_start_period: bool) -> int:
    """Exec the check in the container, wait at most its timeout (then kill it), record the
    result in health.json and, if the status changed, the health_status event."""
    import json

    from pallet.engine.monitor import _atomic_write, _become_subreaper

    hc = cfg["health"]
    _become_subreaper()  # the exec'd process is reparented to us, who reap it
    start = time.time_ns()
    code, output = _run(cfg, probe_argv(hc["test"]), hc["timeout"])
    end = time.time_ns()
    result = {"Start": _timestamp(start), "End": _timestamp(end), "ExitCode": code,
              "Output": output}
    old = read_state(cfg["ctr_dir"]) or {"Status": STARTING, "FailingStreak": 0, "Log": []}
    new = record(old, result, hc["retries"], in_start_period)
    _atomic_write(os.path.join(cfg["ctr_dir"], STATE_FILE), json.dumps(new) + "\n")
    if new["Status"] != old.get("Status"):
        from pallet.events import emit

        emit(cfg["root"], "container", f"health_status: {new['Status']}", cfg["id"],
             hc.get("attrs") or {})
    return 0


def _handler(cfg: dict[str, Any]) -> Any:
    runtime = cfg.get("runtime") or ""
    if runtime in ("", "pallet"):
        from pallet.oci.create import Runtime

        return Runtime(os.path.join(cfg["run_root"], "runtime"))
    from pallet.engine.handlers import resolve

    return resolve(runtime, cfg["run_root"])


def _run(cfg: dict[str, Any], argv: list[str], timeout: float) -> tuple[int, str]:
    """ARGV exec'd in the container with stdout and stderr on one pipe: (exit code, output);
    -1 and docker's message if it outlives TIMEOUT."""
    import json
    import select
    import signal

    from pallet.engine.monitor import start_error_code
    from pallet.errors import PalletError

    with open(os.path.join(cfg["ctr_dir"], "config.json")) as f:
        proc = dict(json.load(f)["process"])
    proc["args"] = argv
    proc["terminal"] = False
    proc.pop("consoleSize", None)
    r, w = os.pipe2(os.O_CLOEXEC)
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pid = _handler(cfg).exec(cfg["id"], proc, stdio=(devnull, w, w))
    except PalletError as e:
        os.close(r)
        return start_error_code(str(e), exec=True), str(e)[:MAX_OUTPUT]
    finally:
        os.close(w)
        os.close(devnull)
    deadline = time.monotonic() + timeout
    out = bytearray()
    status: int | None = None
    os.set_blocking(r, False)
    poller = select.poll()
    poller.register(r, select.POLLIN)
    eof = False
    while status is None:
        while True:  # reap: the process, and the runtime's intermediates
            try:
                got, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                got = 0
            if got == 0:
                break
            if got == pid:
                status = st
        if status is not None:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            return -1, f"Health check exceeded timeout ({_go_duration(timeout)})"
        if eof:
            time.sleep(min(left, 0.01))
            continue
        for _ in poller.poll(min(int(left * 1000) + 1, 20)):
            eof = not _drain(r, out)
    _drain(r, out)  # what is left; a background child may hold the pipe open: no waiting
    os.close(r)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else \
        128 + os.WTERMSIG(status), out[:MAX_OUTPUT].decode(errors="replace")


def _drain(fd: int, out: bytearray) -> bool:
    """Read FD into OUT (up to what docker keeps); False at EOF."""
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        if len(out) <= MAX_OUTPUT:
            out += data


def _go_duration(seconds: float) -> str:
    """Go's Duration.String for what the flags give: 30s, 1m0s, 200ms, 1.5s."""
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms"
    m, s = divmod(seconds, 60)
    h, m = divmod(int(m), 60)
    text = f"{s:g}s"
    if m or h:
        text = f"{m}m" + text
    if h:
        text = f"{h}h" + text
    return text
