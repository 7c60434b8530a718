"""Pull from and push to a real docker-registry on loopback; bad input fails cleanly.

Each story ends with the store consistent: the next pull works and nothing half-written shows.
"""

from __future__ import annotations

import threading

import pytest

from pallet.errors import InvalidArgument, NotFound, PalletError
from pallet.image.registry import RegistryUnavailable
from tests.fixtures.registry import free_port
from tests.image.conftest import make_store, needs_root

pytestmark = [pytest.mark.root, needs_root]


@pytest.mark.parametrize("flavour", ["busybox-oci", "busybox-docker"])
def test_pull_busybox_gives_a_named_image_with_its_config(store, pushed, flavour):
    image = store.pull(pushed[flavour])
    assert image.names == [pushed[flavour]]
    assert image.config.cmd == ("sh",)
    want = "docker.distribution.manifest.v2" if flavour == "busybox-docker" else "oci.image.manifest"
    assert want in image.manifest_media_type
    assert image.repo_digests and image.repo_digests[0].endswith(image.manifest_digest)
    assert len(image.chain) == 1 and store.snapshots.exists(image.chain[0])
    assert store.get(image.short_id).id == image.id
    assert [i.id for i in store.list()] == [image.id]


def test_pull_by_digest_and_by_tag_find_the_same_image(store, pushed):
    by_tag = store.pull(pushed["busybox-oci"])
    ref = pushed["busybox-oci"].rsplit(":", 1)[0] + "@" + by_tag.manifest_digest
    assert store.pull(ref).id == by_tag.id


def test_multilayer_and_zstd_images_unpack(store, pushed):
    assert len(store.pull(pushed["multilayer"]).layers) == 4
    assert store.pull(pushed["zstd"]).layers[1].media_type.endswith("zstd")


def test_platform_selection_from_an_index(store, pushed):
    host = store.pull(pushed["two-platform"])
    assert host.platform.architecture == "amd64"
    arm = make_store(store.root.parent / "arm").pull(pushed["two-platform"], platform="linux/arm64")
    assert arm.platform.architecture == "arm64"
    with pytest.raises(NotFound, match="linux/s390x"):
        store.pull(pushed["two-platform"], platform="linux/s390x")


def test_two_concurrent_pulls_of_one_image_both_succeed(tmp_path, pushed):
    results, errors = [], []

    def pull():
        try:
            results.append(make_store(tmp_path / "root").pull(pushed["multilayer"]).id)
        except Exception as e:  # collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=pull) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1 and len(results) == 3
    s = make_store(tmp_path / "root")
    assert len(s.list()) == 1 and len(s.content.read_index()["manifests"]) == 1


def test_push_to_a_new_repo_then_pull_it_elsewhere(store, pushed, registry, tmp_path):
    image = store.pull(pushed["multilayer"])
    store.tag(pushed["multilayer"], f"{registry.host}/pushed/copy:v2")
    assert store.push(f"{registry.host}/pushed/copy:v2") == image.manifest_digest
    again = make_store(tmp_path / "other").pull(f"{registry.host}/pushed/copy:v2")
    assert again.id == image.id


def test_unreachable_registry_is_one_line_naming_image(store):
    ref = f"127.0.0.1:{free_port()}/nothing/here:1"
    with pytest.raises(RegistryUnavailable) as e:
        store.pull(ref)
    assert "nothing/here:1" in str(e.value) and "\n" not in str(e.value)


def test_missing_tag_is_not_found(store, registry, pushed):
    with pytest.raises(NotFound, match="library/busybox:nope"):
        store.pull(f"{registry.host}/library/busybox:nope")


def test_missing_digest_is_not_found(store, registry, pushed):
    with pytest.raises(NotFound):
        store.pull(f"{registry.host}/library/busybox@sha256:{'0' * 64}")


def test_corrupt_gzip_fails_and_leaves_store_usable(store, pushed):
    with pytest.raises(InvalidArgument, match=r"test/corrupt:1.*corrupt") as e:
        store.pull(pushed["corrupt-gzip"])
    assert "\n" not in str(e.value)
    assert store.list() == []
    assert not any(p.name.startswith(".tmp-") for p in store.snapshots.root.iterdir())
    assert store.pull(pushed["busybox-oci"]).names


def test_rmi_and_prune_free_blobs_and_snapshots(store, pushed):
    image = store.pull(pushed["multilayer"])
    store.tag(pushed["multilayer"], "mine:1")
    with pytest.raises(PalletError, match="multiple repositories"):
        store.remove(image.short_id)
    assert store.remove("mine:1") == ["Untagged: mine:1"]
    out = store.remove(pushed["multilayer"])
    assert out[-1] == f"Deleted: {image.id}"
    assert store.content.all_blobs() == [] and store.snapshots.all() == set()
