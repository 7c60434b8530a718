"""Device access rules: OCI entries folded into one allow- or deny-list, as the v1 kernel keeps them.

Both backends start from that result: v1 writes it to devices.allow/deny, v2 compiles it to BPF.
"""

from pallet.oci.cgroups.errors import InvalidCgroupValue

WILDCARD = -1


class Rule:
    """One device rule; type is "a", "b" or "c"; major/minor -1 match any.

    Immutable, with the ==, hash and repr of the frozen dataclass it was (importing dataclasses
    costs every pallet-runc create ~7 ms).
    """

    __slots__ = ("allow", "type", "major", "minor", "access")

    def __init__(self, allow: bool, type: str = "a", major: int = WILDCARD,
                 minor: int = WILDCARD, access: str = "rwm"):
        for name, value in zip(self.__slots__, (allow, type, major, minor, access), strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: a Rule is immutable")

    __delattr__ = __setattr__  # type: ignore[assignment]

    def _key(self) -> tuple[bool, str, int, int, str]:
        return (self.allow, self.type, self.major, self.minor, self.access)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{self.__class__.__qualname__}({fields})"

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


class DeviceList:
    """A cgroup's device state: a default and exceptions to it, keyed by (type, major, minor).

    `exceptions` keeps insertion order, as the kernel's list does.
    """

    def __init__(self, default_allow: bool = False,  # cgroups start default-deny, as in runc
                 exceptions: dict[tuple[str, int, int], str] | None = None):
        self.default_allow = default_allow
        self.exceptions = {} if exceptions is None else exceptions

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.default_allow, self.exceptions) == (other.default_allow, other.exceptions)  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment] - mutable, like the dataclass it was

    def __repr__(self) -> str:
        return (f"{self.__class__.__qualname__}(default_allow={self.default_allow!r}, "
                f"exceptions={self.exceptions!r})")

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
        """The state as rules: the reset first, then each exception in the order it was added.

        The v1 kernel keeps its exceptions in that order too (a rule for a device already
        listed changes it in place), and devices.list reads them back so: the spec says the
        entries apply in the listed order, and runtime-tools checks that order there.
        """
        out = [Rule(self.default_allow)]
        for (kind, major, minor), access in self.exceptions.items():
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
