"""`pallet` image commands: pull, push, images, rmi, tag, image inspect/prune, save, load.

Parses and prints only; all work is done by pallet.image.store.ImageStore.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from pallet.cli.filters import filter_arg
from pallet.cli.flags import add_bool_flag, exit_1_on_error
from pallet.units import human_duration

if TYPE_CHECKING:
    from collections.abc import Callable

    from pallet.engine.containers import Engine
    from pallet.image.store import Image, ImageStore


def _store(args: argparse.Namespace) -> ImageStore:
    from pallet.image.store import ImageStore

    return ImageStore(args.root)


def _engine(args: argparse.Namespace) -> Engine:
    """Which images are in use is the engine's knowledge (its containers), not the
    store's: rmi and prune ask it, on the root the store would use."""
    from pallet.engine.containers import Engine

    return Engine(str(_store(args).root))



def add_parsers(sub: Any) -> None:
    for name, (define, help) in _SHARED.items():
        define(sub.add_parser(name, help=help))

    p = sub.add_parser("images", help="list images")
    _images_args(p)

    p = sub.add_parser("login", help="log in to a registry (credentials go to a docker-style config.json)")
    p.add_argument("server", nargs="?", default="docker.io", help="registry host[:port], default docker.io")
    p.add_argument("-u", "--username", default=None)
    p.add_argument("-p", "--password", default=None)
    add_bool_flag(p, "--password-stdin", help="read the password from stdin")
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("logout", help="forget the credentials of a registry")
    p.add_argument("server", nargs="?", default="docker.io")
    p.set_defaults(func=cmd_logout)

    image = sub.add_parser("image", help="manage images")
    isub = image.add_subparsers(dest="image_command", metavar="COMMAND")
    p = isub.add_parser("inspect", help="show images as JSON")
    p.add_argument("-f", "--format", default="", help="a Go template, e.g. '{{.Id}}', or json")
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_inspect)
    p = isub.add_parser("prune", help="remove dangling images (-a: every image no container "
                        "uses), then unused blobs and snapshots")
    add_bool_flag(p, "-f", "--force", help="do not prompt for confirmation")
    add_bool_flag(p, "-a", "--all",
                   help="remove all images without a container made from them, not just "
                   "dangling ones")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   type=filter_arg("--filter"), help="until=TIMESTAMP|DURATION, "
                   "label=KEY[=VALUE], label!=KEY[=VALUE]")
    p.set_defaults(func=cmd_prune)
    from pallet.cli.build import add_build_parser

    add_build_parser(isub)
    p = isub.add_parser("ls", help="list images")
    _images_args(p)
    p = isub.add_parser("import-layout", help="import images from an OCI layout directory")
    p.add_argument("dir")
    p.add_argument("--tag", default=None, help="name for the image (one-image layouts)")
    p.set_defaults(func=cmd_import_layout)
    for name in ("build-busybox", "import-busybox"):
        p = isub.add_parser(name, help="build a busybox image from the host's busybox-static")
        p.add_argument("--tag", default="busybox:latest")
        p.add_argument("--busybox", default="/bin/busybox")
        p.set_defaults(func=cmd_build_busybox)
    from pallet.cli import filesystems, history

    history.add_parsers(isub)
    filesystems.add_image_parsers(isub)
    for name, (define, _) in _SHARED.items():
        # docker's `image pull`, `image rm`... are the top-level commands under other names.
        sub_name = "rm" if name == "rmi" else name
        define(isub.add_parser(sub_name, help=f"same as `pallet {name}`"))


