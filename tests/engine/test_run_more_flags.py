"""docker's run/create flags --cidfile, --label-file, --annotation, --stop-timeout, -a,
--detach-keys and --volumes-from, as a user sees them: in the container, in `inspect`, at a
terminal; bad values exit 125 with docker's words and leave nothing behind.

Real CLI, real kernel, the busybox image; --network none throughout.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.engine.conftest import PALLET, leftovers
from tests.engine.test_tty_and_monitor import Terminal

pytestmark = pytest.mark.root

NONE = ("--network", "none")


def _inspect(pallet, ref: str) -> dict:
    return json.loads(pallet("inspect", ref, check=True).stdout)[0]


def _nothing_left(pallet) -> None:
    assert pallet("ps", "-aq").stdout == "" and leftovers(pallet) == []


def test_cidfile_gets_the_id_and_an_existing_one_is_refused(pallet, tmp_path):
    cidfile = tmp_path / "cid"
    out = pallet("create", *NONE, "--name", "f8-cid", "--cidfile", str(cidfile), "busybox")
    assert out.returncode == 0, out.stderr
    assert cidfile.read_text() == out.stdout.strip() == _inspect(pallet, "f8-cid")["Id"]
    pallet("rm", "f8-cid", check=True)
    again = pallet("run", "--rm", *NONE, "--cidfile", str(cidfile), "busybox", "true")
    assert again.returncode == 125
    assert ("Container ID file found, make sure the other container isn't running or delete "
            f"{cidfile}") in again.stderr
    _nothing_left(pallet)
    # As docker, the file is made before the container: a bad path fails first, and a
    # create that fails takes its (empty) file away again.
    bad = pallet("run", "--rm", *NONE, "--cidfile", str(tmp_path / "no" / "cid"), "busybox",
                 "true")
    assert bad.returncode == 125 and "failed to create the container ID file" in bad.stderr
    fresh = tmp_path / "cid2"
    gone = pallet("create", *NONE, "--cidfile", str(fresh), "no-such-image:1")
    assert gone.returncode == 125 and not fresh.exists()
    _nothing_left(pallet)


def test_label_file_and_labels(pallet, tmp_path):
    lf = tmp_path / "labels"
    lf.write_text("# team labels\n\ntier=web\nowner=ops\nflag\n")
    pallet("create", *NONE, "--name", "f8-lbl", "--label-file", str(lf), "-l", "owner=dev",
           "busybox", check=True)
    assert _inspect(pallet, "f8-lbl")["Config"]["Labels"] == {
        "tier": "web", "owner": "dev", "flag": ""}
    assert pallet("ps", "-aq", "--filter", "label=tier=web").stdout.strip()
    missing = pallet("create", *NONE, "--label-file", str(tmp_path / "nope"), "busybox")
    assert missing.returncode == 125
    assert f"open {tmp_path / 'nope'}: no such file or directory" in missing.stderr


def test_annotation_in_the_oci_spec_and_inspect(pallet):
    cid = pallet("create", *NONE, "--name", "f8-ann", "--annotation", "org.example.tier=web",
                 "--annotation", "note=a=b", "busybox", check=True).stdout.strip()
    assert _inspect(pallet, "f8-ann")["HostConfig"]["Annotations"] == {
        "org.example.tier": "web", "note": "a=b"}
    with open(f"{pallet.root}/containers/{cid}/config.json") as f:
        ann = json.load(f)["annotations"]
    assert ann["org.example.tier"] == "web" and ann["note"] == "a=b"


def test_stop_timeout_is_the_default_wait_of_stop_and_restart(pallet):
    # A shell that ignores SIGTERM is killed only when the timeout runs out.
    script = "trap '' TERM; while :; do sleep 0.1; done"
    pallet("run", "-d", *NONE, "--name", "f8-st", "--stop-timeout", "1", "busybox", "sh",
           "-c", script, check=True)
    assert _inspect(pallet, "f8-st")["Config"]["StopTimeout"] == 1
    t0 = time.monotonic()
    pallet("stop", "f8-st", check=True)
    assert 0.8 < time.monotonic() - t0 < 6  # not docker's default 10s
    pallet("start", "f8-st", check=True)
    t0 = time.monotonic()
    pallet("restart", "f8-st", check=True)
    assert 0.8 < time.monotonic() - t0 < 6
    pallet("rm", "-f", "f8-st", check=True)
    pallet("create", *NONE, "--name", "f8-st0", "busybox", check=True)
    assert "StopTimeout" not in _inspect(pallet, "f8-st0")["Config"]
    bad = pallet("run", *NONE, "--stop-timeout", "soon", "busybox", "true")
    assert bad.returncode == 125
    assert ('invalid argument "soon" for "--stop-timeout" flag: strconv.ParseInt: parsing '
            '"soon": invalid syntax') in bad.stderr


def test_attach_only_the_streams_asked_for(pallet):
    script = "echo to-out; echo to-err >&2"
    out = pallet("run", "--rm", *NONE, "-a", "STDERR", "busybox", "sh", "-c", script)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "to-err\n")
    out = pallet("run", "--rm", *NONE, "-a", "stdout", "busybox", "sh", "-c", script)
    assert (out.returncode, out.stdout, out.stderr) == (0, "to-out\n", "")
    out = pallet("run", "--rm", *NONE, "-i", "-a", "stdin", "-a", "stdout", "busybox", "cat",
                 input="typed\n")
    assert (out.returncode, out.stdout) == (0, "typed\n"), out.stderr


@pytest.mark.parametrize("argv, message", [
    (("-a", "stdout", "-d"), "Conflicting options: -a and -d"),
    (("-a", "logs"), 'invalid argument "logs" for "-a, --attach" flag: valid streams are '
                     "STDIN, STDOUT and STDERR"),
    (("--detach-keys", "ctrl-1"), "Invalid detach keys (ctrl-1) provided"),
    (("--volumes-from", "f8-nobody"), "No such container: f8-nobody"),
])
def test_bad_values_are_125_and_create_nothing(pallet, argv, message):
    out = pallet("run", *NONE, "--name", "f8-bad", *argv, "busybox", "true")
    assert out.returncode == 125 and message in out.stderr, out.stderr
    _nothing_left(pallet)


def test_run_detaches_with_custom_keys_and_attach_with_its_own(pallet):
    t = Terminal([PALLET, "--root", pallet.root, "run", "-it", "--name", "f8-keys",
                  "--detach-keys", "ctrl-a,x", *NONE, "busybox", "sh"], pallet.env)
    t.command(b"PS1='ready> '")
    t.expect(b"ready> ")
    t.send(b"\x10\x11")  # the default sequence is just input now
    time.sleep(0.3)
    assert t.proc.poll() is None
    t.send(b"\x01x")  # ctrl-a x
    assert t.close() == 0
    assert _inspect(pallet, "f8-keys")["State"]["Running"]
    t2 = Terminal([PALLET, "--root", pallet.root, "attach", "--detach-keys", "ctrl-e,e",
                   "f8-keys"], pallet.env)
    time.sleep(0.5)
    t2.send(b"\x05e")
    assert t2.close() == 0
    assert _inspect(pallet, "f8-keys")["State"]["Running"]
    t3 = Terminal([PALLET, "--root", pallet.root, "exec", "-it", "--detach-keys", "ctrl-e,e",
                   "f8-keys", "sh", "-c", "touch /tmp/in-exec; sleep 30"], pallet.env)
    time.sleep(0.8)
    t3.send(b"\x05e")
    assert t3.close() == 0
    ps = pallet("exec", "f8-keys", "ps", "-o", "args").stdout
    assert "sleep 30" in ps  # the exec'd process goes on after the detach
    detached = pallet("events", "--since", "1m", "--until", "0s", "-f", "container=f8-keys",
                      "-f", "event=exec_detach", "--format", "{{.Action}}").stdout
    assert detached == "exec_detach\n"  # docker's event for it (and no exec_die yet)
    pallet("rm", "-f", "f8-keys", check=True)


def test_volumes_from_shares_volumes_and_binds_read_only_on_request(pallet, tmp_path):
    (tmp_path / "host-file").write_text("from the host\n")
    pallet("create", *NONE, "--name", "f8-data", "-v", "f8-vol:/data", "-v",
           f"{tmp_path}:/hostdir:ro", "busybox", check=True)
    out = pallet("run", "--rm", *NONE, "--volumes-from", "f8-data", "busybox", "sh", "-c",
                 "echo shared > /data/f; cat /hostdir/host-file; "
                 "touch /hostdir/x 2>&1 | grep -o 'Read-only file system'")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "from the host\nRead-only file system\n"
    ro = pallet("run", "--rm", *NONE, "--volumes-from", "f8-data:ro", "busybox", "sh", "-c",
                "cat /data/f; echo no > /data/f")
    assert ro.stdout == "shared\n" and "Read-only file system" in ro.stderr
    mounts = {m["Destination"]: m for m in _inspect(pallet, "f8-data")["Mounts"]}
    assert mounts["/data"]["Name"] == "f8-vol"
    bad = pallet("run", *NONE, "--volumes-from", "f8-data:rx", "busybox", "true")
    assert bad.returncode == 125 and "invalid mode for volumes-from: rx" in bad.stderr
