"""pallet networks (bridge networks kept in the engine Store as CNI conflists) and the
attach/detach/check of network namespaces to them through the real CNI plugins."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pallet.engine import cni, netns
from pallet.engine.relay import relayed
from pallet.engine.store import NetworkRecord, Store, new_id, validate_name
from pallet.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PalletError,
    SystemFailure,
)

DEFAULT_NETWORK = "pallet"
DEFAULT_BRIDGE = "pallet0"
# Not podman's 10.88.0.0/16 (its cni-podman0 conflist ships on the same hosts, and
# the benches run both side by side), nor its 10.89.x user pool, nor CRI-O's 10.85.
DEFAULT_SUBNET = "10.87.0.0/16"
AUTO_SUBNET_POOL = "10.86.0.0/16"  # carved into /24s for user networks, as podman does
AUTO_PREFIX = 24
DRIVERS = ("bridge",)
PROTOCOLS = ("tcp", "udp", "sctp")
LOOPBACK_NETWORK = "pallet-loopback"
# The default network's bridge is one device of the host's, whatever pallet root uses it,
# so its addresses are allocated host-wide: two roots' containers on it must not get the same
# one. Under /run: the reservations go with the bridge at reboot. (A user network's bridge
# belongs to one root, and so do its reservations: <root>/cni/networks.)
HOST_IPAM_DIR = "/run/pallet-ipam"

# Names `--network` gives another meaning to, so no network may take them.
RESERVED_NAMES = ("host", "none", "container", "default", "bridge")

# Bridge options accepted by `network create -o`, with docker's keys.
OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_MTU = "com.docker.network.driver.mtu"


@dataclass
class Attachment:
    """One interface of one network namespace on one network."""

    network: str
    container_id: str
    interface: str  # the name inside the namespace, e.g. eth0
    ips: list[str]  # CIDR form, e.g. 10.87.0.5/16
    gateway: str
    mac: str
    netns: str = ""
    aliases: list[str] = field(default_factory=list)
    port_mappings: list[dict[str, Any]] = field(default_factory=list)
    gateways: list[str] = field(default_factory=list)  # one per family, in the result's order

    @property
    def ip(self) -> str:
        """The first address without its prefix length ("" if none)."""
        return self.ips[0].split("/")[0] if self.ips else ""


# ----------------------------------------------------------------- pure functions


def parse_subnet(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        hint = ""
        try:
            loose = ipaddress.ip_network(text.strip(), strict=False)
            hint = f" (did you mean {loose}?)"
        except ValueError:
            pass
        raise InvalidArgument(
            f"invalid subnet {text!r}: {e}{hint}; give a CIDR such as 10.86.7.0/24"
        ) from None
    if net.is_loopback or net.is_multicast or net.is_unspecified or net.is_link_local:
        raise InvalidArgument(
            f"invalid subnet {text!r}: loopback, link-local and multicast ranges cannot be used"
        )
    if net.num_addresses < 4:
        raise InvalidArgument(
            f"invalid subnet {text!r}: too small, it needs room for a gateway and containers"
        )
    return net


def pick_gateway(subnet: ipaddress.IPv4Network | ipaddress.IPv6Network, gateway: str = "") -> str:
    """GATEWAY checked to lie inside SUBNET, or the subnet's first host address."""
    if not gateway:
        return str(next(subnet.hosts()))
    try:
        gw = ipaddress.ip_address(gateway.strip())
    except ValueError:
        raise InvalidArgument(f"invalid gateway {gateway!r}: not an IP address") from None
    if gw not in subnet or gw in (subnet.network_address, subnet.broadcast_address):
        raise InvalidArgument(f"invalid gateway {gateway}: not a host address in subnet {subnet}")
    return str(gw)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ADDRESS_IN_USE = "Address already in use"  # libnetwork's ErrIPAlreadyAllocated


def _family(version: int) -> str:
    return "IPv4" if version == 4 else "IPv6"


