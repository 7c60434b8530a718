"""The OCI runtime config (config.json): load, validate, and the default spec.

Validation happens in the runtime's parent before anything is created, so a bad
config fails with one line naming the field and leaves nothing behind.
"""

from __future__ import annotations

import os

from pallet.errors import NotFound, SpecError
from pallet.oci import jsonlite
from pallet.oci.state import validate_id  # noqa: F401 - part of this module's API

TYPE_CHECKING = False  # typing costs pallet-runc ~10 ms to import; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

    Spec = dict[str, Any]
else:
    Spec = dict

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")


def load(bundle: str) -> Spec:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file: give a bundle directory holding config.json "
                       "(pallet-runc spec writes one)") from None
    try:
        spec = jsonlite.loads(raw)
    except ValueError as e:
        raise SpecError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: the config must be a JSON object")
    validate(spec, bundle)
    return spec


def _type(value: Any, kind: type | tuple[type, ...], field: str) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise SpecError(f"{field}: expected {_json_name(names)}, got {jsonlite.dumps(value)}")


def _json_name(name: str) -> str:
    return {"str": "a string", "int": "an integer", "list": "an array", "dict": "an object",
            "bool": "a boolean"}.get(name, name)


def _opt(obj: dict, key: str, kind: type | tuple[type, ...], field: str) -> Any:
    value = obj.get(key)
    if value is not None:
        _type(value, kind, f"{field}.{key}")
    return value


def rootfs_path(spec: Spec, bundle: str) -> str:
    root = spec["root"]["path"]
    return root if os.path.isabs(root) else os.path.join(bundle, root)


def validate(spec: Spec, bundle: str) -> None:
    """Check the fields the runtime relies on; raise SpecError naming the first bad one."""
    ver = spec.get("ociVersion")
    if not isinstance(ver, str) or not ver.startswith("1."):
        raise SpecError(f"ociVersion: expected a 1.x version string, got {jsonlite.dumps(ver)}")
    root = spec.get("root")
    _type(root, dict, "root")
    _type(root.get("path"), str, "root.path")
    _opt(root, "readonly", bool, "root")
    rootfs = rootfs_path(spec, bundle)
    if not os.path.isdir(rootfs):
        raise NotFound(f"root.path: rootfs {rootfs} does not exist or is not a directory")
    _opt(spec, "hostname", str, "")
    _opt(spec, "domainname", str, "")
    proc = spec.get("process")
    if proc is not None:
        validate_process(proc, "process")
    mounts = _opt(spec, "mounts", list, "") or []
    for i, m in enumerate(mounts):
        f = f"mounts[{i}]"
        _type(m, dict, f)
        dest = m.get("destination")
        _type(dest, str, f"{f}.destination")
        if not dest.startswith("/"):
            raise SpecError(f"{f}.destination: {dest!r} must be an absolute path")
        _opt(m, "type", str, f)
        _opt(m, "source", str, f)
        for j, o in enumerate(_opt(m, "options", list, f) or []):
            _type(o, str, f"{f}.options[{j}]")
    for h, hooks in (_opt(spec, "hooks", dict, "") or {}).items():
        _type(hooks, list, f"hooks.{h}")
        for i, hook in enumerate(hooks):
            _type(hook, dict, f"hooks.{h}[{i}]")
            _type(hook.get("path"), str, f"hooks.{h}[{i}].path")
            if not os.path.isabs(hook["path"]):
                raise SpecError(f"hooks.{h}[{i}].path: {hook['path']!r} must be absolute")
    linux = _opt(spec, "linux", dict, "")
    if linux is not None:
        validate_linux(linux)


def validate_process(proc: Any, field: str) -> None:
    _type(proc, dict, field)
    args = proc.get("args")
    _type(args, list, f"{field}.args")
    if not args:
        raise SpecError(f"{field}.args: must name a command to run")
    for i, a in enumerate(args):
        _type(a, str, f"{field}.args[{i}]")
    cwd = proc.get("cwd", "/")
    _type(cwd, str, f"{field}.cwd")
    if not cwd.startswith("/"):
        raise SpecError(f"{field}.cwd: {cwd!r} must be an absolute path")
    for i, e in enumerate(_opt(proc, "env", list, field) or []):
        _type(e, str, f"{field}.env[{i}]")
        if "=" not in e:
            raise SpecError(f"{field}.env[{i}]: {e!r} is not of the form NAME=value")
    _opt(proc, "terminal", bool, field)
    _opt(proc, "noNewPrivileges", bool, field)
    _opt(proc, "oomScoreAdj", int, field)
    user = _opt(proc, "user", dict, field) or {}
    _opt(user, "uid", int, f"{field}.user")
    _opt(user, "gid", int, f"{field}.user")
    _opt(user, "umask", int, f"{field}.user")
    for i, g in enumerate(_opt(user, "additionalGids", list, f"{field}.user") or []):
        _type(g, int, f"{field}.user.additionalGids[{i}]")
    caps = _opt(proc, "capabilities", dict, field)
    if caps:
        from pallet.oci.linux import capabilities

        for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"):
            for i, c in enumerate(_opt(caps, kind, list, f"{field}.capabilities") or []):
                _type(c, str, f"{field}.capabilities.{kind}[{i}]")
        capabilities.validate(caps)
    rlimits = _opt(proc, "rlimits", list, field)
    if rlimits:
        from pallet.oci.linux import rlimits as rl

        rl.validate(rlimits)


