"""Reference parsing: docker.io normalisation, hosts with ports, tags, digests.

Pure tests; no root, no network.
"""

import pytest

from pallet.errors import InvalidArgument
from pallet.image.reference import looks_like_id, parse_reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("me/app", "docker.io/me/app:latest"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app:v1", "localhost:5000/app:v1"),
        ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"),
        ("[::1]:5000/app", "[::1]:5000/app:latest"),
        ("ghcr.io/org/img", "ghcr.io/org/img:latest"),
        (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
        (f"busybox:1@{D}", f"docker.io/library/busybox:1@{D}"),
        (f"host:5000/x:y@{D}", f"host:5000/x:y@{D}"),
        ("a__b/c-d.e:T_1.2-x", "docker.io/a__b/c-d.e:T_1.2-x"),
    ],
)
def test_valid_references_normalise(text, expected):
    assert str(parse_reference(text)) == expected


def test_reference_parts_and_familiar_name():
    r = parse_reference(f"busybox:1@{D}")
    assert (r.domain, r.path, r.tag, r.digest) == ("docker.io", "library/busybox", "1", D)
    assert r.object == D
    assert r.api_host == "registry-1.docker.io"
    assert parse_reference("busybox").familiar() == "busybox:latest"
    assert parse_reference("localhost:5000/a:b").api_host == "localhost:5000"


@pytest.mark.parametrize(
    "text",
    [
        "",
        " busybox",
        "Busybox",
        "busybox:",
        "busybox:-bad",
        "busybox@sha256:abc",
        f"busybox@sha256:{'A' * 64}",
        "a//b",
        "host:5000/",
        "/busybox",
        "busybox/",
        "bad_host_:5000/x:y:z",
        "a" * 64,
        "x:" + "t" * 129,
    ],
)
def test_invalid_references_are_refused_with_the_value(text):
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        parse_reference(text)


def test_id_detection():
    assert looks_like_id("sha256:abcd")
    assert looks_like_id("0123456789ab")
    assert not looks_like_id("busybox")
    assert not looks_like_id("abc")
