"""`pallet build` (and `pallet image build`): docker's classic `docker build` flags and
output. Parses and prints only: the work is pallet.build.builder's.

A failing step exits 1 with docker's one line (`The command '/bin/sh -c false' returned a
non-zero code: 1`); bad usage 125. `builder prune` removes RUN --mount=type=cache's
directories (docker's `builder prune`).
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def add_parsers(sub: Any) -> None:
    """The top-level `build`, and `builder` (`builder build`, `builder prune`)."""
    from pallet.cli.flags import add_bool_flag

    add_build_parser(sub)
    b = sub.add_parser("builder", help="manage builds")
    bsub = b.add_subparsers(dest="builder_cmd", metavar="COMMAND", required=True)
    add_build_parser(bsub)
    p = bsub.add_parser("prune", help="remove build cache (RUN --mount=type=cache "
                        "directories)")
    add_bool_flag(p, "-f", "--force", help="do not prompt for confirmation")
    add_bool_flag(p, "-a", "--all", help="remove all unused build cache (the same: every "
                  "cache mount no build is using)")
    p.set_defaults(func=cmd_builder_prune)


def add_build_parser(sub: Any) -> None:
    """`build` under SUB (the top level, or `image`)."""
    from pallet.cli.flags import add_bool_flag

    p = sub.add_parser("build", help="build an image from a Dockerfile",
                       description="build an image from a Dockerfile and a context directory "
                       "(- : a Dockerfile on STDIN, no context), docker's classic builder")
    p.add_argument("-t", "--tag", action="append", default=[],
                   help='name and optionally a tag in the "name:tag" format')
    p.add_argument("-f", "--file", default="",
                   help="name of the Dockerfile (default: PATH/Dockerfile; - reads STDIN)")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V",
                   help="set build-time variables (K alone: from the environment)")
    p.add_argument("--target", default="", help="set the target build stage to build")
    add_bool_flag(p, "--no-cache", help="do not use cache when building the image")
    add_bool_flag(p, "--pull", help="always attempt to pull a newer version of the image")
    add_bool_flag(p, "-q", "--quiet", help="suppress the build output and print image ID "
                  "on success")
    p.add_argument("--label", action="append", default=[], help="set metadata for an image")
    p.add_argument("--network", default="default", help="networking mode for the RUN "
                   "instructions during build: default, none or host")
    p.add_argument("--platform", default=None, help="set platform if server is "
                   "multi-platform capable")
    add_bool_flag(p, "--rm", default=True, help="remove intermediate containers after a "
                  "successful build (always)")
    add_bool_flag(p, "--force-rm", help="always remove intermediate containers (always)")
    p.add_argument("--secret", action="append", default=[], metavar="id=ID[,src=FILE|env=VAR]",
                   help="a secret RUN --mount=type=secret can use (never in the image)")
    p.add_argument("--ssh", action="append", default=[],
                   metavar="default|ID[=SOCKET|KEY[,KEY]]",
                   help="an SSH agent socket or keys RUN --mount=type=ssh can use (ID alone: "
                   "$SSH_AUTH_SOCK; keys: pallet runs an ssh-agent for the build)")
    p.add_argument("--iidfile", default="", metavar="FILE",
                   help="write the image ID to the file")
    p.add_argument("--allow", action="append", default=[], metavar="ENTITLEMENT",
                   help="allow an extra privilege: security.insecure (RUN --security="
                   "insecure runs with all privileges), network.host (always allowed)")
    p.add_argument("-o", "--output", action="append", default=[],
                   help="not supported: the result is an image in pallet's store")
    p.add_argument("context", metavar="PATH|-")
    p.set_defaults(func=cmd_build)


def _dockerfile(args: argparse.Namespace) -> tuple[str, str | None]:
    """The Dockerfile's text and the context directory (None: no context)."""
    from pallet.errors import InvalidArgument

    if args.context == "-":
        if args.file and args.file != "-":
            raise InvalidArgument("unable to prepare context: a Dockerfile on STDIN (-) "
                                  "cannot be combined with -f")
        return sys.stdin.read(), None
    context = os.path.abspath(args.context)
    if not os.path.isdir(context):
        raise InvalidArgument(f'unable to prepare context: path "{args.context}" not found')
    if args.file == "-":
        return sys.stdin.read(), context
    path = args.file or "Dockerfile"
    if not (args.file and os.path.exists(path)):
        path = os.path.join(context, path)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), context
    except FileNotFoundError:
        raise InvalidArgument(f"Cannot locate specified Dockerfile: {args.file or 'Dockerfile'}"
                              ) from None
    except OSError as e:
        raise InvalidArgument(f"cannot read Dockerfile {path}: {e.strerror}") from None