def _images_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference", nargs="?", default=None)
    add_bool_flag(p, "-a", "--all", help="show all images (by default intermediate images, "
                  "a build's steps, are hidden)")
    add_bool_flag(p, "-q", "--quiet", help="only ids")
    add_bool_flag(p, "--digests")
    add_bool_flag(p, "--no-trunc")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   type=filter_arg("-f, --filter"), help="dangling=true|false, "
                   "label=KEY[=VALUE], label!=KEY[=VALUE], reference=PATTERN, before=IMAGE, "
                   "since=IMAGE, until=TIMESTAMP|DURATION")
    p.add_argument("--format", default=None, help="table (the default), json, `table "
                   "TEMPLATE` or a Go template, e.g. '{{.Repository}}:{{.Tag}}'")
    p.set_defaults(func=cmd_images)


def _pull_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("--platform", default=None, help="os/arch[/variant], default the host's")
    add_bool_flag(p, "-q", "--quiet", help="print only the image reference")
    p.set_defaults(func=cmd_pull)


def _push_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    add_bool_flag(p, "-q", "--quiet")
    p.set_defaults(func=cmd_push)


def _rmi_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+")
    add_bool_flag(p, "-f", "--force")
    add_bool_flag(p, "--no-prune", help="do not delete untagged parents (a build's steps)")
    p.set_defaults(func=cmd_rmi)


def _tag_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source")
    p.add_argument("target")
    p.set_defaults(func=cmd_tag)


def _save_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--format", choices=["docker-archive", "oci-archive"], default="docker-archive")
    p.set_defaults(func=cmd_save)


def _load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", required=True)
    add_bool_flag(p, "-q", "--quiet")
    p.set_defaults(func=cmd_load)


# -- progress ----------------------------------------------------------------


class _PlainProgress:
    """One line per layer event, for logs and pipes (docker's non-tty style)."""

    def __init__(self, push: bool = False) -> None:
        self._lock = threading.Lock()
        self._started: set[str] = set()
        self._verbs = ("Pushing", "Pushed") if push else ("Downloading", "Download complete")

    def __call__(self, event: str, digest: str, done: int, total: int) -> None:
        short = digest.split(":", 1)[1][:12]
        with self._lock:
            if event in ("download", "upload") and digest not in self._started:
                self._started.add(digest)
                print(f"{short}: {self._verbs[0]} {_human(total)}", flush=True)
            elif event in ("done", "exists", "mounted"):
                word = {"done": self._verbs[1], "exists": "Already exists",
                        "mounted": "Mounted from another repository"}[event]
                print(f"{short}: {word}", flush=True)


