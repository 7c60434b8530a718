"""`pallet build` (and `pallet image build`): docker's classic `docker build` flags and
output. Parses and prints only: the work is pallet.build.builder's.

A failing step exits 1 with docker's one line (`The command '/bin/sh -c false' returned a
non-zero code: 1`); bad usage 125.
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def add_parsers(sub: Any) -> None:
    """The top-level `build`."""
    add_build_parser(sub)


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


def cmd_build(args: argparse.Namespace) -> int:
    from pallet.build.builder import Builder, BuildError, BuildOptions
    from pallet.engine.containers import DEFAULT_ROOT, Engine
    from pallet.errors import PalletError

    try:
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
                            labels=labels, network=args.network, platform=args.platform)
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
