"""The events journal without containers: docker's line and JSON, its filters, replay with
--since/--until, following across a rotation."""

from __future__ import annotations

import json
import threading
import time

import pytest

from pallet import events
from pallet.errors import InvalidArgument


def _ev(type_: str, action: str, actor: str, t: int, **attrs: str) -> dict:
    return events.message(type_, action, actor, attrs, time_ns=t)


def test_docker_line_and_json(monkeypatch):
    ev = _ev("container", "start", "abc", 1_700_000_000_123_456_789, name="foo", image="busybox")
    assert json.loads(json.dumps(ev)) == {
        "status": "start", "id": "abc", "from": "busybox", "Type": "container",
        "Action": "start", "Actor": {"ID": "abc", "Attributes": {"name": "foo",
                                                                 "image": "busybox"}},
        "scope": "local", "time": 1_700_000_000, "timeNano": 1_700_000_000_123_456_789}
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert events.line(ev) == ("2023-11-14T22:13:20.123456789Z container start abc "
                                   "(image=busybox, name=foo)")
        assert events.line(_ev("volume", "create", "v", 0)) == \
            "1970-01-01T00:00:00.000000000Z volume create v"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_filters_as_docker_applies_them():
    start = _ev("container", "start", "abc123", 1, name="web", image="busybox:latest", app="x")
    exec_ = _ev("container", "exec_create: sh -c true", "abc123", 1, name="web")
    tag = _ev("image", "tag", "sha256:1", 1, name="busybox:1")
    net = _ev("network", "connect", "n1", 1, name="front", container="abc123")

    def m(ev: dict, *specs: str) -> bool:
        return events.matches(ev, events.parse_filters(list(specs)))

    assert m(start, "type=container") and not m(tag, "type=container")
    assert m(start, "type=image", "type=container")  # one key twice: either
    assert not m(start, "type=container", "event=stop")  # different keys: all
    assert m(exec_, "event=exec_create") and not m(exec_, "event=exec_start")
    assert m(start, "container=web") and m(start, "container=abc") and not m(net, "container=abc")
    assert m(start, "image=busybox") and m(tag, "image=busybox:1") and m(tag, "image=busybox")
    assert m(start, "label=app") and m(start, "label=app=x") and not m(start, "label=app=y")
    assert m(net, "network=front") and not m(start, "network=front")
    with pytest.raises(InvalidArgument, match="invalid filter 'colour'"):
        events.parse_filters(["colour=red"])
    with pytest.raises(InvalidArgument, match="invalid filter 'type=spaceship'"):
        events.parse_filters(["type=spaceship"])
    assert events.parse_filters(["type=pod"]) == {"type": ["pod"]}  # podman's pod events


def test_since_and_until_replay_what_was_recorded(tmp_path):
    root = str(tmp_path)
    for i, action in enumerate(("create", "start", "die")):
        with open(events.journal_path(root), "a") as f:
            f.write(json.dumps(_ev("container", action, "c", (i + 1) * 10)) + "\n")
    acts = [e["Action"] for e in events.read(root, since=15, until=25)]
    assert acts == ["start"]
    assert [e["Action"] for e in events.read(root, until=20)] == ["create", "start"]
    assert [e["Action"] for e in events.read(root, since=0, until=10**20, follow=False)] == \
        ["create", "start", "die"]


def test_follow_sees_new_events_across_a_rotation(tmp_path, monkeypatch):
    root = str(tmp_path)
    monkeypatch.setattr(events, "MAX_BYTES", 600)
    seen: list[str] = []
    until = time.time_ns() + 3_000_000_000

    def reader() -> None:
        for ev in events.read(root, follow=True, since=time.time_ns(), until=until,
                              stop=lambda: len(seen) >= 12):
            seen.append(ev["Actor"]["ID"])
            if len(seen) >= 12:
                return

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.3)
    for i in range(12):
        events.emit(root, "volume", "create", f"v{i}")
        time.sleep(0.05)
    t.join(10)
    assert seen == [f"v{i}" for i in range(12)]
    assert (tmp_path / "events.log.1").exists()  # it did rotate meanwhile
