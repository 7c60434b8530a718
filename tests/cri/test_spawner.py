"""The spawner: the fork server the daemon starts before any thread, which runs engine
calls in fresh workers. Calls, errors, fds, concurrency, timeouts, dying workers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from pallet.cri.spawner import Spawner, SpawnerError
from pallet.errors import NotFound

T = "tests.cri.spawner_targets"


@pytest.fixture(scope="module")
def spawner() -> Iterator[Spawner]:
    # Earlier tests in this process may have left threads; the daemon never does.
    s = Spawner.start(allow_threads=True)
    yield s
    s.close()


def test_call_runs_in_a_one_thread_child_of_the_spawner(spawner: Spawner) -> None:
    me = spawner.call(f"{T}:whoami")
    assert me["ppid"] == spawner.pid
    assert me["pid"] not in (os.getpid(), spawner.pid)
    assert me["threads"] == 1


def test_json_round_trip(spawner: Spawner) -> None:
    args = {"a": [1, 2.5, None, True], "b": {"c": "ü"}}
    assert spawner.call(f"{T}:echo", args) == args


def test_pallet_errors_keep_their_class_and_message(spawner: Spawner) -> None:
    with pytest.raises(NotFound, match="container 'abc' not found"):
        spawner.call(f"{T}:fail_not_found", {"name": "abc"})


def test_other_errors_become_spawner_errors(spawner: Spawner) -> None:
    with pytest.raises(SpawnerError, match="TypeError: not a pallet error"):
        spawner.call(f"{T}:fail_type")
    with pytest.raises(SpawnerError, match="ModuleNotFoundError"):
        spawner.call("pallet.no_such_module:f")
    with pytest.raises(SpawnerError, match="TypeError"):
        spawner.call(f"{T}:not_json")
    with pytest.raises(ValueError):
        spawner.call("no-colon")


def test_a_dying_worker_is_reported_and_the_spawner_lives_on(spawner: Spawner) -> None:
    with pytest.raises(SpawnerError, match="died without answering"):
        spawner.call(f"{T}:die")
    assert spawner.call(f"{T}:echo", {"x": 1}) == {"x": 1}


def test_fds_are_passed_to_the_worker(spawner: Spawner) -> None:
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    assert spawner.call(f"{T}:write_fds", {"text": "hi"}, fds=[w1, w2]) == 2
    os.close(w1)
    os.close(w2)
    assert os.read(r1, 10) == b"hi"
    assert os.read(r2, 10) == b"hi"
    os.close(r1)
    os.close(r2)


def test_calls_run_concurrently(spawner: Spawner) -> None:
    # Each worker says when it slept; calls served one at a time would never overlap.
    # (Overlap, not wall time: a loaded machine must not fail this.)
    results: list[list[float]] = []
    threads = [threading.Thread(target=lambda: results.append(
        spawner.call(f"{T}:interval", {"seconds": 0.5}))) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 8
    most = max(sum(1 for b, e in results if b <= begin < e) for begin, _ in results)
    assert most >= 2, f"no two calls ran at once: {sorted(results)}"


def test_timeout(spawner: Spawner) -> None:
    with pytest.raises(SpawnerError, match="timed out"):
        spawner.call(f"{T}:sleep", {"seconds": 5}, timeout=0.2)


def test_big_requests_and_replies(spawner: Spawner) -> None:
    big = "x" * (4 << 20)
    assert spawner.call(f"{T}:echo", {"big": big}) == {"big": big}


def test_refuses_to_start_in_a_threaded_process() -> None:
    code = ("import threading, time\n"
            "threading.Thread(target=time.sleep, args=(1,), daemon=True).start()\n"
            "from pallet.cri.spawner import Spawner\n"
            "try:\n    Spawner.start()\nexcept RuntimeError as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "refused: Spawner.start() must run before any thread" in out.stdout, out.stderr


def test_close_stops_the_spawner_and_later_calls_fail() -> None:
    s = Spawner.start(allow_threads=True)
    pid = s.pid
    s.close()
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
    with pytest.raises(SpawnerError, match="shut down"):
        s.call(f"{T}:whoami")


def test_spawner_exits_when_its_parent_dies() -> None:
    code = ("import os, sys\nfrom pallet.cri.spawner import Spawner\n"
            "s = Spawner.start()\nprint(s.pid, flush=True)\nos._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    pid = int(out.stdout.strip())
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "spawner outlived the daemon"
