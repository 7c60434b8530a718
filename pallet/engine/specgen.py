"""Generate a container's OCI runtime spec (config.json) from its image config, the
user's options and the resolved user, with Docker's secure defaults.

Everything here is pure and returns data, so the CLI, the CRI server and the tests
share one implementation. The few functions that look at the host (HostInfo.detect,
Device.from_host, list_host_devices, reading a seccomp profile file named in
--security-opt) are small, named for what they read, and kept apart.

Defaults follow moby (daemon/pkg/oci/defaults.go and daemon/oci_linux.go):
the 14 default capabilities, the default seccomp profile evaluated against the
final bounding set, masked and read-only /proc and /sys paths, the standard /dev,
/proc, /sys and cgroup mounts, and a device cgroup that denies all but the usual
character devices. Where Docker relies on something inherited instead of written
down, we write it down — see DEFAULT_NOFILE.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import re
import signal
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pallet.engine import seccomp_default
from pallet.engine.users import ResolvedUser
from pallet.errors import InvalidArgument
from pallet.oci.linux.capabilities import CAPS

OCI_VERSION = "1.1.0"
DEFAULT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's default set, in Docker's order (so specs diff cleanly against docker's).
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip

# Indexed by capability number (capabilities(7)); the host's cap_last_cap cuts it.
ALL_CAPABILITIES: tuple[str, ...] = tuple(CAPS)

DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
    "/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
)  # fmt: skip
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)  # fmt: skip

# Docker writes no rlimits; its containers inherit containerd's, which the
# packaged containerd.service sets to LimitNOFILE=infinity, i.e. fs.nr_open =
# 1048576. pallet has no daemon to inherit from (the CLI may start containers
# from any shell), so it writes that observed value down to be deterministic —
# capped at what the host can grant (HostInfo.nofile_max), since a runtime
# without CAP_SYS_RESOURCE cannot raise a hard limit and the start would fail.
DEFAULT_NOFILE = 1048576
RLIM_INFINITY = 2**64 - 1

DEFAULT_SHM_SIZE = 64 << 20
# Where --init's binary (tini or similar) appears inside the container.
INIT_PATH = "/sbin/pallet-init"

NAMESPACE_TYPES = ("pid", "network", "ipc", "uts", "mount", "cgroup", "user")
# Docker's (and runc's) order for namespaces a container gets by default.
_DEFAULT_NAMESPACES = ("mount", "network", "uts", "pid", "ipc", "cgroup")

_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")

_ULIMITS = {
    "as": "RLIMIT_AS", "core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA",
    "fsize": "RLIMIT_FSIZE", "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK",
    "msgqueue": "RLIMIT_MSGQUEUE", "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE",
    "nproc": "RLIMIT_NPROC", "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO",
    "rttime": "RLIMIT_RTTIME", "sigpending": "RLIMIT_SIGPENDING", "stack": "RLIMIT_STACK",
}  # fmt: skip
ULIMIT_NAMES = frozenset(_ULIMITS)

# IPC-namespaced sysctls (runc's list); fs.mqueue.* is IPC-namespaced as a family.
_IPC_SYSCTLS = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
})  # fmt: skip
_SYSCTL_PART = re.compile(r"^[A-Za-z0-9_\-]+$")
# Printable text only: '+' and '=' are refused because a runtime that passes
# sysctls as "k=v+k2=v2" (CRI-O's pinns, CVE-2022-0811) lets one value smuggle
# another sysctl such as kernel.core_pattern; no namespaced sysctl needs them.
_SYSCTL_VALUE = re.compile(r"^[A-Za-z0-9_\-./:, \t]*$")
_CPUSET = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$")
_MIN_MEMORY = 6 << 20  # Docker's minimum; below it the runtime itself cannot start


@dataclass(frozen=True)
class HostInfo:
    """What spec generation needs to know about the host that will run the container."""

    machine: str = "x86_64"
    kernel: str = "6.1.0"
    cap_last_cap: int = len(ALL_CAPABILITIES) - 1
    ncpu: int = 0  # 0: unknown, do not check --cpus against it
    # The highest RLIMIT_NOFILE the runtime can grant: fs.nr_open with
    # CAP_SYS_RESOURCE, else the caller's own hard limit (nested or rootless).
    nofile_max: int = DEFAULT_NOFILE
    # The runtime's own bounding set (CapBnd): a cap outside it cannot be
    # granted, so "all" means these, as moby's "available in the current environment".
    cap_bounding: int = (1 << len(ALL_CAPABILITIES)) - 1

    @staticmethod
    @functools.cache
    def detect() -> HostInfo:
        """Read the running host (uname, cap_last_cap, CPU count) once per process."""
        uts = os.uname()
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                last = int(f.read().strip())
        except (OSError, ValueError):
            last = len(ALL_CAPABILITIES) - 1
        status = _proc_status_caps()
        return HostInfo(
            uts.machine,
            uts.release,
            last,
            os.cpu_count() or 0,
            _nofile_max(status.get("CapEff")),
            status.get("CapBnd", (1 << len(ALL_CAPABILITIES)) - 1),
        )

    def available_capabilities(self) -> list[str]:
        return [
            c
            for i, c in enumerate(ALL_CAPABILITIES[: self.cap_last_cap + 1])
            if self.cap_bounding >> i & 1
        ]


def _proc_status_caps() -> dict[str, int]:
    try:
        with open("/proc/self/status") as f:
            return {
                line.split(":")[0]: int(line.split()[1], 16)
                for line in f
                if line.startswith(("CapEff:", "CapBnd:"))
            }
    except (OSError, ValueError, IndexError):
        return {}


def _nofile_max(cap_eff: int | None) -> int:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = DEFAULT_NOFILE if hard == resource.RLIM_INFINITY else hard
    cap_sys_resource = 1 << ALL_CAPABILITIES.index("CAP_SYS_RESOURCE")
    if cap_eff is None or not cap_eff & cap_sys_resource:
        return hard
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return hard


@dataclass
class Mount:
    """A user mount: a bind of a host path (or resolved volume), or a tmpfs."""

    destination: str
    type: str = "bind"  # "bind" or "tmpfs"
    source: str = ""
    readonly: bool = False
    propagation: str = ""  # bind only; "" means rprivate
    options: list[str] = field(default_factory=list)  # tmpfs: size=, mode=, exec, ...
    # An idmapped bind (bind only): [container id, host id, size] mappings; an on-disk id
    # "container id" is seen as "host id" (then through the container's user namespace).
    uid_mappings: list[list[int]] = field(default_factory=list)
    gid_mappings: list[list[int]] = field(default_factory=list)


@dataclass
class Device:
    """A host device node made available inside the container."""

    path_in_container: str
    type: str  # "c" or "b"
    major: int
    minor: int
    permissions: str = "rwm"
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0
    path_on_host: str = ""

    @classmethod
    def from_host(
        cls, path_on_host: str, path_in_container: str = "", permissions: str = "rwm"
    ) -> Device:
        """Stat a host device node (following symlinks, like docker) into a Device."""
        _check_device_permissions(permissions, path_on_host)
        try:
            st = os.stat(path_on_host)
        except OSError as e:
            raise InvalidArgument(
                f"error gathering device information while adding custom device "
                f'"{path_on_host}": {(e.strerror or str(e)).lower()}'
            ) from None
        if stat.S_ISCHR(st.st_mode):
            kind = "c"
        elif stat.S_ISBLK(st.st_mode):
            kind = "b"
        else:
            raise InvalidArgument(
                f"{path_on_host!r} is not a character or block device; give a device node"
            )
        return cls(
            path_in_container=path_in_container or path_on_host,
            type=kind,
            major=os.major(st.st_rdev),
            minor=os.minor(st.st_rdev),
            permissions=permissions,
            file_mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            path_on_host=path_on_host,
        )


@dataclass(frozen=True)
class Ulimit:
    name: str
    soft: int
    hard: int


@dataclass
class ContainerOptions:
    """Everything a user (CLI flags, CRI ContainerConfig) may ask of one container."""

    command: list[str] = field(default_factory=list)  # replaces the image's Cmd
    entrypoint: list[str] | None = None  # None: the image's; [] or [""]: none
    env: list[str] = field(default_factory=list)  # "K=V"; a bare "K" unsets K
    workdir: str = ""
    user: str = ""  # resolved by users.resolve_user; see user_spec()
    group_add: list[str] = field(default_factory=list)
    hostname: str = ""
    domainname: str = ""
    tty: bool = False
    stdin: bool = False  # kept by the monitor; the OCI spec has no field for it
    read_only: bool = False
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    no_new_privileges: bool = False  # also settable via security_opt
    memory: int | None = None  # bytes
    memory_swap: int | None = None  # memory+swap bytes; None: 2x memory (docker); -1: unlimited
    memory_reservation: int | None = None
    oom_kill_disable: bool = False
    blkio_weight: int = 0  # 10..1000; 0: the kernel's default
    device_cgroup_rules: list[str] = field(default_factory=list)  # "c 1:3 rwm", as docker's
    cpus: float | None = None
    cpu_period: int | None = None  # CRI gives quota/period directly
    cpu_quota: int | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    pids_limit: int | None = None
    oom_score_adj: int | None = None
    hugepage_limits: dict[str, int] = field(default_factory=dict)  # "2MB" -> bytes
    sysctls: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    shm_size: int = DEFAULT_SHM_SIZE
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    init: bool = False
    init_path: str = ""  # host path of the init binary bind-mounted for --init
    ulimits: list[Ulimit] = field(default_factory=list)
    masked_paths: list[str] | None = None  # None: Docker's defaults
    readonly_paths: list[str] | None = None
    # type -> "" (a new one), "host" (share the host's) or a path such as a pod's
    # netns file or /proc/PID/ns/pid to join. Missing types get a new namespace.
    namespaces: dict[str, str] = field(default_factory=dict)
    # The user namespace's [container id, host id, size] mappings (with namespaces["user"]:
    # those of the namespace joined, which runc wants to see in the spec too).
    uid_mappings: list[list[int]] = field(default_factory=list)
    gid_mappings: list[list[int]] = field(default_factory=list)
    cgroups_path: str = ""
    rootfs: str = "rootfs"
    stop_signal: str = ""


@dataclass(frozen=True)
class SecurityOptions:
    seccomp: str = "builtin"  # "builtin", "unconfined", or a profile's JSON text
    no_new_privileges: bool = False
    apparmor: str = ""
    systempaths_unconfined: bool = False


# ---------------------------------------------------------------- capabilities


def normalize_capability(name: str) -> str:
    """'net_admin', 'NET_ADMIN' or 'CAP_NET_ADMIN' -> 'CAP_NET_ADMIN'; 'all' -> 'ALL'."""
    cap = name.strip().upper()
    if cap == "ALL":
        return cap
    if not cap.startswith("CAP_"):
        cap = "CAP_" + cap
    if cap not in ALL_CAPABILITIES:
        raise InvalidArgument(
            f"unknown capability: {name!r}; use a name from capabilities(7) such as "
            "NET_ADMIN or CAP_NET_ADMIN, or ALL"
        )
    return cap


def capability_set(
    cap_add: Iterable[str], cap_drop: Iterable[str], privileged: bool, host: HostInfo
) -> list[str]:
    """The container's capabilities from Docker's defaults, --cap-add/--cap-drop and
    --privileged, with Docker's precedence: add ALL beats drop ALL beats the rest."""
    available = host.available_capabilities()
    adds = [normalize_capability(c) for c in cap_add]
    drops = [normalize_capability(c) for c in cap_drop]
    for cap in adds:
        if cap != "ALL" and cap not in available:
            raise InvalidArgument(
                f"capability not supported by your kernel or not available in the current "
                f"environment: {cap!r}; drop it from --cap-add"
            )
    if privileged:
        return available
    if "ALL" in adds:
        return [c for c in available if c not in drops]
    if "ALL" in drops:
        base: list[str] = []
    else:
        base = [c for c in DEFAULT_CAPABILITIES if c not in drops]
    for cap in adds:
        if cap not in base:
            base.append(cap)
    return base


