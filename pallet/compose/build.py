"""A compose service's `build:` section built by pallet's classic builder (pallet.build):
the section turned into BuildOptions (pure but for reading the Dockerfile), and the images
`up`, `run` and `build` need made. Never prints: the builder's lines go to the OUT stream
the caller gives, steps to PROGRESS.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import IO, TYPE_CHECKING

from pallet.compose.model import Project
from pallet.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from pallet.build.builder import BuildOptions
    from pallet.engine.containers import Engine

Progress = Callable[[str, str, str], None]


def _quiet(kind: str, name: str, state: str) -> None:
    pass


def build_options(project: Project, service: str, *, no_cache: bool = False,
                  pull: bool = False, quiet: bool = False,
                  build_args: Mapping[str, str] | None = None) -> BuildOptions:
    """The builder's options for SERVICE's build section: its context and Dockerfile
    (relative to the context, as docker compose reads it), args (BUILD_ARGS over them),
    target, labels, network; tagged with the service's image (and build.tags)."""
    from pallet.build.builder import BuildOptions

    svc = project.service(service)
    build = svc.get("build")
    if build is None:
        raise InvalidArgument(f"service {service!r} has no build section")
    context = build["context"]
    if not os.path.isdir(context):
        raise InvalidArgument(f'services.{service}.build.context: unable to prepare context: '
                              f'path "{context}" not found')
    if "dockerfile_inline" in build:
        text = build["dockerfile_inline"]
    else:
        path = os.path.join(context, build["dockerfile"])
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise InvalidArgument(f"services.{service}.build.dockerfile: Cannot locate "
                                  f"specified Dockerfile: {build['dockerfile']}") from None
        except OSError as e:
            raise InvalidArgument(f"services.{service}.build.dockerfile: cannot read "
                                  f"{path}: {e.strerror}") from None
    args = {k: v for k, v in (build.get("args") or {}).items() if v is not None}
    args.update(build_args or {})
    return BuildOptions(
        secrets=build_secrets(project, service), dockerfile=text, context=context,
        tags=[project.image(service), *build.get("tags", [])], build_args=args,
        target=build.get("target", ""), no_cache=no_cache or build.get("no_cache", False),
        pull=pull or build.get("pull", False), quiet=quiet,
        labels=dict(build.get("labels") or {}), network=build.get("network", "default"),
        platform=svc.get("platform") or None)


def build_secrets(project: Project, service: str) -> dict[str, bytes]:
    """SERVICE's build.secrets as the builder's --secret values: the id a Dockerfile's
    `RUN --mount=type=secret,id=ID` names is the reference's target, else its source (as
    docker compose passes them to BuildKit); the value is the secret's file or variable."""
    from pallet.errors import FailedPrecondition

    out: dict[str, bytes] = {}
    for ref in (project.service(service).get("build") or {}).get("secrets") or []:
        obj = project.secrets[ref["source"]]
        if obj.get("external"):
            raise FailedPrecondition(f"unsupported external secret {obj['name']}")
        if "file" in obj:
            try:
                with open(obj["file"], "rb") as f:
                    value = f.read()
            except OSError as e:
                raise InvalidArgument(f"secret {ref['source']}: cannot read {obj['file']}: "
                                      f"{e.strerror}") from None
        else:
            var = obj["environment"]
            if var not in project.environment:
                raise FailedPrecondition(f'environment variable "{var}" required by file '
                                         f'"{obj["name"]}" is not set')
            value = project.environment[var].encode()
        out[ref.get("target") or ref["source"]] = value
    return out


def build(eng: Engine, project: Project, services: Iterable[str], out: IO[bytes], *,
          no_cache: bool = False, pull: bool = False, quiet: bool = False,
          build_args: Mapping[str, str] | None = None,
          progress: Progress = _quiet) -> list[str]:
    """Build the images of SERVICES that have a build section, in order, writing the
    builder's output to OUT; the others are skipped. Returns the services built. A failed
    build raises (pallet.build.builder.BuildError: docker's one line)."""
    from pallet.build.builder import Builder

    done = []
    for name in services:
        if "build" not in project.service(name):
            continue
        opts = build_options(project, name, no_cache=no_cache, pull=pull, quiet=quiet,
                             build_args=build_args)
        progress("Service", name, "Building")
        Builder(eng, opts, out).build()
        progress("Service", name, "Built")
        done.append(name)
    return done


def missing(eng: Engine, project: Project, services: Iterable[str]) -> list[str]:
    """Those of SERVICES up would build: a build section and no image of that name yet
    (or `pull_policy: build`, which builds every time)."""
    out = []
    for name in services:
        svc = project.service(name)
        if "build" in svc and (svc.get("pull_policy") == "build"
                               or not eng.images.exists(project.image(name))):
            out.append(name)
    return out


def ensure_images(eng: Engine, project: Project, services: Iterable[str], out: IO[bytes], *,
                  policy: str = "missing", progress: Progress = _quiet) -> list[str]:
    """The images SERVICES run, made before up creates containers: POLICY "missing" builds
    the built services' missing images, "always" (`--build`) every built service's,
    "never" (`--no-build`) none, and an image still missing is an error naming it."""
    names = list(services)
    if policy == "never":
        for name in missing(eng, project, names):
            if not eng.images.exists(project.image(name)):
                raise NotFound(f"image {project.image(name)} of service {name!r} is missing "
                               "and --no-build forbids building it: run pallet compose build")
        return []
    todo = [n for n in names if "build" in project.service(n)] if policy == "always" \
        else missing(eng, project, names)
    return build(eng, project, todo, out, progress=progress)
