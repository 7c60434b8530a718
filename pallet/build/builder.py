"""docker's classic builder, daemonless: each Dockerfile step makes an image, a RUN in a
container the engine creates from the previous step's image, a COPY/ADD written into such a
container's rootfs, both committed as a layer by the engine's commit code; a metadata step
(ENV, CMD...) is an image with a new config and no new layer (history `empty_layer`).

A step's image carries a cache key in its index entry (parent image, instruction, and for
COPY/ADD a hash of what is copied): a later build with the same key reuses it. Step images
are intermediate (hidden from `images`); the last one is the build's result.

Every container a step makes is removed on the way out, success or not; a failed commit
leaves nothing in the store (pallet.image.build), and views and temp dirs are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from pallet.build import dockerignore
from pallet.build import parse as dfparse
from pallet.build.context import Exclude, Source
from pallet.build.mounts import (
    RunMount,
    missing_paths,
    parse_mount,
    remove_stubs,
    resolve_mounts,
    ssh_auth_sock,
)
from pallet.build.shell_lex import env_map, process_heredoc, process_word
from pallet.errors import InvalidArgument, NotFound, PalletError

if TYPE_CHECKING:
    from pallet.build.cache_mounts import CacheMounts
    from pallet.build.ssh import SSHAgents, SSHSpec
    from pallet.engine.containers import Engine
    from pallet.image.store import Image

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETWORKS = {"default": "bridge", "bridge": "bridge", "none": "none", "host": "host"}
ENTITLEMENTS = ("security.insecure", "network.host")  # `--allow`, as buildx (network.host: always)


class BuildError(PalletError):
    """A step failed: the message is docker's one line (exit 1)."""


@dataclass
class BuildOptions:
    dockerfile: str                       # the Dockerfile's text
    context: str | None                   # the context directory; None: no context
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    pull: bool = False
    quiet: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    network: str = "default"
    platform: str | None = None
    secrets: dict[str, bytes] = field(default_factory=dict)  # --secret id -> value
    ssh: list[SSHSpec] = field(default_factory=list)  # --ssh: agent sockets or keys by id
    iidfile: str = ""                      # --iidfile: the image id written there
    allow: list[str] = field(default_factory=list)  # --allow entitlements: security.insecure


@dataclass
class _Stage:
    """A stage being built: its last image (None: FROM scratch, nothing yet) and the
    image config (whole: architecture, os, config...) the next step starts from."""

    image: Image | None
    doc: dict[str, Any]
    args: dict[str, str | None] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        return self.doc.setdefault("config", {})

    @property
    def parent(self) -> str:
        return self.image.id if self.image is not None else "scratch"


