"""`pallet pod` commands with podman's flags, output and exit codes: create, ls (ps, list),
inspect, start, stop, restart, kill, pause, unpause, rm, prune, top, exists.

Parses and prints only; the work is pallet.engine.user_pods.UserPods'. Errors exit 125
(podman's rule), except `pod rm` of a pod that does not exist (1) and `pod exists` (1).
"""

from __future__ import annotations

import argparse
import sys

from pallet.cli.flags import add_bool_flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pallet.engine.store import PodRecord
    from pallet.engine.user_pods import UserPods

LS_HEADERS = {"ID": "POD ID", "Name": "NAME", "Status": "STATUS", "Created": "CREATED",
              "InfraID": "INFRA ID", "NumberOfContainers": "# OF CONTAINERS",
              "Labels": "LABELS", "Networks": "NETWORKS", "ContainerNames": "NAMES",
              "ContainerIds": "IDS", "ContainerStatuses": "STATUS"}


def _pods(args: argparse.Namespace) -> UserPods:
    from pallet.cli.containers import _engine
    from pallet.engine.user_pods import UserPods

    return UserPods(_engine(args))


def add_parsers(sub: Any) -> None:
    pod = sub.add_parser("pod", help="manage pods",
                         description="manage pods: groups of containers sharing namespaces")
    pod.set_defaults(func=lambda args: (pod.print_help(), 0)[1])
    psub = pod.add_subparsers(dest="pod_command", metavar="COMMAND")

    def cmd(name: str, help_: str, func: Callable[[argparse.Namespace], int],
            aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        p = psub.add_parser(name, help=help_, description=help_, aliases=list(aliases))
        p.set_defaults(func=func)
        return p

    p = cmd("create", "create a new empty pod", cmd_create)
    p.add_argument("-n", "--name", default="", help="assign a name to the pod")
    p.add_argument("-p", "--publish", action="append", default=[],
                   help="publish a port of the pod: [ip:][hostPort:]containerPort[/proto]")
    p.add_argument("--network", "--net", default="", help="bridge (default), none, host or "
                   "a network's name")
    p.add_argument("--hostname", default="", help="the pod's hostname (default: its name)")
    p.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE",
                   help="set metadata on the pod")
    p.add_argument("--share", default=None, help="namespaces its containers share: cgroup, "
                   "ipc, net, pid, uts or none (default cgroup,ipc,net,uts; +pid adds to it)")
    add_bool_flag(p, "--infra", default=True, help="--infra=false: share no namespace "
                  "(pallet's pods never have an infra container)")
    p.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                   help="add a line to the pod's /etc/hosts")
    p.add_argument("--dns", action="append", default=[], help="DNS servers of the pod")
    p.add_argument("--dns-search", action="append", default=[], help="DNS search domains")
    p.add_argument("--dns-option", "--dns-opt", action="append", default=[],
                   help="DNS options")

    p = cmd("ls", "list pods", cmd_ls, aliases=("ps", "list"))
    add_bool_flag(p, "-q", "--quiet", help="print the pod ids only")
    add_bool_flag(p, "--no-trunc", help="do not truncate pod ids")
    p.add_argument("-f", "--filter", action="append", default=[],
                   help="id=, name=, label=KEY[=VALUE], status=")
    p.add_argument("--format", default="", help="table, json or a Go template such as "
                   "'{{.ID}} {{.Name}}'")

    p = cmd("inspect", "display the configuration of pods", cmd_inspect)
    p.add_argument("-f", "--format", default=None, help="a Go template, or json (default)")
    p.add_argument("pods", nargs="+", metavar="POD")

    for name, help_ in (("start", "start one or more pods"),
                        ("stop", "stop one or more pods"),
                        ("restart", "restart one or more pods"),
                        ("kill", "send a signal to the containers of pods"),
                        ("pause", "pause the containers of pods"),
                        ("unpause", "unpause the containers of pods"),
                        ("rm", "remove one or more stopped pods and their containers")):
        p = cmd(name, help_, cmd_each, aliases=("remove",) if name == "rm" else ())
        p.set_defaults(action=name)
        add_bool_flag(p, "-a", "--all", help="all pods")
        if name in ("stop", "restart", "rm"):
            p.add_argument("-t", "--time", type=int, default=None,
                           help="seconds to wait before killing a container")
        if name == "kill":
            p.add_argument("-s", "--signal", default="KILL", help="signal to send")
        if name == "rm":
            add_bool_flag(p, "-f", "--force", help="stop and remove running containers too")
        p.add_argument("pods", nargs="*", metavar="POD")

    p = cmd("prune", "remove all stopped pods and their containers", cmd_prune)
    add_bool_flag(p, "-f", "--force", help="do not ask for confirmation")

    p = cmd("top", "display the running processes of the containers of a pod", cmd_top)
    p.add_argument("pod", metavar="POD")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, metavar="PS OPTIONS")

    p = cmd("exists", "exit 0 if a pod exists, else 1", cmd_exists)
    p.add_argument("pod", metavar="POD")


