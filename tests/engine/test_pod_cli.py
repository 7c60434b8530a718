"""`pallet pod` as a podman user drives it: a pod whose containers reach each other on
localhost and share a hostname and IPC, its port published on the host, a status that
follows its containers, podman's errors for bad input, and a clean host after `pod rm`.

Real kernel, CNI and iptables; networks made here take 10.225.0.0/16 subnets.
"""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.engine.conftest import Pallet, leftovers

pytestmark = pytest.mark.root

NS_LINKS = "for k in ipc net uts; do readlink /proc/self/ns/$k; done"
HTTPD = "mkdir -p /www && echo hello-from-pod > /www/i && exec httpd -f -p 8080 -h /www"


@pytest.fixture
def p(pallet: Pallet) -> Iterator[Pallet]:
    """The test's pallet; its pods are force-removed afterwards."""
    yield pallet
    pallet("pod", "rm", "-f", "-a")


@pytest.fixture
def net(p: Pallet) -> Iterator[str]:
    name = f"pd-{uuid.uuid4().hex[:6]}"
    subnet = f"10.225.{random.randint(0, 254)}.0/24"
    out = p("network", "create", "--subnet", subnet, name)
    assert out.returncode == 0, out.stderr
    yield name
    p("pod", "rm", "-f", "-a")
    p("network", "rm", name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _create(p: Pallet, *flags: str) -> str:
    out = p("pod", "create", *flags)
    assert out.returncode == 0, out.stderr
    pid = out.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", pid), out.stdout
    return pid


def _status(p: Pallet, pod: str) -> str:
    out = p("pod", "inspect", "--format", "{{.State}}", pod)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _host_traces(pod_id: str) -> list[str]:
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    return [f"iptables {r}" for r in rules.splitlines() if pod_id[:12] in r]


def _wait_http(url: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_create_prints_the_id_and_ls_lists_it_as_podman(p):
    pid = _create(p, "--name", "pd-one", "--label", "tier=web")
    two = _create(p, "--name", "pd-two")
    out = p("pod", "ls")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert re.match(r"POD ID {8}NAME {8}STATUS {6}CREATED +# OF CONTAINERS$", lines[0]), lines
    row = next(line for line in lines if line.startswith(pid[:12]))
    assert re.match(rf"{pid[:12]}  pd-one {{6}}Created {{5}}.+ ago +0$", row), row
    assert p("pod", "ps", "-q", "--no-trunc", "--filter", "label=tier=web").stdout.split() \
        == [pid]
    assert p("pod", "list", "-q", "--filter", "name=^pd-t").stdout.split() == [two[:12]]
    [obj] = json.loads(p("pod", "ls", "--format", "json", "--filter", "name=pd-one").stdout)
    assert (obj["Id"], obj["Name"], obj["Status"], obj["Labels"], obj["Containers"]) == \
        (pid, "pd-one", "Created", {"tier": "web"}, [])
    assert sorted(p("pod", "ls", "--format", "{{.Name}} {{.NumberOfContainers}}",
                    "--filter", "status=created").stdout.splitlines()) == ["pd-one 0",
                                                                           "pd-two 0"]
    assert p("pod", "exists", "pd-one").returncode == 0
    assert p("pod", "exists", "pd-nope").returncode == 1
    info = json.loads(p("pod", "inspect", "pd-one").stdout)
    assert info["Id"] == pid and info["Hostname"] == "pd-one"
    assert info["SharedNamespaces"] == ["ipc", "net", "uts"] and info["CreateInfra"] is False


def test_containers_of_a_pod_share_localhost_hostname_and_ipc(p):
    _create(p, "--name", "pd-share", "--network", "none")
    out = p("run", "-d", "--pod", "pd-share", "--name", "pd-web", "busybox", "sh", "-c", HTTPD)
    assert out.returncode == 0, out.stderr
    out = p("run", "--rm", "--pod", "pd-share", "busybox", "sh", "-c",
            "for i in $(seq 50); do wget -qO- http://localhost:8080/i && break; sleep 0.1; "
            f"done; hostname; {NS_LINKS}")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[:2] == ["hello-from-pod", "pd-share"]
    web = p("exec", "pd-web", "sh", "-c", NS_LINKS).stdout.split()
    assert lines[2:] == web  # the same IPC, network and UTS namespaces
    host = [subprocess.run(["readlink", f"/proc/self/ns/{k}"], capture_output=True,
                           text=True).stdout.strip() for k in ("ipc", "net", "uts")]
    assert not set(host) & set(web)
    # a container outside the pod is not in it
    out = p("run", "--rm", "--network", "none", "busybox", "wget", "-qO-", "-T", "1",
            "http://localhost:8080/i")
    assert out.returncode != 0
    ps = p("ps", "--pod").stdout.splitlines()
    assert ps[0].split()[-3:] == ["POD", "ID", "PODNAME"]
    assert any(line.endswith("pd-share") and "pd-web" in line for line in ps[1:]), ps


def test_shared_pid_namespace_with_share_plus_pid(p):
    _create(p, "--name", "pd-pid", "--network", "none", "--share", "+pid")
    assert p("run", "-d", "--pod", "pd-pid", "busybox", "sleep", "1234").returncode == 0
    out = p("run", "--rm", "--pod", "pd-pid", "busybox", "ps", "-o", "args")
    assert out.returncode == 0, out.stderr
    assert "sleep 1234" in out.stdout


def test_ports_are_published_on_the_pod(p, net):
    port = _free_port()
    pid = _create(p, "--name", "pd-port", "--network", net, "-p", f"{port}:8080")
    assert p("run", "-d", "--pod", "pd-port", "busybox", "sh", "-c", HTTPD).returncode == 0
    assert _wait_http(f"http://127.0.0.1:{port}/i").strip() == "hello-from-pod"
    assert f"0.0.0.0:{port}->8080/tcp" in p("ps").stdout  # a member shows its pod's ports
    info = json.loads(p("pod", "inspect", pid).stdout)
    assert info["InfraConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": "",
                                                                 "HostPort": str(port)}]}
    # -p on a container of the pod: podman's refusal, nothing created
    out = p("run", "--pod", "pd-port", "-p", "9090:80", "busybox", "true")
    assert out.returncode == 125
    assert out.stderr.strip() == ("Error: invalid config provided: published or exposed "
                                  "ports must be defined when the pod is created: network "
                                  "cannot be configured when it is shared with a pod")


