"""What a Dockerfile means before anything runs: docker's variable substitution and
quoting, .dockerignore's pattern rules, heredocs and RUN --mount specs as BuildKit reads
them, and the parse-time refusals (unknown instruction, unsupported flags and mounts, a
step before FROM)."""

from __future__ import annotations

import pytest

from pallet.build import dockerignore
from pallet.build.context import Exclude
from pallet.build.parse import parse, parse_instruction
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


def test_patterns_are_checked_with_go_filepath_match_rules():
    def ok(text: str, path: str) -> bool:
        return dockerignore.excluded([dockerignore.pattern(text)], path)

    assert ok("[a-c]x", "bx") and not ok("[a-c]x", "dx")
    assert ok("[^a]x", "bx") and not ok("[^a]x", "ax")
    assert ok(r"a\*b", "a*b") and not ok(r"a\*b", "axb")
    assert ok(r"[\]]", "]") and not ok("[z-a]", "z")  # a reversed range matches nothing
    assert ok("pkg/**/*.md", "pkg/top.md") and ok("pkg/**/*.md", "pkg/a/b/c.md")
    for bad in ("[", "[]", "[a", "[-a]", "[a-]", "x\\", "[^]"):
        with pytest.raises(ValueError, match="syntax error in pattern"):
            dockerignore.pattern(bad)
    with pytest.raises(ValueError, match='illegal exclusion pattern: "!"'):
        dockerignore.pattern("!")
    with pytest.raises(ValueError, match="'\\[x': syntax error"):
        dockerignore.parse("ok\n[x\n")


def test_copy_exclude_patterns_are_kept_in_order_and_matched_as_buildkit_does():
    df = parse("FROM busybox\nCOPY --exclude=*.txt --exclude=pkg/**/*.md --link . /app/\n"
               "ADD --exclude=tmp src/ /d/\nONBUILD COPY --exclude=*.md . /x/\n")
    copy, add, onbuild = df.stages[0].instructions
    assert copy.excludes == ("*.txt", "pkg/**/*.md") and copy.flags == {"link": ""}
    assert add.excludes == ("tmp",)
    assert parse_instruction(onbuild.trigger.original).excludes == ("*.md",)  # run later
    pats = (dockerignore.pattern("*.txt"), dockerignore.pattern("tmp"))
    # Under a source, paths relative to it; a source named as is always copied.
    plain = Exclude.of(pats, "src/", "src")
    assert plain.skips("a.txt") and plain.skips("tmp/x") and not plain.skips("d/a.txt")
    assert not plain.skips("")
    # A wildcard's match is matched by its path below the wildcard's directory.
    assert Exclude.of(pats, "docs/hom*", "docs/home.txt").skips("")
    assert not Exclude.of(pats, "docs/hom*", "docs/homer").skips("")
    # --parents: from the context's root (or the pivot), the source itself included.
    assert Exclude.of(pats, "tmp", "tmp", kept="tmp").skips("")
    under_x = Exclude.of(pats, "x", "x", kept="x")
    assert not under_x.skips("a.txt") and not under_x.skips("tmp")  # x/a.txt, x/tmp


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
    ("FROM busybox\nRUN --security=sideways true\n", 'unsupported security mode "sideways"'),
    ("FROM busybox\nADD --checksum=sha256:0 a b/\n", "Unknown flag: checksum"),
    ("FROM busybox\nRUN --exclude=*.md true\n", "Unknown flag: exclude"),
    ("FROM busybox\nCOPY --exclude= a b/\n", "line 2: empty --exclude pattern"),
    ("FROM busybox\nCOPY --exclude a b/\n", "Missing a value on flag: exclude"),
    ("FROM busybox\nADD --exclude=a/[b a b/\n",
     r"invalid --exclude pattern 'a/\[b': syntax error in pattern"),
    ("FROM busybox\nRUN --mount=type=ssh,source=/k true\n",
     "line 2: ssh does not support source"),
    ("FROM busybox\nRUN --mount=type=ssh,sharing=locked true\n",
     "invalid cache sharing set for ssh mount"),
    ("FROM busybox\nRUN --mount=type=nfs,target=/x true\n",
     'line 2: unsupported mount type "nfs"'),
    ("FROM busybox\nRUN --mount=type=cache,target=/x,colour=red true\n",
     "unexpected key 'colour' in 'colour=red'"),
    ("FROM busybox\nRUN --mount=type=bind,target=/x,mode=0700 true\n",
     'mode not allowed for "bind" type mounts'),
    ("FROM busybox\nRUN --mount=type=cache,target=/x,sharing=sometimes true\n",
     'unsupported sharing value "sometimes"'),
    ("FROM busybox\nRUN --mount=type=bind,target=/x,from=$S true\n",
     "'from' doesn't support variable expansion"),
    ("FROM busybox\nRUN --mount=type=tmpfs,target=/x,size=lots true\n",
     "invalid value for size: lots"),
    ("FROM busybox\nRUN --network=bridge true\n", 'unsupported network mode "bridge"'),
    ("FROM busybox\nRUN --mount=type=cache,target=/c,from=base true\n",
     "a cache mount's from/source .* is not supported"),
    ("FROM busybox\nCOPY a\n", "COPY requires at least two arguments"),
    ("FROM busybox\nSHELL /bin/bash -c\n", "SHELL requires the arguments to be in JSON form"),
    ("FROM a AS x\nFROM b AS x\n", "duplicate name x"),
    ("FROM busybox\nENV A\n", "ENV must have two arguments"),
    ("", "file with no instructions"),
])
def test_bad_dockerfiles_are_refused_before_anything_runs(text, message):
    with pytest.raises(InvalidArgument, match=message):
        parse(text)