class Builder:
    """Builds OPTIONS with ENGINE's containers and image store, writing docker's classic
    progress lines (and RUN output) to OUT."""

    def __init__(self, engine: Engine, options: BuildOptions, out: IO[bytes]):
        self.engine = engine
        self.store = engine.images
        self.opts = options
        self.out = out
        self.step = 0
        self.total = 0
        self.escape = "\\"
        self.used_args: set[str] = set()
        self.stages: list[tuple[dfparse.Stage, Image | None]] = []
        self.tmp = ""
        self.ssh: SSHAgents | None = None  # the --ssh agents, while the build runs

    # -- output --------------------------------------------------------------------------
    def say(self, line: str) -> None:
        self.write((line + "\n").encode())

    def write(self, data: bytes) -> None:
        if self.opts.quiet:
            return
        self.out.write(data)
        self.out.flush()

    # -- the build -----------------------------------------------------------------------
    def build(self) -> Image:
        """Run every stage up to the target; tag the result. Returns the image."""
        from pallet.image.reference import parse_reference

        for tag in self.opts.tags:
            parse_reference(tag)  # a bad name fails before anything is built
        if self.opts.network not in NETWORKS:
            raise InvalidArgument(f"network mode {self.opts.network!r} not supported by "
                                  "pallet build: use default, none or host")
        for entitlement in self.opts.allow:
            if entitlement not in ENTITLEMENTS:
                raise InvalidArgument(f"invalid entitlement: {entitlement} (pallet build "
                                      f"knows {', '.join(ENTITLEMENTS)})")
        df = dfparse.parse(self.opts.dockerfile)
        self.escape = df.escape
        last = len(df.stages) - 1
        if self.opts.target:
            want = self.opts.target.lower()
            found = [s.index for s in df.stages if s.name == want]
            if not found:
                raise BuildError(f"failed to reach build target {self.opts.target} in "
                                 "Dockerfile")
            last = found[0]
        stages = df.stages[:last + 1]
        self.total = len(df.meta_args) + sum(1 + len(s.instructions) for s in stages)
        meta = self._meta_args(df.meta_args)
        self.tmp = tempfile.mkdtemp(prefix="build-", dir=self._tmp_root())
        try:
            with contextlib.ExitStack() as stack:
                if self.opts.ssh:
                    from pallet.build.ssh import SSHAgents

                    self.ssh = stack.enter_context(SSHAgents(self.opts.ssh,
                                                             os.path.join(self.tmp, "ssh")))
                image = None
                for stage in stages:
                    image = self._stage(stage, meta, stage.index == last)
                    self.stages.append((stage, image))
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(self.tmp))  # pallet's tmp, if no one else uses it
        unused = sorted(set(self.opts.build_args) - self.used_args)
        if unused:
            self.say(f"[Warning] One or more build-args [{' '.join(unused)}] were not "
                     "consumed")
        if image is None:
            raise BuildError("No image was generated. Is your Dockerfile empty?")
        image = self._finish(image)
        if self.opts.iidfile:
            with open(self.opts.iidfile, "w") as f:
                f.write(image.id)
        if self.opts.quiet:
            self.out.write((image.id + "\n").encode())
            self.out.flush()
        return image

    def _tmp_root(self) -> str:
        path = os.path.join(self.engine.root, "tmp")
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def _finish(self, image: Image) -> Image:
        """The result: no longer intermediate (shown by `images`), tagged."""
        from pallet.image.reference import parse_reference

        ann = self._build_annotations_of(image)
        image = self.store.register(None, image.manifest_digest, ann)
        self.say(f"Successfully built {image.short_id}")
        for tag in self.opts.tags:
            name = str(parse_reference(tag))
            image = self.store.register(name, image.manifest_digest, ann)
            self.store.event("tag", image.id, parse_reference(tag).familiar(), image)
            self.say(f"Successfully tagged {parse_reference(tag).familiar()}")
        return image

    def _build_annotations_of(self, image: Image) -> dict[str, str]:
        """IMAGE's (the last step's) cache key and parent, which the result keeps."""
        from pallet.image.store import BUILD_CACHE_ANNOTATION, BUILD_PARENT_ANNOTATION

        for e in self.store.content.read_index().get("manifests") or []:
            if e.get("digest") == image.manifest_digest:
                ann = e.get("annotations") or {}
                if ann.get(BUILD_CACHE_ANNOTATION):
                    return {k: str(ann[k]) for k in (BUILD_CACHE_ANNOTATION,
                                                     BUILD_PARENT_ANNOTATION) if ann.get(k)}
        return {}

    def _next(self, original: str) -> None:
        self.step += 1
        self.say(f"Step {self.step}/{self.total} : {original}")

    def _meta_args(self, insts: list[dfparse.Instruction]) -> dict[str, str | None]:
        """The ARGs before the first FROM: FROM lines may use them."""
        out: dict[str, str | None] = {}
        for inst in insts:
            self._next(inst.original)
            name, value = self._arg(inst, {k: v for k, v in out.items() if v is not None})
            out[name] = value
        return out

    def _arg(self, inst: dfparse.Instruction, env: dict[str, str]) -> tuple[str, str | None]:
        raw = inst.args[0]
        name, sep, default = raw.partition("=")
        if not name:
            raise inst.error("ARG names can not be blank")
        value: str | None = process_word(default, env, self.escape) if sep else None
        if name in self.opts.build_args:
            value = self.opts.build_args[name]
            self.used_args.add(name)
        return name, value

    # -- stages --------------------------------------------------------------------------
    def _stage(self, stage: dfparse.Stage, meta: dict[str, str | None], final: bool) -> Image:
        self._next(stage.original)
        env = {k: v for k, v in meta.items() if v is not None}
        base = process_word(stage.base, env, self.escape)
        if not base:
            raise BuildError(f"base name ({stage.base}) should not be blank")
        st = self._from(base, process_word(stage.platform, env, self.escape) or None)
        st.args = {}
        for inst in self._triggers(st):
            self._dispatch(st, inst, meta)
        for inst in stage.instructions:
            self._next(_shown(inst))
            self._dispatch(st, inst, meta)
        if final and self.opts.labels:
            labels = {**(st.config.get("Labels") or {}), **self.opts.labels}
            st.config["Labels"] = labels
            text = "LABEL " + " ".join(f'"{k}"="{v}"' for k, v in self.opts.labels.items())
            self._commit_meta(st, text)
        if st.image is None or st.image.config.raw.get("config") != st.config:
            self._commit_meta(st, "", history=False)  # FROM scratch alone; a PATH added
        assert st.image is not None
        return st.image

    def _from(self, base: str, platform: str | None) -> _Stage:
        if base.lower() == "scratch":
            from pallet.image import manifest as mf

            plat = mf.parse_platform(platform) if platform else mf.host_platform()
            doc: dict[str, Any] = {"architecture": plat.architecture, "os": plat.os,
                                   "config": {"Env": [DEFAULT_PATH]}}
            self.say(" ---> ")
            return _Stage(None, doc)
        for stage, image in self.stages:
            if stage.name == base.lower() and image is not None:
                self.say(f" ---> {image.short_id}")
                return self._stage_of(image)
        image = self._image(base, platform, self.opts.pull)
        self.say(f" ---> {image.short_id}")
        return self._stage_of(image)

    def _stage_of(self, image: Image) -> _Stage:
        doc = {k: v for k, v in image.config.raw.items() if k not in ("history", "rootfs")}
        doc = json.loads(json.dumps(doc))
        cfg = doc.setdefault("config", {})
        if not cfg.get("Env"):
            cfg["Env"] = [DEFAULT_PATH]
        return _Stage(image, doc)

    def _image(self, ref: str, platform: str | None, pull: bool) -> Image:
        if not pull:
            with contextlib.suppress(NotFound):
                return self.store.get(ref)
        try:
            return self.store.pull(ref, platform=platform)
        except PalletError as e:
            raise BuildError(f"pull access denied for {ref} or it cannot be pulled: {e}"
                             ) from None

    def _triggers(self, st: _Stage) -> list[dfparse.Instruction]:
        """The base image's ONBUILD triggers (run now, not inherited)."""
        triggers = list(st.config.pop("OnBuild", None) or [])
        if not triggers:
            return []
        self.say(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}")
        out = []
        for text in triggers:
            inst = dfparse.parse_instruction(text)
            if inst.cmd in ("ONBUILD", "FROM", "MAINTAINER"):
                raise BuildError(f"{inst.cmd} isn't allowed as an ONBUILD trigger")
            out.append(inst)
        return out

    # -- instructions --------------------------------------------------------------------
    def _vars(self, st: _Stage) -> dict[str, str]:
        """What $VAR means in this stage: its ARGs, overridden by its ENV."""
        out = {k: v for k, v in st.args.items() if v is not None}
        out.update(env_map(st.config.get("Env")))
        return out

    def _word(self, st: _Stage, word: str) -> str:
        return process_word(word, self._vars(st), self.escape)

    def _dispatch(self, st: _Stage, inst: dfparse.Instruction,
                  meta: dict[str, str | None]) -> None:
        cmd = inst.cmd
        if cmd == "RUN":
            self._run(st, inst)
        elif cmd in ("COPY", "ADD"):
            self._copy(st, inst)
        elif cmd == "WORKDIR":
            self._workdir(st, inst)
        elif cmd == "ARG":
            raw = inst.args[0]
            name = raw.partition("=")[0]
            if "=" not in raw and name in meta and name not in self.opts.build_args:
                st.args[name] = meta[name]  # a global ARG re-declared: its value
                if meta[name] is not None:
                    self.used_args.add(name)
            else:
                st.args[name] = self._arg(inst, self._vars(st))[1]
            self._commit_meta(st, f"ARG {raw}")
        else:
            text = self._apply_config(st, inst)
            self._commit_meta(st, text)

    def _apply_config(self, st: _Stage, inst: dfparse.Instruction) -> str:
        """A metadata instruction applied to the stage's config; the text docker records."""
        from pallet.image.instructions import exposed_ports

        cfg, cmd, args = st.config, inst.cmd, inst.args
        if cmd in ("ENV", "LABEL"):
            pairs = [(self._word(st, args[i]), self._word(st, args[i + 1]))
                     for i in range(0, len(args) - 1, 2)]
            if any(not k for k, _ in pairs):
                raise inst.error(f"{cmd} names can not be blank")
            if cmd == "ENV":
                env = list(cfg.get("Env") or [])
                for k, v in pairs:
                    env = [e for e in env if e.partition("=")[0] != k] + [f"{k}={v}"]
                cfg["Env"] = env
            else:
                cfg["Labels"] = {**(cfg.get("Labels") or {}), **dict(pairs)}
            return f"{cmd} " + " ".join(f"{k}={v}" for k, v in pairs)
        if cmd in ("CMD", "ENTRYPOINT"):
            argv = list(args) if inst.json else [*self._shell(st), args[0]]
            if cmd == "CMD":
                cfg["Cmd"] = argv
                st.doc["_cmd_set"] = True
            else:
                cfg["Entrypoint"] = argv
                if not st.doc.get("_cmd_set"):
                    cfg["Cmd"] = None  # an inherited CMD was written for the old entrypoint
            return f"{cmd} [" + " ".join(json.dumps(a) for a in argv) + "]"
        if cmd == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            added = []
            for a in args:
                for p in exposed_ports(self._word(st, a)):
                    ports[p] = {}
                    added.append(p)
            cfg["ExposedPorts"] = ports
            return "EXPOSE " + " ".join(added)
        if cmd == "VOLUME":
            vols = dict(cfg.get("Volumes") or {})
            names = [self._word(st, a) for a in args]
            for v in names:
                if not v:
                    raise inst.error("VOLUME specified can not be an empty string")
                vols[v] = {}
            cfg["Volumes"] = vols
            return f"VOLUME [{' '.join(names)}]"
        if cmd == "USER":
            cfg["User"] = self._word(st, args[0])
            return f"USER {cfg['User']}"
        if cmd == "STOPSIGNAL":
            cfg["StopSignal"] = self._word(st, args[0])
            return f"STOPSIGNAL {cfg['StopSignal']}"
        if cmd == "MAINTAINER":
            st.doc["author"] = args[0]
            return f"MAINTAINER {args[0]}"
        if cmd == "SHELL":
            cfg["Shell"] = list(args)
            return f"SHELL [{' '.join(args)}]"
        if cmd == "ONBUILD":
            assert inst.trigger is not None
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), inst.trigger.original]
            return f"ONBUILD {inst.trigger.original}"
        if cmd == "HEALTHCHECK":
            cfg["Healthcheck"] = _healthcheck(inst, self._shell(st))
            return inst.original
        raise inst.error(f"unknown instruction: {cmd}")

    def _shell(self, st: _Stage) -> list[str]:
        return list(st.config.get("Shell") or DEFAULT_SHELL)

    # -- committing ----------------------------------------------------------------------
    def _key(self, st: _Stage, *parts: object) -> str:
        return "sha256:" + hashlib.sha256(
            json.dumps([st.parent, *parts], sort_keys=True).encode()).hexdigest()

    def _cached(self, key: str) -> Image | None:
        """The image a previous build made for KEY, if all of it is still in the store."""
        from pallet.image.store import BUILD_CACHE_ANNOTATION

        if self.opts.no_cache:
            return None
        for e in reversed(self.store.content.read_index().get("manifests") or []):
            if (e.get("annotations") or {}).get(BUILD_CACHE_ANNOTATION) != key:
                continue
            with contextlib.suppress(PalletError, OSError):
                image = self.store.get(e["digest"])
                if all(self.store.content.has(layer.digest) for layer in image.layers):
                    return image
        return None

    def _use(self, st: _Stage, image: Image, cached: bool) -> None:
        if cached:
            self.say(" ---> Using cache")
        self.say(f" ---> {image.short_id}")
        st.image = image
        cmd_set = st.doc.get("_cmd_set")
        st.doc = self._stage_of(image).doc
        if cmd_set:
            st.doc["_cmd_set"] = True

    def _new_doc(self, st: _Stage) -> dict[str, Any]:
        from pallet.image.build import now_rfc3339

        doc = {k: v for k, v in st.doc.items() if not k.startswith("_")}
        doc["created"] = now_rfc3339()
        return doc

    def _annotations(self, key: str, st: _Stage) -> dict[str, str]:
        from pallet.image.store import (
            BUILD_CACHE_ANNOTATION,
            BUILD_PARENT_ANNOTATION,
            INTERMEDIATE_ANNOTATION,
        )

        ann = {BUILD_CACHE_ANNOTATION: key, INTERMEDIATE_ANNOTATION: "true"}
        if st.image is not None:  # docker's parent image: what `rmi` prunes with it
            ann[BUILD_PARENT_ANNOTATION] = st.image.id
        return ann

    def _commit_meta(self, st: _Stage, text: str, history: bool = True) -> None:
        """A metadata step: the stage's config as a new image with no new layer."""
        from pallet.image.build import create_image

        created_by = " ".join([*self._shell(st), "#(nop) ", text]) if history else ""
        key = self._key(st, "meta", created_by, st.doc.get("config"), st.doc.get("author"))
        hit = self._cached(key)
        if hit is not None:
            self._use(st, hit, True)
            return
        doc = self._new_doc(st)
        hist = {"created": doc["created"], "created_by": created_by} if history else None
        image = create_image(self.store, st.image, None, doc, hist, None,
                             what="build step", annotations=self._annotations(key, st))
        self._use(st, image, False) if history else setattr(st, "image", image)

    @contextlib.contextmanager
    def _container(self, st: _Stage, argv: list[str], env: list[str],
                   mounts: list[Any] | None = None, network: str = "",
                   privileged: bool = False) -> Iterator[str]:
        """A build container of the stage's image (created, not started), removed after."""
        from pallet.engine.containers import CreateRequest
        from pallet.engine.specgen import ContainerOptions

        if st.image is None:
            self._commit_meta(st, "", history=False)  # a layerless image to build on
        assert st.image is not None
        cfg = st.config
        opts = ContainerOptions(command=argv, entrypoint=[""], env=env,
                                workdir=cfg.get("WorkingDir") or "", user=cfg.get("User") or "",
                                mounts=list(mounts or []), privileged=privileged)
        req = CreateRequest(image=st.image.id, options=opts,
                            network=network or NETWORKS[self.opts.network], pull="never")
        rec = self.engine.create(req)
        try:
            yield rec.id
        finally:
            with contextlib.suppress(PalletError):
                self.engine.remove(rec.id, force=True)

    def _commit_container(self, st: _Stage, cid: str, created_by: str, key: str) -> Image:
        from pallet.engine.rootfs_changes import commit_changes

        doc = self._new_doc(st)
        return commit_changes(self.engine, cid, doc,
                              {"created": doc["created"], "created_by": created_by},
                              annotations=self._annotations(key, st))

    # -- RUN -----------------------------------------------------------------------------
    def _run(self, st: _Stage, inst: dfparse.Instruction) -> None:
        argv, pipes = self._run_argv(st, inst)
        env = env_map(st.config.get("Env"))
        args = sorted((k, v) for k, v in st.args.items() if v is not None and k not in env)
        created_by = " ".join(argv)
        if args:
            created_by = f"|{len(args)} " + " ".join(f"{k}={v}" for k, v in args) + \
                " " + created_by
        network = self._run_network(inst)
        insecure = inst.flags.get("security") == "insecure"
        if insecure and "security.insecure" not in self.opts.allow:
            # BuildKit's entitlement: the one who builds opts in, not the Dockerfile.
            raise inst.error("RUN --security=insecure is not allowed: build with --allow "
                             "security.insecure to let it run with all privileges")
        workdir = st.config.get("WorkingDir") or "/"
        try:
            mounts = resolve_mounts([parse_mount(m, lambda w: self._word(st, w))
                                     for m in inst.mounts], workdir)
        except InvalidArgument as e:
            raise inst.error(str(e)) from None
        with contextlib.ExitStack() as stack:
            binds = {i: self._bind_source(st, m, stack) for i, m in enumerate(mounts)
                     if m.type == "bind"}
            # BuildKit's cache key: the mounts' specs (not a cache's content, a secret's
            # value or an agent's socket), a bind's source content; a plain RUN keeps the
            # classic builder's key.
            extra: dict[str, Any] = {}
            if mounts:
                extra["mounts"] = [{**m.key(), **({"content": binds[i][2]} if i in binds
                                                 else {})} for i, m in enumerate(mounts)]
            if inst.heredocs:
                extra["heredocs"] = [[h.name, h.text] for h in inst.heredocs]
            if "network" in inst.flags:
                extra["network"] = network
            if insecure:
                extra["security"] = "insecure"
            key = self._key(st, "run", created_by, st.config, *([extra] if extra else []))
            hit = self._cached(key)
            if hit is not None:
                self._use(st, hit, True)
                return
            run_env = [*st.config.get("Env", []), *(f"{k}={v}" for k, v in args)]
            run_env += ssh_auth_sock(mounts, run_env)
            specs, secret_env = self._run_mounts(mounts, binds, pipes, stack)
            with self._container(st, argv, run_env + secret_env, specs, network,
                                 privileged=insecure) as cid:
                self.say(f" ---> Running in {cid[:12]}")
                rootfs = os.path.join(self.engine.ctr_dir(cid), "rootfs")
                if workdir != "/":
                    self._make_workdir(cid, workdir)
                stubs = [p for m in specs for p in missing_paths(rootfs, m.destination)]
                code = self._run_container(cid)
                if code != 0:
                    raise BuildError(f"The command '{' '.join(argv)}' returned a non-zero "
                                     f"code: {code}")
                if stubs:  # the mount points the runtime made: not the RUN's changes
                    with self.engine.rootfs(cid) as root:
                        remove_stubs(root, stubs)
                image = self._commit_container(st, cid, created_by, key)
                self.say(f"Removing intermediate container {cid[:12]}")
        self._use(st, image, False)

    def _run_argv(self, st: _Stage, inst: dfparse.Instruction) -> tuple[list[str],
                                                                          dict[str, str]]:
        """The RUN's command, as BuildKit makes it of heredocs: `RUN <<EOF` alone runs the
        document with the shell (or, starting with #!, as a script at /dev/pipes/EOF);
        otherwise the line and its documents go to the shell, which reads them as its own
        here-documents (and expands them unless the delimiter is quoted). Also the
        scripts to mount: {name: text}."""
        if inst.json or not inst.heredocs:
            return (list(inst.args) if inst.json else [*self._shell(st), inst.args[0]]), {}
        if len(inst.heredocs) == 1 and dfparse.heredoc_word(inst.args[0].strip()) is not None:
            doc = inst.heredocs[0]
            if doc.text.startswith("#!"):
                return [f"/dev/pipes/{doc.name}"], {doc.name: doc.text}
            return [*self._shell(st), doc.text], {}
        full = inst.args[0] + "".join(f"\n{h.content}{h.name}" for h in inst.heredocs)
        return [*self._shell(st), full], {}

    def _run_network(self, inst: dfparse.Instruction) -> str:
        mode = inst.flags.get("network", "default")
        if mode not in ("default", "none", "host"):
            raise inst.error(f'unsupported network mode "{mode}"')
        return NETWORKS[self.opts.network if mode == "default" else mode]

    def _bind_source(self, st: _Stage, m: RunMount,
                     stack: contextlib.ExitStack) -> tuple[Source, str, str]:
        """A bind mount's source (the context, or a stage's or image's filesystem mounted
        for the while), the path in it, and a digest of what is there (the cache key)."""
        source = stack.enter_context(self._from_source(st, m.from_ and self._word(st, m.from_)))
        try:
            rel = source.resolve(m.source or "/")
        except (NotFound, InvalidArgument) as e:
            raise BuildError(f"failed to compute cache key for the mount {m.target}: {e}"
                             ) from None
        if len(rel) != 1:
            raise BuildError(f"the mount source {m.source} names more than one path")
        if source.label == "build context":
            digest = source.digest(rel)
        else:
            digest = f"{source.image_id}:{rel[0]}"
        return source, rel[0], digest

    def _run_mounts(self, mounts: list[RunMount], binds: dict[int, tuple[Source, str, str]],
                    pipes: dict[str, str], stack: contextlib.ExitStack
                    ) -> tuple[list[Any], list[str]]:
        """The RUN's mounts as the engine's (host sources ready, released by STACK) and
        the environment its env= secrets add."""
        from pallet.engine.specgen import Mount

        out: list[Mount] = []
        env: list[str] = []
        locked: dict[str, str] = {}  # a locked cache mounted twice: one lock, or a deadlock
        ssh: list[tuple[RunMount, str]] = []  # an ssh mount and its agent's socket
        for i, m in enumerate(mounts):
            if m.type == "cache":
                path = locked.get(m.id) if m.sharing == "locked" else None
                if path is None:
                    path = stack.enter_context(self._caches().use(m))
                if m.sharing == "locked":
                    locked[m.id] = path
                out.append(Mount(destination=m.target, source=path, readonly=m.readonly))
            elif m.type == "tmpfs":
                opts = [f"size={m.size}"] if m.size else []
                out.append(Mount(destination=m.target, type="tmpfs",
                                 options=["nosuid", "nodev", *opts]))
            elif m.type == "bind":
                source, rel, _ = binds[i]
                path = self._bind_path(source, rel, m.readonly, stack)
                out.append(Mount(destination=m.target, source=path, readonly=m.readonly))
            elif m.type == "secret":
                value = self.opts.secrets.get(m.id)
                if value is None:
                    if m.required:
                        raise BuildError(f"secret {m.id}: not found: pass it with --secret "
                                         f"id={m.id},src=FILE (or env=VAR)")
                    continue  # not given, not required: the RUN sees no secret
                if m.env:
                    env.append(f"{m.env}={value.decode(errors='replace')}")
                if m.target:
                    path = self._tmp_file(value, 0o400 if m.mode is None else m.mode,
                                          m.uid or 0, m.gid or 0, stack)
                    out.append(Mount(destination=m.target, source=path, readonly=True))
            elif m.type == "ssh":
                agent = self.ssh.socket(m.id) if self.ssh is not None else None
                if agent is None:
                    if m.required:
                        raise BuildError(f'no SSH key "{m.id}" forwarded from the client: '
                                         f"pass it with --ssh {m.id}[=SOCKET|KEY[,KEY]]")
                    continue  # not given, not required: BuildKit skips the mount
                ssh.append((m, agent))
        if ssh:
            assert self.ssh is not None
            paths = stack.enter_context(self.ssh.forward(
                [(agent, m.mode if m.mode is not None else 0o600, m.uid or 0, m.gid or 0)
                 for m, agent in ssh]))
            out += [Mount(destination=m.target, source=path, readonly=True)
                    for (m, _), path in zip(ssh, paths, strict=True)]
        for name, text in pipes.items():
            path = self._tmp_file(text.encode(), 0o755, 0, 0, stack)
            out.append(Mount(destination=f"/dev/pipes/{name}", source=path, readonly=True))
        return out, env

    def _tmp_file(self, data: bytes, mode: int, uid: int, gid: int,
                  stack: contextlib.ExitStack) -> str:
        """A file of DATA under the build's private tmp dir, removed with STACK."""
        fd, path = tempfile.mkstemp(dir=self.tmp)
        stack.callback(_unlink, path)
        try:
            os.write(fd, data)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return path

    def _bind_path(self, source: Source, rel: str, readonly: bool,
                   stack: contextlib.ExitStack) -> str:
        """The host path to bind for REL of SOURCE. The context is copied (less what
        .dockerignore excludes; writes then go nowhere); a stage's or image's directory is
        bound as it is read-only, under a throwaway overlay if rw, a file copied if rw."""
        from pallet.build.rootfs_copy import Owner, RootfsWriter
        from pallet.engine.users import open_in_rootfs

        tmp = tempfile.mkdtemp(prefix="mnt-", dir=self.tmp)
        stack.callback(shutil.rmtree, tmp, True)
        if source.label == "build context":
            with RootfsWriter(tmp, Owner()) as w:
                w.copy(source, rel, "/data", contents=True)
            return os.path.join(tmp, "data")
        assert source.root is not None
        fd = open_in_rootfs(source.root, rel or "/", os.O_PATH)
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
            is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        if path != source.root and not path.startswith(source.root.rstrip("/") + "/"):
            raise BuildError(f"the mount source {rel} is not in the {source.label}")
        if readonly:
            return path
        if not is_dir:
            shutil.copy2(path, os.path.join(tmp, "data"))
            return os.path.join(tmp, "data")
        from pallet.image.snapshot import MNT_DETACH, mount_overlay, umount

        for d in ("upper", "work", "merged"):
            os.mkdir(os.path.join(tmp, d))
        merged = os.path.join(tmp, "merged")
        mount_overlay(merged, [f"lowerdir={path}", f"upperdir={tmp}/upper",
                               f"workdir={tmp}/work"], writable=True)
        stack.callback(umount, merged, MNT_DETACH)  # lazily: a dying RUN may still hold it
        return merged

    def _caches(self) -> CacheMounts:
        from pallet.build.cache_mounts import CacheMounts

        return CacheMounts(self.engine.root)

    def _make_workdir(self, cid: str, workdir: str) -> None:
        from pallet.build.rootfs_copy import Owner, RootfsWriter

        with RootfsWriter(os.path.join(self.engine.ctr_dir(cid), "rootfs"), Owner()) as w:
            w.directory(workdir)

    def _run_container(self, cid: str) -> int:
        """Start CID, stream its output, return its exit code."""
        from pallet.engine.containers import ContainerStartError
        from pallet.engine.monitor import parse_frames

        try:
            _, fd = self.engine.start(cid, streams="stdout,stderr")
        except ContainerStartError as e:
            raise BuildError(f"failed to start the build container: {e}") from None
        if fd < 0:
            for line in self.engine.logs(cid):
                self.write(line.content)
            return self.engine.wait(cid)
        buf = bytearray()
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    return self.engine.wait(cid)
                buf += data
                for kind, payload in parse_frames(buf):
                    if kind in (b"1", b"2"):
                        self.write(payload)
                    elif kind == b"x":
                        code, _, err = payload.decode(errors="replace").partition("\n")
                        if err:
                            raise BuildError(err)
                        self.engine.wait(cid)
                        return int(code or 0)
        finally:
            os.close(fd)

    # -- WORKDIR -------------------------------------------------------------------------
    def _workdir(self, st: _Stage, inst: dfparse.Instruction) -> None:
        """As docker's: the directory is made (a layer) if the image does not have it."""
        path = self._word(st, inst.args[0])
        workdir = posixpath.normpath(posixpath.join(st.config.get("WorkingDir") or "/", path))
        st.config["WorkingDir"] = workdir
        text = f"WORKDIR {workdir}"
        if self._in_image(st, workdir):
            self._commit_meta(st, text)
            return
        created_by = " ".join([*self._shell(st), "#(nop) ", text])
        key = self._key(st, "workdir", created_by, st.config)
        hit = self._cached(key)
        if hit is not None:
            self._use(st, hit, True)
            return
        with self._container(st, ["/bin/sh", "-c", f"#(nop) {text}"], []) as cid:
            self._make_workdir(cid, workdir)
            image = self._commit_container(st, cid, created_by, key)
        self._use(st, image, False)

    def _in_image(self, st: _Stage, path: str) -> bool:
        """Whether PATH is in the stage's image (its layers as overlay merges them; a
        path through a symlink counts as missing, and is then made in a container)."""
        from pallet.image.diff import LayerStack

        if st.image is None or not st.image.layers:
            return False
        chain = self.store.ready_chain(st.image.id)
        snaps = self.store.snapshots
        layers = [str(snaps.fs(c)) for c in reversed(chain)] if snaps.driver == "overlay" \
            else [str(snaps.fs(chain[-1]))]
        return LayerStack(layers).lstat(path) is not None

    # -- COPY / ADD ----------------------------------------------------------------------
    def _copy(self, st: _Stage, inst: dfparse.Instruction) -> None:
        from pallet.build.rootfs_copy import RootfsWriter, extract_archive, open_archive

        cmd = inst.cmd
        docs = {h.name: h for h in inst.heredocs}
        srcs: list[str] = []
        inline: list[dfparse.Heredoc] = []
        for a in inst.args[:-1]:
            word = dfparse.heredoc_word(a) if docs else None
            if word is not None and word[0] in docs:
                inline.append(docs[word[0]])  # COPY <<EOF /dest: a file of the document
            else:
                srcs.append(self._word(st, a))
        dest = self._word(st, inst.args[-1])
        if cmd == "ADD":
            for s in srcs:
                if s.startswith(("http://", "https://", "git@")):
                    raise BuildError(f"ADD failed: {s} is a URL: pallet build does not fetch "
                                     "remote sources (no network while building); download "
                                     "it into the build context and COPY it")
        workdir = st.config.get("WorkingDir") or "/"
        dest_dir = dest.endswith("/") or dest.endswith("/.") or dest in (".", "")
        target = posixpath.normpath(posixpath.join(workdir, dest))
        chmod = None
        if inst.flags.get("chmod"):
            try:
                chmod = int(inst.flags["chmod"], 8)
            except ValueError:
                raise BuildError(f"invalid chmod parameter: {inst.flags['chmod']}") from None
        patterns = tuple(dockerignore.pattern(p) for p in inst.excludes)
        with self._source(st, inst) as source, self._heredoc_files(st, inline) as docsrc:
            # COPY --parents: each match keeps its path from the context's root, or from
            # a `/./` in its source (BuildKit's pivot), under the destination directory.
            parents = inst.flags.get("parents", "false").lower() in ("", "true")
            dest_dir = dest_dir or parents
            items: list[tuple[Source, str]] = []
            keep: dict[int, str] = {}
            excludes: dict[int, Exclude] = {}  # COPY --exclude: what each item leaves out
            try:
                for s in srcs:
                    base = posixpath.normpath(s.partition("/./")[0].lstrip("/")) + "/" \
                        if parents and "/./" in s else ""
                    for r in source.resolve(s):
                        if parents:
                            keep[len(items)] = r[len(base):] if base and r.startswith(base) \
                                else r
                        if patterns:
                            excludes[len(items)] = Exclude.of(patterns, s, r,
                                                              keep.get(len(items)))
                        items.append((source, r))
            except NotFound as e:
                raise BuildError(f"{cmd} failed: {e}") from None
            except InvalidArgument as e:
                raise BuildError(f"{cmd} failed: {e}") from None
            items += [(docsrc, h.name) for h in inline]
            if len(items) > 1 and not dest_dir:
                raise BuildError(f"When using {cmd} with more than one source file, the "
                                 "destination must be a directory and end with a /")
            first, rel0 = items[0]
            kind = "multi" if len(items) > 1 else ("dir" if first.is_dir(rel0) else "file")
            # An item the patterns leave out whole (a wildcard's match, a --parents path)
            # is not copied; what is left under the others is walked less the patterns.
            skipped = {i for i, ex in excludes.items() if ex.skips("")}
            ours = [i for i, (src, _) in enumerate(items) if src is source and i not in skipped]
            digest = source.digest([items[i][1] for i in ours],
                                   [excludes.get(i) for i in ours])
            if inline:
                digest = hashlib.sha256(
                    (digest + docsrc.digest([h.name for h in inline])).encode()).hexdigest()
            created_by = " ".join([*self._shell(st),
                                   f"#(nop) {cmd} {kind}:{digest} in {dest} "])
            # The patterns are in the key as written (BuildKit's too): a changed pattern
            # never reuses the old step, even where it leaves out the same files.
            key_parts: list[object] = [cmd, created_by, inst.flags, target, dest_dir,
                                       st.config]
            if inst.excludes:
                key_parts.append({"exclude": list(inst.excludes)})
            key = self._key(st, *key_parts)
            hit = self._cached(key)
            if hit is not None:
                self._use(st, hit, True)
                return
            with self._container(st, ["/bin/sh", "-c", f"#(nop) {cmd}"], []) as cid:
                rootfs = os.path.join(self.engine.ctr_dir(cid), "rootfs")
                owner = self._owner(rootfs, inst.flags.get("chown", ""), st)
                with RootfsWriter(rootfs, owner, chmod) as w:
                    if items and len(skipped) == len(items) and dest_dir:
                        w.directory(target)  # everything left out: BuildKit's empty copy
                    for i, (src, rel) in enumerate(items):
                        if i in skipped:
                            continue
                        exclude = excludes.get(i)
                        if i in keep:
                            w.copy(src, rel, posixpath.join(target, keep[i]),
                                   contents=src.is_dir(rel), exclude=exclude)
                            continue
                        if src.is_dir(rel):
                            w.copy(src, rel, target, contents=True, exclude=exclude)
                            continue
                        tar = open_archive(src, rel) if cmd == "ADD" and src is source \
                            else None
                        if tar is not None:
                            tmp = tempfile.mkdtemp(dir=self.tmp)
                            extract_archive(tar, tmp)
                            w.copy(Source(tmp, label="archive"), "", target, contents=True)
                            shutil.rmtree(tmp, ignore_errors=True)
                            continue
                        into = dest_dir or w.is_dir(target)
                        name = posixpath.basename(rel)
                        w.copy(src, rel, posixpath.join(target, name) if into else target,
                               contents=False, exclude=exclude)
                image = self._commit_container(st, cid, created_by, key)
        self._use(st, image, False)

    @contextlib.contextmanager
    def _heredoc_files(self, st: _Stage, docs: list[dfparse.Heredoc]) -> Iterator[Source]:
        """COPY's heredocs as files (0644, named by their delimiter) in a temp dir; an
        unquoted delimiter's document has its variables substituted (BuildKit's)."""
        tmp = tempfile.mkdtemp(prefix="heredoc-", dir=self.tmp)
        try:
            for h in docs:
                if "/" in h.name or h.name in (".", ".."):
                    raise BuildError(f"invalid heredoc name {h.name!r} for a file")
                text = process_heredoc(h.text, self._vars(st)) if h.expand else h.text
                fd = os.open(os.path.join(tmp, h.name), os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | os.O_CLOEXEC, 0o644)
                try:
                    os.write(fd, text.encode())
                    os.fchmod(fd, 0o644)
                finally:
                    os.close(fd)
            yield Source(tmp, label="heredoc")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _owner(self, rootfs: str, chown: str, st: _Stage) -> Any:
        from pallet.build.rootfs_copy import Owner
        from pallet.engine.users import resolve_user

        chown = self._word(st, chown) if chown else ""
        if not chown:
            return Owner()
        try:
            user = resolve_user(rootfs, chown)
        except InvalidArgument as e:
            raise BuildError(f"unable to convert uid/gid chown string to host mapping: {e}"
                             ) from None
        return Owner(user.uid, user.gid if ":" in chown else user.uid)

    @contextlib.contextmanager
    def _source(self, st: _Stage, inst: dfparse.Instruction) -> Iterator[Source]:
        """What a COPY copies from: the context, or --from's stage or image."""
        ref = inst.flags.get("from", "")
        with self._from_source(st, ref and self._word(st, ref)) as source:
            yield source

    @contextlib.contextmanager
    def _from_source(self, st: _Stage, ref: str) -> Iterator[Source]:
        """REF's files (a stage's name or index, or an image), mounted read-only for the
        while; REF empty: the build context."""
        if not ref:
            yield Source.context(self.opts.context)
            return
        image = None
        for stage, made in self.stages:
            if made is not None and (stage.name == ref.lower() or str(stage.index) == ref):
                image = made
        if image is None:
            if ref.isdigit():
                raise BuildError(f"invalid from flag value {ref}: refers to current build "
                                 "stage or a later one")
            try:
                image = self._image(ref, None, False)
            except BuildError as e:
                raise BuildError(f"invalid from flag value {ref}: {e}") from None
        label = f"stage {ref}" if any(s.name == ref.lower() for s, _ in self.stages) \
            else f"image {ref}"
        view = tempfile.mkdtemp(prefix="view-", dir=self.tmp)
        if not image.layers:
            yield Source(view, label=label, image_id=image.id)
            return
        chain = self.store.ready_chain(image.id)
        self.store.prepare_view(chain, view)
        try:
            yield Source(view, label=label, image_id=image.id)
        finally:
            self.store.release_view(view)
            os.rmdir(view)

