"""A docker user's container filesystem and image-making commands: `container ls|...`,
diff, export, import, commit, history and update, as the real CLI prints them, with bad
input refused with docker's words and exit codes and nothing left behind.

Real CLI, real kernel, the busybox image; containers use --network none (no CNI needed).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
import time

import pytest

from tests.engine.conftest import PALLET, leftovers

pytestmark = pytest.mark.root

NONE = ("--network", "none")
CHANGES = "echo hi > /tmp/x; mkdir -p /new/d; rm /bin/ls; echo extra >> /etc/passwd"


def _raw(pallet, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    """The CLI with bytes in and out (tar streams)."""
    return subprocess.run([PALLET, "--root", pallet.root, *args], capture_output=True,
                          env=pallet.env, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)


def _store_files(pallet) -> set[str]:
    """Blobs, snapshots and temp files of the image store: what a failure must not add."""
    out = set()
    for sub in ("content", "snapshots", "tmp"):
        for dirpath, dirnames, files in os.walk(os.path.join(pallet.root, sub)):
            if os.path.basename(dirpath) in ("fs",) or "/fs/" in dirpath:
                dirnames.clear()
                continue
            out.update(os.path.join(dirpath, f) for f in files + dirnames if f != "fs")
    return out


def _changed(pallet, name: str = "changed") -> str:
    out = pallet("run", "--name", name, *NONE, "busybox", "sh", "-c", CHANGES)
    assert out.returncode == 0, out.stderr
    return pallet.engine().get(name).id


def test_container_group_is_the_top_level_commands(pallet):
    cid = pallet("container", "run", "-d", "--name", "cmds-grp", *NONE, "busybox", "sleep",
                 "60", check=True).stdout.strip()
    for ls in ("ls", "ps", "list"):
        assert pallet("container", ls, "--format", "{{.Names}} {{.State}}").stdout == \
            "cmds-grp running\n"
    assert pallet("container", "ls", "-q", "--no-trunc").stdout == cid + "\n"
    assert pallet("container", "inspect", "-f", "{{.Name}}", "cmds-grp").stdout == "/cmds-grp\n"
    # container inspect looks at containers only: an image of that name is no container.
    out = pallet("container", "inspect", "busybox")
    assert out.returncode == 1 and "No such container: busybox" in out.stderr
    assert pallet("container", "exec", "cmds-grp", "echo", "in").stdout == "in\n"
    assert pallet("container", "stop", "-t", "0", "cmds-grp").stdout == "cmds-grp\n"
    cid2 = pallet("container", "create", "--name", "cmds-grp2", *NONE, "busybox", "true",
                  check=True).stdout.strip()
    out = pallet("container", "prune", "-f")
    assert out.stdout.startswith("Deleted Containers:\n") and {cid, cid2} <= set(out.stdout.split())
    assert pallet("ps", "-aq").stdout == ""
    assert pallet("container", "bogus").returncode == 125
    top = pallet("--help").stdout
    assert "container-ls" not in top and " container " in top and " diff " in top
    assert leftovers(pallet, [cid]) == []


def test_container_prune_removes_stopped_containers_only(pallet):
    pallet("run", "-d", "--name", "cmds-up", *NONE, "busybox", "sleep", "60", check=True)
    gone = pallet("create", "--name", "cmds-down", *NONE, "busybox", "true",
                  check=True).stdout.strip()
    out = pallet("container", "prune", "-f")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"Deleted Containers:\n{gone}\n\nTotal reclaimed space: ")
    assert pallet("ps", "-a", "--format", "{{.Names}}").stdout == "cmds-up\n"


def test_diff_lists_what_was_added_changed_and_deleted(pallet):
    _changed(pallet)
    # The mount points the runtime made (/etc/hosts, /proc...) are not changes.
    assert pallet("diff", "changed").stdout.splitlines() == [
        "C /bin", "D /bin/ls", "C /etc", "C /etc/passwd", "A /new", "A /new/d", "C /tmp",
        "A /tmp/x"]
    # A running container's changes, as it makes them; `container diff` is the same.
    pallet("run", "-d", "--name", "live", *NONE, "busybox", "sh", "-c",
           "touch /root-file; sleep 60", check=True)
    deadline = time.time() + 10
    while "A /root-file" not in pallet("diff", "live").stdout and time.time() < deadline:
        time.sleep(0.1)
    assert pallet("container", "diff", "live").stdout == "A /root-file\n"
    missing = pallet("diff", "nope")
    assert missing.returncode == 1 and missing.stderr == "Error: No such container: nope\n"


def test_commit_makes_an_image_of_the_changes_and_the_containers_config(pallet):
    cid = _changed(pallet)
    before = _store_files(pallet)
    out = pallet("commit", "-a", "Jo <jo@example.com>", "-m", "add x", "-c", "ENV FOO=bar",
                 "-c", 'CMD ["cat", "/tmp/x"]', "-c", "EXPOSE 8080", "changed", "cmds/img:v1")
    assert out.returncode == 0, out.stderr
    image_id = out.stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    assert pallet("run", "--rm", *NONE, "cmds/img:v1").stdout == "hi\n"
    check = pallet("run", "--rm", *NONE, "cmds/img:v1", "sh", "-c",
                   "echo $FOO; test -e /bin/ls || echo no-ls; ls -d /new/d; tail -1 /etc/passwd;"
                   " test -e /etc/hosts && echo hosts")
    assert check.stdout == "bar\nno-ls\n/new/d\nextra\nhosts\n"
    info = json.loads(pallet("image", "inspect", "cmds/img:v1").stdout)[0]
    assert info["Id"] == image_id and info["Author"] == "Jo <jo@example.com>"
    assert info["Config"]["Cmd"] == ["cat", "/tmp/x"] and "FOO=bar" in info["Config"]["Env"]
    assert info["Config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert not any(e.startswith(("HOSTNAME=", "HOME=")) for e in info["Config"]["Env"])
    assert len(info["RootFS"]["Layers"]) == 2
    # Without a name: a dangling image, listed as <none>.
    dangling = pallet("commit", "changed").stdout.strip()
    assert f"<none>       <none>    {dangling[7:19]}" in pallet("images").stdout
    # Bad input: docker's messages, exit 1, nothing written.
    after = _store_files(pallet)
    bad = pallet("commit", "-c", "RUN echo no", "changed", "cmds/bad")
    assert bad.returncode == 1 and bad.stderr == \
        "Error: run is not a valid change command\n"
    bad = pallet("commit", "changed", "Bad/Name")
    assert bad.returncode == 1 and "Bad/Name" in bad.stderr
    bad = pallet("commit", "ghost")
    assert bad.returncode == 1 and bad.stderr == "Error: No such container: ghost\n"
    assert pallet("commit", "--bogus", "changed").returncode == 125
    assert _store_files(pallet) == after and before <= after
    assert leftovers(pallet, [cid]) == []


def test_commit_pauses_a_running_container_and_leaves_it_running(pallet):
    pallet("run", "-d", "--name", "busy", *NONE, "busybox", "sh", "-c",
           "echo data > /data.txt; sleep 60", check=True)
    deadline = time.time() + 10
    while "A /data.txt" not in pallet("diff", "busy").stdout and time.time() < deadline:
        time.sleep(0.1)
    for flags in ((), ("--pause=false",), ("--no-pause",)):
        out = pallet("commit", *flags, "busy", "cmds-busy")
        assert out.returncode == 0, out.stderr
        assert pallet("inspect", "-f", "{{.State.Status}}", "busy").stdout == "running\n"
    assert pallet("run", "--rm", *NONE, "cmds-busy", "cat", "/data.txt").stdout == "data\n"


def test_commit_stores_links_as_links_and_whiteouts_as_oci_whiteouts(pallet, tmp_path):
    secret = tmp_path / "host-secret"
    secret.write_text("host only")
    pallet("run", "--name", "linky", *NONE, "busybox", "sh", "-c",
           f"ln -s {secret} /leak; ln -s / /rootlink; ln /bin/busybox /bb; rm -r /root;"
           " mkdir /opq; rm /etc/group", check=True)
    pallet("commit", "linky", "cmds-linky", check=True)
    store = pallet.engine().images
    image = store.get("cmds-linky")
    with store.content.open(image.layers[-1].digest) as f, \
            tarfile.open(fileobj=io.BytesIO(gzip.decompress(f.read()))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        data = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isreg())
    assert members["leak"].issym() and members["leak"].linkname == str(secret)
    assert members["rootlink"].issym() and members["rootlink"].linkname == "/"
    assert b"host only" not in data
    assert members["bb"].islnk() or members["bb"].isreg()
    assert ".wh.root" in members and "etc/.wh.group" in members
    assert not any(n.startswith(("proc", "etc/hosts")) for n in members)
    run = pallet("run", "--rm", *NONE, "cmds-linky", "sh", "-c",
                 "readlink /leak; test -e /root || echo no-root; test -e /etc/group || echo no-group")
    assert run.stdout == f"{secret}\nno-root\nno-group\n"


def test_export_writes_the_whole_filesystem_without_volumes(pallet, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "in-volume").write_text("not exported")
    cid = pallet("create", "--name", "exp", *NONE, "-v", f"{vol}:/mnt", "busybox", "sh", "-c",
                 "echo hi > /tmp/x", check=True).stdout.strip()
    pallet("start", "-a", "exp", check=True)
    out = _raw(pallet, "export", "exp")
    assert out.returncode == 0, out.stderr
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        names = set(tar.getnames())
        assert tar.extractfile("tmp/x").read() == b"hi\n"
        assert tar.getmember("bin/sh").issym()
    assert {"bin/busybox", "etc/passwd", "proc", "mnt"} <= names
    assert "mnt/in-volume" not in names and "bin/ls" in names
    outdir = tmp_path / "out"
    outdir.mkdir()
    target = outdir / "out.tar"
    assert pallet("container", "export", "-o", str(target), "exp").returncode == 0
    with tarfile.open(target) as tar:
        assert set(tar.getnames()) == names
    # Nothing half-written: no file for a missing container, no temp file in a bad dir.
    bad = pallet("export", "-o", str(outdir / "none.tar"), "ghost")
    assert bad.returncode == 1 and "No such container: ghost" in bad.stderr
    bad = pallet("export", "-o", str(outdir / "no" / "dir.tar"), "exp")
    assert bad.returncode == 1 and "failed to export container" in bad.stderr
    assert os.listdir(outdir) == ["out.tar"]
    assert leftovers(pallet, [cid]) == []


def _tar(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_import_makes_a_one_layer_image_from_a_tar(pallet, tmp_path):
    exported = _raw(pallet, "export", pallet("create", *NONE, "busybox", "true",
                                             check=True).stdout.strip()).stdout
    path = tmp_path / "fs.tar"
    path.write_bytes(exported)
    out = pallet("import", "-m", "from a file", "-c", "CMD [\"echo\", \"imported\"]",
                 "-c", "WORKDIR /tmp", str(path), "cmds-imported:1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("sha256:")
    assert pallet("run", "--rm", *NONE, "cmds-imported:1").stdout == "imported\n"
    assert pallet("run", "--rm", *NONE, "cmds-imported:1", "pwd").stdout == "/tmp\n"
    info = json.loads(pallet("image", "inspect", "cmds-imported:1").stdout)[0]
    assert len(info["RootFS"]["Layers"]) == 1 and info["Os"] == "linux"
    # From stdin, compressed; `image import` is the same command.
    out = _raw(pallet, "image", "import", "--platform", "linux/arm64", "-",
               "cmds-stdin", input=gzip.compress(exported))
    assert out.returncode == 0, out.stderr
    assert pallet("image", "inspect", "-f", "{{.Architecture}}", "cmds-stdin").stdout == "arm64\n"
    assert pallet("history", "--format", "{{.Comment}}", "cmds-stdin").stdout == \
        "Imported from -\n"
    # Bad input: exit 1 and nothing left in the store.
    before = _store_files(pallet)
    bad = _raw(pallet, "import", "-", "cmds-bad", input=b"not a tar at all" * 100)
    assert bad.returncode == 1 and b"not a valid tar archive" in bad.stderr
    bad = _raw(pallet, "import", "-", "cmds-bad", input=_tar({"../escape": b"x"}))
    assert bad.returncode == 1 and b"escape" in bad.stderr
    bad = pallet("import", str(tmp_path / "missing.tar"))
    assert bad.returncode == 1 and bad.stderr == \
        f"Error: open {tmp_path}/missing.tar: no such file or directory\n"
    bad = pallet("import", "-c", "FROM x", str(path))
    assert bad.returncode == 1 and bad.stderr == "Error: from is not a valid change command\n"
    assert _store_files(pallet) == before
    assert "cmds-bad" not in pallet("images").stdout


def test_removing_an_imported_image_leaves_nothing_of_its_snapshot(pallet):
    before = _store_files(pallet)
    layer = _tar({"hello.txt": b"hi\n"})
    out = _raw(pallet, "import", "-", "cmds-gone:1", input=layer)
    assert out.returncode == 0, out.stderr
    assert _store_files(pallet) != before
    assert pallet("rmi", "cmds-gone:1").returncode == 0
    assert _store_files(pallet) == before  # no snapshot dir, no .HEX.lock, no blob
    # Dangling (no name), removed by `image prune`.
    out = _raw(pallet, "import", "-", input=layer)
    assert out.returncode == 0, out.stderr
    assert pallet("image", "prune", "-f").returncode == 0
    assert _store_files(pallet) == before


def test_history_shows_each_step_newest_first(pallet):
    _changed(pallet)
    pallet("commit", "-m", "the change", "changed", "cmds-hist", check=True)
    image = pallet.engine().images.get("cmds-hist")
    base = pallet.engine().images.get("busybox")
    lines = pallet("history", "cmds-hist").stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert lines[1].startswith(image.short_id + "   Less than a second ago   sh -c echo hi")
    assert "…" in lines[1] and lines[1].rstrip().endswith("the change")
    assert lines[2].startswith(base.short_id)
    assert pallet("history", "-q", "cmds-hist").stdout.split() == [image.short_id,
                                                                    base.short_id]
    full = pallet("history", "--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}", "cmds-hist")
    assert full.stdout.splitlines()[0] == f"{image.id}|sh -c {CHANGES}"
    raw = pallet("image", "history", "--human=false", "--format", "{{.Size}} {{.CreatedAt}}",
                 "cmds-hist").stdout.split()
    assert raw[0].isdigit() and raw[1].endswith(("Z", "0"))
    rows = [json.loads(r) for r in
            pallet("history", "--format", "json", "cmds-hist").stdout.splitlines()]
    assert [r["Comment"] for r in rows] == ["the change", ""]
    out = pallet("history", "nope:1")
    assert out.returncode == 1 and out.stderr == "Error: No such image: nope:1\n"


def _mem_limit(pallet, name: str) -> str:
    return pallet("stats", "--no-stream", "--format", "{{.MemUsage}}", name
                  ).stdout.split("/")[-1].strip()


def test_update_changes_limits_live_and_inspect_shows_them(pallet):
    pallet("run", "-d", "--name", "upd", *NONE, "-m", "64m", "busybox", "sleep", "60",
           check=True)
    assert _mem_limit(pallet, "upd") == "64MiB"
    out = pallet("update", "--memory", "100m", "--memory-swap", "200m", "--cpus", "0.5",
                 "--cpu-shares", "512", "--pids-limit", "50", "upd")
    assert out.returncode == 0 and out.stdout == "upd\n", out.stderr
    assert _mem_limit(pallet, "upd") == "100MiB"
    hc = json.loads(pallet("inspect", "upd").stdout)[0]["HostConfig"]
    assert (hc["Memory"], hc["MemorySwap"], hc["NanoCpus"], hc["CpuShares"],
            hc["PidsLimit"]) == (100 << 20, 200 << 20, 500_000_000, 512, 50)
    # The bundle keeps it: a restart has the new limits.
    pallet("restart", "-t", "0", "upd", check=True)
    assert _mem_limit(pallet, "upd") == "100MiB"
    # docker's refusals: exit 1 (a bad value: 125), the limits as they were.
    out = pallet("update", "--memory", "300m", "upd")
    assert out.returncode == 1 and out.stderr == (
        "Error: Memory limit should be smaller than already set memoryswap limit, update "
        "the memoryswap at the same time\n")
    out = pallet("update", "upd")
    assert out.returncode == 1 and "you must provide one or more flags" in out.stderr
    assert pallet("update", "-m", "lots", "upd").returncode == 125
    out = pallet("update", "--cpus", "1", "upd", "ghost")
    assert out.returncode == 1 and out.stdout == "upd\n"
    assert "No such container: ghost" in out.stderr
    assert _mem_limit(pallet, "upd") == "100MiB"


def test_update_restart_policy_applies_to_a_running_container(pallet):
    pallet("run", "-d", "--name", "flaky", *NONE, "busybox", "sh", "-c",
           "while [ ! -e /go ]; do sleep 0.1; done; exit 3", check=True)
    assert pallet("update", "--restart", "on-failure:2", "flaky").stdout == "flaky\n"
    assert pallet("inspect", "-f", "{{json .HostConfig.RestartPolicy}}", "flaky").stdout == \
        '{"Name":"on-failure","MaximumRetryCount":2}\n'
    pallet("exec", "flaky", "touch", "/go", check=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        state = pallet("inspect", "-f", "{{.State.Status}} {{.RestartCount}}", "flaky").stdout
        if state == "exited 2\n":
            break
        time.sleep(0.2)
    assert state == "exited 2\n"
    out = pallet("update", "--restart", "always", pallet("run", "-d", "--rm", *NONE,
                                                          "busybox", "sleep", "60",
                                                          check=True).stdout.strip())
    assert out.returncode == 1 and "AutoRemove is enabled" in out.stderr
    bad = pallet("update", "--restart", "sometimes", "flaky")
    assert bad.returncode == 1 and "invalid restart policy" in bad.stderr


def test_commit_and_restart_still_work_after_the_image_is_force_removed(pallet, tmp_path):
    # The container ran and stopped (its rootfs unmounted) before its image goes: docker
    # still commits it and starts it again, the container holds what it was made from.
    cid = _changed(pallet, "orphan")
    out = pallet("rmi", "-f", "busybox")
    assert out.returncode == 0 and "Untagged: busybox:latest" in out.stdout, out.stderr
    assert pallet("image", "prune", "-a", "-f").returncode == 0  # collects what it may
    assert "A /tmp/x" in pallet("diff", "orphan").stdout.splitlines()
    out = pallet("commit", "orphan", "cmds-orphan:1")
    assert out.returncode == 0, out.stderr
    out = pallet("run", "--rm", *NONE, "cmds-orphan:1", "cat", "/tmp/x")
    assert (out.returncode, out.stdout) == (0, "hi\n"), out.stderr
    # Whole: every blob of the new image is in the store (save reads them all).
    out = pallet("save", "-o", str(tmp_path / "orphan.tar"), "cmds-orphan:1")
    assert out.returncode == 0, out.stderr
    out = pallet("start", "-a", "orphan")
    assert out.returncode == 0, out.stderr
    pallet("rm", "orphan", check=True)
    assert not leftovers(pallet, [cid])
