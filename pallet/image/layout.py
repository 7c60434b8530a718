"""Write a single image as an OCI image layout directory from uncompressed layer tars.

Used by the busybox builder, archive load and the test fixtures; Docker schema2 or OCI.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pallet.errors import InvalidArgument
from pallet.image import manifest as mf
from pallet.image.content import ContentStore

FIXED_TIME = "2024-01-01T00:00:00Z"


@dataclass(frozen=True)
class TarEntry:
    """One entry of a layer tar, described as data so layers are easy to declare."""

    name: str
    type: str = "file"  # file, dir, symlink, hardlink, char, block, fifo
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    mtime: int = 1704067200
    xattrs: dict[str, str] | None = None


_TYPES = {
    "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def make_tar(entries: Iterable[TarEntry]) -> bytes:
    """A PAX tar of `entries`, in order, exactly as given (hostile names included)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = _TYPES[e.type]
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, e.mtime
            info.linkname = e.linkname
            info.devmajor, info.devminor = e.devmajor, e.devminor
            if e.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            if e.type == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        from isal import igzip

        return igzip.compress(data, compresslevel=1, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    if compression == "none":
        return data
    raise InvalidArgument(f"unknown layer compression {compression!r}")


_LAYER_TYPES = {
    ("oci", "gzip"): mf.OCI_LAYER_GZIP, ("oci", "zstd"): mf.OCI_LAYER_ZSTD,
    ("oci", "none"): mf.OCI_LAYER, ("docker", "gzip"): mf.DOCKER_LAYER_GZIP,
}


def write_image_layout(
    dest: str | Path,
    layers: list[bytes],
    config: dict[str, Any] | None = None,
    *,
    ref_name: str = "latest",
    media: str = "oci",
    compression: str | list[str] = "gzip",
    architecture: str = "amd64",
    os_name: str = "linux",
    history: list[dict[str, Any]] | None = None,
) -> mf.Descriptor:
    """Add one image to the OCI layout at `dest` (created if needed); returns its descriptor.

    `layers` are uncompressed tars; `config` is the image's runtime config (`Env`, `Cmd`, …).
    Calling it again on the same dir adds another image (e.g. another platform or tag).
    """
    store = ContentStore(dest).ensure()
    comps = compression if isinstance(compression, list) else [compression] * len(layers)
    layer_descs, diff_ids = [], []
    for tar_bytes, comp in zip(layers, comps, strict=True):
        key = (media, comp)
        if key not in _LAYER_TYPES:
            raise InvalidArgument(f"{media} images cannot have {comp} layers")
        blob = compress(tar_bytes, comp)
        diff_ids.append("sha256:" + hashlib.sha256(tar_bytes).hexdigest())
        layer_descs.append(mf.Descriptor(_LAYER_TYPES[key], store.put(blob), len(blob)))
    cfg_doc = {
        "architecture": architecture,
        "os": os_name,
        "created": FIXED_TIME,
        "config": config or {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history or [{"created": FIXED_TIME, "created_by": "pallet layout"} for _ in layers],
    }
    cfg_bytes = json.dumps(cfg_doc, separators=(",", ":")).encode()
    cfg_type = mf.OCI_CONFIG if media == "oci" else mf.DOCKER_CONFIG
    cfg_desc = mf.Descriptor(cfg_type, store.put(cfg_bytes), len(cfg_bytes))
    man_type = mf.OCI_MANIFEST if media == "oci" else mf.DOCKER_MANIFEST
    man_bytes = mf.manifest_json(mf.Manifest(man_type, cfg_desc, tuple(layer_descs)))
    desc = mf.Descriptor(
        man_type, store.put(man_bytes), len(man_bytes),
        platform=mf.Platform(os_name, architecture),
        annotations={"org.opencontainers.image.ref.name": ref_name} if ref_name else {},
    )
    with store.update_index() as index:
        index["manifests"] = [
            m for m in index["manifests"]
            if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") != ref_name
            or not ref_name
        ] + [desc.to_json()]
    return desc


def write_index_layout(dest: str | Path, manifests: list[mf.Descriptor], ref_name: str) -> mf.Descriptor:
    """Add a multi-platform index over manifests already in the layout at `dest`."""
    store = ContentStore(dest).ensure()
    plain = [mf.Descriptor(d.media_type, d.digest, d.size, d.platform) for d in manifests]
    data = mf.index_json(plain)
    desc = mf.Descriptor(mf.OCI_INDEX, store.put(data), len(data),
                         annotations={"org.opencontainers.image.ref.name": ref_name})
    with store.update_index() as index:
        index["manifests"] = [
            m for m in index["manifests"]
            if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") != ref_name
        ] + [desc.to_json()]
    return desc


