"""`pallet network` commands: create, ls, inspect, rm, prune, connect, disconnect, with
docker's flags and output.

Parses and prints only; all work is done by pallet.engine.network.Networks.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from pallet.cli.filters import filter_arg
from pallet.cli.flags import add_bool_flag, exit_1_on_error

if TYPE_CHECKING:
    from pallet.engine.network import Networks
    from pallet.engine.store import NetworkRecord

DEFAULT_ROOT = "/var/lib/pallet"


def _networks(args: argparse.Namespace) -> Networks:
    from pallet.engine.cni import DEFAULT_BIN_DIRS
    from pallet.engine.network import Networks
    from pallet.engine.store import Store

    try:
        from pallet.config import load_config
    except ImportError:  # the config module is newer than this command group
        root = args.root or DEFAULT_ROOT
        return Networks(Store(root), root, bin_dirs=DEFAULT_BIN_DIRS)
    cfg = load_config()
    root = args.root or cfg.root or DEFAULT_ROOT
    # The conf dir's networks are the ones CRI pods use: show them here too.
    return Networks(Store(root), root, bin_dirs=cfg.cni.bin_dirs, conf_dir=cfg.cni.conf_dir,
                    ipv6_pool=cfg.cni.ipv6_pool)


def add_parsers(sub: Any) -> None:
    net = sub.add_parser("network", help="manage networks")
    nsub = net.add_subparsers(dest="network_command", metavar="COMMAND")
    net.set_defaults(func=lambda args: (net.print_help(), 0)[1])

    p = nsub.add_parser("create", help="create a network")
    p.add_argument("name")
    p.add_argument("-d", "--driver", default="bridge", help="driver (only bridge)")
    p.add_argument("--subnet", action="append", default=[],
                   help="subnet in CIDR form, e.g. 10.86.5.0/24 (an IPv4 and an IPv6 one "
                   "for dual stack)")
    p.add_argument("--gateway", action="append", default=[],
                   help="gateway address in a subnet")
    p.add_argument("--ip-range", action="append", default=[],
                   help="allocate container addresses from a sub-range of a subnet")
    p.add_argument("--aux-address", action="append", default=[], metavar="NAME=IP",
                   help="an address of a subnet containers must not get")
    add_bool_flag(p, "--internal", help="no NAT and no default route")
    add_bool_flag(p, "--disable-dns", help="no embedded DNS server (127.0.0.11) on this "
                  "network: its containers use the host's servers and do not resolve each "
                  "other by name (podman's flag)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "-o",
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="driver option, e.g. com.docker.network.bridge.name=br0",
    )
    add_bool_flag(p, "--ipv6", default=False,
                  help="enable IPv6 (an IPv6 subnet of its own unless --subnet gives one)")
    add_bool_flag(p, "--ipv4", default=True,
                  help="enable IPv4 (default true; --ipv4=false for an IPv6-only network)")
    p.set_defaults(func=cmd_create)

    for name in ("ls", "list"):
        p = nsub.add_parser(name, help="list networks")
        add_bool_flag(p, "-q", "--quiet", help="only network ids")
        add_bool_flag(p, "--no-trunc", help="full ids")
        p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                       type=filter_arg("-f, --filter"), help="driver=, id=, label=, name=, "
                       "scope=, type=custom|builtin, dangling=true|false")
        p.add_argument("--format", default=None, help="table (the default), json, `table "
                       "TEMPLATE` or a Go template, e.g. '{{.ID}}: {{.Driver}}'")
        p.set_defaults(func=exit_1_on_error(cmd_ls))

    p = nsub.add_parser("inspect", help="show networks as JSON")
    p.add_argument("networks", nargs="+")
    p.add_argument("-f", "--format", default=None, help="a Go template, or json (the default)")
    p.set_defaults(func=cmd_inspect)

    for name in ("rm", "remove"):
        p = nsub.add_parser(name, help="remove networks")
        p.add_argument("networks", nargs="+")
        add_bool_flag(p, "-f", "--force", help="no error if missing")
        p.set_defaults(func=cmd_rm)

    p = nsub.add_parser("connect", help="connect a container to a network")
    p.add_argument("--alias", action="append", default=[], help="another name for the "
                   "container on this network")
    p.add_argument("--ip", default="", help="IPv4 address (e.g., 172.30.100.104)")
    p.add_argument("--ip6", default="", help="IPv6 address (e.g., 2001:db8::33)")
    p.add_argument("network")
    p.add_argument("container")
    p.set_defaults(func=cmd_connect)

    p = nsub.add_parser("disconnect", help="disconnect a container from a network")
    add_bool_flag(p, "-f", "--force",
                   help="disconnect even if the network is gone")
    p.add_argument("network")
    p.add_argument("container")
    p.set_defaults(func=cmd_disconnect)

    p = nsub.add_parser("prune", help="remove all networks no container uses")
    add_bool_flag(p, "-f", "--force", help="do not ask (pallet never asks)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   type=filter_arg("--filter"), help="until=TIMESTAMP|DURATION, "
                   "label=KEY[=VALUE], label!=KEY[=VALUE]")
    p.set_defaults(func=exit_1_on_error(cmd_prune))


def _pairs(items: list[str], what: str) -> dict[str, str]:
    from pallet.errors import InvalidArgument

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid {what} {item!r}: use KEY=VALUE")
        out[key] = value if sep else ""
    return out


def cmd_create(args: argparse.Namespace) -> int:
    aux = _pairs(args.aux_address, "aux-address")
    rec = _networks(args).create(
        args.name,
        subnets=args.subnet,
        gateways=args.gateway,
        ip_ranges=args.ip_range,
        aux_addresses=aux,
        ipv6=args.ipv6,
        ipv4=args.ipv4,
        driver=args.driver,
        internal=args.internal,
        dns=not args.disable_dns,
        labels=_pairs(args.label, "label"),
        options=_pairs(args.opt, "option"),
    )
    print(rec.id)
    return 0


NETWORK_FILTERS = ("dangling", "driver", "id", "label", "name", "scope", "type")
NETWORK_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                   "IPv4": "IPV4", "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS",
                   "Label": "LABEL", "CreatedAt": "CREATED AT"}


def _builtin(rec: NetworkRecord) -> bool:
    from pallet.engine.network import DEFAULT_NETWORK

    return rec.name == DEFAULT_NETWORK or bool(rec.config.get("readonly"))


def filter_networks(nets: Networks, recs: list[NetworkRecord], words: list[str]
                    ) -> list[NetworkRecord]:
    """docker's network ls filters (moby's daemon/network/filter.go) over RECS."""
    from pallet.cli.filters import Filters
    from pallet.errors import InvalidArgument

    flt = Filters(words, NETWORK_FILTERS)
    if not flt:
        return recs
    for t in flt.get("type"):
        if t not in ("custom", "builtin"):
            raise InvalidArgument(f"Invalid filter: 'type'='{t}'")
    dangling = None
    if "dangling" in flt:
        values = flt.get("dangling")
        if len(values) > 1:
            raise InvalidArgument('got more than one value for filter key "dangling"')
        if values[0] not in ("0", "1", "false", "true"):
            raise InvalidArgument("invalid value for filter 'dangling', must be \"true\" "
                                  "(or \"1\"), or \"false\" (or \"0\")")
        dangling = values[0] in ("1", "true")
    out = []
    for r in recs:
        if not (flt.matches("name", r.name) and flt.matches("id", r.id)
                and flt.labels_match(r.labels)):
            continue
        if "driver" in flt and r.driver not in flt.get("driver"):
            continue
        if "scope" in flt and "local" not in flt.get("scope"):
            continue
        if "type" in flt and ("builtin" if _builtin(r) else "custom") not in flt.get("type"):
            continue
        if dangling is not None:
            unused = not _builtin(r) and not nets.attachments(r.name)
            if unused != dangling:
                continue
        out.append(r)
    return out


def cmd_ls(args: argparse.Namespace) -> int:
    nets = _networks(args)
    recs = filter_networks(nets, nets.list(), args.filter)
    recs.sort(key=lambda r: r.name)
    ids = [r.id if args.no_trunc else r.id[:12] for r in recs]
    if args.quiet:
        for i in ids:
            print(i)
        return 0
    rows = [_ls_row(ident, r) for ident, r in zip(ids, recs, strict=True)]
    from pallet.cli.template import align, print_formatted

    def table() -> None:
        cols = ("ID", "Name", "Driver", "Scope")
        print(align("\n".join("\t".join(str(r[c]) for c in cols)
                              for r in [NETWORK_HEADERS, *rows])))

    print_formatted(args.format, rows, NETWORK_HEADERS, table)
    return 0


def _go_time(ns: int) -> str:
    """Go's time.String() in UTC, as docker prints a network's CreatedAt."""
    import time

    frac = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns // 1_000_000_000))
            + (f".{frac}" if frac else "") + " +0000 UTC")


def _ls_row(ident: str, r: NetworkRecord) -> dict[str, Any]:
    opts = r.config.get("options") or {}
    labels = dict(r.labels)
    return {
        "ID": ident,
        "Name": r.name,
        "Driver": r.driver,
        "Scope": "local",
        "IPv4": bool(opts.get("ipv4", ":" not in r.subnet)),
        "IPv6": bool(opts.get("ipv6", ":" in r.subnet)),
        "Internal": bool(opts.get("internal", False)),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "Label": lambda key: labels.get(key, ""),
        "CreatedAt": _go_time(r.created_at),
        "Subnet": r.subnet,
        "Gateway": r.gateway,
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    from pallet.cli.template import format_inspected
    from pallet.errors import NotFound

    nets = _networks(args)
    found, code = [], 0
    for ref in args.networks:
        try:
            found.append(nets.inspect(ref))
        except NotFound:
            print(f"Error: No such network: {ref}", file=sys.stderr)
            code = 1
    sys.stdout.write(format_inspected(args.format, found))
    return code


def cmd_rm(args: argparse.Namespace) -> int:
    from pallet.errors import NotFound, PalletError

    nets = _networks(args)
    code = 0
    for ref in args.networks:
        try:
            nets.remove(ref)
            print(ref)
        except NotFound as e:
            if not args.force:
                print(f"Error: {e}", file=sys.stderr)
                code = 1
        except PalletError as e:
            # Like docker: report each failure, go on with the rest, exit non-zero.
            print(f"Error: {e}", file=sys.stderr)
            code = 1
    return code


def cmd_prune(args: argparse.Namespace) -> int:
    from pallet.cli.filters import Filters

    removed = prune_networks(_networks(args), Filters(args.filter, NETWORK_PRUNE_FILTERS))
    if removed:
        print("Deleted Networks:")
        for name in removed:
            print(name)
    return 0


NETWORK_PRUNE_FILTERS = ("label", "label!", "until")


def prune_networks(nets: Networks, flt: Any) -> list[str]:
    """Remove the user networks no container is attached to that FLT (docker's until=,
    label=, label!=) chooses; their names. (network prune, system prune)"""
    if not flt:
        return nets.prune()
    until = flt.until()
    removed = []
    for r in nets.store.list_networks():
        if (_builtin(r) or r.config.get("default") or not flt.labels_match(r.labels)
                or (until is not None and r.created_at >= until)
                or nets.attachments(r.name)):
            continue
        nets.remove(r.id)
        removed.append(r.name)
    return removed


def _engine(args: argparse.Namespace) -> Any:
    from pallet.engine.containers import Engine

    try:
        from pallet.config import load_config

        root = args.root or load_config().root or DEFAULT_ROOT
    except ImportError:
        root = args.root or DEFAULT_ROOT
    return Engine(root)


def cmd_connect(args: argparse.Namespace) -> int:
    from pallet.errors import PalletError

    try:
        _engine(args).connect(args.container, args.network, args.alias, ip=args.ip,
                              ip6=args.ip6)
    except PalletError as e:  # docker: 1, not 125, for a daemon's refusal
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    from pallet.errors import PalletError

    try:
        _engine(args).disconnect(args.container, args.network, force=args.force)
    except PalletError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0
