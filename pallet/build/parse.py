"""A Dockerfile as stages of instructions, checked before anything runs: known
instructions, their flags (the classic builder's and BuildKit's common ones: RUN --mount
and --network, COPY/ADD --link and --exclude, whose patterns are checked) and argument
counts, an instruction before the first FROM (only ARG may be), a stage name given twice;
heredocs (`RUN <<EOF`, `COPY <<EOF /f`) with their delimiter's quoting (expand or not) and
`<<-` (strip leading tabs).

The lines themselves (continuations, comments, the `# escape=` directive, JSON forms)
are split by the official Go parser, through the `dockerfile` package. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pallet.errors import InvalidArgument

INSTRUCTIONS = ("FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
                "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
                "HEALTHCHECK", "SHELL")
# The flags each instruction takes: the classic builder's and BuildKit's common ones
# (RUN --mount, repeatable, --network and --security; COPY/ADD --link and --exclude,
# repeatable, COPY --parents). The others (ADD --checksum, --keep-git-dir...) are refused
# with docker's `Unknown flag`.
_FLAGS = {"FROM": ("platform",),
          "COPY": ("from", "chown", "chmod", "link", "parents", "exclude"),
          "ADD": ("chown", "chmod", "link", "exclude"), "RUN": ("mount", "network", "security"),
          "HEALTHCHECK": ("interval", "timeout", "start-period", "start-interval", "retries")}
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
# A heredoc word as BuildKit's parser finds it: [fd]<<[-]DELIMITER.
HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)([^<]*)$")


@dataclass(frozen=True)
class Heredoc:
    """An inline document: NAME its delimiter (unquoted), CONTENT the lines up to it.
    EXPAND: the delimiter was not quoted (COPY substitutes variables in it); CHOMP: `<<-`
    (leading tabs are stripped)."""

    name: str
    content: str
    expand: bool = True
    chomp: bool = False

    @property
    def text(self) -> str:
        return re.sub(r"(?m)^\t+", "", self.content) if self.chomp else self.content


@dataclass(frozen=True)
class Instruction:
    cmd: str                      # upper case: RUN, COPY...
    args: tuple[str, ...]         # the parser's words (JSON form: the array's strings)
    json: bool                    # exec (JSON) form
    original: str                 # the line as written, continuations joined
    line: int
    flags: dict[str, str] = field(default_factory=dict)
    trigger: Instruction | None = None  # ONBUILD's instruction
    mounts: tuple[str, ...] = ()  # RUN --mount specs, as written (expanded when run)
    heredocs: tuple[Heredoc, ...] = ()
    # COPY/ADD --exclude patterns, as written: BuildKit does not expand variables in them.
    excludes: tuple[str, ...] = ()

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
                       inst.flags, inst.trigger, inst.mounts, inst.heredocs, inst.excludes)


def _instruction(c: object, sub: bool = False) -> Instruction:
    cmd = str(c.sub_cmd if sub else c.cmd).upper()
    line = int(c.start_line)
    original = str(c.original)
    if cmd not in INSTRUCTIONS:
        raise InvalidArgument(f"Dockerfile parse error line {line}: unknown instruction: "
                              f"{cmd}")
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
                              trigger.flags, None, trigger.mounts, trigger.heredocs,
                              trigger.excludes)
        return Instruction(cmd, args, False, original, line, {}, trigger)
    flags, mounts, excludes = _flags(cmd, tuple(c.flags), line)
    docs = tuple(getattr(c, "heredocs", ()) or ())
    heredocs = _heredocs(cmd, args, docs) if docs else ()
    inst = Instruction(cmd, args, bool(c.json), original, line, flags, None, mounts, heredocs,
                       excludes)
    _check_args(inst)
    if flags.get("network", "default") not in ("default", "none", "host"):
        raise inst.error(f'unsupported network mode "{flags["network"]}"')
    if flags.get("security", "sandbox") not in ("sandbox", "insecure"):
        raise inst.error(f'unsupported security mode "{flags["security"]}"')
    if mounts:
        from pallet.build.mounts import parse_mount

        for spec in mounts:  # what can be checked before variables are known
            try:
                parse_mount(spec, None)
            except InvalidArgument as e:
                raise inst.error(str(e)) from None
    return inst


def _flags(cmd: str, words: tuple[str, ...], line: int
           ) -> tuple[dict[str, str], tuple[str, ...], tuple[str, ...]]:
    """The instruction's flags, its RUN --mount specs and its COPY/ADD --exclude
    patterns (both repeatable, in order)."""
    allowed = _FLAGS.get(cmd, ())
    out: dict[str, str] = {}
    mounts: list[str] = []
    excludes: list[str] = []
    for w in words:
        name, eq, value = w[2:].partition("=")
        if name not in allowed:
            raise InvalidArgument(f"Dockerfile parse error line {line}: Unknown flag: {name}")
        if name == "mount":
            mounts.append(value)
        elif name == "exclude":
            if not eq:
                raise InvalidArgument(f"Dockerfile parse error line {line}: Missing a value "
                                      "on flag: exclude")
            excludes.append(_exclude_pattern(value, line))
        else:
            out[name] = value
    return out, tuple(mounts), tuple(excludes)


def _exclude_pattern(value: str, line: int) -> str:
    """VALUE if it is a pattern BuildKit's matcher takes (.dockerignore's syntax);
    an empty one, which BuildKit would silently drop, is refused as the slip it is."""
    from pallet.build import dockerignore

    where = f"Dockerfile parse error line {line}"
    if not value.strip():
        raise InvalidArgument(f"{where}: empty --exclude pattern: give a path pattern, "
                              "e.g. --exclude=*.txt")
    try:
        dockerignore.pattern(value)
    except ValueError as e:
        raise InvalidArgument(f"{where}: invalid --exclude pattern {value!r}: {e}") from None
    return value


def heredoc_word(word: str) -> tuple[str, bool, bool] | None:
    """WORD's heredoc (delimiter, expand, chomp) if it is one (`<<EOF`, `<<-"EOF"`)."""
    m = HEREDOC_WORD.match(word)
    if not m or not m.group(3):
        return None
    rest = m.group(3)
    if len(_shell_words(rest)) != 1:
        return None  # BuildKit: the delimiter is one word
    name = re.sub(r"""\\(.)|['"]""", lambda x: x.group(1) or "", rest)
    # BuildKit: a delimiter with any part quoted means the content is taken as is.
    expand = not re.search(r"""['"]""", rest)
    return name, expand, m.group(2) == "-"


def _shell_words(text: str) -> list[str]:
    """TEXT split at blanks outside quotes, quotes kept: where heredoc words are found."""
    words, cur, quote, i = [], "", "", 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and quote != "'":
            cur += text[i:i + 2]
            i += 2
            continue
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch.isspace():
            if cur:
                words.append(cur)
            cur = ""
            i += 1
            continue
        cur += ch
        i += 1
    if cur:
        words.append(cur)
    return words


def _heredocs(cmd: str, args: tuple[str, ...], docs: tuple[Any, ...]) -> tuple[Heredoc, ...]:
    """The parser's heredocs with what its Python binding leaves out (quoting, `<<-`),
    read again from the instruction's words."""
    words = [w for a in args for w in _shell_words(a)] if cmd == "RUN" else list(args)
    found = [h for h in map(heredoc_word, words) if h is not None]
    out = []
    for i, d in enumerate(docs):
        name, content = str(d.name), str(d.content)
        expand, chomp = True, False
        if i < len(found) and found[i][0] == name:
            expand, chomp = found[i][1], found[i][2]
        out.append(Heredoc(name, content, expand, chomp))
    return tuple(out)


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
