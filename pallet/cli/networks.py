"""`pallet network` commands: create, ls, inspect, rm, prune, connect, disconnect, with
docker's flags and output.

Parses and prints only; all work is done by pallet.engine.network.Networks.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from pallet.cli.flags import add_bool_flag

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
        p.add_argument(
            "-f",
            "--filter",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="driver=, id=, label=, name=, scope=, type=custom|builtin",
        )
        p.add_argument("--format", default=None, help="`json` or `table`")
        p.set_defaults(func=cmd_ls)

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
    p.add_argument("--filter", action="append", default=[], help="label=KEY[=VALUE]")
    p.set_defaults(func=cmd_prune)


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
        labels=_pairs(args.label, "label"),
        options=_pairs(args.opt, "option"),
    )
    print(rec.id)
    return 0


def _matches(rec: NetworkRecord, filters: dict[str, list[str]]) -> bool:
    from pallet.engine.network import DEFAULT_NETWORK

    for key, values in filters.items():
        ok = False
        for v in values:
            if key == "name":
                ok |= v in rec.name  # docker matches names by substring
            elif key == "id":
                ok |= rec.id.startswith(v)
            elif key == "driver":
                ok |= rec.driver == v
            elif key == "scope":
                ok |= v == "local"
            elif key == "type":
                builtin = rec.name == DEFAULT_NETWORK or bool(rec.config.get("readonly"))
                ok |= (v == "builtin") == builtin
            elif key == "label":
                k, sep, val = v.partition("=")
                ok |= k in rec.labels and (not sep or rec.labels[k] == val)
        if not ok:
            return False
    return True


def _filters(items: list[str]) -> dict[str, list[str]]:
    from pallet.errors import InvalidArgument

    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in ("name", "id", "driver", "scope", "type", "label"):
            raise InvalidArgument(
                f"invalid filter {item!r}; use driver=, id=, label=, name=, scope= or type="
            )
        out.setdefault(key, []).append(value)
    return out


def cmd_ls(args: argparse.Namespace) -> int:
    from pallet.errors import InvalidArgument

    if args.format not in (None, "json", "table"):
        raise InvalidArgument(f"unsupported --format {args.format!r}; use json or table")
    flt = _filters(args.filter)
    recs = [r for r in _networks(args).list() if _matches(r, flt)]
    recs.sort(key=lambda r: r.name)
    ids = [r.id if args.no_trunc else r.id[:12] for r in recs]
    if args.quiet:
        for i in ids:
            print(i)
        return 0
    if args.format == "json":
        for ident, r in zip(ids, recs, strict=True):
            print(json.dumps(_ls_row(ident, r)))
        return 0
    heads = ("NETWORK ID", "NAME", "DRIVER", "SCOPE")
    rows = [(ident, r.name, r.driver, "local") for ident, r in zip(ids, recs, strict=True)]
    widths = [max(len(x) for x in col) for col in zip(heads, *rows, strict=True)]
    for row in (heads, *rows):
        print("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _ls_row(ident: str, r: NetworkRecord) -> dict[str, Any]:
    from pallet.engine.network import _rfc3339

    opts = r.config.get("options") or {}
    return {
        "ID": ident,
        "Name": r.name,
        "Driver": r.driver,
        "Scope": "local",
        "IPv6": bool(opts.get("ipv6", ":" in r.subnet)),
        "Internal": bool(opts.get("internal", False)),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(r.labels.items())),
        "CreatedAt": _rfc3339(r.created_at),
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
    flt = _filters(args.filter)
    nets = _networks(args)
    if flt:
        keep = {r.name for r in nets.list() if not _matches(r, flt)}
        removed = []
        for r in nets.store.list_networks():
            if r.name in keep or r.config.get("default") or nets.attachments(r.name):
                continue
            nets.remove(r.id)
            removed.append(r.name)
    else:
        removed = nets.prune()
    if removed:
        print("Deleted Networks:")
        for name in removed:
            print(name)
    return 0


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
