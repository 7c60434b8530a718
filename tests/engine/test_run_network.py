"""`pallet run` on CNI networks: the default bridge with NAT, -p publishing, user
networks where containers reach each other by IP and by name, and a clean host after.

Real kernel, Debian's CNI plugins and iptables. Each test makes its own network with a
unique bridge and subnet, except the default-network test.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest

from tests.engine.conftest import leftovers

pytestmark = pytest.mark.root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _host_traces(ident: str) -> list[str]:
    """veths, iptables rules and netns files naming this container or network."""
    out = []
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    out += [f"iptables {r}" for r in rules.splitlines() if ident in r]
    return out


@pytest.fixture
def network(pallet):
    name = f"pt-{uuid.uuid4().hex[:6]}"
    subnet = f"10.{random.randint(200, 220)}.{random.randint(0, 254)}.0/24"
    out = pallet("network", "create", "--subnet", subnet, name)
    assert out.returncode == 0, out.stderr
    yield name, subnet
    pallet("network", "rm", name)


def test_default_network_gives_an_address_and_a_route_out(pallet):
    out = pallet("run", "--rm", "--network", "bridge", "busybox", "sh", "-c",
                 "ip -4 -o addr show eth0; ip route | grep default")
    assert out.returncode == 0, out.stderr
    assert " inet 10.87." in out.stdout
    assert "default via 10.87.0.1" in out.stdout


def test_the_network_is_ready_when_the_process_starts(pallet, network):
    # CNI configures the netns while the container is being created; the start waits for
    # it. The first thing the process does is look at its interface and its gateway.
    name, subnet = network
    gateway = subnet.rsplit(".", 1)[0] + ".1"
    for _ in range(3):
        out = pallet("run", "--rm", "--network", name, "busybox", "sh", "-c",
                     f"ip -4 -o addr show eth0; ping -c1 -W2 {gateway} >/dev/null && echo gw")
        assert out.returncode == 0, out.stderr
        assert " inet " + subnet.rsplit(".", 1)[0] + "." in out.stdout
        assert out.stdout.rstrip().endswith("gw")


def test_containers_on_a_network_reach_each_other_by_ip_and_name(pallet, network):
    name, subnet = network
    server = f"srv-{uuid.uuid4().hex[:6]}"
    out = pallet("run", "-d", "--name", server, "--network", name, "busybox", "sleep", "60")
    assert out.returncode == 0, out.stderr
    cid = out.stdout.strip()
    info = json.loads(pallet("inspect", server).stdout)[0]
    ip = info["NetworkSettings"]["Networks"][name]["IPAddress"]
    assert ip.startswith(subnet.rsplit(".", 2)[0])
    out = pallet("run", "--rm", "--network", name, "busybox", "sh", "-c",
                 f"ping -c1 -W2 {ip} >/dev/null && echo by-ip; "
                 f"ping -c1 -W2 {server} >/dev/null && echo by-name")
    assert out.stdout.split() == ["by-ip", "by-name"], out.stdout + out.stderr
    assert pallet("rm", "-f", server).returncode == 0
    assert not _host_traces(cid[:12]) and not leftovers(pallet, [cid])


def test_published_port_reaches_the_container(pallet, network):
    name, _ = network
    port = _free_port()
    out = pallet("run", "-d", "--network", name, "-p", f"127.0.0.1:{port}:80", "busybox",
                 "sh", "-c", "mkdir /www && echo hello-from-httpd > /www/index.html && "
                 "exec httpd -f -p 80 -h /www")
    assert out.returncode == 0, out.stderr
    cid = out.stdout.strip()
    assert pallet("port", cid).stdout.strip().endswith(f"127.0.0.1:{port}")
    body = ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "hello" not in body:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
        except OSError:
            time.sleep(0.1)
    assert body == "hello-from-httpd\n"
    assert pallet("rm", "-f", cid).returncode == 0
    assert not _host_traces(cid[:12])


def test_port_already_in_use_is_refused_and_leaves_nothing(pallet, network, tmp_path):
    name, _ = network
    # The container is created while its network is set up; this failure must stop it
    # before its process runs (it would leave a file in the bind-mounted directory).
    seen = tmp_path / "seen"
    seen.mkdir()
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        out = pallet("run", "--rm", "--network", name, "-p", f"{port}:80", "-v",
                     f"{seen}:/seen", "busybox", "touch", "/seen/ran")
    assert out.returncode == 125
    assert str(port) in out.stderr and "already allocated" in out.stderr
    assert list(seen.iterdir()) == []
    assert pallet("ps", "-aq").stdout == ""
    assert not leftovers(pallet)


def test_unknown_network_is_an_engine_error(pallet):
    out = pallet("run", "--rm", "--network", "no-such-net", "busybox", "true")
    assert out.returncode == 125 and "no-such-net" in out.stderr


def test_publish_without_a_host_port_gets_an_ephemeral_one(pallet, network):
    name, _ = network
    out = pallet("run", "-d", "--network", name, "-p", "80", "busybox", "sh", "-c",
                 "mkdir /www && echo ephemeral > /www/index.html && exec httpd -f -p 80 -h /www")
    assert out.returncode == 0, out.stderr
    cid = out.stdout.strip()
    mapping = pallet("port", cid).stdout.strip()
    host_port = int(mapping.rsplit(":", 1)[1])
    assert host_port > 0, mapping
    body = ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "ephemeral" not in body:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{host_port}/",
                                          timeout=2).read().decode()
        except OSError:
            time.sleep(0.1)
    assert body == "ephemeral\n"
    assert pallet("rm", "-f", cid).returncode == 0


def test_bad_publish_specs_are_refused(pallet):
    for bad, named in (("abc", "abc"), ("80:", "80:"), ("1:2:3:4", "1:2:3:4"),
                       ("99999:80", "99999"), ("80/icmp", "icmp")):
        out = pallet("run", "--rm", "-p", bad, "busybox", "true")
        assert out.returncode == 125 and named in out.stderr, (bad, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1


def test_two_roots_on_the_default_bridge_get_different_addresses(pallet, tmp_path,
                                                                  busybox_store):
    """The default bridge (pallet0) is one device of the host's whichever root uses it, so
    its addresses are allocated host-wide: containers of two roots never share one, and
    reach each other over it."""
    import shutil

    from tests.engine.conftest import Pallet

    other_root = str(tmp_path / "other-root")
    shutil.copytree(busybox_store, other_root, symlinks=True)
    other = Pallet(other_root, f"/run/pallet-t-{uuid.uuid4().hex[:8]}")
    try:
        ips = []
        for p in (pallet, other):
            cid = p("run", "-d", "busybox", "sleep", "60", check=True).stdout.strip()
            ips.append(p("inspect", "-f", "{{.NetworkSettings.IPAddress}}", cid,
                         check=True).stdout.strip())
        assert ips[0] != ips[1] and all(ip.startswith("10.87.") for ip in ips), ips
        ping = other("exec", other("ps", "-q", check=True).stdout.split()[0], "ping", "-c1",
                     "-W2", ips[0])
        assert ping.returncode == 0, ping.stdout + ping.stderr
    finally:
        for p in (pallet, other):
            ids = p("ps", "-aq", "--no-trunc").stdout.split()
            if ids:
                p("rm", "-f", *ids)
        shutil.rmtree(other.run_root, ignore_errors=True)
    assert leftovers(pallet) == [] and leftovers(other) == []


def test_networks_of_two_roots_never_share_a_subnet(pallet, tmp_path, busybox_store):
    """docker makes a network's bridge, with its gateway address, at `network create`;
    so does pallet: the subnet's route is on the host at once, and another root choosing
    a subnet sees it taken (they picked the same one while bridges waited for a container)."""
    import ipaddress
    import shutil

    from tests.engine.conftest import Pallet

    other = Pallet(str(tmp_path / "other-root"), f"/run/pallet-t-{uuid.uuid4().hex[:8]}")
    shutil.copytree(busybox_store, other.root, symlinks=True)
    names = [f"tworoot-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    bridges = []
    try:
        subnets = []
        for p, name in zip((pallet, other), names, strict=True):
            p("network", "create", name, check=True)
            info = json.loads(p("network", "inspect", name, check=True).stdout)[0]
            subnet = info["IPAM"]["Config"][0]["Subnet"]
            bridge = info["Options"].get("com.docker.network.bridge.name") or \
                f"br-{info['Id'][:12]}"
            addrs = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", bridge],
                                   capture_output=True, text=True, check=True).stdout
            bridges.append(bridge)
            gateway = info["IPAM"]["Config"][0]["Gateway"]
            assert f"inet {gateway}/{subnet.split('/')[1]}" in addrs, addrs
            subnets.append(ipaddress.ip_network(subnet))
        assert not subnets[0].overlaps(subnets[1]), subnets
        taken = other("network", "create", "--subnet", str(subnets[0]), "tworoot-clash")
        assert taken.returncode != 0 and f"subnet {subnets[0]} overlaps" in taken.stderr
    finally:
        for p, name in zip((pallet, other), names, strict=True):
            p("network", "rm", name)
        shutil.rmtree(other.run_root, ignore_errors=True)
    assert bridges and not any(os.path.exists(f"/sys/class/net/{b}") for b in bridges)
    assert leftovers(pallet) == [] and leftovers(other) == []