# ---------------------------------------------------------------- security options


def parse_security_opts(values: Iterable[str]) -> SecurityOptions:
    """Parse --security-opt values. A seccomp=PATH profile is read here (the one
    file read in this module) so the result holds the profile text, like the
    docker CLI sends it to the daemon."""
    seccomp, nnp, apparmor, systempaths = "builtin", False, "", False
    for raw in values:
        # Docker still accepts the legacy "key:value" form.
        key, sep, value = raw.partition("=")
        if not sep:
            key, sep, value = raw.partition(":")
        key = key.strip()
        if key == "seccomp":
            if not value:
                raise InvalidArgument(
                    "invalid --security-opt 'seccomp=': give seccomp=unconfined, "
                    "seccomp=builtin or seccomp=PATH to a profile"
                )
            seccomp = (
                value
                if value in ("unconfined", "builtin") or value.lstrip().startswith("{")
                else _read_profile(value)
            )
        elif key == "no-new-privileges":
            if not sep or value == "true":
                nnp = True
            elif value == "false":
                nnp = False
            else:
                raise InvalidArgument(
                    f"invalid --security-opt {raw!r}: no-new-privileges takes true or false"
                )
        elif key == "apparmor":
            if not value:
                raise InvalidArgument(
                    "invalid --security-opt 'apparmor=': name a profile or 'unconfined'"
                )
            apparmor = value
        elif key == "label":
            # SELinux labels are accepted for compatibility and ignored: pallet
            # does not label processes or files.
            continue
        elif key == "systempaths" and value == "unconfined":
            systempaths = True
        else:
            raise InvalidArgument(
                f"invalid --security-opt {raw!r}: expected seccomp=unconfined|builtin|PATH, "
                "no-new-privileges[=true|false], apparmor=PROFILE, label=..., "
                "or systempaths=unconfined"
            )
    return SecurityOptions(seccomp, nnp, apparmor, systempaths)


