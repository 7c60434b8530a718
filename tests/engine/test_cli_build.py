"""A docker user's `pallet build`: a multi-stage Dockerfile built with real containers on
the busybox image, the image it makes run as the Dockerfile says, the layer cache on a
rebuild, .dockerignore, and the failures (docker's one line, exit 1) with nothing left on
the host: no build container, mount, temp dir or half-written blob.

Build containers use --network none (no CNI needed).
"""

from __future__ import annotations

import json
import os

import pytest

from tests.engine.conftest import leftovers
from tests.engine.test_cli_container_fs import _store_files

pytestmark = pytest.mark.root

NONE = ("--network", "none")
MULTI = """\
ARG BASE=busybox
FROM ${BASE} AS builder
ARG GREETING=hello
WORKDIR /src
COPY hello.txt ./
RUN echo "$GREETING from builder" > out.txt && cat hello.txt >> out.txt
FROM busybox
ARG GREETING
ENV APP=/app MSG="two words"
WORKDIR $APP
COPY --from=builder /src/out.txt .
RUN echo "bob:x:1234:1234::/home/bob:/bin/sh" >> /etc/passwd && echo "$GREETING" > greeting
USER bob
ENTRYPOINT ["cat"]
CMD ["/app/out.txt"]
"""


def _context(tmp_path, files: dict[str, str], dockerfile: str = MULTI) -> str:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    return str(ctx)


def _clean(pallet) -> None:
    """Nothing of a build is left: no container, mount, process or temp dir."""
    assert pallet("ps", "-aq").stdout == ""
    ctrs = os.path.join(pallet.root, "containers")
    assert not os.path.isdir(ctrs) or os.listdir(ctrs) == []
    assert not os.path.exists(os.path.join(pallet.root, "tmp"))
    assert leftovers(pallet) == []


def test_multi_stage_build_makes_an_image_that_runs_as_the_dockerfile_says(pallet, tmp_path):
    ctx = _context(tmp_path, {"hello.txt": "hi-file\n"})
    out = pallet("build", *NONE, "--build-arg", "GREETING=howdy", "-t", "bld-multi", ctx)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "Step 1/15 : ARG BASE=busybox"
    assert "Step 2/15 : FROM ${BASE} AS builder" in lines
    assert any(ln.startswith(" ---> Running in ") for ln in lines)
    assert any(ln.startswith("Removing intermediate container ") for ln in lines)
    image_id = json.loads(pallet("image", "inspect", "bld-multi").stdout)[0]["Id"]
    assert lines[-2:] == [f"Successfully built {image_id[7:19]}",
                          "Successfully tagged bld-multi:latest"]
    # CMD and ENTRYPOINT, ENV, WORKDIR, USER, the ARG's value in RUN but not in the image.
    assert pallet("run", "--rm", *NONE, "bld-multi").stdout == "howdy from builder\nhi-file\n"
    run = pallet("run", "--rm", *NONE, "--entrypoint", "sh", "bld-multi", "-c",
                 'id -u; pwd; echo "$MSG"; cat greeting; echo "[$GREETING]"')
    assert run.stdout == "1234\n/app\ntwo words\nhowdy\n[]\n"
    cfg = json.loads(pallet("image", "inspect", "bld-multi").stdout)[0]["Config"]
    assert cfg["Entrypoint"] == ["cat"] and cfg["Cmd"] == ["/app/out.txt"]
    assert cfg["User"] == "bob" and cfg["WorkingDir"] == "/app"
    assert "APP=/app" in cfg["Env"] and "MSG=two words" in cfg["Env"]
    # history: the final stage's steps, metadata steps as docker's #(nop) lines of 0B.
    hist = pallet("history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Size}}",
                  "bld-multi").stdout.splitlines()
    assert hist[0] == '/bin/sh -c #(nop)  CMD ["/app/out.txt"]|0B'
    assert hist[1] == '/bin/sh -c #(nop)  ENTRYPOINT ["cat"]|0B'
    assert hist[2] == "/bin/sh -c #(nop)  USER bob|0B"
    assert hist[3].startswith("|1 GREETING=howdy /bin/sh -c echo \"bob:x")
    assert hist[4].startswith("/bin/sh -c #(nop) COPY file:") and " in . |" in hist[4]
    assert "/bin/sh -c #(nop)  ENV APP=/app MSG=two words|0B" in hist
    # Step images are the build's cache, not `images` rows.
    assert pallet("images", "--format", "{{.Repository}}").stdout.split() == \
        ["bld-multi", "busybox"]
    _clean(pallet)