def consolidate_ipam(
    subnets: Sequence[str],
    gateways: Sequence[str] = (),
    ip_ranges: Sequence[str] = (),
    aux_addresses: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """docker's `network create --subnet/--gateway/--ip-range/--aux-address` as one IPAM
    config per subnet ({"subnet", "gateway", "ip_range", "aux"}), each gateway, range and
    aux address matched to the subnet that contains it, with docker's messages."""
    nets = [parse_subnet(s) for s in subnets]
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            if a.version == b.version and a.overlaps(b):
                raise InvalidArgument("multiple overlapping subnet configuration is not supported")
    if len(nets) < len(ip_ranges) or len(nets) < len(gateways):
        raise InvalidArgument("every ip-range or gateway must have a corresponding subnet")
    out = [{"subnet": str(n), "gateway": "", "ip_range": "", "aux": {}} for n in nets]

    def owner(text: str, what: str, as_net: bool) -> dict[str, Any]:
        try:
            value: Any = (ipaddress.ip_network(text.strip(), strict=False) if as_net
                          else ipaddress.ip_address(text.strip()))
        except ValueError:
            raise InvalidArgument(f"invalid {what} {text}: invalid "
                                  f"{'CIDR block notation' if as_net else 'address'}") from None
        for n, cfg in zip(nets, out, strict=True):
            if value.version == n.version and (
                    value.subnet_of(n) if as_net else value in n):  # type: ignore[arg-type]
                return cfg
        raise InvalidArgument(f"no matching subnet for {what} {text}")

    for r in ip_ranges:
        cfg = owner(r, "range", True)
        if cfg["ip_range"]:
            raise InvalidArgument(f"cannot configure multiple ranges ({r}, {cfg['ip_range']}) "
                                  f"on the same subnet ({cfg['subnet']})")
        rng = ipaddress.ip_network(r.strip(), strict=False)
        if str(rng) != r.strip():
            raise InvalidArgument(f"invalid ip-range {r}: it should be {rng}")
        cfg["ip_range"] = str(rng)
    for g in gateways:
        cfg = owner(g, "gateway", False)
        if cfg["gateway"]:
            raise InvalidArgument(f"cannot configure multiple gateways ({g}, {cfg['gateway']}) "
                                  f"for the same subnet ({cfg['subnet']})")
        cfg["gateway"] = pick_gateway(ipaddress.ip_network(cfg["subnet"]), g)
    for name, addr in (aux_addresses or {}).items():
        cfg = owner(addr, "aux-address", False)
        cfg["aux"][name] = str(ipaddress.ip_address(addr.strip()))
    for cfg in out:
        cfg["gateway"] = cfg["gateway"] or pick_gateway(ipaddress.ip_network(cfg["subnet"]))
        if cfg["gateway"] in cfg["aux"].values():
            raise InvalidArgument(f"invalid aux-address: {cfg['gateway']} is the gateway")
    return out


def _host_bounds(net: IPNetwork) -> tuple[int, int]:
    """The first and last address host-local may hand out in NET (IPv4 keeps its
    network and broadcast addresses)."""
    first, last = int(net.network_address), int(net.broadcast_address)
    return (first + 1, last - 1) if net.version == 4 else (first + 1, last)


def host_local_rangeset(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One IPAM config as a host-local range set: the subnet, or only its --ip-range
    (rangeStart/rangeEnd), split around --aux-address reservations (host-local skips the
    gateway itself)."""
    subnet = ipaddress.ip_network(cfg["subnet"])
    lo, hi = _host_bounds(subnet)
    if cfg.get("ip_range"):
        rng = ipaddress.ip_network(cfg["ip_range"])
        lo = max(lo, int(rng.network_address))
        hi = min(hi, int(rng.broadcast_address))
    holes = sorted(int(ipaddress.ip_address(a)) for a in (cfg.get("aux") or {}).values())
    pieces, start = [], lo
    for h in holes:
        if start <= h <= hi:
            if h > start:
                pieces.append((start, h - 1))
            start = h + 1
    if start <= hi:
        pieces.append((start, hi))
    if not pieces:
        raise InvalidArgument(f"no address left to allocate in {cfg.get('ip_range') or subnet}")
    full = (pieces == [_host_bounds(subnet)])
    make = type(subnet.network_address)
    out = []
    for a, b in pieces:
        r: dict[str, Any] = {"subnet": str(subnet), "gateway": cfg["gateway"]}
        if not full:
            r["rangeStart"], r["rangeEnd"] = str(make(a)), str(make(b))
        out.append(r)
    return out


def static_ip_error(ip: str, configs: Sequence[Mapping[str, Any]], *, version: int,
                    user_subnets: bool = True, predefined: bool = False) -> str:
    """docker's refusal of `--ip`/`--ip6` IP on a network with these IPAM CONFIGS, or ""."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        addr = None
    if addr is None or addr.version != version or addr.is_unspecified:
        return f"invalid {_family(version)} address: {ip}"
    if predefined:
        return "user specified IP address is supported on user defined networks only"
    mine = [c for c in configs if ipaddress.ip_network(c["subnet"]).version == version]
    if not mine or not user_subnets:
        return ("user specified IP address is supported only when connecting to networks "
                "with user configured subnets")
    for c in mine:
        net = ipaddress.ip_network(c["subnet"])
        if addr in net:
            lo, hi = _host_bounds(net)
            taken = {c["gateway"], *(c.get("aux") or {}).values()}
            if not lo <= int(addr) <= hi or str(addr) in taken:
                return ADDRESS_IN_USE
            return ""
    return f"no configured subnet or ip-range contain the IP address {ip}"


def with_static_ips(conflist: Mapping[str, Any], ips: Sequence[str]) -> dict[str, Any]:
    """CONFLIST for an attachment asking for IPS: the range set of each family asked for
    becomes its whole subnet, since a static address may lie outside --ip-range (as in
    docker); the addresses go to host-local as the config's `args.cni.ips` (its CNI_ARGS
    IP= takes only one address in containernetworking-plugins 1.1)."""
    wanted = [ipaddress.ip_address(i) for i in ips]
    plugins = []
    for p in conflist.get("plugins", []):
        ipam = p.get("ipam")
        if isinstance(ipam, dict) and ipam.get("ranges"):
            ranges = []
            for rs in ipam["ranges"]:
                net = ipaddress.ip_network(rs[0]["subnet"])
                if any(w in net for w in wanted):
                    rs = [{"subnet": rs[0]["subnet"], "gateway": rs[0].get("gateway", "")}]
                ranges.append(rs)
            p = {**p, "ipam": {**ipam, "ranges": ranges},
                 "args": {"cni": {"ips": [str(w) for w in wanted]}}}
        plugins.append(p)
    return {**conflist, "plugins": plugins}


def with_mac(conflist: Mapping[str, Any]) -> dict[str, Any]:
    """CONFLIST whose bridge plugin takes the `mac` capability: the container's interface
    gets the runtimeConfig's MAC (docker's --mac-address). Debian's containernetworking-
    plugins 1.1 bridge honours it (also as args.cni.mac and CNI_ARGS MAC=)."""
    plugins, found = [], False
    for p in conflist.get("plugins", []):
        if p.get("type") == "bridge":
            p = {**p, "capabilities": {**(p.get("capabilities") or {}), "mac": True}}
            found = True
        plugins.append(p)
    if not found:
        raise InvalidArgument(f"network {conflist.get('name')}: a MAC address can only be "
                              "given on a bridge network")
    return {**conflist, "plugins": plugins}


def ula_pool(seed: str) -> str:
    """A /48 of fd00::/8 with a 40-bit global id from SEED (the host's machine id), as
    docker derives its default IPv6 pool from its engine id (RFC 4193)."""
    gid = hashlib.sha256(seed.encode()).hexdigest()[:10]
    return f"fd{gid[:2]}:{gid[2:6]}:{gid[6:10]}::/48"


def ipam_configs(rec: NetworkRecord) -> list[dict[str, Any]]:
    """The IPAM configs of a network record (records from before dual-stack had one)."""
    if rec.config.get("ipam"):
        return [dict(c) for c in rec.config["ipam"]]
    if rec.subnet:
        return [{"subnet": rec.subnet, "gateway": rec.gateway, "ip_range": "", "aux": {}}]
    return []


def validate_bridge_name(name: str) -> str:
    # IFNAMSIZ is 16 with the NUL; '/' and whitespace would break sysfs paths.
    if not name or len(name) > 15 or any(c in name for c in "/ \t\n:") or name in (".", ".."):
        raise InvalidArgument(
            f"invalid bridge name {name!r}: at most 15 characters, no '/', ':' or spaces"
        )
    return name


def validate_ifname(name: str) -> str:
    try:
        return validate_bridge_name(name)
    except InvalidArgument:
        raise InvalidArgument(
            f"invalid interface name {name!r}: at most 15 characters, no '/', ':' or spaces"
        ) from None


def build_conflist(
    name: str,
    *,
    bridge: str,
    subnet: str,
    gateway: str,
    data_dir: str,
    ip_masq: bool = True,
    internal: bool = False,
    portmap: bool = True,
    firewall: bool = True,
    mtu: int = 0,
    ranges: Sequence[Sequence[Mapping[str, Any]]] = (),
) -> dict[str, Any]:
    """The CNI 1.0 conflist of a pallet bridge network (the shape podman writes).
    RANGES: host-local range sets, one per subnet (IPv4 and/or IPv6); default: SUBNET."""
    rangesets = [[dict(r) for r in rs] for rs in ranges] or [
        [{"subnet": subnet, "gateway": gateway}]]
    versions = sorted({ipaddress.ip_network(rs[0]["subnet"]).version for rs in rangesets})
    ipam: dict[str, Any] = {
        "type": "host-local",
        "ranges": rangesets,
        "dataDir": data_dir,
    }
    if not internal:
        ipam["routes"] = [{"dst": "0.0.0.0/0" if v == 4 else "::/0"} for v in versions]
    bridge_conf: dict[str, Any] = {
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": ip_masq and not internal,
        # So a container reaches itself through its own published port.
        "hairpinMode": True,
        "ipam": ipam,
    }
    if mtu:
        bridge_conf["mtu"] = mtu
    plugins: list[dict[str, Any]] = [bridge_conf]
    if portmap:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    if firewall:
        # Needed where FORWARD's policy is DROP (e.g. hosts running docker).
        plugins.append({"type": "firewall", "backend": "iptables"})
    return {"cniVersion": cni.CNI_VERSION, "name": name, "plugins": plugins}


def normalize_port_mappings(mappings: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """CNI portMappings from CRI/docker-style dicts: validated, protocol lower-case,
    hostIP "" for all addresses; mappings without a host port are dropped (CRI's
    meaning of hostPort 0)."""
    out = []
    for m in mappings:
        try:
            host = int(m.get("hostPort", m.get("host_port", 0)) or 0)
            ctr = int(m.get("containerPort", m.get("container_port", 0)) or 0)
        except (TypeError, ValueError):
            raise InvalidArgument(
                f"invalid port mapping {dict(m)}: ports must be numbers"
            ) from None
        proto = str(m.get("protocol", "tcp") or "tcp").lower()
        host_ip = str(m.get("hostIP", m.get("host_ip", "")) or "")
        if proto not in PROTOCOLS:
            raise InvalidArgument(
                f"invalid protocol {proto!r} in port mapping; use tcp, udp or sctp"
            )
        if not 0 <= host <= 65535 or not 1 <= ctr <= 65535:
            raise InvalidArgument(
                f"invalid port mapping {host}:{ctr}/{proto}: ports must be between 1 and 65535"
            )
        if host_ip:
            try:
                host_ip = str(ipaddress.ip_address(host_ip))
            except ValueError:
                raise InvalidArgument(f"invalid host IP {host_ip!r} in port mapping") from None
        if host == 0:
            continue
        out.append({"hostPort": host, "containerPort": ctr, "protocol": proto, "hostIP": host_ip})
    seen: set[tuple[str, int, str]] = set()
    for m in out:
        key = (m["protocol"], m["hostPort"], m["hostIP"])
        if key in seen:
            raise InvalidArgument(f"port {_addr(m)} is published twice; give each host port once")
        seen.add(key)
    return out


def split_publish(spec: str) -> tuple[str, str, str, str]:
    """`[IP:][HOST:]CTR[/PROTO]` (IP may be `[v6]`) as its words (host_ip, host, ctr, proto),
    unchecked; ValueError (what is wrong) if it has no such shape. -p and compose share it."""
    text, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    host_ip = ""
    if text.startswith("["):  # [v6]:host:ctr
        end = text.find("]")
        if end < 0:
            raise ValueError("unclosed '['")
        host_ip, text = text[1:end], text[end + 1 :].lstrip(":")
    parts = text.split(":")
    if len(parts) == 3:
        host_ip, host, ctr = parts
    elif len(parts) == 2:
        host, ctr = parts
    elif len(parts) == 1:
        host, ctr = "", parts[0]
    else:
        raise ValueError("use [IP:][HOST:]CONTAINER[/PROTO]")
    return host_ip, host, ctr, proto


def parse_publish(spec: str) -> dict[str, Any]:
    """docker's `-p [IP:][HOST:]CTR[/PROTO]` as one mapping; HOST absent means 0
    (the caller picks a free port with `allocate_host_ports`)."""
    try:
        host_ip, host, ctr, proto = split_publish(spec)
    except ValueError as e:
        raise InvalidArgument(f"invalid publish spec {spec!r}: {e}") from None
    for value in (host, ctr):
        if value and not value.isdigit():
            raise InvalidArgument(f"invalid publish spec {spec!r}: {value!r} is not a port number")
    if not ctr:
        raise InvalidArgument(f"invalid publish spec {spec!r}: no container port")
    mapping = {
        "hostPort": int(host or 0),
        "containerPort": int(ctr),
        "protocol": proto,
        "hostIP": host_ip,
    }
    if mapping["hostPort"]:
        normalize_port_mappings([mapping])
    elif proto not in PROTOCOLS or not 1 <= mapping["containerPort"] <= 65535:
        normalize_port_mappings([{**mapping, "hostPort": 1}])
    return mapping


def _addr(m: Mapping[str, Any]) -> str:
    ip = m.get("hostIP") or "0.0.0.0"
    ip = f"[{ip}]" if ":" in ip else ip
    return f"{ip}:{m['hostPort']}/{m['protocol']}"


def _overlaps(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a["protocol"] != b["protocol"] or int(a["hostPort"]) != int(b["hostPort"]):
        return False
    wild = ("", "0.0.0.0", "::")
    return a.get("hostIP", "") in wild or b.get("hostIP", "") in wild or a["hostIP"] == b["hostIP"]


def port_conflicts(
    wanted: Sequence[Mapping[str, Any]], taken: Iterable[tuple[str, Mapping[str, Any]]]
) -> str:
    """The first clash between WANTED and (owner, mapping) pairs already published,
    as a docker-style message, or ""."""
    for owner, m in taken:
        for w in wanted:
            if _overlaps(w, m):
                return (
                    f"Bind for {_addr(w)} failed: port is already allocated "
                    f"(published by {owner[:12]})"
                )
    return ""


def plugins_to_run(
    conflist: Mapping[str, Any], mappings: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """CONFLIST without the plugins that would do nothing for this attachment:
    portmap when no port is published (its ADD passes prevResult through and its
    DEL finds no mappings). The record keeps the list that ran, so DEL and CHECK
    run the same plugins ADD did."""
    plugins = list(conflist.get("plugins") or [])
    keep = [p for p in plugins if mappings or p.get("type") != "portmap"]
    if not keep or len(keep) == len(plugins):
        return dict(conflist)
    return {**conflist, "plugins": keep}


def without_default_route(conflist: Mapping[str, Any]) -> dict[str, Any]:
    """CONFLIST with its IPAM's default routes left out: a container's second network
    must not add a default route beside the first one's (docker keeps the first)."""
    plugins = []
    for p in conflist.get("plugins", []):
        ipam = p.get("ipam")
        if isinstance(ipam, dict) and "routes" in ipam:
            routes = [r for r in ipam["routes"] if r.get("dst") not in ("0.0.0.0/0", "::/0")]
            p = {**p, "ipam": {**ipam, "routes": routes}}
        plugins.append(p)
    return {**conflist, "plugins": plugins}


def attachment_from_entry(entry: Mapping[str, Any]) -> Attachment:
    """An Attachment from a CNI cache entry (ADD's result plus what we stored)."""
    ifname = entry.get("ifName", "eth0")
    result = entry.get("result") or {}
    interfaces = result.get("interfaces") or []
    index = None
    for i, iface in enumerate(interfaces):
        if iface.get("name") == ifname and iface.get("sandbox"):
            index = i
    mac = interfaces[index].get("mac", "") if index is not None else ""
    ips, gateways = [], []
    for ip in result.get("ips") or []:
        if index is not None and ip.get("interface") not in (None, index):
            continue
        ips.append(ip.get("address", ""))
        if ip.get("gateway") and ip["gateway"] not in gateways:
            gateways.append(ip["gateway"])
    return Attachment(
        network=entry.get("networkName", ""),
        container_id=entry.get("containerId", ""),
        interface=ifname,
        ips=[a for a in ips if a],
        gateway=gateways[0] if gateways else "",
        gateways=gateways,
        mac=mac,
        netns=entry.get("netns", ""),
        aliases=list(entry.get("aliases") or []),
        port_mappings=list((entry.get("capabilityArgs") or {}).get("portMappings") or []),
    )


def _subnet_of(conflist: Mapping[str, Any]) -> tuple[str, str]:
    """(subnet, gateway) of the first host-local range of a conflist, if any."""
    for p in conflist.get("plugins", []):
        for rs in (p.get("ipam") or {}).get("ranges") or []:
            for r in rs:
                return r.get("subnet", ""), r.get("gateway", "")
        sub = (p.get("ipam") or {}).get("subnet")
        if sub:
            return sub, (p.get("ipam") or {}).get("gateway", "")
    return "", ""


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


# ----------------------------------------------------------------- host facts (acts)


def _host_routes() -> list[tuple[str, ipaddress.IPv4Network]]:
    """(device, destination) of every IPv4 route but the default one."""
    out = []
    try:
        with open("/proc/net/route") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        cols = line.split()
        if len(cols) < 8:
            continue
        dst = socket.inet_ntoa(struct.pack("<I", int(cols[1], 16)))
        mask = socket.inet_ntoa(struct.pack("<I", int(cols[7], 16)))
        net = ipaddress.IPv4Network(f"{dst}/{mask}", strict=False)
        if net.prefixlen:
            out.append((cols[0], net))
    return out


def _host_routes6() -> list[tuple[str, ipaddress.IPv6Network]]:
    """(device, destination) of the host's IPv6 routes but the default, link-local,
    multicast and single-address (local) ones."""
    out = []
    try:
        with open("/proc/net/ipv6_route") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        cols = line.split()
        if len(cols) < 10:
            continue
        plen = int(cols[1], 16)
        if not 0 < plen < 128:
            continue
        addr = ipaddress.IPv6Address(bytes.fromhex(cols[0]))
        net = ipaddress.IPv6Network(f"{addr}/{plen}", strict=False)
        if not (net.is_link_local or net.is_multicast):
            out.append((cols[9], net))
    return out


def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            continue
    return socket.gethostname()


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def _is_bridge(name: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


def make_bridge(name: str, address: str, mtu: int = 0) -> None:
    """The bridge NAME, up, with the IPv4 gateway ADDRESS (CIDR; none: "") as the bridge
    plugin gives it at its first ADD. docker makes its bridge at `network create`: so does
    pallet, so the subnet's route is on the host at once and another pallet root (or
    anyone) choosing a subnet sees it taken. IPv6 gateways are left to the plugin."""
    import subprocess

    def ip(*args: str) -> None:
        out = subprocess.run(["ip", *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemFailure(f"ip {' '.join(args)}: {out.stderr.strip()}")

    if not _is_bridge(name):
        # A MAC set once, as the plugin sets it: one left to the kernel follows the lowest
        # port's, changes as containers come and go, and fails the plugin's CHECK.
        mac = "02:" + ":".join(f"{b:02x}" for b in os.urandom(5))
        ip("link", "add", "name", name, "address", mac, "type", "bridge")
    if mtu:
        ip("link", "set", name, "mtu", str(mtu))
    if address:
        ip("addr", "replace", address, "dev", name)
    ip("link", "set", name, "up")


def delete_link(name: str) -> bool:
    """Delete the interface NAME with one rtnetlink RTM_DELLINK (no `ip` fork).
    False when it did not exist."""
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        return False
    rtm_dellink, nlm_f_request, nlm_f_ack, nlmsg_error = 17, 1, 4, 2
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
    msg = struct.pack("=IHHII", 16 + len(body), rtm_dellink, nlm_f_request | nlm_f_ack, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0) as s:
        s.bind((0, 0))
        s.send(msg + body)
        reply = s.recv(65536)
    _, kind, _, _, _ = struct.unpack_from("=IHHII", reply)
    if kind == nlmsg_error:
        (err,) = struct.unpack_from("=i", reply, 16)
        if err == -errno.ENODEV:
            return False
        if err:
            raise SystemFailure(f"cannot delete interface {name}: {os.strerror(-err)}")
    return True


def ipmasq_chain(network: str, container_id: str) -> str:
    """The nat chain the bridge plugin makes for ipMasq (utils.FormatChainName)."""
    return ("CNI-" + hashlib.sha512(f"{network}{container_id}".encode()).hexdigest())[:28]


def _masq_comment(network: str, container_id: str) -> str:
    return f'name: "{network}" id: "{container_id}"'  # Go's %q of plain names


def _recorded_ips(entry: Mapping[str, Any]) -> list[str]:
    result = entry.get("result") or {}
    return [ip.get("address", "").split("/")[0] for ip in result.get("ips") or []]


def _has_ipmasq(config: Mapping[str, Any]) -> bool:
    return any(p.get("type") == "bridge" and p.get("ipMasq") for p in config.get("plugins", []))


def teardown_ipmasq(entry: Mapping[str, Any]) -> None:
    """Remove the bridge plugin's masquerade rules of a detached attachment if they
    are still there, rule by rule (the fallback of `remove_cni_rules`). The plugin
    (1.1) only removes them when it finds the interface in the namespace, so a
    namespace or link that went first leaves them behind."""
    config = entry.get("config") or {}
    if not _has_ipmasq(config):
        return
    name, cid = entry.get("networkName", ""), entry.get("containerId", "")
    chain = ipmasq_chain(name, cid)
    comment = _masq_comment(name, cid)
    ips = _recorded_ips(entry)
    for tool, v6 in (("iptables", False), ("ip6tables", True)):
        addrs = [a for a in ips if a and (":" in a) == v6]
        exe = shutil.which(tool)
        if not addrs or not exe:
            continue
        probe = subprocess.run([exe, "-w", "-t", "nat", "-S", chain], capture_output=True)
        if probe.returncode != 0:
            continue
        for addr in addrs:
            subprocess.run(
                [
                    exe,
                    "-w",
                    "-t",
                    "nat",
                    "-D",
                    "POSTROUTING",
                    "-s",
                    addr,
                    "-j",
                    chain,
                    "-m",
                    "comment",
                    "--comment",
                    comment,
                ],
                capture_output=True,
            )
        subprocess.run([exe, "-w", "-t", "nat", "-F", chain], capture_output=True)
        gone = subprocess.run([exe, "-w", "-t", "nat", "-X", chain], capture_output=True)
        if gone.returncode != 0:
            raise SystemFailure(
                f"cannot remove masquerade chain {chain} of {cid[:12]}: "
                f"{gone.stderr.decode(errors='replace').strip()}"
            )


# The plugins whose iptables rules `remove_cni_rules` knows (containernetworking 1.x).
_KNOWN_RULE_PLUGINS = frozenset({"bridge", "portmap", "firewall"})


def fast_teardown_applies(config: Mapping[str, Any]) -> bool:
    """True for conflists of the shape pallet writes (bridge, then portmap and/or
    firewall with the iptables backend), whose per-attachment rules we can name."""
    plugins = config.get("plugins") or []
    kinds = [p.get("type") for p in plugins]
    if not kinds or kinds[0] != "bridge" or not set(kinds) <= _KNOWN_RULE_PLUGINS:
        return False
    return all(
        p.get("backend", "iptables") == "iptables" for p in plugins if p["type"] == "firewall"
    )


def cni_rule_batches(entry: Mapping[str, Any]) -> dict[str, str]:
    """iptables-restore --noflush input, per tool, that deletes the per-attachment
    rules the bridge (ipMasq) and firewall plugins added for ENTRY: one nft
    transaction per table instead of one per rule (a deleting nf_tables commit
    waits for an RCU grace period, 10-30 ms each). The rules are spelled exactly as
    the plugins add them, so a mismatch makes the batch fail as a whole."""
    config = entry.get("config") or {}
    name, cid = entry.get("networkName", ""), entry.get("containerId", "")
    chain = ipmasq_chain(name, cid)
    quoted = '"' + _masq_comment(name, cid).replace('"', '\\"') + '"'
    masq = _has_ipmasq(config)
    firewall = any(p.get("type") == "firewall" for p in config.get("plugins", []))
    out = {}
    for tool, v6 in (("iptables-restore", False), ("ip6tables-restore", True)):
        addrs = [a for a in _recorded_ips(entry) if a and (":" in a) == v6]
        if not addrs:
            continue
        lines = []
        if masq:
            lines.append("*nat")
            lines += [
                f"-D POSTROUTING -s {a} -j {chain} -m comment --comment {quoted}" for a in addrs
            ]
            lines += [f"-F {chain}", f"-X {chain}", "COMMIT"]
        if firewall:
            host = "/128" if v6 else "/32"
            lines.append("*filter")
            for a in addrs:
                lines.append(
                    f"-D CNI-FORWARD -d {a}{host} -m conntrack --ctstate RELATED,ESTABLISHED "
                    "-j ACCEPT"
                )
                lines.append(f"-D CNI-FORWARD -s {a}{host} -j ACCEPT")
            lines.append("COMMIT")
        if lines:
            out[tool] = "\n".join(lines) + "\n"
    return out


def remove_cni_rules(entry: Mapping[str, Any], meanwhile: Any = None) -> bool:
    """Delete ENTRY's bridge and firewall rules with one iptables-restore per family,
    calling MEANWHILE() (if given) while they run. False when a batch failed (rules
    already gone, or not the shape we expect): the plugins' DEL and
    `teardown_ipmasq` then remove whatever is left."""
    procs, ok = [], True
    for tool, text in cni_rule_batches(entry).items():
        exe = shutil.which(tool)
        if not exe:
            ok = False
            continue
        proc = subprocess.Popen(
            [exe, "-w", "--noflush"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append((proc, text.encode()))
    try:
        for proc, text in procs:
            assert proc.stdin is not None
            proc.stdin.write(text)
            proc.stdin.close()
        if meanwhile is not None:
            meanwhile()
    finally:
        for proc, _ in procs:
            ok = proc.wait() == 0 and ok
    return ok


def _delete_link_in(path: str, ifname: str) -> bool:
    """Delete IFNAME (a veth: its host end goes too) inside the namespace at PATH."""
    try:
        return netns.run_in(path, lambda: delete_link(ifname))
    except (PalletError, OSError):
        return False


def portmap_chain(network: str, container_id: str) -> str:
    """The per-attachment DNAT chain of the portmap plugin (utils.FormatChainName)."""
    return ("CNI-DN-" + hashlib.sha512(f"{network}{container_id}".encode()).hexdigest())[:28]


def portmap_dnat_rules(entry: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(tool, chain, rule text as `-S` lists it) of each DNAT rule portmap made for the
    published ports of a recorded attachment: one per port and container address family
    the port's host IP allows."""
    config = entry.get("config") or {}
    if not any(p.get("type") == "portmap" for p in config.get("plugins", [])):
        return []
    mappings = (entry.get("capabilityArgs") or {}).get("portMappings") or []
    chain = portmap_chain(entry.get("networkName", ""), entry.get("containerId", ""))
    out = []
    for addr in _recorded_ips(entry):
        if not addr:
            continue
        v6 = ":" in addr
        for m in mappings:
            host_ip = m.get("hostIP") or ""
            if host_ip and (":" in host_ip) != v6:
                continue
            dest = f"[{addr}]:{m['containerPort']}" if v6 else f"{addr}:{m['containerPort']}"
            proto = m.get("protocol", "tcp")
            out.append(("ip6tables" if v6 else "iptables", chain,
                        f"-p {proto} -m {proto} --dport {m['hostPort']} -j DNAT "
                        f"--to-destination {dest}"))
    return out


def loopback6_comment(network: str, container_id: str) -> str:
    """The comment naming the attachment that owns a `loopback6_rules` rule."""
    return f"pallet-lo6:{network}:{container_id}"


def loopback6_rules(entry: Mapping[str, Any]) -> list[str]:
    """The ip6tables nat OUTPUT rules (as `-S` lists them, without `-A OUTPUT`) that keep
    portmap's OUTPUT DNAT off [::1] for the ports of a recorded attachment that answer
    there (relay.relayed), so that their SYN reaches the monitor's relay: the container
    drops one from ::1 (RFC 4291) and the client would hang. One RETURN per port, named
    for the attachment, for an attachment with an IPv6 address that ran portmap (without
    one, portmap wrote no IPv6 DNAT to step around)."""
    config = entry.get("config") or {}
    if not any(p.get("type") == "portmap" for p in config.get("plugins", [])):
        return []
    if not any(":" in a for a in _recorded_ips(entry)):
        return []
    comment = loopback6_comment(entry.get("networkName", ""), entry.get("containerId", ""))
    mappings = (entry.get("capabilityArgs") or {}).get("portMappings") or []
    return [f"-s ::1/128 -d ::1/128 -p {m['protocol']} -m {m['protocol']} "
            f"--dport {m['hostPort']} -m comment --comment {comment} -j RETURN"
            for m in mappings if relayed(m)]


def _listed_loopback6_rules(exe: str, comment: str) -> list[str]:
    listed = subprocess.run([exe, "-w", "-t", "nat", "-S", "OUTPUT"], capture_output=True,
                            text=True).stdout
    return [line[len("-A OUTPUT "):] for line in listed.splitlines()
            if line.startswith("-A OUTPUT ")
            and (f"--comment {comment} " in line or f'--comment "{comment}" ' in line)]


def _nat_batch(lines: Sequence[str], what: str) -> None:
    exe = shutil.which("ip6tables-restore")
    if not lines or not exe:
        return
    text = "*nat\n" + "".join(f"{line}\n" for line in lines) + "COMMIT\n"
    out = subprocess.run([exe, "-w", "--noflush"], input=text.encode(), capture_output=True)
    if out.returncode != 0:
        raise SystemFailure(f"cannot {what}: ip6tables-restore: "
                            f"{out.stderr.decode(errors='replace').strip()}")


def exempt_loopback6(entry: Mapping[str, Any]) -> None:
    """Insert ENTRY's `loopback6_rules` at the top of nat OUTPUT, above portmap's jump
    (made by the ADD that came just before); any left from an earlier try are replaced."""
    rules = loopback6_rules(entry)
    exe = shutil.which("ip6tables")
    if not rules or not exe:
        return
    comment = loopback6_comment(entry.get("networkName", ""), entry.get("containerId", ""))
    stale = [f"-D OUTPUT {r}" for r in _listed_loopback6_rules(exe, comment)]
    _nat_batch(stale + [f"-I OUTPUT 1 {r}" for r in rules],
               f"keep [::1] out of portmap's DNAT for {entry.get('containerId', '')[:12]}")


def unexempt_loopback6(entry: Mapping[str, Any]) -> None:
    """Remove what `exempt_loopback6` inserted for ENTRY, as listed (so it is idempotent)."""
    exe = shutil.which("ip6tables")
    if not loopback6_rules(entry) or not exe:
        return
    comment = loopback6_comment(entry.get("networkName", ""), entry.get("containerId", ""))
    _nat_batch([f"-D OUTPUT {r}" for r in _listed_loopback6_rules(exe, comment)],
               f"remove the [::1] rules of {entry.get('containerId', '')[:12]}")


def check_ports_bindable(mappings: Sequence[Mapping[str, Any]]) -> None:
    """portmap only writes DNAT rules and never notices a host process already
    serving the port; try binding each one so `-p 8080:80` fails clearly instead."""
    for m in mappings:
        host_ip = m.get("hostIP") or ""
        family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
        kind = socket.SOCK_DGRAM if m["protocol"] == "udp" else socket.SOCK_STREAM
        if m["protocol"] == "sctp":
            continue  # the sctp module may be absent; portmap's rules are all we have
        try:
            with socket.socket(family, kind) as s:
                # REUSEADDR: a port left in TIME_WAIT is free to use, a listener is not.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host_ip or "0.0.0.0", int(m["hostPort"])))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise FailedPrecondition(
                    f"Bind for {_addr(m)} failed: port is already allocated"
                ) from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise InvalidArgument(
                    f"cannot publish {_addr(m)}: {host_ip} is not an address of this host"
                ) from None
            raise SystemFailure(f"cannot check host port {_addr(m)}: {e.strerror}") from None


# ----------------------------------------------------------------- networks


class Networks:
    """The networks of one pallet root: the default network `pallet` (bridge pallet0,
    10.87.0.0/16, NAT, portmap, firewall) exists lazily; user networks get a bridge
    br-<id12> and a free /24 of 10.86.0.0/16 unless told otherwise. Attachments are
    the CNI result cache; `hosts_entries` (for the engine's /etc/hosts) and
    `inspect` read them. Cheap to construct; holds no open resources
    but the Store given to it.

    root: pallet's root dir (IPAM reservations go to <root>/cni/networks, the
    attachment records to <root>/cni/results); conf_dir: optional CNI conf dir whose
    conflists are offered as read-only networks (the CRI's usual /etc/cni/net.d)."""

    def __init__(
        self,
        store: Store,
        root: str,
        *,
        bin_dirs: Sequence[str] = cni.DEFAULT_BIN_DIRS,
        conf_dir: str = "",
        default_subnet: str = DEFAULT_SUBNET,
        default_bridge: str = DEFAULT_BRIDGE,
        firewall: bool = True,
        netns_dir: str = netns.DEFAULT_RUN_DIR,
        ipv6_pool: str = "",
    ):
        self.store = store
        self.root = root
        self.bin_dirs = tuple(bin_dirs)
        self.conf_dir = conf_dir
        self.default_subnet = str(parse_subnet(default_subnet))
        self.default_bridge = validate_bridge_name(default_bridge)
        self.firewall = firewall
        self.netns_dir = netns_dir
        self.ipv6_pool = ipv6_pool
        self.ipam_dir = os.path.join(root, "cni", "networks")
        self.executor = cni.Executor(self.bin_dirs, os.path.join(root, "cni", "results"))

    # -- records

    def _conflist(
        self, name: str, bridge: str, subnet: str, gateway: str, opts: Mapping[str, Any],
        ipam: Sequence[Mapping[str, Any]] = (), data_dir: str = "",
    ) -> dict[str, Any]:
        return build_conflist(
            name,
            bridge=bridge,
            subnet=subnet,
            gateway=gateway,
            data_dir=data_dir or self.ipam_dir,
            ip_masq=bool(opts.get("ip_masq", True)),
            internal=bool(opts.get("internal", False)),
            firewall=self.firewall,
            mtu=int(opts.get("mtu", 0) or 0),
            ranges=[host_local_rangeset(c) for c in ipam],
        )

    def _ensure_default(self) -> NetworkRecord:
        """The default network, created on first use and kept in step with the
        configured subnet and bridge (attachments keep the config they were made
        with in their record, so DEL still matches an older subnet)."""
        subnet = self.default_subnet
        gateway = pick_gateway(ipaddress.ip_network(subnet))
        opts = {"bridge": self.default_bridge, "ip_masq": True, "internal": False}
        conflist = self._conflist(DEFAULT_NETWORK, self.default_bridge, subnet, gateway, opts,
                                  data_dir=os.path.join(HOST_IPAM_DIR, self.default_bridge))
        config = {"conflist": conflist, "options": opts, "default": True}
        try:
            current = self.store.get_network(DEFAULT_NETWORK)
        except NotFound:
            current = None
        # The usual case reads only: concurrent pod starts need no write lock here.
        if current is not None and current.config == config and current.subnet == subnet:
            return current
        with self.store.transaction():
            try:
                rec = self.store.get_network(DEFAULT_NETWORK)
            except NotFound:
                rec = None
            if rec is None:
                return self.store.add_network(
                    NetworkRecord(
                        new_id(), DEFAULT_NETWORK, "bridge", subnet, gateway, config=config
                    )
                )
            if rec.config != config or rec.subnet != subnet:
                rec = self.store.update_network(
                    rec.id, subnet=subnet, gateway=gateway, config=config
                )
            return rec

    def _file_networks(self) -> list[NetworkRecord]:
        if not self.conf_dir:
            return []
        out = []
        for conflist in cni.load_conf_dir(self.conf_dir):
            subnet, gateway = _subnet_of(conflist)
            rid = hashlib.sha256(f"cni-conf:{conflist['name']}".encode()).hexdigest()
            made = os.stat(self.conf_dir).st_mtime_ns
            out.append(
                NetworkRecord(
                    rid,
                    conflist["name"],
                    conflist["plugins"][0].get("type", ""),
                    subnet,
                    gateway,
                    created_at=made,
                    config={"conflist": conflist, "source": self.conf_dir, "readonly": True},
                )
            )
        return out

    def get(self, ref: str) -> NetworkRecord:
        """By name, full id or unique id prefix; the default network always exists."""
        if not ref:
            raise InvalidArgument("network name is empty")
        if ref == DEFAULT_NETWORK:
            return self._ensure_default()
        try:
            return self.store.get_network(ref)
        except NotFound:
            for rec in self._file_networks():
                if ref in (rec.name, rec.id) or (len(ref) >= 3 and rec.id.startswith(ref)):
                    return rec
            raise NotFound(f"network {ref} not found") from None

    def list(self) -> list[NetworkRecord]:
        """Every network: the default one, the store's and the conf dir's."""
        self._ensure_default()
        recs = self.store.list_networks()
        names = {r.name for r in recs}
        return recs + [r for r in self._file_networks() if r.name not in names]

    def pod_network(self, name: str = "") -> str:
        """The network a CRI pod joins: NAME if given, else the first conflist of the
        conf dir (containerd's rule), else pallet's default network."""
        if name:
            return self.get(name).name
        files = self._file_networks()
        return files[0].name if files else DEFAULT_NETWORK

    def create(
        self,
        name: str,
        *,
        subnet: str = "",
        gateway: str = "",
        driver: str = "bridge",
        bridge: str = "",
        internal: bool = False,
        dns: bool = True,
        ip_masq: bool = True,
        mtu: int = 0,
        labels: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
        subnets: Sequence[str] = (),
        gateways: Sequence[str] = (),
        ip_ranges: Sequence[str] = (),
        aux_addresses: Mapping[str, str] | None = None,
        ipv6: bool = False,
        ipv4: bool = True,
    ) -> NetworkRecord:
        """A new bridge network; docker's `network create` options map onto it.
        IPv4 always (unless IPV4 is false), IPv6 with IPV6 or an IPv6 subnet: a family
        without a subnet gets a free one (a /24 of 10.86.0.0/16, a /64 of the IPv6 pool).
        The bridge itself appears on the first attach (the bridge plugin makes it)."""
        name = validate_name(name, "network")
        if name in RESERVED_NAMES or name in (DEFAULT_NETWORK, LOOPBACK_NETWORK):
            raise InvalidArgument(f"network name {name!r} is reserved; choose another name")
        if driver not in DRIVERS:
            raise InvalidArgument(f"unsupported network driver {driver!r}; use bridge")
        for key, value in (options or {}).items():
            if key == OPT_BRIDGE_NAME:
                bridge = bridge or value
            elif key == OPT_MASQ:
                ip_masq = value.lower() in ("1", "true", "yes")
            elif key == OPT_MTU:
                if not value.isdigit() or not 68 <= int(value) <= 65535:
                    raise InvalidArgument(f"invalid MTU {value!r}; give a number from 68 to 65535")
                mtu = int(value)
            else:
                raise InvalidArgument(f"unsupported network option {key!r}")
        subnets = [*([subnet] if subnet else []), *subnets]
        gateways = [*([gateway] if gateway else []), *gateways]
        if gateways and not subnets:
            raise InvalidArgument("--gateway needs --subnet")
        ipam = consolidate_ipam(subnets, gateways, ip_ranges, aux_addresses)
        versions = {ipaddress.ip_network(c["subnet"]).version for c in ipam}
        ipv6 = ipv6 or 6 in versions  # an IPv6 --subnet says it (podman's rule)
        if 4 in versions and not ipv4:
            raise InvalidArgument("IPv4 subnets were given, but IPv4 is disabled (--ipv4=false)")
        if not ipv4 and not ipv6:
            raise InvalidArgument("a network needs IPv4 or IPv6: give --ipv6 with --ipv4=false")
        if any(r.name == name for r in self._file_networks()):
            raise AlreadyExists(f"network with name {name} already exists (in {self.conf_dir})")
        rid = new_id()
        bridge = validate_bridge_name(bridge or f"br-{rid[:12]}")
        with self.store.transaction():
            existing = self.list()
            if any(r.name == name for r in existing):
                raise AlreadyExists(f"network with name {name} already exists")
            for r in existing:
                if (r.config.get("options") or {}).get("bridge") == bridge:
                    raise AlreadyExists(f"bridge {bridge} is already used by network {r.name}")
            if link_exists(bridge) and not _is_bridge(bridge):
                raise AlreadyExists(f"interface {bridge} exists on the host and is not a bridge")
            for c in ipam:
                self._check_overlap(ipaddress.ip_network(c["subnet"]), existing)
            auto = []
            if ipv4 and 4 not in versions:
                auto.append(self._free_subnet(existing))
            if ipv6 and 6 not in versions:
                auto.append(self._free_subnet6(existing))
            for net in auto:
                ipam.append({"subnet": str(net), "gateway": pick_gateway(net), "ip_range": "",
                             "aux": {}})
            ipam.sort(key=lambda c: ipaddress.ip_network(c["subnet"]).version)
            for c in ipam:
                host_local_rangeset(c)  # an --ip-range with no free address fails here
            opts = {"bridge": bridge, "ip_masq": ip_masq, "internal": internal, "mtu": mtu,
                    "ipv6": ipv6, "ipv4": ipv4, "user_subnets": bool(subnets), "dns": dns}
            first = ipam[0]
            conflist = self._conflist(name, bridge, first["subnet"], first["gateway"], opts, ipam)
            made = self.store.add_network(
                NetworkRecord(
                    rid,
                    name,
                    driver,
                    first["subnet"],
                    first["gateway"],
                    labels=dict(labels or {}),
                    config={"conflist": conflist, "options": opts, "ipam": ipam},
                )
            )
            v4 = [c for c in ipam if ipaddress.ip_network(c["subnet"]).version == 4]
            if v4 and v4[0].get("gateway"):
                gateway = f"{v4[0]['gateway']}/{ipaddress.ip_network(v4[0]['subnet']).prefixlen}"
            else:
                gateway = ""
            existed = _is_bridge(bridge)
            try:  # still in the transaction: a failure leaves no record either
                make_bridge(bridge, gateway, mtu)
            except BaseException:
                if not existed and _is_bridge(bridge):
                    delete_link(bridge)
                raise
        self._event(made, "create")
        return made

    def _event(self, rec: NetworkRecord, action: str, **attrs: str) -> None:
        """docker's network event (name, type and ATTRS) in the root's events journal."""
        from pallet.events import emit

        emit(self.root, "network", action, rec.id,
             {**rec.labels, "name": rec.name, "type": rec.driver or "bridge", **attrs})

    def _used_ranges(
        self, existing: Sequence[NetworkRecord]
    ) -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
        ours = {(r.config.get("options") or {}).get("bridge") for r in existing}
        used: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
        for r in existing:
            for c in ipam_configs(r):
                used.append((f"network {r.name}", ipaddress.ip_network(c["subnet"])))
        for dev, net in [*_host_routes(), *_host_routes6()]:
            if dev not in ours:
                used.append((f"a route of the host (dev {dev})", net))
        return used

    def _check_overlap(
        self, net: ipaddress.IPv4Network | ipaddress.IPv6Network, existing: Sequence[NetworkRecord]
    ) -> None:
        for owner, other in self._used_ranges(existing):
            if other.version == net.version and net.overlaps(other):
                raise AlreadyExists(
                    f"subnet {net} overlaps with {other} of {owner}; choose another --subnet"
                )

    def _free_subnet(self, existing: Sequence[NetworkRecord]) -> ipaddress.IPv4Network:
        used = [n for _, n in self._used_ranges(existing) if n.version == 4]
        for cand in ipaddress.ip_network(AUTO_SUBNET_POOL).subnets(new_prefix=AUTO_PREFIX):
            if not any(cand.overlaps(u) for u in used):
                return cand  # type: ignore[return-value]
        raise FailedPrecondition(
            f"no free /{AUTO_PREFIX} left in {AUTO_SUBNET_POOL}; give --subnet or remove networks"
        )

    def _free_subnet6(self, existing: Sequence[NetworkRecord]) -> ipaddress.IPv6Network:
        used = [n for _, n in self._used_ranges(existing) if n.version == 6]
        pool = ipaddress.ip_network(self.ipv6_pool or ula_pool(_machine_id()))
        for cand in pool.subnets(new_prefix=max(64, pool.prefixlen)):
            if not any(cand.overlaps(u) for u in used):
                return cand  # type: ignore[return-value]
        raise FailedPrecondition(
            f"could not find an available, non-overlapping IPv6 address pool in {pool}; "
            "give an IPv6 --subnet"
        )

    def set_default_subnet(self, cidr: str) -> NetworkRecord:
        """CRI UpdateRuntimeConfig's pod CIDR: new pods on the default network get
        addresses from CIDR; existing ones keep theirs until they are detached."""
        net = parse_subnet(cidr)
        others = [r for r in self.store.list_networks() if r.name != DEFAULT_NETWORK]
        for r in others:
            if r.subnet and ipaddress.ip_network(r.subnet).overlaps(net):
                raise AlreadyExists(f"pod CIDR {net} overlaps with network {r.name} ({r.subnet})")
        self.default_subnet = str(net)
        return self._ensure_default()

    def remove(self, ref: str) -> NetworkRecord:
        """Delete a network with no attachments: its record, bridge and IPAM state."""
        rec = self.get(ref)
        if rec.name == DEFAULT_NETWORK:
            raise FailedPrecondition(f"{rec.name} is a pre-defined network and cannot be removed")
        if rec.config.get("readonly"):
            raise FailedPrecondition(
                f"network {rec.name} is defined in {rec.config.get('source')}; remove its file there"
            )
        users = self.attachments(rec.name)
        if users:
            ids = ", ".join(sorted({a.container_id[:12] for a in users}))
            raise FailedPrecondition(
                f"error while removing network: network {rec.name} id {rec.id[:12]} has active "
                f"endpoints ({ids})"
            )
        self.store.remove_network(rec.id)
        self._remove_host_state(rec)
        self._event(rec, "destroy")
        return rec

    def _remove_host_state(self, rec: NetworkRecord) -> None:
        bridge = (rec.config.get("options") or {}).get("bridge", "")
        if bridge and _is_bridge(bridge):
            delete_link(bridge)
        # host-local leaves its lock and last-reserved files; nothing else uses them.
        shutil.rmtree(os.path.join(self.ipam_dir, rec.name), ignore_errors=True)
        shutil.rmtree(os.path.join(self.executor.cache_dir, rec.name), ignore_errors=True)

    def prune(self) -> list[str]:
        """Remove every user network without attachments; returns their names."""
        removed = []
        for rec in self.store.list_networks():
            if rec.name == DEFAULT_NETWORK or self.attachments(rec.name):
                continue
            try:
                self.remove(rec.id)
            except (NotFound, FailedPrecondition):
                continue  # removed or joined by someone else meanwhile
            removed.append(rec.name)
        return removed

    def inspect(self, ref: str) -> dict[str, Any]:
        """docker's `network inspect` object for one network."""
        rec = self.get(ref)
        opts = rec.config.get("options") or {}
        containers = {}
        for a in self.attachments(rec.name):
            v4 = [ip for ip in a.ips if ":" not in ip]
            v6 = [ip for ip in a.ips if ":" in ip]
            containers[a.container_id] = {
                "Name": a.aliases[0] if a.aliases else a.container_id[:12],
                "EndpointID": hashlib.sha256(
                    f"{rec.id}:{a.container_id}:{a.interface}".encode()
                ).hexdigest(),
                "MacAddress": a.mac,
                "IPv4Address": v4[0] if v4 else "",
                "IPv6Address": v6[0] if v6 else "",
            }
        options = {}
        if opts.get("bridge"):
            options[OPT_BRIDGE_NAME] = opts["bridge"]
            options[OPT_MASQ] = str(bool(opts.get("ip_masq", True))).lower()
        if opts.get("mtu"):
            options[OPT_MTU] = str(opts["mtu"])
        ipam_config = []
        for c in ipam_configs(rec):
            row = {"Subnet": c["subnet"]}
            if c.get("ip_range"):
                row["IPRange"] = c["ip_range"]
            row["Gateway"] = c["gateway"]
            if c.get("aux"):
                row["AuxiliaryAddresses"] = dict(c["aux"])
            ipam_config.append(row)
        versions = {ipaddress.ip_network(c["Subnet"]).version for c in ipam_config}
        return {
            "Name": rec.name,
            "Id": rec.id,
            "Created": _rfc3339(rec.created_at),
            "Scope": "local",
            "Driver": rec.driver,
            "EnableIPv4": bool(opts.get("ipv4", 4 in versions)),
            "EnableIPv6": bool(opts.get("ipv6", 6 in versions)),
            "IPAM": {"Driver": "default", "Options": {}, "Config": ipam_config},
            "Internal": bool(opts.get("internal", False)),
            "DNSEnabled": dns_enabled(rec),  # podman's dns_enabled; docker's is always on
            "Attachable": False,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": containers,
            "Options": options,
            "Labels": dict(rec.labels),
            "CNI": rec.config.get("conflist", {}),
        }

    # -- attachments

    def attachments(self, network: str | None = None) -> list[Attachment]:
        return [attachment_from_entry(e) for e in self.executor.cached_entries(network)]

    def attachment(
        self, container_id: str, network: str, ifname: str = "eth0"
    ) -> Attachment | None:
        entry = self.executor.cached(network, container_id, ifname)
        return attachment_from_entry(entry) if entry else None

    def set_aliases(self, container_id: str, network: str, ifname: str,
                    aliases: Sequence[str]) -> bool:
        """The names an attachment answers to in the others' /etc/hosts (a rename)."""
        return self.executor.update_cached(network, container_id, ifname,
                                           aliases=list(aliases))

    def hosts_entries(self, network: str) -> list[tuple[str, list[str]]]:
        """(ip, names) of every attachment with aliases on NETWORK, for the /etc/hosts
        the engine writes into each container: name resolution without a DNS server."""
        out = []
        for a in self.attachments(network):
            if a.aliases:
                out.extend((ip.split("/")[0], list(a.aliases)) for ip in a.ips)
        return out

    @contextmanager
    def _ports_lock(self) -> Iterator[None]:
        """Serializes the check-then-ADD of published ports between processes;
        attaches without ports skip it and so never wait on each other."""
        os.makedirs(self.executor.cache_dir, mode=0o700, exist_ok=True)
        fd = os.open(
            os.path.join(self.executor.cache_dir, ".ports.lock"),
            os.O_CREAT | os.O_RDWR | os.O_CLOEXEC,
            0o600,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _published(self) -> list[tuple[str, dict[str, Any]]]:
        return [(a.container_id, m) for a in self.attachments() for m in a.port_mappings]

    def attach(
        self,
        netns_path: str,
        container_id: str,
        network: str = DEFAULT_NETWORK,
        port_mappings: Sequence[Mapping[str, Any]] = (),
        ifname: str = "eth0",
        aliases: Sequence[str] = (),
        cni_args: Mapping[str, str] | None = None,
        default_route: bool = True,
        ips: Sequence[str] = (),
        mac: str = "",
    ) -> Attachment:
        """Connect the namespace at NETNS_PATH to NETWORK as IFNAME via CNI ADD and
        record it. Idempotent for the same (container, network, ifname). Host ports
        already in use fail before any plugin runs; a failed ADD is rolled back.
        default_route=False: no default route through this network (a second one).
        IPS: static addresses (docker's --ip/--ip6), checked with docker's messages; MAC:
        the interface's MAC address (docker's --mac-address), checked by the caller."""
        rec = self.get(network)
        validate_ifname(ifname)
        if not netns.is_netns(netns_path):
            raise InvalidArgument(f"{netns_path} is not a network namespace")
        known = self.attachment(container_id, rec.name, ifname)
        if known is not None:
            if known.netns == netns_path:
                return known
            # Recorded for a namespace that was replaced without a detach: free it first.
            self.detach(container_id, rec.name, ifname)
        conflist = rec.config["conflist"]
        missing = cni.missing_plugins(conflist, self.bin_dirs)
        if missing:
            raise NotFound(
                f'network {rec.name}: failed to find CNI plugin "{missing[0]}" in path '
                f"[{' '.join(self.bin_dirs)}]; install containernetworking-plugins"
            )
        mappings = normalize_port_mappings(port_mappings)
        conflist = plugins_to_run(conflist, mappings)
        if not default_route:
            conflist = without_default_route(conflist)
        args = [("IgnoreUnknown", "1"), *sorted((cni_args or {}).items())]
        ips = [i for i in ips if i]
        if ips:
            self.check_static_ips(rec, ips, container_id)
            conflist = with_static_ips(conflist, ips)
        caps: dict[str, Any] = {"portMappings": mappings} if mappings else {}
        if mac:
            conflist = with_mac(conflist)
            caps["mac"] = mac
        rt = cni.RuntimeConf(container_id, netns_path, ifname, args, caps)
        extra = {"aliases": list(aliases), "networkId": rec.id}
        try:
            if mappings:
                with self._ports_lock():
                    clash = port_conflicts(mappings, self._published())
                    if clash:
                        raise FailedPrecondition(clash)
                    check_ports_bindable(mappings)
                    self.executor.add(conflist, rt, extra)
                    self._exempt_loopback6(container_id, rec.name, ifname, netns_path)
            else:
                self.executor.add(conflist, rt, extra)
        except cni.CNIError as e:
            # Taken by an attach that raced ours past check_static_ips.
            if ips and "is not available in range set" in str(e):
                raise FailedPrecondition(ADDRESS_IN_USE) from None
            raise
        found = self.attachment(container_id, rec.name, ifname)
        if found is None:  # only if someone removed the record in between
            raise SystemFailure(f"attachment of {container_id[:12]} to {rec.name} vanished")
        self._event(rec, "connect", container=container_id)
        return found

    def _exempt_loopback6(self, container_id: str, network: str, ifname: str,
                          netns_path: str) -> None:
        """exempt_loopback6 for the attachment just added; undone with it on failure."""
        try:
            exempt_loopback6(self.executor.cached(network, container_id, ifname) or {})
        except PalletError:
            self.detach(container_id, network, ifname, netns_path)
            raise

    def check_static_ips(self, rec: NetworkRecord, ips: Sequence[str],
                         container_id: str = "", held: bool = True) -> None:
        """docker's checks of --ip/--ip6 on the network REC: the right family, in one of
        its subnets, not its gateway or an aux address, and (HELD) not another
        container's address."""
        opts = rec.config.get("options") or {}
        configs = ipam_configs(rec)
        for ip in ips:
            version = 6 if ":" in ip else 4
            err = static_ip_error(ip, configs, version=version,
                                  user_subnets=bool(opts.get("user_subnets", True)),
                                  predefined=rec.name == DEFAULT_NETWORK)
            if err == ADDRESS_IN_USE:
                raise FailedPrecondition(err)
            if err:
                raise InvalidArgument(err)
            want = ipaddress.ip_address(ip)
            for a in self.attachments(rec.name) if held else ():
                if a.container_id == container_id:
                    continue
                if any(ipaddress.ip_address(x.split("/")[0]) == want for x in a.ips):
                    raise FailedPrecondition(ADDRESS_IN_USE)

    def detach(
        self,
        container_id: str,
        network: str = DEFAULT_NETWORK,
        ifname: str = "eth0",
        netns_path: str = "",
    ) -> None:
        """CNI DEL. Idempotent and tolerant: an unknown attachment, a removed network
        or a namespace that is already gone are all fine; the recorded config and
        result are used so the plugins release exactly what ADD took."""
        validate_ifname(ifname)
        entry = self.executor.cached(network, container_id, ifname)
        conflist = None
        if entry is None:
            # No record: ADD may have crashed half-way; DEL with the current config
            # frees whatever IPAM kept. A removed network has nothing left to free.
            try:
                conflist = self.get(network).config.get("conflist")
            except NotFound:
                return
        path = netns_path or (entry or {}).get("netns", "")
        if path and not netns.is_netns(path):
            path = ""  # the namespace is gone, and with it the interfaces
        args = [("IgnoreUnknown", "1")]
        if entry:
            args = [tuple(a) for a in entry.get("cniArgs") or args]  # type: ignore[misc]
        rt = cni.RuntimeConf(container_id, path, ifname, args)
        rules_gone = False
        if entry and fast_teardown_applies(entry.get("config") or {}):
            # The bridge plugin removes its NAT rules one nft commit at a time, and only
            # when it finds the interface: remove all the rules in one transaction per
            # table while the interface is deleted; the DELs below free the rest (IPAM,
            # portmap's rules) and find nothing left of what we removed.
            rules_gone = remove_cni_rules(
                entry, (lambda: _delete_link_in(path, ifname)) if path else None
            )
        self.executor.delete(network, rt, conflist)
        if entry and not rules_gone:
            teardown_ipmasq(entry)
        if entry:
            unexempt_loopback6(entry)
        if entry is not None:
            with contextlib.suppress(NotFound):
                self._event(self.get(network), "disconnect", container=container_id)

    def detach_all(self, container_id: str, netns_path: str = "") -> None:
        """Detach CONTAINER_ID from every network it is recorded on; the first error
        is raised after all were tried."""
        first: PalletError | None = None
        for a in self.attachments():
            if a.container_id != container_id:
                continue
            try:
                self.detach(container_id, a.network, a.interface, netns_path)
            except PalletError as e:
                first = first or e
        if first is not None:
            raise first

    def check(
        self,
        netns_path: str,
        container_id: str,
        network: str = DEFAULT_NETWORK,
        ifname: str = "eth0",
    ) -> None:
        """CNI CHECK: the plugins verify the interface, addresses and rules still
        match the recorded result; a CNIError says what drifted."""
        rec = self.get(network)
        entry = self.executor.cached(rec.name, container_id, ifname)
        args = [tuple(a) for a in (entry or {}).get("cniArgs") or [("IgnoreUnknown", "1")]]
        rt = cni.RuntimeConf(container_id, netns_path, ifname, args)  # type: ignore[arg-type]
        rules = portmap_dnat_rules(entry or {})
        # containernetworking-plugins 1.1's portmap CHECKs its IPv6 chain for the IPv4
        # rules (plugins#819, Debian 12's build): it fails for every published port. Its
        # DNAT rules are checked here instead.
        self.executor.check(rec.config["conflist"], rt, skip=("portmap",) if rules else ())
        for tool, chain, want in rules:
            exe = shutil.which(tool)
            listed = subprocess.run([exe or tool, "-w", "-t", "nat", "-S", chain],
                                    capture_output=True, text=True).stdout if exe else ""
            if want not in listed:
                raise cni.CNIError(f"plugin portmap (network {rec.name}) failed CHECK: "
                                   f"rule {want!r} not found in {tool}'s nat table", "portmap")

    def loopback_up(self, netns_path: str, container_id: str) -> None:
        """Bring `lo` up in the namespace (every pod needs it, --network none
        included): in-process, as the loopback plugin would, saving its exec.
        Nothing to undo: lo dies with the namespace."""
        netns.loopback_up(netns_path)

    def network_ready(self) -> tuple[bool, str]:
        """CRI's NetworkReady: (ready, message) — the default pod network's plugins
        and loopback are installed, and iptables for NAT and portmap."""
        try:
            conflist = self.get(self.pod_network()).config["conflist"]
        except PalletError as e:
            return False, f"cni config not loaded: {e}"
        missing = cni.missing_plugins(conflist, self.bin_dirs)
        missing += cni.missing_plugins({"plugins": [{"type": "loopback"}]}, self.bin_dirs)
        if missing:
            return False, (
                f"cni plugin not initialized: failed to find plugin(s) {', '.join(missing)} "
                f"in path [{' '.join(self.bin_dirs)}]"
            )
        if not shutil.which("iptables"):
            return False, "iptables not found in PATH; NAT and port mappings need it"
        return True, ""

    def allocate_host_ports(self, mappings: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """docker's `-p 80`: give mappings with hostPort 0 a free ephemeral port
        (the kernel's choice, and not published by another attachment)."""
        taken = {(m["protocol"], int(m["hostPort"])) for _, m in self._published()}
        out = []
        for m in mappings:
            m = dict(m)
            if not int(m.get("hostPort") or 0):
                proto = str(m.get("protocol") or "tcp").lower()
                kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
                for _ in range(20):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((m.get("hostIP") or "0.0.0.0", 0))
                        port = s.getsockname()[1]
                    if (proto, port) not in taken:
                        break
                m["hostPort"] = port
                taken.add((proto, port))
            out.append(m)
        return out


def dns_enabled(rec: NetworkRecord) -> bool:
    """Whether containers on this network resolve each other through the embedded DNS
    server (`network create --disable-dns` turns it off, as podman's)."""
    return bool((rec.config.get("options") or {}).get("dns", True))
