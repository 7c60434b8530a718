"""Compose files to a Project: find, read (YAML), interpolate, merge in order, normalise to
the long syntax `docker compose config` prints, and validate with one-line errors that
name the key (`services.web.ports[0]: invalid port "abc"`). Pure but for reading files.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pallet.compose.interpolate import interpolate, parse_env_file
from pallet.errors import InvalidArgument, NotFound

FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
HASH_LABEL = "com.docker.compose.config-hash"
ONEOFF_LABEL = "com.docker.compose.oneoff"
WORKDIR_LABEL = "com.docker.compose.project.working_dir"
FILES_LABEL = "com.docker.compose.project.config_files"
NETWORK_LABEL = "com.docker.compose.network"
VOLUME_LABEL = "com.docker.compose.volume"
DEPENDS_LABEL = "com.docker.compose.depends_on"
VERSION_LABEL = "com.docker.compose.version"
VERSION = "2.29.0"  # the docker compose whose labels and names pallet writes

# network_mode: service:NAME / container:NAME|ID: share that one's network namespace
SHARED_MODES = ("service:", "container:")
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
_PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_SERVICE_NAME = re.compile(r"[a-zA-Z0-9._-]+")

# Service keys pallet reads; anything else is an error (compose's "Additional property").
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "ports", "expose",
    "volumes", "tmpfs", "networks", "network_mode", "depends_on", "restart", "working_dir",
    "user", "hostname", "domainname", "labels", "cap_add", "cap_drop", "privileged",
    "read_only", "init", "stop_signal", "stop_grace_period", "mem_limit", "memswap_limit",
    "cpus", "pids_limit", "shm_size", "deploy", "ulimits", "sysctls", "extra_hosts", "tty",
    "stdin_open", "container_name", "profiles", "scale", "healthcheck", "logging",
    "security_opt", "group_add", "pull_policy", "platform", "runtime", "secrets", "configs",
    "dns", "dns_search", "dns_opt", "devices",
}
# Read, accepted and not acted on (said in docs/cli.md).
IGNORED_KEYS = ("expose", "domainname")
HEALTHCHECK_KEYS = ("test", "interval", "timeout", "start_period", "start_interval", "retries",
                    "disable")
TOP_KEYS = {"version", "name", "services", "networks", "volumes", "secrets", "configs",
            "include"}
# The resources a file defines (and an included project brings in).
SECTIONS = ("services", "networks", "volumes", "secrets", "configs")
NETWORK_KEYS = {"name", "driver", "external", "ipam", "labels", "internal", "enable_ipv6",
                "driver_opts", "attachable"}
VOLUME_KEYS = {"name", "driver", "external", "labels", "driver_opts"}
SECRET_KEYS = {"name", "file", "environment", "external", "labels"}
CONFIG_KEYS = SECRET_KEYS | {"content"}
FILE_REF_KEYS = ("source", "target", "uid", "gid", "mode")
# Where a service's secrets and configs are mounted when their target is not absolute.
SECRETS_DIR = "/run/secrets/"
CONFIGS_DIR = "/"
# The build section's keys pallet's builder acts on; the spec's others are refused.
_BUILD_ORDER = ("context", "dockerfile", "dockerfile_inline", "args", "labels", "no_cache",
                "network", "pull", "secrets", "target", "tags")
BUILD_KEYS = set(_BUILD_ORDER)


class ComposeFileError(InvalidArgument):
    """A compose file that cannot be read or is not a valid model (docker compose: 15)."""

    exit_code = 15


class ComposeFileNotFound(NotFound):
    """No compose file (docker compose: 14)."""

    exit_code = 14


@dataclass
class Project:
    name: str
    working_dir: str
    config_files: list[str]
    services: dict[str, dict[str, Any]]
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    disabled: dict[str, dict[str, Any]] = field(default_factory=dict)  # other profiles'
    warnings: list[str] = field(default_factory=list)
    # The variables the files were interpolated with (the shell's over .env's): secrets and
    # configs with `environment:` read theirs from here, as docker compose's.
    environment: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The normalised model, as `docker compose config` prints it."""
        out: dict[str, Any] = {"name": self.name,
                               "services": {k: dict(sorted(v.items()))
                                            for k, v in self.services.items()}}
        if self.networks:
            out["networks"] = self.networks
        if self.volumes:
            out["volumes"] = self.volumes
        if self.secrets:
            out["secrets"] = self.secrets
        if self.configs:
            out["configs"] = self.configs
        return out

    def service(self, name: str) -> dict[str, Any]:
        if name in self.services:
            return self.services[name]
        if name in self.disabled:
            raise InvalidArgument(f"service {name!r} is not enabled by the active profiles")
        raise NotFound(f"no such service: {name}")

    def image(self, name: str) -> str:
        """The image service NAME runs: its `image:`, else docker compose v2's default for a
        built one, PROJECT-SERVICE (tag latest)."""
        svc = self.service(name)
        return svc.get("image") or f"{self.name}-{name}"

    def config_hash(self, name: str) -> str:
        """docker compose's config hash: the service's model without what does not make a
        container different (replicas, dependencies, profiles, pull policy)."""
        svc = {k: v for k, v in self.service(name).items()
               if k not in ("depends_on", "profiles", "scale", "pull_policy", "build")}
        return hashlib.sha256(json.dumps(svc, sort_keys=True).encode()).hexdigest()

    def order(self, names: Iterable[str] | None = None, with_deps: bool = True) -> list[str]:
        """NAMES (default all) and, WITH_DEPS, what they depend on, dependencies first."""
        wanted = list(names) if names else sorted(self.services)
        for n in wanted:
            self.service(n)
        out: list[str] = []
        visiting: set[str] = set()

        def visit(n: str) -> None:
            if n in out:
                return
            if n in visiting:
                raise ComposeFileError(f"dependency cycle detected involving service {n}")
            visiting.add(n)
            for dep in sorted(self.services[n].get("depends_on") or {}):
                if dep in self.services and (with_deps or dep in wanted):
                    visit(dep)
            visiting.discard(n)
            out.append(n)

        for n in wanted:
            visit(n)
        return out if with_deps else [n for n in out if n in wanted]


# -- finding and reading -----------------------------------------------------------------------
def find_files(cwd: str) -> list[str]:
    """docker compose's default file: the first of FILE_NAMES in CWD, else in the nearest
    parent directory that has one."""
    d = os.path.abspath(cwd)
    while True:
        for name in FILE_NAMES:
            path = os.path.join(d, name)
            if os.path.isfile(path):
                return [path]
        parent = os.path.dirname(d)
        if parent == d:
            raise ComposeFileNotFound("no configuration file provided: not found")
        d = parent


def normalize_project_name(name: str) -> str:
    """docker compose's rule for a name taken from a directory: lower case, only
    [a-z0-9_-], starting with a letter or digit."""
    name = re.sub(r"[^a-z0-9_-]", "", name.lower())
    return name.lstrip("_-")


class _Reset:
    """A value tagged `!reset` in a compose file: the attribute is dropped."""


class _Override:
    """A value tagged `!override`: it replaces the previous files' value, unmerged."""

    def __init__(self, value: Any):
        self.value = value


