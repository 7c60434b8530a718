"""Dockerfile instructions applied to an image config: what `commit -c` and `import -c`
take (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR, VOLUME, STOPSIGNAL, ONBUILD).

Pure: a config's "config" object in, a new one out.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
import shlex
from typing import Any

from pallet.errors import InvalidArgument

# docker's validCommitCommands, less HEALTHCHECK (pallet runs no health checks).
VALID = ("cmd", "entrypoint", "env", "expose", "label", "onbuild", "stopsignal", "user",
         "volume", "workdir")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """CONFIG (an image config's "config": Cmd, Env...) with CHANGES applied in order;
    each change is one or more instruction lines."""
    out = copy.deepcopy(config)
    cmd_set: list[bool] = []
    for change in changes:
        for line in change.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                _apply(out, line.strip(), cmd_set)
    return out


def _apply(cfg: dict[str, Any], line: str, cmd_set: list[bool]) -> None:
    word, _, rest = line.partition(" ")
    cmd, rest = word.lower(), rest.strip()
    if cmd not in VALID:
        raise InvalidArgument(f"{cmd} is not a valid change command")
    if not rest:
        raise InvalidArgument(f"{word.upper()} requires at least one argument")
    if cmd in ("cmd", "entrypoint"):
        cfg["Cmd" if cmd == "cmd" else "Entrypoint"] = _exec_form(rest)
        if cmd == "cmd":
            cmd_set.append(True)
        elif not cmd_set:
            cfg["Cmd"] = None  # as in a Dockerfile: a new ENTRYPOINT drops an inherited CMD
    elif cmd == "env":
        env = list(cfg.get("Env") or [])
        for key, value in _pairs(rest, "ENV", _env_map(env)):
            env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={value}"]
        cfg["Env"] = env
    elif cmd == "label":
        labels = dict(cfg.get("Labels") or {})
        labels.update(_pairs(rest, "LABEL", _env_map(cfg.get("Env") or [])))
        cfg["Labels"] = labels
    elif cmd == "expose":
        ports = dict(cfg.get("ExposedPorts") or {})
        for p in _words(rest, cfg):
            ports.update(dict.fromkeys(_ports(p), {}))
        cfg["ExposedPorts"] = ports
    elif cmd == "volume":
        vols = dict(cfg.get("Volumes") or {})
        items = _json_list(rest) if rest.startswith("[") else _words(rest, cfg)
        for v in items:
            if not v:
                raise InvalidArgument("VOLUME specified can not be an empty string")
            vols[v] = {}
        cfg["Volumes"] = vols
    elif cmd == "user":
        cfg["User"] = _expand(rest, _env_map(cfg.get("Env") or []))
    elif cmd == "workdir":
        cfg["WorkingDir"] = posixpath.normpath(
            posixpath.join(cfg.get("WorkingDir") or "/", _expand(rest, _env_map(cfg.get("Env") or []))))
    elif cmd == "stopsignal":
        cfg["StopSignal"] = _expand(rest, _env_map(cfg.get("Env") or []))
    elif cmd == "onbuild":
        cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), rest]


def _exec_form(text: str) -> list[str]:
    """A JSON array (exec form) or a command line for /bin/sh -c (shell form)."""
    if text.startswith("["):
        try:
            return _json_list(text)
        except InvalidArgument:
            pass  # not valid JSON: docker takes it as shell form too
    return ["/bin/sh", "-c", text]


def _json_list(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise InvalidArgument(f"not a JSON array of strings: {text}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"not a JSON array of strings: {text}")
    return value


def _env_map(env: list[str]) -> dict[str, str]:
    return dict(e.partition("=")[::2] for e in env)


def _expand(text: str, env: dict[str, str]) -> str:
    """$VAR and ${VAR} from ENV (the config's; unset: empty), as the builder does."""
    return _VAR.sub(lambda m: str(env.get(m.group(1) or m.group(2), "")), text)


def _words(text: str, cfg: dict[str, Any]) -> list[str]:
    env = _env_map(cfg.get("Env") or [])
    return [_expand(w, env) for w in _split(text)]


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as e:
        raise InvalidArgument(f"cannot parse {text!r}: {e}") from None


def _pairs(text: str, what: str, env: dict[str, str]) -> list[tuple[str, str]]:
    """KEY=VALUE ... (quotes as in a shell), or the old `KEY VALUE` form."""
    words = _split(text)
    if "=" not in words[0]:
        if len(words) < 2:
            raise InvalidArgument(f"{what} must have two arguments")
        key, _, value = text.partition(" ")
        return [(key, _expand(value.strip(), env))]
    pairs = []
    for w in words:
        key, sep, value = w.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{what} names can not be blank" if not key else
                                  f"Syntax error - can't find = in {w!r}. Must be of the "
                                  "form: name=value")
        pairs.append((key, _expand(value, env)))
    return pairs


def exposed_ports(spec: str) -> list[str]:
    """80, 80/udp or 8000-8002[/proto] as ExposedPorts keys (EXPOSE's, commit's and
    build's)."""
    return _ports(spec)


def _ports(spec: str) -> list[str]:
    port, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid proto: {proto}")
    lo, _, hi = port.partition("-")
    if not lo.isdigit() or (hi and not hi.isdigit()) or int(hi or lo) < int(lo) \
            or int(hi or lo) > 65535:
        raise InvalidArgument(f"invalid containerPort: {port}")
    return [f"{p}/{proto}" for p in range(int(lo), int(hi or lo) + 1)]
