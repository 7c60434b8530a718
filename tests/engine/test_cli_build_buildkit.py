"""A modern Dockerfile (`# syntax=docker/dockerfile:1`) through `pallet build`: BuildKit's
heredocs (RUN scripts, COPY'd files), RUN --mount (cache kept across builds and out of
the image, bind, tmpfs, secret) and --network, COPY --chmod/--link, --iidfile; the layer
cache keyed on the mounts; the refusals (ssh mounts, unknown types, -o) in one line with
nothing left on the host. Real builds on the busybox image, RUN containers on
--network none unless the test is about networking.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time

import pytest

from tests.engine.conftest import PALLET
from tests.engine.test_cli_build import _clean
from tests.engine.test_cli_build import _context as _build_context
from tests.engine.test_cli_container_fs import _store_files

pytestmark = pytest.mark.root

NONE = ("--network", "none")
SYNTAX = "# syntax=docker/dockerfile:1\n"


def _context(tmp_path, dockerfile: str, files: dict[str, str] | None = None) -> str:
    return _build_context(tmp_path, files or {}, SYNTAX + dockerfile)


def _build(pallet, ctx: str, *args: str) -> subprocess.CompletedProcess:
    out = pallet("build", *NONE, *args, ctx, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def _sh(pallet, image: str, script: str) -> str:
    out = pallet("run", "--rm", *NONE, image, "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _cached_steps(out: str) -> list[str]:
    steps = {b.split("\n", 1)[0]: b for b in out.split("Step ")[1:]}
    return [s.split(" : ", 1)[1] for s, b in steps.items() if " ---> Using cache" in b]


def _layer_bytes(pallet, tmp_path, image: str) -> bytes:
    """Every file of IMAGE's layers, as `pallet save` writes them, concatenated."""
    path = str(tmp_path / "saved.tar")
    pallet("save", "-o", path, image, check=True)
    data = b""
    with tarfile.open(path) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            blob = outer.extractfile(member).read()
            try:
                with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as layer:
                    for m in layer.getmembers():
                        if m.isfile():
                            data += m.name.encode() + b"\0" + layer.extractfile(m).read()
            except tarfile.TarError:
                continue  # a manifest or config
    return data


RUN_HEREDOCS = """\
FROM busybox
ARG GREETING=hello
ENV WHO=world
RUN <<EOF
echo "$GREETING $WHO" > /script.txt
echo second line >> /script.txt
EOF
RUN <<EOF
#!/bin/sh
echo "run as $0" > /shebang.txt
EOF
RUN <<-"EOT" sh
	echo 'no expansion: $WHO' > /quoted.txt
	EOT
RUN <<ONE cat > /one.txt && <<'TWO' cat > /two.txt
one $WHO
ONE
two $WHO
TWO
"""


def test_run_heredocs_are_scripts_the_shell_runs_as_buildkit_runs_them(pallet, tmp_path):
    ctx = _context(tmp_path, RUN_HEREDOCS)
    out = _build(pallet, ctx, "--build-arg", "GREETING=howdy", "-t", "bk-heredoc-run")
    assert "Step 4/7 : RUN <<EOF (echo \"$GREETING $WHO\" > /script.txt...)" in out.stdout
    assert "Step 5/7 : RUN <<EOF (#!/bin/sh...)" in out.stdout
    assert "Step 7/7 : RUN <<ONE cat > /one.txt && <<'TWO' cat > /two.txt\n" in out.stdout
    # The document is the script (ARG and ENV in its environment); with #! it is run as a
    # file at /dev/pipes/EOF; `<<-` strips the tabs; a quoted delimiter keeps $WHO as is;
    # several documents feed the shell's own here-documents.
    assert _sh(pallet, "bk-heredoc-run", "cat /script.txt /shebang.txt /quoted.txt "
               "/one.txt /two.txt") == ("howdy world\nsecond line\nrun as /dev/pipes/EOF\n"
                                        "no expansion: $WHO\none world\ntwo $WHO\n")
    assert "pipes" not in _sh(pallet, "bk-heredoc-run", "ls /dev")
    hist = pallet("history", "--no-trunc", "--format", "{{.CreatedBy}}",
                  "bk-heredoc-run").stdout
    assert '|1 GREETING=howdy /bin/sh -c echo "$GREETING $WHO" > /script.txt\n' \
           "echo second line >> /script.txt\n" in hist
    # Rebuilt: every step from the cache; a changed document misses at its step.
    again = _build(pallet, ctx, "--build-arg", "GREETING=howdy")
    assert len(_cached_steps(again.stdout)) == 6
    (tmp_path / "ctx" / "Dockerfile").write_text(
        SYNTAX + RUN_HEREDOCS.replace("#!/bin/sh\necho \"run as", "#!/bin/sh\necho \"ran as"))
    changed = _build(pallet, ctx, "--build-arg", "GREETING=howdy")
    assert _cached_steps(changed.stdout) == [
        "ARG GREETING=hello", "ENV WHO=world",
        'RUN <<EOF (echo "$GREETING $WHO" > /script.txt...)']
    _clean(pallet)


