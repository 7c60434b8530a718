"""`pallet network create/ls/inspect/rm/prune` as a docker user types them: docker's
output and exit codes, one-line errors; on the host only the network's bridge (made at create,
as docker makes it, and removed with the network)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def pallet(network_cli):
    return network_cli


def test_create_ls_inspect_rm(pallet):
    code, out, _ = pallet(
        "create", "--subnet", "10.213.60.0/24", "--gateway", "10.213.60.254",
        "--label", "team=web", "-o", "com.docker.network.bridge.name=ptcli60", "web",
    )  # fmt: skip
    assert code == 0
    net_id = out.strip()
    assert len(net_id) == 64

    code, out, _ = pallet("ls")
    lines = out.splitlines()
    assert lines[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert [line.split()[1] for line in lines[1:]] == ["pallet", "web"]
    assert f"{net_id[:12]}   web" in out

    code, out, _ = pallet("ls", "--format", "json", "--filter", "label=team=web")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["Name"], r["Subnet"], r["Gateway"], r["Labels"]) for r in rows] == [
        ("web", "10.213.60.0/24", "10.213.60.254", "team=web")
    ]
    assert pallet("ls", "-q", "--no-trunc", "-f", "name=we")[1].split() == [net_id]
    assert pallet("ls", "-q", "-f", "type=builtin")[1].split() != []

    code, out, _ = pallet("inspect", "web")
    (info,) = json.loads(out)
    assert info["Id"] == net_id and info["Driver"] == "bridge"
    assert info["IPAM"]["Config"] == [{"Subnet": "10.213.60.0/24", "Gateway": "10.213.60.254"}]
    assert info["Options"]["com.docker.network.bridge.name"] == "ptcli60"
    assert info["Labels"] == {"team": "web"} and info["Containers"] == {}

    assert pallet("rm", "web") == (0, "web\n", "")
    assert pallet("ls", "-q", "-f", "name=web")[1] == ""


def test_errors_are_one_line_with_docker_exit_codes(pallet):
    assert pallet("create", "--subnet", "10.213.61.0/24", "one")[0] == 0
    cases = [
        (("create", "--subnet", "10.213.61.0/25", "two"),
         "Error: subnet 10.213.61.0/25 overlaps with 10.213.61.0/24 of network one; choose another --subnet\n"),
        (("create", "--subnet", "10.213.62.0/33", "two"), "Error: invalid subnet '10.213.62.0/33'"),
        (("create", "--subnet", "10.213.62.0/24", "one"), "Error: network with name one already exists\n"),
        (("create", "-d", "macvlan", "two"), "Error: unsupported network driver 'macvlan'; use bridge\n"),
        (("create", "-o", "foo=bar", "two"), "Error: unsupported network option 'foo'\n"),
    ]  # fmt: skip
    for argv, message in cases:
        code, out, err = pallet(*argv)
        assert (code, out) == (125, ""), argv
        assert err.startswith(message) and err.count("\n") == 1, err
    # A filter docker's daemon does not know: its words, exit 1.
    assert pallet("ls", "--filter", "color=red") == (1, "", "Error: invalid filter 'color'\n")

    code, out, err = pallet("inspect", "one", "nope")
    assert code == 1 and err == "Error: No such network: nope\n"
    assert [n["Name"] for n in json.loads(out)] == ["one"]

    code, out, err = pallet("rm", "nope", "pallet", "one")
    assert code == 1 and out == "one\n"
    assert err.splitlines() == [
        "Error: network nope not found",
        "Error: pallet is a pre-defined network and cannot be removed",
    ]
    assert pallet("rm", "-f", "nope") == (0, "", "")


def test_prune_keeps_the_default_network(pallet):
    assert pallet("create", "--subnet", "10.213.63.0/24", "net-a")[0] == 0
    assert pallet("create", "--subnet", "10.213.64.0/24", "--label", "keep=1", "net-b")[0] == 0
    assert pallet("prune", "-f", "--filter", "label=keep") == (0, "Deleted Networks:\nnet-b\n", "")
    assert pallet("prune", "-f") == (0, "Deleted Networks:\nnet-a\n", "")
    assert pallet("prune", "-f") == (0, "", "")
    assert pallet("ls", "-q")[1].count("\n") == 1
