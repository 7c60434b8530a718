"""OCI and Docker schema2 manifests, indexes/manifest lists and image configs.

Pure parsing and platform selection; Docker schema1 is refused with a message.
"""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass, field
from typing import Any

from pallet.errors import InvalidArgument, NotFound

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
# What we send in Accept: everything we can use, and nothing we refuse.
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

LAYER_COMPRESSION = {
    OCI_LAYER: "none",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_FOREIGN: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
}


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386"}


def normalize_platform(p: Platform) -> Platform:
    arch = _ARCH_ALIASES.get(p.architecture, p.architecture)
    variant = p.variant
    if arch == "arm64" and variant == "v8":
        variant = ""  # containerd treats arm64 and arm64/v8 as the same
    if arch == "arm" and not variant:
        variant = "v7"
    return Platform(p.os.lower(), arch, variant)


def host_platform() -> Platform:
    machine = _platform.machine()
    variant = "v7" if machine.startswith("armv7") else ""
    return normalize_platform(Platform("linux", machine, variant))


def parse_platform(text: str) -> Platform:
    """`linux/arm64`, `linux/arm/v7`, or just `arm64` (os defaults to linux)."""
    parts = text.strip().split("/")
    if len(parts) == 1 and parts[0]:
        parts = ["linux", parts[0]]
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise InvalidArgument(f"invalid platform {text!r}: want os/arch[/variant], e.g. linux/amd64")
    return normalize_platform(Platform(*parts))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Descriptor:
        try:
            plat = None
            if "platform" in d:
                p = d["platform"]
                plat = Platform(p.get("os", ""), p.get("architecture", ""), p.get("variant", ""))
            return cls(
                media_type=d.get("mediaType", ""),
                digest=d["digest"],
                size=int(d["size"]),
                platform=plat,
                annotations=dict(d.get("annotations") or {}),
                urls=tuple(d.get("urls") or ()),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidArgument(f"malformed descriptor {d!r}: {e}") from None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            p: dict[str, str] = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                p["variant"] = self.platform.variant
            out["platform"] = p
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


def _sniff_media_type(doc: dict[str, Any]) -> str:
    if doc.get("mediaType"):
        return str(doc["mediaType"])
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    return ""


def parse_manifest(data: bytes, media_type: str = "", what: str = "manifest") -> Manifest | Index:
    """Parse a manifest or index; `media_type` (e.g. Content-Type) may be empty."""
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what} is not a JSON object")
    mt = _sniff_media_type(doc)
    # Registries sometimes answer with a generic Content-Type; trust the document.
    if media_type and media_type not in ("application/json", "text/plain") and not mt:
        mt = media_type.split(";")[0].strip()
    if mt in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED) or doc.get("schemaVersion") == 1:
        raise InvalidArgument(
            f"{what} uses Docker image manifest schema 1, which pallet does not support; "
            "push the image again with a current docker/skopeo to get schema 2 or OCI"
        )
    if mt in INDEX_TYPES:
        return Index(mt, tuple(Descriptor.from_json(m) for m in doc.get("manifests") or ()))
    if mt in MANIFEST_TYPES:
        if "config" not in doc:
            raise InvalidArgument(f"{what} has no config descriptor")
        return Manifest(
            mt,
            Descriptor.from_json(doc["config"]),
            tuple(Descriptor.from_json(layer) for layer in doc.get("layers") or ()),
            dict(doc.get("annotations") or {}),
        )
    raise InvalidArgument(f"{what} has unsupported media type {mt or 'unknown'!r}")


def select_manifest(index: Index, want: Platform | None = None, what: str = "image") -> Descriptor:
    """Pick the manifest for `want` (default: the host), preferring an exact variant."""
    want = normalize_platform(want or host_platform())
    candidates: list[tuple[int, Descriptor]] = []
    for d in index.manifests:
        if d.media_type not in MANIFEST_TYPES and d.media_type:
            continue
        if d.platform is None:
            continue
        p = normalize_platform(d.platform)
        if p.os != want.os or p.architecture != want.architecture:
            continue
        if want.variant and p.variant and p.variant != want.variant:
            continue
        candidates.append((0 if p.variant == want.variant else 1, d))
    if not candidates:
        have = ", ".join(sorted({str(d.platform) for d in index.manifests if d.platform})) or "none"
        raise NotFound(f"{what} has no manifest for platform {want} (available: {have})")
    candidates.sort(key=lambda c: c[0])
    return candidates[0][1]


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config the engine and CLI use."""

    architecture: str = ""
    os: str = ""
    variant: str = ""
    created: str = ""
    author: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    diff_ids: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)


def parse_config(data: bytes, what: str = "image config") -> ImageConfig:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what} is not a JSON object")
    c = doc.get("config") or {}
    rootfs = doc.get("rootfs") or {}

    def strs(v: Any) -> tuple[str, ...] | None:
        return None if v is None else tuple(str(x) for x in v)

    return ImageConfig(
        architecture=doc.get("architecture", ""),
        os=doc.get("os", ""),
        variant=doc.get("variant", ""),
        created=doc.get("created", "") or "",
        author=doc.get("author", "") or "",
        env=strs(c.get("Env")) or (),
        entrypoint=strs(c.get("Entrypoint")),
        cmd=strs(c.get("Cmd")),
        working_dir=c.get("WorkingDir", "") or "",
        user=c.get("User", "") or "",
        exposed_ports=tuple(sorted((c.get("ExposedPorts") or {}).keys())),
        volumes=tuple(sorted((c.get("Volumes") or {}).keys())),
        labels=dict(c.get("Labels") or {}),
        stop_signal=c.get("StopSignal", "") or "",
        diff_ids=strs(rootfs.get("diff_ids")) or (),
        raw=doc,
    )


def manifest_json(m: Manifest) -> bytes:
    """Serialise a manifest canonically (used when pallet creates one, e.g. on load)."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": m.media_type,
        "config": m.config.to_json(),
        "layers": [layer.to_json() for layer in m.layers],
    }
    if m.annotations:
        doc["annotations"] = m.annotations
    return json.dumps(doc, separators=(",", ":")).encode()


def index_json(manifests: list[Descriptor], media_type: str = OCI_INDEX) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": media_type, "manifests": [m.to_json() for m in manifests]}
    return json.dumps(doc, separators=(",", ":")).encode()
