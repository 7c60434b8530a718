"""`pallet compose`: docker compose's commands over pallet.compose (the model) and
pallet.compose.project (the acts). Parses and prints only.

Errors print as docker compose prints them (the message alone) and exit 1; a compose file
that cannot be read or is invalid exits 15, a missing one 14 (docker compose's codes).
"""

from __future__ import annotations

import argparse
import os
import sys

from pallet.cli.flags import add_bool_flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from pallet.compose.model import Project
    from pallet.engine.containers import Engine
    from pallet.engine.store import ContainerRecord

_COLOURS = (36, 33, 32, 35, 34, 96, 93, 92, 95, 94)


def add_parsers(sub: Any) -> None:
    top = sub.add_parser("compose", help="define and run multi-container applications",
                         description="Define and run multi-container applications "
                         "(the Compose specification's common subset).")
    top.add_argument("-f", "--file", action="append", default=[],
                     help="compose configuration files (merged in order)")
    top.add_argument("-p", "--project-name", default="", help="project name")
    top.add_argument("--project-directory", default="", help="working directory "
                     "(default: the first file's directory)")
    top.add_argument("--env-file", action="append", default=[],
                     help="environment files (default: .env of the project directory)")
    top.add_argument("--profile", action="append", default=[], help="profiles to enable")
    top.set_defaults(func=lambda args: (top.print_help(), 0)[1])
    csub = top.add_subparsers(dest="compose_command", metavar="COMMAND")

    def cmd(name: str, help_: str, func: Callable[[argparse.Namespace], int],
            services: str = "*") -> argparse.ArgumentParser:
        p = csub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=_handled(func))
        if services:
            p.add_argument("services", nargs=services, metavar="SERVICE")
        return p

    p = cmd("up", "create and start containers", cmd_up)
    add_bool_flag(p, "-d", "--detach", help="run containers in the background")
    add_bool_flag(p, "--remove-orphans", help="remove containers of services not defined "
                  "in the compose file")
    add_bool_flag(p, "--force-recreate", help="recreate containers even if their "
                  "configuration has not changed")
    add_bool_flag(p, "--no-recreate", help="if containers exist, don't recreate them")
    add_bool_flag(p, "--no-start", help="don't start the services after creating them")
    add_bool_flag(p, "--no-deps", help="don't start linked services")
    add_bool_flag(p, "--no-color", help="produce monochrome output")
    add_bool_flag(p, "--no-log-prefix", help="don't print prefix in logs")
    add_bool_flag(p, "--abort-on-container-exit", help="stop all containers if any "
                  "container was stopped")
    p.add_argument("-t", "--timeout", type=int, default=None, help="shutdown timeout in "
                   "seconds")
    add_bool_flag(p, "--build", help="build images before starting containers")
    add_bool_flag(p, "--no-build", help="don't build an image, even if it's missing")
    p = cmd("create", "creates containers for a service", cmd_create)
    add_bool_flag(p, "--build", help="build images before starting containers")
    add_bool_flag(p, "--no-build", help="don't build an image, even if it's missing")
    add_bool_flag(p, "--force-recreate", help="recreate containers even if their "
                  "configuration has not changed")
    add_bool_flag(p, "--no-recreate", help="if containers exist, don't recreate them")
    add_bool_flag(p, "--remove-orphans", help="remove containers of services not defined "
                  "in the compose file")
    p = cmd("wait", "block until containers of all (or specified) services stop", cmd_wait,
            services="+")
    add_bool_flag(p, "--down-project", help="drops project when the first container stops")
    p = cmd("cp", "copy files/folders between a service container and the local filesystem",
            cmd_cp, services="")
    p.add_argument("--index", type=int, default=None, help="index of the container if the "
                   "service has several replicas")
    add_bool_flag(p, "--all", help="copy to all the containers of the service")
    add_bool_flag(p, "-a", "--archive", help="accepted for docker compatibility")
    add_bool_flag(p, "-L", "--follow-link", help="always follow a symbol link in SRC_PATH")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dest", metavar="DEST")
    p = cmd("build", "build or rebuild services", cmd_build)
    add_bool_flag(p, "--no-cache", help="do not use cache when building the image")
    add_bool_flag(p, "--pull", help="always attempt to pull a newer version of the image")
    add_bool_flag(p, "-q", "--quiet", help="don't print anything to STDOUT")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V",
                   help="set build-time variables for services (K alone: from the "
                   "environment)")
    p = cmd("down", "stop and remove containers, networks", cmd_down, services="")
    add_bool_flag(p, "-v", "--volumes", help="remove named volumes declared in the volumes "
                  "section and anonymous volumes attached to containers")
    add_bool_flag(p, "--remove-orphans", help="remove containers of services not defined "
                  "in the compose file")
    p.add_argument("--rmi", default="", choices=("", "all", "local"),
                   help='remove images used by services: "local" or "all"')
    p.add_argument("-t", "--timeout", type=int, default=None, help="shutdown timeout")
    p = cmd("ps", "list containers", cmd_ps)
    add_bool_flag(p, "-a", "--all", help="show all stopped containers")
    add_bool_flag(p, "-q", "--quiet", help="only display IDs")
    # Not `services`: that is the SERVICE... positional's.
    add_bool_flag(p, "--services", help="display services", dest="list_services")
    p.add_argument("--format", default="table", help="table, json or a Go template")
    p = cmd("logs", "view output from containers", cmd_logs)
    add_bool_flag(p, "-f", "--follow", help="follow log output")
    p.add_argument("-n", "--tail", default="all", help="number of lines from the end of "
                   "each container's log")
    add_bool_flag(p, "-t", "--timestamps", help="show timestamps")
    add_bool_flag(p, "--no-color", help="produce monochrome output")
    add_bool_flag(p, "--no-log-prefix", help="don't print prefix in logs")
    cmd("start", "start services", cmd_start)
    for name, help_, func in (("stop", "stop services", cmd_stop),
                              ("restart", "restart service containers", cmd_restart)):
        p = cmd(name, help_, func)
        p.add_argument("-t", "--timeout", type=int, default=None, help="shutdown timeout")
    p = cmd("kill", "force stop service containers", cmd_kill)
    p.add_argument("-s", "--signal", default="SIGKILL", help="signal to send")
    add_bool_flag(p, "--remove-orphans", help="accepted")
    cmd("pause", "pause services", cmd_pause)
    cmd("unpause", "unpause services", cmd_unpause)
    p = cmd("rm", "remove stopped service containers", cmd_rm)
    add_bool_flag(p, "-f", "--force", help="don't ask to confirm removal")
    add_bool_flag(p, "-s", "--stop", help="stop the containers, if required, before "
                  "removing")
    add_bool_flag(p, "-v", "--volumes", help="remove any anonymous volumes attached")
    p = cmd("exec", "execute a command in a running container", cmd_exec, services="")
    add_bool_flag(p, "-T", "--no-TTY", help="disable pseudo-TTY allocation (default: "
                  "auto-detected)")
    add_bool_flag(p, "-d", "--detach", help="run the command in the background")
    p.add_argument("-e", "--env", action="append", default=[], help="set environment "
                   "variables")
    p.add_argument("-u", "--user", default="", help="run the command as this user")
    p.add_argument("-w", "--workdir", default="", help="path to workdir directory")
    p.add_argument("--index", type=int, default=1, help="index of the container if "
                   "the service has several replicas")
    add_bool_flag(p, "--privileged", help="accepted (the container's privileges apply)")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    p = cmd("run", "run a one-off command on a service", cmd_run, services="")
    add_bool_flag(p, "-d", "--detach", help="run container in background and print its name")
    add_bool_flag(p, "--rm", help="automatically remove the container when it exits")
    add_bool_flag(p, "-T", "--no-TTY", help="disable pseudo-TTY allocation")
    add_bool_flag(p, "-i", "--interactive", default=True, help="keep STDIN open (default "
                  "true)")
    add_bool_flag(p, "--no-deps", help="don't start linked services")
    add_bool_flag(p, "-P", "--service-ports", help="publish the service's ports")
    add_bool_flag(p, "--build", help="build the image before starting the container")
    p.add_argument("-e", "--env", action="append", default=[], help="set environment "
                   "variables")
    p.add_argument("--name", default="", help="assign a name to the container")
    p.add_argument("--entrypoint", default=None, help="override the entrypoint of the image")
    p.add_argument("-u", "--user", default="", help="run as this user")
    p.add_argument("-w", "--workdir", default="", help="working directory inside the "
                   "container")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    p = cmd("config", "parse, resolve and render the compose file in canonical format",
            cmd_config, services="")
    add_bool_flag(p, "-q", "--quiet", help="only validate the configuration")
    add_bool_flag(p, "--services", help="print the service names, one per line")
    add_bool_flag(p, "--volumes", help="print the volume names, one per line")
    add_bool_flag(p, "--networks", help="print the network names, one per line")
    p.add_argument("--format", default="yaml", choices=("yaml", "json"), help="yaml or json")
    p = cmd("pull", "pull service images", cmd_pull)
    add_bool_flag(p, "-q", "--quiet", help="pull without printing progress")
    add_bool_flag(p, "--ignore-pull-failures", help="pull what it can and ignore images "
                  "with pull failures")
    cmd("top", "display the running processes", cmd_top)
    p = cmd("images", "list images used by the created containers", cmd_images)
    add_bool_flag(p, "-q", "--quiet", help="only display IDs")
    p = cmd("port", "print the public port for a port binding", cmd_port, services="")
    p.add_argument("--index", type=int, default=1, help="index of the container")
    p.add_argument("--protocol", default="tcp", help="tcp or udp")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("private_port", metavar="PRIVATE_PORT")
    p = csub.add_parser("ls", help="list running compose projects")
    add_bool_flag(p, "-a", "--all", help="show all stopped compose projects")
    add_bool_flag(p, "-q", "--quiet", help="only display project names")
    p.add_argument("--format", default="table", help="table or json")
    p.set_defaults(func=_handled(cmd_ls))
    p = csub.add_parser("version", help="show the pallet compose version information")
    p.set_defaults(func=_handled(cmd_version))