def _read_profile(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise InvalidArgument(
            f"opening seccomp profile {path!r} failed: {e.strerror}; give seccomp=unconfined, "
            "seccomp=builtin or the path of a JSON profile"
        ) from None


def seccomp_section(
    security: SecurityOptions, capabilities: list[str], host: HostInfo
) -> dict[str, Any] | None:
    """linux.seccomp for the container, or None when it runs unconfined."""
    if security.seccomp == "unconfined":
        return None
    if security.seccomp == "builtin":
        profile = seccomp_default.docker_default_profile()
    else:
        try:
            profile = json.loads(security.seccomp)
        except json.JSONDecodeError as e:
            raise InvalidArgument(
                f"seccomp profile is not valid JSON: {e}; fix the profile file"
            ) from None
    return seccomp_default.render_oci(
        profile, capabilities=capabilities, machine=host.machine, kernel=host.kernel
    )


# ---------------------------------------------------------------- sysctls


def validate_sysctls(sysctls: Mapping[str, str], namespaces: Mapping[str, str]) -> dict[str, str]:
    """Refuse sysctls that are not confined to a namespace the container owns, and
    values that could inject another sysctl (CVE-2022-0811)."""
    out: dict[str, str] = {}
    for name, value in sysctls.items():
        parts = re.split(r"[./]", name)
        if not name or not all(_SYSCTL_PART.match(p) for p in parts):
            raise InvalidArgument(
                f"invalid sysctl name {name!r}: use dotted names like net.ipv4.ip_forward"
            )
        if not isinstance(value, str) or not _SYSCTL_VALUE.match(value):
            raise InvalidArgument(
                f"invalid value {value!r} for sysctl {name!r}: only letters, digits, spaces "
                "and - _ . / : , are allowed ('+', '=' and control characters are refused)"
            )
        dotted = name.replace("/", ".")
        if dotted in _IPC_SYSCTLS or dotted.startswith("fs.mqueue."):
            ns = "ipc"
        elif dotted.startswith("net."):
            ns = "network"
        elif dotted == "kernel.domainname":
            ns = "uts"
        elif dotted == "kernel.hostname":
            raise InvalidArgument("sysctl 'kernel.hostname' is not allowed; use --hostname")
        else:
            raise InvalidArgument(
                f"sysctl {name!r} is not namespaced and would change the host; only "
                "net.*, fs.mqueue.*, kernel.domainname and the IPC kernel.* sysctls are allowed"
            )
        if namespaces.get(ns) == "host":
            raise InvalidArgument(
                f"sysctl {name!r} is not allowed when sharing the host's {ns} namespace"
            )
        out[name] = value
    return out


# ---------------------------------------------------------------- image config


def _abs_clean(path: str) -> str:
    # POSIX normpath keeps a leading "//"; a container path never needs it.
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def _image_section(image_config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    # Accept either a whole OCI image config ({"config": {...}, "rootfs": ...})
    # or just its "config" object.
    if not image_config:
        return {}
    inner = image_config.get("config")
    if isinstance(inner, Mapping):
        return inner
    return image_config


def user_spec(image_config: Mapping[str, Any] | None, opts: ContainerOptions) -> str:
    """The user string to resolve: the option's, else the image's (else root)."""
    return opts.user or _image_section(image_config).get("User") or ""


def process_args(image_config: Mapping[str, Any] | None, opts: ContainerOptions) -> list[str]:
    """Entrypoint + Cmd with docker's override rules (also CRI's: command/args)."""
    img = _image_section(image_config)
    if opts.entrypoint is not None:
        entrypoint = [a for a in opts.entrypoint if a != ""] if opts.entrypoint != [""] else []
        # A new entrypoint drops the image's Cmd, which was written for the old one.
        cmd = list(opts.command)
    else:
        entrypoint = list(img.get("Entrypoint") or [])
        cmd = list(opts.command) if opts.command else list(img.get("Cmd") or [])
    args = entrypoint + cmd
    if not args:
        raise InvalidArgument(
            "no command specified: the image has no Entrypoint or Cmd; give a command "
            "after the image name"
        )
    return args


def _env_merge(base: list[str], extra: Iterable[str]) -> list[str]:
    # Docker's ReplaceOrAppendEnvValues: same key replaces in place; a bare key unsets.
    out = list(base)
    for item in extra:
        if "\x00" in item:
            raise InvalidArgument(f"environment variable {item!r} contains a NUL byte")
        key, sep, _ = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid environment variable {item!r}: expected KEY=VALUE")
        idx = next((i for i, e in enumerate(out) if e.partition("=")[0] == key), None)
        if not sep:
            if idx is not None:
                del out[idx]
        elif idx is None:
            out.append(item)
        else:
            out[idx] = item
    return out


def process_env(
    image_config: Mapping[str, Any] | None, opts: ContainerOptions, home: str = "/root"
) -> list[str]:
    """PATH, HOSTNAME, TERM, then the image's Env, then the user's, then HOME if unset."""
    env = [f"PATH={DEFAULT_PATH_ENV}"]
    if opts.hostname:
        env.append(f"HOSTNAME={opts.hostname}")
    if opts.tty:
        env.append("TERM=xterm")
    env = _env_merge(env, _image_section(image_config).get("Env") or [])
    env = _env_merge(env, opts.env)
    # runc adds HOME from passwd when absent; writing it keeps every runtime equal.
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={home or '/'}")
    return env


def working_dir(image_config: Mapping[str, Any] | None, opts: ContainerOptions) -> str:
    if opts.workdir:
        if not opts.workdir.startswith("/"):
            raise InvalidArgument(
                f"the working directory {opts.workdir!r} is invalid, it needs to be an absolute path"
            )
        return _abs_clean(opts.workdir)
    img_dir = _image_section(image_config).get("WorkingDir") or "/"
    return _abs_clean(img_dir)


def image_volumes(image_config: Mapping[str, Any] | None) -> list[str]:
    """The image's VOLUME paths: the engine makes an anonymous volume for each one
    that no user mount covers, then passes it to generate_spec as a Mount."""
    return sorted(_abs_clean(v) for v in (_image_section(image_config).get("Volumes") or {}))


def exposed_ports(image_config: Mapping[str, Any] | None) -> list[tuple[int, str]]:
    """The image's EXPOSE entries as (port, protocol), protocol defaulting to tcp."""
    out = []
    for key in _image_section(image_config).get("ExposedPorts") or {}:
        port, _, proto = key.partition("/")
        proto = proto or "tcp"
        if not port.isdigit() or not 0 < int(port) < 65536 or proto not in ("tcp", "udp", "sctp"):
            raise InvalidArgument(
                f"image exposes an invalid port {key!r}; expected PORT[/tcp|udp|sctp]"
            )
        out.append((int(port), proto))
    return sorted(set(out))


def merged_labels(image_config: Mapping[str, Any] | None, opts: ContainerOptions) -> dict[str, str]:
    """The image's labels overridden by the user's: what the container is filtered by."""
    labels = dict(_image_section(image_config).get("Labels") or {})
    labels.update(opts.labels)
    return labels


def stop_signal(image_config: Mapping[str, Any] | None, opts: ContainerOptions) -> int:
    """The signal `stop` sends first: the option's, else the image's, else SIGTERM."""
    text = opts.stop_signal or _image_section(image_config).get("StopSignal") or "SIGTERM"
    return parse_signal(text)


def parse_signal(text: str) -> int:
    """'SIGTERM', 'TERM', 'term', '15' or 'SIGRTMIN+3' -> the signal number."""
    raw = text.strip()
    if raw.isdigit():
        num = int(raw)
        if 0 < num <= signal.SIGRTMAX:
            return num
    else:
        name = raw.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        m = re.fullmatch(r"SIGRTMIN\+(\d+)", name)
        if m and signal.SIGRTMIN + int(m.group(1)) <= signal.SIGRTMAX:
            return signal.SIGRTMIN + int(m.group(1))
        sig = signal.Signals.__members__.get(name)
        if sig is not None:
            return int(sig)
    raise InvalidArgument(f"invalid signal: {text!r}; use a name like SIGTERM or a number")


# ---------------------------------------------------------------- ulimits, devices


def parse_ulimit(text: str) -> Ulimit:
    """'nofile=1024' or 'nofile=1024:2048' (-1 is unlimited), as docker's --ulimit."""
    name, sep, values = text.partition("=")
    if not sep or name not in _ULIMITS:
        raise InvalidArgument(
            f"invalid ulimit {text!r}: expected NAME=SOFT[:HARD] with NAME one of "
            + ", ".join(sorted(_ULIMITS))
        )
    soft_s, _, hard_s = values.partition(":")
    try:
        soft = int(soft_s)
        hard = int(hard_s) if hard_s else soft
    except ValueError:
        raise InvalidArgument(f"invalid ulimit {text!r}: limits must be integers or -1") from None
    soft, hard = (RLIM_INFINITY if v == -1 else v for v in (soft, hard))
    if soft < 0 or hard < 0:
        raise InvalidArgument(f"invalid ulimit {text!r}: limits must be >= 0 or -1 for unlimited")
    if soft > hard:
        raise InvalidArgument(
            f"invalid ulimit {text!r}: soft limit {soft} is above hard limit {hard}"
        )
    return Ulimit(name, soft, hard)


def _check_device_permissions(perms: str, where: str) -> None:
    if not perms or any(c not in "rwm" for c in perms) or len(set(perms)) != len(perms):
        raise InvalidArgument(
            f"invalid device permissions {perms!r} for {where!r}: use a combination of r, w and m"
        )


def parse_device(text: str) -> Device:
    """--device HOST[:CONTAINER][:PERMS], statting HOST (a host read)."""
    parts = text.split(":")
    host, ctr, perms = parts[0], "", "rwm"
    if len(parts) == 2:
        if parts[1] and all(c in "rwm" for c in parts[1]):
            perms = parts[1]
        else:
            ctr = parts[1]
    elif len(parts) == 3:
        ctr, perms = parts[1], parts[2]
    elif len(parts) > 3:
        raise InvalidArgument(
            f"invalid device specification {text!r}: expected HOST[:CONTAINER][:PERMS]"
        )
    if not host.startswith("/") or (ctr and not ctr.startswith("/")):
        raise InvalidArgument(f"invalid device specification {text!r}: paths must be absolute")
    return Device.from_host(host, ctr, perms)


_DEVICE_CGROUP_RULE = re.compile(r"^([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})$")


def parse_device_cgroup_rule(text: str) -> dict[str, Any]:
    """--device-cgroup-rule 'c 1:3 rwm' ('a', '*' for any) -> an allow rule of
    linux.resources.devices."""
    m = _DEVICE_CGROUP_RULE.match(text)
    if not m:
        raise InvalidArgument(f"invalid device cgroup format '{text}'")
    kind, major, minor, access = m.groups()
    rule: dict[str, Any] = {"allow": True, "type": kind, "access": access}
    if major != "*":
        rule["major"] = int(major)
    if minor != "*":
        rule["minor"] = int(minor)
    return rule


def list_host_devices(root: str = "/dev") -> list[Device]:
    """Every device node under /dev, as --privileged exposes them (a host read)."""
    # The container gets its own pts, shm and mqueue; the rest are not device trees.
    skip_dirs = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (dirpath == root and d in skip_dirs)]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if path == os.path.join(root, "console"):
                continue  # the container's console is its own pty
            try:
                st = os.lstat(path)
            except OSError:
                continue  # gone while walking
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                out.append(
                    Device(
                        path_in_container=path,
                        type="c" if stat.S_ISCHR(st.st_mode) else "b",
                        major=os.major(st.st_rdev),
                        minor=os.minor(st.st_rdev),
                        file_mode=stat.S_IMODE(st.st_mode),
                        uid=st.st_uid,
                        gid=st.st_gid,
                        path_on_host=path,
                    )
                )
    return out


# ---------------------------------------------------------------- mounts


def _clean_destination(dest: str) -> str:
    if not dest.startswith("/"):
        raise InvalidArgument(f"invalid mount path {dest!r}: mount path must be absolute")
    if ".." in dest.split("/"):
        raise InvalidArgument(f"invalid mount path {dest!r}: '..' is not allowed")
    clean = _abs_clean(dest)
    if clean == "/":
        raise InvalidArgument("invalid mount destination '/': the root cannot be a mount target")
    return clean


def merge_tmpfs_options(options: Iterable[str]) -> list[str]:
    """Merge tmpfs options left to right so a later flag wins (exec beats noexec,
    the last size= counts), as moby's MergeTmpfsOptions."""
    opposite = {
        "exec": "noexec", "suid": "nosuid", "dev": "nodev", "ro": "rw",
        "atime": "noatime", "diratime": "nodiratime",
    }  # fmt: skip
    opposite.update({v: k for k, v in list(opposite.items())})
    out: list[str] = []
    for opt in options:
        opt = opt.strip()
        if not opt:
            continue
        key = opt.partition("=")[0]
        if "=" in opt:
            out = [o for o in out if o.partition("=")[0] != key]
        else:
            out = [o for o in out if o not in (opt, opposite.get(opt))]
        out.append(opt)
    return out


def _user_mount(m: Mount) -> dict[str, Any]:
    dest = _clean_destination(m.destination)
    if m.type == "bind":
        if not m.source.startswith("/"):
            raise InvalidArgument(
                f"invalid bind mount source {m.source!r} for {dest}: the source must be an absolute path"
            )
        if m.propagation and m.propagation not in _PROPAGATIONS:
            raise InvalidArgument(
                f"invalid propagation {m.propagation!r} for {dest}: use one of "
                + ", ".join(_PROPAGATIONS)
            )
        opts = ["rbind", m.propagation or "rprivate"]
        if m.readonly:
            opts.append("ro")
        opts.extend(o for o in m.options if o not in opts)
        out = {"destination": dest, "type": "bind", "source": m.source, "options": opts}
        if m.uid_mappings or m.gid_mappings:
            out["uidMappings"] = id_mappings(m.uid_mappings)
            out["gidMappings"] = id_mappings(m.gid_mappings)
        return out
    if m.type == "tmpfs":
        opts = merge_tmpfs_options(
            ["noexec", "nosuid", "nodev", *m.options, *(["ro"] if m.readonly else [])]
        )
        return {"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": opts}
    raise InvalidArgument(f"invalid mount type {m.type!r} for {dest}: use bind or tmpfs")


def id_mappings(maps: Iterable[Iterable[int]]) -> list[dict[str, int]]:
    """[container, host, size] triples as OCI LinuxIDMapping objects."""
    return [{"containerID": c, "hostID": h, "size": n} for c, h, n in maps]


def root_ids(uids: Iterable[Iterable[int]] | None,
             gids: Iterable[Iterable[int]] | None) -> tuple[int, int]:
    """The host uid and gid of a user namespace's root (container id 0); -1: unmapped."""
    def host_of_zero(maps: Iterable[Iterable[int]] | None) -> int:
        for container, host, size in maps or []:
            if container <= 0 < container + size:
                return host - container
        return -1
    return host_of_zero(uids), host_of_zero(gids)


def default_mounts(privileged: bool, shm_size: int) -> list[dict[str, Any]]:
    """Docker's standard mounts; --privileged makes /sys and the cgroup tree writable."""
    if shm_size <= 0:
        raise InvalidArgument(f"invalid shm size {shm_size}: give a positive number of bytes")
    ro = [] if privileged else ["ro"]
    return [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", *ro],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": [*ro, "nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_size}"],
        },
    ]


