"""docker's word processing of Dockerfile arguments (BuildKit's shell.Lex): quotes,
escapes, and $VAR, ${VAR}, ${VAR:-word}, ${VAR-word}, ${VAR:+word}, ${VAR+word},
${VAR:?message} substitution. Pure: a word and a variable mapping in, a string out.

RUN, CMD and ENTRYPOINT are not processed (the shell in the container does that); every
other instruction's arguments are, with the stage's ARG and ENV values.
"""

from __future__ import annotations

from collections.abc import Mapping

from pallet.errors import InvalidArgument


class _Lexer:
    def __init__(self, word: str, env: Mapping[str, str], escape: str, raw: bool = False):
        self.s = word
        self.i = 0
        self.env = env
        self.escape = escape
        self.raw = raw  # a heredoc's text: quotes are text, only \$ \\ \` escape

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def next(self) -> str:
        ch = self.peek()
        self.i += 1 if ch else 0
        return ch

    def until(self, stop: str = "") -> str:
        """Characters up to STOP ('' = end of word), processed; STOP is consumed."""
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                if stop:
                    raise InvalidArgument(f"failed to process {self.s!r}: missing '{stop}'")
                return "".join(out)
            if stop and ch == stop:
                self.next()
                return "".join(out)
            if ch == "'" and not self.raw:
                out.append(self.single_quoted())
            elif ch == '"' and not self.raw:
                out.append(self.double_quoted())
            elif ch == "$":
                out.append(self.dollar())
            elif self.raw:
                self.next()
                if ch == "\\" and self.peek() in ("$", "\\", "`"):
                    ch = self.next()
                out.append(ch)
            else:
                self.next()
                if ch == self.escape:
                    ch = self.next()
                    if not ch:
                        return "".join(out)
                out.append(ch)

    def single_quoted(self) -> str:
        self.next()
        end = self.s.find("'", self.i)
        if end < 0:
            raise InvalidArgument(f"failed to process {self.s!r}: unexpected end of "
                                  "statement while looking for matching single-quote")
        text = self.s[self.i:end]
        self.i = end + 1
        return text

    def double_quoted(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise InvalidArgument(f"failed to process {self.s!r}: unexpected end of "
                                      "statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.next()
            if ch == self.escape and self.peek() in ('"', "$", self.escape):
                ch = self.next()  # only these can be escaped inside "..."
            out.append(ch)

    def name(self) -> str:
        start = self.i
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.i += 1
        return self.s[start:self.i]

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            return self.env.get(name, "") if name else "$"
        self.next()
        name = self.name()
        if not name:
            raise InvalidArgument(f"failed to process {self.s!r}: bad substitution")
        op = self.next()
        if not op:
            raise InvalidArgument(f"failed to process {self.s!r}: missing '}}'")
        if op == "}":
            return self.env.get(name, "")
        colon = op == ":"
        if colon:
            op = self.next()
        if op not in ("-", "+", "?"):
            raise InvalidArgument(f"failed to process {self.s!r}: unsupported modifier "
                                  f"({op or 'EOF'}) in substitution")
        word = self.until("}")
        value = self.env.get(name)
        unset = value is None or (colon and value == "")
        if op == "-":
            return word if unset else str(value)
        if op == "+":
            return "" if unset else word
        if unset:
            raise InvalidArgument(f"failed to process {self.s!r}: {name}: "
                                  f"{word or 'is not allowed to be unset'}")
        return str(value)


def process_word(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """WORD with its quotes and escapes removed and its variables substituted from ENV."""
    return _Lexer(word, env, escape).until()


def process_heredoc(text: str, env: Mapping[str, str]) -> str:
    """A heredoc's TEXT (its delimiter unquoted) with its variables substituted, as a
    shell expands an unquoted here-document: quotes stay, `\\$`, `\\\\` and `\\``
    escape, any other backslash is kept."""
    return _Lexer(text, env, "\\", raw=True).until()


def env_map(env: list[str] | None) -> dict[str, str]:
    """An image config's Env list ("K=V") as a mapping."""
    return dict(e.partition("=")[::2] for e in env or [])