def test_a_rebuild_uses_the_cache_until_a_copied_file_changes(pallet, tmp_path):
    ctx = _context(tmp_path, {"hello.txt": "one\n"})
    first = pallet("build", *NONE, "-t", "bld-cache", ctx)
    assert first.returncode == 0, first.stderr
    assert "Using cache" not in first.stdout
    again = pallet("build", *NONE, "-t", "bld-cache", ctx)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(" ---> Using cache") == 12  # every step but ARG/FROMs
    assert " ---> Running in" not in again.stdout
    assert again.stdout.splitlines()[-2] == first.stdout.splitlines()[-2]  # same image
    # A changed file misses at its COPY; the steps before it still hit.
    (tmp_path / "ctx" / "hello.txt").write_text("two\n")
    changed = pallet("build", *NONE, "-t", "bld-cache", ctx)
    assert changed.returncode == 0, changed.stderr
    steps = {b.split("\n", 1)[0]: b for b in changed.stdout.split("Step ")[1:]}
    cached = [s.split(" : ", 1)[1] for s, b in steps.items() if "Using cache" in b]
    # The second stage's steps before its COPY --from do not depend on the file.
    assert cached == ["ARG GREETING=hello", "WORKDIR /src", "ARG GREETING",
                      'ENV APP=/app MSG="two words"', "WORKDIR $APP"]
    assert pallet("run", "--rm", *NONE, "bld-cache").stdout == "hello from builder\ntwo\n"
    nocache = pallet("build", *NONE, "--no-cache", "-q", ctx)
    assert nocache.returncode == 0 and nocache.stdout.startswith("sha256:")
    assert len(nocache.stdout.split()) == 1  # -q: the id alone
    _clean(pallet)


def test_dockerignore_hides_files_from_copy(pallet, tmp_path):
    ctx = _context(tmp_path, {
        ".dockerignore": "*.key\n**/*.tmp\nlogs\n!logs/keep.log\n",
        "a.txt": "a\n", "top.key": "k\n", "sub/deep.key": "deep\n", "sub/x.tmp": "t\n",
        "logs/drop.log": "d\n", "logs/keep.log": "kept\n"},
        "FROM busybox\nCOPY . /ctx/\nCMD [\"find\", \"/ctx\", \"-type\", \"f\"]\n")
    out = pallet("build", *NONE, "-t", "bld-ignore", ctx)
    assert out.returncode == 0, out.stderr
    found = sorted(pallet("run", "--rm", *NONE, "bld-ignore").stdout.split())
    # `*.key` is the top level only (docker's rule); ** reaches into sub/.
    assert found == ["/ctx/.dockerignore", "/ctx/Dockerfile", "/ctx/a.txt",
                     "/ctx/logs/keep.log", "/ctx/sub/deep.key"]
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM busybox\nCOPY top.key /\n")
    out = pallet("build", *NONE, ctx)
    assert out.returncode == 1
    assert out.stderr == ("COPY failed: file not found in build context or excluded by "
                          ".dockerignore: stat top.key: file does not exist\n")
    _clean(pallet)


def test_copy_never_writes_or_reads_outside_its_roots(pallet, tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("host secret\n")
    ctx = _context(tmp_path, {"f.txt": "f\n"},
                   f"FROM busybox\nRUN ln -s {host} /link\nCOPY f.txt /link/\n"
                   f"RUN cat {host}/f.txt\n")
    os.symlink(str(outside), os.path.join(ctx, "esc"))
    out = pallet("build", *NONE, "-t", "bld-confined", ctx)
    assert out.returncode == 0, out.stderr
    assert os.listdir(host) == []  # the image's link resolved inside its rootfs
    # A context symlink to a host file resolves inside the context: not there.
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM busybox\nCOPY esc /x\n")
    out = pallet("build", *NONE, ctx)
    assert out.returncode == 1 and "COPY failed: file not found" in out.stderr
    _clean(pallet)


def test_scratch_onbuild_and_stdin_dockerfiles(pallet, tmp_path):
    ctx = _context(tmp_path, {"hello.txt": "from scratch\n"},
                   "FROM scratch\nCOPY hello.txt /\nCMD [\"/hello\"]\n")
    out = pallet("build", "-t", "bld-scratch", ctx)
    assert out.returncode == 0, out.stderr
    out = pallet("build", *NONE, "-t", "bld-onbuild", "-", input=(
        "FROM busybox\nONBUILD RUN echo triggered > /trig\n"))
    assert out.returncode == 0, out.stderr
    cfg = json.loads(pallet("image", "inspect", "bld-onbuild").stdout)[0]["Config"]
    assert cfg["OnBuild"] == ["RUN echo triggered > /trig"]
    out = pallet("build", *NONE, "-t", "bld-child", "-", input=(
        "FROM bld-onbuild\nCOPY --from=bld-scratch /hello.txt /\n"
        "HEALTHCHECK --interval=5s CMD true\nCMD cat /trig /hello.txt\n"))
    assert out.returncode == 0, out.stderr
    assert "# Executing 1 build trigger" in out.stdout
    assert pallet("run", "--rm", *NONE, "bld-child").stdout == "triggered\nfrom scratch\n"
    cfg = json.loads(pallet("image", "inspect", "bld-child").stdout)[0]["Config"]
    assert not cfg.get("OnBuild")
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000}
    # No context: nothing to copy.
    out = pallet("build", *NONE, "-", input="FROM busybox\nCOPY a /\n")
    assert out.returncode == 1 and "COPY failed: file not found in build context" in out.stderr
    _clean(pallet)