def build_mounts(opts: ContainerOptions) -> list[dict[str, Any]]:
    """Default mounts minus those a user mount replaces, then user mounts, parents first."""
    user = [_user_mount(m) for m in opts.mounts]
    seen: set[str] = set()
    for m in user:
        if m["destination"] in seen:
            raise InvalidArgument(f"Duplicate mount point: {m['destination']}")
        seen.add(m["destination"])
    if opts.init:
        if not opts.init_path:
            raise InvalidArgument(
                "--init needs an init binary (such as tini); set init_path in pallet's config"
            )
        if INIT_PATH in seen:
            raise InvalidArgument(
                f"--init: {INIT_PATH} is already a mount point; remove that mount"
            )
        user.append(
            {
                "destination": INIT_PATH,
                "type": "bind",
                "source": opts.init_path,
                "options": ["rbind", "ro", "rprivate"],
            }
        )
    defaults = [
        m
        for m in default_mounts(opts.privileged, opts.shm_size)
        if m["destination"] not in seen
        and not (m["destination"].startswith("/dev/") and "/dev" in seen)
    ]
    # Stable sort by depth so /data is mounted before /data/cache.
    user.sort(key=lambda m: m["destination"].count("/"))
    return defaults + user


def _rootfs_propagation(mounts: list[dict[str, Any]]) -> str:
    # A shared or slave bind only propagates if the rootfs mount allows it.
    props = {o for m in mounts if m["type"] == "bind" for o in m["options"]}
    if props & {"shared", "rshared"}:
        return "rshared"
    if props & {"slave", "rslave"}:
        return "rslave"
    return ""


