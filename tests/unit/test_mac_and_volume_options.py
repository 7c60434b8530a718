"""The pure parts of --mac-address and `volume create -o`: MAC spellings as Go's
net.ParseMAC reads them, the conflist that asks the bridge plugin for a MAC, and docker's
checks of the local driver's options."""

from __future__ import annotations

import pytest

from pallet.engine.containers import parse_mac
from pallet.engine.network import build_conflist, with_mac
from pallet.engine.volumes import needs_mount, validate_local_options
from pallet.errors import InvalidArgument


@pytest.mark.parametrize("text", ["02:42:AC:11:00:02", "02-42-ac-11-00-02", "0242.ac11.0002",
                                  " 02:42:ac:11:00:02 "])
def test_mac_spellings(text):
    assert parse_mac(text) == "02:42:ac:11:00:02"


@pytest.mark.parametrize("text", ["", "02:42:ac:11:00", "02:42:ac:11:00:0g", "02:42-ac:11:00:02",
                                  "0242ac110002", "02:42:ac:11:00:02:03:04", "2:42:ac:11:0:2"])
def test_bad_macs(text):
    with pytest.raises(InvalidArgument, match="is not a valid mac address"):
        parse_mac(text)


def test_with_mac_gives_the_bridge_plugin_the_mac_capability():
    conf = build_conflist("n", bridge="br", subnet="10.227.0.0/24", gateway="10.227.0.1",
                          data_dir="/x")
    out = with_mac(conf)
    assert out["plugins"][0]["capabilities"] == {"mac": True}
    assert "capabilities" not in conf["plugins"][0]  # a copy
    assert [p["type"] for p in out["plugins"]] == [p["type"] for p in conf["plugins"]]
    with pytest.raises(InvalidArgument, match="only be given on a bridge network"):
        with_mac({"name": "m", "plugins": [{"type": "macvlan"}]})


@pytest.mark.parametrize("opts, message", [
    ({"x": "1"}, 'invalid option: "x"'),
    ({"type": "tmpfs"}, 'missing required option: "device"'),
    ({"device": "/dev/sdb1"}, 'missing required option: "type"'),
    ({"o": "bind"}, "missing required option"),
    ({"size": "abc"}, "invalid size: 'abc'"),
    ({"size": "1g"}, "quota size requested but no quota support"),
])
def test_local_option_errors(opts, message):
    with pytest.raises(InvalidArgument, match=message):
        validate_local_options(opts)


def test_local_options_accepted():
    for opts in ({}, {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"},
                 {"type": "none", "o": "bind", "device": "/srv"}, {"size": "0"}):
        validate_local_options(opts)
    assert needs_mount({"type": "tmpfs", "device": "tmpfs"}) and not needs_mount({})