def test_copy_heredocs_and_chmod_make_files_in_the_image(pallet, tmp_path):
    ctx = _context(tmp_path, """\
FROM busybox
ARG PORT=8080
COPY <<EOF /etc/app.conf
port=$PORT "quoted" ${MISSING:-default} \\$HOME
EOF
COPY <<'RAW' <<-TABS /conf/
literal $PORT
RAW
	tabs $PORT
	TABS
COPY --chmod=755 --link <<EOF /usr/local/bin/hello
#!/bin/sh
echo hello
EOF
COPY --chmod=640 --chown=1:2 run.sh /run.sh
""", {"run.sh": "echo ctx\n"})
    _build(pallet, ctx, "-t", "bk-heredoc-copy")
    assert _sh(pallet, "bk-heredoc-copy", "cat /etc/app.conf /conf/RAW /conf/TABS") == \
        'port=8080 "quoted" default $HOME\nliteral $PORT\ntabs 8080\n'
    assert _sh(pallet, "bk-heredoc-copy", "hello; stat -c '%n %a %u:%g' /etc/app.conf "
               "/conf/RAW /usr/local/bin/hello /run.sh").splitlines() == [
        "hello", "/etc/app.conf 644 0:0", "/conf/RAW 644 0:0",
        "/usr/local/bin/hello 755 0:0", "/run.sh 640 1:2"]
    _clean(pallet)


CACHE = """\
FROM busybox
ARG CACHE_ID=one
RUN --mount=type=cache,target=/var/cache/app,id=${CACHE_ID},mode=0750,uid=7,gid=8 \\
    echo run >> /var/cache/app/log && wc -l < /var/cache/app/log > /runs && \\
    stat -c '%a %u:%g' /var/cache/app > /cache-stat
"""


def test_a_cache_mount_is_kept_across_builds_outside_the_image_until_pruned(pallet, tmp_path):
    ctx = _context(tmp_path, CACHE)
    _build(pallet, ctx, "-t", "bk-cache")
    # Not in the image: neither what the RUN wrote there nor the mount point.
    assert _sh(pallet, "bk-cache", "cat /runs /cache-stat; test -e /var/cache || echo none"
               ) == "1\n750 7:8\nnone\n"
    # The same step again: from the layer cache.
    again = _build(pallet, ctx, "-t", "bk-cache")
    assert len(_cached_steps(again.stdout)) == 2 and " ---> Running in" not in again.stdout
    # Run again (--no-cache): the cache mount still holds the first run's line.
    _build(pallet, ctx, "--no-cache", "-t", "bk-cache")
    assert _sh(pallet, "bk-cache", "cat /runs") == "2\n"
    # Another cache id (the command the same): another directory, and the step misses.
    (tmp_path / "ctx" / "Dockerfile").write_text(
        SYNTAX + CACHE.replace("id=${CACHE_ID}", "id=${CACHE_ID}-b"))
    other = _build(pallet, ctx, "-t", "bk-cache")
    assert _cached_steps(other.stdout) == ["ARG CACHE_ID=one"]
    assert _sh(pallet, "bk-cache", "cat /runs") == "1\n"
    # builder prune removes them; the next run starts empty.
    pruned = pallet("builder", "prune", "-f", check=True).stdout
    assert pruned.startswith("Deleted build cache objects:\n")
    assert len(pruned.split("\n\n")[0].splitlines()) == 3  # the header and two caches
    assert pruned.splitlines()[-1].startswith("Total reclaimed space: ")
    assert not os.path.exists(os.path.join(pallet.root, "builder"))
    _build(pallet, ctx, "--no-cache", "-t", "bk-cache")
    assert _sh(pallet, "bk-cache", "cat /runs") == "1\n"
    # system prune removes the build cache too.
    out = pallet("system", "prune", "-f", check=True).stdout
    assert "Deleted build cache objects:\n" in out
    assert pallet("builder", "prune", "-f", check=True).stdout == "Total reclaimed space: 0B\n"
    _clean(pallet)