class _RichProgress:
    """Live per-layer bars on a terminal."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), transient=False)
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> _RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: str, digest: str, done: int, total: int) -> None:
        with self._lock:
            if digest not in self._tasks:
                self._tasks[digest] = self.progress.add_task(digest.split(":", 1)[1][:12], total=total)
            task = self._tasks[digest]
        label = {"exists": " (exists)", "mounted": " (mounted)"}.get(event, "")
        self.progress.update(task, completed=done,
                             description=digest.split(":", 1)[1][:12] + label)


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}"


# -- handlers --------------------------------------------------------------


@exit_1_on_error
def cmd_pull(args: argparse.Namespace) -> int:
    from pallet.image.reference import parse_reference

    store = _store(args)
    ref = parse_reference(args.image)
    if args.quiet:
        store.pull(args.image, platform=args.platform)
        print(ref.familiar() if not ref.digest else str(ref))
        return 0
    tag = ref.tag or ref.digest
    print(f"{tag}: Pulling from {ref.name.removeprefix('docker.io/')}", flush=True)
    if sys.stdout.isatty():
        with _RichProgress() as bars:
            image = store.pull(args.image, platform=args.platform, progress=bars)
    else:
        image = store.pull(args.image, platform=args.platform, progress=_PlainProgress())
    digest = image.repo_digests[0].rsplit("@", 1)[1] if image.repo_digests else image.manifest_digest
    print(f"Digest: {digest}")
    print(f"Status: Downloaded newer image for {ref.familiar()}")
    print(str(ref))
    return 0


@exit_1_on_error
def cmd_push(args: argparse.Namespace) -> int:
    from pallet.image.reference import parse_reference

    store = _store(args)
    ref = parse_reference(args.image)
    progress = None if args.quiet else _PlainProgress(push=True)
    digest = store.push(args.image, progress=progress)
    if not args.quiet:
        print(f"{ref.tag}: digest: {digest} size: {store.content.size(digest)}")
    return 0


def _image_rows(listed: list[tuple[Image, list[str]]], args: argparse.Namespace
                ) -> list[dict[str, str]]:
    """One row per name (a nameless image: one `<none>` row), as docker's image formatter
    shows them; LISTED pairs each image with the names to show."""
    from pallet.image.reference import parse_reference

    now = time.time()
    rows = []
    for image, names in listed:
        when = created_epoch(image.created)
        created_at = "" if when is None else time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC",
                                                           time.gmtime(when))
        since = "N/A" if when is None else human_duration(now - when) + " ago"
        for n in names or [""]:
            if n:
                r = parse_reference(n)
                repo = r.familiar().rsplit(":", 1)[0] if r.tag else r.familiar().split("@")[0]
                tag = r.tag or "<none>"
            else:
                repo, tag = "<none>", "<none>"
            digest = next((d.rsplit("@", 1)[1] for d in image.repo_digests
                           if d.startswith(repo + "@")), "<none>")
            rows.append({
                "Repository": repo, "Tag": tag, "Digest": digest,
                "ID": image.id if args.no_trunc else image.short_id,
                "CreatedAt": created_at, "CreatedSince": since, "Size": _human(image.size),
                # docker's daemon leaves these unset in a plain listing
                "Containers": "N/A", "SharedSize": "N/A", "UniqueSize": "N/A",
                "VirtualSize": _human(image.size),
            })
    return rows


def created_epoch(created: str) -> float | None:
    """An image's RFC 3339 creation time as unix seconds, None if it has none."""
    from datetime import datetime

    try:
        # fromisoformat in 3.11 takes "Z" but not nanoseconds: keep microseconds at most.
        head, dot, frac = created.partition(".")
        if dot:
            digits = len(frac) - len(frac.lstrip("0123456789"))
            frac = frac[:min(digits, 6)] + frac[digits:]
        return datetime.fromisoformat(head + (dot + frac if dot else "")).timestamp()
    except ValueError:
        return None


def created_since(created: str, now: float) -> str:
    """An RFC 3339 time as docker's CREATED column says it: "2 years ago", "N/A" if unknown."""
    when = created_epoch(created)
    return "N/A" if when is None else human_duration(now - when) + " ago"


IMAGE_FILTERS = ("dangling", "label", "label!", "before", "since", "reference", "until")
IMAGE_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST", "ID": "IMAGE ID",
                 "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
                 "Containers": "CONTAINERS", "SharedSize": "SHARED SIZE",
                 "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE"}


def filter_images(store: ImageStore, images: list[Image], words: list[str],
                  accepted: tuple[str, ...] = IMAGE_FILTERS) -> list[tuple[Image, list[str]]]:
    """docker's image filters over IMAGES: each kept image with the names to show (a
    reference= filter shows only the names it matches)."""
    from pallet.cli.filters import Filters, path_match
    from pallet.errors import NotFound

    flt = Filters(words, accepted)
    if not flt:
        return [(i, i.names) for i in images]
    from pallet.image.reference import parse_reference

    dangling = flt.bool("dangling")
    until = flt.until()
    bounds = {}
    for key in ("before", "since"):
        for ref in flt.get(key):  # docker: the last one given wins
            try:
                bounds[key] = created_epoch(store.get(ref).created) or 0.0
            except NotFound:
                raise NotFound(f"No such image: {ref}") from None
    out = []
    for image in images:
        names = image.names
        if dangling is not None and dangling != (not names):
            continue
        labels = (image.config.raw.get("config") or {}).get("Labels") or {}
        if not flt.labels_match(labels):
            continue
        when = created_epoch(image.created) or 0.0
        if "before" in bounds and not when < bounds["before"]:
            continue
        if "since" in bounds and not when > bounds["since"]:
            continue
        if until is not None and when * 1e9 > until:
            continue
        if "reference" in flt:
            def matches(name: str) -> bool:
                ref = parse_reference(name)
                familiar = ref.familiar()
                short = familiar.split("@")[0].rsplit(":", 1)[0] if ref.tag else \
                    familiar.split("@")[0]
                return any(path_match(p, familiar) or path_match(p, short)
                           for p in flt.get("reference"))

            names = [n for n in names if matches(n)]
            if not names:
                continue
        out.append((image, names))
    return out


