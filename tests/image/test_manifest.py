"""Manifest parsing and platform selection, OCI and Docker flavours; schema1 refused.

Pure tests.
"""

import json

import pytest

from pallet.errors import InvalidArgument, NotFound
from pallet.image import manifest as m

H = "sha256:" + "1" * 64


def _index(*plats, mt=m.OCI_INDEX):
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt,
            "manifests": [
                {"mediaType": m.OCI_MANIFEST, "digest": f"sha256:{i:064d}", "size": 1,
                 "platform": dict(zip(("os", "architecture", "variant"), p.split("/"), strict=False))}
                for i, p in enumerate(plats)
            ],
        }
    ).encode()


def test_docker_manifest_parses():
    doc = {"schemaVersion": 2, "mediaType": m.DOCKER_MANIFEST,
           "config": {"mediaType": m.DOCKER_CONFIG, "digest": H, "size": 3},
           "layers": [{"mediaType": m.DOCKER_LAYER_GZIP, "digest": H, "size": 4}]}
    man = m.parse_manifest(json.dumps(doc).encode())
    assert isinstance(man, m.Manifest) and man.layers[0].size == 4


def test_oci_manifest_without_media_type_is_sniffed():
    doc = {"schemaVersion": 2, "config": {"mediaType": m.OCI_CONFIG, "digest": H, "size": 3},
           "layers": []}
    assert m.parse_manifest(json.dumps(doc).encode()).media_type == m.OCI_MANIFEST


def test_schema1_is_refused_with_a_reason():
    with pytest.raises(InvalidArgument, match="schema 1"):
        m.parse_manifest(json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode())


def test_platform_selection_default_and_explicit():
    idx = m.parse_manifest(_index("linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6"))
    assert m.select_manifest(idx, m.parse_platform("linux/amd64")).digest.endswith("0")
    assert m.select_manifest(idx, m.parse_platform("linux/arm64")).digest.endswith("1")
    assert m.select_manifest(idx, m.parse_platform("linux/arm/v6")).digest.endswith("3")
    assert m.select_manifest(idx, m.parse_platform("linux/arm")).digest.endswith("2")
    with pytest.raises(NotFound, match="linux/s390x.*available"):
        m.select_manifest(idx, m.parse_platform("linux/s390x"))


def test_docker_manifest_list_selects_host():
    idx = m.parse_manifest(_index("linux/amd64", "linux/arm64", mt=m.DOCKER_LIST))
    assert isinstance(idx, m.Index)
    d = m.select_manifest(idx)
    assert d.platform.architecture in ("amd64", "arm64")


@pytest.mark.parametrize("bad", ["", "linux/", "a/b/c/d"])
def test_bad_platform(bad):
    with pytest.raises(InvalidArgument):
        m.parse_platform(bad)


def test_config_fields():
    cfg = m.parse_config(json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Entrypoint": ["/bin/sh"], "Cmd": None,
                   "WorkingDir": "/w", "User": "1:1", "ExposedPorts": {"80/tcp": {}},
                   "Volumes": {"/data": {}}, "Labels": {"a": "b"}, "StopSignal": "SIGTERM"},
        "rootfs": {"type": "layers", "diff_ids": [H]}}).encode())
    assert cfg.entrypoint == ("/bin/sh",) and cfg.cmd is None
    assert cfg.exposed_ports == ("80/tcp",) and cfg.volumes == ("/data",)
    assert cfg.diff_ids == (H,) and cfg.stop_signal == "SIGTERM"
