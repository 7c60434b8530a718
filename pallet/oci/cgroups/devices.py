"""Device access rules: OCI entries folded into one allow- or deny-list, as the v1 kernel keeps them.

Both backends start from that result: v1 writes it to devices.allow/deny, v2 compiles it to BPF.
"""

from dataclasses import dataclass, field

from pallet.oci.cgroups.errors import InvalidCgroupValue

WILDCARD = -1


@dataclass(frozen=True)
class Rule:
    """One device rule; type is "a", "b" or "c"; major/minor -1 match any."""

    allow: bool
    type: str = "a"
    major: int = WILDCARD
    minor: int = WILDCARD
    access: str = "rwm"

    def v1_line(self) -> str:
        """The devices.allow / devices.deny line for this rule."""
        if self.type == "a":
            return "a *:* rwm"
        major = "*" if self.major == WILDCARD else str(self.major)
        minor = "*" if self.minor == WILDCARD else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


# runc appends these after the spec's rules so a container always has its basic devices.
DEFAULT_ALLOWED: tuple[Rule, ...] = (
    Rule(True, "c", WILDCARD, WILDCARD, "m"),
    Rule(True, "b", WILDCARD, WILDCARD, "m"),
    Rule(True, "c", 1, 3, "rwm"),  # /dev/null
    Rule(True, "c", 1, 8, "rwm"),  # /dev/random
    Rule(True, "c", 1, 7, "rwm"),  # /dev/full
    Rule(True, "c", 5, 0, "rwm"),  # /dev/tty
    Rule(True, "c", 1, 5, "rwm"),  # /dev/zero
    Rule(True, "c", 1, 9, "rwm"),  # /dev/urandom
    Rule(True, "c", 136, WILDCARD, "rwm"),  # /dev/pts/*
    Rule(True, "c", 5, 2, "rwm"),  # /dev/ptmx
)


def rule_from_spec(entry: dict) -> Rule:
    """An OCI linux.resources.devices entry as a Rule; bad fields raise InvalidCgroupValue."""
    if not isinstance(entry, dict) or "allow" not in entry:
        raise InvalidCgroupValue(f"device rule {entry!r} needs an 'allow' field")
    kind = entry.get("type") or "a"
    if kind not in ("a", "b", "c"):
        raise InvalidCgroupValue(f"device rule {entry!r}: type must be a, b or c")
    access = entry.get("access") or "rwm"
    if not access or set(access) - set("rwm"):
        raise InvalidCgroupValue(f"device rule {entry!r}: access must be letters of 'rwm'")
    access = "".join(c for c in "rwm" if c in access)
    major, minor = entry.get("major"), entry.get("minor")
    major = WILDCARD if major is None else int(major)
    minor = WILDCARD if minor is None else int(minor)
    if major < WILDCARD or minor < WILDCARD:
        raise InvalidCgroupValue(f"device rule {entry!r}: major/minor must be >= 0 or -1")
    return Rule(bool(entry["allow"]), kind, major, minor, access)


@dataclass
class DeviceList:
    """A cgroup's device state: a default and exceptions to it, keyed by (type, major, minor)."""

    default_allow: bool = False  # cgroups start default-deny: runc's allow-list semantics
    exceptions: dict[tuple[str, int, int], str] = field(default_factory=dict)

    def apply(self, rule: Rule) -> None:
        """Fold one rule in, as writing it to devices.allow/deny would."""
        if rule.type == "a":
            # "a" resets everything whatever its access says, as in the kernel.
            self.default_allow = rule.allow
            self.exceptions.clear()
            return
        key = (rule.type, rule.major, rule.minor)
        have = self.exceptions.get(key, "")
        if rule.allow != self.default_allow:
            merged = "".join(c for c in "rwm" if c in have or c in rule.access)
            self.exceptions[key] = merged
        else:
            left = "".join(c for c in have if c not in rule.access)
            if left:
                self.exceptions[key] = left
            else:
                self.exceptions.pop(key, None)

    def rules(self) -> list[Rule]:
        """The state as rules: the reset first, then each exception."""
        out = [Rule(self.default_allow)]
        for (kind, major, minor), access in sorted(self.exceptions.items()):
            out.append(Rule(not self.default_allow, kind, major, minor, access))
        return out


def device_list(entries: list[dict], with_defaults: bool = True) -> DeviceList:
    """The device state a container gets from its spec's rules (plus runc's defaults)."""
    state = DeviceList()
    for entry in entries:
        state.apply(rule_from_spec(entry))
    if with_defaults:
        for rule in DEFAULT_ALLOWED:
            state.apply(rule)
    return state


def v1_writes(state: DeviceList) -> list[tuple[str, str]]:
    """(file, line) writes that put a v1 devices cgroup into state."""
    writes = []
    for rule in state.rules():
        writes.append(("devices.allow" if rule.allow else "devices.deny", rule.v1_line()))
    return writes