def test_heredocs_keep_their_quoting_and_tab_stripping():
    df = parse('FROM busybox\nRUN <<EOF\necho $A\nEOF\n'
               'RUN <<-"EOT" bash -x\n\techo a\n\tEOT\n'
               "COPY <<X <<'Y' /dir/\nx\nX\ny\nY\n")
    run, run2, copy = df.stages[0].instructions
    assert [(h.name, h.content, h.expand, h.chomp) for h in run.heredocs] == \
        [("EOF", "echo $A\n", True, False)]
    (doc,) = run2.heredocs
    assert (doc.name, doc.expand, doc.chomp, doc.text) == ("EOT", False, True, "echo a\n")
    assert [(h.name, h.expand) for h in copy.heredocs] == [("X", True), ("Y", False)]
    assert copy.args == ("<<X", "<<'Y'", "/dir/")


def test_copy_heredocs_expand_like_an_unquoted_shell_heredoc():
    from pallet.build.shell_lex import process_heredoc

    assert process_heredoc('$A "$A" \'$A\' \\$A \\n ${NOPE:-d}\n', ENV) == \
        'x "x" \'x\' $A \\n d\n'


def test_run_mounts_parse_with_buildkits_defaults():
    from pallet.build.mounts import parse_mount

    def read(spec: str, workdir: str = "/src"):
        return parse_mount(spec, lambda w: w.replace("$V", "v")).resolved(workdir)

    cache = read("type=cache,target=.cache,sharing=locked,mode=0700,uid=10")
    assert (cache.target, cache.id, cache.sharing, cache.mode, cache.uid, cache.readonly) == \
        ("/src/.cache", "/src/.cache", "locked", 0o700, 10, False)
    assert read("type=cache,target=/c,id=$V").id == "v"
    bind = read("target=/m,source=sub,from=builder")
    assert (bind.type, bind.readonly, bind.from_, bind.source) == \
        ("bind", True, "builder", "sub")
    assert read("type=bind,target=/m,rw").readonly is False
    secret = read("type=secret,id=tok,required")
    assert (secret.target, secret.required, secret.readonly) == ("/run/secrets/tok", True, True)
    assert read("type=secret,target=/etc/tok").id == "tok"
    assert read("type=secret,id=tok,env=TOKEN").target == ""  # env only: no file
    assert read("type=tmpfs,target=/t,size=1m").size == 1 << 20
    with pytest.raises(InvalidArgument, match='invalid mount target "/"'):
        read("type=cache", "/")


