"""`pallet run --network container:X` (and `--ipc`/`--pid container:X`) with docker's
semantics: the joiner shares X's interfaces, addresses, ports, hostname and /etc files;
X is looked up at each start of the joiner, so it follows X across restarts; docker's
refusals of what a joiner cannot have (exit 125, nothing created); removing X, as with
docker, leaves the joiner running and the host clean.

Real kernel, Debian's CNI plugins and iptables; each test's networks are in 10.223/16.
"""

from __future__ import annotations

import json
import random
import subprocess
import time

import pytest

from tests.engine.conftest import leftovers, network_lab, run_detached

pytestmark = pytest.mark.root

HTTPD = ["sh", "-c", "mkdir -p /www && echo hello-from-x > /www/index.html && "
         "exec httpd -f -p 8080 -h /www"]
FETCH = ("(for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; "
         "exit 1)")


@pytest.fixture
def lab(pallet):
    third = random.randint(0, 125) * 2
    with network_lab(pallet, "nj", [f"10.223.{third + i}.0/24" for i in range(2)], []) as lab:
        yield lab


def _inspect(pallet, ref: str) -> dict:
    return json.loads(pallet("inspect", ref, check=True).stdout)[0]


def _bridge_ports(pallet, net: str) -> str:
    """The interfaces (veths) enslaved to NET's bridge."""
    bridge = json.loads(pallet("network", "inspect", net, check=True).stdout)[0][
        "Options"]["com.docker.network.bridge.name"]
    return subprocess.run(["ip", "-o", "link", "show", "master", bridge],
                          capture_output=True, text=True).stdout


