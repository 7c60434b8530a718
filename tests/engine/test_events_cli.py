"""`pallet events`, as a docker user watches it: a container's life in docker's lines, the
recorded events replayed with --since and cut with --until, filters, --format, and a
follower that ends quietly on ctrl-C.

Real CLI, real containers (busybox, --network none).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.engine.conftest import PALLET

pytestmark = pytest.mark.root

NONE = ("--network", "none")


def _actions(out: str) -> list[tuple[str, str]]:
    """(type, action) of each default line `TIME TYPE ACTION ID (attrs)`."""
    return [tuple(ln.split(" ")[1:3]) for ln in out.splitlines() if ln]


def test_a_containers_life_replayed_with_since_and_until(pallet):
    t0 = time.time()
    cid = pallet("run", "-d", "--name", "st-life", "-l", "tier=web", *NONE, "busybox",
                 "sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done",
                 check=True).stdout.strip()
    pallet("exec", "st-life", "true", check=True)
    pallet("kill", "-s", "TERM", "st-life", check=True)
    pallet("wait", "st-life", check=True)
    pallet("rm", "st-life", check=True)
    out = pallet("events", "--since", str(t0), "--until", str(time.time() + 0.5),
                 timeout=20, check=True).stdout
    lines = [ln for ln in out.splitlines() if cid in ln]
    assert [ln.split(" ")[2] for ln in lines] == [
        "create", "start", "exec_create:", "exec_start:", "kill", "die", "destroy"]
    assert lines[0].endswith(f"container create {cid} (image=busybox, name=st-life, tier=web)")
    assert "(exitCode=7, image=busybox, name=st-life, tier=web)" in lines[5]
    assert "signal=15" in lines[4]
    # Relative times work too, and --until in the past ends the stream after the replay.
    again = pallet("events", "--since", "1m", "--until", "0s", "-f", f"container={cid[:8]}",
                   "-f", "event=die", timeout=20, check=True).stdout
    assert _actions(again) == [("container", "die")]


def test_filters_and_formats(pallet):
    t0 = time.time()
    pallet("run", "--rm", "--name", "st-fmt", *NONE, "busybox", "true", check=True)
    pallet("tag", "busybox", "st-events:1", check=True)
    pallet("volume", "create", "st-evvol", check=True)
    until = str(time.time() + 0.5)

    def ev(*args: str) -> str:
        return pallet("events", "--since", str(t0), "--until", until, *args, timeout=20,
                      check=True).stdout

    assert _actions(ev("-f", "type=image")) == [("image", "tag")]
    assert _actions(ev("-f", "type=volume", "-f", "type=image")) == [
        ("image", "tag"), ("volume", "create")]
    assert [a for _, a in _actions(ev("-f", "container=st-fmt"))] == [
        "create", "start", "die", "destroy"]
    objs = [json.loads(ln) for ln in ev("--format", "json", "-f", "event=die").splitlines()]
    assert [(o["Type"], o["Action"], o["status"], o["Actor"]["Attributes"]["exitCode"])
            for o in objs] == [("container", "die", "die", "0")]
    assert objs[0]["timeNano"] // 10**9 == objs[0]["time"]
    assert ev("--format", "{{.Type}} {{.ID}} {{.Actor.ID}}", "-f",
              "type=volume").splitlines() == ["volume  st-evvol"]
    assert ev("--format", "{{.Action}} {{.Actor.Attributes.name}}", "-f",
              "event=destroy").splitlines() == ["destroy st-fmt"]
    bad = pallet("events", "-f", "colour=red", timeout=20)
    assert bad.returncode == 1 and "invalid filter 'colour'" in bad.stderr


def test_following_shows_new_events_and_ends_quietly_on_ctrl_c(pallet):
    pallet("run", "--rm", *NONE, "busybox", "true", check=True)  # before: not shown
    for argv in (["events"], ["system", "events"]):
        p = subprocess.Popen([PALLET, "--root", pallet.root, *argv, "-f", "type=container"],
                             env=pallet.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        time.sleep(1.0)
        cid = pallet("run", "--rm", "--name", "st-follow", *NONE, "busybox", "sh", "-c",
                     "exit 4", check=False).stdout
        time.sleep(0.8)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
        assert (p.returncode, err) == (130, "")
        assert _actions(out) == [("container", a) for a in ("create", "start", "die",
                                                            "destroy")], (cid, out)
        assert "exitCode=4" in out.splitlines()[2]
