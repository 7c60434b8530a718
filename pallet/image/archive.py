"""Image archives: import an OCI layout dir, load/save docker-archive and oci-archive tars.

Formats follow `docker save` (manifest.json + config + layer.tar) and the OCI layout
spec, so skopeo, podman and docker read what pallet writes and the other way round.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pallet.errors import InvalidArgument, NotFound
from pallet.image import manifest as mf
from pallet.image.content import ContentStore
from pallet.image.reference import parse_reference
from pallet.tarfilter import tarfile

if TYPE_CHECKING:
    from pallet.image.store import Image, ImageStore

NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"


def _copy_blob(src: ContentStore, dst: ContentStore, desc: mf.Descriptor, what: str) -> None:
    if dst.has(desc.digest, desc.size):
        return
    try:
        f = src.open(desc.digest)
    except NotFound:
        raise NotFound(f"{what}: blob {desc.digest} missing from {src.path}") from None
    with f:
        dst.ingest(iter(lambda: f.read(1 << 20), b""), desc.digest, desc.size)


def _name_from_annotations(ann: dict[str, str]) -> str | None:
    if ann.get(NAME_ANNOTATION):
        return str(parse_reference(ann[NAME_ANNOTATION]))
    ref = ann.get(REF_ANNOTATION, "")
    # A bare tag ("latest") names no repository; a full ref ("busybox:1") does.
    if ref and ("/" in ref or ":" in ref):
        with contextlib.suppress(InvalidArgument):
            return str(parse_reference(ref))
    return None


def import_layout(store: ImageStore, layout: Path, name: str | None = None,
                  platform: str | None = None, ref_name: str | None = None) -> list[Image]:
    """Copy the images of an OCI layout (verified) into the store, name and unpack them."""
    src = ContentStore(layout)
    if not (layout / "index.json").is_file():
        raise InvalidArgument(f"{layout} is not an OCI image layout (no index.json)")
    entries = [mf.Descriptor.from_json(d) for d in src.read_index().get("manifests") or []]
    if ref_name is not None:
        entries = [e for e in entries if e.annotations.get(REF_ANNOTATION) == ref_name]
    if not entries:
        raise NotFound(f"no images in OCI layout {layout}")
    if name and len(entries) > 1:
        raise InvalidArgument(f"{layout} holds {len(entries)} images; cannot give them all one name")
    want = mf.parse_platform(platform) if platform else None
    images = []
    for entry in entries:
        what = f"{layout}:{entry.annotations.get(REF_ANNOTATION, entry.digest)}"
        desc = entry
        if entry.media_type in mf.INDEX_TYPES:
            _copy_blob(src, store.content, entry, what)
            idx = mf.parse_manifest(src.read(entry.digest), entry.media_type, what)
            assert isinstance(idx, mf.Index)
            desc = mf.select_manifest(idx, want, what)
        _copy_blob(src, store.content, desc, what)
        man = mf.parse_manifest(store.content.read(desc.digest), desc.media_type, what)
        if not isinstance(man, mf.Manifest):
            raise InvalidArgument(f"{what}: nested indexes are not supported")
        for blob in (man.config, *man.layers):
            _copy_blob(src, store.content, blob, what)
        target = str(parse_reference(name)) if name else _name_from_annotations(entry.annotations)
        image = store.register(target, desc.digest)
        store.unpack(target or desc.digest)
        images.append(image)
    return images


def _safe_extract(tar_path: Path, dest: Path) -> None:
    try:
        with tarfile.open(tar_path) as tar:
            # The "data" filter refuses absolute paths, `..`, links out and devices.
            tar.extractall(dest, filter="data")
    except FileNotFoundError:
        raise NotFound(f"archive {tar_path} not found") from None
    except (tarfile.TarError, OSError) as e:
        raise InvalidArgument(f"cannot read image archive {tar_path}: {e}") from None


def _layer_media_type(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b":
        return mf.OCI_LAYER_GZIP
    if head == b"\x28\xb5\x2f\xfd":
        return mf.OCI_LAYER_ZSTD
    return mf.OCI_LAYER


def _add_file(store: ContentStore, path: Path) -> tuple[str, int]:
    with open(path, "rb") as f:
        digest = store.ingest(iter(lambda: f.read(1 << 20), b""))
    return digest, path.stat().st_size


def load(store: ImageStore, tar_path: Path) -> list[Image]:
    """Load a docker-archive or oci-archive tarball; returns the images it named."""
    tmp_root = store.root / "tmp"
    tmp_root.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="load-") as tmp:
        d = Path(tmp)
        _safe_extract(tar_path, d)
        if (d / "manifest.json").is_file():
            return _load_docker(store, d, tar_path)
        if (d / "index.json").is_file():
            return import_layout(store, d)
        raise InvalidArgument(f"{tar_path} is neither a docker-archive nor an oci-archive")


def _load_docker(store: ImageStore, d: Path, tar_path: Path) -> list[Image]:
    try:
        entries = json.loads((d / "manifest.json").read_text())
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"{tar_path}: manifest.json is not valid JSON: {e}") from None
    images = []
    for e in entries:
        what = f"{tar_path}:{(e.get('RepoTags') or ['<none>'])[0]}"
        cfg_path = d / e["Config"]
        cfg_digest, cfg_size = _add_file(store.content, cfg_path)
        cfg = mf.parse_config(cfg_path.read_bytes(), what)
        layers = []
        for rel in e.get("Layers") or []:
            p = d / rel
            if not p.is_file():
                raise InvalidArgument(f"{what}: layer {rel} missing from the archive")
            digest, size = _add_file(store.content, p)
            layers.append(mf.Descriptor(_layer_media_type(p), digest, size))
        if len(layers) != len(cfg.diff_ids):
            raise InvalidArgument(f"{what}: {len(layers)} layers but config has {len(cfg.diff_ids)} diff ids")
        man = mf.Manifest(mf.OCI_MANIFEST, mf.Descriptor(mf.OCI_CONFIG, cfg_digest, cfg_size), tuple(layers))
        man_bytes = mf.manifest_json(man)
        man_digest = store.content.put(man_bytes)
        names = [str(parse_reference(t)) for t in e.get("RepoTags") or []] or [None]
        for n in names:
            images.append(store.register(n, man_digest))
        store.unpack(names[0] or man_digest)
    return images


@contextlib.contextmanager
def _open_blob_uncompressed(store: ContentStore, digest: str) -> Iterator[Path]:
    """Decompress a layer blob to a temp file (tar members need their size up front)."""
    from pallet.image.unpack import _HashingReader

    tmp_dir = store.path.parent / "tmp"
    tmp_dir.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="layer-")
    try:
        with store.open(digest) as src, os.fdopen(fd, "wb") as out:
            reader = _HashingReader(src, f"layer {digest}")
            while chunk := reader.read(1 << 20):
                out.write(chunk)
        yield Path(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)


def _resolve(store: ImageStore, refs: list[str]) -> list[tuple[Image, list[str]]]:
    out = []
    for ref in refs:
        image = store.get(ref)
        names = [n for n in image.names if n == str(parse_reference(ref))] if not _is_id(ref, image) else []
        out.append((image, names or image.names))
    return out


def _is_id(ref: str, image: Image) -> bool:
    with contextlib.suppress(InvalidArgument):
        return str(parse_reference(ref)) not in image.names
    return True


def save(store: ImageStore, refs: list[str], tar_path: Path, format: str = "docker-archive") -> None:
    """Write images to a tarball atomically (temp file + rename)."""
    if format not in ("docker-archive", "oci-archive"):
        raise InvalidArgument(f"unknown archive format {format!r}: use docker-archive or oci-archive")
    if not refs:
        raise InvalidArgument("save needs at least one image")
    chosen = _resolve(store, refs)
    tar_path = tar_path.resolve()
    fd, tmp = tempfile.mkstemp(dir=tar_path.parent, prefix=f".{tar_path.name}.")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            if format == "docker-archive":
                _save_docker(store, chosen, tar)
            else:
                _save_oci(store, chosen, tar)
        os.rename(tmp, tar_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _save_docker(store: ImageStore, chosen: list[tuple[Image, list[str]]], tar: tarfile.TarFile) -> None:
    manifest: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    for image, names in chosen:
        cfg_name = image.id.split(":", 1)[1] + ".json"
        if cfg_name not in written:
            _add_bytes(tar, cfg_name, store.content.read(image.id))
            written.add(cfg_name)
        layer_paths = []
        for layer, diff_id in zip(image.layers, image.config.diff_ids, strict=True):
            hexid = diff_id.split(":", 1)[1]
            path = f"{hexid}/layer.tar"
            if path not in written:
                _add_dir(tar, f"{hexid}/")
                with _open_blob_uncompressed(store.content, layer.digest) as p:
                    tar.add(str(p), arcname=path, recursive=False)
                written.add(path)
            layer_paths.append(path)
        tags = [parse_reference(n).familiar() for n in names]
        manifest.append({"Config": cfg_name, "RepoTags": tags or None, "Layers": layer_paths})
        for t in tags:
            repo, _, tag = t.rpartition(":")
            repositories.setdefault(repo, {})[tag] = image.id.split(":", 1)[1]
    _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    _add_bytes(tar, "repositories", json.dumps(repositories).encode())


def _save_oci(store: ImageStore, chosen: list[tuple[Image, list[str]]], tar: tarfile.TarFile) -> None:
    entries = []
    blobs: set[str] = set()
    for image, names in chosen:
        man = store._read_manifest(image.manifest_digest)
        blobs.update([image.manifest_digest, man.config.digest, *(layer.digest for layer in man.layers)])
        size = store.content.size(image.manifest_digest)
        for n in names or [""]:
            ann = {NAME_ANNOTATION: n, REF_ANNOTATION: parse_reference(n).familiar()} if n else {}
            entries.append(mf.Descriptor(image.manifest_media_type, image.manifest_digest, size,
                                         platform=image.platform if image.platform.os else None,
                                         annotations=ann).to_json())
    _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    _add_bytes(tar, "index.json", json.dumps(
        {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": entries}).encode())
    _add_dir(tar, "blobs/")
    _add_dir(tar, "blobs/sha256/")
    for d in sorted(blobs):
        tar.add(str(store.content.blob_path(d)), arcname=f"blobs/sha256/{d.split(':', 1)[1]}",
                recursive=False)


