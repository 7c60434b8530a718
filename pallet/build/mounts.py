"""RUN --mount: BuildKit's mount specs (`type=cache|bind|tmpfs|secret|ssh,target=...`) parsed
and checked with BuildKit's words (pure), and the mount points a RUN's runtime made in its
rootfs for them, removed again before the step is committed (BuildKit's mount stubs).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pallet.errors import InvalidArgument

TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING = ("shared", "private", "locked")
_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")
_KEYS = ("type", "from", "source", "src", "target", "dst", "destination", "readonly", "ro",
         "readwrite", "rw", "id", "sharing", "required", "mode", "uid", "gid", "size", "env")


@dataclass(frozen=True)
class RunMount:
    """One --mount of a RUN. READONLY: BuildKit's default (bind and secret read-only,
    cache and tmpfs writable) unless ro/rw says otherwise."""

    type: str = "bind"
    target: str = ""
    source: str = ""
    from_: str = ""
    readonly: bool = True
    id: str = ""
    sharing: str = ""
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False
    size: int | None = None
    env: str = ""

    def resolved(self, workdir: str, ssh_index: int = 0) -> RunMount:
        """With BuildKit's defaults filled in: an absolute target (a relative one is under
        WORKDIR), a cache's id (its target), a secret's id and target, an ssh mount's id
        ("default"), mode (0600) and target (the SSH_INDEX-th of the RUN's ssh mounts:
        /run/buildkit/ssh_agent.SSH_INDEX)."""
        if self.type == "ssh":
            target = self.target or f"/run/buildkit/ssh_agent.{ssh_index}"
            return replace(self, id=self.id or "default",
                           mode=0o600 if self.mode is None else self.mode,
                           target=posixpath.normpath(posixpath.join(workdir or "/", target)))
        if self.type == "secret":
            sid = self.source or self.id
            if not sid:
                if not self.target:
                    raise InvalidArgument("one of source, target required")
                sid = posixpath.basename(self.target)
            target = self.target
            if not target and not self.env:
                target = "/run/secrets/" + posixpath.basename(sid)
            if target:
                target = posixpath.normpath(posixpath.join(workdir or "/", target))
            return replace(self, id=sid, source="", target=target)
        target = posixpath.normpath(posixpath.join(workdir or "/", self.target))
        if target == "/":
            raise InvalidArgument(f'invalid mount target "{target}"')
        if self.type == "cache":
            return replace(self, target=target, id=self.id or target,
                           sharing=self.sharing or "shared")
        return replace(self, target=target)

    def key(self) -> dict[str, Any]:
        """What of the mount a step's cache key holds (a secret's value never)."""
        return {k: v for k, v in vars(self).items() if v not in ("", None)}


def resolve_mounts(mounts: list[RunMount], workdir: str) -> list[RunMount]:
    """A RUN's MOUNTS resolved (RunMount.resolved), its ssh mounts numbered in order."""
    out, n = [], 0
    for m in mounts:
        out.append(m.resolved(workdir, n))
        n += m.type == "ssh"
    return out


def ssh_auth_sock(mounts: list[RunMount], env: list[str]) -> list[str]:
    """The SSH_AUTH_SOCK a RUN with MOUNTS gets (BuildKit's): its first ssh mount's target,
    unless its environment ENV (KEY=VALUE) has one. Also when the mount is skipped (an id
    the build was not given): the RUN is the same step either way."""
    ssh = [m for m in mounts if m.type == "ssh"]
    if not ssh or any(e.startswith("SSH_AUTH_SOCK=") for e in env):
        return []
    return [f"SSH_AUTH_SOCK={ssh[0].target}"]


