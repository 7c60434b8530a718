"""pallet's TOML config: documented defaults, files, dotted overrides, and errors that
name the key that is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pallet.config import Config, load_config, parse_config
from pallet.errors import InvalidArgument

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_defaults_without_a_file(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PALLET_CONFIG", "")
    monkeypatch.setattr("pallet.config.DEFAULT_PATH", str(tmp_path / "absent.toml"))
    c = load_config()
    assert c.socket.path == "/run/pallet/pallet.sock"
    assert c.socket.mode == 0o660
    assert c.root == "/var/lib/pallet" and c.state_dir == "/run/pallet"
    assert c.cgroup_driver == "cgroupfs"
    assert c.runtime().name == "pallet" and c.runtime().type == "in-process"
    assert c.runtime("runc").path == "/usr/sbin/runc"
    assert c.runtime("runsc").options == ("--platform=ptrace", "--network=none")
    assert c.cni.conf_dir == "/etc/cni/net.d"
    assert c.stream.address == "127.0.0.1" and c.stream.port == 0
    assert c.source == ""


def test_a_full_file(tmp_path) -> None:
    f = tmp_path / "pallet.toml"
    f.write_text('''
root = "/srv/pallet"
state_dir = "/run/p2"
default_runtime = "runc"
[socket]
path = "/run/p2/cri.sock"
mode = "0600"
[runtimes.runc]
options = ["--debug"]
[runtimes.kata]
path = "/opt/kata/bin/kata-runtime"
[registry]
insecure = ["reg.local:5000"]
[registry.mirrors]
"docker.io" = ["127.0.0.1:5000"]
[registry.auths."reg.local:5000"]
username = "u"
password = "p"
[stream]
port = 10010
[logs]
max_size = 1048576
''')
    c = load_config(f)
    assert c.source == str(f)
    assert c.socket.mode == 0o600
    assert c.runtime().name == "runc" and c.runtime().options == ("--debug",)
    assert c.runtime("runc").path == "/usr/sbin/runc"  # the rest of a predefined table stays
    assert c.runtime("kata").root == "/run/p2/runtimes/kata"
    rc = c.registry_config()
    assert rc.mirrors == {"docker.io": ["127.0.0.1:5000"]}
    assert rc.insecure == {"reg.local:5000"}
    assert rc.auths and rc.auths["reg.local:5000"] == ("u", "p")
    assert c.to_dict()["registry"]["auths"]["reg.local:5000"]["password"] == "<redacted>"
    assert c.stream.port == 10010 and c.logs.max_size == 1 << 20


def test_overrides_beat_the_file_and_none_is_ignored(tmp_path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('root = "/a"\n[socket]\npath = "/x.sock"\n')
    c = load_config(f, {"root": "/b", "socket.path": None, "stream": {"port": 5}})
    assert c.root == "/b" and c.socket.path == "/x.sock" and c.stream.port == 5


@pytest.mark.parametrize("text,key", [
    ("rooot = '/x'", "rooot"),
    ("[socket]\npaht = '/x'", "socket.paht"),
    ("[socket]\nmode = 'rw'", "socket.mode"),
    ("[socket]\nmode = 4095", "socket.mode"),
    ("root = 'relative/path'", "root"),
    ("cgroup_driver = 'cgroupv3'", "cgroup_driver"),
    ("default_runtime = 'kata'", "default_runtime"),
    ("[runtimes.x]\ntype = 'vm'\npath = '/x'", "runtimes.x.type"),
    ("[runtimes.x]\npath = 'x'", "runtimes.x.path"),
    ("[runtimes.runc]\noptions = '--debug'", "runtimes.runc.options"),
    ("[stream]\nport = 70000", "stream.port"),
    ("[stream]\nport = true", "stream.port"),
    ("[stream]\nbackend = 'nocolon'", "stream.backend"),
    ("[registry.mirrors]\n'docker.io' = 'one'", "registry.mirrors.docker.io"),
    ("[registry.auths.h]\nauth = '!!'", "registry.auths.h.auth"),
    ("[registry.auths.h]\ntoken = 'x'", "registry.auths.h.token"),
    ("stream = 5", "stream"),
])
def test_errors_name_the_key(tmp_path, text: str, key: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(InvalidArgument) as info:
        load_config(f)
    assert repr(key) in str(info.value) or f"'{key}" in str(info.value), str(info.value)


def test_missing_explicit_file_and_bad_toml(tmp_path) -> None:
    with pytest.raises(InvalidArgument, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("root = ")
    with pytest.raises(InvalidArgument, match="not valid TOML"):
        load_config(bad)


def test_env_names_the_file(monkeypatch, tmp_path) -> None:
    f = tmp_path / "env.toml"
    f.write_text('cgroup_driver = "systemd"\n')
    monkeypatch.setenv("PALLET_CONFIG", str(f))
    assert load_config().cgroup_driver == "systemd"


def test_every_key_is_documented_with_its_default() -> None:
    text = DOCS.read_text()
    flat = _flatten(Config().to_dict() | {"runtimes": {}})
    for key in flat:
        if key == "source":
            continue
        assert f"`{key}`" in text, f"{key} missing from docs/config.md"
    # Defaults named in the docs match the code for the main keys.
    for key in ("socket.path", "root", "state_dir", "cni.conf_dir", "stream.address"):
        assert re.search(rf"`{re.escape(key)}`[^\n]*`\"{re.escape(str(flat[key]))}\"`", text), key
    assert parse_config({}).to_dict() == Config(runtimes=parse_config({}).runtimes).to_dict()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
