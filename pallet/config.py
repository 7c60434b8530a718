"""pallet's one configuration file (TOML), shared by the CLI and `pallet daemon`.

Pure: parse, merge overrides, validate and return a frozen `Config`; every key and its
default is documented in docs/config.md, and every error names the offending key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pallet.errors import InvalidArgument

if TYPE_CHECKING:
    from pallet.image.registry_config import RegistryConfig

DEFAULT_PATH = "/etc/pallet/pallet.toml"
CONFIG_ENV = "PALLET_CONFIG"  # a path; beats DEFAULT_PATH, loses to an explicit path

RUNTIME_TYPES = ("in-process", "binary")
CGROUP_DRIVERS = ("cgroupfs", "systemd")


@dataclass(frozen=True)
class SocketConfig:
    path: str = "/run/pallet/pallet.sock"
    mode: int = 0o660
    group: str = ""  # group name or gid that may use the socket; "" keeps root's group


@dataclass(frozen=True)
class RuntimeHandler:
    """One CRI runtime handler: pallet's in-process runtime or a runc-compatible binary."""

    name: str
    type: str = "binary"
    path: str = ""  # the binary; unused for in-process
    root: str = ""  # the binary's --root state dir; "" = <state_dir>/runtimes/<name>
    options: tuple[str, ...] = ()  # global flags put before the subcommand
    recursive_read_only_mounts: bool = False
    user_namespaces: bool = False


@dataclass(frozen=True)
class RegistryAuth:
    username: str = ""
    password: str = ""
    auth: str = ""  # base64 "user:password", as in docker's config.json
    identity_token: str = ""


@dataclass(frozen=True)
class RegistrySettings:
    mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    insecure: tuple[str, ...] = ()
    auth_file: str = ""  # docker-style config.json; "" = docker's/podman's usual places
    auths: Mapping[str, RegistryAuth] = field(default_factory=dict)
    ca_file: Mapping[str, str] = field(default_factory=dict)  # host -> PEM CA file, added to the system CAs
    timeout: float = 30.0
    retries: int = 4
    concurrency: int = 4


@dataclass(frozen=True)
class CNIConfig:
    conf_dir: str = "/etc/cni/net.d"
    bin_dirs: tuple[str, ...] = ("/usr/lib/cni", "/opt/cni/bin")
    network: str = ""  # the conflist to use by name; "" = the first in conf_dir
    ipv6_pool: str = ""  # IPv6 networks without --subnet get a /64 of it; "" = a ULA /48


@dataclass(frozen=True)
class StreamConfig:
    address: str = "127.0.0.1"
    port: int = 0  # 0: a free port chosen at start, like containerd's default
    token_ttl: float = 60.0  # seconds an Exec/Attach/PortForward URL stays valid
    idle_timeout: float = 4 * 3600.0  # close a stream with no traffic after this long
    max_sessions: int = 64  # concurrent streams; more are refused with 503
    backend: str = ""  # "module:factory" serving exec/attach; "" = the engine's


@dataclass(frozen=True)
class LogConfig:
    max_size: int = -1  # bytes per container log before rotation; -1: none (kubelet rotates)
    max_line_size: int = 16384  # longer lines are split into partial (P) CRI log entries