@exit_1_on_error
def cmd_images(args: argparse.Namespace) -> int:
    store = _store(args)
    images = store.list(intermediates=args.all)
    if args.reference:
        from pallet.image.reference import parse_reference

        want = parse_reference(args.reference, default_tag=False)
        images = [i for i in images if any(
            parse_reference(n).name == want.name and (not want.tag or parse_reference(n).tag == want.tag)
            for n in i.names)]
    listed = filter_images(store, images, args.filter)
    if args.quiet:
        seen = []
        for i, _ in listed:
            ident = i.id if args.no_trunc else i.short_id
            if ident not in seen:
                seen.append(ident)
        print("\n".join(seen)) if seen else None
        return 0
    rows = _image_rows(listed, args)
    if args.format not in (None, "", "table"):
        from pallet.cli.template import print_formatted

        print_formatted(args.format, rows, IMAGE_HEADERS, lambda: None)
        return 0
    from pallet.cli.template import align

    cols = ["Repository", "Tag"] + (["Digest"] if args.digests else []) + ["ID", "CreatedSince", "Size"]
    print(align("\n".join("\t".join(r[c] for c in cols) for r in [IMAGE_HEADERS, *rows])))
    return 0


def _server_domain(server: str) -> str:
    """`https://host:5000/v2/` or `index.docker.io` -> the registry's domain as references use it."""
    from pallet.image.auth import DOCKER_HUB_KEYS

    host = server.split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if host in DOCKER_HUB_KEYS or server in DOCKER_HUB_KEYS else host


def _auth_file() -> str:
    from pallet.config import load_config

    return load_config().registry.auth_file


