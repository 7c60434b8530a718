"""Where a docker user used to trip on `pallet`: a client killed by a signal ends as
docker's does (quietly, 128 + the signal, or the signal proxied to the container), prune -a
removes every image no container uses, a rename resolves at once on shared networks, stats
redraws in place on a terminal, cp of a stopped container's directory shows its mounts, and
inspect finds images, volumes and networks too.

Real CLI, real kernel, the busybox image; networks use 10.245.0.0/16 – 10.249.0.0/16.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import tarfile
import termios
import time
import uuid

import pytest

from pallet.engine import zygote
from tests.engine.conftest import PALLET, leftovers
from tests.engine.test_tty_and_monitor import Terminal

pytestmark = pytest.mark.root

NONE = ("--network", "none")
TICKER = "i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.2; done"
TRAP = "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done"


def _zygote_children(pallet) -> set[int]:
    """Workers of this test's zygote (its monitor mother and monitors excluded)."""
    try:
        with open(zygote.cli_path(pallet.run_root, zygote.PID_NAME)) as f:
            zpid = int(f.read())
    except (OSError, ValueError):
        return set()
    out = set()
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == zpid and not cmd.startswith(b"pallet-monitor"):
            out.add(int(p))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # gone (possibly between listing and reading)
        return False


def _wait_gone(pids: set[int], timeout: float = 5) -> set[int]:
    deadline = time.monotonic() + timeout
    left = set(pids)
    while left and time.monotonic() < deadline:
        left = {p for p in left if _alive(p)}
        time.sleep(0.05)
    return left


