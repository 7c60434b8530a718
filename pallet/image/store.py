"""The image store facade used by the engine and the CLI: pull, push, names, GC, rootfs.

Names live in the content layout's own index.json (one entry per name, written
atomically under a lock), so skopeo/umoci can read `<root>/content` directly.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pallet.errors import FailedPrecondition, InvalidArgument, NotFound, PalletError
from pallet.image import manifest as mf
from pallet.image.content import ContentStore, file_lock
from pallet.image.reference import Reference, looks_like_id, parse_reference
from pallet.image.snapshot import Idmap, Mount, Snapshotter, chain_ids, live_leases

TYPE_CHECKING = False
if TYPE_CHECKING:
    # The registry client pulls in httpx (~75 ms); only pull and push import it, so
    # `pallet run` of a local image and listing images stay quick.
    from pallet.image.registry import Progress, RegistryClient, RegistryConfig

DEFAULT_ROOT = "/var/lib/pallet"
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
REPO_DIGEST_ANNOTATION = "io.pallet.image.repo-digest"  # digest the registry knows it by
INDEX_DIGEST_ANNOTATION = "io.pallet.image.index"  # multi-platform index it came from
DANGLING = "<none>"
# A build step's image (pallet.build): its cache key, and whether it is an intermediate
# step (hidden from `images` like docker's) rather than a build's result.
BUILD_CACHE_ANNOTATION = "io.pallet.build.cache-key"
INTERMEDIATE_ANNOTATION = "io.pallet.build.intermediate"
# The image a build step was made on (docker's parent image): `rmi` prunes it with its child.
BUILD_PARENT_ANNOTATION = "io.pallet.build.parent"


@dataclass
class Image:
    """An image as the engine and CLI see it: identity, names, config, layers."""

    id: str  # config digest, like docker's image id
    names: list[str]  # full references, e.g. docker.io/library/busybox:latest
    repo_digests: list[str]  # name@digest the registry serves it under
    manifest_digest: str
    manifest_media_type: str
    config: mf.ImageConfig
    layers: list[mf.Descriptor]
    chain: list[str]  # snapshot chain ids, bottom first
    size: int  # compressed: config + layers, as a registry counts it
    created: str
    platform: mf.Platform
    extra_index_digests: list[str] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    def to_json(self) -> dict[str, Any]:
        c = self.config
        return {
            "Id": self.id,
            "RepoTags": [parse_reference(n).familiar() for n in self.names],
            "RepoDigests": self.repo_digests,
            "ManifestDigest": self.manifest_digest,
            "Created": self.created,
            "Size": self.size,
            "Architecture": c.architecture,
            "Os": c.os,
            "Variant": c.variant or None,
            "Author": c.author,
            "Config": c.raw.get("config") or {},
            "RootFS": {"Type": "layers", "Layers": list(c.diff_ids)},
        }


class ImageStore:
    """Images under `root`: content/ (OCI layout), snapshots/, leases/, locks."""

    def __init__(self, root: str | os.PathLike[str] | None = None,
                 registry: RegistryConfig | None = None, driver: str | None = None):
        if root is None:
            root = _config().root
        self.root = Path(root or DEFAULT_ROOT)
        self.content = ContentStore(self.root / "content").ensure()
        self._snapshots: Snapshotter | None = None
        self._driver = driver
        self._registry = registry
        self._gc_lock = self.root / "gc.lock"

    @property
    def registry(self) -> RegistryConfig:
        # Mirrors, insecure hosts and credentials come from pallet's config file unless
        # given; read lazily, so listing images or mounting a rootfs never depends on it.
        if self._registry is None:
            self._registry = _config().registry_config()
        return self._registry

    @property
    def snapshots(self) -> Snapshotter:
        # Lazy: probing overlay mounts is not free, and listing images never needs it.
        if self._snapshots is None:
            self._snapshots = Snapshotter(self.root / "snapshots", self._driver)
        return self._snapshots

    # -- reading -------------------------------------------------------------
    def _entries(self) -> list[dict[str, Any]]:
        return list(self.content.read_index().get("manifests") or [])

    def _image(self, entry: dict[str, Any], entries: list[dict[str, Any]]) -> Image:
        desc = mf.Descriptor.from_json(entry)
        man = self._read_manifest(desc.digest)
        cfg = mf.parse_config(self.content.read(man.config.digest))
        same = [e for e in entries if e["digest"] == desc.digest]
        names = sorted({n for e in same if (n := _name(e))})
        repo_digests = sorted({
            f"{parse_reference(n).familiar().rsplit(':', 1)[0]}@{_repo_digest(e)}"
            for e in same if (n := _name(e))
        })
        return Image(
            id=man.config.digest,
            names=names,
            repo_digests=repo_digests,
            manifest_digest=desc.digest,
            manifest_media_type=man.media_type,
            config=cfg,
            layers=list(man.layers),
            chain=chain_ids(cfg.diff_ids),
            size=man.config.size + sum(layer.size for layer in man.layers),
            created=cfg.created,
            platform=cfg.platform,
        )

    def _read_manifest(self, digest: str) -> mf.Manifest:
        m = mf.parse_manifest(self.content.read(digest), what=f"manifest {digest}")
        if not isinstance(m, mf.Manifest):
            raise FailedPrecondition(f"store entry {digest} is an index, not an image manifest")
        return m

    def _find(self, ref_or_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        entry, entries, _ = self._lookup(ref_or_id)
        return entry, entries

    def _lookup(self, ref_or_id: str) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
        """Find an index entry by name, name@digest or id (prefix); the flag says 'by name'."""
        entries = self._entries()
        ref = None
        with contextlib.suppress(InvalidArgument):
            ref = parse_reference(ref_or_id)
        if ref is not None:
            for e in entries:
                n = _name(e)
                if not n:
                    continue
                if ref.digest:
                    if parse_reference(n).name == ref.name and ref.digest in (e["digest"], _repo_digest(e)):
                        return e, entries, True
                elif n == str(ref):
                    return e, entries, True
        if looks_like_id(ref_or_id):
            want = ref_or_id if ref_or_id.startswith("sha256:") else "sha256:" + ref_or_id
            hits = {}
            for e in entries:
                with contextlib.suppress(PalletError, OSError):
                    cfg_digest = self._read_manifest(e["digest"]).config.digest
                    if cfg_digest.startswith(want) or e["digest"] == want:
                        hits[cfg_digest] = e
            if len(hits) == 1:
                return next(iter(hits.values())), entries, False
            if len(hits) > 1:
                raise InvalidArgument(f"image id prefix {ref_or_id!r} is ambiguous")
        raise NotFound(f"image {ref_or_id!r} not found; pull it first")

    def get(self, ref_or_id: str) -> Image:
        entry, entries = self._find(ref_or_id)
        return self._image(entry, entries)

    def lookup(self, ref_or_id: str) -> tuple[Image, bool]:
        """The image REF_OR_ID names, and whether it was named by a reference (a name)
        rather than by its id: `remove` of a name only untags."""
        entry, entries, by_name = self._lookup(ref_or_id)
        return self._image(entry, entries), by_name

    def exists(self, ref_or_id: str) -> bool:
        try:
            self._find(ref_or_id)
            return True
        except NotFound:
            return False

    def list(self, intermediates: bool = False) -> list[Image]:
        """The images, newest first; a build's intermediate step images (docker's images
        without -a hides them too) only with INTERMEDIATES."""
        entries = self._entries()
        seen: dict[str, Image] = {}
        for e in entries:
            if e["digest"] in seen:
                continue
            if not intermediates and (e.get("annotations") or {}).get(INTERMEDIATE_ANNOTATION):
                continue
            with contextlib.suppress(PalletError, OSError):
                seen[e["digest"]] = self._image(e, entries)
        return sorted(seen.values(), key=lambda i: (i.created, i.id), reverse=True)

    def build_parents(self) -> dict[str, str]:
        """{image id: the id of the image its build step was made on}, for the images a
        build made (docker's parent chain)."""
        out: dict[str, str] = {}
        for e in self._entries():
            parent = (e.get("annotations") or {}).get(BUILD_PARENT_ANNOTATION)
            if parent:
                with contextlib.suppress(PalletError, OSError):
                    out[self._read_manifest(e["digest"]).config.digest] = parent
        return out

    # -- names ---------------------------------------------------------------
    def _set_name(self, name: str | None, desc: dict[str, Any]) -> None:
        """Point `name` at a manifest descriptor (None: keep it as an unnamed image)."""
        entry = dict(desc)
        ann = dict(entry.get("annotations") or {})
        ann.pop(NAME_ANNOTATION, None)
        ann.pop(REF_ANNOTATION, None)
        if name:
            ann[NAME_ANNOTATION] = name
            ann[REF_ANNOTATION] = name
        entry["annotations"] = ann
        with self.content.update_index() as index:
            keep = [
                e for e in index["manifests"]
                if not ((name and _name(e) == name) or (not _name(e) and e["digest"] == entry["digest"]))
            ]
            index["manifests"] = keep + [entry]

    def tag(self, src: str, dst: str) -> Image:
        entry, _ = self._find(src)
        target = parse_reference(dst)
        if target.digest:
            raise InvalidArgument(f"cannot tag with a digest reference {dst!r}")
        self._set_name(str(target), entry)
        image = self.get(str(target))
        self.event("tag", image.id, target.familiar(), image)
        return image

    def event(self, action: str, actor_id: str, name: str, image: Image | None = None
              ) -> None:
        """docker's image event in the events journal (pallet.events) of this root: NAME and
        the labels of IMAGE (docker's too, while the image exists: not on `delete`)."""
        from pallet.events import emit

        labels = image.config.labels if image is not None else {}
        emit(str(self.root), "image", action, actor_id, {**labels, "name": name})

    def remove(self, ref_or_id: str, force: bool = False, collect: bool = True) -> list[str]:
        """Untag a name, or delete an image by id; returns docker-style `Untagged:`/`Deleted:`
        lines. COLLECT=False leaves the garbage to the caller's `garbage_collect()`."""
        entry, entries, by_name = self._lookup(ref_or_id)
        image = self._image(entry, entries)
        if by_name:
            targets = {_name(entry)}
        else:
            if len(image.names) > 1 and not force:
                raise FailedPrecondition(
                    f"image {image.short_id} is referenced in multiple repositories "
                    f"({', '.join(image.names)}); remove by name or use -f"
                )
            targets = set(image.names) | {""}
        out = [f"Untagged: {parse_reference(n).familiar()}" for n in sorted(targets) if n]
        with self.content.update_index() as index:
            index["manifests"] = [
                e for e in index["manifests"]
                if not (e["digest"] == image.manifest_digest and _name(e) in targets)
            ]
            still = any(e["digest"] == image.manifest_digest for e in index["manifests"])
        for _ in (n for n in targets if n):
            self.event("untag", image.id, image.id, image)
        if not still:
            out.append(f"Deleted: {image.id}")
            self.event("delete", image.id, image.id)
            if collect:
                self.garbage_collect(blocking=False)
        return out

    # -- GC --------------------------------------------------------------------
    def garbage_collect(self, blocking: bool = True) -> dict[str, int]:
        """Delete blobs and snapshots no name or lease needs. Pulls hold the lock shared."""
        with file_lock(self._gc_lock, shared=False, blocking=blocking) as got:
            if not got:
                return {"blobs": 0, "snapshots": 0, "bytes": 0}
            keep_blobs: set[str] = set()
            keep_chains: set[str] = set()
            for e in self._entries():
                keep_blobs.add(e["digest"])
                ann = e.get("annotations") or {}
                for key in (INDEX_DIGEST_ANNOTATION,):
                    if ann.get(key):
                        keep_blobs.add(ann[key])
                with contextlib.suppress(PalletError, OSError):
                    m = self._read_manifest(e["digest"])
                    keep_blobs.add(m.config.digest)
                    keep_blobs.update(layer.digest for layer in m.layers)
                    keep_chains.update(chain_ids(mf.parse_config(self.content.read(m.config.digest)).diff_ids))
            # A container keeps the blobs of the image it was made from, even once the
            # image's names are gone (rmi -f): commit and restart still need them.
            for lease in live_leases(self.root / "leases"):
                keep_blobs.update((lease.get("image") or {}).get("blobs") or [])
            freed = removed = 0
            for d in self.content.all_blobs():
                if d not in keep_blobs:
                    with contextlib.suppress(FileNotFoundError):
                        freed += self.content.size(d)
                    self.content.delete(d)
                    removed += 1
            self.content.clean_ingest()
            snaps = 0
            if (self.root / "snapshots").is_dir():
                keep_chains |= self.snapshots.leased()
                self.snapshots.clean_temp()
                for c in self.snapshots.all() - keep_chains:
                    self.snapshots.remove(c)
                    snaps += 1
            return {"blobs": removed, "snapshots": snaps, "bytes": freed}

    def prune(self) -> dict[str, int]:
        with self.content.update_index() as index:
            # Unnamed entries (e.g. loaded without a tag) are what docker calls dangling.
            index["manifests"] = [e for e in index["manifests"] if _name(e)]
        return self.garbage_collect(blocking=True)

    # -- pull ----------------------------------------------------------------
    def _endpoints(self, ref: Reference) -> list[tuple[str, RegistryConfig]]:
        """Mirrors first (pulls only), then the registry itself, each with its settings.

        A mirror may be written `host[:port]`, `https://host` or `http://host`; the last
        is plain HTTP, so it counts as insecure without a separate `insecure` entry.
        """
        out = []
        for m in self.registry.mirrors.get(ref.domain, []):
            scheme, _, rest = m.rpartition("://")
            host = rest.split("/", 1)[0]
            cfg = self.registry
            if scheme == "http":
                cfg = replace(cfg, insecure=cfg.insecure | {host})
            out.append((host, cfg))
        return out + [(ref.api_host, self.registry)]

    def pull(self, ref: str, platform: str | mf.Platform | None = None,
             progress: Progress | None = None) -> Image:
        """Fetch an image (verified), unpack its layers into snapshots and name it."""
        image = self._pull(ref, platform, progress)
        what = parse_reference(ref).familiar()
        self.event("pull", what, what, image)
        return image

    def _pull(self, ref: str, platform: str | mf.Platform | None,
              progress: Progress | None) -> Image:
        from pallet.image.registry import (
            RegistryClient,
            RegistryDenied,
            RegistryTLSError,
            RegistryUnavailable,
        )

        r = parse_reference(ref)
        want = mf.parse_platform(platform) if isinstance(platform, str) else platform
        what = r.familiar()
        last: Exception | None = None
        endpoints = self._endpoints(r)
        # Pulls hold the GC lock shared: prune cannot delete what a pull is writing.
        with file_lock(self._gc_lock, shared=True):
            for i, (host, cfg) in enumerate(endpoints):
                try:
                    with RegistryClient(host, cfg) as client:
                        desc = self._fetch(client, r, want, what, progress)
                    break
                except (RegistryUnavailable, NotFound, RegistryDenied, RegistryTLSError) as e:
                    # A mirror that lacks the image or refuses us: try the next endpoint.
                    last = e
                    if i == len(endpoints) - 1:
                        raise
            else:  # pragma: no cover - loop always breaks or raises
                raise last or NotFound(what)
            self._set_name(str(r), desc)
        return self.get(str(r))

    def _fetch(self, client: RegistryClient, r: Reference, want: mf.Platform | None,
               what: str, progress: Progress | None) -> dict[str, Any]:
        data, ctype, digest = client.get_manifest(r.path, r.object, what)
        parsed = mf.parse_manifest(data, ctype, what=f"{what}: manifest")
        repo_digest, index_digest = digest, None
        if isinstance(parsed, mf.Index):
            index_digest = self.content.put(data, digest)
            chosen = mf.select_manifest(parsed, want, what)
            data, ctype, digest = client.get_manifest(r.path, chosen.digest, what)
            parsed = mf.parse_manifest(data, ctype, what=f"{what}: manifest")
            if not isinstance(parsed, mf.Manifest):
                raise InvalidArgument(f"{what}: index entry {chosen.digest} is not an image manifest")
        assert isinstance(parsed, mf.Manifest)
        client.fetch_blob(r.path, parsed.config, self.content, what)
        cfg = mf.parse_config(self.content.read(parsed.config.digest), f"{what}: config")
        if want and (cfg.os, mf.normalize_platform(cfg.platform).architecture) != (want.os, want.architecture):
            raise NotFound(f"{what}: image is {cfg.platform}, not the requested {want}")
        self._check_layers(parsed, cfg, what)

        def download(layer: mf.Descriptor) -> None:
            client.fetch_blob(r.path, layer, self.content, what, progress)

        self._download_and_unpack(parsed, cfg, what, download)
        self.content.put(data, digest)
        desc = mf.Descriptor(parsed.media_type, digest, len(data), platform=cfg.platform).to_json()
        ann = {REPO_DIGEST_ANNOTATION: repo_digest}
        if index_digest:
            ann[INDEX_DIGEST_ANNOTATION] = index_digest
        desc["annotations"] = ann
        return desc

    @staticmethod
    def _check_layers(m: mf.Manifest, cfg: mf.ImageConfig, what: str) -> None:
        if len(cfg.diff_ids) != len(m.layers):
            raise InvalidArgument(
                f"{what}: manifest has {len(m.layers)} layers but config lists {len(cfg.diff_ids)} diff ids"
            )
        for layer in m.layers:
            if layer.media_type not in mf.LAYER_COMPRESSION:
                raise InvalidArgument(f"{what}: layer {layer.digest} has unsupported type {layer.media_type}")

    def _download_and_unpack(self, m: mf.Manifest, cfg: mf.ImageConfig, what: str,
                             download: Callable[[mf.Descriptor], None]) -> None:
        """Fetch layers concurrently; unpack each as soon as it (and, for copies, its parent) is ready."""
        chain = chain_ids(cfg.diff_ids)
        snaps = self.snapshots
        independent = snaps.driver == "overlay"  # overlay layers need no parent to unpack
        done: list[threading.Event] = [threading.Event() for _ in m.layers]

        def unpack(i: int) -> None:
            layer = m.layers[i]
            if not independent and i > 0:
                done[i - 1].wait()
            try:
                snaps.ensure_layer(
                    chain[i], chain[i - 1] if i else None,
                    lambda: self.content.open(layer.digest),
                    cfg.diff_ids[i], f"{what}: layer {layer.digest[:19]}",
                )
            except PalletError:
                # A blob that verified but does not unpack is useless: drop it so the
                # next pull fetches it again instead of failing on the cached copy.
                self.content.delete(layer.digest)
                raise

        def work(i: int) -> None:
            try:
                if not snaps.exists(chain[i]):
                    download(m.layers[i])
                unpack(i)
            finally:
                done[i].set()

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, self.registry.concurrency)) as pool:
            futures = [pool.submit(work, i) for i in range(len(m.layers))]
            errors = [f.exception() for f in futures]
        for e in errors:
            if e is not None:
                raise e

    def unpack(self, ref_or_id: str) -> Image:
        """(Re)create the snapshots of an image already in the content store."""
        image = self.get(ref_or_id)
        man = self._read_manifest(image.manifest_digest)

        def present(layer: mf.Descriptor) -> None:
            if not self.content.has(layer.digest):
                raise NotFound(f"{ref_or_id}: layer {layer.digest} missing from the content store")

        self._download_and_unpack(man, image.config, ref_or_id, present)
        return image

    # -- push ----------------------------------------------------------------
    def push(self, ref: str, dest: str | None = None, progress: Progress | None = None) -> str:
        """Upload an image's blobs and manifest to `dest` (default: its own name)."""
        from concurrent.futures import ThreadPoolExecutor

        from pallet.image.registry import RegistryClient

        image = self.get(ref)
        target = parse_reference(dest or (image.names[0] if ref != image.names[0] and looks_like_id(ref) else ref))
        man_bytes = self.content.read(image.manifest_digest)
        what = target.familiar()
        # A blob already in another repo on the same registry can be mounted, not re-sent.
        from_repo = next((parse_reference(n).path for n in image.names
                          if parse_reference(n).domain == target.domain
                          and parse_reference(n).path != target.path), None)
        man = self._read_manifest(image.manifest_digest)
        with RegistryClient(target.api_host, self.registry) as client:
            blobs = [man.config, *man.layers]
            with ThreadPoolExecutor(max_workers=max(1, self.registry.concurrency)) as pool:
                futures = [pool.submit(client.upload_blob, target.path, b, self.content, what,
                                       from_repo, progress) for b in blobs]
                for f in futures:
                    f.result()
            client.put_manifest(target.path, target.tag or target.object, man_bytes,
                                image.manifest_media_type, what)
        self.event("push", what, what, image)
        return image.manifest_digest

    # -- rootfs --------------------------------------------------------------
    def mounts(self, ref_or_id: str, upper: str | None = None, work: str | None = None) -> list[Mount]:
        return self.snapshots.mounts(self._ready_chain(ref_or_id), upper, work)

    def _ready_chain(self, ref_or_id: str) -> list[str]:
        image = self.get(ref_or_id)
        if not all(self.snapshots.exists(c) for c in image.chain):
            self.unpack(image.manifest_digest if not image.names else image.names[0])
        return image.chain

    def ready_chain(self, ref_or_id: str) -> list[str]:
        """The image's layer chain ids, bottom first, every snapshot unpacked."""
        return self._ready_chain(ref_or_id)

    def prepare_rootfs(self, ref_or_id: str, container_dir: str | os.PathLike[str],
                       idmap: Idmap | None = None) -> Path:
        """Mount a writable rootfs for a container at `<container_dir>/rootfs` (through
        IDMAP's user namespace, for a user-namespaced container). The container's lease
        holds the image's snapshots and blobs until `release_rootfs(drop_lease=True)`."""
        image = self.container_image(ref_or_id, container_dir)
        if not all(self.snapshots.exists(c) for c in image.chain):
            self._ready_chain(ref_or_id)
        held = {"manifest": {"mediaType": image.manifest_media_type,
                             "digest": image.manifest_digest,
                             "size": self.content.size(image.manifest_digest)},
                "blobs": [image.manifest_digest, image.id, *(x.digest for x in image.layers)]}
        return self.snapshots.prepare_rootfs(image.chain, container_dir, idmap, held)

    def container_image(self, ref_or_id: str, container_dir: str | os.PathLike[str]) -> Image:
        """The image a container was made from: by REF_OR_ID while the store has it, else
        (removed with rmi -f) as the container's lease holds it."""
        try:
            return self.get(ref_or_id)
        except NotFound:
            lease = self.snapshots.lease(container_dir) or {}
            desc = (lease.get("image") or {}).get("manifest")
            if not desc:
                raise
            try:
                image = self._image(desc, [])
            except (PalletError, OSError):
                raise NotFound(ref_or_id) from None
            if image.id != ref_or_id:
                raise
            return image

    def prepare_view(self, chain: list[str], view_dir: str | os.PathLike[str],
                     idmap: Idmap | None = None) -> Path:
        """Mount the image of CHAIN (`ready_chain`) read-only at VIEW_DIR; leased, so
        its snapshots outlive the image's removal until `release_view` drops the lease."""
        return self.snapshots.prepare_view(chain, view_dir, idmap)

    def release_view(self, view_dir: str | os.PathLike[str], drop_lease: bool = True) -> None:
        self.snapshots.release_view(view_dir, drop_lease)

    def release_rootfs(self, container_dir: str | os.PathLike[str],
                       drop_lease: bool = True) -> None:
        self.snapshots.release_rootfs(container_dir, drop_lease)

    def unpacked_size(self, ref_or_id: str) -> int:
        """Bytes of the image's layers as unpacked in its snapshots (0 for a layer not
        unpacked): what a container's root holds besides its own writes."""
        import json

        chain = self.get(ref_or_id).chain
        if self.snapshots.driver != "overlay":
            chain = chain[-1:]  # copied snapshots each hold the whole tree
        total = 0
        for c in chain:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                total += int(json.loads((self.snapshots.dir(c) / "meta.json").read_text())
                             .get("size", 0))
        return total

    # -- archives and layouts ---------------------------------------------
    def import_layout(self, layout_dir: str | os.PathLike[str], name: str | None = None,
                      platform: str | None = None) -> list[Image]:
        from pallet.image import archive

        return archive.import_layout(self, Path(layout_dir), name, platform)

    def load(self, tar_path: str | os.PathLike[str]) -> list[Image]:
        from pallet.image import archive

        images = archive.load(self, Path(tar_path))
        for image in images:
            self.event("load", image.id, image.id, image)
        return images

    def save(self, refs: list[str], tar_path: str | os.PathLike[str],
             format: str = "docker-archive") -> None:
        from pallet.image import archive

        archive.save(self, refs, Path(tar_path), format)
        for ref in refs:
            image = self.get(ref)
            self.event("save", image.id, image.id, image)

    def register(self, name: str | None, manifest_digest: str,
                 annotations: dict[str, str] | None = None) -> Image:
        """Name a manifest already in the content store (used by import/load); its index
        entry carries ANNOTATIONS too (a build step's cache key)."""
        m = self._read_manifest(manifest_digest)
        cfg = mf.parse_config(self.content.read(m.config.digest))
        self._check_layers(m, cfg, name or manifest_digest)
        desc = mf.Descriptor(m.media_type, manifest_digest, self.content.size(manifest_digest),
                             platform=cfg.platform).to_json()
        desc["annotations"] = {**(annotations or {}), REPO_DIGEST_ANNOTATION: manifest_digest}
        self._set_name(name, desc)
        return self.get(name or manifest_digest)


def _config() -> Any:
    from pallet.config import load_config

    return load_config()


def _name(entry: dict[str, Any]) -> str:
    return (entry.get("annotations") or {}).get(NAME_ANNOTATION, "")


def _repo_digest(entry: dict[str, Any]) -> str:
    return (entry.get("annotations") or {}).get(REPO_DIGEST_ANNOTATION) or entry["digest"]


def prepare_rootfs(image_ref_or_id: str, container_dir: str | os.PathLike[str],
                   root: str | os.PathLike[str] | None = None) -> Path:
    """Mount the image's rootfs (overlay over its snapshots) at `<container_dir>/rootfs`."""
    return ImageStore(root).prepare_rootfs(image_ref_or_id, container_dir)


def release_rootfs(container_dir: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> None:
    """Unmount what prepare_rootfs mounted and drop its lease; the dir itself stays."""
    ImageStore(root).release_rootfs(container_dir)