def cmd_login(args: argparse.Namespace) -> int:
    import dataclasses
    import getpass

    from pallet.errors import InvalidArgument
    from pallet.image import auth
    from pallet.image.reference import DOCKER_HUB_API_HOST
    from pallet.image.registry import RegistryClient

    if args.password is not None and args.password_stdin:
        raise InvalidArgument("--password and --password-stdin are mutually exclusive")
    user, password = args.username, args.password
    if args.password_stdin:
        if not user:
            raise InvalidArgument("must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    if not user:
        if not sys.stdin.isatty():
            raise InvalidArgument("cannot ask for a username: stdin is not a terminal; use -u")
        user = input("Username: ").strip()
    if password is None:
        if not sys.stdin.isatty():
            raise InvalidArgument("cannot ask for a password: stdin is not a terminal; use --password-stdin")
        password = getpass.getpass("Password: ")
    if not user or not password:
        raise InvalidArgument("login needs a username and a password")
    domain = _server_domain(args.server)
    host = DOCKER_HUB_API_HOST if domain == "docker.io" else domain
    store = _store(args)
    # Only these credentials: a stale login already on file must not make the check pass.
    cfg = dataclasses.replace(store.registry, auths={domain: (user, password), host: (user, password)})
    with RegistryClient(host, cfg) as client:
        client.verify_login()
    path = auth.login_config_path(_auth_file())
    auth.store_credentials(path, domain, user, password)
    print("Login Succeeded")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from pallet.image import auth

    domain = _server_domain(args.server)
    if auth.remove_credentials(auth.login_config_path(_auth_file()), domain):
        print(f"Removing login credentials for {auth.auth_key(domain)}")
    else:
        print(f"Not logged in to {auth.auth_key(domain)}")
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    from pallet.errors import PalletError

    eng = _engine(args)
    code = 0
    for ref in args.images:
        try:
            for line in eng.remove_image(ref, force=args.force, prune=not args.no_prune):
                print(line)
        except PalletError as e:
            # Like docker: report each failure, go on with the rest, exit non-zero.
            print(f"Error: {e}", file=sys.stderr)
            code = 1
    return code


@exit_1_on_error
def cmd_tag(args: argparse.Namespace) -> int:
    _store(args).tag(args.source, args.target)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from pallet.cli.template import format_inspected
    from pallet.errors import InvalidArgument, NotFound

    store = _store(args)
    found, rc = [], 0
    for ref in args.images:
        try:
            found.append(store.get(ref).to_json())
        except (NotFound, InvalidArgument):
            print(f"Error: No such image: {ref}", file=sys.stderr)
            rc = 1
    sys.stdout.write(format_inspected(args.format, found))
    return rc


def prune_choice(flt: Any) -> Callable[[Image], bool] | None:
    """Which images a prune's filters (label=, label!=, until=) let go; None: all."""
    if not flt:
        return None
    until = flt.until()

    def chosen(image: Image) -> bool:
        labels = (image.config.raw.get("config") or {}).get("Labels") or {}
        when = created_epoch(image.created) or 0.0
        return flt.labels_match(labels) and (until is None or when * 1e9 < until)

    return chosen


@exit_1_on_error
def cmd_prune(args: argparse.Namespace) -> int:
    if not args.force:
        what = ("all images without at least one container associated to them" if args.all
                else "all dangling images")
        print(f"WARNING! This will remove {what}.")
        print("Are you sure you want to continue? [y/N] ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print()
            return 0
    from pallet.cli.filters import Filters

    flt = Filters(args.filter, ("dangling", "label", "label!", "until"))
    every = args.all or flt.bool("dangling") is False  # docker: dangling=false is -a
    lines, freed = _engine(args).prune_images(all=every, only=prune_choice(flt))
    if lines:
        print("Deleted Images:\n" + "\n".join(lines) + "\n")
    print(f"Total reclaimed space: {_human(freed)}")
    return 0


@exit_1_on_error
def cmd_save(args: argparse.Namespace) -> int:
    _store(args).save(args.images, args.output, format=args.format)
    return 0


@exit_1_on_error
def cmd_load(args: argparse.Namespace) -> int:
    images = _store(args).load(args.input)
    _print_loaded(images)
    return 0


def _print_loaded(images: list[Image]) -> None:
    from pallet.image.reference import parse_reference

    for image in images:
        if image.names:
            for n in image.names:
                print(f"Loaded image: {parse_reference(n).familiar()}")
        else:
            print(f"Loaded image ID: {image.id}")


def cmd_import_layout(args: argparse.Namespace) -> int:
    _print_loaded(_store(args).import_layout(args.dir, name=args.tag))
    return 0


def cmd_build_busybox(args: argparse.Namespace) -> int:
    import tempfile

    from pallet.image.busybox import build_busybox_layout

    store = _store(args)
    with tempfile.TemporaryDirectory(dir=store.root) as tmp:
        layout = build_busybox_layout(f"{tmp}/layout", busybox=args.busybox)
        _print_loaded(store.import_layout(layout, name=args.tag))
    return 0


# Commands both at the top level and under `image` (`rmi` is `image rm` there).
_SHARED: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]] = {
    "pull": (_pull_args, "pull an image from a registry"),
    "push": (_push_args, "push an image to a registry"),
    "rmi": (_rmi_args, "remove images"),
    "tag": (_tag_args, "give an image another name"),
    "save": (_save_args, "write images to a tar archive"),
    "load": (_load_args, "load images from a docker-archive or oci-archive tar"),
}
