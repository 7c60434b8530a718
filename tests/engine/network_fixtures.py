"""A private network lab per test: its own pallet root, netns dir, bridge names and
10.213.x.0/24 subnets, torn down completely, and a check that the host is clean."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

from pallet.engine import netns
from pallet.engine.network import Networks, _host_routes, delete_link
from pallet.engine.store import NetworkRecord, Store, new_id
from pallet.errors import PalletError

PING = shutil.which("ping") or "/bin/busybox"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def iptables_dump() -> str:
    out = []
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            out.append(subprocess.run([tool], capture_output=True, text=True).stdout)
    return "\n".join(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


class NetworkLab:
    """Owns every network, namespace and bridge a test makes through it.

    `close()` detaches whatever is still attached, removes namespaces, networks and
    bridges, and puts net.ipv4.ip_forward back (the bridge plugin turns it on)."""

    def __init__(self, tmp_path: Any, **networks_kw: Any):
        self.token = secrets.token_hex(3)
        self.root = str(tmp_path / "root")
        self.netns_dir = str(tmp_path / "netns")
        self.store = Store(self.root)
        self._count = 0
        self.bridges: list[str] = []
        self.subnets: list[str] = []
        self.ids: list[str] = []
        self.namespaces: list[str] = []
        self.host_veths: set[str] = set()
        self.forward_before = _read("/proc/sys/net/ipv4/ip_forward")
        self.nets = self.networks(**networks_kw)

    def networks(self, **kw: Any) -> Networks:
        kw.setdefault("netns_dir", self.netns_dir)
        if "default_bridge" not in kw:
            kw["default_bridge"] = self.bridge()
            kw["default_subnet"] = self.subnet()
        return Networks(self.store, self.root, **kw)

    # -- unique names

    def bridge(self) -> str:
        self._count += 1
        name = f"pt{self.token}{self._count}"
        self.bridges.append(name)
        return name

    def subnet(self) -> str:
        taken = {n for _, n in _host_routes()}
        for _ in range(100):
            cand = f"10.213.{secrets.randbelow(256)}.0/24"
            if cand not in self.subnets and not any(str(t) == cand for t in taken):
                self.subnets.append(cand)
                return cand
        raise RuntimeError("no free 10.213.x.0/24 for the test")

    def container_id(self) -> str:
        cid = new_id()
        self.ids.append(cid)
        return cid

    def network(self, name: str = "", **kw: Any) -> NetworkRecord:
        kw.setdefault("subnet", self.subnet())
        kw.setdefault("bridge", self.bridge())
        return self.nets.create(name or f"ptnet-{self.token}-{self._count}", **kw)

    def netns(self) -> str:
        path = netns.create(f"pt-{self.token}-{len(self.namespaces)}", self.netns_dir)
        self.namespaces.append(path)
        return path

    def attach(self, path: str, cid: str, network: str, **kw: Any) -> Any:
        att = self.nets.attach(path, cid, network, **kw)
        entry = self.nets.executor.cached(network, cid, kw.get("ifname", "eth0")) or {}
        for iface in (entry.get("result") or {}).get("interfaces") or []:
            if not iface.get("sandbox") and iface.get("name") not in self.bridges:
                self.host_veths.add(iface["name"])
        return att

    # -- acts inside namespaces

    def ping(self, path: str, ip: str) -> bool:
        argv = [PING] if not PING.endswith("busybox") else [PING, "ping"]
        for _ in range(3):
            proc = subprocess.run(
                ["nsenter", f"--net={path}", *argv, "-c", "1", "-W", "2", ip],
                capture_output=True,
                text=True,
            )
            if proc.returncode == 0:
                return True
            time.sleep(0.2)
        return False

    # -- teardown and checks

    def close(self) -> None:
        for att in self.nets.attachments():
            try:
                self.nets.detach(att.container_id, att.network, att.interface)
            except PalletError as e:
                print(f"lab teardown: {e}", file=sys.stderr)
        for path in self.namespaces:
            netns.remove(path)
        for rec in self.store.list_networks():
            if rec.config.get("default"):
                continue
            try:
                self.nets.remove(rec.id)
            except PalletError as e:
                print(f"lab teardown: {e}", file=sys.stderr)
        for name in self.bridges + sorted(self.host_veths):
            delete_link(name)
        if self.forward_before == "0":
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write("0")
        self.store.close()

    def leftovers(self) -> list[str]:
        """What this test left on the host: interfaces, iptables rules, namespaces,
        mounts and IPAM reservations."""
        out = []
        for name in self.bridges + sorted(self.host_veths):
            if os.path.exists(f"/sys/class/net/{name}"):
                out.append(f"interface {name}")
        dump = iptables_dump()
        for marker in self.ids + [s.rsplit(".", 1)[0] + "." for s in self.subnets]:
            for line in dump.splitlines():
                if marker in line:
                    out.append(f"iptables: {line}")
        if os.path.isdir(self.netns_dir):
            out += [f"netns file {n}" for n in os.listdir(self.netns_dir)]
        with open("/proc/self/mountinfo") as f:
            out += [f"mount {line.split()[4]}" for line in f if self.netns_dir in line]
        ipam = os.path.join(self.root, "cni", "networks")
        for dirpath, _, files in os.walk(ipam):
            for name in files:
                if name[:1].isdigit() and name.count(".") == 3 or ":" in name:
                    out.append(f"IPAM reservation {os.path.join(dirpath, name)}")
        return out
