"""Images made here rather than pulled: one new layer (a tar stream, gzip-compressed
into the content store) over a base image or over nothing, for `commit` and `import`.

All or nothing: a failure removes the blobs and the snapshot it added, and the GC lock
is held shared throughout, so a prune never deletes what is being written.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from isal import isal_zlib

from pallet.image import manifest as mf
from pallet.image.content import file_lock
from pallet.image.reference import parse_reference
from pallet.image.snapshot import chain_ids

if TYPE_CHECKING:
    from pallet.image.content import BlobWriter
    from pallet.image.store import Image, ImageStore

WriteLayer = Callable[[IO[bytes]], None]


class _GzipSink:
    """What a tar writer writes to: hashed as the diff id, compressed into a blob whose
    own digest is tracked too (to tell a new blob from one the store already had)."""

    def __init__(self, blob: BlobWriter):
        self._blob = blob
        self.diff = hashlib.sha256()
        self.packed = hashlib.sha256()
        self._z = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)  # 31: gzip framing

    def write(self, data: bytes) -> int:
        self.diff.update(data)
        self._out(self._z.compress(data))
        return len(data)

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        self._out(self._z.flush())

    def _out(self, data: bytes) -> None:
        if data:
            self.packed.update(data)
            self._blob.write(data)


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def create_image(store: ImageStore, base: Image | None, write_layer: WriteLayer | None,
                 config: dict[str, Any], history: dict[str, Any] | None, name: str | None = None,
                 what: str = "new layer", annotations: dict[str, str] | None = None) -> Image:
    """A new image: BASE's layers (none without a base) plus the tar WRITE_LAYER writes
    (None: no new layer, a metadata-only step of a build, its HISTORY marked
    `empty_layer`), with CONFIG (a whole image config: its rootfs is filled in here) and
    HISTORY (if any) appended to BASE's history; named NAME, or dangling, its index entry carrying
    ANNOTATIONS. Returns it (its id is the config's digest)."""
    added: list[str] = []
    snapshot = ""
    with file_lock(store._gc_lock, shared=True):
        try:
            base_diff_ids = list(base.config.diff_ids) if base else []
            layers = list(base.layers if base else ())
            diff_ids = list(base_diff_ids)
            if write_layer is None:
                if history:
                    history = {**history, "empty_layer": True}
            else:
                layer, diff_id = _add_layer(store, write_layer, added)
                if base is not None and not all(store.snapshots.exists(c) for c in base.chain):
                    store.ready_chain(base.id)  # the copying driver builds on the base's tree
                chain = chain_ids([*base_diff_ids, diff_id])
                made = store.snapshots.ensure_layer(
                    chain[-1], chain[-2] if len(chain) > 1 else None,
                    lambda: store.content.open(layer.digest), diff_id, what)
                if made is not None:
                    snapshot = chain[-1]
                layers.append(layer)
                diff_ids.append(diff_id)
            doc = copy.deepcopy(config)
            doc["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
            doc["history"] = [*_history(base), *([history] if history else [])]
            cfg_bytes = json.dumps(doc, separators=(",", ":")).encode()
            cfg_digest = _put(store, cfg_bytes, added)
            man = mf.Manifest(mf.OCI_MANIFEST,
                              mf.Descriptor(mf.OCI_CONFIG, cfg_digest, len(cfg_bytes)),
                              tuple(layers))
            man_digest = _put(store, mf.manifest_json(man), added)
            return store.register(str(parse_reference(name)) if name else None, man_digest,
                                  annotations)
        except BaseException:
            for digest in added:
                store.content.delete(digest)
            if snapshot:
                store.snapshots.remove(snapshot)
            raise


def _add_layer(store: ImageStore, write_layer: WriteLayer,
               added: list[str]) -> tuple[mf.Descriptor, str]:
    with store.content.writer() as blob:
        sink = _GzipSink(blob)
        write_layer(sink)  # type: ignore[arg-type]
        sink.finish()
        digest = "sha256:" + sink.packed.hexdigest()
        if not store.content.has(digest):
            added.append(digest)
    return (mf.Descriptor(mf.OCI_LAYER_GZIP, digest, blob.written),
            "sha256:" + sink.diff.hexdigest())


def _put(store: ImageStore, data: bytes, added: list[str]) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if not store.content.has(digest, len(data)):
        store.content.put(data, digest)
        added.append(digest)
    return digest


def _history(base: Image | None) -> list[dict[str, Any]]:
    from pallet.image.history import padded_history

    return padded_history(base) if base is not None else []


def import_tar(store: ImageStore, src: IO[bytes], label: str, name: str | None = None,
               changes: list[str] | None = None, message: str = "",
               platform: str | None = None) -> Image:
    """docker import: a one-layer image of the tar archive SRC (plain, gzip, bzip2 or xz;
    LABEL names it in the history: a path, or - for stdin), its config CHANGES applied."""
    from pallet.image.instructions import apply_changes

    plat = mf.parse_platform(platform) if platform else mf.host_platform()
    if name:
        parse_reference(name)  # a bad name fails before anything is read
    created = now_rfc3339()
    comment = message or f"Imported from {label}"
    config: dict[str, Any] = {"architecture": plat.architecture, "os": plat.os,
                              "created": created, "comment": comment,
                              "config": apply_changes({}, changes or [])}
    if plat.variant:
        config["variant"] = plat.variant
    image = create_image(store, None, lambda out: _copy_tar(src, out, label), config,
                         {"created": created, "created_by": "", "comment": comment}, name,
                         what=f"import of {label}")
    store.event("import", image.id, image.id, image)
    return image


def _copy_tar(src: IO[bytes], out: IO[bytes], label: str) -> None:
    """SRC's entries, decompressed, as a plain tar on OUT. (Unsafe names are kept: the
    unpack that follows refuses them, with nothing left behind.)"""
    import tarfile

    from pallet.errors import InvalidArgument

    try:
        with tarfile.open(fileobj=src, mode="r|*") as tin, \
                tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tout:
            for member in tin:
                tout.addfile(member, tin.extractfile(member) if member.isreg() else None)
    except (tarfile.TarError, EOFError, OSError) as e:
        if isinstance(e, OSError) and not isinstance(e, tarfile.TarError) and e.errno:
            raise
        raise InvalidArgument(f"{label} is not a valid tar archive: {e}") from None
