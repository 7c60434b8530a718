"""The events journal: what happened to containers, images, networks and volumes, as docker's
event stream, kept in <root>/events.log (docker keeps it in its daemon; pallet has none).

Writers append one JSON line per event with O_APPEND, in one write(2), so lines of several
processes never interleave; past MAX_BYTES the file is renamed to events.log.1 (one old
generation). `pallet events` reads both and follows the file like `tail -F`.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing costs ~10 ms to import; only type checkers need it
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

JOURNAL = "events.log"
MAX_BYTES = 1 << 20
TYPES = ("container", "image", "network", "volume", "pod")  # pod: podman's
FILTER_KEYS = ("container", "event", "image", "label", "network", "type", "volume", "scope",
               "pod")
POLL_SECONDS = 0.1


def journal_path(root: str) -> str:
    return os.path.join(root, JOURNAL)


def message(type_: str, action: str, actor_id: str, attributes: dict[str, str] | None = None,
            time_ns: int | None = None) -> dict[str, Any]:
    """docker's events.Message as its JSON looks (status, id and from are docker's legacy
    fields, set for container and image events)."""
    ns = time.time_ns() if time_ns is None else time_ns
    attrs = {k: str(v) for k, v in (attributes or {}).items()}
    out: dict[str, Any] = {}
    if type_ in ("container", "image"):
        out["status"] = action
        out["id"] = actor_id
        if type_ == "container" and attrs.get("image"):
            out["from"] = attrs["image"]
    out.update({"Type": type_, "Action": action,
                "Actor": {"ID": actor_id, "Attributes": attrs},
                "scope": "local", "time": ns // 1_000_000_000, "timeNano": ns})
    return out


def emit(root: str, type_: str, action: str, actor_id: str,
         attributes: dict[str, str] | None = None) -> None:
    """Append one event to ROOT's journal: one open, one write, one close."""
    from pallet.oci.jsonlite import dumps

    line = (dumps(message(type_, action, actor_id, attributes)) + "\n").encode()
    path = journal_path(root)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        # The journal is a record of what happened, not part of it: an unwritable root
        # (read-only, full) must not fail the container operation being reported.
        return
    try:
        os.write(fd, line)
        if os.fstat(fd).st_size > MAX_BYTES:
            _rotate(fd, path)
    except OSError:
        pass  # as above: a failed record does not undo the operation
    finally:
        os.close(fd)


def _rotate(fd: int, path: str) -> None:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another writer is rotating it
    # Another writer may have rotated it between our write and the lock.
    if os.stat(path).st_ino == os.fstat(fd).st_ino:
        os.replace(path, path + ".1")


# -- reading -----------------------------------------------------------------------------------
def _lines(path: str) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            yield from f
    except FileNotFoundError:
        return


def _parse(raw: bytes) -> dict[str, Any] | None:
    from pallet.oci.jsonlite import loads

    try:
        ev = loads(raw)
    except ValueError:
        return None  # a torn line (a writer killed mid-write): skipped
    return ev if isinstance(ev, dict) and "timeNano" in ev else None


