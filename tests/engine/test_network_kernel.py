"""Networks on the real kernel with Debian's CNI plugins: namespaces that ping each
other, published ports, detach from half-gone state, and a clean host afterwards."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import threading

import pytest

from pallet.engine import cni, netns
from pallet.engine.network import delete_link
from pallet.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.engine.network_fixtures import NetworkLab, free_port, iptables_dump

pytestmark = pytest.mark.root

PLUGINS = ("bridge", "host-local", "loopback", "portmap", "firewall")


@pytest.fixture
def lab(tmp_path):
    missing = [p for p in PLUGINS if not os.path.exists(f"/usr/lib/cni/{p}")]
    if missing:
        pytest.skip(f"CNI plugins missing from /usr/lib/cni: {missing}")
    the_lab = NetworkLab(tmp_path)
    try:
        yield the_lab
    finally:
        the_lab.close()
    assert the_lab.leftovers() == []


def _serve_once_per_accept(listener: socket.socket, reply: bytes) -> threading.Thread:
    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed by the test
            with conn:
                conn.sendall(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def _fetch(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=5) as c:
        return c.recv(100)


# ------------------------------------------------------------------ netns


def test_netns_create_is_idempotent_and_remove_leaves_nothing(tmp_path):
    run_dir = str(tmp_path / "ns")
    path = netns.create("pt-ns-a", run_dir)
    assert netns.create("pt-ns-a", run_dir) == path
    assert netns.is_netns(path)
    assert netns.list_names(run_dir) == ["pt-ns-a"]
    # A new namespace of its own: only lo, and not the host's.
    assert netns.run_in(path, socket.if_nameindex) == [(1, "lo")]
    assert os.stat(path).st_ino != os.stat("/proc/self/ns/net").st_ino
    netns.remove(path)
    netns.remove(path)
    assert not os.path.exists(path)
    with open("/proc/self/mountinfo") as f:
        assert run_dir not in f.read()


def test_netns_leftover_empty_file_is_reused(tmp_path):
    run_dir = tmp_path / "ns"
    run_dir.mkdir()
    (run_dir / "pt-ns-b").write_text("")  # what a crash between create and mount leaves
    path = netns.create("pt-ns-b", str(run_dir))
    try:
        assert netns.is_netns(path)
    finally:
        netns.remove(path)


def test_netns_bad_input(tmp_path):
    with pytest.raises(InvalidArgument, match="invalid network namespace name"):
        netns.create("../escape", str(tmp_path))
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(InvalidArgument, match="is not a network namespace"):
        netns.run_in(str(plain), lambda: None)
    assert sorted(os.listdir(tmp_path)) == ["plain"]


# ------------------------------------------------------------------ attach / detach


def test_two_namespaces_on_one_network_reach_each_other(lab):
    rec = lab.network()
    a, b = lab.netns(), lab.netns()
    ida, idb = lab.container_id(), lab.container_id()
    lab.nets.loopback_up(a, ida)
    lab.nets.loopback_up(b, idb)
    att_a = lab.attach(a, ida, rec.name, aliases=["alpha", "alpha.example"])
    att_b = lab.attach(b, idb, rec.name, aliases=["beta"])

    prefix = rec.subnet.rsplit(".", 1)[0]
    assert att_a.ip.startswith(prefix + ".") and att_b.ip.startswith(prefix + ".")
    assert att_a.ip != att_b.ip
    assert att_a.gateway == rec.gateway == f"{prefix}.1"
    assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", att_a.mac)
    assert att_a.interface == "eth0" and att_a.netns == a
    # lo is up (the loopback plugin's doing) and eth0 exists inside, not on the host.
    assert netns.run_in(a, lambda: open("/sys/class/net/lo/operstate").read().strip()) in (
        "unknown",
        "up",
    )
    assert "eth0" in dict((n, i) for i, n in netns.run_in(a, socket.if_nameindex))
    assert os.path.isdir(f"/sys/class/net/{rec.config['options']['bridge']}/bridge")

    assert lab.ping(a, att_b.ip)
    assert lab.ping(b, att_a.ip)

    assert sorted(lab.nets.hosts_entries(rec.name)) == sorted(
        [(att_a.ip, ["alpha", "alpha.example"]), (att_b.ip, ["beta"])]
    )
    info = lab.nets.inspect(rec.name)
    assert info["Containers"][ida]["IPv4Address"] == att_a.ips[0]
    assert info["Containers"][ida]["Name"] == "alpha"

    lab.nets.check(a, ida, rec.name)  # nothing drifted

    # The network cannot go while someone is on it.
    with pytest.raises(FailedPrecondition, match="has active endpoints"):
        lab.nets.remove(rec.name)

    lab.nets.detach(ida, rec.name)
    lab.nets.detach(idb, rec.name)
    lab.nets.detach(idb, rec.name)  # again: nothing to do, no error
    assert lab.nets.attachments(rec.name) == []
    assert ida not in iptables_dump()
    lab.nets.remove(rec.name)
    assert not os.path.exists(f"/sys/class/net/{rec.config['options']['bridge']}")


def test_attach_twice_is_idempotent(lab):
    rec = lab.network()
    path, cid = lab.netns(), lab.container_id()
    first = lab.attach(path, cid, rec.name)
    again = lab.attach(path, cid, rec.name)
    assert again.ips == first.ips and again.mac == first.mac
    assert len(lab.nets.attachments(rec.name)) == 1


def test_second_interface_on_another_network(lab):
    one, two = lab.network(), lab.network()
    path, cid = lab.netns(), lab.container_id()
    lab.attach(path, cid, one.name)
    second = lab.attach(path, cid, two.name, ifname="eth1")
    names = {n for _, n in netns.run_in(path, socket.if_nameindex)}
    assert {"eth0", "eth1"} <= names
    assert second.gateway == two.gateway
    lab.nets.detach_all(cid)
    assert lab.nets.attachments() == []


def test_published_port_reaches_a_listener_in_the_namespace(lab):
    rec = lab.network()
    path, cid = lab.netns(), lab.container_id()
    lab.nets.loopback_up(path, cid)
    host_port = free_port()
    att = lab.attach(
        path, cid, rec.name, port_mappings=[{"hostPort": host_port, "containerPort": 8080}]
    )
    assert att.port_mappings == [
        {"hostPort": host_port, "containerPort": 8080, "protocol": "tcp", "hostIP": ""}
    ]
    # The socket is made inside the namespace and served from this process.
    listener = netns.run_in(path, lambda: socket.create_server(("0.0.0.0", 8080)))
    try:
        _serve_once_per_accept(listener, b"hello from the pod")
        # Through the bridge's gateway address (the host's side of the network)...
        assert _fetch(rec.gateway, host_port) == b"hello from the pod"
        # ...and from localhost: portmap sets route_localnet on the bridge for this.
        assert _fetch("127.0.0.1", host_port) == b"hello from the pod"
    finally:
        listener.close()
    assert f"dpts:{host_port}" in iptables_dump() or str(host_port) in iptables_dump()

    # The same host port again: refused by name before any plugin runs.
    other, other_id = lab.netns(), lab.container_id()
    with pytest.raises(FailedPrecondition, match=rf"0\.0\.0\.0:{host_port}/tcp.*already allocated"):
        lab.attach(
            other, other_id, rec.name, port_mappings=[{"hostPort": host_port, "containerPort": 80}]
        )
    assert lab.nets.attachment(other_id, rec.name) is None

    lab.nets.detach(cid, rec.name)
    dump = iptables_dump()
    assert cid not in dump and f"--dport {host_port} " not in dump


def test_port_held_by_a_host_process_is_reported(lab):
    rec = lab.network()
    path, cid = lab.netns(), lab.container_id()
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(FailedPrecondition, match=f"Bind for 0.0.0.0:{port}/tcp failed"):
            lab.attach(path, cid, rec.name, port_mappings=[{"hostPort": port, "containerPort": 80}])
    assert lab.nets.attachments() == []
    assert netns.run_in(path, socket.if_nameindex) == [(1, "lo")]  # no veth was made


def test_detach_after_the_namespace_is_gone(lab):
    rec = lab.network()
    path, cid = lab.netns(), lab.container_id()
    att = lab.attach(
        path, cid, rec.name, port_mappings=[{"hostPort": free_port(), "containerPort": 80}]
    )
    netns.remove(path)  # the pod's namespace vanished before its network was torn down
    lab.nets.detach(cid, rec.name, netns_path=path)
    lab.nets.detach(cid, rec.name)
    ipam = os.path.join(lab.root, "cni", "networks", rec.name)
    assert att.ip not in os.listdir(ipam)
    assert cid not in iptables_dump()


def test_portmap_is_recorded_only_when_it_ran(lab):
    rec = lab.network()
    a, b = lab.netns(), lab.netns()
    ida, idb = lab.container_id(), lab.container_id()
    lab.attach(a, ida, rec.name)
    lab.attach(b, idb, rec.name, port_mappings=[{"hostPort": free_port(), "containerPort": 80}])
    kinds = {
        cid: [
            p["type"] for p in lab.nets.executor.cached(rec.name, cid, "eth0")["config"]["plugins"]
        ]
        for cid in (ida, idb)
    }
    assert kinds == {ida: ["bridge", "firewall"], idb: ["bridge", "portmap", "firewall"]}
    lab.nets.check(a, ida, rec.name)  # CHECK runs what ADD ran: no portmap here
    lab.nets.detach(ida, rec.name)
    lab.nets.detach(idb, rec.name)
    assert ida not in iptables_dump() and idb not in iptables_dump()


def test_detach_when_the_rules_went_first(lab):
    # The one-transaction removal fails as a whole; the rule-by-rule path finishes.
    rec = lab.network()
    path, cid = lab.netns(), lab.container_id()
    att = lab.attach(path, cid, rec.name)
    subprocess.run(
        ["iptables", "-w", "-D", "CNI-FORWARD", "-s", f"{att.ip}/32", "-j", "ACCEPT"], check=True
    )
    lab.nets.detach(cid, rec.name)
    assert cid not in iptables_dump() and f"{att.ip}/32" not in iptables_dump()
    assert netns.run_in(path, socket.if_nameindex) == [(1, "lo")]


def test_a_new_namespace_for_the_same_attachment_replaces_the_old_one(lab):
    rec = lab.network()
    cid = lab.container_id()
    old = lab.netns()
    lab.attach(old, cid, rec.name)
    netns.remove(old)
    new = lab.netns()
    att = lab.attach(new, cid, rec.name)
    assert att.netns == new
    assert lab.ping(new, rec.gateway)


def test_check_reports_what_drifted(lab):
    rec = lab.network()
    path, cid = lab.netns(), lab.container_id()
    lab.attach(path, cid, rec.name)
    netns.run_in(path, lambda: delete_link("eth0"))
    with pytest.raises(cni.CNIError) as err:
        lab.nets.check(path, cid, rec.name)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"plugin bridge (network {rec.name}) failed CHECK")


def test_default_network_serves_pods(lab):
    # The lab gives the default network a private bridge and subnet for the test.
    pod_net = lab.nets.pod_network()
    assert pod_net == "pallet"
    path, cid = lab.netns(), lab.container_id()
    att = lab.attach(
        path, cid, pod_net, cni_args={"K8S_POD_NAME": "web", "K8S_POD_NAMESPACE": "default"}
    )
    assert att.ip.startswith(lab.subnets[0].rsplit(".", 1)[0] + ".")
    assert lab.ping(path, att.gateway)
    assert lab.nets.network_ready() == (True, "")


# ------------------------------------------------------------------ bad input


def test_unknown_network(lab):
    path, cid = lab.netns(), lab.container_id()
    with pytest.raises(NotFound, match="^network nope not found$"):
        lab.nets.attach(path, cid, "nope")


def test_missing_plugin_binary_fails_before_anything_is_made(lab, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for p in ("bridge", "host-local", "firewall"):  # no portmap
        os.symlink(f"/usr/lib/cni/{p}", bin_dir / p)
    nets = lab.networks(bin_dirs=[str(bin_dir)])
    rec = lab.network()
    path, cid = lab.netns(), lab.container_id()
    with pytest.raises(NotFound) as err:
        nets.attach(path, cid, rec.name)
    assert str(err.value) == (
        f'network {rec.name}: failed to find CNI plugin "portmap" in path [{bin_dir}]; '
        "install containernetworking-plugins"
    )
    ready, why = nets.network_ready()
    assert not ready and "portmap" in why
    assert netns.run_in(path, socket.if_nameindex) == [(1, "lo")]


def test_failing_plugin_mid_chain_is_rolled_back(lab, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for p in ("bridge", "host-local", "firewall"):
        os.symlink(f"/usr/lib/cni/{p}", bin_dir / p)
    # A portmap that refuses every ADD the way a real plugin reports errors.
    fake = bin_dir / "portmap"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$CNI_COMMAND" = ADD ]; then\n'
        '  echo \'{"cniVersion":"1.0.0","code":7,"msg":"no port today","details":"fake"}\'\n'
        "  exit 1\nfi\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    nets = lab.networks(bin_dirs=[str(bin_dir)])
    rec = lab.network()
    path, cid = lab.netns(), lab.container_id()
    with pytest.raises(cni.CNIError) as err:
        nets.attach(
            path, cid, rec.name, port_mappings=[{"hostPort": free_port(), "containerPort": 80}]
        )
    assert str(err.value) == (
        f"plugin portmap (network {rec.name}) failed ADD: code 7: no port today: fake"
    )
    # The bridge plugin's ADD was undone: no interface, no address, no NAT rule.
    assert netns.run_in(path, socket.if_nameindex) == [(1, "lo")]
    assert cid not in iptables_dump()
    assert nets.attachments() == []


def test_concurrent_attaches_get_distinct_addresses_and_all_detach(lab):
    # The CRI starts many pods at once; plugins, IPAM and our records must keep up.
    from concurrent.futures import ThreadPoolExecutor

    rec = lab.network()
    pods = [(lab.netns(), lab.container_id()) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        atts = list(pool.map(lambda p: lab.attach(p[0], p[1], rec.name), pods))
    assert len({a.ip for a in atts}) == 8
    assert len(lab.nets.attachments(rec.name)) == 8
    assert lab.ping(pods[0][0], atts[-1].ip)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: lab.nets.detach(p[1], rec.name), pods))
    assert lab.nets.attachments(rec.name) == []
