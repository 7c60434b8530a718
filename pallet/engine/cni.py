"""CNI 1.0 runtime side: pure config building and result/error parsing, and an Executor
that runs a conflist's plugin binaries and keeps ADD results for DEL and CHECK."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pallet.errors import InvalidArgument, NotFound, PalletError

CNI_VERSION = "1.0.0"
DEFAULT_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
PLUGIN_TIMEOUT_S = 60.0

# libcni's rule for network names; they become file names and iptables comments.
_NET_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_PLUGIN_TYPE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")

# The spec's well-known error codes, for messages.
_CODES = {
    1: "incompatible CNI version",
    2: "unsupported field in network configuration",
    3: "container unknown or does not exist",
    4: "invalid necessary environment variables",
    5: "I/O failure",
    6: "failed to decode content",
    7: "invalid network config",
    11: "try again later",
}


class CNIError(PalletError):
    """A plugin failed; the message names plugin, network, command, code and msg."""

    def __init__(self, message: str, plugin: str = "", code: int = 0, msg: str = ""):
        super().__init__(message)
        self.plugin = plugin
        self.code = code
        self.msg = msg


@dataclass
class RuntimeConf:
    """What the runtime says about one attachment (libcni's RuntimeConf)."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: Sequence[tuple[str, str]] = ()  # CNI_ARGS pairs
    capability_args: Mapping[str, Any] = field(default_factory=dict)  # e.g. portMappings


# ----------------------------------------------------------------- pure functions


def validate_conflist(conflist: Mapping[str, Any]) -> None:
    """Raise InvalidArgument unless CONFLIST is a usable network configuration list."""
    name = conflist.get("name")
    if not isinstance(name, str) or not _NET_NAME.match(name):
        raise InvalidArgument(f"invalid CNI network name {name!r}")
    if not isinstance(conflist.get("cniVersion", ""), str):
        raise InvalidArgument(f"network {name}: cniVersion must be a string")
    plugins = conflist.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise InvalidArgument(f"network {name}: 'plugins' must be a non-empty list")
    for p in plugins:
        kind = p.get("type") if isinstance(p, dict) else None
        if not isinstance(kind, str) or not _PLUGIN_TYPE.match(kind):
            raise InvalidArgument(f"network {name}: plugin with invalid type {kind!r}")


def plugin_config(
    conflist: Mapping[str, Any],
    plugin: Mapping[str, Any],
    prev_result: Mapping[str, Any] | None,
    capability_args: Mapping[str, Any],
) -> dict[str, Any]:
    """The stdin of one plugin in a list: the plugin's own object with the list's
    name and version, the previous result, and runtimeConfig for exactly the
    capabilities the plugin declares (the spec forbids passing others)."""
    conf = copy.deepcopy(dict(plugin))
    conf["name"] = conflist["name"]
    conf["cniVersion"] = conflist.get("cniVersion", CNI_VERSION)
    if prev_result is not None:
        conf["prevResult"] = copy.deepcopy(dict(prev_result))
    else:
        conf.pop("prevResult", None)
    wanted = {k for k, on in (plugin.get("capabilities") or {}).items() if on}
    runtime = {k: copy.deepcopy(v) for k, v in capability_args.items() if k in wanted}
    if runtime:
        conf["runtimeConfig"] = runtime
    else:
        conf.pop("runtimeConfig", None)
    return conf


def format_args(args: Sequence[tuple[str, str]]) -> str:
    """CNI_ARGS: K=V pairs joined by ';' (neither may hold ';' or '=')."""
    out = []
    for k, v in args:
        if ";" in k or ";" in v or "=" in k:
            raise InvalidArgument(f"invalid CNI_ARGS pair {k}={v}: ';' and '=' are not allowed")
        out.append(f"{k}={v}")
    return ";".join(out)


def plugin_env(
    command: str, rt: RuntimeConf, bin_dirs: Sequence[str], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = dict(base if base is not None else _base_env())
    env.update(
        CNI_COMMAND=command,
        CNI_CONTAINERID=rt.container_id,
        CNI_NETNS=rt.netns,
        CNI_IFNAME=rt.ifname,
        CNI_ARGS=format_args(rt.args),
        CNI_PATH=os.pathsep.join(bin_dirs),
    )
    if command == "DEL" and not rt.netns:
        del env["CNI_NETNS"]  # 1.0: DEL without a namespace means "it is gone already"
    return env


def _base_env() -> dict[str, str]:
    # Plugins run iptables and need PATH; nothing else of ours should leak to them.
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}


def parse_result(plugin: str, command: str, stdout: bytes) -> dict[str, Any]:
    """Decode a plugin's success output; an ADD must print a JSON object."""
    text = stdout.decode(errors="replace").strip()
    if not text:
        if command == "ADD":
            raise CNIError(f"plugin {plugin} ADD: printed no result", plugin)
        return {}
    try:
        result = json.loads(text)
    except json.JSONDecodeError:
        raise CNIError(
            f"plugin {plugin} {command}: output is not JSON: {_one_line(text)}", plugin
        ) from None
    if not isinstance(result, dict):
        raise CNIError(f"plugin {plugin} {command}: result is not a JSON object", plugin)
    return result


def parse_error(
    plugin: str, network: str, command: str, returncode: int, stdout: bytes, stderr: bytes
) -> CNIError:
    """One line from a failed plugin: its error JSON when it printed one, else stderr."""
    where = f"plugin {plugin} (network {network}) failed {command}"
    text = stdout.decode(errors="replace").strip()
    try:
        err = json.loads(text) if text else None
    except json.JSONDecodeError:
        err = None
    if isinstance(err, dict) and ("code" in err or "msg" in err):
        code = int(err.get("code") or 0)
        msg = str(err.get("msg") or _CODES.get(code, "error"))
        details = str(err.get("details") or "")
        line = f"{where}: code {code}: {msg}" + (
            f": {details}" if details and details not in msg else ""
        )
        return CNIError(_one_line(line), plugin, code, msg)
    detail = stderr.decode(errors="replace").strip() or text or f"exit status {returncode}"
    return CNIError(_one_line(f"{where}: {detail}"), plugin, 0, detail)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def load_conf_file(path: str) -> dict[str, Any]:
    """A .conflist as is, or a single-plugin .conf/.json wrapped into a list."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidArgument(f"cannot read CNI config {path}: {e}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"CNI config {path} is not a JSON object")
    if "plugins" not in data:
        plugin = {k: v for k, v in data.items() if k not in ("name", "cniVersion")}
        data = {
            "cniVersion": data.get("cniVersion", CNI_VERSION),
            "name": data.get("name"),
            "plugins": [plugin],
        }
    validate_conflist(data)
    return data


def load_conf_dir(path: str) -> list[dict[str, Any]]:
    """Every valid config in PATH in lexical order (the first is the default, as in
    containerd and CRI-O); unreadable files are skipped, like libcni does."""
    try:
        names = sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if name.endswith((".conflist", ".conf", ".json")):
            try:
                out.append(load_conf_file(os.path.join(path, name)))
            except InvalidArgument:
                continue
    return out


def find_plugin(kind: str, bin_dirs: Sequence[str]) -> str:
    if not _PLUGIN_TYPE.match(kind):
        raise InvalidArgument(f"invalid CNI plugin type {kind!r}")
    for d in bin_dirs:
        p = os.path.join(d, kind)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise NotFound(f'failed to find CNI plugin "{kind}" in path [{" ".join(bin_dirs)}]')


def missing_plugins(conflist: Mapping[str, Any], bin_dirs: Sequence[str]) -> list[str]:
    """Plugin types of CONFLIST (and their IPAM plugins) not found in BIN_DIRS."""
    kinds: list[str] = []
    for p in conflist.get("plugins", []):
        kinds.append(p.get("type", ""))
        ipam = p.get("ipam") or {}
        if ipam.get("type"):
            kinds.append(ipam["type"])
    out = []
    for kind in kinds:
        try:
            find_plugin(kind, bin_dirs)
        except (NotFound, InvalidArgument):
            out.append(kind)
    return out


# ----------------------------------------------------------------- the executor


class Executor:
    """Runs the plugins of one conflist per call and keeps ADD results on disk
    (CACHE_DIR/<network>/<container>-<ifname>.json, libcni's cniCacheV1 shape plus
    whatever `extra` the caller stores) so DEL and CHECK get the prevResult."""

    def __init__(
        self,
        bin_dirs: Sequence[str] = DEFAULT_BIN_DIRS,
        cache_dir: str = "",
        timeout: float = PLUGIN_TIMEOUT_S,
    ):
        self.bin_dirs = tuple(bin_dirs)
        self.cache_dir = cache_dir
        self.timeout = timeout

    # -- cache

    def cache_path(self, network: str, container_id: str, ifname: str) -> str:
        if not _NET_NAME.match(network) or not _NET_NAME.match(container_id) or "/" in ifname:
            raise InvalidArgument(f"invalid attachment {network}/{container_id}/{ifname}")
        return os.path.join(self.cache_dir, network, f"{container_id}-{ifname}.json")

    def cached(self, network: str, container_id: str, ifname: str) -> dict[str, Any] | None:
        try:
            with open(self.cache_path(network, container_id, ifname), "rb") as f:
                data = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def cached_entries(self, network: str | None = None) -> list[dict[str, Any]]:
        nets = [network] if network else _listdir(self.cache_dir)
        out = []
        for net in nets:
            for name in _listdir(os.path.join(self.cache_dir, net)):
                if not name.endswith(".json"):
                    continue
                try:
                    with open(os.path.join(self.cache_dir, net, name), "rb") as f:
                        data = json.load(f)
                except (OSError, json.JSONDecodeError):
                    continue  # a half-written entry of a crashed ADD; DEL cleans it
                if isinstance(data, dict):
                    out.append(data)
        return out

    def _write_cache(
        self,
        conflist: Mapping[str, Any],
        rt: RuntimeConf,
        result: Mapping[str, Any],
        extra: Mapping[str, Any],
    ) -> None:
        path = self.cache_path(conflist["name"], rt.container_id, rt.ifname)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        entry = {
            "kind": "cniCacheV1",
            "containerId": rt.container_id,
            "ifName": rt.ifname,
            "networkName": conflist["name"],
            "netns": rt.netns,
            "config": conflist,
            "cniArgs": [list(a) for a in rt.args],
            "capabilityArgs": dict(rt.capability_args),
            "result": result,
            **extra,
        }
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(entry, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def update_cached(self, network: str, container_id: str, ifname: str,
                      **fields: Any) -> bool:
        """Change fields pallet keeps in an attachment's entry (e.g. its "aliases"), written
        atomically; False if there is no such entry."""
        entry = self.cached(network, container_id, ifname)
        if entry is None:
            return False
        path = self.cache_path(network, container_id, ifname)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({**entry, **fields}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return True

    def _drop_cache(self, network: str, container_id: str, ifname: str) -> None:
        path = self.cache_path(network, container_id, ifname)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass  # other attachments remain

    # -- running plugins

    def run_plugin(
        self, command: str, network: str, conf: Mapping[str, Any], rt: RuntimeConf
    ) -> dict[str, Any]:
        kind = conf["type"]
        exe = find_plugin(kind, self.bin_dirs)
        env = plugin_env(command, rt, self.bin_dirs)
        try:
            proc = subprocess.run(
                [exe],
                input=json.dumps(conf).encode(),
                env=env,
                capture_output=True,
                timeout=self.timeout,
                close_fds=True,
            )
        except subprocess.TimeoutExpired:
            raise CNIError(
                f"plugin {kind} (network {network}) failed {command}: "
                f"no answer within {self.timeout:g}s",
                kind,
            ) from None
        except OSError as e:
            raise CNIError(
                f"plugin {kind} (network {network}) failed {command}: "
                f"cannot run {exe}: {e.strerror}",
                kind,
            ) from None
        if proc.returncode != 0:
            raise parse_error(kind, network, command, proc.returncode, proc.stdout, proc.stderr)
        return parse_result(kind, command, proc.stdout)

    def version(self, kind: str) -> dict[str, Any]:
        """The plugin's VERSION answer (cniVersion and supportedVersions)."""
        exe = find_plugin(kind, self.bin_dirs)
        env = dict(_base_env(), CNI_COMMAND="VERSION", CNI_PATH=os.pathsep.join(self.bin_dirs))
        proc = subprocess.run(
            [exe],
            input=json.dumps({"cniVersion": CNI_VERSION}).encode(),
            env=env,
            capture_output=True,
            timeout=self.timeout,
        )
        if proc.returncode != 0:
            raise parse_error(kind, "", "VERSION", proc.returncode, proc.stdout, proc.stderr)
        return parse_result(kind, "VERSION", proc.stdout)

    def add(
        self, conflist: Mapping[str, Any], rt: RuntimeConf, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """ADD every plugin in order, each seeing the previous result; record the
        final one. On failure the plugins already run are DELeted (best effort) and
        the first error is raised, so a failed ADD leaves nothing behind."""
        validate_conflist(conflist)
        name = conflist["name"]
        result: dict[str, Any] | None = None
        try:
            for plugin in conflist["plugins"]:
                conf = plugin_config(conflist, plugin, result, rt.capability_args)
                result = self.run_plugin("ADD", name, conf, rt)
            # Written before returning so that a crash right after still lets DEL work.
            self._write_cache(conflist, rt, result or {}, extra or {})
        except BaseException:
            self._delete_quietly(conflist, rt, result)
            raise
        return result or {}

    def delete(
        self, network: str, rt: RuntimeConf, conflist: Mapping[str, Any] | None = None
    ) -> bool:
        """DEL in reverse order with the recorded result as prevResult, using the
        recorded config (what ADD used) or else CONFLIST. Returns False when there
        was nothing to delete. A missing namespace is fine (plugins tolerate it);
        the record goes only once every plugin agreed, so a failed DEL can be retried."""
        entry = self.cached(network, rt.container_id, rt.ifname)
        used = entry.get("config") if entry and isinstance(entry.get("config"), dict) else conflist
        if used is None:
            return False
        validate_conflist(used)
        prev = entry.get("result") if entry else None
        caps = (entry.get("capabilityArgs") if entry else None) or rt.capability_args
        first: PalletError | None = None
        for plugin in reversed(used["plugins"]):
            conf = plugin_config(used, plugin, prev, caps)
            try:
                self.run_plugin("DEL", used["name"], conf, rt)
            except (CNIError, NotFound) as e:
                first = first or e  # go on: later plugins free their own resources
        if first is not None:
            raise first
        self._drop_cache(network, rt.container_id, rt.ifname)
        return True

    def check(self, conflist: Mapping[str, Any], rt: RuntimeConf,
              skip: Sequence[str] = ()) -> None:
        """CHECK every plugin (but those of the types in SKIP) in order against the
        recorded result."""
        entry = self.cached(conflist["name"], rt.container_id, rt.ifname)
        if entry is None:
            raise NotFound(
                f"no attachment of {rt.container_id[:12]} to network {conflist['name']} "
                f"({rt.ifname}) is recorded"
            )
        used = entry.get("config") or conflist
        prev = entry.get("result") or {}
        caps = entry.get("capabilityArgs") or rt.capability_args
        for plugin in used["plugins"]:
            if plugin.get("type") in skip:
                continue
            self.run_plugin("CHECK", used["name"], plugin_config(used, plugin, prev, caps), rt)

    def _delete_quietly(
        self, conflist: Mapping[str, Any], rt: RuntimeConf, prev: Mapping[str, Any] | None
    ) -> None:
        for plugin in reversed(conflist["plugins"]):
            conf = plugin_config(conflist, plugin, prev, rt.capability_args)
            try:
                self.run_plugin("DEL", conflist["name"], conf, rt)
            except (CNIError, NotFound, InvalidArgument):
                continue  # rolling back; the ADD error is the one worth reporting
        try:
            self._drop_cache(conflist["name"], rt.container_id, rt.ifname)
        except InvalidArgument:
            pass


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