def _loader() -> Any:
    """yaml's safe loader, plus compose's merge tags !reset and !override."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def override(loader: Any, node: Any) -> _Override:
        if isinstance(node, yaml.MappingNode):
            return _Override(loader.construct_mapping(node, deep=True))
        if isinstance(node, yaml.SequenceNode):
            return _Override(loader.construct_sequence(node, deep=True))
        return _Override(loader.construct_scalar(node))

    Loader.add_constructor("!reset", lambda loader, node: _Reset())
    Loader.add_constructor("!override", override)
    return Loader


def _merge_tags(raw: dict[str, Any], path: str) -> dict[str, dict[str, str]]:
    """Take !reset and !override off RAW's service attributes (dropping a reset one,
    unwrapping an overriding one); {service: {attribute: "reset"|"override"}}. Anywhere
    else they are refused."""
    tags: dict[str, dict[str, str]] = {}
    services = raw.get("services")
    for name, svc in (services.items() if isinstance(services, dict) else ()):
        for attr, value in list(svc.items()) if isinstance(svc, dict) else ():
            if isinstance(value, _Reset):
                del svc[attr]
                tags.setdefault(str(name), {})[str(attr)] = "reset"
            elif isinstance(value, _Override):
                svc[attr] = value.value
                tags.setdefault(str(name), {})[str(attr)] = "override"

    def refuse(value: Any, where: str) -> None:
        if isinstance(value, (_Reset, _Override)):
            tag = "!reset" if isinstance(value, _Reset) else "!override"
            raise ComposeFileError(f"{os.path.basename(path)}: {where}: {tag} is supported "
                                   "on a service's attributes (services.NAME.KEY) only")
        if isinstance(value, dict):
            for k, v in value.items():
                refuse(v, f"{where}.{k}" if where else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                refuse(v, f"{where}[{i}]")

    refuse(raw, "")
    return tags


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path) as f:
            data = yaml.load(f, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise ComposeFileNotFound(f"open {path}: no such file or directory") from None
    except OSError as e:
        raise ComposeFileError(f"open {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ComposeFileError(f"yaml: {os.path.basename(path)}:{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ComposeFileError(f"{path}: the top level must be a mapping (services:, ...)")
    return data


def load(files: list[str], *, project_name: str = "", env_files: list[str] | None = None,
         environ: Mapping[str, str] | None = None, profiles: Iterable[str] = (),
         cwd: str | None = None) -> Project:
    """The project of compose FILES (none: the default file of CWD and its parents).
    Variables come from ENVIRON (default os.environ), over the project dir's .env or
    ENV_FILES; the project's name from PROJECT_NAME, COMPOSE_PROJECT_NAME, the top-level
    `name:`, or the project dir's name."""
    cwd = os.path.abspath(cwd or os.getcwd())
    environ = dict(os.environ if environ is None else environ)
    if not files and environ.get("COMPOSE_FILE"):
        files = environ["COMPOSE_FILE"].split(os.pathsep)
    paths = [os.path.join(cwd, f) for f in files] if files else find_files(cwd)
    working_dir = os.path.dirname(paths[0])
    env: dict[str, str] = {}
    for path in env_files if env_files else [os.path.join(working_dir, ".env")]:
        path = os.path.join(cwd, path)
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            if env_files:
                raise ComposeFileNotFound(f"couldn't find env file: {path}") from None
            continue
        except OSError as e:
            raise ComposeFileError(f"open {path}: {e.strerror}") from None
        env.update({k: v for k, v in parse_env_file(text, path, environ).items()
                    if v is not None})
    env.update(environ)  # the shell wins over .env

    unset: list[str] = []
    merged, name_key = _load_files(paths, working_dir, env, environ, unset, [])
    name = project_name or environ.get("COMPOSE_PROJECT_NAME") or name_key
    if name:
        if not _PROJECT_NAME.fullmatch(name):
            raise ComposeFileError(f"invalid project name {name!r}: it must contain only "
                                   "lowercase letters, digits, dashes and underscores, and "
                                   "start with a letter or a digit")
    else:
        name = normalize_project_name(os.path.basename(working_dir))
        if not name:
            raise ComposeFileError(f"cannot take a project name from {working_dir!r}: "
                                   "give one with -p")
    project = Project(name=name, working_dir=working_dir, config_files=paths, services={},
                      environment=env)
    project.warnings += [f'The "{v}" variable is not set. Defaulting to a blank string.'
                         for v in unset]
    if not merged["services"]:
        raise ComposeFileError("no service selected: the compose files define no services")
    project.networks = {k: _normalize_network(name, k, v)
                        for k, v in merged["networks"].items()}
    project.volumes = {k: _normalize_volume(name, k, v) for k, v in merged["volumes"].items()}
    project.secrets = {k: _normalize_file_object(name, "secrets", k, v)
                       for k, v in merged["secrets"].items()}
    project.configs = {k: _normalize_file_object(name, "configs", k, v)
                       for k, v in merged["configs"].items()}
    active = set(profiles) | {p for p in environ.get("COMPOSE_PROFILES", "").split(",") if p}
    for sname, svc in sorted(merged["services"].items()):
        _finish_service(project, sname, svc, env)
        on = not svc.get("profiles") or "*" in active or bool(active & set(svc["profiles"]))
        (project.services if on else project.disabled)[sname] = svc
    for sname, svc in project.services.items():
        _check_references(project, sname, svc)
    if any(_uses_default(s) for s in project.services.values()) and \
            "default" not in project.networks:
        project.networks["default"] = {"name": f"{name}_default", "driver": "bridge",
                                       "external": False}
    project.order()  # a dependency cycle is an error now
    return project


def _load_files(paths: list[str], working_dir: str, env: Mapping[str, str],
                environ: Mapping[str, str], unset: list[str], including: list[str]
                ) -> tuple[dict[str, dict[str, Any]], str]:
    """The resources of compose files PATHS merged in order (services normalised, the other
    sections as written but for their paths) and the last top-level `name:`. Relative paths
    resolve against WORKING_DIR; INCLUDING: the files whose `include:` led here."""
    merged: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    name_key = ""
    for path in paths:
        raw = _read_yaml(path)
        tags = _merge_tags(raw, path)
        for key in raw:
            if key not in TOP_KEYS and not str(key).startswith("x-"):
                raise ComposeFileError(f"{os.path.basename(path)}: unknown top-level key "
                                       f"{key!r} (pallet compose reads services, networks, "
                                       "volumes, secrets, configs, include and name)")
        data = interpolate({k: v for k, v in raw.items() if not str(k).startswith("x-")},
                           env, "", unset)
        if data.get("name"):
            name_key = str(data["name"])
        model = _file_model(path, data, working_dir, env, environ, unset, including, tags)
        for section in SECTIONS:
            for key, item in model[section].items():
                prev = merged[section].get(key)
                if section == "services":
                    # !reset drops the previous files' value, !override takes this one whole
                    marks = tags.get(key, {})
                    prev = {k: v for k, v in (prev or {}).items() if k not in marks}
                    merged[section][key] = _merge_service(prev, item) if prev else item
                else:
                    merged[section][key] = {**(prev or {}), **item}
    return merged, name_key


