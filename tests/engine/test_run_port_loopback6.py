"""A port published with `-p` answers on `[::1]` as docker's does (docker-proxy): the
container's monitor relays it, on an IPv4-only network and on a dual-stack one (where a
RETURN rule keeps portmap's DNAT off ::1); 127.0.0.1 and the host's addresses still go
through portmap; a port published on 127.0.0.1 only gets no [::1] listener; a [::1]:PORT
taken by someone else costs the container nothing; and once the container is removed
nothing listens and no rule is left.

Real kernel, Debian's CNI plugins, iptables and ip6tables. Networks use 10.217.x.0/24 and
fd00:217:x::/64, host ports 18700-18799 (other suites share the machine).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import random
import socket
import subprocess
import time
import urllib.request

import pytest

from pallet.engine import relay
from pallet.engine.network import loopback6_rules
from tests.engine.conftest import leftovers, network_lab, run_detached

HTTPD = "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www"


# -- pure: which ports answer on [::1], and the rules that keep portmap off it ---------------
def test_ports_on_all_addresses_or_ipv6_loopback_are_relayed_to_the_ipv4_address():
    maps = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "::"},
            {"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": "::1"},
            {"hostPort": 9000, "containerPort": 90, "protocol": "tcp", "hostIP": "127.0.0.1"},
            {"hostPort": 9001, "containerPort": 91, "protocol": "tcp", "hostIP": "0.0.0.0"},
            {"hostPort": 9002, "containerPort": 92, "protocol": "sctp", "hostIP": ""}]
    want = [("tcp", 8080, "10.217.0.2", 80), ("udp", 5353, "10.217.0.2", 53),
            ("tcp", 8443, "10.217.0.2", 443)]
    assert relay.targets(maps, ["fd00:217::2/64", "10.217.0.2/24"]) == want
    assert relay.targets(maps, ["fd00:217::2/64"])[0] == ("tcp", 8080, "fd00:217::2", 80)
    assert relay.targets(maps, []) == []
    assert relay.decode(relay.encode(want)) == want


def test_the_return_rules_are_named_for_their_attachment_and_only_for_ipv6_ones():
    entry = {"networkName": "n1", "containerId": "c1",
             "config": {"plugins": [{"type": "bridge"}, {"type": "portmap"}]},
             "capabilityArgs": {"portMappings": [
                 {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
                 {"hostPort": 9000, "containerPort": 90, "protocol": "tcp",
                  "hostIP": "127.0.0.1"}]},
             "result": {"ips": [{"address": "10.217.0.2/24"}, {"address": "fd00:217::2/64"}]}}
    assert loopback6_rules(entry) == [
        "-s ::1/128 -d ::1/128 -p tcp -m tcp --dport 8080 -m comment "
        "--comment pallet-lo6:n1:c1 -j RETURN"]
    # Without an IPv6 address portmap wrote no IPv6 DNAT: nothing to step around.
    assert loopback6_rules({**entry, "result": {"ips": [{"address": "10.217.0.2/24"}]}}) == []


# -- on the real kernel ------------------------------------------------------------------------
def _rules() -> str:
    return "\n".join(subprocess.run([t], capture_output=True, text=True).stdout
                     for t in ("iptables-save", "ip6tables-save"))


def _free_port() -> int:
    """A port of 18700-18799 nothing uses on 0.0.0.0 nor on [::1]."""
    for port in random.sample(range(18700, 18800), 100):
        try:
            with socket.socket() as a, socket.socket(socket.AF_INET6) as b:
                a.bind(("0.0.0.0", port))
                b.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                b.bind(("::1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port in 18700-18799")


def _get(host: str, port: int, want: str, wait: float = 10) -> str:
    """The body of http://HOST:PORT/, retried until it is WANT or WAIT runs out."""
    url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
    body, deadline = "", time.monotonic() + wait
    while True:
        try:
            body = urllib.request.urlopen(url, timeout=3).read().decode().strip()
        except OSError as e:
            body = f"error: {e}"
        if body == want or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def _refused(port: int, proto: str = "tcp") -> bool:
    """Nothing listens on [::1]:PORT: a connect is refused at once (it does not hang)."""
    if proto == "udp":
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("::1", port))
                return True
            except OSError:
                return False
    try:
        socket.create_connection(("::1", port), timeout=3).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def lab(pallet):
    """Networks of this test (10.217.x.0/24, fd00:217:x::/64), removed afterwards."""
    third = random.randint(0, 250)
    with network_lab(pallet, "v6", [f"10.217.{third + i}.0/24" for i in range(2)],
                     [f"fd00:217:{third + i:x}::/64" for i in range(2)]) as lab:
        yield lab


