"""The computing half of networking: conflists, subnets, port mappings, and the CNI
protocol as a plugin sees it (fake plugin scripts record their env and stdin)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
import sys

import pytest

from pallet.engine import cni
from pallet.engine.network import (
    DEFAULT_NETWORK,
    Networks,
    attachment_from_entry,
    build_conflist,
    cni_rule_batches,
    fast_teardown_applies,
    ipmasq_chain,
    normalize_port_mappings,
    parse_publish,
    parse_subnet,
    pick_gateway,
    plugins_to_run,
    port_conflicts,
)
from pallet.engine.store import Store
from pallet.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

# ------------------------------------------------------------------ subnets and conflists


def test_subnet_errors_name_the_value_and_suggest_a_fix():
    with pytest.raises(InvalidArgument, match=r"did you mean 10\.213\.5\.0/24\?"):
        parse_subnet("10.213.5.7/24")
    with pytest.raises(InvalidArgument, match="invalid subnet 'banana'"):
        parse_subnet("banana")
    with pytest.raises(InvalidArgument, match="loopback"):
        parse_subnet("127.0.0.0/8")
    with pytest.raises(InvalidArgument, match="too small"):
        parse_subnet("10.213.0.0/31")
    assert str(parse_subnet(" 10.213.0.0/24 ")) == "10.213.0.0/24"


def test_gateway_defaults_to_the_first_host_and_must_lie_inside():
    net = parse_subnet("10.213.9.0/24")
    assert pick_gateway(net) == "10.213.9.1"
    assert pick_gateway(net, "10.213.9.254") == "10.213.9.254"
    for bad in ("10.213.10.1", "10.213.9.0", "10.213.9.255"):
        with pytest.raises(InvalidArgument, match=f"invalid gateway {bad}"):
            pick_gateway(net, bad)
    with pytest.raises(InvalidArgument, match="not an IP address"):
        pick_gateway(net, "gw")


def test_conflist_has_bridge_ipam_portmap_and_firewall():
    conf = build_conflist(
        "web", bridge="br-web", subnet="10.213.1.0/24", gateway="10.213.1.1", data_dir="/r/ipam"
    )
    cni.validate_conflist(conf)
    assert conf["cniVersion"] == "1.0.0" and conf["name"] == "web"
    bridge, portmap, firewall = conf["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == "br-web"
    assert bridge["isGateway"] and bridge["ipMasq"] and bridge["hairpinMode"]
    assert bridge["ipam"] == {
        "type": "host-local",
        "ranges": [[{"subnet": "10.213.1.0/24", "gateway": "10.213.1.1"}]],
        "dataDir": "/r/ipam",
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}
    assert firewall["type"] == "firewall"
    internal = build_conflist(
        "in", bridge="b", subnet="10.213.2.0/24", gateway="10.213.2.1", data_dir="/d",
        internal=True, firewall=False,
    )  # fmt: skip
    assert not internal["plugins"][0]["ipMasq"] and "routes" not in internal["plugins"][0]["ipam"]
    assert [p["type"] for p in internal["plugins"]] == ["bridge", "portmap"]


def test_ipmasq_chain_matches_the_bridge_plugins_name():
    # Seen in iptables-save after a real ADD of network ptnet-288983-2.
    cid = "57dbc73fd79c907325a1309309d708480f439519ed04acaa137f17724da1a1f9"
    assert ipmasq_chain("ptnet-288983-2", cid) == "CNI-27544f493f8f8dee632a8cef"


def test_portmap_runs_only_when_ports_are_published():
    conf = build_conflist(
        "n", bridge="b0", subnet="10.86.1.0/24", gateway="10.86.1.1", data_dir="/x"
    )
    assert [p["type"] for p in plugins_to_run(conf, [])["plugins"]] == ["bridge", "firewall"]
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]
    assert plugins_to_run(conf, ports) == conf
    assert [p["type"] for p in conf["plugins"]] == ["bridge", "portmap", "firewall"]  # a copy


def test_rule_batches_spell_the_plugins_rules():
    cid = "57dbc73fd79c907325a1309309d708480f439519ed04acaa137f17724da1a1f9"
    conf = build_conflist(
        "ptnet-288983-2", bridge="b0", subnet="10.86.1.0/24", gateway="10.86.1.1", data_dir="/x"
    )
    assert fast_teardown_applies(conf)
    entry = {
        "networkName": "ptnet-288983-2",
        "containerId": cid,
        "config": conf,
        "result": {"ips": [{"address": "10.86.1.5/24"}]},
    }
    chain = "CNI-27544f493f8f8dee632a8cef"
    comment = f'"name: \\"ptnet-288983-2\\" id: \\"{cid}\\""'
    assert cni_rule_batches(entry) == {
        "iptables-restore": "\n".join(
            [
                "*nat",
                f"-D POSTROUTING -s 10.86.1.5 -j {chain} -m comment --comment {comment}",
                f"-F {chain}",
                f"-X {chain}",
                "COMMIT",
                "*filter",
                "-D CNI-FORWARD -d 10.86.1.5/32 -m conntrack --ctstate RELATED,ESTABLISHED "
                "-j ACCEPT",
                "-D CNI-FORWARD -s 10.86.1.5/32 -j ACCEPT",
                "COMMIT",
            ]
        )
        + "\n"
    }
    # Conflists of other shapes are left to their plugins.
    assert not fast_teardown_applies({"plugins": [{"type": "ptp"}]})
    assert not fast_teardown_applies(
        {"plugins": [{"type": "bridge"}, {"type": "firewall", "backend": "firewalld"}]}
    )


# ------------------------------------------------------------------ ports


def test_port_mappings_are_normalized_and_validated():
    got = normalize_port_mappings(
        [
            {"hostPort": 8080, "containerPort": 80},
            {"host_port": 53, "container_port": 53, "protocol": "UDP", "host_ip": "127.0.0.1"},
            {"hostPort": 0, "containerPort": 9000},  # CRI: not published
        ]
    )
    assert got == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
        {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
    ]
    bad = [
        ({"hostPort": 70000, "containerPort": 80}, "between 1 and 65535"),
        ({"hostPort": 80, "containerPort": 0}, "between 1 and 65535"),
        ({"hostPort": 80, "containerPort": 80, "protocol": "icmp"}, "invalid protocol"),
        ({"hostPort": 80, "containerPort": 80, "hostIP": "localhost"}, "invalid host IP"),
        ({"hostPort": "x", "containerPort": 80}, "must be numbers"),
    ]
    for mapping, message in bad:
        with pytest.raises(InvalidArgument, match=message):
            normalize_port_mappings([mapping])
    with pytest.raises(InvalidArgument, match="published twice"):
        normalize_port_mappings([{"hostPort": 1, "containerPort": 2}] * 2)


def test_publish_specs_like_docker():
    assert parse_publish("8080:80") == {
        "hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""
    }  # fmt: skip
    assert parse_publish("127.0.0.1:5353:53/udp")["hostIP"] == "127.0.0.1"
    assert parse_publish("[::1]:8080:80")["hostIP"] == "::1"
    assert parse_publish("80")["hostPort"] == 0
    for bad in ("a:80", "1:2:3:4", "8080:", "99999:80"):
        with pytest.raises(InvalidArgument):
            parse_publish(bad)


def test_port_conflicts_respect_protocol_and_address():
    taken = [("c" * 64, {"hostPort": 8080, "protocol": "tcp", "hostIP": "127.0.0.1"})]
    assert "0.0.0.0:8080/tcp" in port_conflicts(
        [{"hostPort": 8080, "protocol": "tcp", "hostIP": ""}], taken
    )
    assert "cccccccccccc" in port_conflicts(
        [{"hostPort": 8080, "protocol": "tcp", "hostIP": "127.0.0.1"}], taken
    )
    assert not port_conflicts([{"hostPort": 8080, "protocol": "udp", "hostIP": ""}], taken)
    assert not port_conflicts([{"hostPort": 8080, "protocol": "tcp", "hostIP": "127.0.0.2"}], taken)


def test_attachment_from_a_recorded_result():
    entry = {
        "networkName": "web",
        "containerId": "abc",
        "ifName": "eth0",
        "netns": "/run/pallet/netns/p",
        "aliases": ["db"],
        "capabilityArgs": {"portMappings": [{"hostPort": 1, "containerPort": 2}]},
        "result": {
            "interfaces": [
                {"name": "br0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
                {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/pallet/netns/p"},
            ],
            "ips": [{"interface": 2, "address": "10.213.0.5/24", "gateway": "10.213.0.1"}],
        },
    }
    att = attachment_from_entry(entry)
    assert (att.ip, att.ips, att.gateway, att.mac) == (
        "10.213.0.5", ["10.213.0.5/24"], "10.213.0.1", "cc:cc:cc:cc:cc:cc"
    )  # fmt: skip
    assert att.aliases == ["db"] and att.port_mappings[0]["hostPort"] == 1


# ------------------------------------------------------------------ the CNI protocol


def test_plugin_config_passes_only_declared_capabilities():
    conflist = {
        "cniVersion": "1.0.0",
        "name": "n",
        "plugins": [
            {"type": "bridge"},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    caps = {"portMappings": [{"hostPort": 1}], "bandwidth": {"x": 1}}
    first = cni.plugin_config(conflist, conflist["plugins"][0], None, caps)
    assert first == {"type": "bridge", "name": "n", "cniVersion": "1.0.0"}
    second = cni.plugin_config(conflist, conflist["plugins"][1], {"ips": []}, caps)
    assert second["prevResult"] == {"ips": []}
    assert second["runtimeConfig"] == {"portMappings": [{"hostPort": 1}]}


def test_plugin_env_and_args():
    rt = cni.RuntimeConf("cid", "/ns", "eth0", [("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web")])
    env = cni.plugin_env("ADD", rt, ["/a", "/b"], base={"PATH": "/bin"})
    assert env == {
        "PATH": "/bin",
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "cid",
        "CNI_NETNS": "/ns",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web",
        "CNI_PATH": "/a:/b",
    }
    gone = cni.RuntimeConf("cid", "", "eth0")
    assert "CNI_NETNS" not in cni.plugin_env("DEL", gone, ["/a"], base={})
    with pytest.raises(InvalidArgument, match="not allowed"):
        cni.format_args([("A", "x;B=y")])


def test_plugin_errors_become_one_line():
    err = cni.parse_error(
        "bridge", "web", "ADD", 1,
        b'{"cniVersion":"1.0.0","code":11,"msg":"busy\\nretry","details":"lock held"}', b"",
    )  # fmt: skip
    assert str(err) == "plugin bridge (network web) failed ADD: code 11: busy retry: lock held"
    assert (err.code, err.plugin) == (11, "bridge")
    raw = cni.parse_error("x", "web", "DEL", 2, b"", b"panic: boom\n  at line 3\n")
    assert str(raw) == "plugin x (network web) failed DEL: panic: boom at line 3"
    with pytest.raises(cni.CNIError, match="printed no result"):
        cni.parse_result("bridge", "ADD", b"  ")
    with pytest.raises(cni.CNIError, match="not JSON"):
        cni.parse_result("bridge", "ADD", b"hello")


def test_conf_dir_loading(tmp_path):
    (tmp_path / "10-one.conflist").write_text(
        json.dumps({"cniVersion": "0.4.0", "name": "one", "plugins": [{"type": "bridge"}]})
    )
    (tmp_path / "20-two.conf").write_text(
        json.dumps({"cniVersion": "0.4.0", "name": "two", "type": "ptp", "ipam": {}})
    )
    (tmp_path / "30-broken.conf").write_text("{")
    (tmp_path / "README").write_text("not a config")
    confs = cni.load_conf_dir(str(tmp_path))
    assert [c["name"] for c in confs] == ["one", "two"]
    assert confs[1]["plugins"] == [{"type": "ptp", "ipam": {}}]
    with pytest.raises(InvalidArgument, match="cannot read CNI config"):
        cni.load_conf_file(str(tmp_path / "30-broken.conf"))
    assert cni.load_conf_dir(str(tmp_path / "absent")) == []


FAKE_PLUGIN = """#!{python}
import json, os, sys
conf = json.load(sys.stdin)
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open({log!r}, "a") as f:
    f.write(json.dumps({{"type": conf["type"], "env": env, "conf": conf}}) + "\\n")
