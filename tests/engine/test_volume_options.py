"""`volume create -o` with docker's local driver options, as a docker user types them: a
tmpfs volume (mounted while a container uses it, shared by two, gone with the last one), a
named volume binding a host directory (compose's driver_opts too), an ext4 filesystem on a
loop device, docker's errors for bad options and a missing device; and the host clean
afterwards: no mount left on the volume's _data after exit, a failed start, `volume rm` or
`system prune`, and a bound host directory never emptied.

Real kernel mounts, the busybox image; containers use --network none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

from tests.engine.conftest import leftovers

pytestmark = pytest.mark.root

NONE = ("--network", "none")


def _mounted(path: str) -> list[str]:
    """The filesystem types mounted on PATH, per the host's mountinfo."""
    with open("/proc/self/mountinfo") as f:
        return [ln.split(" - ")[1].split()[0] for ln in f if ln.split()[4] == path]


def _data(pallet, name: str) -> str:
    out = pallet("volume", "inspect", "-f", "{{.Mountpoint}}", name, check=True)
    return out.stdout.strip()


def _sleeper(pallet, name: str, *flags: str) -> str:
    out = pallet("run", "-d", "--name", name, *NONE, *flags, "busybox", "sleep", "60")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_tmpfs_volume_is_mounted_while_used_and_shared_refcounted(pallet):
    out = pallet("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
                 "--opt", "o=size=100m,uid=1000", "vo-tmp")
    assert (out.returncode, out.stdout) == (0, "vo-tmp\n"), out.stderr
    out = pallet("volume", "inspect", "-f", "{{json .Options}}", "vo-tmp")
    assert out.stdout.strip() == '{"device":"tmpfs","o":"size=100m,uid=1000","type":"tmpfs"}'
    data = _data(pallet, "vo-tmp")
    assert _mounted(data) == []  # nothing until a container uses it

    # Inside: a 100 MiB tmpfs whose root uid=1000 owns, as mount(8) would make it.
    out = pallet("run", "--rm", *NONE, "-v", "vo-tmp:/data", "busybox", "sh", "-c",
                 "stat -c %u /data; df -k /data | tail -1; echo one > /data/f; cat /data/f")
    assert out.returncode == 0, out.stderr
    uid, df, content = out.stdout.splitlines()
    assert uid == "1000" and df.split()[1] == str(100 * 1024) and content == "one"
    # Unmounted when the container exited: tmpfs data is gone (docker's too).
    assert _mounted(data) == [] and os.listdir(data) == []

    a = _sleeper(pallet, "vo-a", "-v", "vo-tmp:/data")
    b = _sleeper(pallet, "vo-b", "-v", "vo-tmp:/shared")
    assert _mounted(data) == ["tmpfs"]  # once, for both
    pallet("exec", "vo-a", "sh", "-c", "echo shared > /data/s", check=True)
    assert pallet("exec", "vo-b", "cat", "/shared/s").stdout == "shared\n"
    with open(os.path.join(data, "s")) as f:
        assert f.read() == "shared\n"  # the host sees it at the volume's mountpoint
    pallet("stop", "-t", "0", "vo-a", check=True)
    assert _mounted(data) == ["tmpfs"]  # vo-b still holds it
    assert pallet("exec", "vo-b", "cat", "/shared/s").stdout == "shared\n"
    pallet("rm", "-f", "vo-b", check=True)
    assert _mounted(data) == [] and os.listdir(data) == []
    # vo-a restarts: mounted again, empty.
    pallet("start", "vo-a", check=True)
    assert _mounted(data) == ["tmpfs"]
    assert pallet("exec", "vo-a", "ls", "-A", "/data").stdout == ""
    used = pallet("volume", "rm", "vo-tmp")
    assert used.returncode == 1 and "volume is in use" in used.stderr
    pallet("rm", "-f", "vo-a", check=True)
    pallet("volume", "rm", "vo-tmp", check=True)
    assert not os.path.exists(os.path.dirname(data))
    assert leftovers(pallet, [a, b]) == []