def _exec(pallet, ref: str, script: str) -> str:
    out = pallet("exec", ref, "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_joiner_shares_interfaces_ports_hostname_and_etc_files(pallet, lab):
    net = lab.network("--subnet", lab.v4[0])
    x = run_detached(pallet, "--name", "nj-web", "--network", net, "busybox", *HTTPD)
    ip = _inspect(pallet, "nj-web")["NetworkSettings"]["Networks"][net]["IPAddress"]
    script = ("ip -4 -o addr show eth0 | awk '{print $4}'; hostname; "
              f"{FETCH}; echo @@; cat /etc/hosts; echo @@; cat /etc/resolv.conf")
    # --net is docker's alias; the joiner reaches X's server on 127.0.0.1
    out = pallet("run", "--rm", "--net", "container:nj-web", "busybox", "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    head, hosts, resolv = out.stdout.split("@@\n")
    assert head.split() == [f"{ip}/24", x[:12], "hello-from-x"]
    assert hosts == _exec(pallet, "nj-web", "cat /etc/hosts")
    assert resolv == _exec(pallet, "nj-web", "cat /etc/resolv.conf")

    j = pallet("create", "--name", "nj-side", "--network", "container:nj-web", "busybox",
               "sleep", "60", check=True).stdout.strip()
    info = _inspect(pallet, j)
    assert info["HostConfig"]["NetworkMode"] == f"container:{x}"
    assert info["NetworkSettings"]["Networks"] == {}
    assert info["NetworkSettings"]["IPAddress"] == ""
    assert info["HostsPath"] == _inspect(pallet, x)["HostsPath"]
    assert info["Config"]["Hostname"] == x[:12]
    # No endpoint of its own: it cannot join another network either (docker's words).
    out = pallet("network", "connect", net, "nj-side")
    assert out.returncode != 0
    assert ("container sharing network namespace with another container or host cannot be "
            "connected to any other network") in out.stderr


def test_joiner_follows_x_across_restarts(pallet, lab):
    net = lab.network("--subnet", lab.v4[0])
    run_detached(pallet, "--name", "nj-web", "--network", net, "busybox", *HTTPD)
    run_detached(pallet, "--name", "nj-side", "--network", "container:nj-web", "busybox",
                 "sleep", "120")
    same = "readlink /proc/self/ns/net"
    assert _exec(pallet, "nj-side", same) == _exec(pallet, "nj-web", same)

    # X restarts with a new namespace and address; the running joiner keeps the old one
    # (docker: it lost its interfaces), and its next start joins X's new one.
    pallet("restart", "-t", "0", "nj-web", check=True)
    assert _exec(pallet, "nj-side", "ip -o link | grep -c eth0 || true").strip() == "0"
    pallet("restart", "-t", "0", "nj-side", check=True)
    assert _exec(pallet, "nj-side", same) == _exec(pallet, "nj-web", same)
    assert _exec(pallet, "nj-side", FETCH) == "hello-from-x\n"

    # X stopped: the joiner cannot start; nothing of it stays mounted.
    pallet("stop", "-t", "0", "nj-web", "nj-side", check=True)
    out = pallet("start", "nj-side")
    assert out.returncode == 125
    assert "cannot join network of a non running container: nj-web" in out.stderr
    out = pallet("run", "-d", "--name", "nj-late", "--network", "container:nj-web", "busybox",
                 "true")
    assert out.returncode == 125, out.stderr
    assert "cannot join network of a non running container: nj-web" in out.stderr
    assert _inspect(pallet, "nj-late")["State"]["Status"] == "created"  # as docker's run
    ids = pallet("ps", "-aq", "--no-trunc").stdout.split()
    assert leftovers(pallet, ids) == []
    pallet("start", "nj-web", check=True)
    pallet("start", "nj-side", check=True)
    assert _exec(pallet, "nj-side", same) == _exec(pallet, "nj-web", same)


def test_removing_x_leaves_the_joiner_running_and_the_host_clean(pallet, lab):
    net = lab.network("--subnet", lab.v4[0])
    x = run_detached(pallet, "--name", "nj-web", "--network", net, "busybox", *HTTPD)
    j = run_detached(pallet, "--name", "nj-side", "--network", "container:nj-web", "busybox",
                     "sleep", "120")
    assert _bridge_ports(pallet, net).count("veth") == 1  # X's only: none of the joiner's
    out = pallet("rm", "nj-web")
    assert out.returncode != 0 and "container is running" in out.stderr
    # docker removes X (podman refuses: "has dependent containers"); the joiner keeps
    # running in the namespace it holds, with X's interface gone.
    pallet("rm", "-f", "nj-web", check=True)
    assert _inspect(pallet, "nj-side")["State"]["Running"]
    assert _exec(pallet, "nj-side", "ip -o link | cut -d: -f2").split() == ["lo"]
    assert _bridge_ports(pallet, net) == ""
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert x not in rules and x[:12] not in rules
    assert [t for t in leftovers(pallet, [x]) if x in t] == []  # the joiner's own aside
    out = pallet("restart", "-t", "0", "nj-side")
    assert out.returncode != 0 and f"No such container: {x}" in out.stderr
    pallet("rm", "-f", "nj-side", check=True)
    assert leftovers(pallet, [x, j]) == []


def test_ipc_and_pid_follow_x_across_its_restarts(pallet):
    ns = "for n in ipc pid net; do readlink /proc/self/ns/$n; done"
    run_detached(pallet, "--name", "nj-x", "--network", "none", "busybox", "sleep", "120")
    # The joiner's restart policy brings it back when X's restart kills its pid namespace:
    # the monitor looks X up again, as docker's start does.
    j = run_detached(pallet, "--name", "nj-j", "--restart", "always", "--ipc",
                     "container:nj-x", "--pid", "container:nj-x", "--network",
                     "container:nj-x", "busybox", "sleep", "120")
    assert _exec(pallet, "nj-j", ns) == _exec(pallet, "nj-x", ns)
    assert _exec(pallet, "nj-j", "ps -o args | grep -c '^sleep 120'").strip() == "2"
    pallet("restart", "-t", "0", "nj-x", check=True)
    deadline = time.monotonic() + 20
    while _inspect(pallet, j)["RestartCount"] < 1 or not _inspect(pallet, j)["State"]["Running"]:
        assert time.monotonic() < deadline, "the joiner was not restarted"
        time.sleep(0.1)
    assert _exec(pallet, "nj-j", ns) == _exec(pallet, "nj-x", ns)
    hc = _inspect(pallet, j)["HostConfig"]
    assert (hc["IpcMode"], hc["PidMode"]) == ("container:nj-x", "container:nj-x")

    # X needs to exist at create, and to run at start (docker: checked when it starts).
    pallet("stop", "-t", "0", "nj-j", "nj-x", check=True)
    k = pallet("create", "--network", "none", "--ipc", "container:nj-x", "busybox", "true",
               check=True).stdout.strip()
    out = pallet("start", k)
    assert out.returncode == 125
    assert "cannot join IPC of a non running container: nj-x" in out.stderr
    ids = pallet("ps", "-aq", "--no-trunc").stdout.split()
    assert leftovers(pallet, ids) == []


@pytest.mark.parametrize("argv, message", [
    (["-h", "name"], "conflicting options: hostname and the network mode"),
    (["--dns", "10.0.0.53"], "conflicting options: dns and the network mode"),
    (["--add-host", "db:10.0.0.2"], "conflicting options: custom host-to-IP mapping and the "
                                    "network mode"),
    (["-p", "8080:80"], "conflicting options: port publishing and the container type network "
                        "mode"),
    (["-P"], "conflicting options: port publishing and the container type network mode"),
    (["--expose", "80"], "conflicting options: port exposing and the container type network "
                         "mode"),
    (["--ip", "10.223.0.9"], "user specified IP address is supported on user defined networks "
                             "only"),
    (["--network-alias", "web"], "network-scoped aliases are only supported for user-defined "
                                 "networks"),
])
def test_what_a_joiner_cannot_have_is_refused_with_125(pallet, argv, message):
    # Checked before X is looked up, as docker's daemon validates the request first.
    out = pallet("run", "--network", "container:nj-x", *argv, "busybox", "true")
    assert out.returncode == 125 and message in out.stderr, out.stderr
    assert pallet("ps", "-aq").stdout == "" and leftovers(pallet) == []


@pytest.mark.parametrize("argv, message", [
    (["--network", "container:nj-nosuch"], "No such container: nj-nosuch"),
    (["--network", "container:"], "Invalid network mode: invalid container format "
                                  "container:<name|id>"),
    (["--pid", "container:nj-nosuch"], "No such container: nj-nosuch"),
])
def test_an_unknown_container_to_join_is_125(pallet, argv, message):
    out = pallet("run", *argv, "busybox", "true")
    assert out.returncode == 125 and message in out.stderr, out.stderr
    assert pallet("ps", "-aq").stdout == "" and leftovers(pallet) == []