def test_ssh_mounts_are_numbered_and_name_the_runs_agent_socket():
    from pallet.build.mounts import parse_mount, resolve_mounts, ssh_auth_sock

    mounts = resolve_mounts([parse_mount(s, str) for s in (
        "type=ssh", "type=cache,target=/c", "type=ssh,id=deploy,target=agent,mode=0660,uid=7",
        "type=ssh,required=true")], "/src")
    ssh = [m for m in mounts if m.type == "ssh"]
    # BuildKit's defaults: id "default", mode 0600, /run/buildkit/ssh_agent.N counting the
    # RUN's ssh mounts only; a relative target under WORKDIR.
    assert [(m.id, m.target, m.mode, m.uid, m.required) for m in ssh] == [
        ("default", "/run/buildkit/ssh_agent.0", 0o600, None, False),
        ("deploy", "/src/agent", 0o660, 7, False),
        ("default", "/run/buildkit/ssh_agent.2", 0o600, None, True)]
    # The RUN's SSH_AUTH_SOCK is its first ssh mount, unless its ENV or ARGs set one.
    assert ssh_auth_sock(mounts, ["PATH=/bin"]) == ["SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0"]
    assert ssh_auth_sock(mounts, ["SSH_AUTH_SOCK=/mine"]) == []
    assert ssh_auth_sock(mounts[1:2], []) == []
    # The cache key holds the mount's spec, never an agent's socket on the host.
    assert ssh[1].key() == {"type": "ssh", "target": "/src/agent", "readonly": True,
                            "id": "deploy", "mode": 0o660, "uid": 7, "required": False}


def test_ssh_specs_are_read_as_buildx_reads_them():
    from pallet.build.ssh import SSHSpec, parse_ssh_specs

    # An id alone (or with an empty value) is $SSH_AUTH_SOCK, an empty id is "default",
    # several paths are key files; an empty --ssh is skipped.
    assert parse_ssh_specs(["default", "", "deploy=/k1,/k2", "other="], "/run/a.sock") == [
        SSHSpec("default", ("/run/a.sock",), "default"),
        SSHSpec("deploy", ("/k1", "/k2"), "deploy=/k1,/k2"),
        SSHSpec("other", ("/run/a.sock",), "other=")]
    assert parse_ssh_specs(["=/s"], "") == [SSHSpec("default", ("/s",), "=/s")]
    for specs, message in ((["default"], "invalid --ssh default: no agent socket or key given "
                            "and SSH_AUTH_SOCK is not set"),
                           (["x=/k1,,/k2"], "invalid --ssh x=/k1,,/k2: an empty path"),
                           (["a=/s", "a=/t"], "invalid --ssh a=/t: duplicate id a")):
        with pytest.raises(InvalidArgument, match=message):
            parse_ssh_specs(specs, "")


def test_build_secrets_are_read_as_buildx_reads_them(tmp_path, monkeypatch):
    from pallet.cli.build import _secrets

    (tmp_path / "tok").write_text("from-file")
    monkeypatch.setenv("BK_TOKEN", "from-env")
    monkeypatch.chdir(tmp_path)
    assert _secrets([f"id=a,src={tmp_path / 'tok'}", "id=b,env=BK_TOKEN", "id=BK_TOKEN",
                     "id=tok", "src=tok", "id=c,type=env,source=BK_TOKEN"]) == {
        "a": b"from-file", "b": b"from-env", "BK_TOKEN": b"from-env", "tok": b"from-file",
        "c": b"from-env"}
    with pytest.raises(InvalidArgument, match="unexpected key 'colour'"):
        _secrets(["id=a,colour=red"])
    with pytest.raises(InvalidArgument, match="environment variable NOPE_BK is not set"):
        _secrets(["id=a,env=NOPE_BK"])
