"""The image commands as a user types them: build busybox, list, tag, inspect, save/load, rmi.

Runs pallet.cli.main in-process against a temp --root.
"""

from __future__ import annotations

import json
import re

import pytest

from pallet.cli import main
from tests.image.conftest import needs_root

pytestmark = [pytest.mark.root, needs_root]


def test_image_commands_story(tmp_path, capsys, pushed):
    root = ["--root", str(tmp_path / "root")]
    assert main(root + ["image", "build-busybox", "--tag", "bb:1"]) == 0
    assert "Loaded image: bb:1" in capsys.readouterr().out
    assert main(root + ["pull", pushed["multilayer"]]) == 0
    out = capsys.readouterr().out
    assert "Digest: sha256:" in out and out.strip().endswith(pushed["multilayer"])
    assert main(root + ["tag", "bb:1", "bb:2"]) == 0
    assert main(root + ["images", "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["Repository"], r["Tag"]) for r in rows} >= {("bb", "1"), ("bb", "2")}
    assert main(root + ["images", "-q"]) == 0
    assert len(capsys.readouterr().out.split()) == 2
    assert main(root + ["image", "inspect", "bb:2"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["Config"]["Cmd"] == ["sh"]
    tar = tmp_path / "bb.tar"
    assert main(root + ["save", "-o", str(tar), "bb:1"]) == 0
    assert main(root + ["rmi", "bb:1", "bb:2"]) == 0
    assert "Deleted: sha256:" in capsys.readouterr().out
    assert main(root + ["load", "-i", str(tar)]) == 0
    assert "Loaded image: bb:1" in capsys.readouterr().out
    assert main(root + ["rmi", "nope:1"]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(root + ["image", "prune", "-f"]) == 0


def test_images_table_says_how_long_ago_and_json_keeps_the_timestamp(tmp_path, capsys):
    root = ["--root", str(tmp_path / "root")]
    assert main(root + ["image", "build-busybox", "--tag", "bb:1"]) == 0
    capsys.readouterr()
    assert main(root + ["images"]) == 0
    head, row = capsys.readouterr().out.splitlines()
    assert "CREATED" in head
    assert re.search(r"\s(\d+ (years|months|weeks|days)|About an hour|\d+ hours) ago\s", row)
    assert main(root + ["images", "--format", "json"]) == 0
    # docker's image formatter prints Go's time.String(), in json too
    assert json.loads(capsys.readouterr().out)["CreatedAt"] == "2024-01-01 00:00:00 +0000 UTC"


@pytest.mark.parametrize(("seconds", "text"), [
    (0.2, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (3599, "59 minutes"), (3600, "About an hour"), (5400, "2 hours"), (3 * 86400, "3 days"),
    (20 * 86400, "2 weeks"), (100 * 86400, "3 months"), (800 * 86400, "2 years"),
])
def test_human_duration_matches_docker(seconds, text):
    from pallet.units import human_duration

    assert human_duration(seconds) == text


def test_pull_platform_arm64_from_a_two_platform_index_and_inspect_shows_it(tmp_path, capsys, pushed):
    root = ["--root", str(tmp_path / "root")]
    ref = pushed["two-platform"]
    assert main(root + ["pull", "--platform", "linux/arm64", ref]) == 0
    out = capsys.readouterr().out
    # Not a terminal: plain per-layer lines (docker's non-tty style), then the digest.
    assert re.search(r"^[0-9a-f]{12}: Download complete$", out, re.M)
    assert "Digest: sha256:" in out
    assert main(root + ["image", "inspect", ref]) == 0
    doc = json.loads(capsys.readouterr().out)[0]
    assert (doc["Os"], doc["Architecture"]) == ("linux", "arm64")
    assert main(root + ["images", "--digests", "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["Digest"] == doc["RepoDigests"][0].split("@", 1)[1]
    assert main(root + ["pull", "--platform", "linux/s390x", ref]) == 1  # docker: 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "linux/s390x" in err
