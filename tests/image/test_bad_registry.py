"""What the registry (or the network) gets wrong, through a proxy in front of docker-registry:
a 403, a manifest that does not hash to its digest, a truncated blob. And what a pull must
coordinate: bounded layer concurrency, and `rmi`/prune while a pull holds its lease.

Each failure is one line naming the image and the cause, leaves nothing half-written, and the
next pull (straight from the registry) succeeds.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pallet.cli import main
from pallet.image.content import DigestMismatch
from pallet.image.registry import RegistryDenied
from tests.fixtures.registry import HTTPProxy, ProxyRequest, Registry
from tests.image.conftest import make_store, needs_root

pytestmark = [pytest.mark.root, needs_root]

BLOB = re.compile(r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$")
MANIFEST = re.compile(r"^/v2/.+/manifests/")


@pytest.fixture
def proxy(registry: Registry) -> Iterator[Callable[[Callable[[ProxyRequest], bool]], HTTPProxy]]:
    made: list[HTTPProxy] = []

    def make(hook: Callable[[ProxyRequest], bool]) -> HTTPProxy:
        made.append(HTTPProxy(registry.host, hook))
        return made[-1]

    yield make
    for p in made:
        p.stop()


def _path(ref: str) -> str:
    return ref.split("/", 1)[1]


def _assert_empty(store) -> None:
    assert store.list() == [] and store.content.all_blobs() == []
    assert list(store.content.ingest_dir.iterdir()) == []


def test_403_is_one_line_access_denied_and_stores_nothing(proxy, pushed, tmp_path, capsys, monkeypatch):
    # As Harbor answers a pull its project policy forbids.
    def deny(req: ProxyRequest) -> bool:
        if MANIFEST.match(req.path):
            body = {"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]}
            req.reply(403, json.dumps(body).encode(), {"Content-Type": "application/json"})
            return True
        return False

    p = proxy(deny)
    ref = f"{p.host}/{_path(pushed['busybox-oci'])}"
    (tmp_path / "pallet.toml").write_text("[registry]\nretries = 0\n")
    monkeypatch.setenv("PALLET_CONFIG", str(tmp_path / "pallet.toml"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    assert main(["--root", str(tmp_path / "root"), "pull", "-q", ref]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "library/busybox" in err and "access denied (403" in err
    assert "requested access to the resource is denied" in err
    store = make_store(tmp_path / "root")
    _assert_empty(store)
    with pytest.raises(RegistryDenied):
        store.pull(ref)


@pytest.mark.parametrize("by", ["digest", "tag"])
def test_a_manifest_that_does_not_match_its_digest_is_refused(proxy, pushed, tmp_path, by):
    good = make_store(tmp_path / "probe").pull(pushed["busybox-oci"]).manifest_digest

    def tamper(req: ProxyRequest) -> bool:
        if req.method == "GET" and MANIFEST.match(req.path):
            p.forward(req, lambda body: body.replace(b'"schemaVersion"', b'"schemaVersion" ', 1))
            return True
        return False

    p = proxy(tamper)
    repo = _path(pushed["busybox-oci"]).rsplit(":", 1)[0]
    ref = f"{p.host}/{repo}@{good}" if by == "digest" else f"{p.host}/{repo}:latest"
    store = make_store(tmp_path / "root")
    # By digest: the bytes must hash to it; by tag: to the registry's Docker-Content-Digest.
    with pytest.raises(DigestMismatch, match="library/busybox.*(hashing to|disagrees)") as e:
        store.pull(ref)
    assert "\n" not in str(e.value)
    _assert_empty(store)
    assert store.pull(pushed["busybox-oci"]).manifest_digest == good


def test_a_truncated_blob_is_refused_and_the_next_pull_works(proxy, pushed, tmp_path):
    # A well-formed response that is simply short (Content-Length agrees): only the
    # descriptor's size and digest can tell.
    def truncate(req: ProxyRequest) -> bool:
        if req.method == "GET" and BLOB.match(req.path):
            p.forward(req, lambda body: body[: len(body) // 2])
            return True
        return False

    p = proxy(truncate)
    store = make_store(tmp_path / "root")
    with pytest.raises(DigestMismatch, match="test/multilayer:1.*sha256:") as e:
        store.pull(f"{p.host}/{_path(pushed['multilayer'])}")
    assert "\n" not in str(e.value)
    _assert_empty(store)
    assert len(store.pull(pushed["multilayer"]).layers) == 4


def _slow_blobs(p_ref: list[HTTPProxy], delay: float, stats: dict[str, int]) -> Callable[[ProxyRequest], bool]:
    lock = threading.Lock()

    def hook(req: ProxyRequest) -> bool:
        if req.method != "GET" or not BLOB.match(req.path):
            return False
        with lock:
            stats["now"] += 1
            stats["max"] = max(stats["max"], stats["now"])
            stats["seen"] += 1
        try:
            time.sleep(delay)
            p_ref[0].forward(req)
        finally:
            with lock:
                stats["now"] -= 1
        return True

    return hook


def test_layers_download_concurrently_but_bounded(proxy, pushed, tmp_path):
    stats = {"now": 0, "max": 0, "seen": 0}
    ref: list[HTTPProxy] = []
    ref.append(proxy(_slow_blobs(ref, 0.3, stats)))
    store = make_store(tmp_path / "root")
    store.registry.concurrency = 2
    store.pull(f"{ref[0].host}/{_path(pushed['multilayer'])}")
    assert stats["seen"] == 5  # config, then four layers
    assert stats["max"] == 2


def test_rmi_and_prune_during_a_pull_never_delete_what_it_needs(proxy, pushed, tmp_path):
    store = make_store(tmp_path / "root")
    busybox = store.pull(pushed["busybox-oci"])
    stats = {"now": 0, "max": 0, "seen": 0}
    ref: list[HTTPProxy] = []
    ref.append(proxy(_slow_blobs(ref, 1.0, stats)))
    multi_ref = f"{ref[0].host}/{_path(pushed['multilayer'])}"
    result: dict[str, object] = {}

    def pull() -> None:
        try:
            result["image"] = make_store(tmp_path / "root").pull(multi_ref)
        except Exception as e:  # reported by the assertion below
            result["error"] = e

    t = threading.Thread(target=pull)
    t.start()
    deadline = time.monotonic() + 10
    while stats["seen"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stats["seen"] > 0 and t.is_alive()
    # The multilayer image's base layer is busybox's, already unpacked: the pull reuses that
    # snapshot, so rmi must not collect it while the pull holds its lease.
    out = store.remove(pushed["busybox-oci"])
    assert out[-1] == f"Deleted: {busybox.id}"
    assert t.is_alive(), "rmi returned without waiting (its GC is skipped while a pull runs)"
    assert store.snapshots.exists(busybox.chain[0])
    pruned: dict[str, int] = {}
    pruner = threading.Thread(target=lambda: pruned.update(store.prune()))
    pruner.start()  # prune waits for the pull to finish instead
    t.join(30)
    pruner.join(30)
    assert "error" not in result, result.get("error")
    image = result["image"]
    assert image.chain[0] == busybox.chain[0]
    assert all(store.snapshots.exists(c) for c in image.chain)
    assert all(store.content.has(layer.digest) for layer in image.layers)
    rootfs = store.prepare_rootfs(multi_ref, tmp_path / "c")
    try:
        assert (rootfs / "bin" / "busybox").exists() and (rootfs / "data" / "keep.txt").exists()
    finally:
        store.release_rootfs(tmp_path / "c")
