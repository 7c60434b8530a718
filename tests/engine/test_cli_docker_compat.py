"""The `pallet` CLI as a docker user types it: --format templates, filters, inspect's
fields, logs windows, stop -t, rm -v, cp through mounts and tar streams, top with ps
options, stats/info/version/system df formats, prune's question, usage errors.

Real CLI, real kernel, the busybox image; containers use --network none (no CNI needed).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time

import pytest

from tests.engine.conftest import leftovers

pytestmark = pytest.mark.root

NONE = ("--network", "none")


def _sleeper(pallet, name: str, *flags: str) -> str:
    out = pallet("run", "-d", "--name", name, *NONE, *flags, "busybox", "sleep", "60")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("argv, message", [
    (["run", "--no-such-flag", "busybox", "true"], "unknown flag: --no-such-flag"),
    (["run"], '"pallet run" requires IMAGE'),
    (["stop", "-t", "soon", "x"], "invalid int value: 'soon'"),
    (["ps", "--bogus"], "unknown flag: --bogus"),
    (["no-such-command"], "unknown command: no-such-command"),
])
def test_bad_usage_is_125_with_a_pointer_to_help(pallet, argv, message):
    out = pallet(*argv)
    assert out.returncode == 125, out.stderr
    assert message in out.stderr and "--help'." in out.stderr
    assert pallet("ps", "-aq").stdout == ""
    assert leftovers(pallet) == []


def test_bool_flags_take_go_values_short_and_long(pallet):
    # What scripts written for docker type: `-d=false` runs in the foreground, `-i=true`
    # passes stdin, and every command's booleans take `=VALUE`.
    out = pallet("run", "-d=false", "--rm=true", *NONE, "--name", "cli-fg", "busybox",
                 "echo", "-d=false")
    assert (out.returncode, out.stdout) == (0, "-d=false\n"), out.stderr
    out = pallet("run", "-it=false", "--rm", *NONE, "busybox", "cat", input="typed\n")
    assert (out.returncode, out.stdout) == (0, "typed\n"), out.stderr
    bad = pallet("run", "-d=maybe", *NONE, "busybox", "true")
    assert bad.returncode == 125 and 'invalid argument "maybe" for "-d, --detach"' in bad.stderr

    _sleeper(pallet, "cli-up")
    pallet("run", *NONE, "--name", "cli-done", "busybox", "true", check=True)
    names = lambda *a: pallet("ps", "--format", "{{.Names}}", *a).stdout.split()  # noqa: E731
    assert names("--all=false") == ["cli-up"]
    assert sorted(names("--all=true")) == ["cli-done", "cli-up"]
    assert pallet("ps", "-q=false", "--no-trunc=true", "--all=1").stdout.count("cli-") == 2
    assert pallet("logs", "--follow=false", "cli-done").returncode == 0
    kept = pallet("rm", "--force=false", "cli-up")
    assert kept.returncode == 1 and names() == ["cli-up"]
    assert pallet("rm", "-f=true", "cli-up", "--volumes=false").stdout == "cli-up\n"
    assert names("-a") == ["cli-done"]
    assert leftovers(pallet) == []


def test_ps_templates_tables_and_filters(pallet):
    a = _sleeper(pallet, "web1", "-l", "app=shop")
    b = _sleeper(pallet, "db1", "-l", "app=db")
    pallet("create", *NONE, "--name", "later", "busybox", "true", check=True)

    out = pallet("ps", "--format", "table {{.ID}}\t{{.Names}}\t{{.Label \"app\"}}")
    assert out.stdout.splitlines() == ["CONTAINER ID   NAMES     LABEL",
                                       f"{b[:12]}   db1       db",
                                       f"{a[:12]}   web1      shop"]
    out = pallet("ps", "--format", "{{.Names}}|{{.Command}}|{{.State}}|{{.Networks}}",
                 "--filter", "name=web1")
    assert out.stdout == 'web1|"sleep 60"|running|none\n'
    row = json.loads(pallet("ps", "--format", "{{json .}}", "-f", "id=" + a[:8]).stdout)
    assert row["Names"] == "web1" and row["RunningFor"].endswith(" ago")
    assert row["Labels"] == "app=shop" and "Label" not in row
    # The same key twice matches either; different keys must all match.
    names = pallet("ps", "-a", "--format", "{{.Names}}", "-f", "name=web1", "-f", "name=db1")
    assert sorted(names.stdout.split()) == ["db1", "web1"]
    assert pallet("ps", "-a", "-f", "name=web1", "-f", "status=created", "-q").stdout == ""
    assert pallet("ps", "-a", "-f", "status=created", "--format", "{{.Names}}").stdout \
        == "later\n"
    assert pallet("ps", "-f", "before=db1", "--format", "{{.Names}}").stdout == "web1\n"
    assert pallet("ps", "-a", "-f", "since=db1", "--format", "{{.Names}}").stdout == "later\n"
    assert pallet("ps", "-f", "ancestor=busybox", "-q").stdout.split() == [b[:12], a[:12]]

    bad = pallet("ps", "--format", "{{.Bogus}}")
    assert bad.returncode == 1 and "can't evaluate field Bogus" in bad.stderr
    bad = pallet("ps", "--filter", "status=sleepy")
    assert bad.returncode == 1 and "status=sleepy" in bad.stderr


def test_inspect_templates_and_host_config(pallet):
    cid = _sleeper(pallet, "limits", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "40",
                   "--cap-add", "NET_ADMIN", "--cap-drop", "MKNOD", "-u", "nobody",
                   "--security-opt", "no-new-privileges", "-l", "tier=web")
    pid = pallet.engine().get(cid).pid
    out = pallet("inspect", "-f", "{{.State.Pid}} {{.Name}} {{index .Config.Labels \"tier\"}}",
                 "limits")
    assert out.stdout == f"{pid} /limits web\n"
    config = json.loads(pallet("inspect", "--format", "{{json .Config}}", "limits").stdout)
    assert config["User"] == "nobody" and config["Labels"] == {"tier": "web"}
    assert "{{" not in pallet("inspect", "-f", "{{json .Config}}", "limits").stdout
    out = pallet("inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}:"
                 "{{$v.IPAddress}};{{end}}", "limits")
    assert out.stdout == "none:;\n"
    hc = json.loads(pallet("inspect", "limits").stdout)[0]["HostConfig"]
    assert (hc["Memory"], hc["NanoCpus"], hc["PidsLimit"]) == (64 << 20, 500_000_000, 40)
    assert (hc["CapAdd"], hc["CapDrop"], hc["Privileged"]) == (["NET_ADMIN"], ["MKNOD"], False)
    assert hc["SecurityOpt"] == ["no-new-privileges"]
    missing = pallet("inspect", "-f", "{{.State.Pid}}", "limits", "nope")
    assert missing.returncode == 1 and "Error: No such object: nope" in missing.stderr
    assert missing.stdout == f"{pid}\n"
    missing = pallet("inspect", "--type", "container", "nope")
    assert missing.returncode == 1 and "Error: No such container: nope" in missing.stderr


def test_logs_since_until_and_timestamps(pallet):
    cid = pallet("run", "-d", *NONE, "busybox", "sh", "-c",
                 "echo early; sleep 2; echo late", check=True).stdout.strip()
    assert pallet("wait", cid).stdout.strip() == "0"
    stamped = pallet("logs", "-t", cid).stdout.splitlines()
    assert [ln.split(" ", 1)[1] for ln in stamped] == ["early", "late"]
    late_ts = stamped[1].split(" ", 1)[0]
    assert pallet("logs", "--since", "1s", cid).stdout in ("", "late\n")
    assert pallet("logs", "--since", "10m", cid).stdout == "early\nlate\n"
    # RFC 3339, and a relative --until that excludes the newest line
    assert pallet("logs", "--since", late_ts, cid).stdout == "late\n"
    assert pallet("logs", "--since", "2000-01-01T00:00:00Z", cid).stdout == "early\nlate\n"
    assert pallet("logs", "--until", late_ts[:19] + "Z", "-n", "1", cid).stdout == "early\n"
    assert pallet("logs", "--tail", "1", cid).stdout == "late\n"
    bad = pallet("logs", "--since", "yesterday", cid)
    assert bad.returncode == 1 and "--since" in bad.stderr


def test_stop_time_flag_bounds_the_wait(pallet):
    _sleeper(pallet, "deaf")  # sleep as PID 1 ignores SIGTERM: only the kill ends it
    t0 = time.monotonic()
    assert pallet("stop", "--time", "1", "deaf").stdout == "deaf\n"
    assert 0.9 <= time.monotonic() - t0 < 8
    assert pallet("inspect", "-f", "{{.State.ExitCode}}", "deaf").stdout == "137\n"
    out = pallet("stop", "deaf", "ghost")
    assert out.returncode == 1 and out.stdout == "deaf\n"
    assert "No such container: ghost" in out.stderr


def test_rm_v_removes_anonymous_volumes_only(pallet):
    for name in ("keep", "drop"):
        pallet("create", "--name", name, *NONE, "-v", "/data", "-v", f"named-{name}:/n",
               "busybox", "true", check=True)
    vols = lambda: set(pallet("volume", "ls", "-q").stdout.split())  # noqa: E731
    anon = {v for v in vols() if not v.startswith("named-")}
    assert len(anon) == 2
    drop_anon = json.loads(pallet("inspect", "drop").stdout)[0]["Mounts"]
    drop_vol = next(m["Name"] for m in drop_anon if m["Destination"] == "/data")
    assert pallet("rm", "-v", "drop").returncode == 0
    assert drop_vol not in vols() and "named-drop" in vols()
    assert pallet("rm", "keep").returncode == 0
    assert anon - {drop_vol} <= vols()


def test_cp_sees_mounts_copies_links_as_links_and_streams_tar(pallet, tmp_path):
    host = tmp_path / "shared"
    host.mkdir()
    (host / "from-host").write_text("bound")
    cid = pallet("create", "--name", "box", *NONE, "--hostname", "boxhost", "-v",
                 f"{host}:/mnt", "busybox", "sh", "-c", "ln -s /etc/passwd /tmp/pw; sleep 60",
                 check=True).stdout.strip()
    # Stopped: /etc/hostname and a bind mount are read from their sources, not the image.
    pallet("cp", "box:/etc/hostname", str(tmp_path / "hn"), check=True)
    assert (tmp_path / "hn").read_text() == "boxhost\n"
    pallet("cp", "box:/mnt/from-host", str(tmp_path / "fh"), check=True)
    assert (tmp_path / "fh").read_text() == "bound"
    pallet("start", "box", check=True)
    deadline = time.time() + 10
    while pallet("exec", "box", "test", "-L", "/tmp/pw").returncode and time.time() < deadline:
        time.sleep(0.1)
    # Running: the container's own view, volumes included.
    (tmp_path / "in.txt").write_text("into the mount")
    pallet("cp", str(tmp_path / "in.txt"), "box:/mnt/", check=True)
    assert (host / "in.txt").read_text() == "into the mount"
    pallet("cp", "box:/tmp/pw", str(tmp_path), check=True)
    assert os.readlink(tmp_path / "pw") == "/etc/passwd"  # the link, not its target
    pallet("cp", "-L", "box:/tmp/pw", str(tmp_path / "pw-file"), check=True)
    assert "root:x:0:0" in (tmp_path / "pw-file").read_text()

    import subprocess

    from tests.engine.conftest import PALLET

    raw = subprocess.run([PALLET, "--root", pallet.root, "cp", "box:/etc/hostname", "-"],
                         capture_output=True, env=pallet.env, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = tar.getmember("hostname")
        assert tar.extractfile(member).read() == b"boxhost\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("dir/a.txt", b"alpha"), ("../escape.txt", b"nope")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bad = subprocess.run([PALLET, "--root", pallet.root, "cp", "-", "box:/tmp"],
                         input=buf.getvalue(), capture_output=True, env=pallet.env)
    assert bad.returncode == 1 and not (tmp_path / "escape.txt").exists()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("dir/a.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"alpha"))
    subprocess.run([PALLET, "--root", pallet.root, "cp", "-", "box:/tmp"],
                   input=buf.getvalue(), capture_output=True, env=pallet.env, check=True)
    assert pallet("exec", "box", "cat", "/tmp/dir/a.txt").stdout == "alpha"
    missing = pallet("cp", "box:/no/such", str(tmp_path))
    assert missing.returncode == 1 and "Could not find the file /no/such" in missing.stderr
    pallet("rm", "-f", "box", check=True)
    assert leftovers(pallet, [cid]) == []


def test_top_with_ps_options_stats_formats(pallet):
    cid = _sleeper(pallet, "topme")
    pid = pallet.engine().get(cid).pid
    out = pallet("top", "topme", "-o", "pid,comm")
    assert out.stdout.split() == ["PID", "COMMAND", str(pid), "sleep"], out.stderr
    out = pallet("top", "topme", "-o", "comm")
    assert out.returncode == 1 and "couldn't find PID field" in out.stderr
    out = pallet("stats", "--no-stream", "--format", "table {{.Name}}\t{{.NetIO}}\t{{.PIDs}}",
                 "topme")
    assert out.stdout.splitlines() == ["NAME      NET I/O   PIDS", "topme     0B / 0B   1"]
    row = json.loads(pallet("stats", "--no-stream", "--format", "json", "topme").stdout)
    assert row["Container"] == "topme" and row["ID"] == cid[:12] and row["PIDs"] == "1"


def test_info_version_and_system_df_formats(pallet):
    _sleeper(pallet, "one")
    assert pallet("info", "--format", "{{.ContainersRunning}} {{.Images}}").stdout == "1 1\n"
    assert json.loads(pallet("info", "-f", "json").stdout)["DockerRootDir"] == pallet.root
    version = pallet("version", "--format", "{{.Server.Version}}").stdout.strip()
    assert version and version in pallet("version").stdout
    table = pallet("system", "df").stdout.splitlines()
    assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    rows = [json.loads(ln) for ln in
            pallet("system", "df", "--format", "json").stdout.splitlines()]
    assert [(r["Type"], r["TotalCount"], r["Active"]) for r in rows][:2] == [
        ("Images", "1", "1"), ("Containers", "1", "1")]


def test_system_prune_asks_first(pallet):
    cid = pallet("create", *NONE, "busybox", "true", check=True).stdout.strip()
    out = pallet("system", "prune", input="n\n")
    assert out.returncode == 0 and "Are you sure you want to continue? [y/N]" in out.stdout
    assert pallet("ps", "-aq", "--no-trunc").stdout.split() == [cid]
    out = pallet("system", "prune", input="y\n")
    assert f"Deleted Containers:\n{cid}\n" in out.stdout
    assert pallet("ps", "-aq").stdout == ""
    assert "Total reclaimed space" in pallet("system", "prune", "-f").stdout


def test_exec_in_a_paused_container_is_1_and_privileged_sees_devices(pallet):
    _sleeper(pallet, "frozen")
    pallet("pause", "frozen", check=True)
    out = pallet("exec", "frozen", "true")
    assert out.returncode == 1 and "unpause" in out.stderr
    pallet("unpause", "frozen", check=True)
    host_devs = {n for n in os.listdir("/dev") if not os.path.isdir(f"/dev/{n}")
                 and n not in ("console", "ptmx")}
    out = pallet("run", "--rm", *NONE, "--privileged", "busybox", "ls", "/dev")
    assert out.returncode == 0, out.stderr
    seen = set(out.stdout.split())
    assert len(host_devs & seen) > len(host_devs) // 2, (sorted(host_devs - seen))
    plain = set(pallet("run", "--rm", *NONE, "busybox", "ls", "/dev").stdout.split())
    assert len(plain) < len(seen)


def test_platform_that_the_local_image_does_not_match(pallet):
    out = pallet("run", "--rm", *NONE, "--pull", "never", "--platform", "linux/s390x", "busybox",
                 "true")
    assert out.returncode == 125
    assert "does not match the specified platform: wanted linux/s390x" in out.stderr
    assert pallet("ps", "-aq").stdout == "" and leftovers(pallet) == []
    out = pallet("run", "--rm", *NONE, "--platform", "linux/amd64" if os.uname().machine ==
                 "x86_64" else f"linux/{os.uname().machine}", "busybox", "echo", "same")
    assert out.stdout == "same\n", out.stderr
