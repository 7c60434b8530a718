"""Image references: parse, validate and normalise `name[:tag][@digest]`.

Pure functions only; follows the grammar of distribution/reference, including
docker.io normalisation (`busybox` -> `docker.io/library/busybox:latest`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pallet.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
# Docker Hub's API lives on a different host than the name users type.
DOCKER_HUB_API_HOST = "registry-1.docker.io"
DEFAULT_TAG = "latest"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_DIGEST_RE = re.compile(rf"^{_DIGEST}$")
_SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """A fully normalised image reference."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """`domain/path`, the repository's full name."""
        return f"{self.domain}/{self.path}"

    @property
    def api_host(self) -> str:
        """The host to talk the distribution API to."""
        return DOCKER_HUB_API_HOST if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def object(self) -> str:
        """What to ask the registry's manifests endpoint for: digest wins over tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        return replace(self, tag=None, digest=digest)

    def familiar(self) -> str:
        """The short form docker prints: `busybox:latest`, `me/app:1`, `host:5000/x:y`."""
        name = self.name
        if self.domain == DEFAULT_DOMAIN:
            name = self.path.removeprefix("library/")
        return name + self._suffix()

    def _suffix(self) -> str:
        out = f":{self.tag}" if self.tag else ""
        return out + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def _split_domain(name: str) -> tuple[str, str]:
    # Like docker: the first component is a registry only if it looks like a host.
    first, sep, rest = name.partition("/")
    if not sep or (
        "." not in first and ":" not in first and first != "localhost" and first.lower() == first
    ):
        return DEFAULT_DOMAIN, name
    if first == "index.docker.io":
        first = DEFAULT_DOMAIN
    return first, rest


def parse_reference(text: str, default_tag: bool = True) -> Reference:
    """Parse and normalise `text`; raise InvalidArgument naming what is wrong."""
    if not text or text != text.strip():
        raise InvalidArgument(f"invalid reference format: {text!r} (empty or has spaces)")
    if _HEX64_RE.match(text):
        raise InvalidArgument(
            f"invalid reference format: {text!r} is a 64-hex id, not a repository name"
        )
    remainder, digest = text, None
    if "@" in text:
        remainder, _, digest = text.partition("@")
        if not _DIGEST_RE.match(digest):
            raise InvalidArgument(f"invalid reference format: bad digest {digest!r} in {text!r}")
        if digest.startswith("sha256:") and not _SHA256_RE.match(digest):
            raise InvalidArgument(
                f"invalid reference format: sha256 digest must be 64 lowercase hex in {text!r}"
            )
    tag = None
    # A colon after the last slash is a tag; one before it belongs to host:port.
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidArgument(f"invalid reference format: bad tag {tag!r} in {text!r}")
    domain, path = _split_domain(remainder)
    if not _DOMAIN_RE.match(domain):
        raise InvalidArgument(f"invalid reference format: bad registry host {domain!r} in {text!r}")
    if not path or not _PATH_RE.match(path):
        what = "repository name must be lowercase" if path.lower() != path else "bad repository name"
        raise InvalidArgument(f"invalid reference format: {what} {path!r} in {text!r}")
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    if len(f"{domain}/{path}") > _MAX_NAME:
        raise InvalidArgument(f"invalid reference format: name longer than {_MAX_NAME} in {text!r}")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def is_digest(text: str) -> bool:
    """True for a full `sha256:<64 hex>` digest."""
    return bool(_SHA256_RE.match(text))


def looks_like_id(text: str) -> bool:
    """True for something the user probably meant as an image id (or a prefix of one)."""
    t = text.removeprefix("sha256:")
    return bool(re.fullmatch(r"[0-9a-f]{4,64}", t)) and (text.startswith("sha256:") or len(t) >= 12)
