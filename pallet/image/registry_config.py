"""Registry settings and the errors a registry client raises: what the config, the image
store and the CRI server need without importing the HTTP client (httpx, ssl: ~5 MB).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pallet.errors import FailedPrecondition, SystemFailure


class RegistryUnavailable(SystemFailure):
    """The registry could not be reached or kept failing (5xx, dropped connections)."""


class RegistryDenied(FailedPrecondition):
    """The registry refused our credentials (401/403)."""


class RegistryTLSError(FailedPrecondition):
    """The server's TLS certificate is not trusted: retrying cannot help, configuration can."""


@dataclass
class RegistryConfig:
    """Registry settings shared by CLI and daemon."""

    insecure: set[str] = field(default_factory=set)  # hosts allowed plain HTTP / skip-verify
    mirrors: dict[str, list[str]] = field(default_factory=dict)  # host -> mirror endpoints
    auths: dict[str, tuple[str, str]] | None = None  # None: read docker config.json lazily
    retries: int = 4
    backoff: float = 0.25
    timeout: float = 30.0
    concurrency: int = 4
    ca_files: dict[str, str] = field(default_factory=dict)  # host -> extra CA bundle (PEM)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (credentials included): what a daemon hands its pull worker."""
        return {"insecure": sorted(self.insecure), "mirrors": self.mirrors,
                "auths": None if self.auths is None else {h: list(c) for h, c in self.auths.items()},
                "retries": self.retries, "backoff": self.backoff, "timeout": self.timeout,
                "concurrency": self.concurrency, "ca_files": self.ca_files}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RegistryConfig:
        auths = data.get("auths")
        return cls(insecure=set(data.get("insecure") or ()),
                   mirrors={h: list(m) for h, m in (data.get("mirrors") or {}).items()},
                   auths=None if auths is None else {h: (c[0], c[1]) for h, c in auths.items()},
                   retries=int(data.get("retries", 4)), backoff=float(data.get("backoff", 0.25)),
                   timeout=float(data.get("timeout", 30.0)),
                   concurrency=int(data.get("concurrency", 4)),
                   ca_files=dict(data.get("ca_files") or {}))
