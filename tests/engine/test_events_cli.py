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
from tests.engine.test_tty_and_monitor import Terminal

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
        "create", "start", "exec_create:", "exec_start:", "exec_die", "kill", "die", "destroy"]
    assert lines[0].endswith(f"container create {cid} (image=busybox, name=st-life, tier=web)")
    assert "(exitCode=7, image=busybox, name=st-life, tier=web)" in lines[6]
    assert "signal=15" in lines[5]
    exec_ids = {ln.split("execID=")[1].split(",")[0] for ln in lines[2:5]}
    assert len(exec_ids) == 1 and "exitCode=0" in lines[4]
    # Relative times work too, and --until in the past ends the stream after the replay.
    again = pallet("events", "--since", "1m", "--until", "0s", "-f", f"container={cid[:8]}",
                   "-f", "event=die", timeout=20, check=True).stdout
    assert _actions(again) == [("container", "die")]


def test_exec_die_of_attached_and_detached_execs(pallet):
    """docker's daemon writes exec_die (execID, exitCode) when an exec ends; pallet's CLI
    writes it when it reaps the process, and for `exec -d` a waiter of its own does."""
    t0 = time.time()
    pallet("run", "-d", "--name", "st-exec", *NONE, "busybox", "sleep", "60", check=True)
    try:
        assert pallet("exec", "st-exec", "sh", "-c", "exit 5").returncode == 5
        assert pallet("exec", "-d", "st-exec", "sh", "-c", "sleep 0.3; exit 9",
                      check=True).stdout == ""
        missing = pallet("exec", "-d", "st-exec", "no-such-command")
        assert missing.returncode == 126 and "no-such-command" in missing.stderr  # docker: 126
        stopped = pallet("exec", "-d", "st-nonesuch", "true")
        assert stopped.returncode == 1 and "st-nonesuch" in stopped.stderr
        deadline = time.time() + 10
        while True:
            out = pallet("events", "--since", str(t0), "--until", str(time.time() + 0.2),
                         "-f", "container=st-exec", "--format", "json", timeout=20,
                         check=True).stdout
            evs = [json.loads(ln) for ln in out.splitlines()]
            dies = [e for e in evs if e["Action"] == "exec_die"]
            if len(dies) == 2 or time.time() > deadline:
                break
            time.sleep(0.2)
        starts = [e for e in evs if e["Action"].startswith("exec_start: ")]
        assert [e["Action"] for e in starts] == ["exec_start: sh -c exit 5",
                                                 "exec_start: sh -c sleep 0.3; exit 9"]
        got = [(e["Actor"]["Attributes"]["execID"], e["Actor"]["Attributes"]["exitCode"])
               for e in dies]
        assert got == [(starts[0]["Actor"]["Attributes"]["execID"], "5"),
                       (starts[1]["Actor"]["Attributes"]["execID"], "9")]
    finally:
        pallet("rm", "-f", "st-exec")


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
        "create", "attach", "start", "die", "destroy"]
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
        assert _actions(out) == [("container", a) for a in ("create", "attach", "start",
                                                            "die", "destroy")], (cid, out)
        assert "exitCode=4" in out.splitlines()[3]


def _since(pallet, t0: float, *args: str) -> list[dict]:
    out = pallet("events", "--since", str(t0), "--until", str(time.time() + 0.3), "--format",
                 "json", *args, timeout=20, check=True).stdout
    return [json.loads(ln) for ln in out.splitlines()]


def _brief(evs: list[dict]) -> list[tuple[str, str]]:
    return [(e["Type"], e["Action"]) for e in evs]


