"""`run --mac-address` as a docker user types it: the address set through CNI (the bridge
plugin's `mac` capability) on the container's interface, shown by `ip link` inside and by
inspect, kept across a restart; bad values and a host network refused with docker's
errors, nothing created.

Real CLI, real kernel, the busybox image. Networks of these tests use 10.227.0.0/16.
"""

from __future__ import annotations

import random

import pytest

from tests.engine.conftest import leftovers, network_lab

pytestmark = pytest.mark.root


def test_mac_address_reaches_the_interface_and_inspect(pallet):
    third = random.randint(0, 254)
    with network_lab(pallet, "vo-mac", [f"10.227.{third}.0/24"], []) as lab:
        net = lab.network("--subnet", lab.v4[0])
        out = pallet("run", "--rm", "--network", net, "--mac-address", "02:42:AC:11:00:7A",
                     "busybox", "cat", "/sys/class/net/eth0/address")
        assert (out.returncode, out.stdout) == (0, "02:42:ac:11:00:7a\n"), out.stderr
        cid = pallet("run", "-d", "--network", net, "--name", "vo-macd", "--mac-address",
                     "02-42-ac-11-00-7b", "busybox", "sleep", "60").stdout.strip()
        out = pallet("exec", "vo-macd", "ip", "link", "show", "eth0")
        assert "link/ether 02:42:ac:11:00:7b " in out.stdout, out.stderr
        out = pallet("inspect", "-f", "{{.Config.MacAddress}} {{.NetworkSettings.MacAddress}} "
                     "{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}", "vo-macd")
        assert out.stdout.split() == ["02:42:ac:11:00:7b"] * 3
        # A restart gets the same address again.
        pallet("restart", "-t", "0", "vo-macd", check=True)
        out = pallet("exec", "vo-macd", "cat", "/sys/class/net/eth0/address")
        assert out.stdout == "02:42:ac:11:00:7b\n"
        pallet("rm", "-f", "vo-macd", check=True)
    assert leftovers(pallet, [cid]) == []


@pytest.mark.parametrize("network, mac, message", [
    ("none", "12:34", "12:34 is not a valid mac address"),
    ("none", "02:42:ac:11:00:zz", "02:42:ac:11:00:zz is not a valid mac address"),
    ("none", "02:42:ac:11:00:07:08:09", "is not a valid mac address"),
    ("none", "03:00:00:00:00:01", "a multicast address cannot be an interface's"),
    ("host", "02:42:ac:11:00:07", "conflicting options: mac-address and the network mode"),
])
def test_bad_mac_is_125_and_creates_nothing(pallet, network, mac, message):
    out = pallet("run", "--rm", "--network", network, "--mac-address", mac, "busybox", "true")
    assert out.returncode == 125 and message in out.stderr, out.stderr
    assert pallet("ps", "-aq").stdout == ""
    assert leftovers(pallet) == []