def test_status_follows_the_containers(p):
    _create(p, "--name", "pd-st", "--network", "none")
    assert _status(p, "pd-st") == "Created"
    assert p("run", "-d", "--pod", "pd-st", "--name", "pd-st-a", "busybox", "sleep",
             "1000").returncode == 0
    assert _status(p, "pd-st") == "Running"
    assert p("create", "--pod", "pd-st", "--name", "pd-st-b", "busybox", "sleep",
             "1000").returncode == 0
    assert _status(p, "pd-st") == "Degraded"
    out = p("pod", "stop", "-t", "0", "pd-st")
    assert out.returncode == 0 and len(out.stdout.strip()) == 64, out.stderr
    assert _status(p, "pd-st") == "Stopped"  # one exited, one never started
    out = p("pod", "start", "pd-st")
    assert out.returncode == 0, out.stderr
    assert _status(p, "pd-st") == "Running"
    assert p("pod", "pause", "pd-st").returncode == 0
    assert _status(p, "pd-st") == "Paused"
    assert p("pod", "unpause", "pd-st").returncode == 0
    top = p("pod", "top", "pd-st")
    assert top.returncode == 0 and top.stdout.count("sleep 1000") == 2, top.stdout
    assert p("pod", "kill", "pd-st").returncode == 0  # KILL: sleep as pid 1 ignores TERM
    deadline = time.monotonic() + 10
    while _status(p, "pd-st") != "Exited" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _status(p, "pd-st") == "Exited"
    out = p("pod", "kill", "-s", "BOGUS", "pd-st")
    assert (out.returncode, out.stderr.strip()) == (125, "Error: invalid signal: BOGUS")
    assert p("pod", "restart", "pd-st").returncode == 0
    assert _status(p, "pd-st") == "Running"


