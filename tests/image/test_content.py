"""The content store publishes a blob only when its digest and size match.

Pure filesystem tests on a temp dir; no root.
"""

import hashlib
import json
import os

import pytest

from pallet.image.content import ContentStore, DigestMismatch, sha256_digest


def _store(tmp_path):
    return ContentStore(tmp_path / "content").ensure()


def test_layout_files_exist_and_are_valid_json(tmp_path):
    s = _store(tmp_path)
    assert json.loads((s.path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads((s.path / "index.json").read_text())["manifests"] == []


def test_verified_blob_is_published(tmp_path):
    s = _store(tmp_path)
    data = b"hello" * 1000
    d = s.ingest([data[:10], data[10:]], sha256_digest(data), len(data))
    assert s.read(d) == data
    assert (s.blobs / hashlib.sha256(data).hexdigest()).exists()
    assert os.listdir(s.ingest_dir) == []


@pytest.mark.parametrize(
    ("chunks", "size"),
    [([b"hell"], 5), ([b"hellox"], 5), ([b"jello"], 5)],
    ids=["truncated", "too-long", "wrong-bytes"],
)
def test_bad_blob_leaves_nothing_behind(tmp_path, chunks, size):
    s = _store(tmp_path)
    digest = sha256_digest(b"hello")
    with pytest.raises(DigestMismatch, match=digest):
        s.ingest(chunks, digest, size)
    assert not s.has(digest)
    assert s.all_blobs() == []
    assert os.listdir(s.ingest_dir) == []


def test_interrupted_writer_leaves_nothing(tmp_path):
    s = _store(tmp_path)
    with pytest.raises(RuntimeError), s.writer(sha256_digest(b"x"), 1) as w:
        w.write(b"x")
        raise RuntimeError("connection dropped")
    assert s.all_blobs() == [] and os.listdir(s.ingest_dir) == []


def test_index_update_is_read_modify_write(tmp_path):
    s = _store(tmp_path)
    with s.update_index() as idx:
        idx["manifests"].append({"digest": "sha256:" + "0" * 64, "size": 1, "mediaType": "x"})
    assert len(s.read_index()["manifests"]) == 1


def test_a_transient_lock_file_is_gone_once_released(tmp_path):
    from pallet.image.content import transient_lock

    path = tmp_path / ".x.lock"
    with transient_lock(path) as got:
        assert got and path.exists()
        with transient_lock(path, blocking=False) as again:
            assert again is False  # held: another taker is refused, not handed a new file
    assert not path.exists()


def test_takers_racing_on_a_transient_lock_never_hold_it_together(tmp_path):
    """The classic race: B opened the file and waits; A unlinks it and lets go; C makes a
    new file under the name. B, woken on the unlinked file, must start over, not believe it
    holds the lock alongside C."""
    import threading
    import time

    from pallet.image.content import transient_lock

    path = tmp_path / ".x.lock"
    inside = 0
    most = 0
    guard = threading.Lock()

    def taker() -> None:
        nonlocal inside, most
        for _ in range(40):
            with transient_lock(path):
                with guard:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.0005)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=taker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert most == 1
    assert not path.exists()