# -- create -------------------------------------------------------------------------------
def cmd_create(args: argparse.Namespace) -> int:
    from pallet.engine.user_pods import PodOptions
    from pallet.errors import InvalidArgument

    labels = {}
    for item in args.label:
        k, _, v = item.partition("=")
        if not k:
            raise InvalidArgument(f"invalid label {item!r}: use KEY=VALUE")
        labels[k] = v
    o = PodOptions(name=args.name, ports=list(args.publish), network=args.network,
                   hostname=args.hostname, labels=labels, share=args.share, infra=args.infra,
                   extra_hosts=list(args.add_host), dns=list(args.dns),
                   dns_search=list(args.dns_search), dns_options=list(args.dns_option))
    print(_pods(args).create(o).id)
    return 0


# -- listing ------------------------------------------------------------------------------
def _ls_filter(items: list[str]) -> tuple[dict[str, str | None], Callable[[Any, str], bool]]:
    """podman's pod ps --filter: label= (all must hold), other keys (one value each)."""
    import re

    from pallet.engine.user_pods import POD_STATUSES
    from pallet.errors import InvalidArgument

    labels: dict[str, str | None] = {}
    tests: dict[str, list[Callable[[Any, str], bool]]] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep:
            raise InvalidArgument(f"{item} is an invalid filter")
        if key == "label":
            k, s2, v = val.partition("=")
            labels[k] = v if s2 else None
        elif key == "name":
            try:
                rx = re.compile(val)
            except re.error:
                raise InvalidArgument(f"invalid filter {item!r}: not a regular expression") \
                    from None
            tests.setdefault(key, []).append(lambda p, s, rx=rx: bool(rx.search(p.name)))
        elif key == "id":
            tests.setdefault(key, []).append(lambda p, s, v=val: p.id.startswith(v))
        elif key == "status":
            if val.lower() not in POD_STATUSES:
                raise InvalidArgument(f"{val} is not a valid pod status")
            tests.setdefault(key, []).append(lambda p, s, v=val: s.lower() == v.lower())
        else:
            raise InvalidArgument(f"{key} is an invalid filter")
    return labels, lambda p, s: all(any(t(p, s) for t in ts) for ts in tests.values())


def _ago(ns: int) -> str:
    """podman's CREATED: go-units' HumanDuration + " ago"."""
    import time

    from pallet.units import human_duration

    return human_duration(max(0.0, time.time() - ns / 1e9)) + " ago"


def cmd_ls(args: argparse.Namespace) -> int:
    import json

    from pallet.engine.user_pods import rfc3339

    labels, check = _ls_filter(args.filter)
    up = _pods(args)
    listed = []
    for pod in up.list(labels):
        ctrs = up.containers(pod)
        status = up.status(pod, ctrs)
        if check(pod, status):
            listed.append((pod, ctrs, status))
    if args.quiet:
        for pod, _, _ in listed:
            print(pod.id if args.no_trunc else pod.id[:12])
        return 0
    if args.format == "json":
        out = [{"Cgroup": "", "Containers": [{"Id": c.id, "Names": c.name, "Status": c.state}
                                             for c in ctrs],
                "Created": rfc3339(pod.created_at), "Id": pod.id, "InfraId": "",
                "Name": pod.name, "Namespace": "", "Networks": _networks(pod),
                "Status": status, "Labels": dict(pod.labels)}
               for pod, ctrs, status in listed]
        print(json.dumps(out, indent=2))
        return 0
    rows = [{"ID": pod.id if args.no_trunc else pod.id[:12], "Name": pod.name,
             "Status": status, "Created": _ago(pod.created_at), "InfraID": "",
             "NumberOfContainers": len(ctrs), "Labels": dict(pod.labels),
             "Networks": ",".join(_networks(pod)),
             "ContainerNames": ",".join(c.name for c in ctrs),
             "ContainerIds": ",".join(c.id[:12] for c in ctrs),
             "ContainerStatuses": ",".join(c.state for c in ctrs)}
            for pod, ctrs, status in listed]
    fmt = args.format
    if fmt in ("", "table"):
        fmt = "table {{.ID}}\t{{.Name}}\t{{.Status}}\t{{.Created}}\t{{.NumberOfContainers}}"
    from pallet.cli.template import Template

    if fmt.startswith("table"):
        _print_table(fmt[5:].strip(), rows)
    else:
        tmpl = Template(fmt, strict=True)
        for row in rows:
            print(tmpl.render(row))
    return 0


