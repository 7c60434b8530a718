"""The embedded DNS server (docker's 127.0.0.11) as a container on a user-defined network
sees it: peers' names and aliases (and PTR) from its own networks only, at once for a peer
started later, gone once it is removed; everything else forwarded to --dns servers (a real
dnsmasq on the host's loopback, as docker forwards from the host for such servers) or the
host's; SERVFAIL when no upstream answers; TCP as well as UDP; the default bridge keeps the
host's servers; and no server process is left once the last container has gone.

Real kernel, CNI plugins, busybox's nslookup, dnsmasq, and dnspython (not the server's dnslib) as a TCP client
inside the container's namespace (nsenter).
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import time

import pytest

from tests.engine.conftest import leftovers, network_lab
from tests.fixtures.host import process_cmdlines

pytestmark = pytest.mark.root


@pytest.fixture
def lab(pallet):
    base = random.randint(0, 120) * 2
    with network_lab(pallet, "dnsn", [f"10.226.{base + i}.0/24" for i in range(2)],
                     [f"fd00:226:{base:x}::/64"]) as lab:
        yield lab


@pytest.fixture
def upstream():
    """dnsmasq on a loopback address of the host, knowing one name and no other."""
    if not shutil.which("dnsmasq"):
        pytest.skip("dnsmasq is not installed (scripts/setup.sh installs dnsmasq-base)")
    addr = f"127.0.{random.randint(1, 250)}.{random.randint(2, 250)}"
    proc = subprocess.Popen(
        ["dnsmasq", "--keep-in-foreground", "--user=root", f"--listen-address={addr}",
         "--bind-interfaces", "--port=53", "--no-resolv", "--no-hosts", "--local=/#/",
         "--address=/upstream.test/10.9.8.7", "--pid-file="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    assert proc.poll() is None, "dnsmasq did not start"
    yield addr
    proc.terminate()
    proc.wait(10)


def _lookup(pallet, ctr: str, name: str) -> tuple[int, str]:
    out = pallet("exec", ctr, "nslookup", name)
    return out.returncode, out.stdout + out.stderr


def _addresses(text: str) -> list[str]:
    """The answer's addresses in busybox nslookup's output (after the Server lines)."""
    _, _, answer = text.partition("\n\n")
    return [ln.split()[-1] for ln in answer.splitlines() if ln.startswith("Address")]


def _dns_servers(pallet) -> list[int]:
    return [pid for pid, cmd in process_cmdlines()
            if cmd.startswith(b"pallet-dns") and pallet.root.encode() in cmd]


def test_names_and_aliases_of_the_containers_own_networks(pallet, lab):
    front, back = lab.network("--subnet", lab.v4[0]), lab.network("--subnet", lab.v4[1])
    pfx, back_pfx = lab.v4[0].rsplit(".", 1)[0], lab.v4[1].rsplit(".", 1)[0]
    pallet("run", "-d", "--name", "dn-web", "--network", front, "--network-alias", "www",
           "busybox", "sleep", "120", check=True)
    pallet("run", "-d", "--name", "dn-other", "--network", back, "busybox", "sleep", "120",
           check=True)
    resolv = pallet("exec", "dn-web", "cat", "/etc/resolv.conf", check=True).stdout
    assert resolv.splitlines()[:2] == ["nameserver 127.0.0.11", "options ndots:0"]
    code, out = _lookup(pallet, "dn-web", "www")
    assert code == 0 and _addresses(out) == [f"{pfx}.2"], out
    assert "Server:\t\t127.0.0.11" in out
    # A peer started later is found at once, by name, both ways; PTR gives its name.
    pallet("run", "-d", "--name", "dn-db", "--network", front, "busybox", "sleep", "120",
           check=True)
    assert _addresses(_lookup(pallet, "dn-web", "dn-db")[1]) == [f"{pfx}.3"]
    assert _addresses(_lookup(pallet, "dn-db", "DN-WEB")[1]) == [f"{pfx}.2"]
    code, out = _lookup(pallet, "dn-web", f"{pfx}.3")
    assert code == 0 and "name = dn-db" in out, out
    # Another network's container is not found (the host's servers don't know it either).
    assert _addresses(_lookup(pallet, "dn-web", "dn-other")[1]) == []
    # ...until it joins: then it is, on that network's address too.
    pallet("network", "connect", front, "dn-other", check=True)
    assert _addresses(_lookup(pallet, "dn-web", "dn-other")[1]) == [f"{pfx}.4"]
    assert sorted(_addresses(_lookup(pallet, "dn-other", "dn-other")[1])) == sorted([
        f"{pfx}.4", f"{back_pfx}.2"])
    # A rename answers to the new name only; a removed container is no longer found.
    pallet("rename", "dn-db", "dn-db2", check=True)
    assert _addresses(_lookup(pallet, "dn-web", "dn-db2")[1]) == [f"{pfx}.3"]
    assert _addresses(_lookup(pallet, "dn-web", "dn-db")[1]) == []
    pallet("rm", "-f", "dn-db2", check=True)
    assert _addresses(_lookup(pallet, "dn-web", "dn-db2")[1]) == []
    assert len(_dns_servers(pallet)) == 1
    pallet("rm", "-f", "dn-web", "dn-other", check=True)
    assert _dns_servers(pallet) == [] and leftovers(pallet) == []


def test_forwarding_to_the_dns_servers_given_and_servfail(pallet, lab, upstream):
    net = lab.network("--subnet", lab.v4[0])
    out = pallet("run", "--rm", "--network", net, "--dns", upstream, "--dns-search",
                 "corp.test", "busybox", "sh", "-c",
                 "cat /etc/resolv.conf; nslookup -type=a upstream.test; "
                 "nslookup -type=a elsewhere.test; true")
    assert out.returncode == 0, out.stderr
    resolv, _, answers = out.stdout.partition("Server:")
    assert resolv.splitlines() == ["nameserver 127.0.0.11", "search corp.test",
                                   "options ndots:0", "", f"# ExtServers: [{upstream}]"]
    assert "Address: 10.9.8.7" in answers
    assert "can't find elsewhere.test: NXDOMAIN" in out.stdout + out.stderr
    # No server answers at all: SERVFAIL, at once (not the resolver's timeout).
    t0 = time.monotonic()
    dead = pallet("run", "--rm", "--network", net, "--dns", "127.0.0.254", "busybox",
                  "nslookup", "-type=a", "upstream.test")
    assert dead.returncode != 0 and "SERVFAIL" in dead.stdout + dead.stderr
    assert time.monotonic() - t0 < 10
    assert _dns_servers(pallet) == [] and leftovers(pallet) == []


def test_tcp_queries(pallet, lab, upstream):
    net = lab.network("--subnet", lab.v4[0])
    cid = pallet("run", "-d", "--name", "dn-tcp", "--network", net, "--dns", upstream,
                 "busybox", "sleep", "120", check=True).stdout.strip()
    netns = os.path.join(pallet.run_root, cid, "netns")
    client = ("import dns.message, dns.query, sys\n"
              "for name in sys.argv[1:]:\n"
              "    r = dns.query.tcp(dns.message.make_query(name, 'A'), '127.0.0.11', "
              "timeout=5)\n"
              "    print(name, r.rcode(), sorted(rd.address for rrs in r.answer for rd in rrs))\n")
    out = subprocess.run(["nsenter", f"--net={netns}", sys.executable, "-c", client,
                          "dn-tcp", "upstream.test"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    pfx = lab.v4[0].rsplit(".", 1)[0]
    assert out.stdout.splitlines() == [f"dn-tcp 0 ['{pfx}.2']", "upstream.test 0 ['10.9.8.7']"]
    pallet("rm", "-f", cid, check=True)
    assert _dns_servers(pallet) == [] and leftovers(pallet) == []


def test_default_bridge_and_none_keep_the_hosts_servers(pallet):
    for net in ("bridge", "none"):
        out = pallet("run", "--rm", "--network", net, "busybox", "cat", "/etc/resolv.conf",
                     check=True).stdout
        assert "127.0.0.11" not in out and "nameserver" in out
    assert _dns_servers(pallet) == []


def test_a_container_on_anothers_network_resolves_through_its_server(pallet, lab):
    net = lab.network("--subnet", lab.v4[0])
    pfx = lab.v4[0].rsplit(".", 1)[0]
    pallet("run", "-d", "--name", "dn-x", "--network", net, "busybox", "sleep", "120",
           check=True)
    pallet("run", "-d", "--name", "dn-y", "--network", net, "busybox", "sleep", "120",
           check=True)
    out = pallet("run", "--rm", "--network", "container:dn-x", "busybox", "sh", "-c",
                 "head -1 /etc/resolv.conf; nslookup dn-y")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("nameserver 127.0.0.11\n")
    assert _addresses(out.stdout.partition("\n")[2]) == [f"{pfx}.3"]
    pallet("rm", "-f", "dn-x", "dn-y", check=True)
    assert _dns_servers(pallet) == [] and leftovers(pallet) == []


def test_aaaa_and_ipv6_ptr_on_a_dual_stack_network(pallet, lab):
    net = lab.network("--ipv6", "--subnet", lab.v4[0], "--subnet", lab.v6[0])
    v6 = str(ipaddress.ip_network(lab.v6[0])[2])  # canonical: nslookup prints it so
    pallet("run", "-d", "--name", "dn-six", "--network", net, "busybox", "sleep", "120",
           check=True)
    out = pallet("run", "--rm", "--network", net, "busybox", "sh", "-c",
                 f"nslookup -type=aaaa dn-six; nslookup -type=a dn-six; nslookup {v6}")
    assert out.returncode == 0, out.stderr
    answers = out.stdout.split("Server:")
    assert _addresses("Server:" + answers[1]) == [v6]
    assert _addresses("Server:" + answers[2]) == [lab.v4[0].rsplit(".", 1)[0] + ".2"]
    assert "ip6.arpa\tname = dn-six" in answers[3]
    pallet("rm", "-f", "dn-six", check=True)
    assert _dns_servers(pallet) == [] and leftovers(pallet) == []


def test_a_pod_on_a_user_network_answers_by_its_name_and_its_members(pallet, lab):
    """podman's pods with aardvark-dns: the pod's name and each member's name answer with
    the pod's address; its members resolve the network's other containers."""
    net = lab.network("--subnet", lab.v4[0])
    pfx = lab.v4[0].rsplit(".", 1)[0]
    pallet("pod", "create", "--name", "dn-pod", "--network", net, check=True)
    pallet("run", "-d", "--pod", "dn-pod", "--name", "dn-member", "busybox", "sleep", "120",
           check=True)
    pallet("run", "-d", "--name", "dn-peer", "--network", net, "busybox", "sleep", "120",
           check=True)
    for name in ("dn-pod", "dn-member"):
        assert _addresses(_lookup(pallet, "dn-peer", name)[1]) == [f"{pfx}.2"], name
    assert _addresses(_lookup(pallet, "dn-member", "dn-peer")[1]) == [f"{pfx}.3"]
    pallet("rename", "dn-member", "dn-member2", check=True)
    assert _addresses(_lookup(pallet, "dn-peer", "dn-member2")[1]) == [f"{pfx}.2"]
    pallet("rm", "-f", "dn-peer", check=True)
    pallet("pod", "rm", "-f", "dn-pod", check=True)
    assert _dns_servers(pallet) == [] and leftovers(pallet) == []


def test_a_network_made_with_disable_dns_has_no_embedded_server(pallet, lab):
    # podman's `network create --disable-dns`: the host's servers, no names of peers.
    net = lab.network("--subnet", lab.v4[0], "--disable-dns")
    assert json.loads(pallet("network", "inspect", net, check=True).stdout)[0][
        "DNSEnabled"] is False
    pallet("run", "-d", "--name", "dn-quiet", "--network", net, "busybox", "sleep", "120",
           check=True)
    pallet("run", "-d", "--name", "dn-quiet2", "--network", net, "busybox", "sleep", "120",
           check=True)
    resolv = pallet("exec", "dn-quiet", "cat", "/etc/resolv.conf", check=True).stdout
    assert "127.0.0.11" not in resolv and "nameserver" in resolv
    assert _addresses(_lookup(pallet, "dn-quiet", "dn-quiet2")[1]) == []
    assert _dns_servers(pallet) == []
    # A network with DNS on beside it is unaffected.
    other = lab.network("--subnet", lab.v4[1])
    assert json.loads(pallet("network", "inspect", other, check=True).stdout)[0]["DNSEnabled"]
    pallet("rm", "-f", "dn-quiet", "dn-quiet2", check=True)
    assert leftovers(pallet) == []


def test_joining_a_user_network_switches_to_the_embedded_server(pallet, lab):
    # docker: a container on the default bridge that is connected to a user-defined
    # network resolves through 127.0.0.11 from then on (its resolv.conf is rewritten).
    net = lab.network("--subnet", lab.v4[0])
    pfx = lab.v4[0].rsplit(".", 1)[0]
    pallet("run", "-d", "--name", "dn-late", "busybox", "sleep", "120", check=True)
    assert "127.0.0.11" not in pallet("exec", "dn-late", "cat", "/etc/resolv.conf",
                                      check=True).stdout
    pallet("run", "-d", "--name", "dn-there", "--network", net, "busybox", "sleep", "120",
           check=True)
    pallet("network", "connect", net, "dn-late", check=True)
    resolv = pallet("exec", "dn-late", "cat", "/etc/resolv.conf", check=True).stdout
    assert resolv.splitlines()[0] == "nameserver 127.0.0.11"
    assert _addresses(_lookup(pallet, "dn-late", "dn-there")[1]) == [f"{pfx}.2"]
    assert _addresses(_lookup(pallet, "dn-there", "dn-late")[1]) == [f"{pfx}.3"]
    pallet("rm", "-f", "dn-late", "dn-there", check=True)
    assert _dns_servers(pallet) == [] and leftovers(pallet) == []
