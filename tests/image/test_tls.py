"""HTTPS registries: Debian's docker-registry serving TLS with a certificate signed by a test CA
(made with openssl), trusted through the system store (SSL_CERT_FILE in pallet's environment,
which OpenSSL's default paths honour; the host's real trust store is never touched) or through
`registry.ca_file`, and refused in one line when not trusted.

Loopback and `insecure` hosts follow docker: HTTPS without verification, then plain HTTP.
Every other host gets verified HTTPS only, so those tests use this host's non-loopback address.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.registry import (
    Registry,
    TLSMaterial,
    make_test_ca,
    non_loopback_ipv4,
    start_registry,
)
from tests.image.conftest import needs_root

pytestmark = [pytest.mark.root, needs_root]

PALLET = os.path.join(os.path.dirname(sys.executable), "pallet")
REPO = "tls/busybox:1"


@pytest.fixture(scope="module")
def tls_registry(layouts, tmp_path_factory) -> Iterator[tuple[Registry, TLSMaterial, str]]:
    """One HTTPS registry on every address of the host, holding busybox; yields (registry,
    CA material, the non-loopback address to reach it at)."""
    addr = non_loopback_ipv4()
    if addr is None:
        pytest.skip("no non-loopback IPv4 address on this host")
    ca = make_test_ca(tmp_path_factory.mktemp("ca"), ips=[addr, "127.0.0.1"])
    reg = start_registry(addr="0.0.0.0", tls=(ca.cert, ca.key))
    try:
        subprocess.run(["skopeo", "copy", "--quiet",
                        "--dest-tls-verify=false", f"oci:{layouts['busybox-oci']}:latest",
                        f"docker://127.0.0.1:{reg.port}/{REPO}"], check=True, capture_output=True)
        yield reg, ca, addr
    finally:
        reg.stop()


def _pallet(tmp_path: Path, ref: str, toml: str = "", **env: str) -> subprocess.CompletedProcess:
    """`pallet pull` as a user runs it, with only the trust settings given here."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pallet.toml").write_text("[registry]\nretries = 0\ntimeout = 10.0\n" + toml)
    clean = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    clean |= {"PALLET_CONFIG": str(tmp_path / "pallet.toml"), "DOCKER_CONFIG": str(tmp_path / "docker")}
    return subprocess.run([PALLET, "--root", str(tmp_path / "root"), "pull", "-q", ref],
                          capture_output=True, text=True, timeout=60, env=clean | env)


def test_ca_in_the_system_store_via_ssl_cert_file_is_trusted(tls_registry, tmp_path):
    reg, ca, addr = tls_registry
    ref = f"{addr}:{reg.port}/{REPO}"
    out = _pallet(tmp_path, ref, SSL_CERT_FILE=str(ca.ca_cert))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ref


def test_ca_given_by_registry_ca_file_is_trusted(tls_registry, tmp_path):
    reg, ca, addr = tls_registry
    host = f"{addr}:{reg.port}"
    out = _pallet(tmp_path, f"{host}/{REPO}", f'[registry.ca_file]\n"{host}" = "{ca.ca_cert}"\n')
    assert out.returncode == 0, out.stderr
    # The CA file adds to the system CAs for that host only: another host does not get it.
    other = _pallet(tmp_path / "o", f"{host}/{REPO}", f'[registry.ca_file]\n"elsewhere:5000" = "{ca.ca_cert}"\n')
    assert other.returncode == 1


def test_untrusted_certificate_fails_in_one_line_naming_the_registry(tls_registry, tmp_path):
    reg, _, addr = tls_registry
    host = f"{addr}:{reg.port}"
    out = _pallet(tmp_path, f"{host}/{REPO}")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("Error: ")
    assert host in out.stderr and "certificate verify failed" in out.stderr
    assert "registry.ca_file" in out.stderr
    # Nothing was stored, and no plain-HTTP fallback was attempted for a non-insecure host.
    assert not list((tmp_path / "root" / "content" / "blobs" / "sha256").iterdir())


def test_a_missing_ca_file_is_a_config_error(tls_registry, tmp_path):
    reg, _, addr = tls_registry
    host = f"{addr}:{reg.port}"
    out = _pallet(tmp_path, f"{host}/{REPO}", f'[registry.ca_file]\n"{host}" = "{tmp_path}/nope.pem"\n')
    assert out.returncode == 1 and "registry.ca_file" in out.stderr and "nope.pem" in out.stderr


@pytest.mark.parametrize("how", ["loopback", "insecure"])
def test_loopback_and_insecure_hosts_use_https_without_verification_like_docker(tls_registry, tmp_path, how):
    # docker treats 127.0.0.0/8 (and hosts in insecure-registries) as insecure: HTTPS with the
    # certificate unchecked, then plain HTTP. This registry speaks HTTPS only, so a success
    # means the unverified HTTPS attempt was used.
    reg, _, addr = tls_registry
    host = f"127.0.0.1:{reg.port}" if how == "loopback" else f"{addr}:{reg.port}"
    toml = f'insecure = ["{host}"]\n' if how == "insecure" else ""
    out = _pallet(tmp_path, f"{host}/{REPO}", toml)
    assert out.returncode == 0, out.stderr