def _print_table(text: str, rows: list[dict[str, Any]]) -> None:
    """podman's tables: Go's tabwriter with cells at least 12 wide, 2 spaces apart."""
    from pallet.cli.template import Template, align

    tmpl = Template(text, strict=True)
    head = {k: LS_HEADERS.get(k, k.upper()) for k in tmpl.fields()}
    lines = [tmpl.render(head)] + [tmpl.render(r) for r in rows]
    print(align("\n".join(lines), minwidth=12, padding=2))


def _networks(pod: PodRecord) -> list[str]:
    cfg = pod.config
    mode = cfg.get("network_mode") or "bridge"
    return [] if mode in ("none", "host") or "net" not in (cfg.get("share") or []) else [mode]


# -- inspect ------------------------------------------------------------------------------
def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from pallet.cli.template import Template
    from pallet.errors import NotFound

    up = _pods(args)
    found = []
    for ref in args.pods:
        try:
            found.append(up.inspect(up.get(ref)))
        except NotFound:
            print(f"Error: inspecting object: no such pod {ref}", file=sys.stderr)
            return 125
    if args.format and args.format != "json":
        tmpl = Template(args.format, strict=True)
        for obj in found:
            print(tmpl.render(obj))
        return 0
    # podman 4's layout: one pod is an object, several an array; five-space indents.
    print(json.dumps(found[0] if len(found) == 1 else found, indent=5))
    return 0


# -- acting on pods -----------------------------------------------------------------------
def cmd_each(args: argparse.Namespace) -> int:
    """start, stop, restart, kill, pause, unpause, rm: each pod's full id on success, each
    failure as `Error: ...` (exit 125; rm of a pod that does not exist: 1)."""
    from pallet.engine.containers import parse_signal
    from pallet.errors import InvalidArgument, NotFound, PalletError

    up = _pods(args)
    if args.all and args.pods:
        raise InvalidArgument("when using the --all switch, you may not pass any pod names "
                              "or IDs")
    if not args.all and not args.pods:
        raise InvalidArgument("you must provide at least one name or id")
    refs = [p.id for p in up.list()] if args.all else args.pods
    timeout = getattr(args, "time", None)
    act: dict[str, Callable[[str], Any]] = {
        "start": up.start, "stop": lambda r: up.stop(r, timeout),
        "restart": lambda r: up.restart(r, timeout), "pause": up.pause,
        "unpause": up.unpause,
        "rm": lambda r: up.remove(r, force=args.force, timeout=timeout)}
    if args.action == "kill":
        sig = parse_signal(args.signal)
        act["kill"] = lambda r: up.kill(r, sig)
    rc = 0
    for ref in refs:
        try:
            pod = act[args.action](ref)
        except NotFound as e:
            print(f"Error: {e}", file=sys.stderr)
            rc = 1 if args.action == "rm" and rc in (0, 1) else 125
            continue
        except PalletError as e:
            print(f"Error: {e}", file=sys.stderr)
            rc = 125
            continue
        print(pod.id)
    return rc


def cmd_prune(args: argparse.Namespace) -> int:
    if not args.force:
        print("WARNING! This will remove all stopped/exited pods..")
        print("Are you sure you want to continue? [y/N] ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    for pid in _pods(args).prune():
        print(pid)
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from pallet.cli.containers import _print_table as docker_table

    headers, rows = _pods(args).top(args.pod, args.ps_args)
    docker_table(headers, rows)
    return 0


def cmd_exists(args: argparse.Namespace) -> int:
    return 0 if _pods(args).exists(args.pod) else 1
