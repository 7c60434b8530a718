"""Blob GETs redirected to another host, as registries on S3/GCS storage answer them.

Debian's docker-registry on filesystem storage never redirects, so a small proxy in front of it
stands in for a cloud storage backend: it answers each authenticated blob GET with a 307 to a
second port (the "storage" server) that serves the blob. The registry itself needs basic auth,
so the client has credentials to leak; like docker, pallet must not send them to the storage
host, and must still verify every byte it gets from there.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pallet.image.content import DigestMismatch
from pallet.image.registry import RegistryConfig
from pallet.image.store import ImageStore
from tests.fixtures.registry import (
    HTTPProxy,
    ProxyRequest,
    Registry,
    htpasswd_auth_yaml,
    start_registry,
)
from tests.image.conftest import needs_root

pytestmark = [pytest.mark.root, needs_root]

BLOB = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
CREDS = ("bob", "builder")


@pytest.fixture(scope="module")
def auth_registry(layouts) -> Iterator[Registry]:
    secrets = Path(tempfile.mkdtemp(prefix="pallet-htpasswd-"))
    try:
        reg = start_registry(htpasswd_auth_yaml(secrets, *CREDS))
        try:
            import subprocess

            subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds",
                            ":".join(CREDS), f"oci:{layouts['multilayer']}:latest",
                            f"docker://{reg.host}/bob/multi:1"], check=True, capture_output=True)
            yield reg
        finally:
            reg.stop()
    finally:
        shutil.rmtree(secrets, ignore_errors=True)


class CloudStorage:
    """The stand-in: storage (serves blobs, optionally corrupted) and the redirecting proxy."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.tamper = False
        self.storage = HTTPProxy(None, self._serve)
        self.proxy = HTTPProxy(registry.host, self._redirect)

    def _redirect(self, req: ProxyRequest) -> bool:
        m = BLOB.match(req.path)
        if req.method != "GET" or not m or "authorization" not in req.headers:
            return False  # manifests, HEADs and the 401 challenge: the registry answers
        # A presigned-URL lookalike: the signature is in the query, credentials are not needed.
        url = f"http://{self.storage.host}/bucket/{m['repo']}/{m['digest']}?X-Amz-Signature=test"
        req.reply(307, headers={"Location": url})
        return True

    def _serve(self, req: ProxyRequest) -> bool:
        repo, _, digest = req.path.split("?")[0].removeprefix("/bucket/").rpartition("/")
        resp = httpx.get(f"{self.registry.url}/v2/{repo}/blobs/{digest}", auth=CREDS, follow_redirects=True)
        body = bytearray(resp.content)
        if self.tamper and body:
            body[len(body) // 2] ^= 0xFF  # same size, wrong bytes
        req.reply(resp.status_code, bytes(body), {"Content-Type": "application/octet-stream"})
        return True

    def stop(self) -> None:
        self.proxy.stop()
        self.storage.stop()


@pytest.fixture
def cloud(auth_registry) -> Iterator[CloudStorage]:
    c = CloudStorage(auth_registry)
    yield c
    c.stop()


def _store(root: Path, host: str) -> ImageStore:
    return ImageStore(root, RegistryConfig(auths={host: CREDS}, retries=1, backoff=0.01))


def test_blobs_come_from_the_redirect_target_without_the_registry_credentials(cloud, tmp_path):
    ref = f"{cloud.proxy.host}/bob/multi:1"
    image = _store(tmp_path / "root", cloud.proxy.host).pull(ref)
    assert len(image.layers) == 4
    fetched = [path for _, path, _ in cloud.storage.requests]
    assert len(fetched) == 5  # config + 4 layers, each from storage
    redirected = [h for m, p, h in cloud.proxy.requests if m == "GET" and BLOB.match(p) and "authorization" in h]
    assert len(redirected) == 5 and all(h["authorization"].startswith("Basic ") for h in redirected)
    # docker's behaviour: Authorization is dropped when a redirect leaves the registry's origin.
    assert [h for _, _, h in cloud.storage.requests if "authorization" in h] == []


def test_blobs_from_the_redirect_target_are_still_verified(cloud, tmp_path):
    store = _store(tmp_path / "root", cloud.proxy.host)
    cloud.tamper = True
    with pytest.raises(DigestMismatch, match="bob/multi:1") as e:
        store.pull(f"{cloud.proxy.host}/bob/multi:1")
    assert "\n" not in str(e.value)
    assert store.list() == [] and store.content.all_blobs() == []
    cloud.tamper = False
    assert len(store.pull(f"{cloud.proxy.host}/bob/multi:1").layers) == 4
