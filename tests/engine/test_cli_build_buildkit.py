"""A modern Dockerfile (`# syntax=docker/dockerfile:1`) through `pallet build`: BuildKit's
heredocs (RUN scripts, COPY'd files), RUN --mount (cache kept across builds and out of
the image, bind, tmpfs, secret, ssh with real ssh-agents) and --network, COPY
--chmod/--link/--parents, COPY and ADD --exclude (what the patterns name is not in the
image), --iidfile; the layer cache keyed on the mounts and on the exclude patterns; the
refusals (unknown types, missing ids, bad --ssh, bad patterns, -o) in one line with nothing
left on the host. Real builds on the busybox image, RUN containers on --network none unless
the test is about networking.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
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


# -- RUN --mount=type=ssh ------------------------------------------------------------------
@pytest.fixture
def ssh_key(tmp_path):
    """make(COMMENT): a new ed25519 key (no passphrase) made by ssh-keygen; its path."""
    def make(comment: str, passphrase: str = "") -> str:
        path = str(tmp_path / f"key-{comment}")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment,
                        "-f", path], check=True, capture_output=True)
        return path
    return make


@pytest.fixture
def ssh_agent(tmp_path):
    """start(NAME, *KEYS): a real ssh-agent on the socket NAME in the test's tmp dir, holding
    KEYS (ssh-add); its socket's path. Every agent started is killed at teardown."""
    procs: list[subprocess.Popen] = []

    def start(name: str, *keys: str) -> str:
        path = str(tmp_path / name)
        proc = subprocess.Popen(["ssh-agent", "-D", "-a", path], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        procs.append(proc)
        assert proc.stdout.readline().startswith(b"SSH_AUTH_SOCK=")
        for key in keys:
            subprocess.run(["ssh-add", "-q", key], env={**os.environ, "SSH_AUTH_SOCK": path},
                           check=True, capture_output=True)
        return path

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait()
        proc.stdout.close()


def _agent_identities(path: str) -> list[str]:
    """The comments of the keys the agent on socket PATH holds, asked as ssh-add -l asks:
    SSH_AGENTC_REQUEST_IDENTITIES (11), answered by SSH_AGENT_IDENTITIES_ANSWER (12)."""
    def recv(s: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            assert chunk, f"the agent at {path} closed the connection"
            data += chunk
        return data

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"\0\0\0\x01\x0b")
        msg = recv(s, struct.unpack(">I", recv(s, 4))[0])
    assert msg[0] == 12, msg
    comments, off = [], 5
    for _ in range(struct.unpack(">I", msg[1:5])[0]):
        off += 4 + struct.unpack(">I", msg[off:off + 4])[0]  # the key blob
        size = struct.unpack(">I", msg[off:off + 4])[0]
        comments.append(msg[off + 4:off + 4 + size].decode())
        off += 4 + size
    return comments


def _build_helpers(pallet) -> list[tuple[int, str]]:
    """(pid, argv[0]) of the processes a build of PALLET's runs in its tmp dir: the
    ssh-agent it started for key files, the forwarder of a RUN's ssh mounts."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if cwd.startswith(pallet.root + "/"):
            name = os.path.basename(argv[0].decode())
            out.append((int(pid), os.path.basename(argv[3].decode())
                        if name.startswith("python") else name))
    return out


def _running_build_container(pallet, deadline: float) -> int:
    """The pid of the RUN container the running build waits in (it made /waiting)."""
    while time.monotonic() < deadline:
        for cid in pallet("ps", "-q", "--no-trunc").stdout.split():
            pid = pallet("inspect", "-f", "{{.State.Pid}}", cid).stdout.strip()
            if pid.isdigit() and os.path.exists(f"/proc/{pid}/root/waiting"):
                return int(pid)
        time.sleep(0.1)
    raise AssertionError("no RUN container waiting")


SSH_DOCKERFILE = """\
FROM busybox
RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && stat -c '%n %a %u %g' "$SSH_AUTH_SOCK" > /seen
RUN --mount=type=ssh,id=deploy,target=/tmp/deploy.sock,mode=0660,uid=7,gid=8 \\
    --mount=type=ssh stat -c '%n %a %u %g' /tmp/deploy.sock /run/buildkit/ssh_agent.1 >> /seen \\
    && echo "$SSH_AUTH_SOCK" >> /seen
RUN echo "after: [$SSH_AUTH_SOCK]" >> /seen
RUN --mount=type=ssh,id=absent test ! -e /run/buildkit/ssh_agent.0 \\
    && echo "skipped: $SSH_AUTH_SOCK" >> /seen
RUN --mount=type=ssh --mount=type=ssh,id=deploy,target=/deploy.sock \\
    touch /waiting && i=0 && while [ ! -e /go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done \\
    && cat /go >> /seen && rm /go /waiting
"""


def test_ssh_mounts_reach_the_callers_agent_and_pallets_own_for_that_run_only(
        pallet, tmp_path, ssh_key, ssh_agent):
    caller = ssh_agent("caller.sock", ssh_key("caller-key"))
    deploy = ssh_key("deploy-key")
    ctx = _context(tmp_path, SSH_DOCKERFILE)
    pallet.env["SSH_AUTH_SOCK"] = caller  # `--ssh default`: the caller's agent
    build = subprocess.Popen(
        [PALLET, "--root", pallet.root, "build", *NONE, "--ssh", "default", "--ssh",
         f"deploy={deploy}", "-t", "bk-ssh", ctx], env=pallet.env, text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The last RUN waits: its sockets are asked for their keys from the host, through
        # the RUN's root. Busybox has no client that speaks to a unix socket, so this is
        # what proves a RUN's socket is an agent's: the caller's holds caller-key, the
        # one pallet started for the key file holds deploy-key.
        pid = _running_build_container(pallet, time.monotonic() + 60)
        root = f"/proc/{pid}/root"
        said = [_agent_identities(f"{root}/run/buildkit/ssh_agent.0"),
                _agent_identities(f"{root}/deploy.sock")]
        helpers = sorted(name for _, name in _build_helpers(pallet))
        with open(f"{root}/go", "w") as f:
            f.write(f"agents: {said}\n")
        out, err = build.communicate(timeout=120)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    assert build.returncode == 0, out + err
    assert said == [["caller-key"], ["deploy-key"]]
    # While it ran: pallet's ssh-agent (deploy's keys) and the RUN's forwarder; after the
    # build neither is left.
    assert helpers == ["ssh-agent", "ssh_forward.py"]
    assert _build_helpers(pallet) == []
    # Each socket as the mount said (mode 0600 and root by default); SSH_AUTH_SOCK names
    # the RUN's first ssh mount, for that RUN only (a skipped mount's too, as BuildKit).
    assert _sh(pallet, "bk-ssh", "cat /seen") == (
        "/run/buildkit/ssh_agent.0 600 0 0\n"
        "/tmp/deploy.sock 660 7 8\n/run/buildkit/ssh_agent.1 600 0 0\n/tmp/deploy.sock\n"
        "after: []\n"
        "skipped: /run/buildkit/ssh_agent.0\n"
        "agents: [['caller-key'], ['deploy-key']]\n")
    # No socket, mount point or directory made for one is in the image.
    assert _sh(pallet, "bk-ssh", "ls -a /run /tmp /deploy.sock 2>&1; env | grep SSH_; true") \
        == ("ls: /run: No such file or directory\n"
            "ls: /deploy.sock: No such file or directory\n/tmp:\n.\n..\n")
    names = _layer_names(pallet, tmp_path, "bk-ssh")
    assert "seen" in names
    assert not [n for n in names if "ssh" in n or n.startswith(("run", "deploy", "waiting"))]
    # Another agent on another socket, the key at another path: the same steps, from the
    # cache (BuildKit keys on the mount's spec, never on where the agent lives).
    other = ssh_agent("other-agent.sock", ssh_key("other-key"))
    os.rename(deploy, str(tmp_path / "moved-key"))
    pallet.env["SSH_AUTH_SOCK"] = other
    again = _build(pallet, ctx, "--ssh", "default", "--ssh",
                   f"deploy={tmp_path / 'moved-key'}")
    assert len(_cached_steps(again.stdout)) == 5
    assert _build_helpers(pallet) == []
    _clean(pallet)


def _layer_names(pallet, tmp_path, image: str) -> list[str]:
    """The name of every entry in IMAGE's layers, as `pallet save` writes them."""
    path = str(tmp_path / "saved-names.tar")
    pallet("save", "-o", path, image, check=True)
    names = []
    with tarfile.open(path) as outer:
        for member in outer.getmembers():
            if member.isfile():
                try:
                    with tarfile.open(fileobj=outer.extractfile(member), mode="r:*") as layer:
                        names += [m.name for m in layer.getmembers()]
                except tarfile.TarError:
                    continue  # a manifest or config
    return names


def test_a_socket_given_as_a_path_and_a_user_who_owns_the_mount(pallet, tmp_path, ssh_key,
                                                                 ssh_agent):
    # `--ssh ID=SOCKET`: that agent; `required` with the id given runs; the socket is the
    # RUN's user's when the mount says so (uid), and theirs only (mode 0600).
    sock = ssh_agent("agent.sock", ssh_key("k"))
    pallet.env.pop("SSH_AUTH_SOCK", None)
    ctx = _context(tmp_path, """\
FROM busybox
USER 1000:1000
RUN --mount=type=ssh,id=git,required=true,uid=1000 \\
    stat -c '%u %a' "$SSH_AUTH_SOCK" > /tmp/seen && test -w "$SSH_AUTH_SOCK" && id -u >> /tmp/seen
""")
    _build(pallet, ctx, "--ssh", f"git={sock}", "-t", "bk-ssh-user")
    assert _sh(pallet, "bk-ssh-user", "cat /tmp/seen") == "1000 600\n1000\n"
    _clean(pallet)


@pytest.mark.parametrize("dockerfile,args,message", [
    # A required id the build was not given: BuildKit's words and the flag to pass.
    ("RUN --mount=type=ssh,required=true true\n", (),
     'no SSH key "default" forwarded from the client: pass it with --ssh default'),
    ("RUN --mount=type=ssh,id=deploy,required true\n", ("--ssh", "other={key}"),
     'no SSH key "deploy" forwarded from the client: pass it with --ssh deploy'),
    # Bad --ssh values, before any step runs.
    ("RUN true\n", ("--ssh", "default"),
     "Error: invalid --ssh default: no agent socket or key given and SSH_AUTH_SOCK is not set"),
    ("RUN true\n", ("--ssh", "deploy=/nonexistent/bk-key"),
     "Error: invalid --ssh deploy=/nonexistent/bk-key: /nonexistent/bk-key: No such file or "
     "directory"),
    ("RUN true\n", ("--ssh", "deploy={key},{ctx}/f.txt"),
     "Error: invalid --ssh deploy={key},{ctx}/f.txt: cannot load key {ctx}/f.txt: "),
    ("RUN true\n", ("--ssh", "deploy={locked}"),
     "Error: invalid --ssh deploy={locked}: key {locked} needs a passphrase"),
    ("RUN true\n", ("--ssh", "deploy={ctx}"),
     "Error: invalid --ssh deploy={ctx}: {ctx} is neither an agent socket nor a key file"),
    ("RUN true\n", ("--ssh", "a={key}", "--ssh", "a={key}"),
     "Error: invalid --ssh a={key}: duplicate id a"),
    ("RUN true\n", ("--ssh", "deploy={key},,{key}"),
     "Error: invalid --ssh deploy={key},,{key}: an empty path in the list"),
    # A RUN that fails with its agent: the agent, the forwarder and the sockets go.
    ("RUN --mount=type=ssh,id=deploy test -S /run/buildkit/ssh_agent.0 && exit 3\n",
     ("--ssh", "deploy={key}"),
     "The command '/bin/sh -c test -S /run/buildkit/ssh_agent.0 && exit 3' returned a "
     "non-zero code: 3"),
])
def test_a_missing_ssh_id_or_bad_ssh_spec_says_why_and_leaves_nothing(
        pallet, tmp_path, ssh_key, dockerfile, args, message):
    ctx = _context(tmp_path, "FROM busybox\n" + dockerfile, {"f.txt": "not a key\n"})
    names = {"key": ssh_key("k"), "locked": ssh_key("locked", "a passphrase"), "ctx": ctx}
    pallet.env.pop("SSH_AUTH_SOCK", None)
    before = _store_files(pallet)
    out = pallet("build", *NONE, *(a.format(**names) for a in args), ctx, timeout=120)
    assert out.returncode == 1, out.stdout
    assert out.stderr.startswith(message.format(**names)) and out.stderr.count("\n") == 1, \
        out.stderr
    assert _build_helpers(pallet) == []
    _clean(pallet)
    if "non-zero code" not in message:
        assert _store_files(pallet) == before


EXCLUDE_FILES = {
    "app/main.py": "main", "app/notes.txt": "notes", "app/README.md": "readme",
    "app/pkg/top.md": "top", "app/pkg/a/code.py": "code", "app/pkg/a/doc.md": "doc",
    "app/pkg/b/c/deep.md": "deep", "app/tmp/cache.bin": "cache", "app/tmp/sub/x": "x",
    "home.txt": "t", "home.md": "m", "homer.py": "p", "keep.txt": "k",
    "media/song.mp3": "mp3", "media/clip.mpeg": "mpeg",
}


def _files(pallet, image: str, *dirs: str) -> list[str]:
    return _sh(pallet, image, f"cd / && find {' '.join(dirs)} -type f | sort").split()


def test_copy_exclude_leaves_out_the_files_and_directories_its_patterns_name(pallet, tmp_path):
    ctx = _context(tmp_path, """\
FROM busybox
COPY --exclude=*.txt . /all/
COPY --exclude=pkg/**/*.md --exclude=tmp app/ /app/
COPY --exclude=*.txt --exclude=*.md hom* /hom/
COPY --link --exclude=**/*.py app/pkg /linked/
ADD --exclude=*.mp3 media/ /media/
""", EXCLUDE_FILES)
    _build(pallet, ctx, "-t", "bk-exc")
    # A top-level glob: `*` stays in one path component, so app/notes.txt is copied.
    top = _files(pallet, "bk-exc", "all")
    assert "all/home.txt" not in top and "all/keep.txt" not in top
    assert {"all/app/notes.txt", "all/home.md", "all/homer.py", "all/Dockerfile",
            "all/app/tmp/sub/x"} <= set(top)
    # Patterns are relative to the source: `**` in subdirectories, a whole directory.
    assert _files(pallet, "bk-exc", "app") == [
        "app/README.md", "app/main.py", "app/notes.txt", "app/pkg/a/code.py"]
    assert _sh(pallet, "bk-exc", "test -e /app/tmp || echo gone; cat /app/pkg/a/code.py"
               ) == "gone\ncode"
    # A wildcard's matches are themselves matched (the Dockerfile reference's example).
    assert _files(pallet, "bk-exc", "hom") == ["hom/homer.py"]
    assert _files(pallet, "bk-exc", "linked") == [
        "linked/a/doc.md", "linked/b/c/deep.md", "linked/top.md"]
    assert _files(pallet, "bk-exc", "media") == ["media/clip.mpeg"]
    _clean(pallet)


def test_copy_exclude_from_a_stage_or_an_image(pallet, tmp_path):
    ctx = _context(tmp_path, """\
FROM busybox AS gen
RUN mkdir -p /out/logs /out/bin && echo tool > /out/bin/tool && echo l > /out/logs/a.log \\
    && echo k > /out/keep.cfg && echo x > /out/x.log
FROM busybox
COPY --from=gen --exclude=logs --exclude=*.log /out/ /dst/
COPY --from=busybox --exclude=passwd /etc/ /etc2/
COPY --from=gen --exclude=* /out/ /nothing/
""")
    _build(pallet, ctx, "-t", "bk-exc-from")
    assert _files(pallet, "bk-exc-from", "dst") == ["dst/bin/tool", "dst/keep.cfg"]
    assert _sh(pallet, "bk-exc-from", "test -e /dst/logs || echo gone") == "gone\n"
    # The busybox image's /etc (passwd and group) less passwd.
    assert _files(pallet, "bk-exc-from", "etc2") == ["etc2/group"]
    assert _sh(pallet, "bk-exc-from", "ls -A /nothing; test -d /nothing && echo dir"
               ) == "dir\n"
    _clean(pallet)


def test_copy_exclude_with_parents_matches_from_the_root_or_the_pivot(pallet, tmp_path):
    ctx = _context(tmp_path, """\
FROM busybox
COPY --parents --exclude=x/deep/*.bin --exclude=y x y /par/
COPY --parents --exclude=deep/*.bin x/./deep /piv/
COPY --parents --exclude=x/a.txt x/*.txt y/b.txt /one/
""", {"x/a.txt": "a", "x/z.txt": "z", "x/deep/c.txt": "c", "x/deep/d.bin": "d",
      "y/b.txt": "b"})
    _build(pallet, ctx, "-t", "bk-exc-parents")
    assert _files(pallet, "bk-exc-parents", "par", "piv", "one") == [
        "one/x/z.txt", "one/y/b.txt", "par/x/a.txt", "par/x/deep/c.txt", "par/x/z.txt",
        "piv/deep/c.txt"]
    _clean(pallet)


def test_a_changed_exclude_pattern_misses_the_cache(pallet, tmp_path):
    dockerfile = "FROM busybox\nCOPY --exclude={} src/ /s/\nRUN ls /s > /listing\n"
    files = {"src/a.txt": "a", "src/b.md": "b", "src/c.py": "c"}
    ctx = _context(tmp_path, dockerfile.format("*.md"), files)
    _build(pallet, ctx, "-t", "bk-exc-cache")
    assert _sh(pallet, "bk-exc-cache", "cat /listing").split() == ["a.txt", "c.py"]
    # The same build again: every step from the cache, and so is it when only a file the
    # pattern leaves out changed.
    again = _build(pallet, ctx, "-t", "bk-exc-cache")
    assert len(_cached_steps(again.stdout)) == 2
    (tmp_path / "ctx" / "src" / "b.md").write_text("changed")
    again = _build(pallet, ctx, "-t", "bk-exc-cache")
    assert len(_cached_steps(again.stdout)) == 2
    # Another pattern: the COPY and what follows it run again...
    (tmp_path / "ctx" / "Dockerfile").write_text(SYNTAX + dockerfile.format("*.py"))
    changed = _build(pallet, ctx, "-t", "bk-exc-cache")
    assert _cached_steps(changed.stdout) == []
    assert _sh(pallet, "bk-exc-cache", "cat /listing").split() == ["a.txt", "b.md"]
    # ...even one that leaves out the very same files.
    (tmp_path / "ctx" / "Dockerfile").write_text(SYNTAX + dockerfile.format("c.py"))
    same = _build(pallet, ctx, "-t", "bk-exc-cache")
    assert _cached_steps(same.stdout) == []
    _clean(pallet)


@pytest.mark.parametrize("line, message", [
    ("COPY --exclude= . /a/", "empty --exclude pattern: give a path pattern, e.g. "
     "--exclude=*.txt"),
    ('COPY --exclude="  " . /a/', "empty --exclude pattern"),
    ("COPY --exclude=*.md --exclude=[a . /a/",
     "invalid --exclude pattern '[a': syntax error in pattern"),
    ("ADD --exclude=src/[]x . /a/", "invalid --exclude pattern 'src/[]x': syntax error in "
     "pattern"),
    ("COPY --exclude=! . /a/", """invalid --exclude pattern '!': illegal exclusion pattern: "!\""""),
    ("ADD --exclude . /a/", "Missing a value on flag: exclude"),
    ("RUN --exclude=x true", "Unknown flag: exclude"),
])
def test_a_bad_exclude_pattern_is_refused_in_one_line_and_leaves_nothing(pallet, tmp_path,
                                                                         line, message):
    ctx = _context(tmp_path, f"FROM busybox\n{line}\n", {"f.txt": "f"})
    before = _store_files(pallet)
    out = pallet("build", *NONE, "-t", "bk-exc-bad", ctx)
    assert out.returncode == 1, out.stdout
    assert out.stderr.startswith(f"Error: Dockerfile parse error line 3: {message}")
    assert out.stderr.count("\n") == 1, out.stderr
    assert pallet("image", "inspect", "bk-exc-bad").returncode != 0
    _clean(pallet)
    assert _store_files(pallet) == before
