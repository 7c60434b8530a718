"""`pallet network connect` / `disconnect` with docker's semantics: a running container
joins another network at once (CNI ADD into its netns, as eth1), names resolve both
ways, the default route stays on the first network, a restart keeps the join; disconnect
is CNI DEL; bad requests change nothing; the host is clean after.

Real kernel, Debian's CNI plugins and iptables; each test makes its own networks with
unique 10.23x subnets.
"""

from __future__ import annotations

import random
import subprocess
import uuid

import pytest

from tests.engine.conftest import leftovers

pytestmark = pytest.mark.root


def _host_traces(ident: str) -> list[str]:
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    return [r for r in rules.splitlines() if ident in r]


@pytest.fixture
def two_networks(pallet):
    base = random.randint(230, 250)
    third = random.randint(0, 126) * 2
    names = [f"heng-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    subnets = [f"10.{base}.{third + i}.0/24" for i in range(2)]
    for name, subnet in zip(names, subnets, strict=True):
        out = pallet("network", "create", "--subnet", subnet, name)
        assert out.returncode == 0, out.stderr
    yield names, [s.rsplit(".", 1)[0] + "." for s in subnets]
    ids = pallet("ps", "-aq", "--no-trunc").stdout.split()
    if ids:
        pallet("rm", "-f", *ids)
    for name in names:
        pallet("network", "rm", name)


def _ctr(pallet, name: str, net: str) -> str:
    out = pallet("run", "-d", "--name", name, "--network", net, "busybox", "sleep", "120")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _reach(pallet, src: str, dest: str) -> bool:
    return pallet("exec", src, "ping", "-c1", "-W2", dest).returncode == 0


def test_connect_a_running_container_then_disconnect(pallet, two_networks):
    (front, back), (front_pfx, back_pfx) = two_networks
    web = _ctr(pallet, "web", front)
    db = _ctr(pallet, "db", back)
    assert not _reach(pallet, "web", "db")  # not on a shared network: no name, no route

    out = pallet("network", "connect", "--alias", "shop", back, "web")
    assert (out.returncode, out.stdout, out.stderr) == (0, "", ""), out.stderr
    addrs = pallet("exec", "web", "ip", "-o", "-4", "addr").stdout
    assert f"eth0    inet {front_pfx}" in addrs and f"eth1    inet {back_pfx}" in addrs
    route = pallet("exec", "web", "ip", "route").stdout
    assert route.startswith(f"default via {front_pfx}1 dev eth0")
    assert route.count("default") == 1
    assert _reach(pallet, "web", "db") and _reach(pallet, "db", "web")
    assert _reach(pallet, "db", "shop")
    nets = pallet("inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}="
                  "{{$v.IPAddress}} {{end}}", "web").stdout.split()
    assert sorted(n.split("=")[0] for n in nets) == sorted([front, back])
    assert all(n.split("=")[1] for n in nets)
    assert pallet("ps", "--filter", f"network={back}", "--format", "{{.Names}}").stdout.split() \
        == ["db", "web"]
    members = pallet("network", "inspect", "-f", "json", back).stdout
    assert web in members and db in members

    # A restart keeps the joined network.
    pallet("restart", "-t", "0", "web", check=True)
    assert _reach(pallet, "web", "db")

    out = pallet("network", "disconnect", back, "web")
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    assert "eth1" not in pallet("exec", "web", "ip", "-o", "addr").stdout
    assert not _reach(pallet, "db", "web") and not _reach(pallet, "web", "db")
    assert web not in pallet("network", "inspect", back).stdout
    pallet("rm", "-f", "web", "db", check=True)
    assert not _host_traces(web[:12]) and not _host_traces(db[:12])
    assert leftovers(pallet, [web, db]) == []


def test_connect_a_created_container_joins_at_start(pallet, two_networks):
    (front, back), (_, back_pfx) = two_networks
    _ctr(pallet, "db", back)
    pallet("create", "--name", "job", "--network", front, "busybox", "sh", "-c",
           "ip -o -4 addr show eth1; ping -c1 -W2 db >/dev/null && echo reached", check=True)
    pallet("network", "connect", back, "job", check=True)
    out = pallet("start", "-a", "job")
    assert out.returncode == 0, out.stderr
    assert f"inet {back_pfx}" in out.stdout and "reached" in out.stdout


def test_bad_connects_and_disconnects_change_nothing(pallet, two_networks):
    (front, back), _ = two_networks
    cid = _ctr(pallet, "solo", front)
    cases = [
        (("connect", front, "solo"), "already exists in network"),
        (("connect", "no-such-net", "solo"), "network no-such-net not found"),
        (("connect", back, "no-such-ctr"), "No such container: no-such-ctr"),
        (("disconnect", back, "solo"), f"is not connected to network {back}"),
        (("connect", "host", "solo"), "host network"),
    ]
    for argv, message in cases:
        out = pallet("network", *argv)
        assert out.returncode == 1 and message in out.stderr, (argv, out.stderr)
    loner = pallet("run", "-d", "--network", "none", "busybox", "sleep", "60",
                   check=True).stdout.strip()
    out = pallet("network", "connect", back, loner)
    assert out.returncode == 1 and "private (none) mode" in out.stderr
    assert pallet("network", "connect").returncode == 125
    addrs = pallet("exec", "solo", "ip", "-o", "-4", "addr").stdout
    assert "eth1" not in addrs
    assert cid not in pallet("network", "inspect", back).stdout