def test_bind_volume_shows_a_host_dir_and_removal_never_empties_it(pallet, tmp_path):
    host = tmp_path / "site"
    host.mkdir()
    (host / "index.html").write_text("from the host\n")
    pallet("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={host}",
           "--name", "vo-site", check=True)
    data = _data(pallet, "vo-site")
    out = pallet("run", "--rm", *NONE, "-v", "vo-site:/site", "busybox", "sh", "-c",
                 "cat /site/index.html; echo from the container > /site/new")
    assert (out.returncode, out.stdout) == (0, "from the host\n"), out.stderr
    assert (host / "new").read_text() == "from the container\n"
    assert _mounted(data) == []

    # `volume rm` while it is mounted (a running container, forced): unmounted, not emptied.
    pallet("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={host}",
           "vo-site2", check=True)
    cid = _sleeper(pallet, "vo-run", "-v", "vo-site2:/site")
    data2 = _data(pallet, "vo-site2")
    assert _mounted(data2) != []
    pallet("volume", "rm", "-f", "vo-site2", check=True)
    assert _mounted(data2) == [] and not os.path.exists(os.path.dirname(data2))
    assert sorted(os.listdir(host)) == ["index.html", "new"]
    assert pallet("exec", "vo-run", "cat", "/site/index.html").stdout == "from the host\n"
    pallet("rm", "-f", "vo-run", check=True)

    # A container exited (not removed) with the volume; cp in and out of it sees the host
    # directory (mounted for the copy, as docker does); then system prune (-a: last, it
    # removes the image too).
    pallet("run", *NONE, "--name", "vo-user", "-v", "vo-site:/site", "busybox", "true",
           check=True)
    (tmp_path / "copied").write_text("via cp\n")
    pallet("cp", str(tmp_path / "copied"), "vo-user:/site/copied", check=True)
    assert (host / "copied").read_text() == "via cp\n"
    pallet("cp", "vo-user:/site/index.html", str(tmp_path / "back.html"), check=True)
    assert (tmp_path / "back.html").read_text() == "from the host\n"
    assert _mounted(data) == []
    assert pallet("volume", "rm", "vo-site").returncode == 1  # in use by vo-user
    pallet("rm", "vo-user", check=True)
    out = pallet("system", "prune", "-f", "--volumes", "-a")
    assert out.returncode == 0 and "vo-site" in out.stdout, out.stderr
    assert sorted(os.listdir(host)) == ["copied", "index.html", "new"]
    assert not os.path.exists(os.path.dirname(data))
    assert leftovers(pallet, [cid]) == []


def test_missing_device_fails_the_start_with_dockers_words_and_mounts_nothing(pallet, tmp_path):
    gone = str(tmp_path / "nope")
    pallet("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={gone}",
           "vo-gone", check=True)  # docker checks the device only when mounting
    pallet("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "vo-first",
           check=True)
    data_gone, data_first = _data(pallet, "vo-gone"), _data(pallet, "vo-first")
    out = pallet("run", *NONE, "--name", "vo-fail", "-v", "vo-first:/a", "-v", "vo-gone:/b",
                 "busybox", "true")
    assert out.returncode == 125
    assert (f"error while mounting volume '{data_gone}': failed to mount local volume: "
            f"mount {gone}:{data_gone}, flags: 0x1000: no such file or directory"
            ) in out.stderr
    # The volume mounted before the failing one was released again.
    assert _mounted(data_first) == [] and _mounted(data_gone) == []
    # As docker: the container stays, created; `start` fails the same way, exit 1.
    assert pallet("ps", "-a", "--format", "{{.Names}} {{.State}}").stdout == "vo-fail created\n"
    again = pallet("start", "vo-fail")
    assert again.returncode == 1 and "error while mounting volume" in again.stderr
    assert _mounted(data_first) == []
    out = pallet("run", "--rm", *NONE, "-v", "vo-gone:/b", "busybox", "true")
    assert out.returncode == 125  # and --rm removed that one
    assert pallet("ps", "-a", "--format", "{{.Names}}").stdout == "vo-fail\n"
    pallet("rm", "vo-fail", check=True)
    pallet("volume", "rm", "vo-gone", "vo-first", check=True)
    assert not os.path.exists(gone)
    assert leftovers(pallet) == []


