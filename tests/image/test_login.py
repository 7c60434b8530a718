"""Registries as configured: `pallet login/logout` against a real htpasswd registry, and the
mirrors, insecure hosts and credentials of pallet's config file used by the CLI and ImageStore.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from pallet.cli import main
from pallet.image import auth
from pallet.image.registry import RegistryConfig, RegistryUnavailable
from pallet.image.store import ImageStore
from tests.fixtures.registry import Registry, htpasswd_auth_yaml, non_loopback_ipv4, start_registry
from tests.image.conftest import needs_root

pytestmark = [pytest.mark.root, needs_root]


@pytest.fixture(scope="module")
def basic_registry(layouts):
    """A registry with htpasswd auth (bcrypt from Debian's htpasswd) holding bob/busybox:1."""
    secrets = Path(tempfile.mkdtemp(prefix="pallet-htpasswd-"))
    try:
        reg = start_registry(htpasswd_auth_yaml(secrets, "bob", "builder"))
    except BaseException:
        shutil.rmtree(secrets, ignore_errors=True)
        raise
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", "bob:builder",
                    f"oci:{layouts['busybox-oci']}:latest", f"docker://{reg.host}/bob/busybox:1"],
                   check=True, capture_output=True)
    yield reg
    reg.stop()
    shutil.rmtree(secrets, ignore_errors=True)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A user's environment: $DOCKER_CONFIG and $PALLET_CONFIG in tmp; returns a toml writer."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    toml = tmp_path / "pallet.toml"
    toml.write_text("")
    monkeypatch.setenv("PALLET_CONFIG", str(toml))
    return toml


def _login(monkeypatch, host: str, password: str, user: str = "bob") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    return main(["login", "-u", user, "--password-stdin", host])


def test_login_writes_a_docker_config_that_pull_uses_and_logout_removes(
        basic_registry, env, tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "docker" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"psFormat": "table {{.ID}}", "auths": {"other:5000": {"auth": "eDp5"}}}))
    assert _login(monkeypatch, basic_registry.host, "builder") == 0
    assert capsys.readouterr().out.strip() == "Login Succeeded"
    doc = json.loads(cfg.read_text())
    assert doc["auths"][basic_registry.host]["auth"] == base64.b64encode(b"bob:builder").decode()
    assert doc["psFormat"] == "table {{.ID}}" and "other:5000" in doc["auths"]  # kept as it was
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    ref = f"{basic_registry.host}/bob/busybox:1"
    assert main(["--root", str(tmp_path / "r1"), "pull", "-q", ref]) == 0
    assert main(["logout", basic_registry.host]) == 0
    assert f"Removing login credentials for {basic_registry.host}" in capsys.readouterr().out
    assert basic_registry.host not in json.loads(cfg.read_text())["auths"]
    assert main(["--root", str(tmp_path / "r2"), "pull", "-q", ref]) == 1
    assert "access denied" in capsys.readouterr().err
    assert main(["logout", basic_registry.host]) == 0
    assert "Not logged in" in capsys.readouterr().out


def test_login_with_a_wrong_password_fails_and_writes_nothing(basic_registry, env, tmp_path,
                                                               monkeypatch, capsys):
    assert _login(monkeypatch, basic_registry.host, "wrong") == 125
    err = capsys.readouterr().err
    assert "unauthorized" in err and basic_registry.host in err and err.count("\n") == 1
    assert not (tmp_path / "docker" / "config.json").exists()


def test_login_to_a_registry_without_auth_succeeds(registry, env, monkeypatch, capsys):
    assert _login(monkeypatch, registry.host, "anything") == 0


def test_login_writes_to_the_configured_auth_file(basic_registry, env, tmp_path, monkeypatch):
    env.write_text(f'[registry]\nauth_file = "{tmp_path}/pallet-auth.json"\n')
    assert _login(monkeypatch, basic_registry.host, "builder") == 0
    assert basic_registry.host in json.loads((tmp_path / "pallet-auth.json").read_text())["auths"]
    assert not (tmp_path / "docker" / "config.json").exists()
    assert main(["--root", str(tmp_path / "r"), "pull", "-q", f"{basic_registry.host}/bob/busybox:1"]) == 0


def test_credentials_from_the_config_file_need_no_login(basic_registry, env, tmp_path):
    env.write_text(f'[registry.auths."{basic_registry.host}"]\nusername = "bob"\npassword = "builder"\n')
    assert main(["--root", str(tmp_path / "r"), "pull", "-q", f"{basic_registry.host}/bob/busybox:1"]) == 0


def test_docker_io_is_pulled_from_the_configured_mirror(registry, pushed, env, tmp_path, capsys):
    # No internet here: `busybox` means docker.io/library/busybox, served by the mirror.
    env.write_text(f'[registry.mirrors]\n"docker.io" = ["http://{registry.host}"]\n')
    root = ["--root", str(tmp_path / "r")]
    assert main(root + ["pull", "busybox"]) == 0
    assert capsys.readouterr().out.strip().endswith("docker.io/library/busybox:latest")
    assert main(root + ["images", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["Repository"] == "busybox"


@pytest.fixture(scope="module")
def remote_registry(layouts):
    """A plain-HTTP registry on this host's non-loopback address: not trusted by default."""
    addr = non_loopback_ipv4()
    if addr is None:
        pytest.skip("no non-loopback IPv4 address on this host")
    reg = start_registry(addr=addr)
    reg.push_layout(layouts["busybox-oci"], "latest", "library/busybox:1")
    yield reg
    reg.stop()


def test_plain_http_needs_the_insecure_setting(remote_registry: Registry, env, tmp_path):
    ref = f"{remote_registry.host}/library/busybox:1"
    fast = 'retries = 0\ntimeout = 5.0\n'
    env.write_text("[registry]\n" + fast)
    with pytest.raises(RegistryUnavailable, match="library/busybox:1.*HTTP response to an HTTPS client"):
        ImageStore(tmp_path / "r1").pull(ref)
    env.write_text(f'[registry]\n{fast}insecure = ["{remote_registry.host}"]\n')
    assert ImageStore(tmp_path / "r2").pull(ref).names == [ref]


def test_credentials_file_keeps_one_spelling_per_registry(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"index.docker.io": {"auth": "b2xkOm9sZA=="}}}))
    auth.store_credentials(path, "docker.io", "new", "pw")
    assert list(json.loads(path.read_text())["auths"]) == ["https://index.docker.io/v1/"]
    assert auth.load_auths([path])["docker.io"] == ("new", "pw")
    assert auth.remove_credentials(path, "docker.io") and json.loads(path.read_text())["auths"] == {}


def test_a_plain_http_mirror_counts_as_insecure(tmp_path):
    store = ImageStore(tmp_path, RegistryConfig(auths={}, mirrors={"docker.io": ["http://mirror.example:5000"]}))
    from pallet.image.reference import parse_reference

    (host, cfg), (hub, _) = store._endpoints(parse_reference("busybox"))
    assert host == "mirror.example:5000" and "mirror.example:5000" in cfg.insecure
    assert hub == "registry-1.docker.io"
