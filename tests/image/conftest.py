"""Fixtures for the image layer: a real loopback registry, built test images, a temp store.

Session-scoped where building is costly (registry, layouts); stores are per test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pallet.image.registry import RegistryConfig
from pallet.image.store import ImageStore
from tests.fixtures import images
from tests.fixtures.registry import Registry, start_registry

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, overlay)")


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    reg = start_registry()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    return {
        "busybox-oci": images.busybox_layout(base / "busybox-oci"),
        "busybox-docker": images.busybox_layout(base / "busybox-docker", media="docker"),
        "multilayer": images.multilayer_layout(base / "multilayer"),
        "zstd": images.zstd_layout(base / "zstd"),
        "two-platform": images.two_platform_layout(base / "two-platform"),
        "corrupt-gzip": images.corrupt_gzip_layout(base / "corrupt-gzip"),
    }


@pytest.fixture(scope="session")
def pushed(registry: Registry, layouts: dict[str, Path]) -> dict[str, str]:
    """The test images in the registry (pushed by skopeo); name -> pullable reference."""
    refs = {}
    for layout, repo, fmt, name in [
        ("busybox-oci", "library/busybox:latest", None, "busybox-oci"),
        # skopeo reads only OCI-typed layout entries, so it converts to schema2 on push.
        ("busybox-oci", "docker/busybox:latest", "v2s2", "busybox-docker"),
        ("multilayer", "test/multilayer:1", None, "multilayer"),
        ("zstd", "test/zstd:1", None, "zstd"),
        ("corrupt-gzip", "test/corrupt:1", None, "corrupt-gzip"),
    ]:
        registry.push_layout(layouts[layout], "latest", repo, format=fmt)
        refs[name] = f"{registry.host}/{repo}"
    registry.push_index(layouts["two-platform"], "latest", "test/multiarch:1")
    refs["two-platform"] = f"{registry.host}/test/multiarch:1"
    return refs


def make_store(root: Path, driver: str | None = None) -> ImageStore:
    # auths={} keeps the developer's ~/.docker/config.json out of the tests.
    return ImageStore(root, RegistryConfig(auths={}, retries=1, backoff=0.01), driver=driver)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return make_store(tmp_path / "root")