def _sections(data: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """DATA's resource sections, each a mapping of mappings (an empty entry is {})."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for section in SECTIONS:
        value = data.get(section) or {}
        if not isinstance(value, dict):
            raise ComposeFileError(f"{section} must be a mapping")
        items = {}
        for key, item in value.items():
            item = item if item is not None else {}
            if not isinstance(item, dict):
                raise ComposeFileError(f"{section}.{key} must be a mapping")
            items[str(key)] = item
        out[section] = items
    return out


def _file_model(path: str, data: Mapping[str, Any], working_dir: str, env: Mapping[str, str],
                environ: Mapping[str, str], unset: list[str], including: list[str],
                tags: Mapping[str, Mapping[str, str]] | None = None
                ) -> dict[str, dict[str, Any]]:
    """One interpolated file's resources: its services normalised with their `extends`
    applied, secrets' and configs' files made absolute, then what its `include:` brings.
    TAGS: the file's merge tags (_merge_tags), which `extends` honours too."""
    model = _sections(data)
    raw_services = model["services"]
    model["services"] = {
        name: _extended_service(name, raw_services, path, working_dir, working_dir, env,
                                environ, unset, [], tags or {})
        for name in raw_services}
    for section in ("secrets", "configs"):
        for key, item in model[section].items():
            if "file" in item:
                file = _str(item["file"], f"{section}.{key}.file")
                model[section][key] = {**item, "file": _host_path(file, working_dir, environ)}
    if data.get("include") is not None:
        _include(model, data["include"], path, working_dir, env, environ, unset, including)
    return model


def _local(path: str, where: str) -> str:
    """PATH, refused if it names a remote file (docker compose reads git and OCI ones)."""
    if "://" in path or path.startswith("git@"):
        raise _err(where, f"remote compose files are not supported by pallet compose: "
                          f"{_shown(path)}")
    return path


def _host_path(path: str, working_dir: str, environ: Mapping[str, str]) -> str:
    if path.startswith("~"):
        path = os.path.join(environ.get("HOME") or os.path.expanduser("~"),
                            path[1:].lstrip("/"))
    return os.path.normpath(os.path.join(working_dir, path))


# -- extends ----------------------------------------------------------------------------------
def _extended_service(name: str, services: Mapping[str, dict[str, Any]], path: str,
                      working_dir: str, files_dir: str, env: Mapping[str, str],
                      environ: Mapping[str, str], unset: list[str],
                      chain: list[tuple[str, str]],
                      tags: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """Service NAME of SERVICES (read from PATH) normalised, its `extends:` applied as docker
    compose does: the base service (of this file, or of `file:`, whose relative paths resolve
    against that file's directory) with NAME's own keys merged over it by the override rules;
    an attribute NAME tags `!reset` or `!override` (TAGS: PATH's) drops the base's value.
    FILES_DIR resolves a relative `extends.file`; CHAIN: the services extended so far."""
    raw = services[name] or {}
    if not isinstance(raw, dict):
        raise ComposeFileError(f"services.{name} must be a mapping")
    own = _normalize_service(name, {k: v for k, v in raw.items() if k != "extends"},
                             working_dir, environ)
    ext = raw.get("extends")
    if ext is None:
        return own
    where = f"services.{name}.extends"
    if isinstance(ext, str):
        ref, file = ext, None
    elif isinstance(ext, dict):
        unknown = set(ext) - {"service", "file"}
        if unknown:
            raise _err(where, f"unknown key {sorted(unknown)[0]!r}")
        ref, file = ext.get("service"), ext.get("file")
        if not isinstance(ref, str) or not ref:
            raise _err(f"{where}.service", "is required")
        if file is not None:
            file = _local(_str(file, f"{where}.file"), f"{where}.file")
    else:
        raise _err(where, f"must be a service name or a mapping, not {_shown(ext)}")
    chain = [*chain, (path, name)]
    if file:
        base_path = _host_path(file, files_dir, environ)
        other = _read_yaml(base_path)
        section = other.get("services") or {}
        if not isinstance(section, dict):
            raise ComposeFileError(f"cannot extend service {_shown(name)} in {path}: services "
                                   "must be a mapping")
        base_services = interpolate(section, env, "services", unset)
        if ref not in base_services:
            raise ComposeFileError(f"cannot extend service {_shown(name)} in {path}: service "
                                   f"{_shown(ref)} not found in {file}")
        base_dir = os.path.dirname(base_path)
        base_files_dir = base_dir
    else:
        if ref not in services:
            raise ComposeFileError(f"cannot extend service {_shown(name)} in {path}: service "
                                   f"{_shown(ref)} not found")
        base_services, base_path, base_dir, base_files_dir = services, path, working_dir, \
            files_dir
    if (base_path, ref) in chain:
        steps = [f"{chain[0][1]} in {chain[0][0]}"] + \
            [f"extends {s} in {f}" for f, s in [*chain[1:], (base_path, ref)]]
        raise ComposeFileError("Circular reference: " + ", ".join(steps))
    base = _extended_service(ref, base_services, base_path, base_dir, base_files_dir, env,
                             environ, unset, chain, {} if file else tags)
    if file and base.get("build") is not None:
        # The base's own default context: its file's directory, not the project's.
        base["build"].setdefault("context", base_dir)
    marks = tags.get(name, {})
    return _merge_service({k: copy.deepcopy(v) for k, v in base.items() if k not in marks}, own)


# -- include ----------------------------------------------------------------------------------
def _include(model: dict[str, dict[str, Any]], value: Any, path: str, working_dir: str,
             env: Mapping[str, str], environ: Mapping[str, str], unset: list[str],
             including: list[str]) -> None:
    """Load each project of `include:` VALUE (in PATH) on its own (its project directory, its
    .env under this project's variables) and add its resources to MODEL; a resource MODEL
    already has differently is docker compose's conflict error."""
    if not isinstance(value, list):
        raise _err("include", f"must be a list, not {_shown(value)}")
    for i, entry in enumerate(value):
        where = f"include[{i}]"
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict):
            raise _err(where, "must be a path or a mapping")
        unknown = set(entry) - {"path", "project_directory", "env_file"}
        if unknown:
            raise _err(where, f"unknown key {sorted(unknown)[0]!r}")
        if not entry.get("path"):
            raise _err(f"{where}.path", "is required")
        files = [_host_path(_local(f, f"{where}.path"), working_dir, environ)
                 for f in _strings(entry["path"], f"{where}.path")]
        chain = [*including, path]
        if files[0] in chain:
            raise ComposeFileError("include cycle detected: " + chain[0] + "".join(
                f" include {f}" for f in [*chain[1:], files[0]]))
        pdir = entry.get("project_directory")
        sub_dir = _host_path(_str(pdir, f"{where}.project_directory"), working_dir, environ) \
            if pdir else os.path.dirname(files[0])
        env_files = [_host_path(f, working_dir, environ)
                     for f in _strings(entry["env_file"], f"{where}.env_file")] \
            if entry.get("env_file") else []
        sub_env: dict[str, str] = {}
        for ef in env_files or [os.path.join(sub_dir, ".env")]:
            try:
                with open(ef) as f:
                    text = f.read()
            except FileNotFoundError:
                if env_files:
                    raise ComposeFileNotFound(f"{where}.env_file: couldn't find env file: "
                                              f"{ef}") from None
                continue
            except OSError as e:
                raise _err(f"{where}.env_file", f"open {ef}: {e.strerror}") from None
            sub_env.update({k: v for k, v in parse_env_file(text, ef, env).items()
                            if v is not None})
        sub_env.update(env)  # the including project's variables win
        sub, _ = _load_files(files, sub_dir, sub_env, environ, unset, chain)
        for svc in sub["services"].values():
            if svc.get("build") is not None:
                svc["build"].setdefault("context", sub_dir)
        for section in SECTIONS:
            for key, item in sub[section].items():
                if key in model[section] and model[section][key] != item:
                    raise ComposeFileError(f"{section}.{key} conflicts with imported resource")
                model[section][key] = item


# -- services ---------------------------------------------------------------------------------
def _err(path: str, message: str) -> ComposeFileError:
    return ComposeFileError(f"{path}: {message}")


def _str(value: Any, path: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise _err(path, f"must be a string, not {_shown(value)}")
    return str(value)


def _shown(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else f'"{value}"'


def _bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise _err(path, f"must be a boolean, not {_shown(value)}")


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool):
        raise _err(path, f"must be an integer, not {_shown(value)}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _err(path, f"must be an integer, not {_shown(value)}") from None


def _strings(value: Any, path: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise _err(path, f"must be a list of strings, not {_shown(value)}")
    return [_str(v, f"{path}[{i}]") for i, v in enumerate(value)]


def _command(value: Any, path: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as e:
            raise _err(path, f"cannot split {_shown(value)}: {e}") from None
    return _strings(value, path)


def _mapping(value: Any, path: str, sep: str = "=", allow_none: bool = True
             ) -> dict[str, str | None]:
    """A list of `K=V` (a bare `K`: None) or a mapping, as {K: str or None}."""
    out: dict[str, str | None] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            if v is None and allow_none:
                out[str(k)] = None
            elif isinstance(v, (dict, list)) or v is None:
                raise _err(f"{path}.{k}", f"must be a string, a number or a boolean, not "
                                          f"{_shown(v)}")
            else:
                out[str(k)] = str(v).lower() if isinstance(v, bool) else str(v)
        return out
    if isinstance(value, list):
        for i, item in enumerate(value):
            text = _str(item, f"{path}[{i}]")
            k, s, v = text.partition(sep)
            if not k:
                raise _err(f"{path}[{i}]", f"invalid entry {_shown(text)}: use KEY{sep}VALUE")
            out[k] = v if s else None
        return out
    raise _err(path, f"must be a mapping or a list, not {_shown(value)}")


def _size(value: Any, path: str) -> int:
    from pallet.units import ram_in_bytes

    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return ram_in_bytes(_str(value, path))
    except ValueError:
        raise _err(path, f"invalid size {_shown(value)}: use a number with an optional unit "
                         "b, k, m or g") from None


def _cpus(value: Any, path: str) -> float:
    try:
        n = float(value)
    except (TypeError, ValueError):
        n = -1.0
    if isinstance(value, bool) or n < 0:
        raise _err(path, f"invalid number of CPUs {_shown(value)}")
    return n


def _duration(value: Any, path: str) -> float:
    from pallet.units import duration_seconds

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return duration_seconds(_str(value, path))
    except ValueError:
        raise _err(path, f"invalid duration {_shown(value)}: use a Go duration such as 10s "
                         "or 1m30s") from None


def _logging(value: Any, path: str) -> dict[str, Any]:
    """compose's logging: {driver, options} as `run --log-driver/--log-opt` (the engine
    checks the driver)."""
    if not isinstance(value, dict):
        raise _err(path, "must be a mapping")
    for key in value:
        if key not in ("driver", "options"):
            raise _err(f"{path}.{key}", "additional property not allowed: use driver or "
                                        "options")
    out: dict[str, Any] = {}
    if value.get("driver") is not None:
        if not isinstance(value["driver"], str):
            raise _err(f"{path}.driver", "must be a string")
        out["driver"] = value["driver"]
    if value.get("options"):
        out["options"] = {k: v or "" for k, v in
                          _mapping(value["options"], f"{path}.options").items()}
    if out.get("driver") != "none":  # docker checks no option of the none driver
        from pallet.units import ram_in_bytes

        for key, val in (out.get("options") or {}).items():
            try:
                if key == "max-size":
                    ram_in_bytes(val)
                elif key == "max-file":
                    int(val)
                else:
                    raise _err(f"{path}.options.{key}", "unknown log opt: use max-size or "
                                                        "max-file")
            except ValueError:
                raise _err(f"{path}.options.{key}", f"invalid value {_shown(val)}") from None
    return out


def _healthcheck(value: Any, path: str) -> dict[str, Any]:
    """compose's healthcheck: as docker's Config.Healthcheck (durations in ns; a string test
    is CMD-SHELL; disable: true is NONE)."""
    if not isinstance(value, dict):
        raise _err(path, "must be a mapping")
    for key in value:
        if key not in HEALTHCHECK_KEYS:
            raise _err(f"{path}.{key}", "additional property not allowed: use one of "
                                        + ", ".join(HEALTHCHECK_KEYS))
    out: dict[str, Any] = {}
    if value.get("disable"):
        if value.get("test") not in (None, [], ["NONE"]):
            raise _err(path, "test and disable can't be set at the same time")
        return {"Test": ["NONE"]}
    test = value.get("test")
    if isinstance(test, str):
        out["Test"] = ["CMD-SHELL", test]
    elif isinstance(test, list) and all(isinstance(t, str) for t in test):
        if test and test[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise _err(f"{path}.test", f"invalid test {_shown(test)}: a list starts with "
                                       "CMD, CMD-SHELL or NONE")
        out["Test"] = list(test)
    elif test is not None:
        raise _err(f"{path}.test", "must be a string or a list of strings")
    for key, name in (("interval", "Interval"), ("timeout", "Timeout"),
                      ("start_period", "StartPeriod"), ("start_interval", "StartInterval")):
        if value.get(key) is not None:
            out[name] = round(_duration(value[key], f"{path}.{key}") * 1e9)
    if value.get("retries") is not None:
        out["Retries"] = _int(value["retries"], f"{path}.retries")
    return out


def _normalize_service(name: str, raw: dict[str, Any], working_dir: str,
                       environ: Mapping[str, str]) -> dict[str, Any]:
    """One file's view of a service, each key in its long form (partial: an override file
    may give a few keys only)."""
    base = f"services.{name}"
    if not _SERVICE_NAME.fullmatch(name):
        raise ComposeFileError(f"{base}: invalid service name: use [a-zA-Z0-9._-]")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{base}.{key}"
        if str(key).startswith("x-"):
            continue
        if key not in SERVICE_KEYS:
            raise _err(base, f"unknown key {key!r}")
        if key in ("command", "entrypoint"):
            out[key] = _command(value, path)
        elif key in ("image", "restart", "working_dir", "user", "hostname", "stop_signal",
                     "container_name", "network_mode", "pull_policy", "platform", "runtime",
                     "domainname"):
            out[key] = _str(value, path)
        elif key in ("privileged", "read_only", "init", "tty", "stdin_open"):
            out[key] = _bool(value, path)
        elif key in ("environment", "labels"):
            out[key] = _mapping(value, path, allow_none=key == "environment")
            if key == "labels":
                out[key] = {k: v or "" for k, v in out[key].items()}
        elif key == "sysctls":
            out[key] = {k: v or "" for k, v in _mapping(value, path).items()}
        elif key == "extra_hosts":
            hosts = _mapping(value, path, sep=":") if isinstance(value, list) \
                and all(isinstance(v, str) and "=" not in v for v in value) \
                else _mapping(value, path)
            for h, ip in hosts.items():
                if not ip:
                    raise _err(path, f"invalid extra host {h!r}: use HOST:IP")
            out[key] = [f"{h}:{ip}" for h, ip in hosts.items()]
        elif key == "env_file":
            out[key] = _env_files(value, path, working_dir)
        elif key in ("cap_add", "cap_drop", "tmpfs", "profiles", "security_opt", "group_add",
                     "dns", "dns_search", "dns_opt"):
            out[key] = _strings(value, path)
        elif key == "devices":
            out[key] = _devices(value, path)
        elif key in ("secrets", "configs"):
            out[key] = _file_refs(value, path, key)
        elif key == "ports":
            if not isinstance(value, list):
                raise _err(path, "must be a list")
            out[key] = [p for i, v in enumerate(value) for p in _ports(v, f"{path}[{i}]")]
        elif key == "expose":
            out[key] = [str(v) for v in (value if isinstance(value, list) else [value])]
        elif key == "volumes":
            if not isinstance(value, list):
                raise _err(path, "must be a list")
            out[key] = [_volume(v, f"{path}[{i}]", working_dir, environ)
                        for i, v in enumerate(value)]
        elif key == "networks":
            out[key] = _service_networks(value, path)
        elif key == "depends_on":
            out[key] = _depends_on(value, path)
        elif key in ("mem_limit", "memswap_limit", "shm_size"):
            out[key] = -1 if key == "memswap_limit" and value in (-1, "-1") \
                else _size(value, path)
        elif key == "cpus":
            out[key] = _cpus(value, path)
        elif key in ("pids_limit", "scale"):
            out[key] = _int(value, path)
        elif key == "stop_grace_period":
            out[key] = _duration(value, path)
        elif key == "ulimits":
            out[key] = _ulimits(value, path)
        elif key == "deploy":
            out[key] = _deploy(value, path)
        elif key == "build":
            out[key] = _build(value, path, working_dir)
        elif key == "healthcheck":
            out[key] = _healthcheck(value, path)
        elif key == "logging":
            out[key] = _logging(value, path)
        else:
            out[key] = value
    if "restart" in out:
        _restart(out["restart"], f"{base}.restart")
    return out


def _build(value: Any, path: str, working_dir: str) -> dict[str, Any]:
    """One file's build section in its long form: `build: DIR` is `{context: DIR}`, the
    context made absolute, args and labels maps (defaults come once files are merged)."""
    raw = {"context": _str(value, path)} if not isinstance(value, dict) else value
    out: dict[str, Any] = {}
    for key, v in raw.items():
        p = f"{path}.{key}"
        if key not in BUILD_KEYS:
            raise _err(path, f"{key!r} is not supported by pallet compose (pallet's builder "
                             f"reads {', '.join(sorted(BUILD_KEYS))})")
        if key in ("no_cache", "pull"):
            out[key] = _bool(v, p)
        elif key == "args":
            out[key] = _mapping(v, p)
        elif key == "labels":
            out[key] = {k: x or "" for k, x in _mapping(v, p).items()}
        elif key == "tags":
            out[key] = _strings(v, p)
        elif key == "secrets":
            out[key] = _file_refs(v, p, "secrets")
        else:
            out[key] = _str(v, p)
    context = out.get("context")
    if context is not None and ("://" in context or context.startswith("git@")):
        raise _err(f"{path}.context", f"remote build contexts are not supported by pallet "
                                      f"compose: {_shown(context)}")
    if context is not None:
        out["context"] = os.path.normpath(os.path.join(working_dir,
                                                       os.path.expanduser(context)))
    network = out.get("network")
    if network is not None and network not in ("default", "none", "host"):
        raise _err(f"{path}.network", f"invalid network {_shown(network)}: pallet builds "
                                      "with default, none or host")
    return out


def _env_files(value: Any, path: str, working_dir: str) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        if isinstance(item, dict):
            file, required = _str(item.get("path"), f"{p}.path"), _bool(
                item.get("required", True), f"{p}.required")
        else:
            file, required = _str(item, p), True
        out.append({"path": os.path.normpath(os.path.join(working_dir,
                                                          os.path.expanduser(file))),
                    "required": required})
    return out


def _port_number(text: str, path: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise _err(path, f"invalid port {_shown(text)}")
    return int(text)


def _port_range(text: str, path: str) -> list[int]:
    lo, sep, hi = text.partition("-")
    first = _port_number(lo, path)
    last = _port_number(hi, path) if sep else first
    if last < first:
        raise _err(path, f"invalid port range {_shown(text)}")
    return list(range(first, last + 1))


def _ports(value: Any, path: str) -> list[dict[str, Any]]:
    """A short (`[IP:][HOST[-HOST]:]CTR[-CTR][/PROTO]`, or a number) or long port entry
    as long entries, one per port of a range."""
    if isinstance(value, dict):
        unknown = set(value) - {"target", "published", "host_ip", "protocol", "mode", "name",
                                "app_protocol"}
        if unknown:
            raise _err(path, f"unknown key {sorted(unknown)[0]!r}")
        target = _port_number(str(value.get("target", "")), f"{path}.target")
        published = str(value.get("published") or "")
        hosts = _port_range(published, f"{path}.published") if published else [0]
        if len(hosts) != 1:
            raise _err(f"{path}.published", "a range needs the short syntax")
        proto = str(value.get("protocol") or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise _err(f"{path}.protocol", f"invalid protocol {_shown(proto)}")
        return [{"mode": "ingress", "target": target, "published": published,
                 "host_ip": str(value.get("host_ip") or ""), "protocol": proto}]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _err(path, f"invalid port {_shown(value)}")
    from pallet.engine.network import split_publish

    try:
        host_ip, host, ctr, proto = split_publish(str(value))
    except ValueError:
        raise _err(path, f"invalid port {_shown(value)}") from None
    if proto not in ("tcp", "udp", "sctp"):
        raise _err(path, f"invalid protocol {_shown(proto)}")
    targets = _port_range(ctr, path)
    hosts = _port_range(host, path) if host else []
    if hosts and len(hosts) != len(targets):
        raise _err(path, f"invalid port {_shown(value)}: the ranges differ in size")
    return [{"mode": "ingress", "target": t, "published": str(hosts[i]) if hosts else "",
             "host_ip": host_ip, "protocol": proto} for i, t in enumerate(targets)]


def _volume(value: Any, path: str, working_dir: str, environ: Mapping[str, str]
            ) -> dict[str, Any]:
    """A short (`[SRC:]DST[:MODE]`) or long volume entry as a long one; relative and `~`
    bind sources resolved against the project dir and the home dir."""
    if isinstance(value, dict):
        vtype = str(value.get("type") or "volume")
        if vtype not in ("volume", "bind", "tmpfs"):
            raise _err(f"{path}.type", f"unsupported mount type {_shown(vtype)}: use volume, "
                                       "bind or tmpfs")
        target = _str(value.get("target"), f"{path}.target") if value.get("target") else ""
        out: dict[str, Any] = {"type": vtype, "target": target}
        if value.get("source"):
            out["source"] = _str(value["source"], f"{path}.source")
        if value.get("read_only"):
            out["read_only"] = _bool(value["read_only"], f"{path}.read_only")
        for sub in ("volume", "bind", "tmpfs"):
            if isinstance(value.get(sub), dict):
                out[sub] = dict(value[sub])
    else:
        text = _str(value, path)
        parts = text.split(":")
        mode = ""
        if len(parts) == 3 or (len(parts) == 2 and not parts[1].startswith("/")):
            mode = parts.pop()
        src, target = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
        if len(parts) > 2 or not target:
            raise _err(path, f"invalid volume {_shown(text)}: use [SOURCE:]TARGET[:MODE]")
        bind = src.startswith(("/", ".", "~"))
        out = {"type": "bind" if bind else "volume", "source": src, "target": target}
        if not src:
            del out["source"]
        for opt in (o for o in mode.split(",") if o):
            if opt == "ro":
                out["read_only"] = True
            elif opt == "rw":
                pass
            elif opt == "nocopy":
                out["volume"] = {"nocopy": True}
            elif opt in ("z", "Z", "shared", "rshared", "slave", "rslave", "private",
                         "rprivate", "cached", "delegated", "consistent"):
                if opt in ("shared", "rshared", "slave", "rslave", "private", "rprivate"):
                    out["bind"] = {"propagation": opt}
            else:
                raise _err(path, f"invalid volume {_shown(text)}: unknown mode {opt!r}")
        if bind:
            out["bind"] = {"create_host_path": True, **out.get("bind", {})}
    if not out["target"].startswith("/"):
        raise _err(path, f"invalid volume target {_shown(out['target'])}: it must be an "
                         "absolute path")
    if out["type"] == "bind":
        src = out.get("source", "")
        if not src:
            raise _err(path, "a bind mount needs a source")
        if src.startswith("~"):
            src = os.path.join(environ.get("HOME") or os.path.expanduser("~"),
                               src[1:].lstrip("/"))
        out["source"] = os.path.normpath(os.path.join(working_dir, src))
    elif out["type"] == "tmpfs" and out.get("source"):
        raise _err(path, "a tmpfs mount takes no source")
    return out


def _devices(value: Any, path: str) -> list[dict[str, str]]:
    """`HOST[:CONTAINER][:PERMS]` entries (or the long {source, target, permissions}) as
    long entries, docker's default container path and permissions filled in."""
    if not isinstance(value, list):
        raise _err(path, "must be a list")
    out = []
    for i, item in enumerate(value):
        p = f"{path}[{i}]"
        if isinstance(item, dict):
            unknown = set(item) - {"source", "target", "permissions"}
            if unknown:
                raise _err(p, f"unknown key {sorted(unknown)[0]!r}")
            src = _str(item.get("source"), f"{p}.source")
            ctr = _str(item.get("target") or src, f"{p}.target")
            perms = _str(item.get("permissions") or "rwm", f"{p}.permissions")
        else:
            text = _str(item, p)
            parts = text.split(":")
            if len(parts) > 3 or not parts[0]:
                raise _err(p, f"invalid device {_shown(text)}: use HOST[:CONTAINER][:PERMS]")
            src, ctr, perms = parts[0], parts[0], "rwm"
            if len(parts) == 2 and parts[1] and set(parts[1]) <= set("rwm"):
                perms = parts[1]
            elif len(parts) >= 2:
                ctr = parts[1]
                perms = parts[2] if len(parts) == 3 else perms
        if not src.startswith("/") or not ctr.startswith("/"):
            raise _err(p, f"invalid device {_shown(src)}: paths must be absolute")
        if not perms or not set(perms) <= set("rwm"):
            raise _err(p, f"invalid device permissions {_shown(perms)}: use r, w and m")
        out.append({"source": src, "target": ctr, "permissions": perms})
    return out


def _file_refs(value: Any, path: str, kind: str) -> list[dict[str, Any]]:
    """A service's secrets or configs: a name (short syntax) or {source, target, uid, gid,
    mode}, kept as written but for the types (uid, gid strings; mode a number, "0440" read
    as octal), a later entry for the same target replacing an earlier one."""
    if not isinstance(value, list):
        raise _err(path, "must be a list")
    out: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(value):
        p = f"{path}[{i}]"
        if isinstance(item, str):
            entry: dict[str, Any] = {"source": item}
        elif isinstance(item, dict):
            unknown = set(item) - set(FILE_REF_KEYS)
            if unknown:
                raise _err(p, f"unknown key {sorted(unknown)[0]!r}: use "
                              + ", ".join(FILE_REF_KEYS))
            if not item.get("source"):
                raise _err(f"{p}.source", "is required")
            entry = {"source": _str(item["source"], f"{p}.source")}
            if item.get("target"):
                entry["target"] = _str(item["target"], f"{p}.target")
            for k in ("uid", "gid"):
                if item.get(k) is not None:
                    v = _str(item[k], f"{p}.{k}")
                    if not v.isdigit():
                        raise _err(f"{p}.{k}", f"invalid {k} {_shown(v)}: use a number")
                    entry[k] = v
            if item.get("mode") is not None:
                entry["mode"] = _file_mode(item["mode"], f"{p}.mode")
        else:
            raise _err(p, f"must be a {kind[:-1]} name or a mapping, not {_shown(item)}")
        out[file_ref_target(kind, entry)] = entry
    return list(out.values())


def _file_mode(value: Any, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str) and re.fullmatch(r"0?[0-7]{1,4}", value):
        mode = int(value, 8)
    else:
        raise _err(path, f"invalid mode {_shown(value)}: use an octal number such as 0440")
    if not 0 <= mode <= 0o7777:
        raise _err(path, f"invalid mode {oct(mode)}")
    return mode


def file_ref_target(kind: str, ref: Mapping[str, Any]) -> str:
    """Where a service's secret (kind "secrets") or config ("configs") REF is mounted:
    its target, under /run/secrets/ (configs: /) unless absolute; by default the source's
    name there."""
    base = SECRETS_DIR if kind == "secrets" else CONFIGS_DIR
    target = ref.get("target") or ref["source"]
    return target if target.startswith("/") else base + target


def _service_networks(value: Any, path: str) -> dict[str, dict[str, Any] | None]:
    if isinstance(value, list):
        return {_str(v, f"{path}[{i}]"): None for i, v in enumerate(value)}
    if not isinstance(value, dict):
        raise _err(path, "must be a list or a mapping")
    out: dict[str, dict[str, Any] | None] = {}
    for net, conf in value.items():
        if conf is None:
            out[str(net)] = None
            continue
        if not isinstance(conf, dict):
            raise _err(f"{path}.{net}", "must be a mapping")
        unknown = set(conf) - {"aliases", "ipv4_address", "ipv6_address", "priority"}
        if unknown:
            raise _err(f"{path}.{net}", f"unknown key {sorted(unknown)[0]!r}")
        entry: dict[str, Any] = {}
        if conf.get("aliases"):
            entry["aliases"] = _strings(conf["aliases"], f"{path}.{net}.aliases")
        for k in ("ipv4_address", "ipv6_address"):
            if conf.get(k):
                entry[k] = _str(conf[k], f"{path}.{net}.{k}")
        out[str(net)] = entry or None
    return out


def _depends_on(value: Any, path: str) -> dict[str, dict[str, Any]]:
    if isinstance(value, list):
        return {_str(v, f"{path}[{i}]"): {"condition": "service_started", "required": True}
                for i, v in enumerate(value)}
    if not isinstance(value, dict):
        raise _err(path, "must be a list or a mapping")
    out = {}
    for dep, conf in value.items():
        conf = conf or {}
        cond = conf.get("condition", "service_started")
        if cond not in CONDITIONS:
            raise _err(f"{path}.{dep}.condition", f"invalid condition {_shown(cond)}: use "
                                                  + ", ".join(CONDITIONS))
        out[str(dep)] = {"condition": cond,
                         "required": _bool(conf.get("required", True),
                                           f"{path}.{dep}.required")}
        if conf.get("restart") is not None:
            out[str(dep)]["restart"] = _bool(conf["restart"], f"{path}.{dep}.restart")
    return out


def _ulimits(value: Any, path: str) -> dict[str, dict[str, int]]:
    if not isinstance(value, dict):
        raise _err(path, "must be a mapping")
    out = {}
    for name, limit in value.items():
        p = f"{path}.{name}"
        if isinstance(limit, dict):
            soft, hard = _int(limit.get("soft"), f"{p}.soft"), _int(limit.get("hard"),
                                                                     f"{p}.hard")
        else:
            soft = hard = _int(limit, p)
        if soft > hard and hard >= 0:
            raise _err(p, f"soft limit {soft} is above the hard limit {hard}")
        out[str(name)] = {"soft": soft, "hard": hard}
    return out


def _deploy(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _err(path, "must be a mapping")
    out: dict[str, Any] = {}
    for key, v in value.items():
        if key == "replicas":
            out["replicas"] = _int(v, f"{path}.replicas")
        elif key == "resources":
            res = {}
            for kind, lim in (v or {}).items():
                p = f"{path}.resources.{kind}"
                if kind not in ("limits", "reservations") or not isinstance(lim, dict):
                    raise _err(p, "unsupported: use limits (memory, cpus, pids)")
                entry: dict[str, Any] = {}
                for k, x in lim.items():
                    if k == "memory":
                        entry[k] = _size(x, f"{p}.memory")
                    elif k == "cpus":
                        entry[k] = _cpus(x, f"{p}.cpus")
                    elif k == "pids":
                        entry[k] = _int(x, f"{p}.pids")
                    elif k != "devices":
                        raise _err(f"{p}.{k}", "unsupported: use memory, cpus or pids")
                res[kind] = entry
            out["resources"] = res
        elif key in ("restart_policy", "labels", "mode", "placement", "update_config",
                     "rollback_config", "endpoint_mode"):
            out[key] = v
        else:
            raise _err(f"{path}.{key}", "unknown key")
    return out


def _restart(policy: str, path: str) -> None:
    name, sep, n = policy.partition(":")
    if name not in ("no", "always", "on-failure", "unless-stopped") or \
            (sep and (name != "on-failure" or not n.isdigit())):
        raise _err(path, f"invalid restart policy {_shown(policy)}: use no, always, "
                         "unless-stopped or on-failure[:N]")


def _merge_service(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """docker compose's merge of an override file's service onto the previous files'."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if old is None:
            out[key] = value
        elif key in ("environment", "labels", "sysctls", "depends_on", "ulimits", "networks"):
            out[key] = {**old, **value}
        elif key == "build":
            out[key] = {**old, **value, **{k: {**old.get(k, {}), **value.get(k, {})}
                                          for k in ("args", "labels") if k in value}}
        elif key == "deploy":
            out[key] = {**old, **value,
                        "resources": {**old.get("resources", {}), **value.get("resources", {})}}
        elif key in ("volumes", "secrets", "configs", "devices"):
            # Sequences of mounts: unique by their target, an override's entry replacing.
            def target(v: dict[str, Any], key: str = key) -> str:
                return file_ref_target(key, v) if key in ("secrets", "configs") \
                    else v["target"]

            by_target = {target(v): v for v in old}
            by_target.update({target(v): v for v in value})
            out[key] = list(by_target.values())
        elif key == "healthcheck":
            out[key] = {**old, **value}
        elif key in ("ports", "cap_add", "cap_drop", "tmpfs", "profiles", "security_opt",
                     "group_add", "extra_hosts", "env_file", "expose", "dns", "dns_search",
                     "dns_opt"):
            out[key] = old + [v for v in value if v not in old]
        else:
            out[key] = value
    return out


def _finish_service(project: Project, name: str, svc: dict[str, Any],
                    lookup: Mapping[str, str]) -> None:
    """Whole-service rules once every file is merged: env_file folded into environment (a
    bare name takes LOOKUP's value), image required, replicas."""
    base = f"services.{name}"
    if not svc.get("image") and "build" not in svc:
        raise _err(base, "has neither an image nor a build context specified: give image: "
                         "or build:")
    build = svc.get("build")
    if build is not None:
        build.setdefault("context", project.working_dir)
        if "dockerfile" in build and "dockerfile_inline" in build:
            raise _err(f"{base}.build", "dockerfile and dockerfile_inline cannot be combined")
        if "dockerfile_inline" not in build:
            build.setdefault("dockerfile", "Dockerfile")
    if build and "args" in build:
        # A bare name takes the environment's value, and is left out when it has none.
        build["args"] = {k: v if v is not None else lookup[k]
                         for k, v in build["args"].items() if v is not None or k in lookup}
    if build is not None:  # in docker compose config's order
        svc["build"] = {k: build[k] for k in _BUILD_ORDER if k in build}
    env: dict[str, str | None] = {}
    for ef in svc.pop("env_file", []):
        try:
            with open(ef["path"]) as f:
                env.update(parse_env_file(f.read(), ef["path"], lookup))
        except FileNotFoundError:
            if ef["required"]:
                raise ComposeFileNotFound(f"{base}.env_file: env file {ef['path']} not "
                                          "found") from None
        except OSError as e:
            raise _err(f"{base}.env_file", f"open {ef['path']}: {e.strerror}") from None
    env.update(svc.get("environment") or {})
    if env:
        svc["environment"] = {k: v if v is not None else lookup.get(k) for k, v in env.items()}
    replicas = (svc.get("deploy") or {}).get("replicas")
    scale = svc.get("scale", replicas if replicas is not None else 1)
    if replicas is not None and "scale" in svc and replicas != svc["scale"]:
        raise _err(base, f"scale ({svc['scale']}) and deploy.replicas ({replicas}) differ")
    if scale < 0:
        raise _err(f"{base}.scale", f"invalid scale {scale}")
    svc["scale"] = scale
    if svc.get("container_name") and scale > 1:
        raise _err(base, f"container_name {svc['container_name']!r} names one container, but "
                         f"the service has {scale}")
    mode = svc.get("network_mode")
    if mode is not None:
        shared = mode.partition(":")[2] if mode.startswith(SHARED_MODES) else ""
        if mode not in ("none", "host", "bridge") and not shared:
            raise _err(f"{base}.network_mode", f"invalid network mode {_shown(mode)}")
        if "networks" in svc:
            raise _err(base, "network_mode and networks cannot be combined")
        if shared and svc.get("ports"):
            # docker's daemon refuses the container it would create; say so at load.
            raise _err(f"{base}.ports", "conflicting options: port publishing and the "
                                        "container type network mode")
        if mode.startswith("service:"):
            # compose: the service whose network it shares starts first (and restarts it).
            svc.setdefault("depends_on", {}).setdefault(
                shared, {"condition": "service_started", "required": True, "restart": True})
    elif "networks" not in svc:
        svc["networks"] = {"default": None}
    for key in IGNORED_KEYS:
        if key in svc and key != "expose":
            project.warnings.append(f"{base}.{key} is ignored by pallet compose")


def _check_references(project: Project, name: str, svc: dict[str, Any]) -> None:
    base = f"services.{name}"
    mode = svc.get("network_mode") or ""
    if mode.startswith("service:"):
        other = mode.partition(":")[2]
        if other not in project.services:
            raise _err(f"{base}.network_mode", f"service {_shown(other)} not found for "
                                               f"network_mode 'service:{other}'")
    for net in svc.get("networks") or {}:
        if net != "default" and net not in project.networks:
            raise ComposeFileError(f"service {name!r} refers to undefined network {net}: "
                                   "invalid compose project")
    for i, v in enumerate(svc.get("volumes") or []):
        if v["type"] == "volume" and v.get("source") and v["source"] not in project.volumes:
            raise _err(f"{base}.volumes[{i}]", f"undefined volume {_shown(v['source'])}: "
                                               "declare it under the top-level volumes:")
    for kind in ("secrets", "configs"):
        defined = project.secrets if kind == "secrets" else project.configs
        for ref in svc.get(kind) or []:
            if ref["source"] not in defined:
                raise ComposeFileError(f"service {_shown(name)} refers to undefined "
                                       f"{kind[:-1]} {ref['source']}: invalid compose project")
    for ref in (svc.get("build") or {}).get("secrets") or []:
        if ref["source"] not in project.secrets:
            raise ComposeFileError(f"service {_shown(name)} refers to undefined build secret "
                                   f"{ref['source']}: invalid compose project")
    for dep, conf in (svc.get("depends_on") or {}).items():
        if dep not in project.services and dep not in project.disabled:
            if conf["required"]:
                raise _err(f"{base}.depends_on", f"undefined service {_shown(dep)}")
        if dep in project.disabled:
            raise _err(f"{base}.depends_on", f"service {_shown(dep)} is not enabled by the "
                                             "active profiles")


def _uses_default(svc: dict[str, Any]) -> bool:
    return "default" in (svc.get("networks") or {})


def _name_and_external(path: str, raw: dict[str, Any]) -> tuple[Any, bool]:
    """A top-level resource's `name` (None if not given) and whether it is `external` (the
    old `external: {name: X}` form folded in)."""
    external = raw.get("external", False)
    name = raw.get("name")
    if isinstance(external, dict):
        name, external = name or external.get("name"), True
    return name, _bool(external, f"{path}.external")


def _top_level(project: str, section: str, key: str, raw: dict[str, Any],
               known: set[str] | frozenset[str], driver: str
               ) -> tuple[dict[str, Any], str, bool]:
    """What top-level networks and volumes share: only KNOWN keys; the name (an external
    one keeps its name, or KEY; the others are PROJECT_KEY unless named; the old
    `external: {name: X}` form is accepted); one supported DRIVER. Returns ({"name"} plus
    "external": True for an external one, the key path, whether external)."""
    path = f"{section}.{key}"
    unknown = set(raw) - known
    if unknown:
        raise _err(path, f"unknown key {sorted(unknown)[0]!r}")
    name, external = _name_and_external(path, raw)
    out: dict[str, Any] = {"name": str(name or (key if external else f"{project}_{key}"))}
    if external:
        return {**out, "external": True}, path, True
    got = str(raw.get("driver") or driver)
    if got != driver:
        raise _err(f"{path}.driver", f"unsupported driver {_shown(got)}: use {driver}")
    return out, path, False


def _normalize_network(project: str, key: str, raw: dict[str, Any]) -> dict[str, Any]:
    out, path, external = _top_level(project, "networks", key, raw, NETWORK_KEYS, "bridge")
    if external:
        return out
    out.update(driver="bridge", external=False)
    ipam = raw.get("ipam") or {}
    if not isinstance(ipam, dict):
        raise _err(f"{path}.ipam", "must be a mapping")
    configs = []
    for i, c in enumerate(ipam.get("config") or []):
        p = f"{path}.ipam.config[{i}]"
        if not isinstance(c, dict) or not c.get("subnet"):
            raise _err(p, "needs a subnet")
        unknown = set(c) - {"subnet", "gateway", "ip_range", "aux_addresses"}
        if unknown:
            raise _err(p, f"unknown key {sorted(unknown)[0]!r}")
        configs.append({k: c[k] for k in ("subnet", "gateway", "ip_range", "aux_addresses")
                        if c.get(k)})
    if configs:
        out["ipam"] = {"config": configs}
    for k in ("internal", "enable_ipv6"):
        if k in raw:
            out[k] = _bool(raw[k], f"{path}.{k}")
    if raw.get("labels"):
        out["labels"] = {k: v or "" for k, v in _mapping(raw["labels"], f"{path}.labels").items()}
    if raw.get("driver_opts"):
        out["driver_opts"] = {k: v or "" for k, v in
                              _mapping(raw["driver_opts"], f"{path}.driver_opts").items()}
    return out


def _normalize_volume(project: str, key: str, raw: dict[str, Any]) -> dict[str, Any]:
    out, path, external = _top_level(project, "volumes", key, raw, VOLUME_KEYS, "local")
    if external:
        return out
    if raw.get("driver_opts"):
        # docker's local driver options (type, device, o): the engine checks them.
        out["driver_opts"] = {k: "" if v is None else str(v) for k, v in
                              _mapping(raw["driver_opts"], f"{path}.driver_opts").items()}
    if raw.get("labels"):
        out["labels"] = {k: v or "" for k, v in _mapping(raw["labels"], f"{path}.labels").items()}
    return out


def _normalize_file_object(project: str, section: str, key: str, raw: dict[str, Any]
                           ) -> dict[str, Any]:
    """A top-level secret or config as docker compose config prints it: its name (PROJECT_KEY
    unless named or external), then its one source: `file` (absolute already), `environment`
    (a variable's name) or, for configs, `content`; or `external: true`."""
    path = f"{section}.{key}"
    kind = section[:-1]
    known = SECRET_KEYS if section == "secrets" else CONFIG_KEYS
    for k in raw:
        if k in ("driver", "driver_opts", "template_driver"):
            raise _err(f"{path}.{k}", f"not supported by pallet compose (docker compose "
                                      f"does not support {section}.*.{k} either)")
        if k not in known:
            raise _err(path, f"unknown key {k!r}")
    name, external = _name_and_external(path, raw)
    out: dict[str, Any] = {"name": _str(name, f"{path}.name") if name
                           else (key if external else f"{project}_{key}")}
    if external:
        for k in ("file", "environment", "content"):
            if k in raw:
                raise _err(path, f'conflicting parameters "external" and "{k}" specified')
        return {**out, "external": True}
    sources = [k for k in ("file", "environment", "content") if k in raw]
    if len(sources) != 1:
        allowed = "`file` or `environment`" if section == "secrets" \
            else "`file`, `environment` or `content`"
        raise ComposeFileError(f"{kind} {_shown(key)} must declare " +
                               ("either " if not sources else "only one of ") + allowed)
    out[sources[0]] = _str(raw[sources[0]], f"{path}.{sources[0]}")
    if raw.get("labels"):
        out["labels"] = {k: v or "" for k, v in _mapping(raw["labels"], f"{path}.labels").items()}
    return out


def dump_yaml(data: Any) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def str_repr(dumper: Any, s: str) -> Any:
        style = "|" if "\n" in s else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)

    Dumper.add_representer(str, str_repr)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=1000)