@pytest.mark.parametrize("dockerfile,args,message", [
    ("FROM busybox\nRUN echo out; false\n", (),
     "The command '/bin/sh -c echo out; false' returned a non-zero code: 1\n"),
    ("FROM busybox\nRUN [\"sh\", \"-c\", \"exit 3\"]\n", (),
     "The command 'sh -c exit 3' returned a non-zero code: 3\n"),
    ("FROM busybox\nBOGUS thing\n", (),
     "Error: Dockerfile parse error line 2: unknown instruction: BOGUS\n"),
    ("FROM busybox\nCOPY nope.txt /\n", (),
     "COPY failed: file not found in build context or excluded by .dockerignore: "
     "stat nope.txt: file does not exist\n"),
    ("FROM busybox AS one\nRUN true\n", ("--target", "two"),
     "failed to reach build target two in Dockerfile\n"),
    ("FROM 127.0.0.1:1/bld-nope\n", (), "pull access denied for 127.0.0.1:1/bld-nope"),
    ("FROM busybox\nCOPY --from=127.0.0.1:1/bld-nope /a /b\n", (),
     "invalid from flag value 127.0.0.1:1/bld-nope: "),
    ("FROM busybox\nADD https://example.com/x /x\n", (), "ADD failed: https://example.com/x is a URL"),
])
def test_a_failed_build_says_why_in_one_line_and_leaves_nothing(pallet, tmp_path, dockerfile,
                                                                 args, message):
    ctx = _context(tmp_path, {}, dockerfile)
    before = _store_files(pallet)
    out = pallet("build", *NONE, *args, "-t", "bld-fail", ctx)
    assert out.returncode == 1
    assert out.stderr.startswith(message) and out.stderr.count("\n") == 1, out.stderr
    assert pallet("images", "--format", "{{.Repository}}").stdout.split() == ["busybox"]
    _clean(pallet)
    if "returned a non-zero code" in message:
        assert "out\n" in out.stdout or "exit 3" in dockerfile  # its output was shown
    else:
        assert _store_files(pallet) == before  # nothing was committed


def _step_ids(out: str) -> list[str]:
    return [ln.split()[1] for ln in out.splitlines()
            if ln.startswith(" ---> ") and "Running in" not in ln and "Using cache" not in ln]


def test_images_a_lists_the_steps_and_rmi_prunes_them_unless_shared_or_no_prune(pallet,
                                                                               tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = pallet("build", *NONE, "-t", "ev-steps",
                 _context(tmp_path / "a", {}, "FROM busybox\nENV A=1\nRUN echo x > /x\n"
                          "LABEL l=1\n"), check=True).stdout
    base, env, run, final = _step_ids(one)
    two = pallet("build", *NONE, "-t", "ev-other",
                 _context(tmp_path / "b", {}, "FROM busybox\nENV A=1\nRUN echo y > /y\n"),
                 check=True).stdout
    assert _step_ids(two)[:2] == [base, env]  # the ENV step is shared (from the cache)
    other = _step_ids(two)[2]

    def rows(*args: str) -> list[tuple[str, str, str]]:
        out = pallet("images", *args, "--format", "{{.Repository}} {{.Tag}} {{.ID}}",
                     check=True).stdout
        return sorted(tuple(ln.split()) for ln in out.splitlines())

    assert {r[0] for r in rows()} == {"busybox", "ev-steps", "ev-other"}
    assert sorted(r[2] for r in rows("-a") if r[0] == "<none>") == sorted([env, run])
    assert all(r[:2] == ("<none>", "<none>") for r in rows("-a") if r[2] in (env, run))
    # ev-steps' RUN step goes with it; the ENV step stays: ev-other was built on it too.
    out = pallet("rmi", "ev-steps", check=True).stdout.splitlines()
    assert out[0] == "Untagged: ev-steps:latest"
    assert [ln.split(":", 1)[0] for ln in out[1:]] == ["Deleted", "Deleted"]
    assert [ln.split("sha256:")[1][:12] for ln in out[1:]] == [final, run]
    assert sorted(r[2] for r in rows("-a") if r[0] == "<none>") == [env]
    # --no-prune leaves the parent.
    out = pallet("rmi", "--no-prune", "ev-other", check=True).stdout.splitlines()
    assert len(out) == 2 and other in out[1]
    assert [r[2] for r in rows("-a") if r[0] == "<none>"] == [env]
    # A tagged parent (busybox, under the ENV step) never goes with its child.
    pallet("tag", env, "ev-env", check=True)
    out = pallet("rmi", "ev-env", check=True).stdout.splitlines()
    assert out[0] == "Untagged: ev-env:latest" and env in out[1] and len(out) == 2
    assert {r[0] for r in rows("-a")} == {"busybox"}
    _clean(pallet)