# ---------------------------------------------------------------- resources


_DEFAULT_DEVICE_RULES: list[dict[str, Any]] = [
    {"allow": False, "access": "rwm"},
    # mknod of any node is allowed; using one needs a rule below.
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},  # null
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},  # zero
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},  # full
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},  # random
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},  # urandom
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},  # tty
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},  # console
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},  # ptmx
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},  # pts/*
]
# Docker's spec also lists "deny c 10:229" (fuse); the deny-all above already
# covers it, and after a wildcard allow cgroup v1 cannot express it (runc refuses
# to "punch a hole" in c *:* m), so it is left out.


def build_resources(opts: ContainerOptions, host: HostInfo) -> dict[str, Any]:
    """linux.resources: device cgroup, memory, cpu, pids and hugepages."""
    res: dict[str, Any] = {}
    if opts.privileged:
        res["devices"] = [{"allow": True, "access": "rwm"}]
    else:
        rules = [dict(r) for r in _DEFAULT_DEVICE_RULES]
        for d in opts.devices:
            rules.append(
                {
                    "allow": True,
                    "type": d.type,
                    "major": d.major,
                    "minor": d.minor,
                    "access": d.permissions,
                }
            )
        rules += [parse_device_cgroup_rule(r) for r in opts.device_cgroup_rules]
        res["devices"] = rules
    if opts.blkio_weight:
        if not 10 <= opts.blkio_weight <= 1000:
            raise InvalidArgument("Range of blkio weight is from 10 to 1000")
        res["blockIO"] = {"weight": opts.blkio_weight}

    memory: dict[str, Any] = {}
    if opts.memory is not None and opts.memory != 0:
        if opts.memory < _MIN_MEMORY:
            raise InvalidArgument(f"minimum memory limit allowed is 6MB; got {opts.memory} bytes")
        memory["limit"] = opts.memory
    if opts.memory_swap is not None and opts.memory_swap != 0:
        if opts.memory_swap != -1:
            if "limit" not in memory:
                raise InvalidArgument(
                    "you should always set the memory limit when using the memory+swap limit"
                )
            if opts.memory_swap < memory["limit"]:
                raise InvalidArgument(
                    "minimum memory+swap limit should be larger than the memory limit; "
                    "see --memory-swap"
                )
        memory["swap"] = opts.memory_swap
    elif "limit" in memory:
        # Docker's default: as much swap as memory.
        memory["swap"] = 2 * memory["limit"]
    if opts.memory_reservation:
        memory["reservation"] = opts.memory_reservation
    if opts.oom_kill_disable:
        memory["disableOOMKiller"] = True
    if memory:
        res["memory"] = memory

    cpu: dict[str, Any] = {}
    if opts.cpus is not None and opts.cpus != 0:
        if opts.cpus < 0.01 or (host.ncpu and opts.cpus > host.ncpu):
            upper = f"{host.ncpu:.2f}" if host.ncpu else "the number of CPUs"
            raise InvalidArgument(
                f"invalid --cpus {opts.cpus}: the range of CPUs is from 0.01 to {upper}"
            )
        if opts.cpu_quota or opts.cpu_period:
            raise InvalidArgument(
                "--cpus conflicts with a CPU quota or period; give only one of them"
            )
        cpu["period"] = 100000
        cpu["quota"] = round(opts.cpus * 100000)
    else:
        if opts.cpu_period:
            if not 1000 <= opts.cpu_period <= 1000000:
                raise InvalidArgument(
                    f"CPU period {opts.cpu_period} out of range: use 1000 to 1000000 (microseconds)"
                )
            cpu["period"] = opts.cpu_period
        if opts.cpu_quota:
            if opts.cpu_quota != -1 and opts.cpu_quota < 1000:
                raise InvalidArgument(
                    f"CPU quota {opts.cpu_quota} too small: use at least 1000 (1ms) or -1"
                )
            cpu["quota"] = opts.cpu_quota
    if opts.cpu_shares:
        if opts.cpu_shares < 0:
            raise InvalidArgument(f"invalid CPU shares {opts.cpu_shares}: use a positive number")
        # The kernel's range; it would clamp anyway, we just say so in the spec.
        cpu["shares"] = min(max(opts.cpu_shares, 2), 262144)
    for value, key in ((opts.cpuset_cpus, "cpus"), (opts.cpuset_mems, "mems")):
        if value:
            if not _CPUSET.match(value):
                raise InvalidArgument(f"invalid cpuset {value!r}: use a list like 0-3,5")
            cpu[key] = value
    if cpu:
        res["cpu"] = cpu

    if opts.pids_limit is not None and opts.pids_limit > 0:
        res["pids"] = {"limit": opts.pids_limit}
    if opts.hugepage_limits:
        res["hugepageLimits"] = [
            {"pageSize": k, "limit": v} for k, v in sorted(opts.hugepage_limits.items())
        ]
    return res