def test_rm_refuses_running_containers_and_rm_f_leaves_the_host_clean(p, net):
    port = _free_port()
    pid = _create(p, "--name", "pd-rm", "--network", net, "-p", f"{port}:8080")
    out = p("run", "-d", "--pod", "pd-rm", "busybox", "sleep", "1000")
    assert out.returncode == 0, out.stderr
    cid = out.stdout.strip()
    out = p("pod", "rm", "pd-rm")
    assert out.returncode == 125
    assert out.stderr.strip() == (
        f"Error: pod {pid} has containers that are not ready to be removed: cannot remove "
        f"container {cid} as it is running - running or paused containers cannot be "
        "removed without force: container state improper")
    assert _host_traces(pid), "the pod's port should be published while it exists"
    out = p("pod", "rm", "-f", "pd-rm")
    assert (out.returncode, out.stdout.strip()) == (0, pid), out.stderr
    assert p("pod", "ls", "-q").stdout == ""
    assert p("ps", "-aq").stdout == ""
    assert leftovers(p, [pid, cid]) == []
    assert _host_traces(pid) == []
    out = p("pod", "rm", "pd-rm")
    assert (out.returncode, out.stderr.strip()) == (
        1, "Error: no pod with name or ID pd-rm found: no such pod")


def test_prune_removes_exited_pods_only(p):
    exited = _create(p, "--name", "pd-old", "--network", "none")
    assert p("run", "--pod", "pd-old", "busybox", "true").returncode == 0
    kept = _create(p, "--name", "pd-new", "--network", "none")
    out = p("pod", "prune", "-f")
    assert (out.returncode, out.stdout.split()) == (0, [exited]), out.stderr
    assert p("pod", "ls", "-q", "--no-trunc").stdout.split() == [kept]
    assert [x for x in leftovers(p, [exited]) if kept not in x] == []


@pytest.mark.parametrize("argv, error", [
    (["run", "--pod", "pd-nope", "busybox", "true"],
     "Error: no pod with name or ID pd-nope found: no such pod"),
    (["create", "--pod", "pd-bad", "--network", "bridge", "busybox", "true"],
     "Error: invalid config provided: networks must be defined when the pod is created: "
     "network cannot be configured when it is shared with a pod"),
    (["run", "--pod", "pd-bad", "-p", "8080:80", "busybox", "true"],
     "Error: invalid config provided: published or exposed ports must be defined when the "
     "pod is created: network cannot be configured when it is shared with a pod"),
    (["run", "--pod", "pd-bad", "--hostname", "x", "busybox", "true"],
     "Error: invalid config provided: cannot set hostname when joining the pod UTS "
     "namespace: invalid configuration"),
    (["pod", "create", "--name", "pd-bad"],
     'Error: adding pod to state: name "pd-bad" is in use: pod already exists'),
    (["pod", "create", "--name", "pd-other", "--share", "ipc,bogus"],
     "Error: invalid kernel namespace to share: bogus. Options are: cgroup, ipc, net, pid, "
     "uts or none"),
    (["pod", "create", "--name", "pd-other", "--network", "pd-nonet"],
     "Error: unable to find network with name or ID pd-nonet: network not found"),
    (["pod", "start", "pd-nope"], "Error: no pod with name or ID pd-nope found: no such pod"),
    (["pod", "inspect", "pd-nope"], "Error: inspecting object: no such pod pd-nope"),
    (["pod", "ls", "--filter", "status=bogus"], "Error: bogus is not a valid pod status"),
])
def test_bad_input_is_refused_and_leaves_the_host_clean(p, argv, error):
    pid = _create(p, "--name", "pd-bad", "--network", "none")
    before = leftovers(p, [pid])
    out = p(*argv)
    assert (out.returncode, out.stderr.strip()) == (125, error)
    assert p("ps", "-aq").stdout == ""
    assert p("pod", "ls", "-q", "--no-trunc").stdout.split() == [pid]
    assert leftovers(p, [pid]) == before
    assert p("pod", "rm", "pd-bad").returncode == 0
    assert leftovers(p, [pid]) == []


