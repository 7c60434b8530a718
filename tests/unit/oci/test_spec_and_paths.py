"""Pure pieces of the runtime: config validation, mount options, confined paths.

No root needed: paths are resolved in a temp dir with openat2.
"""

from __future__ import annotations

import os

import pytest

from pallet.errors import NotFound, SpecError
from pallet.oci import spec as specmod
from pallet.oci.linux import mounts, paths
from pallet.oci.linux import syscalls as sc


def _spec(tmp_path) -> dict:
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    s = specmod.default_spec()
    return s


def test_default_spec_is_valid(tmp_path):
    specmod.validate(_spec(tmp_path), str(tmp_path))


@pytest.mark.parametrize("cid", ["", ".", "..", "a/b", "../x", "a b", "x\n", "caf\u00e9"])
def test_bad_ids_are_refused(cid):
    with pytest.raises(SpecError):
        specmod.validate_id(cid)


@pytest.mark.parametrize("cid", ["abc", "A-1_2.3+x", "0" * 64])
def test_good_ids(cid):
    specmod.validate_id(cid)


@pytest.mark.parametrize("edit,field", [
    (lambda s: s.update(ociVersion=2), "ociVersion"),
    (lambda s: s["process"].update(args=[]), "process.args"),
    (lambda s: s["process"].update(cwd="relative"), "process.cwd"),
    (lambda s: s["process"].update(env=["NOEQUALS"]), "process.env[0]"),
    (lambda s: s["process"]["user"].update(uid="0"), "process.user.uid"),
    (lambda s: s["mounts"].append({"destination": "rel"}), "mounts[7].destination"),
    (lambda s: s["linux"]["namespaces"].append({"type": "pid"}), "linux.namespaces[6]"),
    (lambda s: s["linux"].update(rootfsPropagation="sideways"), "linux.rootfsPropagation"),
    (lambda s: s["linux"].update(devices=[{"path": "/dev/x", "type": "z"}]),
     "linux.devices[0].type"),
    (lambda s: s["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]),
     "linux.uidMappings"),
    (lambda s: s.update(hooks={"prestart": [{"path": "relative"}]}), "hooks.prestart[0].path"),
])
def test_schema_errors_name_the_field(tmp_path, edit, field):
    s = _spec(tmp_path)
    edit(s)
    with pytest.raises(SpecError) as e:
        specmod.validate(s, str(tmp_path))
    assert field in str(e.value)


def test_missing_rootfs_and_config(tmp_path):
    s = specmod.default_spec()
    with pytest.raises(NotFound, match="root.path"):
        specmod.validate(s, str(tmp_path))
    with pytest.raises(NotFound, match="config.json"):
        specmod.load(str(tmp_path))


def test_mount_options_parse_into_flags_and_data():
    plan = mounts.parse_options(["rbind", "ro", "nosuid", "rprivate", "size=1m", "mode=755"])
    assert plan.flags & sc.MS_BIND and plan.flags & sc.MS_REC and plan.flags & sc.MS_RDONLY
    assert plan.flags & sc.MS_NOSUID
    assert plan.propagation == [sc.MS_PRIVATE | sc.MS_REC]
    assert plan.data == ["size=1m", "mode=755"]
    assert not mounts.parse_options(["ro", "rw"]).flags & sc.MS_RDONLY


def test_mkdir_all_follows_symlinks_inside_the_root(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(str(outside), root / "abs")          # absolute: means <root>/<outside>
    os.symlink("../../../../..", root / "up")         # climbs: clamped at the root
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for p in ("abs/x", "up/y", "a/b/c"):
            os.close(paths.mkdir_all(fd, p))
    finally:
        os.close(fd)
    assert os.listdir(outside) == []
    assert (root / str(outside).lstrip("/") / "x").is_dir()
    assert (root / "y").is_dir() and (root / "a" / "b" / "c").is_dir()


def test_ensure_file_creates_inside_the_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/etc/passwd", root / "passwd-link")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        os.close(paths.ensure_file(fd, "/passwd-link"))
        os.close(paths.ensure_file(fd, "/dir/file"))
    finally:
        os.close(fd)
    # The link's target was made inside the root, the host's /etc/passwd untouched.
    assert (root / "etc" / "passwd").stat().st_size == 0
    assert (root / "dir" / "file").is_file()


@pytest.mark.parametrize("key,msg", [
    ("kernel.core_pattern", "not in a separate kernel namespace"),
    ("vm.swappiness", "not in a separate kernel namespace"),
    ("net/../../kernel/core_pattern", "invalid sysctl name"),
    ("net..ipv4", "invalid sysctl name"),
])
def test_sysctls_that_would_reach_the_host_are_refused(tmp_path, key, msg):
    s = _spec(tmp_path)
    s["linux"]["sysctl"] = {key: "1"}
    with pytest.raises(SpecError, match=msg):
        specmod.validate(s, str(tmp_path))


def test_net_sysctl_needs_a_network_namespace(tmp_path):
    s = _spec(tmp_path)
    s["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    specmod.validate(s, str(tmp_path))
    s["linux"]["namespaces"] = [n for n in s["linux"]["namespaces"] if n["type"] != "network"]
    with pytest.raises(SpecError, match="own network namespace"):
        specmod.validate(s, str(tmp_path))
