"""A Dockerfile as stages of instructions, checked as docker's classic builder checks
them before it runs anything: known instructions, their flags and argument counts, an
instruction before the first FROM (only ARG may be), a stage name given twice.

The lines themselves (continuations, comments, the `# escape=` directive, JSON forms)
are split by the official Go parser, through the `dockerfile` package. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pallet.errors import InvalidArgument

INSTRUCTIONS = ("FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
                "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
                "HEALTHCHECK", "SHELL")
# The flags each instruction takes in the classic builder; BuildKit's (RUN --mount,
# COPY --link...) are refused as docker's classic builder refuses them.
_FLAGS = {"FROM": ("platform",), "COPY": ("from", "chown", "chmod"), "ADD": ("chown", "chmod"),
          "HEALTHCHECK": ("interval", "timeout", "start-period", "start-interval", "retries")}
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")


@dataclass(frozen=True)
class Instruction:
    cmd: str                      # upper case: RUN, COPY...
    args: tuple[str, ...]         # the parser's words (JSON form: the array's strings)
    json: bool                    # exec (JSON) form
    original: str                 # the line as written, continuations joined
    line: int
    flags: dict[str, str] = field(default_factory=dict)
    trigger: Instruction | None = None  # ONBUILD's instruction

    def error(self, message: str) -> InvalidArgument:
        return InvalidArgument(f"Dockerfile parse error line {self.line}: {message}")


@dataclass
class Stage:
    index: int
    base: str                     # as written: variables are expanded when it is built
    name: str                     # lower case, "" if unnamed
    platform: str
    line: int
    original: str
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    meta_args: list[Instruction]  # ARGs before the first FROM
    stages: list[Stage]
    escape: str = "\\"

    def steps(self) -> int:
        """How many steps a build of every stage counts (docker's `Step N/M`)."""
        return len(self.meta_args) + sum(1 + len(s.instructions) for s in self.stages)


def escape_token(text: str) -> str:
    """The `# escape=` parser directive's character (default backslash)."""
    for line in text.splitlines():
        m = _DIRECTIVE.match(line.strip())
        if not m:
            break
        if m.group(1).lower() == "escape":
            if m.group(2) not in ("\\", "`"):
                raise InvalidArgument(f"invalid ESCAPE '{m.group(2)}'. Must be ` or \\")
            return m.group(2)
    return "\\"


def parse(text: str) -> Dockerfile:
    """TEXT (a Dockerfile) as stages; raises InvalidArgument with docker's words."""
    import dockerfile  # the official Go parser (a binary wheel)

    try:
        commands = dockerfile.parse_string(text)
    except dockerfile.GoParseError as e:
        raise InvalidArgument(f"Dockerfile parse error: {e}") from None
    meta: list[Instruction] = []
    stages: list[Stage] = []
    names: set[str] = set()
    for c in commands:
        inst = _instruction(c)
        if inst.cmd == "FROM":
            stage = _stage(inst, len(stages))
            if stage.name:
                if stage.name in names:
                    raise inst.error(f"duplicate name {stage.name}")
                names.add(stage.name)
            stages.append(stage)
        elif not stages:
            if inst.cmd != "ARG":
                raise inst.error("no build stage in current context: a Dockerfile starts "
                                 "with FROM (only ARG may come before it)")
            meta.append(inst)
        else:
            stages[-1].instructions.append(inst)
    if not stages:
        raise InvalidArgument("the Dockerfile cannot be empty: it needs a FROM")
    return Dockerfile(meta, stages, escape_token(text))


def parse_instruction(line: str, where: int = 0) -> Instruction:
    """One instruction line (an ONBUILD trigger run in a later build)."""
    import dockerfile

    try:
        commands = dockerfile.parse_string(line)
    except dockerfile.GoParseError as e:
        raise InvalidArgument(f"Dockerfile parse error: {e}") from None
    if len(commands) != 1:
        raise InvalidArgument(f"invalid ONBUILD trigger {line!r}")
    inst = _instruction(commands[0])
    return Instruction(inst.cmd, inst.args, inst.json, inst.original, where or inst.line,
                       inst.flags, inst.trigger)


def _instruction(c: object, sub: bool = False) -> Instruction:
    cmd = str(c.sub_cmd if sub else c.cmd).upper()
    line = int(c.start_line)
    original = str(c.original)
    if cmd not in INSTRUCTIONS:
        raise InvalidArgument(f"Dockerfile parse error line {line}: unknown instruction: "
                              f"{cmd}")
    if getattr(c, "heredocs", ()):
        raise InvalidArgument(f"Dockerfile parse error line {line}: heredocs are a BuildKit "
                              "feature: pallet build (docker's classic builder) does not "
                              "support them")
    args = tuple(str(v) for v in c.value)
    if cmd == "ONBUILD" and not sub:
        if not c.sub_cmd:
            raise InvalidArgument(f"Dockerfile parse error line {line}: ONBUILD requires "
                                  "at least one argument")
        trigger = _instruction(c, sub=True)
        if trigger.cmd in ("ONBUILD", "FROM", "MAINTAINER"):
            raise InvalidArgument(f"Dockerfile parse error line {line}: {trigger.cmd} isn't "
                                  "allowed as an ONBUILD trigger")
        text = original.split(None, 1)[1] if " " in original.strip() else ""
        trigger = Instruction(trigger.cmd, trigger.args, trigger.json, text, line,
                              trigger.flags)
        return Instruction(cmd, args, False, original, line, {}, trigger)
    inst = Instruction(cmd, args, bool(c.json), original, line,
                       _flags(cmd, tuple(c.flags), line))
    _check_args(inst)
    return inst


def _flags(cmd: str, words: tuple[str, ...], line: int) -> dict[str, str]:
    allowed = _FLAGS.get(cmd, ())
    out = {}
    for w in words:
        name, _, value = w[2:].partition("=")
        if name not in allowed:
            raise InvalidArgument(f"Dockerfile parse error line {line}: Unknown flag: {name}")
        out[name] = value
    return out


def _check_args(inst: Instruction) -> None:
    cmd, n = inst.cmd, len(inst.args)
    if cmd == "FROM" and not (n == 1 or (n == 3 and inst.args[1].lower() == "as")):
        raise inst.error("FROM requires either one or three arguments (FROM IMAGE [AS NAME])")
    if cmd in ("COPY", "ADD") and n < 2:
        raise inst.error(f"{cmd} requires at least two arguments, but only {n} was provided. "
                         "Destination could not be determined.")
    if cmd in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER") and n != 1:
        raise inst.error(f"{cmd} requires exactly one argument")
    if cmd == "ARG" and n != 1:
        raise inst.error("ARG requires exactly one argument")
    if cmd in ("RUN", "CMD", "ENTRYPOINT", "ENV", "LABEL", "EXPOSE", "VOLUME", "SHELL",
               "HEALTHCHECK") and (n == 0 or inst.args == ("",)):
        raise inst.error(f"{cmd} requires at least one argument")
    if cmd == "SHELL" and not inst.json:
        raise inst.error("SHELL requires the arguments to be in JSON form")


def _stage(inst: Instruction, index: int) -> Stage:
    name = inst.args[2].lower() if len(inst.args) == 3 else ""
    if name and not re.fullmatch(r"[a-z][a-z0-9-_.]*", name):
        raise inst.error(f"invalid name for build stage: {inst.args[2]!r}, name can't start "
                         "with a number or contain symbols")
    return Stage(index, inst.args[0], name, inst.flags.get("platform", ""), inst.line,
                 inst.original)