def read(root: str, since: int | None = None, until: int | None = None, follow: bool = False,
         stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
    """Events of ROOT's journal as docker's API gives them: with SINCE (ns), the recorded
    ones from then on; without, only new ones (unless UNTIL is given: then all recorded up to
    it). FOLLOW waits for new ones until UNTIL passes (or STOP() is true)."""
    path = journal_path(root)
    replay = since is not None or until is not None
    lo = since or 0
    if until is not None and time.time_ns() > until:
        follow = False  # docker: an --until in the past ends the stream after the replay
    files = ([path + ".1"] if replay else []) + ([] if follow else [path])
    for p in files:
        for raw in _lines(p):
            ev = _parse(raw)
            if ev is not None and ev["timeNano"] >= lo and (until is None
                                                           or ev["timeNano"] <= until):
                yield ev
    if follow:
        # The current file from its start when replaying (no gap between replay and
        # follow), else from its end.
        yield from _follow(path, lo, until, stop, from_end=not replay)


def _follow(path: str, since: int, until: int | None, stop: Callable[[], bool] | None,
            from_end: bool) -> Iterator[dict[str, Any]]:
    fd = -1
    buf = b""
    try:
        while True:
            if fd < 0:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    fd = -1
                else:
                    if from_end:
                        os.lseek(fd, 0, os.SEEK_END)
                from_end = False  # a file that appears (or replaces a rotated one) is new
            chunk = os.read(fd, 65536) if fd >= 0 else b""
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    ev = _parse(raw)
                    if ev is None or ev["timeNano"] < since:
                        continue
                    if until is not None and ev["timeNano"] > until:
                        return
                    yield ev
                continue
            if until is not None and time.time_ns() > until:
                return
            if stop is not None and stop():
                return
            if fd >= 0 and _rotated(fd, path):
                os.close(fd)
                fd, buf = -1, b""
                continue
            time.sleep(POLL_SECONDS)
    finally:
        if fd >= 0:
            os.close(fd)


def _rotated(fd: int, path: str) -> bool:
    """Whether PATH is no longer the file FD reads (renamed away, with all of it read)."""
    try:
        return os.stat(path).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return False  # renamed, the new one not yet written: keep waiting on this one


# -- filters (docker's daemon/events/filter.go) ------------------------------------------------
def parse_filters(specs: list[str]) -> dict[str, list[str]]:
    """-f KEY=VALUE arguments as {key: [values]}; unknown keys are refused, as docker does."""
    from pallet.errors import InvalidArgument

    out: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        key = key.strip().lower()
        if not sep:
            raise InvalidArgument(f"bad format of filter (expected name=value): {spec}")
        if key not in FILTER_KEYS:
            raise InvalidArgument(f"invalid filter '{key}'")
        if key == "type" and value not in TYPES:
            raise InvalidArgument(f"invalid filter 'type={value}'")
        out.setdefault(key, []).append(value)
    return out


def _strip_tag(ref: str) -> str:
    name, _, tag = ref.rpartition(":")
    return name if name and "/" not in tag else ref


def matches(ev: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    """Values of one key: any matches; different keys: all must (docker's rules: a
    container, network or volume is matched by id or name prefix, an image by id or name
    with or without its tag, an event by its action or, for exec_*, its prefix)."""
    actor = ev.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    aid, name, type_ = actor.get("ID", ""), attrs.get("name", ""), ev.get("Type", "")
    for key, values in filters.items():
        if key == "type":
            ok = type_ in values
        elif key == "event":
            action = ev.get("Action", "")
            ok = any(action == v or action.startswith(v + ":") for v in values)
        elif key == "scope":
            ok = ev.get("scope", "local") in values
        elif key in ("container", "network", "volume", "pod"):
            ok = type_ == key and any(aid.startswith(v) or (name and name.startswith(v))
                                      for v in values)
        elif key == "image":
            ref = attrs.get("name" if type_ == "image" else "image", "")
            cands = {aid, ref, _strip_tag(aid), _strip_tag(ref)} - {""}
            ok = any(v in cands or _strip_tag(v) in cands for v in values)
        elif key == "label":
            ok = any(attrs.get(k) == v if sep else k in attrs
                     for k, sep, v in (x.partition("=") for x in values))
        else:
            ok = True
        if not ok:
            return False
    return True


def line(ev: dict[str, Any]) -> str:
    """docker events' default line: time (local, nanoseconds), type, action, actor id and
    its attributes sorted by name."""
    ns = ev["timeNano"]
    sec, frac = divmod(ns, 1_000_000_000)
    t = time.localtime(sec)
    off = t.tm_gmtoff or 0
    zone = "Z" if off == 0 else f"{'+' if off > 0 else '-'}{abs(off) // 3600:02d}:" \
                                f"{abs(off) % 3600 // 60:02d}"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{frac:09d}{zone}"
    actor = ev.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    out = f"{stamp} {ev.get('Type', '')} {ev.get('Action', '')} {actor.get('ID', '')}"
    if attrs:
        out += " (" + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs)) + ")"
    return out
