"""A container's filesystem as docker's diff, export and commit see it: its changes over
its image, a tar of the whole of it, and a new image of its image plus those changes.

What the runtime itself made (the mount points of /proc, /etc/hosts, volumes...) is not a
change: docker keeps those in an init layer under the container's, pallet skips them.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import IO, TYPE_CHECKING, Any

from pallet.errors import FailedPrecondition

if TYPE_CHECKING:
    from pallet.engine.containers import Engine
    from pallet.engine.store import ContainerRecord
    from pallet.image.diff import Change
    from pallet.image.store import Image


def _mount_points(engine: Engine, rec: ContainerRecord) -> set[str]:
    try:
        with open(os.path.join(engine.ctr_dir(rec.id), "config.json")) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        spec = {}
    dests = [m.get("destination") or "" for m in
             [*(spec.get("mounts") or []), *(rec.config.get("mounts") or [])]]
    return {os.path.normpath("/" + d.lstrip("/")) for d in dests if d.strip("/")}


def _changes(engine: Engine, rec: ContainerRecord) -> tuple[list[Change], str]:
    """REC's changes and the directory that holds what they name (its overlay upper dir,
    or its whole rootfs with the copying driver)."""
    from pallet.image import diff

    store = engine.images
    cdir = engine.ctr_dir(rec.id)
    chain = store.container_image(rec.image_id, cdir).chain
    if not all(store.snapshots.exists(c) for c in chain):
        chain = store.ready_chain(rec.image_id)
    points = _mount_points(engine, rec)

    def skip(path: str) -> bool:
        return path in points

    if store.snapshots.driver == "overlay":
        upper = os.path.join(cdir, "upper")
        if not os.path.isdir(upper):
            raise FailedPrecondition(f"container {rec.id[:12]} has no writable layer at {upper}")
        lowers = [str(store.snapshots.fs(c)) for c in reversed(chain)]
        return diff.overlay_changes(upper, lowers, skip), upper
    with engine.rootfs(rec.id) as rootfs:
        return diff.tree_changes(rootfs, str(store.snapshots.fs(chain[-1])), skip), rootfs


def changes(engine: Engine, ref: str) -> list[Change]:
    """docker diff: what was added, changed and deleted in REF's filesystem."""
    return _changes(engine, engine.get(ref))[0]


def export(engine: Engine, ref: str, out: IO[bytes]) -> None:
    """docker export: REF's whole filesystem (without its volumes and binds) as a tar on
    OUT; a stopped container's rootfs is mounted for the while."""
    from pallet.engine.containers import container_event
    from pallet.image import diff

    rec = engine.get(ref)
    with engine.rootfs(rec.id) as root:
        diff.write_tar(out, root, diff.all_entries(root))
    container_event(engine.root, rec, "export")


def commit(engine: Engine, ref: str, name: str | None = None, author: str = "",
           message: str = "", changes: list[str] | None = None, pause: bool = True) -> Image:
    """docker commit: a new image of REF's image plus REF's changes as one layer, with
    REF's configuration (its command, environment...) and CHANGES (Dockerfile
    instructions) applied; a running container is paused meanwhile if PAUSE."""
    from pallet.image.reference import parse_reference

    rec = engine.get(ref)
    if name:
        parse_reference(name)  # a bad name fails before anything is paused or written
    # The container's image, even if it was removed (rmi -f) since: its lease keeps it.
    base = engine.images.container_image(rec.image_id, engine.ctr_dir(rec.id))
    ctr = engine.inspect(rec.id)["Config"]
    doc = _commit_config(rec, ctr, base, author, message, changes or [])
    history = {"created": doc["created"], "created_by": " ".join(ctr.get("Cmd") or [])}
    if author:
        history["author"] = author
    if message:
        history["comment"] = message
    paused = pause and rec.state == "running"
    if paused:
        engine.pause(rec.id)
    try:
        image = commit_changes(engine, rec.id, doc, history, name or None)
    finally:
        if paused:
            with contextlib.suppress(FailedPrecondition):
                engine.unpause(rec.id)
    from pallet.engine.containers import container_event

    # docker's API commit only (a build step's commit_changes records none): the new
    # name's `tag`, then the container's `commit`.
    ref_name = parse_reference(name).familiar() if name else ""
    if ref_name:
        engine.images.event("tag", image.id, ref_name, image)
    container_event(engine.root, rec, "commit", comment=message, imageID=image.id,
                    imageRef=ref_name)
    return image


def commit_changes(engine: Engine, ref: str, config: dict[str, Any], history: dict[str, Any],
                   name: str | None = None, annotations: dict[str, str] | None = None
                   ) -> Image:
    """A new image of REF's image plus REF's changes as one layer, with CONFIG (a whole
    image config) and HISTORY as given: commit's work, and a build step's."""
    from pallet.image import build, diff

    rec = engine.get(ref)
    base = engine.images.container_image(rec.image_id, engine.ctr_dir(rec.id))
    found, root = _changes(engine, rec)
    return build.create_image(engine.images, base,
                              lambda out: diff.write_tar(out, root, found), config, history,
                              name, what=f"commit of {rec.name}", annotations=annotations)


def _commit_config(rec: ContainerRecord, ctr: dict[str, Any], base: Image, author: str,
                   message: str, changes: list[str]) -> dict[str, Any]:
    """The new image's config: the base's, with the container's own settings as docker
    takes them (command, entrypoint, environment, labels, user, working dir)."""
    from pallet.image.build import now_rfc3339
    from pallet.image.instructions import apply_changes

    raw = {k: v for k, v in base.config.raw.items() if k not in ("history", "rootfs")}
    cfg = dict(raw.get("config") or {})
    # HOSTNAME (and HOME, unless the image sets it) are the runtime's, not the container's
    # configuration: docker leaves them out of an image too.
    added = ("HOSTNAME=",) if any(e.startswith("HOME=") for e in cfg.get("Env") or []) \
        else ("HOSTNAME=", "HOME=")
    cfg["Env"] = [e for e in ctr.get("Env") or [] if not e.startswith(added)]
    cfg["Cmd"] = ctr.get("Cmd")
    cfg["Entrypoint"] = ctr.get("Entrypoint")
    if (rec.config.get("host_config") or {}).get("user"):
        cfg["User"] = ctr.get("User") or ""
    if ctr.get("WorkingDir") not in (None, "", "/") or cfg.get("WorkingDir"):
        cfg["WorkingDir"] = ctr.get("WorkingDir") or cfg.get("WorkingDir") or ""
    labels = {**(cfg.get("Labels") or {}), **(rec.labels or {})}
    if labels:
        cfg["Labels"] = labels
    cfg = apply_changes(cfg, changes)
    doc = {**raw, "created": now_rfc3339(), "config": cfg}
    doc.pop("author", None)
    doc.pop("comment", None)
    if author:
        doc["author"] = author
    if message:
        doc["comment"] = message
    return doc
