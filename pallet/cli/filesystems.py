"""`pallet` commands on a container's filesystem, with docker's flags, output and exit
codes: diff (A/C/D lines), export (a tar of it), commit (an image of it), and import (an
image of a tar).

Parses and prints only: the work is pallet.engine.rootfs_changes' and pallet.image.build's.
A failure exits 1 (bad usage 125) and leaves nothing behind: no blob, snapshot, temp file
or mount.
"""

from __future__ import annotations

import argparse
import os
import sys

from pallet.cli.flags import exit_1_on_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import IO, Any


def _engine(args: argparse.Namespace) -> Any:
    from pallet.engine.containers import DEFAULT_ROOT, Engine

    return Engine(args.root or DEFAULT_ROOT)


def add_parsers(sub: Any) -> None:
    """The top-level commands (diff, export, commit, import)."""
    add_container_parsers(sub)
    add_image_parsers(sub)


def add_container_parsers(sub: Any) -> None:
    """diff, export and commit: also `pallet container diff|export|commit`."""
    from pallet.cli.containers import add_bool_flag

    p = sub.add_parser("diff", help="inspect changes to files or directories on a "
                       "container's filesystem", description="list what was added (A), "
                       "changed (C) and deleted (D) in a container's filesystem since it "
                       "was created")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=exit_1_on_error(cmd_diff))

    p = sub.add_parser("export", help="export a container's filesystem as a tar archive",
                       description="write a container's filesystem (not its volumes) as a "
                       "tar archive to STDOUT or a file")
    p.add_argument("-o", "--output", default="", help="write to a file, instead of STDOUT")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=exit_1_on_error(cmd_export))

    p = sub.add_parser("commit", help="create a new image from a container's changes",
                       description="create a new image from a container's changes; prints "
                       "the new image's id")
    p.add_argument("-a", "--author", default="", help='author (e.g., "John Hannibal Smith '
                   '<hannibal@a-team.com>")')
    p.add_argument("-c", "--change", action="append", default=[],
                   help="apply Dockerfile instruction to the created image (CMD, "
                   "ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL, "
                   "ONBUILD)")
    p.add_argument("-m", "--message", default="", help="commit message")
    add_bool_flag(p, "-p", "--pause", default=True,
                  help="pause container during commit (default true; --pause=false "
                  "does not)")
    p.add_argument("--no-pause", dest="pause", action="store_false",
                   help="disable pausing container during commit")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("repository", nargs="?", default="", metavar="[REPOSITORY[:TAG]]")
    p.set_defaults(func=exit_1_on_error(cmd_commit))


def add_image_parsers(sub: Any) -> None:
    """import: also `pallet image import`."""
    p = sub.add_parser("import", help="import the contents from a tarball to create a "
                       "filesystem image", description="create a single-layer image from "
                       "a tar archive (a file, or - for STDIN; gzip, bzip2, xz or plain); "
                       "prints the new image's id")
    p.add_argument("-c", "--change", action="append", default=[],
                   help="apply Dockerfile instruction to the created image")
    p.add_argument("-m", "--message", default="", help="set commit message for imported image")
    p.add_argument("--platform", default=None, help="set platform (os/arch[/variant]) of "
                   "the image; default the host's")
    p.add_argument("source", metavar="file|-")
    p.add_argument("repository", nargs="?", default="", metavar="[REPOSITORY[:TAG]]")
    p.set_defaults(func=exit_1_on_error(cmd_import))


# -- handlers ------------------------------------------------------------------------------
def cmd_diff(args: argparse.Namespace) -> int:
    from pallet.engine import rootfs_changes

    for change in rootfs_changes.changes(_engine(args), args.container):
        print(change)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pallet.engine import rootfs_changes
    from pallet.errors import FailedPrecondition

    eng = _engine(args)
    if not args.output:
        if sys.stdout.isatty():
            raise FailedPrecondition("cowardly refusing to save to a terminal. Use the -o "
                                     "flag or redirect")
        sys.stdout.flush()
        try:
            rootfs_changes.export(eng, args.container, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            # The reader went away (`| head`): end quietly, as SIGPIPE ends docker's CLI.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + 13
        return 0
    eng.get(args.container)  # no such container: no file either
    _write_atomically(args.output, lambda out: rootfs_changes.export(eng, args.container, out),
                      "failed to export container")
    return 0


def _write_atomically(path: str, write: Callable[[IO[bytes]], None], what: str) -> None:
    """WRITE into a temp file beside PATH, renamed to PATH once complete (removed if not)."""
    import tempfile

    from pallet.errors import InvalidArgument

    path = os.path.abspath(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path),
                                   prefix=f".{os.path.basename(path)}.")
    except OSError as e:
        raise InvalidArgument(f"{what}: open {path}: {(e.strerror or str(e)).lower()}"
                              ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644 & ~_umask())
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def cmd_commit(args: argparse.Namespace) -> int:
    from pallet.engine import rootfs_changes

    image = rootfs_changes.commit(_engine(args), args.container, name=args.repository or None,
                                  author=args.author, message=args.message,
                                  changes=args.change, pause=args.pause)
    print(image.id)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from pallet.errors import InvalidArgument, NotFound
    from pallet.image.build import import_tar
    from pallet.image.store import ImageStore

    src = args.source
    if src.startswith(("http://", "https://")):
        raise InvalidArgument(f"importing from a URL is not supported: download {src} and "
                              "import the file")
    store = ImageStore(args.root)
    if src == "-":
        image = import_tar(store, sys.stdin.buffer, src, name=args.repository or None,
                           changes=args.change, message=args.message, platform=args.platform)
    else:
        try:
            f = open(src, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise NotFound(f"open {src}: no such file or directory") from None
        except OSError as e:
            raise InvalidArgument(f"open {src}: {(e.strerror or str(e)).lower()}") from None
        with f:
            image = import_tar(store, f, src, name=args.repository or None,
                               changes=args.change, message=args.message,
                               platform=args.platform)
    print(image.id)
    return 0
