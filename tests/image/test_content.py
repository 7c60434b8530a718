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
