"""Image commands and bool flags the way a docker user knows them: `image prune` asks
first, image commands exit 1 on a user-level error (125 stays for bad usage), `rmi` of an
image a container still uses is refused with docker's conflict message unless forced, and
a bare `--sig-proxy` never swallows the next word.

Real CLI, real kernel, the busybox image; containers use --network none.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.engine.conftest import leftovers

pytestmark = pytest.mark.root

NONE = ("--network", "none")


def _image_id(pallet, ref: str) -> str:
    out = pallet("image", "inspect", ref)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]["Id"]


def test_image_prune_asks_first_unless_forced(pallet):
    out = pallet("image", "prune", "-a", input="n\n")
    assert out.returncode == 0
    assert out.stdout.startswith(
        "WARNING! This will remove all images without at least one container associated "
        "to them.\nAre you sure you want to continue? [y/N] ")
    assert pallet("images", "-q").stdout.strip(), "answering no removed the image"

    out = pallet("image", "prune", input="")  # no answer at all (EOF) is a no, too
    assert "WARNING! This will remove all dangling images." in out.stdout
    assert "Total reclaimed space" not in out.stdout

    out = pallet("image", "prune", "-a", input="y\n")
    assert out.returncode == 0 and "deleted: sha256:" in out.stdout
    assert pallet("images", "-q").stdout == ""
    out = pallet("image", "prune", "-f")
    assert (out.returncode, out.stdout) == (0, "Total reclaimed space: 0B\n")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_image_commands_exit_1_on_a_user_level_error(pallet, tmp_path):
    port = _closed_port()
    cases = [
        (("pull", f"127.0.0.1:{port}/nothing:1"), f"127.0.0.1:{port}"),
        (("push", "nope:1"), "nope:1"),
        (("tag", "nope:1", "other:1"), "nope:1"),
        (("save", "-o", str(tmp_path / "x.tar"), "nope:1"), "nope:1"),
        (("load", "-i", str(tmp_path / "missing.tar")), "missing.tar"),
        (("image", "tag", "nope:1", "other:1"), "nope:1"),
        (("rmi", "nope:1"), "nope:1"),
    ]
    for argv, named in cases:
        out = pallet(*argv, timeout=120)
        assert out.returncode == 1, (argv, out.returncode, out.stderr)
        assert out.stderr.startswith("Error: ") and named in out.stderr, (argv, out.stderr)
        assert out.stderr.count("\n") == 1, (argv, out.stderr)
    assert not (tmp_path / "x.tar").exists()
    # Bad usage is still docker's 125.
    out = pallet("tag", "busybox")
    assert out.returncode == 125 and "See 'pallet tag --help'." in out.stderr


def test_rmi_of_an_image_a_container_uses_is_a_conflict_unless_forced(pallet):
    image = _image_id(pallet, "busybox")
    short = image.split(":", 1)[1][:12]
    stopped = pallet("create", *NONE, "busybox", "true", check=True).stdout.strip()

    out = pallet("rmi", "busybox")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == (
        f'Error: conflict: unable to remove repository reference "busybox" (must force) - '
        f"container {stopped[:12]} is using its referenced image {short}\n")
    out = pallet("rmi", short)
    assert out.returncode == 1
    assert out.stderr == (f"Error: conflict: unable to delete {short} (must be forced) - "
                          f"image is being used by stopped container {stopped[:12]}\n")

    # Another name for the same image: untagging it is fine, the image stays.
    pallet("tag", "busybox", "spare:1", check=True)
    out = pallet("rmi", "spare:1")
    assert (out.returncode, out.stdout) == (0, "Untagged: spare:1\n")

    running = pallet("run", "-d", *NONE, "busybox", "sleep", "60", check=True).stdout.strip()
    out = pallet("rmi", "-f", short)
    assert out.returncode == 1
    assert out.stderr == (f"Error: conflict: unable to delete {short} (cannot be forced) - "
                          f"image is being used by running container {running[:12]}\n")
    assert _image_id(pallet, "busybox") == image  # nothing was removed so far

    pallet("rm", "-f", running, check=True)
    out = pallet("rmi", "-f", "busybox")
    assert out.returncode == 0 and "Untagged: busybox:latest" in out.stdout
    # The stopped container keeps what it was made from and still runs.
    out = pallet("start", "-a", stopped)
    assert out.returncode == 0, out.stderr
    pallet("rm", stopped, check=True)
    assert not leftovers(pallet, [stopped, running])


def test_a_bare_sig_proxy_does_not_take_the_next_word(pallet):
    out = pallet("run", "--rm", "--sig-proxy", *NONE, "busybox", "echo", "proxied")
    assert (out.returncode, out.stdout) == (0, "proxied\n"), out.stderr
    out = pallet("run", "--rm", "--sig-proxy=false", *NONE, "busybox", "echo", "--sig-proxy")
    assert (out.returncode, out.stdout) == (0, "--sig-proxy\n"), out.stderr
    out = pallet("run", "--rm", "--sig-proxy=maybe", *NONE, "busybox", "true")
    assert out.returncode == 125
    assert out.stderr.startswith('pallet: invalid argument "maybe" for "--sig-proxy" flag')
    out = pallet("attach", "--sig-proxy", "no-such-container")
    assert out.returncode == 1 and "no-such-container" in out.stderr