def test_a_pod_whose_port_is_taken_leaves_nothing_behind(p, net):
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        out = p("pod", "create", "--name", "pd-busy", "--network", net, "-p", f"{port}:80")
    assert out.returncode == 125
    assert out.stderr.strip() == f"Error: Bind for 0.0.0.0:{port}/tcp failed: port is " \
        "already allocated"
    assert p("pod", "ls", "-q").stdout == ""
    assert leftovers(p) == []


def test_cri_sandboxes_are_not_cli_pods(p):
    """A kubelet's sandbox in the same store is not listed, found or removed by `pod`."""
    from pallet.engine.pods import Pods, PodSpec

    eng = p.engine()
    pods = Pods(eng)
    rec = pods.run(PodSpec(name="pd-cri", uid="u1", network="host"))
    try:
        assert p("pod", "ls", "-q").stdout == ""
        assert p("pod", "exists", rec.id).returncode == 1
        out = p("pod", "rm", "-f", rec.id)
        assert out.returncode == 1
        assert eng.store.get_pod(rec.id).state == "ready"
        out = p("run", "--pod", rec.id, "busybox", "true")
        assert out.returncode == 125 and "no such pod" in out.stderr
    finally:
        pods.remove(rec.id)
    assert leftovers(p, [rec.id]) == []


def test_share_none_leaves_each_container_its_own_namespaces(p):
    _create(p, "--name", "pd-alone", "--share", "none")
    out = p("run", "--rm", "--pod", "pd-alone", "--network", "none", "-h", "own", "busybox",
            "sh", "-c", f"hostname; {NS_LINKS}")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[0] == "own"
    host = [subprocess.run(["readlink", f"/proc/self/ns/{k}"], capture_output=True,
                           text=True).stdout.strip() for k in ("ipc", "net", "uts")]
    assert not set(host) & set(lines[1:])
    assert json.loads(p("pod", "inspect", "pd-alone").stdout)["SharedNamespaces"] == []


@pytest.mark.parametrize("flags, error", [
    (["--share", "ipc"], "cannot set share(ipc) namespaces without an infra container"),
    (["-p", "8080:80"], "you must have an infra container to publish port bindings to the "
     "host"),
    (["--network", "none"], "NoInfra and network modes cannot be used together"),
    (["--add-host", "a:1.2.3.4"], "NoInfra and HostAdd are mutually exclusive pod options: "
     "invalid pod spec"),
])
def test_infra_false_shares_nothing_and_refuses_what_needs_sharing(p, flags, error):
    out = p("pod", "create", "--infra=false", "--name", "pd-noinfra", *flags)
    assert (out.returncode, out.stderr.strip()) == (125, f"Error: {error}")
    assert p("pod", "ls", "-q").stdout == ""
    _create(p, "--infra=false", "--name", "pd-noinfra")
    assert json.loads(p("pod", "inspect", "pd-noinfra").stdout)["SharedNamespaces"] == []
    assert leftovers(p) == []


def test_pod_events_as_podman(p):
    t0 = time.time()
    pod = _create(p, "--name", "pd-ev", "--network", "none")
    p("create", "--pod", "pd-ev", "--name", "pd-ev-c", "busybox", "sleep", "60", check=True)
    for verb in ("start", "pause", "unpause", "stop"):
        p("pod", verb, "pd-ev", check=True)
    p("pod", "rm", "pd-ev", check=True)
    out = p("events", "--since", str(t0), "--until", str(time.time() + 0.5),
            "--filter", "type=pod", timeout=20, check=True).stdout
    lines = out.splitlines()
    assert [ln.split(" ")[1:4] for ln in lines] == [
        ["pod", action, pod] for action in
        ("create", "start", "pause", "unpause", "stop", "remove")], out
    assert all(ln.endswith("(name=pd-ev)") for ln in lines)
    # By name or id prefix, as the other kinds.
    by_name = p("events", "--since", str(t0), "--until", "0s", "--filter", "pod=pd-ev",
                check=True).stdout
    assert by_name.splitlines() == lines