@dataclass(frozen=True)
class Config:
    root: str = "/var/lib/pallet"
    state_dir: str = "/run/pallet"
    cgroup_driver: str = "cgroupfs"
    default_runtime: str = "pallet"
    pause_image: str = "registry.k8s.io/pause:3.9"
    grpc_max_workers: int = 32  # gRPC handler threads: bounds threads and in-flight RPCs
    socket: SocketConfig = field(default_factory=SocketConfig)
    runtimes: Mapping[str, RuntimeHandler] = field(default_factory=dict)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    cni: CNIConfig = field(default_factory=CNIConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    logs: LogConfig = field(default_factory=LogConfig)
    source: str = ""  # the file it came from; "" = defaults only

    def runtime(self, name: str = "") -> RuntimeHandler:
        """The handler for a CRI runtime_handler name ("" = the default one)."""
        key = name or self.default_runtime
        try:
            return self.runtimes[key]
        except KeyError:
            known = ", ".join(sorted(self.runtimes))
            raise InvalidArgument(f"unknown runtime handler {key!r}; configured: {known}") from None

    def registry_config(self) -> RegistryConfig:
        """The image layer's registry settings (None auths: read docker config.json lazily)."""
        from pallet.image import auth
        from pallet.image.registry_config import RegistryConfig

        auths: dict[str, tuple[str, str]] | None = None
        if self.registry.auth_file or self.registry.auths:
            paths = [Path(self.registry.auth_file)] if self.registry.auth_file else None
            auths = auth.load_auths(paths)
            for host, a in self.registry.auths.items():
                creds = registry_auth_credentials(a)
                if creds:
                    auths[host] = creds
        return RegistryConfig(
            insecure=set(self.registry.insecure),
            mirrors={k: list(v) for k, v in self.registry.mirrors.items()},
            auths=auths,
            ca_files=dict(self.registry.ca_file),
            retries=self.registry.retries,
            timeout=self.registry.timeout,
            concurrency=self.registry.concurrency,
        )

    def to_dict(self) -> dict[str, Any]:
        """The effective config as plain data, secrets redacted (Status verbose info, logs)."""
        out = _plain(self)
        for a in out["registry"]["auths"].values():
            for k in ("password", "auth", "identity_token"):
                if a[k]:
                    a[k] = "<redacted>"
        return out


def registry_auth_credentials(a: RegistryAuth) -> tuple[str, str] | None:
    """(user, secret) the registry client sends, in docker's precedence."""
    import base64
    import binascii

    if a.identity_token:
        return ("<token>", a.identity_token)
    if a.auth:
        try:
            user, _, secret = base64.b64decode(a.auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidArgument("registry auth is not base64 of 'user:password'") from None
        return (user, secret)
    if a.username:
        return (a.username, a.password)
    return None


def default_runtimes(state_dir: str = "/run/pallet") -> dict[str, RuntimeHandler]:
    """pallet's own runtime plus the runc-compatible binaries Debian ships."""
    return {
        "pallet": RuntimeHandler("pallet", type="in-process", user_namespaces=True),
        "runc": RuntimeHandler("runc", path="/usr/sbin/runc", root=f"{state_dir}/runtimes/runc"),
        "crun": RuntimeHandler("crun", path="/usr/bin/crun", root=f"{state_dir}/runtimes/crun"),
        # Debian's gVisor build runs only with the ptrace platform and no network of its own.
        "runsc": RuntimeHandler("runsc", path="/usr/bin/runsc", root=f"{state_dir}/runtimes/runsc",
                                options=("--platform=ptrace", "--network=none")),
    }


# -- loading ------------------------------------------------------------------

def load_config(path: str | os.PathLike[str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Read `path` (or $PALLET_CONFIG, or /etc/pallet/pallet.toml if present), apply overrides.

    `overrides` holds dotted keys (`{"socket.path": "/tmp/x.sock", "root": "/tmp/r"}`) or
    nested tables; None values are skipped, so argparse defaults can be passed as they are.
    """
    data: dict[str, Any] = {}
    source = ""
    explicit = path is not None or bool(os.environ.get(CONFIG_ENV))
    file = Path(path if path is not None else os.environ.get(CONFIG_ENV) or DEFAULT_PATH)
    try:
        with open(file, "rb") as f:
            data = tomllib.load(f)
        source = str(file)
    except FileNotFoundError:
        if explicit:
            raise InvalidArgument(f"config file {str(file)!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument(f"config file {str(file)!r} is not valid TOML: {e}") from None
    except OSError as e:
        raise InvalidArgument(f"cannot read config file {str(file)!r}: {e.strerror}") from None
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    return parse_config(data, source=source)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise InvalidArgument(f"config key {'.'.join(parts[:-1])!r} is not a table")
        node = nxt
    if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), dict):
        for k, v in value.items():
            _set_dotted(node, f"{parts[-1]}.{k}", v)
    else:
        node[parts[-1]] = value


def parse_config(data: Mapping[str, Any], source: str = "") -> Config:
    """Validate a TOML document (already parsed) into a Config."""
    d = dict(data)
    runtimes_raw = d.pop("runtimes", {})
    registry_raw = d.pop("registry", {})
    scalars = _table(d, "", Config, skip={"runtimes", "registry", "source"},
                     nested={"socket": SocketConfig, "cni": CNIConfig, "stream": StreamConfig,
                             "logs": LogConfig})
    cfg = Config(**scalars, source=source)
    cfg = replace(cfg, registry=_registry(registry_raw),
                  runtimes=_runtimes(runtimes_raw, cfg.state_dir))
    _validate(cfg)
    return cfg


def _table(d: Mapping[str, Any], prefix: str, cls: type, skip: set[str] = frozenset(),
           nested: Mapping[str, type] | None = None) -> dict[str, Any]:
    """Check a table's keys and value types against a dataclass; return constructor kwargs."""
    if not isinstance(d, Mapping):
        raise InvalidArgument(f"config key {prefix.rstrip('.')!r} must be a table")
    known = {f.name: f for f in fields(cls) if f.name not in skip}
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = key.replace("-", "_")
        full = prefix + key
        if name not in known:
            raise InvalidArgument(f"unknown config key {full!r}")
        if nested and name in nested:
            out[name] = nested[name](**_table(value, full + ".", nested[name]))
            continue
        f = known[name]
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        out[name] = _coerce(full, value, default)
    return out


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Make `value` the type of `default`, or say which key is wrong and what it wants."""
    if key.endswith("mode") and isinstance(value, str):
        try:
            return int(value, 8)  # "0660", as people write modes
        except ValueError:
            raise InvalidArgument(f"config key {key!r}: {value!r} is not an octal mode") from None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InvalidArgument(f"config key {key!r} must be true or false, not {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument(f"config key {key!r} must be an integer, not {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgument(f"config key {key!r} must be a number, not {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise InvalidArgument(f"config key {key!r} must be a string, not {value!r}")
        return value
    if isinstance(default, tuple):
        if isinstance(value, str) or not isinstance(value, list | tuple) or \
                not all(isinstance(v, str) for v in value):
            raise InvalidArgument(f"config key {key!r} must be a list of strings, not {value!r}")
        return tuple(value)
    raise InvalidArgument(f"config key {key!r} has an unsupported value {value!r}")


def _runtimes(raw: Any, state_dir: str) -> dict[str, RuntimeHandler]:
    out = default_runtimes(state_dir)
    if not isinstance(raw, Mapping):
        raise InvalidArgument("config key 'runtimes' must be a table of [runtimes.NAME] tables")
    for name, table in raw.items():
        base = out.get(name) or RuntimeHandler(name, root=f"{state_dir}/runtimes/{name}")
        kw = _table(table, f"runtimes.{name}.", RuntimeHandler, skip={"name"})
        out[name] = replace(base, **kw)
    return out


def _registry(raw: Any) -> RegistrySettings:
    if not isinstance(raw, Mapping):
        raise InvalidArgument("config key 'registry' must be a table")
    raw = dict(raw)
    mirrors_raw = raw.pop("mirrors", {})
    auths_raw = raw.pop("auths", {})
    ca_raw = raw.pop("ca_file", {})
    kw = _table(raw, "registry.", RegistrySettings, skip={"mirrors", "auths", "ca_file"})
    if not isinstance(ca_raw, Mapping):
        raise InvalidArgument('config key \'registry.ca_file\' must be a table of "host" = "/path/ca.pem"')
    ca_file = {h: _coerce(f"registry.ca_file.{h}", v, "") for h, v in ca_raw.items()}
    for host, path in ca_file.items():
        if not os.path.isabs(path):
            raise InvalidArgument(f"config key 'registry.ca_file.{host}' must be an absolute path, not {path!r}")
    if not isinstance(mirrors_raw, Mapping):
        raise InvalidArgument("config key 'registry.mirrors' must be a table of host = [mirrors]")
    mirrors = {h: _coerce(f"registry.mirrors.{h}", v, ()) for h, v in mirrors_raw.items()}
    if not isinstance(auths_raw, Mapping):
        raise InvalidArgument("config key 'registry.auths' must be a table of [registry.auths.HOST]")
    auths = {h: RegistryAuth(**_table(v, f"registry.auths.{h}.", RegistryAuth))
             for h, v in auths_raw.items()}
    for host, a in auths.items():
        try:
            registry_auth_credentials(a)
        except InvalidArgument as e:
            raise InvalidArgument(f"config key 'registry.auths.{host}.auth': {e}") from None
    return RegistrySettings(mirrors=mirrors, auths=auths, ca_file=ca_file, **kw)


def _validate(cfg: Config) -> None:
    for key in ("root", "state_dir", "socket.path", "cni.conf_dir"):
        value = _get(cfg, key)
        if not os.path.isabs(value):
            raise InvalidArgument(f"config key {key!r} must be an absolute path, not {value!r}")
    if not 0 <= cfg.socket.mode <= 0o777:
        raise InvalidArgument(f"config key 'socket.mode' must be a file mode, not {oct(cfg.socket.mode)}")
    if cfg.cgroup_driver not in CGROUP_DRIVERS:
        raise InvalidArgument(f"config key 'cgroup_driver' must be one of {', '.join(CGROUP_DRIVERS)}, "
                              f"not {cfg.cgroup_driver!r}")
    if cfg.default_runtime not in cfg.runtimes:
        raise InvalidArgument(f"config key 'default_runtime': no [runtimes.{cfg.default_runtime}] table")
    for name, r in cfg.runtimes.items():
        if r.type not in RUNTIME_TYPES:
            raise InvalidArgument(f"config key 'runtimes.{name}.type' must be one of "
                                  f"{', '.join(RUNTIME_TYPES)}, not {r.type!r}")
        if r.type == "binary" and not os.path.isabs(r.path):
            raise InvalidArgument(f"config key 'runtimes.{name}.path' must be an absolute path "
                                  f"to a runc-compatible binary, not {r.path!r}")
    if not 0 <= cfg.stream.port <= 65535:
        raise InvalidArgument(f"config key 'stream.port' must be 0..65535, not {cfg.stream.port}")
    for key in ("stream.token_ttl", "stream.idle_timeout", "stream.max_sessions", "grpc_max_workers",
                "registry.timeout", "registry.concurrency", "logs.max_line_size"):
        if _get(cfg, key) <= 0:
            raise InvalidArgument(f"config key {key!r} must be positive, not {_get(cfg, key)}")
    if cfg.stream.backend and ":" not in cfg.stream.backend:
        raise InvalidArgument(f"config key 'stream.backend' must be 'module:factory', "
                              f"not {cfg.stream.backend!r}")


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _plain(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [_plain(v) for v in obj]
    return obj