_run = run_detached


def _monitor_log(pallet, cid: str) -> str:
    with open(os.path.join(pallet.root, "containers", cid, "monitor.log")) as f:
        return f.read()


@pytest.mark.root
@pytest.mark.parametrize("stack", ["ipv4", "dual"])
def test_a_published_port_answers_on_ipv6_loopback_and_nothing_is_left_after_rm(
        pallet, lab, stack):
    dual = stack == "dual"
    flags = ["--subnet", lab.v4[0]] + (["--subnet", lab.v6[0]] if dual else [])
    net = lab.network(*flags)
    port = _free_port()
    cid = _run(pallet, "--name", f"v6-web-{stack}", "--network", net, "-p", f"{port}:80",
               "busybox", "sh", "-c", HTTPD.format(body=stack))
    # [::1] as docker-proxy answers it; on a dual-stack network this hung before.
    assert _get("::1", port, stack) == stack
    assert _get("127.0.0.1", port, stack) == stack
    gw4 = str(ipaddress.ip_network(lab.v4[0])[1])  # an address of the host's: portmap's DNAT
    assert _get(gw4, port, stack) == stack
    if dual:
        assert _get(str(ipaddress.ip_network(lab.v6[0])[1]), port, stack) == stack
        assert f"pallet-lo6:{net}:{cid}" in _rules()
    else:
        assert f"pallet-lo6:{net}:" not in _rules()
    # Several clients at once, each with its whole answer.
    bodies = [_get("::1", port, stack, wait=0) for _ in range(20)]
    assert bodies == [stack] * 20

    pallet("rm", "-f", cid, check=True)
    assert _refused(port)
    rules = _rules()
    assert cid not in rules and cid[:12] not in rules and f"--dport {port} " not in rules
    assert lab.v4[0].rsplit(".", 1)[0] + "." not in rules
    assert not leftovers(pallet, [cid])


@pytest.mark.root
def test_a_port_published_on_127_0_0_1_only_does_not_answer_on_ipv6_loopback(pallet, lab):
    net = lab.network("--subnet", lab.v4[0], "--subnet", lab.v6[0])
    port = _free_port()
    cid = _run(pallet, "--network", net, "-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c",
               HTTPD.format(body="four"))
    assert _get("127.0.0.1", port, "four") == "four"
    assert _refused(port)
    assert f"pallet-lo6:{net}:" not in _rules()
    pallet("rm", "-f", cid, check=True)


@pytest.mark.root
def test_a_taken_ipv6_loopback_port_is_logged_and_the_container_runs(pallet, lab):
    net = lab.network("--subnet", lab.v4[0])
    port = _free_port()
    with socket.socket(socket.AF_INET6) as squatter:
        squatter.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        squatter.bind(("::1", port))
        squatter.listen()
        cid = _run(pallet, "--network", net, "-p", f"{port}:80", "busybox", "sh", "-c",
                   HTTPD.format(body="still"))
        assert _get("127.0.0.1", port, "still") == "still"
        assert f"not relaying [::1]:{port}/tcp: Address already in use" in \
            _monitor_log(pallet, cid)
        assert json.loads(pallet("inspect", cid).stdout)[0]["State"]["Running"] is True
    pallet("rm", "-f", cid, check=True)
    assert not leftovers(pallet, [cid])