def test_a_terminal_session_attaches_resizes_detaches_and_unmounts_its_volume(pallet):
    t0 = time.time()
    t = Terminal([PALLET, "--root", pallet.root, "run", "-it", "--name", "ev-sess", "-v",
                  "ev-data:/data", *NONE, "busybox", "sh"], pallet.env, rows=33, cols=101)
    t.command(b"PS1='ready> '")
    t.expect(b"ready> ")
    t.send(b"\x10\x11")  # ctrl-p ctrl-q
    assert t.close() == 0
    t2 = Terminal([PALLET, "--root", pallet.root, "attach", "ev-sess"], pallet.env, rows=30,
                  cols=90)
    time.sleep(0.5)
    t2.send(b"\r")
    t2.command(b"exit 3")
    assert t2.close() == 3
    evs = _since(pallet, t0)
    assert _brief(evs) == [
        ("volume", "create"), ("container", "create"), ("container", "attach"),
        ("volume", "mount"), ("container", "start"), ("container", "resize"),
        ("container", "detach"), ("container", "attach"), ("container", "resize"),
        ("container", "die"), ("volume", "unmount")]
    attrs = [e["Actor"]["Attributes"] for e in evs]
    cid = evs[1]["id"]
    assert attrs[3] == {"container": cid, "destination": "/data", "driver": "local",
                        "propagation": "", "read/write": "true"}
    assert (attrs[5]["height"], attrs[5]["width"]) == ("33", "101")
    assert (attrs[8]["height"], attrs[8]["width"]) == ("30", "90")
    assert attrs[10] == {"container": cid, "driver": "local"}
    assert attrs[6]["name"] == "ev-sess"


def test_commit_cp_export_top_and_update_are_recorded(pallet, tmp_path):
    pallet("run", "-d", "--name", "ev-work", "-l", "tier=web", *NONE, "busybox", "sleep",
           "60", check=True)
    t0 = time.time()
    (tmp_path / "f").write_text("x")
    pallet("cp", str(tmp_path / "f"), "ev-work:/tmp/", check=True)
    pallet("cp", "ev-work:/tmp/f", str(tmp_path / "back"), check=True)
    pallet("top", "ev-work", check=True)
    pallet("update", "--pids-limit", "50", "ev-work", check=True)
    pallet("export", "-o", str(tmp_path / "fs.tar"), "ev-work", check=True)
    iid = pallet("commit", "-m", "snap", "-c", "LABEL kind=snapshot", "ev-work", "ev-img:1",
                 check=True).stdout.strip()
    evs = _since(pallet, t0)
    assert _brief(evs) == [("container", a) for a in (
        "extract-to-dir", "archive-path", "top", "update", "export")] + [
        ("container", "pause"), ("container", "unpause"), ("image", "tag"),
        ("container", "commit")]
    assert all(e["Actor"]["Attributes"]["tier"] == "web" for e in evs if e["Type"] ==
               "container")
    tag, commit = evs[-2:]
    # An image event carries the image's labels (the container's too, committed with it).
    assert tag["Actor"] == {"ID": iid, "Attributes": {"kind": "snapshot", "tier": "web",
                                                      "name": "ev-img:1"}}
    a = commit["Actor"]["Attributes"]
    assert (a["comment"], a["imageID"], a["imageRef"], a["name"]) == (
        "snap", iid, "ev-img:1", "ev-work")
    pallet("rmi", "-f", "ev-img:1", check=True)
    untag = [e for e in _since(pallet, t0, "-f", "type=image") if e["Action"] == "untag"]
    assert untag[0]["Actor"]["Attributes"]["kind"] == "snapshot"


def test_a_build_records_its_containers_and_tag(pallet, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nLABEL team=ev\nRUN echo hi > /f\n")
    t0 = time.time()
    pallet("build", "-t", "ev-built", str(tmp_path), check=True)
    evs = _since(pallet, t0)
    assert _brief(evs) == [("container", "create"), ("container", "attach"),
                           ("network", "connect"), ("container", "start"),
                           ("container", "die"), ("network", "disconnect"),
                           ("container", "destroy"), ("image", "tag")]
    assert evs[-1]["Actor"]["Attributes"] == {"name": "ev-built:latest", "team": "ev"}


def test_a_container_whose_monitor_was_killed_dies_in_the_journal_when_noticed(pallet):
    import os

    cid = pallet("run", "-d", "--name", "ev-orphan", *NONE, "busybox", "sleep", "60",
                 check=True).stdout.strip()
    eng = pallet.engine()
    mon = int(open(os.path.join(eng.run_dir(cid), "monitor.pid")).read().split()[0])
    pid = eng.get(cid).pid
    t0 = time.time()
    os.kill(mon, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        try:
            os.kill(mon, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    assert "Exited (255)" in pallet("ps", "-a", "-f", "name=ev-orphan", check=True).stdout
    evs = _since(pallet, t0, "-f", "container=ev-orphan")
    assert [(e["Action"], e["Actor"]["Attributes"]["exitCode"]) for e in evs] == [("die", "255")]
