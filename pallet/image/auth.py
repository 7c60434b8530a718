"""Registry credentials and tokens: docker-style config.json, WWW-Authenticate, token cache.

Pure parsing plus small file reads; the HTTP token fetch lives in registry.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pallet.errors import InvalidArgument

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" or "basic", lowercased
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenge(header: str) -> Challenge | None:
    """Parse one WWW-Authenticate header value (`Bearer realm="…",service="…",scope="…"`)."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if not m or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value or "")
        pos = m.end()
    return Challenge(scheme.lower(), params)


def docker_config_paths() -> list[Path]:
    """Where docker, podman and pallet look for registry credentials, in order."""
    paths = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("DOCKER_CONFIG"):
        paths.append(Path(os.environ["DOCKER_CONFIG"]) / "config.json")
    paths.append(Path.home() / ".docker" / "config.json")
    if os.environ.get("XDG_RUNTIME_DIR"):
        paths.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    return paths


def _host_of_key(key: str) -> str:
    key = re.sub(r"^https?://", "", key)
    return key.split("/", 1)[0]


def load_auths(paths: list[Path] | None = None) -> dict[str, tuple[str, str]]:
    """Read `auths` from config files into {host: (user, secret)}; first file wins per host."""
    out: dict[str, tuple[str, str]] = {}
    for path in paths if paths is not None else docker_config_paths():
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, json.JSONDecodeError) as e:
            raise InvalidArgument(f"cannot read registry credentials from {path}: {e}") from None
        for key, entry in (doc.get("auths") or {}).items():
            creds = _decode_entry(entry or {})
            host = _host_of_key(key)
            if host in DOCKER_HUB_KEYS:
                host = "docker.io"
            if creds and host not in out:
                out[host] = creds
    return out


def _decode_entry(entry: dict[str, str]) -> tuple[str, str] | None:
    if entry.get("identitytoken"):
        return ("<token>", entry["identitytoken"])
    if entry.get("auth"):
        try:
            user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return (user, secret)
    if entry.get("username"):
        return (entry["username"], entry.get("password", ""))
    return None


def credentials_for(domain: str, auths: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    if domain in DOCKER_HUB_KEYS:
        domain = "docker.io"
    return auths.get(domain)


def basic_header(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def scope_for(repo: str, actions: str) -> str:
    return f"repository:{repo}:{actions}"


class TokenCache:
    """Bearer tokens keyed by (realm, service, scope), reused until shortly before expiry."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, realm: str, service: str, scope: str) -> str | None:
        with self._lock:
            hit = self._tokens.get((realm, service, scope))
        if hit and hit[1] > time.monotonic():
            return hit[0]
        return None

    def put(self, realm: str, service: str, scope: str, token: str, expires_in: float) -> None:
        # Spec: tokens without expires_in last 60 s; renew a little early.
        ttl = max(expires_in or 60, 10) - 5
        with self._lock:
            self._tokens[(realm, service, scope)] = (token, time.monotonic() + ttl)


# -- pallet login / logout: the credentials file -----------------------------


def login_config_path(auth_file: str = "") -> Path:
    """Where `pallet login` writes: the configured file, else where docker/podman would."""
    if auth_file:
        return Path(auth_file)
    if os.environ.get("REGISTRY_AUTH_FILE"):
        return Path(os.environ["REGISTRY_AUTH_FILE"])
    if os.environ.get("DOCKER_CONFIG"):
        return Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    return Path.home() / ".docker" / "config.json"


def auth_key(domain: str) -> str:
    """The `auths` key docker uses for a registry (Docker Hub keeps its historic URL)."""
    return DOCKER_HUB_KEYS[0] if domain in DOCKER_HUB_KEYS else domain


def _spellings(domain: str) -> set[str]:
    """Hosts an `auths` key may name for the same registry."""
    return {_host_of_key(k) for k in DOCKER_HUB_KEYS} if domain in DOCKER_HUB_KEYS else {domain}


def _read_config(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidArgument(f"cannot read registry credentials from {path}: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{path} is not a JSON object")
    return doc


def _write_config(path: Path, doc: dict) -> None:
    from pallet.image.content import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Secrets: 0600 like docker, and written atomically so a crash never truncates other logins.
    atomic_write(path, (json.dumps(doc, indent="\t") + "\n").encode(), mode=0o600)


def store_credentials(path: Path, domain: str, user: str, secret: str) -> None:
    """Record a login in a docker-style config.json, keeping every other key in it."""
    doc = _read_config(path)
    auths = doc.setdefault("auths", {})
    key = auth_key(domain)
    # Drop other spellings of the same registry so the new entry is the one read.
    for k in list(auths):
        if k != key and _host_of_key(k) in _spellings(domain):
            del auths[k]
    auths[key] = {"auth": base64.b64encode(f"{user}:{secret}".encode()).decode()}
    _write_config(path, doc)


def remove_credentials(path: Path, domain: str) -> bool:
    """Forget a login; False if there was none for `domain` in `path`."""
    doc = _read_config(path)
    auths = doc.get("auths") or {}
    gone = [k for k in auths if _host_of_key(k) in _spellings(domain)]
    if not gone:
        return False
    for k in gone:
        del auths[k]
    _write_config(path, doc)
    return True