def parse_mount(spec: str, expand: Callable[[str], str] | None) -> RunMount:
    """SPEC (`type=cache,target=/root/.cache,sharing=locked`) as BuildKit's parser reads
    it, values through EXPAND (the stage's ARG and ENV). Without EXPAND (parse time) a
    value holding a variable is left for later, and `from` may hold none."""
    import csv

    try:
        fields = next(csv.reader([spec]), [])
    except csv.Error as e:
        raise InvalidArgument(f"failed to parse csv mounts: {e}") from None
    m: dict[str, Any] = {"type": "bind"}
    ro_auto = True
    for f in fields:
        key, eq, value = f.partition("=")
        key = key.lower()
        if not eq:
            if key in ("readonly", "ro"):
                m["readonly"], ro_auto = True, False
            elif key in ("readwrite", "rw"):
                m["readonly"], ro_auto = False, False
            elif key == "required":
                if m["type"] not in ("secret", "ssh"):
                    raise InvalidArgument(f"unexpected key '{key}' for mount type "
                                          f"'{m['type']}'")
                m["required"] = True
            else:
                raise InvalidArgument(f"invalid field '{f}' must be a key=value pair")
            continue
        if expand is not None:
            value = expand(value)
        elif "$" in value:
            if key == "from":
                raise InvalidArgument(f"'{key}' doesn't support variable expansion, define "
                                      "alias stage instead")
            continue  # checked when the step runs
        if key not in _KEYS:
            raise InvalidArgument(f"unexpected key '{key}' in '{f}'")
        if key == "type":
            kind = value.lower()
            if kind not in TYPES:
                raise InvalidArgument(f'unsupported mount type "{value}"')
            m["type"] = kind
        elif key == "from":
            m["from_"] = value
        elif key in ("source", "src"):
            m["source"] = value
        elif key in ("target", "dst", "destination"):
            m["target"] = value
        elif key in ("readonly", "ro", "readwrite", "rw", "required"):
            if value not in _TRUE + _FALSE:
                raise InvalidArgument(f"invalid value for {key}: {value}")
            on = value in _TRUE
            if key == "required":
                if m["type"] not in ("secret", "ssh"):
                    raise InvalidArgument(f"unexpected key '{key}' for mount type "
                                          f"'{m['type']}'")
                m["required"] = on
            else:
                m["readonly"] = on if key in ("readonly", "ro") else not on
                ro_auto = False
        elif key == "size":
            if m["type"] != "tmpfs":
                raise InvalidArgument(f"unexpected key '{key}' for mount type '{m['type']}'")
            from pallet.units import ram_in_bytes

            try:
                m["size"] = ram_in_bytes(value)
            except ValueError:
                raise InvalidArgument(f"invalid value for {key}: {value}") from None
        elif key == "id":
            m["id"] = value
        elif key == "env":
            if m["type"] != "secret":
                raise InvalidArgument(f"unexpected key '{key}' for mount type '{m['type']}'")
            m["env"] = value
        elif key == "sharing":
            if value.lower() not in SHARING:
                raise InvalidArgument(f'unsupported sharing value "{value}"')
            m["sharing"] = value.lower()
        elif key == "mode":
            try:
                m["mode"] = int(value, 8)
            except ValueError:
                raise InvalidArgument(f"invalid value {value} for mode") from None
        else:  # uid, gid
            if not value.isdigit():
                raise InvalidArgument(f"invalid value {value} for {key}")
            m[key] = int(value)
    kind = m["type"]
    if kind not in ("secret", "ssh", "cache"):
        for k in ("mode", "uid", "gid"):
            if m.get(k) is not None:
                raise InvalidArgument(f'{k} not allowed for "{kind}" type mounts')
    if ro_auto:
        m["readonly"] = kind not in ("cache", "tmpfs")
    if kind == "secret":
        if m.get("from_"):
            raise InvalidArgument("secret mount should not have a from")
        if m.get("sharing"):
            raise InvalidArgument("secret mount should not define sharing")
        if expand is not None and not (m.get("source") or m.get("target") or m.get("id")):
            raise InvalidArgument("invalid secret mount. one of source, target required")
        if m.get("source") and m.get("id"):
            raise InvalidArgument("both source and id can't be set")
    if kind == "cache" and (m.get("from_") or m.get("source")):
        raise InvalidArgument("a cache mount's from/source (a base for a new cache) is not "
                              "supported by pallet build: a cache starts empty")
    if m.get("sharing") and kind != "cache":
        raise InvalidArgument(f"invalid cache sharing set for {kind} mount")
    if kind == "ssh" and m.get("source"):
        raise InvalidArgument("ssh does not support source")
    return RunMount(**m)


# -- mount stubs ---------------------------------------------------------------------------
def missing_paths(rootfs: str, path: str) -> list[str]:
    """The components of PATH (in ROOTFS, as the container sees it) that do not exist:
    what the runtime will make as the mount point, deepest last."""
    from pallet.engine.users import open_in_rootfs

    parts = [p for p in path.split("/") if p]
    for i in range(1, len(parts) + 1):
        sub = "/" + "/".join(parts[:i])
        try:
            os.close(open_in_rootfs(rootfs, sub, os.O_PATH))
        except OSError:
            return ["/" + "/".join(parts[:j]) for j in range(i, len(parts) + 1)]
    return []


def remove_stubs(rootfs: str, paths: list[str]) -> None:
    """Remove PATHS (made as mount points) from ROOTFS, deepest first, each only if it is
    still an empty directory or an empty file: what the RUN put there itself stays."""
    from pallet.engine.users import open_in_rootfs

    for path in sorted(set(paths), key=lambda p: p.count("/"), reverse=True):
        try:
            pfd = open_in_rootfs(rootfs, posixpath.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            name = posixpath.basename(path)
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(name, dir_fd=pfd)
            elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(name, dir_fd=pfd)
        except OSError:
            pass  # not empty, or gone: the RUN's own
        finally:
            os.close(pfd)
