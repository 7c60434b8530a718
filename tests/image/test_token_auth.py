"""Bearer-token auth end to end: Debian's docker-registry with `auth: token`, trusting a JWT
issuer written in the tests (tests/fixtures/registry.TokenServer) — pull, push, reuse, denial, login.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pallet.cli import main
from pallet.image.registry import RegistryConfig, RegistryDenied
from pallet.image.store import ImageStore
from tests.fixtures.registry import Registry, TokenServer, start_registry
from tests.image.conftest import needs_root

pytestmark = [pytest.mark.root, needs_root]

USERS = {"alice": "wonderland"}


def grants(user: str | None, repo: str) -> set[str]:
    """public/* is readable by anyone; everything is readable and writable by alice."""
    if user == "alice":
        return {"pull", "push"}
    return {"pull"} if repo.startswith("public/") else set()


@pytest.fixture(scope="module")
def token_registry():
    tokens = TokenServer(USERS, grants)
    try:
        reg = start_registry(tokens.auth_yaml())
    except BaseException:
        tokens.stop()
        raise
    yield reg, tokens
    reg.stop()
    tokens.stop()


def _store(root: Path, auths: dict[str, tuple[str, str]]) -> ImageStore:
    return ImageStore(root, RegistryConfig(auths=auths, retries=1, backoff=0.01))


@pytest.fixture(scope="module")
def seeded(token_registry, layouts, tmp_path_factory) -> Registry:
    """alice pushes the multi-layer image to private/multi:1 and (mounting blobs) public/multi:1."""
    reg, _ = token_registry
    s = _store(tmp_path_factory.mktemp("seed"), {reg.host: ("alice", "wonderland")})
    s.import_layout(layouts["multilayer"], name=f"{reg.host}/private/multi:1")
    s.push(f"{reg.host}/private/multi:1")
    s.tag(f"{reg.host}/private/multi:1", f"{reg.host}/public/multi:1")
    s.push(f"{reg.host}/public/multi:1")
    return reg


def test_pull_with_credentials_asks_for_one_token_and_reuses_it(seeded, token_registry, tmp_path):
    _, tokens = token_registry
    tokens.requests.clear()
    image = _store(tmp_path, {seeded.host: ("alice", "wonderland")}).pull(f"{seeded.host}/private/multi:1")
    assert len(image.layers) == 4
    # manifest, config and four layers: all under the one token for this scope.
    assert tokens.requests == [("alice", "repository:private/multi:pull")]


def test_anonymous_pull_of_a_public_repo_gets_an_anonymous_token(seeded, token_registry, tmp_path):
    _, tokens = token_registry
    tokens.requests.clear()
    assert _store(tmp_path, {}).pull(f"{seeded.host}/public/multi:1").names
    assert tokens.requests == [(None, "repository:public/multi:pull")]


def test_anonymous_pull_of_a_private_repo_is_denied_and_stores_nothing(seeded, tmp_path):
    store = _store(tmp_path, {})
    with pytest.raises(RegistryDenied, match=r"private/multi:1.*access denied") as e:
        store.pull(f"{seeded.host}/private/multi:1")
    assert "\n" not in str(e.value)
    assert store.list() == [] and store.content.all_blobs() == []


def test_wrong_password_is_refused_by_the_token_server(seeded, tmp_path):
    with pytest.raises(RegistryDenied, match="access denied"):
        _store(tmp_path, {seeded.host: ("alice", "wrong")}).pull(f"{seeded.host}/private/multi:1")


def test_push_is_denied_to_a_user_with_pull_only(seeded, tmp_path, layouts):
    store = _store(tmp_path, {})
    store.import_layout(layouts["busybox-oci"], name=f"{seeded.host}/public/busybox:1")
    with pytest.raises(RegistryDenied):
        store.push(f"{seeded.host}/public/busybox:1")


def test_cli_login_checks_against_the_token_server(seeded, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    (tmp_path / "pallet.toml").write_text("")
    monkeypatch.setenv("PALLET_CONFIG", str(tmp_path / "pallet.toml"))
    root = ["--root", str(tmp_path / "root")]
    monkeypatch.setattr("sys.stdin", io.StringIO("nope\n"))
    assert main(["login", "-u", "alice", "--password-stdin", seeded.host]) == 125
    assert "unauthorized" in capsys.readouterr().err
    assert not (tmp_path / "docker" / "config.json").exists()
    monkeypatch.setattr("sys.stdin", io.StringIO("wonderland\n"))
    assert main(["login", "-u", "alice", "--password-stdin", seeded.host]) == 0
    assert "Login Succeeded" in capsys.readouterr().out
    assert main(root + ["pull", "-q", f"{seeded.host}/private/multi:1"]) == 0