# -- 1. signals to the client ---------------------------------------------------------------
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                       (signal.SIGHUP, 129)])
def test_logs_follow_ends_quietly_with_128_plus_the_signal(pallet, sig, code):
    pallet("run", "-d", "--name", "ticker", *NONE, "busybox", "sh", "-c", TICKER, check=True)
    before = _zygote_children(pallet)
    p = subprocess.Popen([PALLET, "--root", pallet.root, "logs", "-f", "ticker"],
                         env=pallet.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().startswith(b"tick-")
    workers = _zygote_children(pallet) - before
    assert len(workers) == 1
    p.send_signal(sig)
    _, err = p.communicate(timeout=10)
    assert (p.returncode, err) == (code, b"")
    assert _wait_gone(workers) == set()  # no worker left behind
    assert pallet("inspect", "-f", "{{.State.Status}}", "ticker").stdout == "running\n"


def test_run_with_a_tty_proxies_a_signal_to_the_container(pallet):
    t = Terminal([PALLET, "--root", pallet.root, "run", "--rm", "-t", "busybox", "sh", "-c",
                  TRAP], pallet.env)
    t.expect(b"ready")
    t.proc.send_signal(signal.SIGTERM)
    t.expect(b"got-term")
    assert t.proc.wait(timeout=20) == 7
    assert termios.tcgetattr(t.master)[3] & termios.ICANON  # raw mode undone on the way out
    os.close(t.master)
    assert leftovers(pallet) == []


def test_attach_without_sig_proxy_leaves_on_sigterm_and_the_container_runs_on(pallet):
    pallet("run", "-d", "--name", "svc", *NONE, "busybox", "sh", "-c", TICKER, check=True)
    p = subprocess.Popen([PALLET, "--root", pallet.root, "attach", "--sig-proxy=false", "svc"],
                         env=pallet.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().startswith(b"tick-")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=10)
    assert (p.returncode, err) == (143, b"")
    assert pallet("inspect", "-f", "{{.State.Status}}", "svc").stdout == "running\n"


def test_attach_to_a_tty_container_restores_the_terminal_on_sigterm(pallet):
    pallet("run", "-dit", "--name", "shell", *NONE, "busybox", "sh", check=True)
    t = Terminal([PALLET, "--root", pallet.root, "attach", "shell"], pallet.env)
    deadline = time.monotonic() + 10
    while termios.tcgetattr(t.master)[3] & termios.ICANON and time.monotonic() < deadline:
        time.sleep(0.05)  # attach puts the terminal in raw mode
    assert not termios.tcgetattr(t.master)[3] & termios.ICANON
    t.proc.send_signal(signal.SIGTERM)
    assert t.proc.wait(timeout=20) == 143
    assert termios.tcgetattr(t.master)[3] & termios.ICANON  # raw mode undone
    t.expect(b"", timeout=0.5)
    os.close(t.master)
    assert b"Error" not in t.buf


# In process (PALLET_NO_ZYGOTE=1) the command unwinds as a zygote worker does.
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_in_process_logs_follow_ends_quietly_with_128_plus_the_signal(pallet, sig, code):
    env = dict(pallet.env, PALLET_NO_ZYGOTE="1")
    pallet("run", "-d", "--name", "cli-ticker", *NONE, "busybox", "sh", "-c", TICKER,
           check=True)
    p = subprocess.Popen([PALLET, "--root", pallet.root, "logs", "-f", "cli-ticker"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().startswith(b"tick-")
    p.send_signal(sig)
    _, err = p.communicate(timeout=10)
    assert (p.returncode, err) == (code, b"")
    assert pallet("inspect", "-f", "{{.State.Status}}", "cli-ticker").stdout == "running\n"


def test_in_process_attach_restores_the_terminal_on_sighup(pallet):
    pallet("run", "-dit", "--name", "cli-shell", *NONE, "busybox", "sh", check=True)
    t = Terminal([PALLET, "--root", pallet.root, "attach", "cli-shell"],
                 dict(pallet.env, PALLET_NO_ZYGOTE="1"))
    deadline = time.monotonic() + 10
    while termios.tcgetattr(t.master)[3] & termios.ICANON and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not termios.tcgetattr(t.master)[3] & termios.ICANON
    t.proc.send_signal(signal.SIGHUP)
    assert t.proc.wait(timeout=20) == 129
    assert termios.tcgetattr(t.master)[3] & termios.ICANON  # raw mode undone
    os.close(t.master)
    assert pallet("inspect", "-f", "{{.State.Status}}", "cli-shell").stdout == "running\n"


def test_in_process_run_interrupted_while_pulling_leaves_nothing(pallet):
    import socket

    with socket.socket() as silent:  # a registry that never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        ref = f"127.0.0.1:{silent.getsockname()[1]}/cli-never:latest"
        p = subprocess.Popen([PALLET, "--root", pallet.root, "run", "-d", "--name", "cli-half",
                              *NONE, "--pull", "always", ref, "true"],
                             env=dict(pallet.env, PALLET_NO_ZYGOTE="1"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.5)
        assert p.poll() is None, p.stderr.read()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=10)
    assert (p.returncode, out, err) == (143, b"", b"")
    assert pallet("ps", "-aq").stdout == ""
    assert leftovers(pallet) == []


@pytest.mark.parametrize("value, ok", [("false", True), ("0", True), ("maybe", False)])
def test_sig_proxy_takes_docker_booleans(pallet, value, ok):
    out = pallet("run", "--rm", *NONE, f"--sig-proxy={value}", "busybox", "true")
    if ok:
        assert out.returncode == 0, out.stderr
    else:
        assert out.returncode == 125 and "--sig-proxy" in out.stderr
        assert "See 'pallet run --help'." in out.stderr
        assert pallet("ps", "-aq").stdout == ""


# -- 2. prune -a ----------------------------------------------------------------------------
def _other_image(pallet, tmp_path, tag: str) -> str:
    """An image with an id of its own: busybox with one byte more."""
    d = tmp_path / "bb"
    d.mkdir(exist_ok=True)
    with open("/bin/busybox", "rb") as src, open(d / "busybox", "wb") as dst:
        dst.write(src.read() + b"\0")
    os.chmod(d / "busybox", 0o755)
    pallet("image", "build-busybox", "--tag", tag, "--busybox", str(d / "busybox"), check=True)
    return pallet("image", "inspect", "-f", "{{.Id}}", tag, check=True).stdout.strip()


@pytest.mark.parametrize("argv, keeper", [
    (("image", "prune", "-a", "-f"), ("create", *NONE, "busybox", "true")),  # stopped counts
    (("system", "prune", "-a", "-f"), ("run", "-d", *NONE, "busybox", "sleep", "60")),
])
def test_prune_all_removes_every_image_no_container_uses(pallet, tmp_path, argv, keeper):
    other = _other_image(pallet, tmp_path, "other:1")
    pallet(*keeper, check=True)
    # Without -a: only dangling images, so both named ones stay.
    assert "other:1" not in pallet(*argv[:-2], "-f").stdout
    assert sorted(pallet("images", "--format", "{{.Repository}}").stdout.split()) == \
        ["busybox", "other"]

    out = pallet(*argv, check=True).stdout
    assert f"Deleted Images:\nuntagged: other:1\ndeleted: {other}\n\n" in out
    assert "busybox" not in out
    assert "Total reclaimed space: " in out and "Total reclaimed space: 0B" not in out
    assert pallet("images", "--format", "{{.Repository}}:{{.Tag}}").stdout == "busybox:latest\n"
    assert pallet("ps", "-aq").stdout.strip()  # the container that keeps busybox


# -- 3. rename ------------------------------------------------------------------------------
def test_rename_resolves_at_once_on_shared_networks(pallet):
    net = f"hcli-{uuid.uuid4().hex[:6]}"
    subnet = f"10.{random.randint(245, 249)}.{random.randint(0, 255)}.0/24"
    pallet("network", "create", "--subnet", subnet, net, check=True)
    try:
        pallet("run", "-d", "--name", "web", "--network", net, "busybox", "sleep", "60",
               check=True)
        pallet("run", "-d", "--name", "db", "--network", net, "busybox", "sleep", "60",
               check=True)
        assert pallet("exec", "web", "ping", "-c1", "-W2", "db").returncode == 0
        out = pallet("rename", "db", "store")
        assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
        names = {n for ln in pallet("exec", "web", "cat", "/etc/hosts").stdout.splitlines()
                 for n in ln.split()[1:]}
        assert "store" in names and "db" not in names
        assert pallet("exec", "web", "ping", "-c1", "-W2", "store").returncode == 0
        assert pallet("exec", "web", "ping", "-c1", "-W2", "db").returncode != 0
        assert " store" in pallet("exec", "store", "cat", "/etc/hosts").stdout
        members = json.loads(pallet("network", "inspect", net).stdout)[0]["Containers"]
        assert sorted(c["Name"] for c in members.values()) == ["store", "web"]
        # (generic inspect finds the network by name too)
        assert pallet("inspect", "-f", "{{.Name}}", net).stdout == f"{net}\n"
    finally:
        pallet("rm", "-f", "web", "db", "store")
        pallet("network", "rm", net)


# -- 4. stats -------------------------------------------------------------------------------
def test_stats_stream_on_a_terminal_and_in_a_pipe(pallet):
    pallet("run", "-d", "--name", "busy", *NONE, "busybox", "sleep", "60", check=True)
    t = Terminal([PALLET, "--root", pallet.root, "stats"], pallet.env)
    seen = t.expect(b"busy")
    seen += t.expect(b"busy")
    t.proc.send_signal(signal.SIGINT)
    assert t.close() == 130
    # Clear the screen once, then each frame: cursor home, lines ended by erase-to-end-of-
    # line, the rest of the screen erased.
    assert seen.startswith(b"\x1b[2J\x1b[H")
    assert seen.count(b"\x1b[HCONTAINER ID") == 2
    assert b"busy" in seen and b"\x1b[K\r\n" in seen and b"\x1b[J" in seen

    p = subprocess.Popen([PALLET, "--root", pallet.root, "stats"], env=pallet.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert (p.returncode, err) == (130, b"")
    assert b"\x1b" not in out and out.count(b"CONTAINER ID") >= 2  # table after table


def test_stats_without_names_follows_containers_coming_and_going(pallet):
    pallet("run", "-d", "--name", "cli-first", *NONE, "busybox", "sleep", "60", check=True)
    p = subprocess.Popen([PALLET, "--root", pallet.root, "stats", "--format",
                          "table {{.Name}}"], env=pallet.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    frame: list[str] = []

    def next_frame_with(names: set[str]) -> None:
        """Read complete frames (each starts with its NAME header) until one shows NAMES."""
        nonlocal frame
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = p.stdout.readline().decode().strip()
            if line != "NAME":
                frame.append(line)
                continue
            shown, frame = set(frame), []
            if shown == names:
                return
        raise AssertionError(f"no frame with {names}")

    try:
        next_frame_with({"cli-first"})
        pallet("run", "-d", "--name", "cli-second", *NONE, "busybox", "sleep", "60",
               check=True)
        next_frame_with({"cli-first", "cli-second"})
        pallet("rm", "-f", "cli-first", check=True)
        next_frame_with({"cli-second"})
        pallet("run", "-d", "--name", "cli-brief", *NONE, "busybox", "sleep", "1",
               check=True)
        next_frame_with({"cli-second", "cli-brief"})
        next_frame_with({"cli-second"})  # it exited by itself
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=10)
    assert p.returncode == 130


# -- 5. cp of a stopped container -----------------------------------------------------------
def test_cp_of_a_stopped_containers_directory_shows_its_mounts(pallet, tmp_path):
    host = tmp_path / "ro-src"
    host.mkdir()
    (host / "conf").write_text("from the host")
    pallet("run", "--name", "done", *NONE, "--hostname", "donehost", "-v", "hcli-cpvol:/data",
           "-v", f"{host}:/opt/ro:ro", "busybox", "sh", "-c", "echo kept > /data/note",
           check=True)
    cid = pallet("inspect", "-f", "{{.Id}}", "done", check=True).stdout.strip()
    dest = tmp_path / "out"
    dest.mkdir()
    pallet("cp", "done:/etc", str(dest), check=True)
    assert (dest / "etc" / "hostname").read_text() == "donehost\n"
    assert "localhost" in (dest / "etc" / "hosts").read_text()
    raw = subprocess.run([PALLET, "--root", pallet.root, "cp", "done:/", "-"],
                         capture_output=True, env=pallet.env, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.extractfile("root/data/note").read() == b"kept\n"
        assert tar.extractfile("root/opt/ro/conf").read() == b"from the host"
        assert tar.extractfile("root/etc/hostname").read() == b"donehost\n"
    # Writing goes through the mounts too: into the volume; a read-only bind refuses.
    (tmp_path / "new.txt").write_text("added")
    pallet("cp", str(tmp_path / "new.txt"), "done:/data/", check=True)
    assert pallet("run", "--rm", *NONE, "-v", "hcli-cpvol:/v", "busybox", "cat",
                  "/v/new.txt").stdout == "added"
    ro = pallet("cp", str(tmp_path / "new.txt"), "done:/opt/ro/")
    assert ro.returncode == 1 and "read-only" in ro.stderr
    assert not (host / "new.txt").exists()
    pallet("rm", "-v", "done", check=True)
    pallet("volume", "rm", "hcli-cpvol", check=True)
    assert leftovers(pallet, [cid]) == []


# -- 6. inspect -----------------------------------------------------------------------------
def test_inspect_falls_back_to_images_volumes_and_networks(pallet):
    pallet("volume", "create", "hcli-data", check=True)
    cid = pallet("create", "--name", "box", *NONE, "busybox", "true", check=True).stdout.strip()
    image_id = pallet("image", "inspect", "-f", "{{.Id}}", "busybox", check=True).stdout
    assert image_id.startswith("sha256:")
    out = pallet("inspect", "-f", "{{.Id}}", "box", "busybox", check=True).stdout
    assert out == f"{cid}\n{image_id}"
    assert pallet("inspect", "-f", "{{.Mountpoint}}", "hcli-data").stdout.endswith(
        "/volumes/hcli-data/_data\n")
    objs = json.loads(pallet("inspect", "busybox", "hcli-data").stdout)
    assert objs[0]["RepoTags"] == ["busybox:latest"] and objs[1]["Name"] == "hcli-data"
    # --type picks one kind; a name of another kind is then not found.
    assert pallet("inspect", "--type", "image", "-f", "{{.Id}}", "busybox").stdout == image_id
    wrong = pallet("inspect", "--type", "image", "box")
    assert (wrong.returncode, wrong.stdout) == (1, "[]\n")
    assert wrong.stderr == "Error: No such image: box\n"
    missing = pallet("inspect", "-f", "{{.Id}}", "nothing-here")
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == "Error: No such object: nothing-here\n"
    bad = pallet("inspect", "--type", "pod", "box")
    assert bad.returncode == 1 and '"pod" is not a valid value for --type' in bad.stderr
    sizes = pallet("inspect", "-s", "-f", "{{.SizeRw}} {{.SizeRootFs}}", "box").stdout.split()
    assert int(sizes[1]) > int(sizes[0]) >= 0
    # The commands of each kind take a template too.
    assert pallet("volume", "inspect", "-f", "{{.Name}}", "hcli-data").stdout == "hcli-data\n"
    pallet("rm", "box", check=True)
    pallet("volume", "rm", "hcli-data", check=True)


# -- 7. other trips -------------------------------------------------------------------------
def test_images_format_takes_templates_and_table_templates(pallet):
    out = pallet("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", check=True).stdout
    short = pallet("image", "inspect", "-f", "{{.Id}}", "busybox").stdout[7:19]
    assert out == f"busybox:latest {short}\n"
    out = pallet("images", "--format", "table {{.Repository}}\t{{.Size}}", check=True).stdout
    assert out.splitlines()[0].split() == ["REPOSITORY", "SIZE"]
    bad = pallet("images", "--format", "{{.Bogus}}")
    assert bad.returncode != 0 and "Bogus" in bad.stderr and bad.stdout == ""


def test_stats_no_trunc_shows_full_ids(pallet):
    cid = pallet("run", "-d", *NONE, "busybox", "sleep", "60", check=True).stdout.strip()
    out = pallet("stats", "--no-stream", "--no-trunc", "--format", "{{.ID}}", check=True)
    assert out.stdout == f"{cid}\n"