@pytest.mark.parametrize("sharing", ["locked", "private"])
def test_concurrent_builds_share_a_cache_mount_as_its_sharing_says(pallet, tmp_path, sharing):
    """locked: the second build's RUN waits for the first's; private: it gets another
    instance of the cache at once."""
    if sharing == "locked":
        step = ("RUN --mount=type=cache,target=/c,sharing=locked "
                "test ! -e /c/busy && touch /c/busy && sleep 1 && rm /c/busy && "
                "echo {0} >> /c/who && cat /c/who > /who\n")
    else:  # both RUNs hold their instance at once: they meet in a shared cache first
        step = ("RUN --mount=type=cache,target=/meet,id=meet "
                "--mount=type=cache,target=/c,sharing=private "
                "touch /meet/{0} && for i in $(seq 300); do test -e /meet/a && "
                "test -e /meet/b && break; sleep 0.1; done && "
                "echo {0} >> /c/who && sleep 0.5 && cat /c/who > /who\n")
    ctxs = []
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        ctxs.append(_context(tmp_path / d, f"FROM busybox\n{step.format(d)}"))
    started = time.monotonic()
    procs = [subprocess.Popen([PALLET, "--root", pallet.root, "build", *NONE, "-t",
                               f"bk-{sharing}-{i}", c], env=pallet.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i, c in enumerate(ctxs)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err  # neither saw the other's /c/busy
    took = time.monotonic() - started
    seen = sorted(_sh(pallet, f"bk-{sharing}-{i}", "cat /who") for i in range(2))
    if sharing == "locked":
        assert took >= 2  # one after the other, in one directory: the second sees both
        assert sorted(map(len, seen)) == [2, 4]
    else:
        assert seen == ["a\n", "b\n"]  # each its own instance
    _clean(pallet)


def test_bind_mounts_read_the_context_or_a_stage_and_nothing_stays(pallet, tmp_path):
    ctx = _context(tmp_path, """\
FROM busybox AS tools
RUN mkdir -p /opt/tool && echo tool-v1 > /opt/tool/version
FROM busybox
RUN --mount=type=bind,target=/src cat /src/app/main.txt > /main.txt && \\
    ! touch /src/app/new 2>/dev/null && ! test -e /src/secret.key
RUN --mount=type=bind,source=app,target=/mnt/app,rw \\
    echo scribble >> /mnt/app/main.txt && cat /mnt/app/main.txt > /rw.txt
RUN --mount=type=bind,from=tools,source=/opt/tool,target=/tool cat /tool/version > /tool.txt
RUN --mount=type=bind,from=busybox,source=/bin/busybox,target=/bb,rw test -x /bb && \\
    echo > /bb && echo ok > /image-bind.txt
""", {"app/main.txt": "main\n", "secret.key": "k\n", ".dockerignore": "*.key\n"})
    out = _build(pallet, ctx, "-t", "bk-bind")
    assert _sh(pallet, "bk-bind", "cat /main.txt /rw.txt /tool.txt /image-bind.txt") == \
        "main\nmain\nscribble\ntool-v1\nok\n"
    # rw writes went nowhere: not the context, not the image; no mount point stays.
    assert (tmp_path / "ctx" / "app" / "main.txt").read_text() == "main\n"
    assert _sh(pallet, "bk-bind", "ls -d /src /mnt /tool /bb 2>&1 | wc -l; "
               "ls /mnt 2>/dev/null; busybox true && echo intact") == "4\nintact\n"
    assert "No such file" in pallet("run", "--rm", *NONE, "bk-bind", "ls", "/src").stderr
    # The cache keys on the bind's source: a changed file misses at the steps that bind it.
    again = _build(pallet, ctx)
    assert len(_cached_steps(again.stdout)) == 5
    (tmp_path / "ctx" / "app" / "main.txt").write_text("main v2\n")
    changed = _build(pallet, ctx, "-t", "bk-bind")
    assert _cached_steps(changed.stdout) == ["RUN mkdir -p /opt/tool && echo tool-v1 > "
                                             "/opt/tool/version"]
    assert _sh(pallet, "bk-bind", "cat /main.txt") == "main v2\n"
    assert out.returncode == 0
    _clean(pallet)


def test_tmpfs_mount_and_run_network(pallet, tmp_path):
    ctx = _context(tmp_path, """\
FROM busybox
RUN --mount=type=tmpfs,target=/scratch,size=2m \\
    df -k /scratch | tail -1 | awk '{print $2}' > /size && echo x > /scratch/file
RUN --network=host ls /sys/class/net > /host-net
RUN --network=none ls /sys/class/net > /none-net
""")
    _build(pallet, ctx, "-t", "bk-tmpfs")
    assert _sh(pallet, "bk-tmpfs", "cat /size; ls /scratch 2>&1 | wc -l") == "2048\n1\n"
    assert _sh(pallet, "bk-tmpfs", "cat /none-net") == "lo\n"
    # The host's interfaces (others' come and go: its default route's is checked).
    host = set(_sh(pallet, "bk-tmpfs", "cat /host-net").split())
    with open("/proc/net/route") as f:
        default = {ln.split()[0] for ln in f.read().splitlines()[1:] if ln.split()[1] == "0" * 8}
    assert default and default <= host and "lo" in host
    _clean(pallet)


def test_secrets_are_seen_by_the_run_and_never_kept(pallet, tmp_path):
    secret = "s3cr3t-value-4242"
    (tmp_path / "token.txt").write_text(secret)
    ctx = _context(tmp_path, """\
FROM busybox
RUN --mount=type=secret,id=token,required \\
    stat -c '%a %u' /run/secrets/token > /seen && wc -c < /run/secrets/token >> /seen
RUN --mount=type=secret,id=token,target=/etc/tok,mode=0440,uid=5 \\
    --mount=type=secret,id=api,env=API_KEY \\
    stat -c '%a %u' /etc/tok >> /seen && echo "${#API_KEY}" >> /seen
RUN --mount=type=secret,id=absent ls /run/secrets 2>&1 | wc -l >> /seen
""")
    pallet.env["BK_API"] = "api-key-value-77"
    out = _build(pallet, ctx, "--secret", f"id=token,src={tmp_path / 'token.txt'}",
                 "--secret", "id=api,env=BK_API", "-t", "bk-secret")
    assert _sh(pallet, "bk-secret", "cat /seen") == "400 0\n17\n440 5\n16\n1\n"
    assert secret not in out.stdout and "api-key-value" not in out.stdout
    hist = pallet("history", "--no-trunc", "bk-secret").stdout
    assert secret not in hist and "api-key-value" not in hist
    layers = _layer_bytes(pallet, tmp_path, "bk-secret")
    assert b"seen\0" in layers  # the layers were read
    assert secret.encode() not in layers and b"api-key-value" not in layers
    assert b"run/secrets" not in layers and b"etc/tok" not in layers
    # A changed secret is not a changed step (BuildKit's cache ignores secret values).
    (tmp_path / "token.txt").write_text("other-value-0000!")
    again = _build(pallet, ctx, "--secret", f"id=token,src={tmp_path / 'token.txt'}",
                   "--secret", "id=api,env=BK_API")
    assert len(_cached_steps(again.stdout)) == 3
    _clean(pallet)


def test_iidfile_and_output(pallet, tmp_path):
    ctx = _context(tmp_path, "FROM busybox\nRUN echo x > /x\n")
    iid = tmp_path / "iid"
    _build(pallet, ctx, "-t", "bk-iid", "--iidfile", str(iid))
    assert iid.read_text() == json.loads(pallet("image", "inspect", "bk-iid").stdout)[0]["Id"]
    out = pallet("build", *NONE, "-o", "type=local,dest=out", ctx)
    assert out.returncode == 125 and out.stdout == ""
    assert out.stderr.startswith("Error: -o/--output type=local,dest=out is not supported")
    _clean(pallet)


@pytest.mark.parametrize("dockerfile,args,message", [
    ("FROM busybox\nRUN --mount=type=ssh ssh-add -l\n", (),
     'Error: Dockerfile parse error line 3: no SSH key "default" forwarded from the client'),
    ("FROM busybox\nRUN --mount=type=volume,target=/v true\n", (),
     'Error: Dockerfile parse error line 3: unsupported mount type "volume"'),
    ("FROM busybox\nRUN --mount=type=secret,id=tok,required true\n", (),
     "secret tok: not found: pass it with --secret id=tok,src=FILE"),
    ("FROM busybox\nRUN --mount=type=bind,source=nope,target=/n true\n", (),
     "failed to compute cache key for the mount /n: file not found in build context"),
    ("FROM busybox\nRUN --mount=type=bind,from=127.0.0.1:1/bk-nope,target=/n true\n", (),
     "invalid from flag value 127.0.0.1:1/bk-nope: "),
    ("FROM busybox\nRUN true\n", ("--secret", "id=x,src=/nonexistent/bk"),
     "Error: failed to read secret x from /nonexistent/bk: No such file or directory"),
    # A RUN with every kind of mount fails: its mounts, copies and locks go with it.
    ("FROM busybox\nRUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t "
     "--mount=type=bind,target=/b,rw --mount=type=bind,from=busybox,source=/bin,target=/x,rw "
     "--mount=type=secret,id=s touch /c/f /t/f /b/f /x/f && cat /run/secrets/s && exit 7\n",
     ("--secret", "id=s,env=HOME"),
     "The command '/bin/sh -c touch /c/f /t/f /b/f /x/f && cat /run/secrets/s && exit 7' "
     "returned a non-zero code: 7"),
])
def test_a_refused_or_failed_mount_says_why_and_leaves_nothing(pallet, tmp_path, dockerfile,
                                                               args, message):
    ctx = _context(tmp_path, dockerfile, {"f.txt": "f\n"})
    before = _store_files(pallet)
    out = pallet("build", *NONE, *args, ctx)
    assert out.returncode == 1, out.stdout
    assert out.stderr.startswith(message) and out.stderr.count("\n") == 1, out.stderr
    _clean(pallet)
    if "non-zero code" not in message:
        assert _store_files(pallet) == before


def test_run_security_insecure_needs_allow_and_runs_with_all_privileges(pallet, tmp_path):
    # CapEff of the RUN's shell: docker's default set in a sandboxed RUN, all of them with
    # --security=insecure, which BuildKit grants only with --allow security.insecure.
    ctx = _context(tmp_path, """\
FROM busybox
RUN grep CapEff /proc/self/status > /sandbox
RUN --security=insecure grep CapEff /proc/self/status > /insecure
""")
    out = pallet("build", *NONE, "-t", "bk-insecure", ctx, timeout=120)
    assert out.returncode == 1
    assert "RUN --security=insecure is not allowed: build with --allow security.insecure" \
        in out.stderr, out.stderr
    assert pallet("image", "inspect", "bk-insecure").returncode != 0  # nothing tagged
    _build(pallet, ctx, "--allow", "security.insecure", "-t", "bk-insecure")
    sandbox = int(_sh(pallet, "bk-insecure", "cat /sandbox").split()[1], 16)
    insecure = int(_sh(pallet, "bk-insecure", "cat /insecure").split()[1], 16)
    assert sandbox == 0xa80425fb  # docker's default capabilities
    assert insecure & ~sandbox and insecure & (1 << 21)  # CAP_SYS_ADMIN among them
    (tmp_path / "bad").mkdir()
    bad = _context(tmp_path / "bad", "FROM busybox\nRUN --security=sideways true\n")
    out = pallet("build", *NONE, bad, timeout=60)
    assert out.returncode == 1 and 'unsupported security mode "sideways"' in out.stderr
    out = pallet("build", *NONE, "--allow", "fly", ctx, timeout=60)
    assert out.returncode == 1 and "invalid entitlement: fly" in out.stderr
    _clean(pallet)


def test_copy_parents_keeps_the_sources_directories(pallet, tmp_path):
    ctx = _context(tmp_path, """\
FROM busybox
COPY --parents x/a.txt y/b.txt /flat/
COPY --parents x/./deep/*.txt /pivot/
COPY --parents x /whole/
COPY x/a.txt y/b.txt /plain/
""", {"x/a.txt": "a", "y/b.txt": "b", "x/deep/c.txt": "c", "x/deep/d.bin": "d"})
    _build(pallet, ctx, "-t", "bk-parents")
    listing = _sh(pallet, "bk-parents", "cd / && find flat pivot whole plain -type f | sort")
    assert listing.split() == ["flat/x/a.txt", "flat/y/b.txt", "pivot/deep/c.txt",
                               "plain/a.txt", "plain/b.txt", "whole/x/a.txt",
                               "whole/x/deep/c.txt", "whole/x/deep/d.bin"]
    assert _sh(pallet, "bk-parents", "cat /flat/y/b.txt /pivot/deep/c.txt") == "bc"
    _clean(pallet)
