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
    assert main(root + ["image", "prune"]) == 0


def test_images_table_says_how_long_ago_and_json_keeps_the_timestamp(tmp_path, capsys):
    root = ["--root", str(tmp_path / "root")]
    assert main(root + ["image", "build-busybox", "--tag", "bb:1"]) == 0
    capsys.readouterr()
    assert main(root + ["images"]) == 0
    head, row = capsys.readouterr().out.splitlines()
    assert "CREATED" in head
    assert re.search(r"\s(\d+ (years|months|weeks|days)|About an hour|\d+ hours) ago\s", row)
    assert main(root + ["images", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["CreatedAt"] == "2024-01-01T00:00:00Z"


@pytest.mark.parametrize(("seconds", "text"), [
    (0.2, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (3599, "59 minutes"), (3600, "About an hour"), (5400, "2 hours"), (3 * 86400, "3 days"),
    (20 * 86400, "2 weeks"), (100 * 86400, "3 months"), (800 * 86400, "2 years"),
])
def test_human_duration_matches_docker(seconds, text):
    from pallet.cli.images import human_duration

    assert human_duration(seconds) == text
