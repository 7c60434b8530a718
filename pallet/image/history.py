"""An image's history as docker history shows it: its config's history entries, newest
first, each with the size of the layer it made and the id of a local image it ends.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pallet.image.store import Image, ImageStore

MISSING = "<missing>"


@dataclass
class HistoryEntry:
    id: str  # the image this step made, if there is one here; else <missing>
    created: str  # RFC 3339, "" if unknown
    created_by: str
    size: int  # bytes of the layer this step made (0 for an empty layer)
    comment: str
    tags: list[str] = field(default_factory=list)


def padded_history(image: Image) -> list[dict[str, Any]]:
    """IMAGE's history entries, with one made up (empty, at the bottom) for each layer they
    do not account for: an image built without a history still lists its layers."""
    hist = [dict(h) for h in image.config.raw.get("history") or []]
    missing = len(image.config.diff_ids) - sum(1 for h in hist if not h.get("empty_layer"))
    pad = [{"created": image.created} if image.created else {} for _ in range(max(0, missing))]
    return pad + hist


def _layer_size(store: ImageStore, chain_id: str, blob_size: int) -> int:
    """Unpacked bytes of a layer, as its snapshot recorded them (else its blob's size)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        meta = json.loads((store.snapshots.dir(chain_id) / "meta.json").read_text())
        return int(meta["size"])
    return blob_size


def image_history(store: ImageStore, image: Image) -> list[HistoryEntry]:
    hist = padded_history(image)
    # The local images whose history is a beginning of this one's: the step that ends
    # each is shown with its id (and tags), as docker does for the images it has.
    ends: dict[int, Image] = {len(hist): image}
    for other in store.list(intermediates=True):
        if other.id == image.id or not other.config.diff_ids:
            continue
        theirs = padded_history(other)
        n = len(theirs)
        if (n < len(hist) and hist[:n] == theirs
                and tuple(image.config.diff_ids[:len(other.config.diff_ids)])
                == other.config.diff_ids):
            ends.setdefault(n, other)
    out: list[HistoryEntry] = []
    layer = 0
    for i, h in enumerate(hist):
        size = 0
        if not h.get("empty_layer") and layer < len(image.layers):
            size = _layer_size(store, image.chain[layer], image.layers[layer].size)
            layer += 1
        made = ends.get(i + 1)
        out.append(HistoryEntry(
            id=made.id if made else MISSING, created=h.get("created") or "",
            created_by=h.get("created_by") or "", size=size, comment=h.get("comment") or "",
            tags=list(made.names) if made else []))
    return out[::-1]