def validate_linux(linux: dict) -> None:
    seen = set()
    for i, ns in enumerate(_opt(linux, "namespaces", list, "linux") or []):
        f = f"linux.namespaces[{i}]"
        _type(ns, dict, f)
        t = ns.get("type")
        if t not in NAMESPACE_TYPES:
            raise SpecError(f"{f}.type: unknown namespace {jsonlite.dumps(t)}: use one of "
                            + ", ".join(NAMESPACE_TYPES))
        if t in seen:
            raise SpecError(f"{f}.type: namespace {t!r} is listed twice")
        seen.add(t)
        path = _opt(ns, "path", str, f)
        if path and not os.path.exists(path):
            raise NotFound(f"{f}.path: namespace file {path} does not exist")
    for key in ("uidMappings", "gidMappings"):
        for i, m in enumerate(_opt(linux, key, list, "linux") or []):
            for k in ("containerID", "hostID", "size"):
                _type(m.get(k), int, f"linux.{key}[{i}].{k}")
    if (linux.get("uidMappings") or linux.get("gidMappings")) and "user" not in seen:
        raise SpecError("linux.uidMappings: id mappings need a user namespace in "
                        "linux.namespaces")
    for i, d in enumerate(_opt(linux, "devices", list, "linux") or []):
        f = f"linux.devices[{i}]"
        _type(d, dict, f)
        _type(d.get("path"), str, f"{f}.path")
        if d.get("type") not in ("c", "b", "u", "p"):
            raise SpecError(f"{f}.type: {jsonlite.dumps(d.get('type'))} is not one of c, b, u, p")
    own = {n.get("type") for n in linux.get("namespaces") or [] if not n.get("path")}
    joined = {n.get("type") for n in linux.get("namespaces") or [] if n.get("path")}
    for k, v in (_opt(linux, "sysctl", dict, "linux") or {}).items():
        _type(v, str, f"linux.sysctl.{k}")
        validate_sysctl(k, own | joined)

    _opt(linux, "cgroupsPath", str, "linux")
    _opt(linux, "resources", dict, "linux")
    for key in ("maskedPaths", "readonlyPaths"):
        for i, p in enumerate(_opt(linux, key, list, "linux") or []):
            _type(p, str, f"linux.{key}[{i}]")
    _opt(linux, "seccomp", dict, "linux")
    prop = linux.get("rootfsPropagation")
    if prop is not None and prop not in ("shared", "slave", "private", "unbindable",
                                          "rshared", "rslave", "rprivate", "runbindable"):
        raise SpecError(f"linux.rootfsPropagation: unknown propagation {jsonlite.dumps(prop)}")


_IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}
_SYSCTL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def validate_sysctl(key: str, namespaces: set) -> None:
    """Only sysctls of a namespace the container has of its own may be set (as runc)."""
    field = f"linux.sysctl.{key}"
    parts = key.split(".")
    if not key or not set(key) <= _SYSCTL_CHARS or any(p in ("", "..") for p in parts):
        raise SpecError(f"{field}: invalid sysctl name {key!r}")
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        need = "ipc"
    elif key in ("kernel.hostname", "kernel.domainname"):
        need = "uts"
    elif key.startswith("net."):
        need = "network"
    else:
        raise SpecError(f"{field}: sysctl {key!r} is not in a separate kernel namespace: "
                        "it would change the host")
    if need not in namespaces:
        raise SpecError(f"{field}: sysctl {key!r} needs the container to have its own {need} "
                        "namespace")


DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_spec(rootless: bool = False) -> Spec:
    """The same default config `runc spec` writes (runc 1.1)."""
    spec: Spec = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(DEFAULT_CAPS) for k in
                             ("bounding", "effective", "inheritable", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount",
                                                  "cgroup")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }
    if rootless:
        linux = spec["linux"]
        linux.pop("resources")
        linux["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup",
                                                      "user")]
        uid, gid = os.getuid(), os.getgid()
        linux["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
        for m in spec["mounts"]:
            if m["destination"] == "/sys":
                m.update(type="none", source="/sys",
                         options=["rbind", "nosuid", "noexec", "nodev", "ro"])
            if m["destination"] == "/dev/pts":
                m["options"].remove("gid=5")
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != "/dev/mqueue"] + [
            {"destination": "/dev/mqueue", "type": "none", "source": "/dev/mqueue",
             "options": ["bind", "nosuid", "noexec", "nodev"]}]
    return spec
