"""Faults on purpose: a proxy that cuts blob downloads mid-transfer, and a store on a full disk.

Each story ends with the store consistent: nothing half-written kept, and the next pull works.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading

import pytest

from pallet.errors import SystemFailure
from pallet.image.layout import TarEntry, make_tar, write_image_layout
from pallet.image.registry import RegistryUnavailable
from tests.fixtures.registry import Registry
from tests.image.conftest import make_store, needs_root

pytestmark = [pytest.mark.root, needs_root]

BIG = 3 << 20  # one incompressible layer bigger than the tiny store and than the cut point


class CuttingProxy:
    """A TCP proxy in front of the registry that injects a fault on purpose: after `cut_after`
    bytes of a response it drops the connection, `cuts` times (-1: always). With
    `ignore_range`, it renames the Range request header so the registry answers 200 in full.
    """

    def __init__(self, upstream: str, cut_after: int, cuts: int, ignore_range: bool = False):
        self.upstream = upstream.rsplit(":", 1)
        self.cut_after, self.cuts_left, self.ignore_range = cut_after, cuts, ignore_range
        self.cuts = 0
        self.range_requests = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # listener closed: stop
            server = socket.create_connection((self.upstream[0], int(self.upstream[1])))
            self._socks += [client, server]
            for args in ((client, server, False), (server, client, True)):
                t = threading.Thread(target=self._pump, args=(*args, client, server), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, response: bool,
              client: socket.socket, server: socket.socket) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if not response:
                    if b"\r\nRange: " in data:
                        self.range_requests += 1
                        if self.ignore_range:  # same length, so the stream stays aligned
                            data = data.replace(b"\r\nRange: ", b"\r\nX-Rng: ")
                    dst.sendall(data)
                    continue
                with self._lock:
                    cut = self.cuts_left != 0 and sent + len(data) > self.cut_after
                    if cut:
                        self.cuts_left -= 1
                        self.cuts += 1
                if cut:
                    dst.sendall(data[: self.cut_after - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        self._listener.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(5)


@pytest.fixture(scope="module")
def big_image(registry: Registry, tmp_path_factory) -> str:
    """busybox-sized noise in one 3 MB layer: bigger than the cut point and the tiny store."""
    layout = tmp_path_factory.mktemp("big") / "layout"
    noise = random.Random(7).randbytes(BIG)
    write_image_layout(layout, [make_tar([TarEntry("noise.bin", data=noise)])], {"Cmd": ["sh"]})
    registry.push_layout(layout, "latest", "test/big:1")
    return "test/big:1"


@pytest.fixture
def proxy_factory(registry):
    proxies: list[CuttingProxy] = []

    def make(**kw: object) -> CuttingProxy:
        proxies.append(CuttingProxy(registry.host, **kw))  # type: ignore[arg-type]
        return proxies[-1]

    yield make
    for p in proxies:
        p.stop()


def _assert_consistent(store) -> None:
    assert list(store.content.ingest_dir.iterdir()) == []
    assert not [p for p in store.snapshots.root.iterdir() if p.name.startswith((".tmp-", ".rm-"))]
    for d in store.content.all_blobs():  # every blob kept is whole and hashes to its name
        assert "sha256:" + subprocess.run(["sha256sum", store.content.blob_path(d)], capture_output=True,
                                          text=True, check=True).stdout.split()[0] == d


@pytest.mark.parametrize("ignore_range", [False, True], ids=["resumes", "restarts"])
def test_a_blob_download_cut_midway_resumes_or_restarts(tmp_path, big_image, proxy_factory, ignore_range):
    proxy = proxy_factory(cut_after=1 << 20, cuts=1, ignore_range=ignore_range)
    store = make_store(tmp_path / "root")  # retries=1: one cut is survivable
    image = store.pull(f"{proxy.host}/{big_image}")
    assert proxy.cuts == 1 and proxy.range_requests == 1
    assert store.snapshots.exists(image.chain[-1])
    assert (store.snapshots.fs(image.chain[-1]) / "noise.bin").stat().st_size == BIG
    _assert_consistent(store)


def test_a_download_cut_every_time_fails_cleanly_and_the_next_pull_works(
        tmp_path, big_image, proxy_factory, registry):
    proxy = proxy_factory(cut_after=1 << 20, cuts=-1)
    store = make_store(tmp_path / "root")
    with pytest.raises(RegistryUnavailable, match="test/big:1.*kept failing") as e:
        store.pull(f"{proxy.host}/{big_image}")
    assert "\n" not in str(e.value)
    assert store.list() == []
    _assert_consistent(store)
    assert store.pull(f"{registry.host}/{big_image}").names


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 2 MB tmpfs as the store root; unmounted on teardown."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "pallet-test-tiny", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_fails_with_one_line_and_leaves_the_store_consistent(tiny_tmpfs, big_image,
                                                                          registry, tmp_path):
    store = make_store(tiny_tmpfs / "root")
    ref = f"{registry.host}/{big_image}"
    with pytest.raises(SystemFailure, match="no space left") as e:
        store.pull(ref)
    assert "\n" not in str(e.value) and "test/big:1" in str(e.value)
    assert store.list() == []
    _assert_consistent(store)
    # Give the same store room and pull again: it works from where it is.
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_tmpfs)], check=True)
    image = make_store(tiny_tmpfs / "root").pull(ref)
    assert image.names == [ref]
    _assert_consistent(store)
    assert make_store(tmp_path / "bigger").pull(ref).id == image.id


def test_cli_reports_a_full_disk_in_one_line(tiny_tmpfs, big_image, registry, capsys, monkeypatch):
    from pallet.cli import main

    toml = tiny_tmpfs.parent / "pallet.toml"
    toml.write_text("[registry]\nretries = 0\n")
    monkeypatch.setenv("PALLET_CONFIG", str(toml))
    assert main(["--root", str(tiny_tmpfs / "root"), "pull", "-q", f"{registry.host}/{big_image}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "no space left" in err and err.count("\n") == 1
    assert os.listdir(tiny_tmpfs / "root" / "content" / "ingest") == []