def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _shown(inst: dfparse.Instruction) -> str:
    """The instruction in its `Step N/M` line: a heredoc's first line, and as BuildKit
    names a RUN of one document, its first line in parentheses (`RUN <<EOF (apk add...)`)."""
    if not inst.heredocs:
        return inst.original
    line = inst.original.split("\n", 1)[0]
    if inst.cmd == "RUN" and len(inst.heredocs) == 1 and \
            dfparse.heredoc_word(inst.args[0].strip()) is not None:
        doc = inst.heredocs[0].text.strip().split("\n")
        line += f" ({doc[0]}{'...' if len(doc) > 1 else ''})"
    return line


def _healthcheck(inst: dfparse.Instruction, shell: list[str]) -> dict[str, Any]:
    """HEALTHCHECK [--interval=...] CMD ... | NONE as the config's Healthcheck."""
    args = list(inst.args)
    if args and args[0].upper() == "NONE":
        if len(args) > 1:
            raise inst.error("HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    if not args or args[0].upper() != "CMD" or len(args) < 2:
        raise inst.error("HEALTHCHECK requires CMD (or NONE) and a command")
    test = ["CMD", *args[1:]] if inst.json else ["CMD-SHELL", " ".join(args[1:])]
    out: dict[str, Any] = {"Test": test}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                      ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
        if inst.flags.get(flag):
            out[key] = _duration_ns(inst.flags[flag], inst)
    if inst.flags.get("retries"):
        if not inst.flags["retries"].isdigit():
            raise inst.error(f"invalid --retries: {inst.flags['retries']}")
        out["Retries"] = int(inst.flags["retries"])
    return out


def _duration_ns(text: str, inst: dfparse.Instruction) -> int:
    """A Go duration (1h2m3.5s, 300ms) in nanoseconds."""
    import re

    units = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
             "m": 60_000_000_000, "h": 3_600_000_000_000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise inst.error(f"time: invalid duration {text!r}")
    return int(sum(float(n) * units[u] for n, u in parts))
