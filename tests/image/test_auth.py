"""Registry auth: challenge parsing, docker config.json, and the Bearer token dance.

The token flow runs against an httpx mock transport (a fake registry + token server).
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from pallet.image import auth
from pallet.image.registry import RegistryClient, RegistryConfig, RegistryDenied, is_loopback


def test_parse_bearer_challenge():
    c = auth.parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push"'
    )
    assert c.scheme == "bearer" and c.realm == "https://auth.example/token"
    assert c.params["scope"] == "repository:a/b:pull,push"
    assert auth.parse_challenge('Basic realm="x"').scheme == "basic"


def test_docker_config_auths(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
        "registry.example:5000": {"username": "u", "password": "p"},
    }}))
    auths = auth.load_auths([cfg])
    assert auth.credentials_for("docker.io", auths) == ("hub", "pw")
    assert auth.credentials_for("registry-1.docker.io", auths) == ("hub", "pw")
    assert auth.credentials_for("registry.example:5000", auths) == ("u", "p")
    assert auth.credentials_for("other", auths) is None


@pytest.mark.parametrize(("host", "loop"), [
    ("localhost:5000", True), ("127.0.0.5", True), ("[::1]:5000", True),
    ("registry.example", False), ("10.0.0.1:5000", False),
])
def test_loopback_detection(host, loop):
    assert is_loopback(host) is loop


def _fake_registry(tokens_issued: list[str], want_user: tuple[str, str] | None):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            if want_user and request.headers.get("authorization") != auth.basic_header(*want_user):
                return httpx.Response(401)
            tokens_issued.append(request.url.params["scope"])
            return httpx.Response(200, json={"token": f"tok-{len(tokens_issued)}", "expires_in": 300})
        if request.headers.get("authorization", "").startswith("Bearer tok-"):
            return httpx.Response(200, content=b"{}", headers={"content-type": "application/json"})
        return httpx.Response(401, headers={"www-authenticate":
            'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"'})
    return httpx.MockTransport(handler)


def _client(transport, auths):
    c = RegistryClient("registry.example", RegistryConfig(auths=auths, retries=0))
    c._http = httpx.Client(transport=transport)
    return c


def test_bearer_token_is_fetched_once_and_reused():
    issued: list[str] = []
    c = _client(_fake_registry(issued, None), {})
    for _ in range(3):
        c.request("GET", "/v2/a/b/manifests/x", "repository:a/b:pull", "a/b:x")
    assert issued == ["repository:a/b:pull"]


def test_bearer_token_uses_basic_credentials_and_reports_denial():
    issued: list[str] = []
    ok = _client(_fake_registry(issued, ("u", "p")), {"registry.example": ("u", "p")})
    ok.request("GET", "/v2/a/b/manifests/x", "repository:a/b:pull", "a/b:x")
    bad = _client(_fake_registry(issued, ("u", "p")), {"registry.example": ("u", "wrong")})
    with pytest.raises(RegistryDenied, match="access denied"):
        bad.request("GET", "/v2/a/b/manifests/x", "repository:a/b:pull", "a/b:x")


def test_5xx_is_retried_with_backoff_then_succeeds():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503 if len(calls) < 3 else 200, content=b"{}")

    c = RegistryClient("registry.example", RegistryConfig(auths={}, retries=3, backoff=0.001))
    c._http = httpx.Client(transport=httpx.MockTransport(handler))
    assert c.request("GET", "/v2/", "", "ping").status_code == 200
    assert len(calls) == 3