@pytest.mark.parametrize("opts, message", [
    (["x=1"], 'create vo-bad: invalid option: "x"'),
    (["type=tmpfs"], 'create vo-bad: missing required option: "device"'),
    (["device=tmpfs"], 'create vo-bad: missing required option: "type"'),
    (["o=size=1m", "type=tmpfs"], 'create vo-bad: missing required option: "device"'),
    (["size=10m"], "create vo-bad: quota size requested but no quota support"),
])
def test_bad_options_are_dockers_errors_and_create_nothing(pallet, opts, message):
    out = pallet("volume", "create", *(w for o in opts for w in ("-o", o)), "vo-bad")
    assert out.returncode == 1 and out.stderr == f"Error: {message}\n"
    assert pallet("volume", "ls", "-q").stdout == ""
    assert not os.path.exists(os.path.join(pallet.root, "volumes", "vo-bad"))


def test_name_flag_and_positional_conflict(pallet):
    out = pallet("volume", "create", "--name", "vo-a", "vo-b")
    assert out.returncode == 1 and "conflicting options: either specify --name or provide " \
        "positional arg, not both" in out.stderr
    assert pallet("volume", "create", "--name", "vo-n").stdout == "vo-n\n"
    assert pallet("volume", "ls", "-q").stdout == "vo-n\n"


@pytest.fixture
def loop_device(tmp_path):
    """A 16 MiB ext4 filesystem in a file, on a loop device of its own (detached after)."""
    if not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
        pytest.skip("losetup and mkfs.ext4 are needed for a loop device")
    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True, capture_output=True)
    out = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"no loop device here: losetup says {out.stderr.strip()}")
    dev = out.stdout.strip()
    yield dev
    subprocess.run(["losetup", "-d", dev], capture_output=True)


def test_ext4_on_a_loop_device_keeps_its_data_across_containers(pallet, loop_device):
    name = f"vo-ext4-{uuid.uuid4().hex[:4]}"
    pallet("volume", "create", "-o", "type=ext4", "-o", f"device={loop_device}", name,
           check=True)
    data = _data(pallet, name)
    out = pallet("run", "--rm", *NONE, "-v", f"{name}:/disk", "busybox", "sh", "-c",
                 "echo kept > /disk/file; ls /disk")
    assert out.returncode == 0 and out.stdout.split() == ["file", "lost+found"], out.stderr
    assert _mounted(data) == []
    out = pallet("run", "--rm", *NONE, "-v", f"{name}:/disk:ro", "busybox", "cat", "/disk/file")
    assert (out.returncode, out.stdout) == (0, "kept\n"), out.stderr
    pallet("volume", "rm", name, check=True)
    assert leftovers(pallet) == []


COMPOSE = """
services:
  web:
    image: busybox
    command: ["sh", "-c", "cat /site/index.html; echo written > /site/out; sleep 60"]
    network_mode: none
    volumes: [site:/site]
volumes:
  site:
    driver_opts:
      type: none
      o: bind
      device: DEVICE
"""


def test_compose_driver_opts_bind_a_host_directory(pallet, tmp_path):
    host = tmp_path / "html"
    host.mkdir()
    (host / "index.html").write_text("compose site\n")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "compose.yaml").write_text(COMPOSE.replace("DEVICE", str(host)))
    name = f"vo{uuid.uuid4().hex[:6]}"

    def compose(*args: str):
        return pallet("compose", "-f", str(proj / "compose.yaml"), "-p", name, *args)

    try:
        out = compose("config", "--format", "json")
        assert json.loads(out.stdout)["volumes"]["site"]["driver_opts"] == {
            "type": "none", "o": "bind", "device": str(host)}, out.stderr
        out = compose("up", "-d")
        assert out.returncode == 0, out.stderr
        vol = f"{name}_site"
        out = pallet("volume", "inspect", "-f", "{{json .Options}}", vol)
        assert json.loads(out.stdout) == {"device": str(host), "o": "bind", "type": "none"}
        for _ in range(50):
            if (host / "out").exists():
                break
            time.sleep(0.1)
        assert (host / "out").read_text() == "written\n"
        assert compose("logs").stdout.strip().endswith("compose site")
        out = compose("down", "-v")
        assert out.returncode == 0, out.stderr
        assert pallet("volume", "ls", "-q").stdout == ""
        assert sorted(os.listdir(host)) == ["index.html", "out"]
    finally:
        compose("down", "-v")
    assert leftovers(pallet) == []
