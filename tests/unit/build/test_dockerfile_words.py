"""What a Dockerfile means before anything runs: docker's variable substitution and
quoting, .dockerignore's pattern rules, and the parse-time refusals (unknown instruction,
BuildKit-only flags and heredocs, a step before FROM)."""

from __future__ import annotations

import pytest

from pallet.build import dockerignore
from pallet.build.parse import parse
from pallet.build.shell_lex import process_word
from pallet.errors import InvalidArgument

ENV = {"A": "x", "EMPTY": "", "P": "/usr/bin"}


@pytest.mark.parametrize("word,want", [
    ("$A", "x"), ("${A}", "x"), ("pre${A}post", "prexpost"), ("$NOPE", ""),
    ("${NOPE:-def}", "def"), ("${EMPTY:-def}", "def"), ("${EMPTY-def}", ""),
    ("${A:-def}", "x"), ("${A:+alt}", "alt"), ("${NOPE:+alt}", ""), ("${EMPTY+alt}", "alt"),
    ("'$A'", "$A"), ('"$A b"', "x b"), (r"\$A", "$A"), (r'"\$A"', "$A"), (r'"\x"', r"\x"),
    ("${NOPE:-${A}}", "x"), ("a\\ b", "a b"), ("$", "$"), ("${P}:/bin", "/usr/bin:/bin"),
])
def test_words_expand_as_dockers_shell_lexer_does(word, want):
    assert process_word(word, ENV) == want


def test_the_escape_directive_changes_the_escape_character():
    assert process_word("`$A", ENV, "`") == "$A"
    assert process_word(r"C:\dir", ENV, "`") == r"C:\dir"


@pytest.mark.parametrize("word,message", [
    ("${A", "missing '}'"), ("'open", "single-quote"), ("${NOPE:?must be set}", "must be set"),
    ("${A%x}", "unsupported modifier"),
])
def test_bad_substitutions_are_refused_with_the_word(word, message):
    with pytest.raises(InvalidArgument, match=message):
        process_word(word, ENV)


def test_dockerignore_follows_dockers_pattern_rules():
    pats = dockerignore.parse("# comment\n*.log\n/build\n**/*.tmp\nsecret*\n!secret.pub\n"
                              "docs/**\n!docs/keep.md\n")
    ex = lambda p: dockerignore.excluded(pats, p)  # noqa: E731
    assert ex("a.log") and not ex("sub/a.log")     # * stays in one component
    assert ex("build") and ex("build/x/y")         # a directory takes what is under it
    assert ex("x.tmp") and ex("a/b/c.tmp")         # ** spans directories, or none
    assert ex("secret.key") and not ex("secret.pub")  # the last match wins
    assert ex("docs/a.md") and not ex("docs/keep.md")
    assert not ex("src/main.py")
    assert dockerignore.may_include_below(pats, "docs")


def test_a_dockerfile_parses_into_stages_with_its_meta_args():
    df = parse("# escape=`\nARG V=1\nFROM busybox:${V} AS First\nRUN echo a `\n  b\n"
               "FROM first\nCOPY --from=first /a /b\n")
    assert df.escape == "`" and [a.args for a in df.meta_args] == [("V=1",)]
    assert [(s.name, s.base) for s in df.stages] == [("first", "busybox:${V}"), ("", "first")]
    assert df.stages[0].instructions[0].args == ("echo a   b",)
    assert df.stages[1].instructions[0].flags == {"from": "first"}
    assert df.steps() == 5


@pytest.mark.parametrize("text,message", [
    ("FROM busybox\nBOGUS x\n", "line 2: unknown instruction: BOGUS"),
    ("RUN true\nFROM busybox\n", "line 1: no build stage in current context"),
    ("FROM busybox\nRUN --mount=type=cache,target=/x true\n", "Unknown flag: mount"),
    ("FROM busybox\nCOPY --link a b\n", "Unknown flag: link"),
    ("FROM busybox\nRUN <<EOF\necho hi\nEOF\n", "heredocs are a BuildKit feature"),
    ("FROM busybox\nCOPY a\n", "COPY requires at least two arguments"),
    ("FROM busybox\nSHELL /bin/bash -c\n", "SHELL requires the arguments to be in JSON form"),
    ("FROM a AS x\nFROM b AS x\n", "duplicate name x"),
    ("FROM busybox\nENV A\n", "ENV must have two arguments"),
    ("", "file with no instructions"),
])
def test_bad_dockerfiles_are_refused_before_anything_runs(text, message):
    with pytest.raises(InvalidArgument, match=message):
        parse(text)