def _secrets(specs: list[str]) -> dict[str, bytes]:
    """--secret id=ID,src=FILE | id=ID,env=VAR | id=ID (the variable ID, else the file ID),
    as buildx reads them."""
    from pallet.errors import InvalidArgument

    out = {}
    for spec in specs:
        fields = dict(f.partition("=")[::2] for f in spec.split(",") if f)
        unknown = set(fields) - {"id", "src", "source", "env", "type"}
        if unknown:
            raise InvalidArgument(f"invalid secret {spec!r}: unexpected key "
                                  f"'{sorted(unknown)[0]}'")
        sid = fields.get("id", "")
        src = fields.get("src") or fields.get("source") or ""
        env = fields.get("env", "")
        kind = fields.get("type", "")
        if kind not in ("", "file", "env"):
            raise InvalidArgument(f"invalid secret {spec!r}: unsupported secret type {kind!r}")
        if not sid:
            sid = os.path.basename(src) if src else env
        if not sid:
            raise InvalidArgument(f"invalid secret {spec!r}: id is required")
        if kind == "env" and not env:
            env = src or sid
            src = ""
        if not src and not env:
            if sid in os.environ and kind != "file":
                env = sid
            else:
                src = sid
        if env:
            if env not in os.environ:
                raise InvalidArgument(f"secret {sid}: environment variable {env} is not set")
            out[sid] = os.environ[env].encode()
            continue
        try:
            with open(src, "rb") as f:
                out[sid] = f.read()
        except OSError as e:
            raise InvalidArgument(f"failed to read secret {sid} from {src}: {e.strerror}"
                                  ) from None
    return out


def cmd_build(args: argparse.Namespace) -> int:
    from pallet.build.builder import Builder, BuildError, BuildOptions
    from pallet.build.ssh import parse_ssh_specs
    from pallet.engine.containers import DEFAULT_ROOT, Engine
    from pallet.errors import PalletError

    if args.output:
        print(f"Error: -o/--output {args.output[0]} is not supported: pallet build has no "
              "exporters (no local, tar or registry output); the result is an image in "
              "pallet's store: use `pallet save` or `pallet push`", file=sys.stderr)
        return 125
    try:
        secrets = _secrets(args.secret)
        ssh = parse_ssh_specs(args.ssh, os.environ.get("SSH_AUTH_SOCK", ""))
        text, context = _dockerfile(args)
        build_args = {}
        for a in args.build_arg:
            k, sep, v = a.partition("=")
            if sep:
                build_args[k] = v
            elif k in os.environ:
                build_args[k] = os.environ[k]
        labels = dict(lb.partition("=")[::2] for lb in args.label)
        opts = BuildOptions(dockerfile=text, context=context, tags=args.tag,
                            build_args=build_args, target=args.target,
                            no_cache=args.no_cache, pull=args.pull, quiet=args.quiet,
                            labels=labels, network=args.network, platform=args.platform,
                            secrets=secrets, ssh=ssh, iidfile=args.iidfile,
                            allow=[e for a in args.allow for e in a.split(",") if e])
        Builder(Engine(args.root or DEFAULT_ROOT), opts, sys.stdout.buffer).build()
    except BuildError as e:
        sys.stdout.flush()
        print(str(e), file=sys.stderr)
        return 1
    except PalletError as e:
        sys.stdout.flush()
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_builder_prune(args: argparse.Namespace) -> int:
    from pallet.build.cache_mounts import CacheMounts
    from pallet.cli.containers import _human_si
    from pallet.engine.containers import DEFAULT_ROOT

    if not args.force:
        print("WARNING! This will remove all dangling build cache. Are you sure you want to "
              "continue? [y/N] ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    removed, freed = CacheMounts(args.root or DEFAULT_ROOT).prune()
    if removed:
        print("Deleted build cache objects:\n" + "\n".join(removed) + "\n")
    print(f"Total reclaimed space: {_human_si(freed)}")
    return 0