@pytest.mark.root
def test_udp_is_relayed_and_the_relay_lives_through_a_restart(pallet, lab):
    net = lab.network("--subnet", lab.v4[1], "--subnet", lab.v6[1])
    port = _free_port()
    # The container's process exits every 2 s and --restart brings it back, in the same
    # network namespace: the monitor's relay stays.
    cid = _run(pallet, "--restart", "always", "--network", net, "-p", f"{port}:5353/udp",
               "busybox", "sleep", "2")
    netns = os.path.join(pallet.run_root, cid, "netns")
    echo = subprocess.Popen(
        ["nsenter", f"--net={netns}", "python3", "-c",
         "import socket\n"
         "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
         "s.bind(('::', 5353))\n"
         "while True:\n"
         "    d, a = s.recvfrom(100)\n"
         "    s.sendto(b'echo:' + d, a)\n"])
    try:
        def ask(word: bytes) -> bytes:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                s.settimeout(0.5)
                s.connect(("::1", port))
                for _ in range(20):
                    s.send(word)
                    try:
                        return s.recv(100)
                    except OSError:
                        continue
            return b""

        assert ask(b"one") == b"echo:one"
        deadline = time.monotonic() + 15
        while pallet("inspect", "-f", "{{.RestartCount}}", cid).stdout.strip() in ("", "0"):
            assert time.monotonic() < deadline, "no restart"
            time.sleep(0.2)
        assert ask(b"two") == b"echo:two"
    finally:
        echo.kill()
        echo.wait()
    pallet("rm", "-f", cid, check=True)
    assert _refused(port, "udp")
    assert cid not in _rules()
    assert not leftovers(pallet, [cid])


def _echo_connection(port: int) -> socket.socket:
    """A connection through [::1]:PORT to the container's `nc -e cat`, once it echoes (nc
    listens again a moment after each connection ends: until then the relay's connect to
    the container is refused and it closes ours)."""
    deadline = time.monotonic() + 10
    while True:
        conn = socket.create_connection(("::1", port), timeout=5)
        try:
            conn.sendall(b"hello\n")
            if conn.recv(100) == b"hello\n":
                return conn
        except ConnectionResetError:
            pass  # closed by the relay with our bytes unread
        conn.close()
        assert time.monotonic() < deadline, "no echo through [::1]"
        time.sleep(0.1)


@pytest.mark.root
def test_a_connection_open_while_the_monitor_goes_lean_is_kept(pallet, lab):
    # Without a zygote the monitor re-executes itself as a bare interpreter once the
    # container runs: the relay's listener and its open connections go with it.
    pallet.env.update(PALLET_NO_ZYGOTE="1", PALLET_MONITOR_LEAN_AFTER="1.5")
    net = lab.network("--subnet", lab.v4[1])
    port = _free_port()
    cid = _run(pallet, "--network", net, "-p", f"{port}:7", "busybox", "sh", "-c",
               "while true; do nc -l -p 7 -e cat; done")
    conn = _echo_connection(port)
    with conn:
        with open(os.path.join(pallet.run_root, cid, "monitor.pid")) as f:
            mon = int(f.read().split()[0])
        deadline = time.monotonic() + 10
        while b"--resume" not in open(f"/proc/{mon}/cmdline", "rb").read():
            assert time.monotonic() < deadline, "the monitor did not go lean"
            time.sleep(0.1)
        conn.sendall(b"after\n")
        assert conn.recv(100) == b"after\n"
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(100) == b""
    _echo_connection(port).close()  # the listener went lean too
    pallet("rm", "-f", cid, check=True)
    with pytest.raises(OSError) as e:
        socket.create_connection(("::1", port), timeout=3)
    assert e.value.errno == errno.ECONNREFUSED
    assert not leftovers(pallet, [cid])