# ---------------------------------------------------------------- namespaces, rlimits


def build_namespaces(namespaces: Mapping[str, str]) -> list[dict[str, str]]:
    for kind, value in namespaces.items():
        if kind not in NAMESPACE_TYPES:
            raise InvalidArgument(
                f"unknown namespace type {kind!r}; use one of " + ", ".join(NAMESPACE_TYPES)
            )
        if value not in ("", "host") and not value.startswith("/"):
            raise InvalidArgument(
                f"invalid {kind} namespace {value!r}: give 'host' or the absolute path of a namespace file"
            )
    if namespaces.get("mount") == "host":
        raise InvalidArgument("a container cannot share the host's mount namespace")
    out = []
    for kind in _DEFAULT_NAMESPACES:
        value = namespaces.get(kind, "")
        if value == "host":
            continue
        out.append({"type": kind, "path": value} if value else {"type": kind})
    # A user namespace only when asked for: ids maps are the caller's business.
    if namespaces.get("user") not in (None, "host"):
        value = namespaces["user"]
        out.append({"type": "user", "path": value} if value else {"type": "user"})
    return out


def build_rlimits(ulimits: Iterable[Ulimit], host: HostInfo) -> list[dict[str, Any]]:
    nofile = min(DEFAULT_NOFILE, host.nofile_max)
    limits = {"RLIMIT_NOFILE": (nofile, nofile)}
    for u in ulimits:
        limits[_ULIMITS[u.name]] = (u.soft, u.hard)
    return [{"type": k, "soft": s, "hard": h} for k, (s, h) in limits.items()]


