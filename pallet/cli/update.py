"""`pallet update`: docker's update of containers' resource limits and restart policy.

Parses and prints only; the work is pallet.engine.update's. A bad flag value exits 125;
a container that cannot be updated is reported and the others still are, then exit 1.
"""

from __future__ import annotations

import argparse
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("update", help="update configuration of one or more containers",
                       description="change the resource limits (live, for a running "
                       "container) and restart policy of containers")
    a = p.add_argument
    a("-m", "--memory", default=None, help="memory limit")
    a("--memory-swap", default=None, help="swap limit equal to memory plus swap: -1 to "
      "enable unlimited swap")
    a("--cpus", default=None, help="number of CPUs")
    a("-c", "--cpu-shares", default=None, help="CPU shares (relative weight)")
    a("--cpuset-cpus", default=None, help="CPUs in which to allow execution (0-3, 0,1)")
    a("--cpuset-mems", default=None, help="MEMs in which to allow execution (0-3, 0,1)")
    a("--pids-limit", default=None, help="tune container pids limit (set -1 for unlimited)")
    a("--restart", default=None, help="restart policy to apply when a container exits")
    a("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_update)


def parse(args: argparse.Namespace) -> Any:
    """The flags as an engine Update (InvalidArgument for a bad value)."""
    from pallet.cli.containers import parse_cpus, parse_int, parse_size, parse_swap
    from pallet.engine.update import Update

    u = Update(restart=args.restart, cpuset_cpus=args.cpuset_cpus, cpuset_mems=args.cpuset_mems)
    if args.memory is not None:
        u.memory = parse_size(args.memory, "-m, --memory")
    if args.memory_swap is not None:
        u.memory_swap = parse_swap(args.memory_swap)
    if args.cpus is not None:
        u.cpus = parse_cpus(args.cpus)
    if args.cpu_shares is not None:
        u.cpu_shares = parse_int(args.cpu_shares, "-c, --cpu-shares")
    if args.pids_limit is not None:
        u.pids_limit = parse_int(args.pids_limit, "--pids-limit")
    return u


def cmd_update(args: argparse.Namespace) -> int:
    from pallet.engine.containers import DEFAULT_ROOT, Engine
    from pallet.engine.update import update
    from pallet.errors import InvalidArgument, PalletError

    try:
        u = parse(args)
    except InvalidArgument as e:
        print(f"pallet: {e}\nSee 'pallet update --help'.", file=sys.stderr)
        return 125
    if u.empty():
        print("Error: you must provide one or more flags when using this command",
              file=sys.stderr)
        return 1
    eng = Engine(args.root or DEFAULT_ROOT)
    code = 0
    for ref in args.containers:
        try:
            update(eng, ref, u)
            print(ref)
        except PalletError as e:
            print(f"Error: {e}", file=sys.stderr)
            code = 1
    return code