def _handled(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """docker compose's error output: the message alone, exit 1 (15/14 for files)."""
    from functools import wraps

    @wraps(func)
    def run(args: argparse.Namespace) -> int:
        from pallet.errors import PalletError

        try:
            return func(args)
        except PalletError as e:
            print(str(e), file=sys.stderr)
            return e.exit_code
    return run


# -- shared ---------------------------------------------------------------------------------------
def _engine(args: argparse.Namespace) -> Engine:
    from pallet.engine.containers import DEFAULT_ROOT, Engine

    return Engine(args.root or DEFAULT_ROOT)


def _project(args: argparse.Namespace) -> Project:
    from pallet.compose.model import load

    cwd = args.project_directory or os.getcwd()
    files = [os.path.abspath(f) for f in args.file]
    project = load(files, project_name=args.project_name, env_files=args.env_file,
                   profiles=args.profile, cwd=cwd)
    if args.project_directory:
        project.working_dir = os.path.abspath(args.project_directory)
    _warn(project)
    return project


def _warn(project: Project) -> None:
    for w in project.warnings:
        print(f"WARN[0000] {w}", file=sys.stderr)
    project.warnings.clear()


def _progress(kind: str, name: str, state: str) -> None:
    print(f" {kind} {name}  {state}", file=sys.stderr, flush=True)


def _selected(args: argparse.Namespace, project: Project, all: bool = True,
              oneoff: bool | None = False) -> list[ContainerRecord]:
    from pallet.compose.project import check_services, containers

    names = check_services(project, getattr(args, "services", []) or [])
    return containers(_engine(args), project.name, names, all=all, oneoff=oneoff)


def _each(args: argparse.Namespace, recs: list[ContainerRecord], doing: str, done: str,
          act: Callable[[Engine, ContainerRecord], Any]) -> int:
    from pallet.errors import PalletError

    eng = _engine(args)
    rc = 0
    for rec in recs:
        _progress("Container", rec.name, doing)
        try:
            act(eng, rec)
        except PalletError as e:
            print(str(e), file=sys.stderr)
            rc = 1
            continue
        _progress("Container", rec.name, done)
    return rc


def _short_name(project: str, rec: ContainerRecord) -> str:
    """How docker compose prefixes a container's log lines: SERVICE-N for its own names."""
    prefix = f"{project}-"
    return rec.name[len(prefix):] if rec.name.startswith(prefix) else rec.name


# -- up / down ------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from pallet.compose import project as acts
    from pallet.errors import InvalidArgument

    if args.detach and args.abort_on_container_exit:
        raise InvalidArgument("--abort-on-container-exit and --detach are incompatible")
    policy = _build_policy(args)
    project = _project(args)
    services = acts.check_services(project, args.services)
    eng = _engine(args)
    _ensure_images(eng, project, project.order(services or None, with_deps=not args.no_deps),
                   policy)
    target = project
    if args.no_deps and services:
        services = project.order(services, with_deps=False)
        target = _without_deps(project, services)
    try:
        recs = acts.up(eng, target, services, force_recreate=args.force_recreate,
                       no_recreate=args.no_recreate, start=not args.no_start,
                       remove_orphans=args.remove_orphans, timeout=args.timeout,
                       progress=_progress)
    finally:
        _warn(project)
    if args.detach or args.no_start:
        return 0
    return _attached(args, eng, project, recs)


def _build_policy(args: argparse.Namespace) -> str:
    """up's and create's --build / --no-build: the images to build first (ensure_images)."""
    from pallet.errors import InvalidArgument

    if args.build and args.no_build:
        raise InvalidArgument("--build and --no-build are incompatible")
    return "always" if args.build else "never" if args.no_build else "missing"


def cmd_create(args: argparse.Namespace) -> int:
    from pallet.compose import project as acts
    from pallet.errors import InvalidArgument

    policy = _build_policy(args)
    if args.force_recreate and args.no_recreate:
        raise InvalidArgument("--force-recreate and --no-recreate are incompatible")
    project = _project(args)
    services = acts.check_services(project, args.services)
    eng = _engine(args)
    _ensure_images(eng, project, project.order(services or None), policy)
    try:
        acts.up(eng, project, services, force_recreate=args.force_recreate,
                no_recreate=args.no_recreate, start=False,
                remove_orphans=args.remove_orphans, progress=_progress)
    finally:
        _warn(project)
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    """docker compose wait: each running container's exit as it happens (`container "ID"
    exited with status code N`), the last one's code; --down-project: down at the first."""
    import time

    from pallet.compose import project as acts
    from pallet.errors import NotFound

    project = _project(args)
    recs = _selected(args, project, all=False)
    if not recs:
        raise NotFound(f'no containers for project "{project.name}"')
    eng = _engine(args)
    code = 0
    waiting = {r.id for r in recs}
    while waiting:
        for rid in sorted(waiting):
            exited = eng.exited(rid)
            if exited is None:
                continue
            waiting.discard(rid)
            code = exited
            print(f'container "{rid}" exited with status code {code}', flush=True)
            if args.down_project:
                try:
                    acts.down(eng, project, progress=_progress)
                finally:
                    _warn(project)
                return code
        if waiting:
            time.sleep(0.1)
    return code


def cmd_cp(args: argparse.Namespace) -> int:
    """docker compose cp: SERVICE:SRC DEST or SRC SERVICE:DEST through `pallet cp`'s copy, in
    container --index (default 1; --all: every container of the service, to copy into)."""
    from pallet.cli.containers import split_cp_arg
    from pallet.compose.project import check_services, containers
    from pallet.errors import InvalidArgument, NotFound

    src, dest = split_cp_arg(args.src), split_cp_arg(args.dest)  # SERVICE:PATH
    if bool(src) == bool(dest):
        raise InvalidArgument("copying between services or between local paths is not "
                              "supported; give exactly one SERVICE:PATH")
    service = (src or dest)[0]  # type: ignore[index]
    project = _project(args)
    check_services(project, [service])
    eng = _engine(args)
    recs = containers(eng, project.name, [service])
    if src and args.all:
        raise InvalidArgument("--all can only be used to copy into containers")
    if not (dest and args.all):
        index = args.index or 1
        recs = [r for r in recs
                if r.labels.get("com.docker.compose.container-number") == str(index)]
        if not recs:
            raise NotFound(f"service {service!r} has no container at index {index}")
    elif not recs:
        raise NotFound(f"no container found for service {service!r}")
    for rec in recs:
        if src:
            eng.copy_from(rec.id, src[1], args.dest, follow_link=args.follow_link)
        else:
            eng.copy_to(rec.id, args.src, dest[1])  # type: ignore[index]
    return 0


def _ensure_images(eng: Engine, project: Project, services: list[str], policy: str) -> None:
    """The built services' images up needs, the builder's output on stderr (stdout is the
    containers' logs)."""
    from pallet.compose.build import ensure_images

    sys.stdout.flush()
    ensure_images(eng, project, services, sys.stderr.buffer, policy=policy,
                  progress=_progress)


def cmd_build(args: argparse.Namespace) -> int:
    from pallet.compose.build import build
    from pallet.compose.project import check_services

    project = _project(args)
    names = check_services(project, args.services) or sorted(project.services)
    build_args = {}
    for a in args.build_arg:
        k, sep, v = a.partition("=")
        if sep:
            build_args[k] = v
        elif k in os.environ:
            build_args[k] = os.environ[k]
    import io

    # -q: nothing on stdout, not even the id the builder's own -q prints.
    out = io.BytesIO() if args.quiet else sys.stdout.buffer
    build(_engine(args), project, names, out, no_cache=args.no_cache,
          pull=args.pull, quiet=args.quiet, build_args=build_args,
          progress=_quiet if args.quiet else _progress)
    return 0


def _quiet(kind: str, name: str, state: str) -> None:
    pass


def _without_deps(project: Project, names: list[str]) -> Project:
    import copy

    p = copy.copy(project)
    p.services = {n: {k: v for k, v in s.items() if k != "depends_on"} if n in names else s
                  for n, s in project.services.items()}
    return p


def _attached(args: argparse.Namespace, eng: Engine, project: Project,
              recs: list[ContainerRecord]) -> int:
    """up without -d: the containers' logs, prefixed, until they have all exited; ctrl-C
    stops them (a second one leaves at once), as docker compose."""
    print("Attaching to " + ", ".join(_short_name(project.name, r) for r in recs),
          flush=True)
    followers = _follow_logs(args, eng, project, recs, tail=-1, follow=True, exits=True)
    code = 0
    try:
        while followers:
            pid, status = os.wait()
            followers.pop(pid, None)
            if args.abort_on_container_exit:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        print("Gracefully stopping... (press Ctrl+C again to force)", file=sys.stderr,
              flush=True)
        try:
            for rec in reversed(recs):
                _progress("Container", rec.name, "Stopping")
                svc = project.services.get(rec.labels.get("com.docker.compose.service", ""))
                eng.stop(rec.id, (svc or {}).get("stop_grace_period", args.timeout))
                _progress("Container", rec.name, "Stopped")
        except KeyboardInterrupt:
            for rec in recs:
                import contextlib

                from pallet.errors import PalletError

                with contextlib.suppress(PalletError):
                    eng.kill(rec.id)
        code = 130
    finally:
        import signal

        for pid in followers:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    if args.abort_on_container_exit:
        code = max((eng.get(r.id).exit_code or 0 for r in recs), default=0)
    return code


def _follow_logs(args: argparse.Namespace, eng: Engine, project: Project,
                 recs: list[ContainerRecord], *, tail: int, follow: bool, exits: bool
                 ) -> dict[int, str]:
    """Fork one follower per container (no threads: the engine forks); returns their pids.
    Each writes whole prefixed lines with one write each, so lines never interleave."""
    colour = os.isatty(1) and not args.no_color
    names = {r.id: _short_name(project.name, r) for r in recs}
    width = max((len(n) for n in names.values()), default=0)
    children: dict[int, str] = {}
    eng.close()  # an SQLite connection is never shared with a child
    sys.stdout.flush()
    for i, rec in enumerate(recs):
        prefix = "" if args.no_log_prefix else f"{names[rec.id]:<{width}}  | "
        if colour and prefix:
            prefix = f"\033[{_COLOURS[i % len(_COLOURS)]}m{prefix}\033[0m"
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _follow_one(args, eng, rec, prefix, tail, follow,
                            names[rec.id] if exits else "")
            except KeyboardInterrupt:
                code = 130
            except BaseException:  # noqa: BLE001 - a follower must never return into the CLI
                import traceback

                traceback.print_exc()
                code = 1
            os._exit(code)
        children[pid] = rec.id
    return children


def _readable_logs(eng: Engine, cid: str, **kw: Any) -> Iterator[Any]:
    """The container's log lines; none of a container whose logging driver is none."""
    from pallet.errors import FailedPrecondition

    try:
        yield from eng.logs(cid, **kw)
    except FailedPrecondition:
        return


def _follow_one(args: argparse.Namespace, eng: Engine, rec: ContainerRecord, prefix: str,
                tail: int, follow: bool, exit_name: str) -> None:
    import signal

    from pallet.cli.containers import _write_all

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what ctrl-C does
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    pending = b""
    for line in _readable_logs(eng, rec.id, follow=follow, tail=tail):
        data = pending + line.content
        if not data.endswith(b"\n"):
            pending = data
            continue
        pending = b""
        stamp = line.timestamp.encode() + b" " if getattr(args, "timestamps", False) else b""
        out = b"".join(prefix.encode() + stamp + ln + b"\n"
                       for ln in data[:-1].split(b"\n"))
        _write_all(2 if line.stream == "stderr" else 1, out)
    if pending:
        _write_all(1, prefix.encode() + pending + b"\n")
    if exit_name:
        code = eng.wait(rec.id)
        _write_all(1, f"{exit_name} exited with code {code}\n".encode())


def cmd_down(args: argparse.Namespace) -> int:
    from pallet.compose import project as acts

    project = _project(args)
    try:
        acts.down(_engine(args), project, volumes=args.volumes,
                  remove_orphans=args.remove_orphans, timeout=args.timeout, images=args.rmi,
                  progress=_progress)
    finally:
        _warn(project)
    return 0


# -- listing --------------------------------------------------------------------------------------
def cmd_ps(args: argparse.Namespace) -> int:
    import json

    from pallet.cli.containers import (
        _ago,
        _command,
        _print_formatted,
        _print_table,
        _status,
    )

    project = _project(args)
    if args.list_services:
        for name in sorted(project.services):
            print(name)
        return 0
    recs = _selected(args, project, all=args.all, oneoff=None)
    if args.quiet:
        for r in recs:
            print(r.id)
        return 0
    rows = []
    eng = _engine(args) if recs else None
    for r in recs:
        ports = r.config.get("ports") or []
        h = eng.health(r) if eng is not None and r.state == "running" else None
        health = h["Status"] if h else ""
        rows.append({
            "ID": r.id, "Name": r.name, "Names": r.name, "Image": r.image_ref,
            "Command": _command(r), "Project": project.name,
            "Service": r.labels.get("com.docker.compose.service", ""),
            "Created": r.created_at // 1_000_000_000, "RunningFor": f"{_ago(r.created_at)} ago",
            "State": r.state, "Status": _status(r, health), "Health": health,
            "ExitCode": r.exit_code or 0, "Labels": ",".join(f"{k}={v}"
                                                            for k, v in r.labels.items()),
            "Publishers": [{"URL": p.get("hostIP") or "0.0.0.0",
                            "TargetPort": p["containerPort"],
                            "PublishedPort": p["hostPort"], "Protocol": p["protocol"]}
                           for p in ports],
            "Ports": ", ".join(f"{p.get('hostIP') or '0.0.0.0'}:{p['hostPort']}->"
                               f"{p['containerPort']}/{p['protocol']}" for p in ports)})
    if args.format == "json":
        for row in rows:
            print(json.dumps(row, separators=(",", ":")))
        return 0
    headers = {"Name": "NAME", "Image": "IMAGE", "Command": "COMMAND", "Service": "SERVICE",
               "RunningFor": "CREATED", "Status": "STATUS", "Ports": "PORTS"}

    def table() -> None:
        cols = list(headers)
        _print_table([headers[c] for c in cols],
                     [[f'"{r[c]}"' if c == "Command" else r[c] for c in cols] for r in rows])

    _print_formatted(args.format, rows, headers, table)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from pallet.errors import InvalidArgument

    project = _project(args)
    recs = _selected(args, project, oneoff=None)
    try:
        tail = -1 if args.tail in ("all", "") else int(args.tail)
    except ValueError:
        raise InvalidArgument(f"invalid value for --tail: {args.tail!r}; use a number or "
                              "all") from None
    eng = _engine(args)
    if not args.follow:
        return _logs_merged(args, eng, project, recs, tail)
    children = _follow_logs(args, eng, project, recs, tail=tail, follow=True, exits=False)
    try:
        while children:
            pid, _ = os.wait()
            children.pop(pid, None)
    finally:
        import signal

        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return 0


def _logs_merged(args: argparse.Namespace, eng: Engine, project: Project,
                 recs: list[ContainerRecord], tail: int) -> int:
    """Every container's lines in time order, prefixed."""
    from pallet.cli.containers import _write_all

    colour = os.isatty(1) and not args.no_color
    names = {r.id: _short_name(project.name, r) for r in recs}
    width = max((len(n) for n in names.values()), default=0)
    lines = []
    for i, r in enumerate(recs):
        prefix = "" if args.no_log_prefix else f"{names[r.id]:<{width}}  | "
        if colour and prefix:
            prefix = f"\033[{_COLOURS[i % len(_COLOURS)]}m{prefix}\033[0m"
        for line in _readable_logs(eng, r.id, tail=tail):
            lines.append((line.ts_ns, i, prefix, line))
    lines.sort(key=lambda x: (x[0], x[1]))
    for _, _, prefix, line in lines:
        stamp = line.timestamp + " " if args.timestamps else ""
        text = line.content if line.content.endswith(b"\n") else line.content + b"\n"
        _write_all(2 if line.stream == "stderr" else 1,
                   prefix.encode() + stamp.encode() + text)
    return 0


# -- lifecycle ------------------------------------------------------------------------------------
def cmd_start(args: argparse.Namespace) -> int:
    from pallet.compose.project import _start

    project = _project(args)
    names = project.order(args.services or None)
    from pallet.compose.project import containers

    eng = _engine(args)
    recs = [r for n in names for r in containers(eng, project.name, [n])]
    if not recs:
        print("no container found for the project; run pallet compose up first",
              file=sys.stderr)
        return 1
    return _each(args, [r for r in recs if r.state not in ("running", "paused")],
                 "Starting", "Started", lambda e, r: _start(e, r))


def cmd_stop(args: argparse.Namespace) -> int:
    project = _project(args)
    recs = _selected(args, project, all=False)
    return _each(args, list(reversed(recs)), "Stopping", "Stopped",
                 lambda e, r: e.stop(r.id, _timeout(args, project, r)))


def _timeout(args: argparse.Namespace, project: Project, rec: ContainerRecord) -> float | None:
    if args.timeout is not None:
        return args.timeout
    svc = project.services.get(rec.labels.get("com.docker.compose.service", "")) or {}
    return svc.get("stop_grace_period")


def cmd_restart(args: argparse.Namespace) -> int:
    project = _project(args)
    return _each(args, _selected(args, project), "Restarting", "Started",
                 lambda e, r: e.restart(r.id, _timeout(args, project, r)))


def cmd_kill(args: argparse.Namespace) -> int:
    from pallet.engine.containers import parse_signal

    sig = parse_signal(args.signal)
    return _each(args, _selected(args, _project(args), all=False), "Killing", "Killed",
                 lambda e, r: e.kill(r.id, sig))


def cmd_pause(args: argparse.Namespace) -> int:
    return _each(args, _selected(args, _project(args), all=False), "Pausing", "Paused",
                 lambda e, r: e.pause(r.id))


def cmd_unpause(args: argparse.Namespace) -> int:
    return _each(args, _selected(args, _project(args), all=False), "Unpausing", "Unpaused",
                 lambda e, r: e.unpause(r.id))


def cmd_rm(args: argparse.Namespace) -> int:
    project = _project(args)
    recs = _selected(args, project)
    eng = _engine(args)
    if args.stop:
        for r in recs:
            if r.state in ("running", "paused", "restarting"):
                _progress("Container", r.name, "Stopping")
                eng.stop(r.id)
                _progress("Container", r.name, "Stopped")
        recs = _selected(args, project)
    running = [r for r in recs if r.state in ("running", "paused", "restarting")]
    stopped = [r for r in recs if r not in running]
    if not stopped:
        print("No stopped containers", file=sys.stderr)
        return 0
    if not args.force:
        print(f"Going to remove {', '.join(r.name for r in stopped)}")
        print("? Are you sure you want to continue? (y/N) ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    return _each(args, stopped, "Removing", "Removed",
                 lambda e, r: e.remove(r.id, volumes=args.volumes))


# -- exec / run -----------------------------------------------------------------------------------
def _container_of(args: argparse.Namespace, project: Project, service: str,
                  index: int) -> ContainerRecord:
    from pallet.compose.project import check_services, containers
    from pallet.errors import NotFound

    check_services(project, [service])
    for r in containers(_engine(args), project.name, [service], all=False):
        if r.labels.get("com.docker.compose.container-number") == str(index):
            return r
    raise NotFound(f"service {service!r} is not running" if index == 1 else
                   f"service {service!r} has no running container at index {index}")


def cmd_exec(args: argparse.Namespace) -> int:
    from pallet.cli.containers import cmd_exec as exec_container

    project = _project(args)
    rec = _container_of(args, project, args.service, args.index)
    ns = argparse.Namespace(root=args.root, container=rec.id, command=args.command,
                            env=args.env, env_file=[], workdir=args.workdir, user=args.user,
                            detach=args.detach, interactive=not args.detach,
                            tty=not args.no_TTY and os.isatty(0) and os.isatty(1),
                            detach_keys="ctrl-p,ctrl-q")
    return exec_container(ns)


def cmd_run(args: argparse.Namespace) -> int:
    from pallet.cli.containers import start_created
    from pallet.compose import project as acts
    from pallet.compose.model import _command
    from pallet.errors import InvalidArgument

    project = _project(args)
    acts.check_services(project, [args.service])
    env = {}
    for e in args.env:
        k, sep, v = e.partition("=")
        if not k:
            raise InvalidArgument(f"invalid environment variable {e!r}")
        if sep or k in os.environ:
            env[k] = v if sep else os.environ[k]
    tty = not args.no_TTY and os.isatty(0) and os.isatty(1)
    entrypoint = _command(args.entrypoint, "--entrypoint") if args.entrypoint is not None \
        else None
    eng = _engine(args)
    _ensure_images(eng, project, project.order([args.service], with_deps=not args.no_deps),
                   "always" if args.build else "missing")
    try:
        rec = acts.run_container(
            eng, project, args.service, command=list(args.command) or None,
            entrypoint=entrypoint, environment=env, name=args.name, auto_remove=args.rm,
            publish=args.service_ports, tty=tty, stdin=args.interactive and not args.detach,
            user=args.user, workdir=args.workdir, with_deps=not args.no_deps,
            progress=_progress)
    finally:
        _warn(project)
    return start_created(eng, rec, detach=args.detach, interactive=args.interactive,
                         tty=tty, sig_proxy=True, remove=args.rm, shown=rec.name)


# -- model and images -----------------------------------------------------------------------------
def cmd_config(args: argparse.Namespace) -> int:
    import json

    from pallet.compose.model import dump_yaml

    project = _project(args)
    if args.quiet:
        return 0
    if args.services:
        print("\n".join(project.order()))
        return 0
    if args.volumes:
        print("\n".join(sorted(project.volumes)))
        return 0
    if args.networks:
        print("\n".join(sorted(project.networks)))
        return 0
    data = project.to_dict()
    if args.format == "json":
        print(json.dumps(data, indent=4))
    else:
        sys.stdout.write(dump_yaml(data))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from pallet.compose.project import check_services
    from pallet.errors import PalletError

    project = _project(args)
    eng = _engine(args)
    rc = 0
    for name in check_services(project, args.services or sorted(project.services)):
        svc = project.services[name]
        if not svc.get("image"):
            if not args.quiet:
                _progress("", name, "Skipped - No image to be pulled")
            continue
        if not args.quiet:
            _progress("", name, "Pulling")
        try:
            eng.images.pull(svc["image"], platform=svc.get("platform") or None)
        except PalletError as e:
            print(f"{name} {e}", file=sys.stderr)
            # A service that builds its image may have none to pull (docker compose's too).
            if not args.ignore_pull_failures and "build" not in svc:
                return 18  # docker compose's PullFailure
            continue
        if not args.quiet:
            _progress("", name, "Pulled")
    return rc


def cmd_top(args: argparse.Namespace) -> int:
    from pallet.cli.containers import _print_table

    project = _project(args)
    eng = _engine(args)
    for rec in _selected(args, project, all=False):
        headers, rows = eng.top(rec.id)
        print(rec.name)
        _print_table(headers, rows)
        print()
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    from pallet.cli.containers import _human_si, _print_table

    project = _project(args)
    eng = _engine(args)
    rows = []
    for rec in _selected(args, project):
        if args.quiet:
            print(rec.image_id)
            continue
        repo, _, tag = rec.image_ref.rpartition(":")
        if not repo or "/" in tag:
            repo, tag = rec.image_ref, "latest"
        try:
            size = _human_si(eng.images.get(rec.image_id).size)
        except Exception:  # noqa: BLE001 - an image removed since: no size to show
            size = ""
        rows.append([rec.name, repo, tag, rec.image_id.removeprefix("sha256:")[:12], size])
    if not args.quiet:
        _print_table(["CONTAINER", "REPOSITORY", "TAG", "IMAGE ID", "SIZE"], rows)
    return 0


def cmd_port(args: argparse.Namespace) -> int:
    from pallet.errors import NotFound

    project = _project(args)
    rec = _container_of(args, project, args.service, args.index)
    port, _, proto = args.private_port.partition("/")
    proto = proto or args.protocol
    for p in _engine(args).ports(rec.id):
        if str(p["containerPort"]) == port and p["protocol"] == proto:
            print(f"{p.get('hostIP') or '0.0.0.0'}:{p['hostPort']}")
            return 0
    raise NotFound(f"no port {port}/{proto} for container {rec.name}")


def cmd_ls(args: argparse.Namespace) -> int:
    import json

    from pallet.cli.containers import _print_table
    from pallet.compose.model import FILES_LABEL
    from pallet.compose.project import projects

    rows = []
    for name, recs in sorted(projects(_engine(args)).items()):
        states: dict[str, int] = {}
        for r in recs:
            states[r.state] = states.get(r.state, 0) + 1
        if not args.all and not states.get("running"):
            continue
        status = ", ".join(f"{s}({n})" for s, n in sorted(states.items()))
        files = recs[0].labels.get(FILES_LABEL, "")
        rows.append({"Name": name, "Status": status, "ConfigFiles": files})
    if args.quiet:
        for r in rows:
            print(r["Name"])
    elif args.format == "json":
        print(json.dumps(rows))
    else:
        _print_table(["NAME", "STATUS", "CONFIG FILES"],
                     [[r["Name"], r["Status"], r["ConfigFiles"]] for r in rows])
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    from pallet import __version__
    from pallet.compose.model import VERSION

    print(f"pallet compose version {__version__} (docker compose {VERSION} compatible)")
    return 0