# ---------------------------------------------------------------- the spec


def generate_spec(
    image_config: Mapping[str, Any] | None,
    opts: ContainerOptions,
    user: ResolvedUser | None = None,
    host: HostInfo | None = None,
) -> dict[str, Any]:
    """The container's config.json as a dict.

    USER is users.resolve_user(rootfs, user_spec(image_config, opts), opts.group_add);
    HOST defaults to the running host. Bad options raise InvalidArgument.
    """
    host = host or HostInfo.detect()
    user = user or ResolvedUser(home="/root")
    security = parse_security_opts(opts.security_opt)
    caps = capability_set(opts.cap_add, opts.cap_drop, opts.privileged, host)

    args = process_args(image_config, opts)
    if opts.init:
        args = [INIT_PATH, "--", *args]
    if opts.oom_score_adj is not None and not -1000 <= opts.oom_score_adj <= 1000:
        raise InvalidArgument(
            f"invalid oom score adjustment {opts.oom_score_adj}: use -1000 to 1000"
        )

    proc_user: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
    if user.additional_gids:
        proc_user["additionalGids"] = list(user.additional_gids)
    process: dict[str, Any] = {
        "terminal": opts.tty,
        "user": proc_user,
        "args": args,
        "env": process_env(image_config, opts, user.home),
        "cwd": working_dir(image_config, opts),
        "capabilities": {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)},
        "rlimits": build_rlimits(opts.ulimits, host),
        "noNewPrivileges": opts.no_new_privileges or security.no_new_privileges,
    }
    if opts.oom_score_adj is not None:
        process["oomScoreAdj"] = opts.oom_score_adj
    if security.apparmor and not opts.privileged:
        process["apparmorProfile"] = security.apparmor

    mounts = build_mounts(opts)
    linux: dict[str, Any] = {
        "namespaces": build_namespaces(opts.namespaces),
        "resources": build_resources(opts, host),
    }
    if opts.cgroups_path:
        linux["cgroupsPath"] = opts.cgroups_path
    if opts.uid_mappings or opts.gid_mappings:
        if opts.namespaces.get("user") in (None, "host"):
            raise InvalidArgument("uid/gid mappings need a user namespace of the container's "
                                  "own or one to join")
        linux["uidMappings"] = id_mappings(opts.uid_mappings)
        linux["gidMappings"] = id_mappings(opts.gid_mappings)
    sysctls = validate_sysctls(opts.sysctls, opts.namespaces)
    if sysctls:
        linux["sysctl"] = sysctls
    if opts.privileged or security.systempaths_unconfined:
        linux["maskedPaths"], linux["readonlyPaths"] = [], []
    else:
        linux["maskedPaths"] = list(
            DEFAULT_MASKED_PATHS if opts.masked_paths is None else opts.masked_paths
        )
        linux["readonlyPaths"] = list(
            DEFAULT_READONLY_PATHS if opts.readonly_paths is None else opts.readonly_paths
        )
    devices = opts.devices
    if devices:
        linux["devices"] = [
            {
                "path": _clean_destination(d.path_in_container),
                "type": d.type,
                "major": d.major,
                "minor": d.minor,
                "fileMode": d.file_mode,
                "uid": d.uid,
                "gid": d.gid,
            }
            for d in devices
        ]
        for d in devices:
            _check_device_permissions(d.permissions, d.path_in_container)
    # --privileged means no seccomp at all, even with a profile given (as docker).
    if not opts.privileged:
        sec = seccomp_section(security, caps, host)
        if sec is not None:
            linux["seccomp"] = sec
    propagation = _rootfs_propagation(mounts)
    if propagation:
        linux["rootfsPropagation"] = propagation

    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": opts.rootfs, "readonly": opts.read_only},
        "mounts": mounts,
        "linux": linux,
    }
    uts = opts.namespaces.get("uts", "")
    # A hostname needs a UTS namespace of the container's own; a pod member
    # inherits the pod's hostname from the namespace it joins.
    if opts.hostname and uts == "":
        if len(opts.hostname) > 64 or not _HOSTNAME.match(opts.hostname):
            raise InvalidArgument(
                f"invalid hostname {opts.hostname!r}: use up to 64 letters, digits, '-' and '.'"
            )
        spec["hostname"] = opts.hostname
    if opts.domainname and uts == "":
        spec["domainname"] = opts.domainname
    if opts.annotations:
        spec["annotations"] = dict(opts.annotations)
    return spec