if conf.get("fail") == env["CNI_COMMAND"]:
    print(json.dumps({{"cniVersion": "1.0.0", "code": 7, "msg": "told to fail"}}))
    sys.exit(1)
if env["CNI_COMMAND"] == "ADD":
    prev = conf.get("prevResult") or {{"cniVersion": "1.0.0", "interfaces": [], "ips": []}}
    prev.setdefault("seen", []).append(conf["type"])
    print(json.dumps(prev))
"""


@pytest.fixture
def fake_bin(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    for name in ("fa", "fb", "fc"):
        p = bin_dir / name
        p.write_text(FAKE_PLUGIN.format(python=sys.executable, log=str(log)))
        p.chmod(p.stat().st_mode | stat.S_IEXEC)

    def calls() -> list[dict]:
        if not log.exists():
            return []
        lines = log.read_text().splitlines()
        log.unlink()
        return [json.loads(line) for line in lines]

    return str(bin_dir), calls


def _list(*plugins: dict) -> dict:
    return {"cniVersion": "1.0.0", "name": "fake", "plugins": list(plugins)}


def test_executor_chains_add_and_reverses_del_with_the_cached_result(tmp_path, fake_bin):
    bin_dir, calls = fake_bin
    ex = cni.Executor([bin_dir], str(tmp_path / "cache"))
    conf = _list({"type": "fa"}, {"type": "fb", "capabilities": {"portMappings": True}})
    rt = cni.RuntimeConf("cid1", "/ns/x", "eth0", [("IgnoreUnknown", "1")],
                         {"portMappings": [{"hostPort": 1}]})  # fmt: skip
    result = ex.add(conf, rt, {"aliases": ["web"]})
    assert result["seen"] == ["fa", "fb"]
    add = calls()
    assert [c["type"] for c in add] == ["fa", "fb"]
    assert "prevResult" not in add[0]["conf"] and add[1]["conf"]["prevResult"]["seen"] == ["fa"]
    assert "runtimeConfig" not in add[0]["conf"]
    assert add[1]["conf"]["runtimeConfig"] == {"portMappings": [{"hostPort": 1}]}
    assert add[0]["env"]["CNI_COMMAND"] == "ADD" and add[0]["env"]["CNI_NETNS"] == "/ns/x"
    assert add[0]["env"]["CNI_PATH"] == bin_dir

    cached = ex.cached("fake", "cid1", "eth0")
    assert cached["kind"] == "cniCacheV1" and cached["aliases"] == ["web"]
    assert cached["result"]["seen"] == ["fa", "fb"]

    ex.check(conf, cni.RuntimeConf("cid1", "/ns/x", "eth0"))
    assert [(c["type"], c["conf"]["prevResult"]["seen"]) for c in calls()] == [
        ("fa", ["fa", "fb"]), ("fb", ["fa", "fb"]),
    ]  # fmt: skip

    assert ex.delete("fake", cni.RuntimeConf("cid1", "", "eth0"))
    dels = calls()
    assert [c["type"] for c in dels] == ["fb", "fa"]
    assert all(c["conf"]["prevResult"]["seen"] == ["fa", "fb"] for c in dels)
    assert dels[0]["conf"]["runtimeConfig"] == {"portMappings": [{"hostPort": 1}]}
    assert "CNI_NETNS" not in dels[0]["env"]
    assert ex.cached("fake", "cid1", "eth0") is None
    assert not ex.delete("fake", cni.RuntimeConf("cid1", "", "eth0"))  # nothing left


def test_executor_rolls_back_a_failed_add(tmp_path, fake_bin):
    bin_dir, calls = fake_bin
    ex = cni.Executor([bin_dir], str(tmp_path / "cache"))
    conf = _list({"type": "fa"}, {"type": "fb"}, {"type": "fc", "fail": "ADD"})
    with pytest.raises(
        cni.CNIError, match=r"^plugin fc \(network fake\) failed ADD: code 7: told to fail$"
    ):
        ex.add(conf, cni.RuntimeConf("cid2", "/ns/y"))
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls()] == [
        ("fa", "ADD"), ("fb", "ADD"), ("fc", "ADD"), ("fc", "DEL"), ("fb", "DEL"), ("fa", "DEL"),
    ]  # fmt: skip
    assert ex.cached_entries() == []


def test_executor_keeps_the_record_when_del_fails(tmp_path, fake_bin):
    bin_dir, calls = fake_bin
    ex = cni.Executor([bin_dir], str(tmp_path / "cache"))
    conf = _list({"type": "fa", "fail": "DEL"}, {"type": "fb"})
    ex.add(conf, cni.RuntimeConf("cid3", "/ns/z"))
    with pytest.raises(cni.CNIError, match="plugin fa"):
        ex.delete("fake", cni.RuntimeConf("cid3", "/ns/z"))
    assert [c["type"] for c in calls()][-2:] == ["fb", "fa"]  # fb still ran
    assert ex.cached("fake", "cid3", "eth0") is not None  # so DEL can be retried


def test_missing_plugin_is_named(tmp_path, fake_bin):
    bin_dir, _ = fake_bin
    ex = cni.Executor([bin_dir, "/nonexistent"], str(tmp_path / "cache"))
    with pytest.raises(
        NotFound, match=rf'^failed to find CNI plugin "nope" in path \[{bin_dir} /nonexistent\]$'
    ):
        ex.add(_list({"type": "fa"}, {"type": "nope"}), cni.RuntimeConf("cid4", "/ns"))
    assert cni.missing_plugins(_list({"type": "fa", "ipam": {"type": "ghost"}}), [bin_dir]) == [
        "ghost"
    ]


def test_version_of_a_real_plugin():
    if not os.path.exists("/usr/lib/cni/bridge"):
        pytest.skip("containernetworking-plugins not installed")
    v = cni.Executor().version("bridge")
    assert "1.0.0" in v["supportedVersions"]


# ------------------------------------------------------------------ networks in the store


@pytest.fixture
def nets(tmp_path):
    root = str(tmp_path / "root")
    with Store(root) as store:
        nets = Networks(store, root, default_subnet="10.213.250.0/24", default_bridge="ptdefault")
        yield nets
        nets.prune()  # their bridges, made at create


def test_default_network_exists_and_cannot_be_removed(nets):
    names = [r.name for r in nets.list()]
    assert names == [DEFAULT_NETWORK]
    rec = nets.get("pallet")
    assert rec.subnet == "10.213.250.0/24" and rec.gateway == "10.213.250.1"
    with pytest.raises(FailedPrecondition, match="pre-defined network"):
        nets.remove("pallet")
    moved = nets.set_default_subnet("10.213.251.0/24")
    assert moved.id == rec.id and moved.subnet == "10.213.251.0/24"
    assert (
        moved.config["conflist"]["plugins"][0]["ipam"]["ranges"][0][0]["gateway"] == "10.213.251.1"
    )


def test_create_picks_a_free_subnet_and_rejects_overlaps(nets):
    a = nets.create("alpha")
    b = nets.create("beta")
    # The first free /24s of the pool: the host's routes (other roots' bridges) may hold some.
    pool = [str(n) for n in ipaddress.ip_network("10.86.0.0/16").subnets(new_prefix=24)]
    assert pool.index(b.subnet) > pool.index(a.subnet)
    assert a.config["options"]["bridge"] == f"br-{a.id[:12]}"
    half = str(next(ipaddress.ip_network(a.subnet).subnets(new_prefix=25)))
    with pytest.raises(
        AlreadyExists,
        match=f"subnet {re.escape(half)} overlaps with {re.escape(a.subnet)} of network alpha",
    ):
        nets.create("gamma", subnet=half)
    with pytest.raises(AlreadyExists, match="overlaps with .* of network pallet"):
        nets.create("gamma", subnet="10.213.250.0/24")
    with pytest.raises(AlreadyExists, match="network with name alpha already exists"):
        nets.create("alpha", subnet="10.213.1.0/24")
    with pytest.raises(AlreadyExists, match="bridge ptb is already used"):
        nets.create("g1", subnet="10.213.1.0/24", bridge="ptb")
        nets.create("g2", subnet="10.213.2.0/24", bridge="ptb")
    with pytest.raises(InvalidArgument, match="reserved"):
        nets.create("host")
    with pytest.raises(InvalidArgument, match="unsupported network driver 'overlay'"):
        nets.create("ov", driver="overlay")
    with pytest.raises(InvalidArgument, match="--gateway needs --subnet"):
        nets.create("gw", gateway="10.0.0.1")
    with pytest.raises(InvalidArgument, match="invalid bridge name"):
        nets.create("long", subnet="10.213.3.0/24", bridge="a-very-long-bridge-name")
    with pytest.raises(NotFound, match="^network nope not found$"):
        nets.get("nope")
    assert {r.name for r in nets.list()} == {"pallet", "alpha", "beta", "g1"}


def test_remove_and_prune_user_networks(nets):
    nets.create("one", subnet="10.213.4.0/24")
    nets.create("two", subnet="10.213.5.0/24")
    assert nets.remove("one").name == "one"
    assert nets.prune() == ["two"]
    assert [r.name for r in nets.list()] == ["pallet"]


def test_conf_dir_networks_are_offered_read_only(tmp_path):
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-k8s.conflist").write_text(json.dumps(build_conflist(
        "k8s", bridge="cni0", subnet="10.213.40.0/24", gateway="10.213.40.1", data_dir="/x"
    )))  # fmt: skip
    root = str(tmp_path / "root")
    with Store(root) as store:
        nets = Networks(store, root, conf_dir=str(conf_dir), default_subnet="10.213.41.0/24")
        assert nets.pod_network() == "k8s"
        assert nets.pod_network("pallet") == "pallet"
        rec = nets.get("k8s")
        assert rec.subnet == "10.213.40.0/24" and rec.config["readonly"]
        with pytest.raises(FailedPrecondition, match="defined in"):
            nets.remove("k8s")
        with pytest.raises(AlreadyExists):
            nets.create("k8s")
        with pytest.raises(AlreadyExists, match="of network k8s"):
            nets.create("clash", subnet="10.213.40.0/25")
