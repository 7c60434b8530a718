"""Idmapped bind mounts: a host directory seen through a mount's own uid/gid mappings.

The stories: a user-namespaced container (0 -> 100000) sees a host directory owned
by 1000 as its own root's, and what it creates there lands on the host as 1000; with
`idmap` alone the container's own mappings apply; `ridmap` maps submounts too; bad
mounts fail with one line naming the destination and leave nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from tests.fixtures.bundle import create_fails, edit_config

pytestmark = pytest.mark.root

CONTAINER_ROOT = 100000
OVERFLOW = 65534


@pytest.fixture
def cid() -> str:
    return f"hoci-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def src(tmp_path):
    """A host directory owned by 1000:1000 with a file of 1000's and one of root's."""
    d = tmp_path / "hoci-src"
    d.mkdir()
    (d / "mine").write_text("x")
    (d / "roots").write_text("x")
    os.chown(d, 1000, 1000)
    os.chown(d / "mine", 1000, 1000)
    return d


def userns(s: dict) -> None:
    s["linux"]["namespaces"].append({"type": "user"})
    s["linux"]["uidMappings"] = [{"containerID": 0, "hostID": CONTAINER_ROOT, "size": 65536}]
    s["linux"]["gidMappings"] = [{"containerID": 0, "hostID": CONTAINER_ROOT, "size": 65536}]


def owned_by_container_root(b: str) -> None:
    # The rootfs must be reachable and owned by the mapped root, as with runc.
    subprocess.run(["chown", "-R", f"{CONTAINER_ROOT}:{CONTAINER_ROOT}",
                    os.path.join(b, "rootfs")], check=True)
    d = b
    while d != "/":
        os.chmod(d, os.stat(d).st_mode | 0o011)
        d = os.path.dirname(d)


def one_to_one(container: int, host: int) -> list[dict]:
    return [{"containerID": container, "hostID": host, "size": 1}]


def test_userns_container_sees_host_files_of_1000_as_its_root(runc_cli, bundle, cid, src,
                                                               host_clean):
    b = bundle(["sh", "-c", "stat -c %u:%g /data /data/mine /data/roots /plain/mine; "
                            "touch /data/new && mkdir /data/newdir && stat -c %u:%g /data/new"])

    def cfg(s):
        userns(s)
        # On disk 1000 is, through this mount, host 100000: the container's root.
        s["mounts"].append({"destination": "/data", "type": "bind", "source": str(src),
                            "options": ["rbind", "idmap"],
                            "uidMappings": one_to_one(1000, CONTAINER_ROOT),
                            "gidMappings": one_to_one(1000, CONTAINER_ROOT)})
        s["mounts"].append({"destination": "/plain", "type": "bind", "source": str(src),
                            "options": ["rbind", "ro"]})

    edit_config(b, cfg)
    owned_by_container_root(b)
    out = runc_cli("run", "--bundle", b, cid)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0:0", "0:0", f"{OVERFLOW}:{OVERFLOW}",
                                  f"{OVERFLOW}:{OVERFLOW}", "0:0"]
    # What the container's root made is 1000's on the host.
    for name in ("new", "newdir"):
        st = os.stat(src / name)
        assert (st.st_uid, st.st_gid) == (1000, 1000), name
    host_clean(cid)


def test_idmap_alone_takes_the_containers_own_mappings(runc_cli, bundle, cid, tmp_path):
    d = tmp_path / "hoci-rootowned"
    d.mkdir()
    (d / "f").write_text("x")
    b = bundle(["sh", "-c", "stat -c %u:%g /data/f; touch /data/made"])

    def cfg(s):
        userns(s)
        s["mounts"].append({"destination": "/data", "type": "bind", "source": str(d),
                            "options": ["bind", "idmap"]})

    edit_config(b, cfg)
    owned_by_container_root(b)
    out = runc_cli("run", "--bundle", b, cid)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0:0"]
    st = os.stat(d / "made")
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_without_a_user_namespace_the_mapping_shows_host_ids(runc_cli, bundle, cid, src):
    b = bundle(["sh", "-c", "stat -c %u:%g /data/mine /data/roots"])
    edit_config(b, lambda s: s["mounts"].append(
        {"destination": "/data", "type": "bind", "source": str(src), "options": ["rbind", "ro"],
         "uidMappings": [{"containerID": 0, "hostID": 5000, "size": 2000}],
         "gidMappings": [{"containerID": 0, "hostID": 7000, "size": 2000}]}))
    out = runc_cli("run", "--bundle", b, cid)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["6000:8000", "5000:7000"]


@pytest.mark.parametrize("option, sub_owner",
                         [("ridmap", "0:0"), ("idmap", f"{OVERFLOW}:{OVERFLOW}")])
def test_ridmap_maps_submounts_and_idmap_does_not(runc_cli, bundle, cid, src, option, sub_owner,
                                                  host_clean):
    sub = src / "sub"
    sub.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,uid=1000,gid=1000", "hoci-sub",
                    str(sub)], check=True)
    try:
        b = bundle(["sh", "-c", "stat -c %u:%g /data /data/sub"])

        def cfg(s):
            userns(s)
            s["mounts"].append({"destination": "/data", "type": "bind", "source": str(src),
                                "options": ["rbind", option],
                                "uidMappings": one_to_one(1000, CONTAINER_ROOT),
                                "gidMappings": one_to_one(1000, CONTAINER_ROOT)})

        edit_config(b, cfg)
        owned_by_container_root(b)
        out = runc_cli("run", "--bundle", b, cid)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["0:0", sub_owner]
    finally:
        subprocess.run(["umount", str(sub)], check=True)
    host_clean(cid)


def test_mappings_on_a_tmpfs_are_refused(runc_cli, bundle, cid, runtime_root, host_clean):
    b = bundle()
    edit_config(b, lambda s: s["mounts"].append(
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"],
         "uidMappings": one_to_one(0, 1000), "gidMappings": one_to_one(0, 1000)}))
    msg = create_fails(runc_cli, b, cid, runtime_root, host_clean)
    assert "/scratch" in msg and "need a bind mount" in msg


def test_a_filesystem_without_idmap_support_is_named(runc_cli, bundle, cid, runtime_root,
                                                     host_clean):
    b = bundle()
    edit_config(b, lambda s: s["mounts"].append(
        {"destination": "/kernel", "type": "bind", "source": "/sys/kernel",
         "options": ["rbind", "idmap"],
         "uidMappings": one_to_one(0, 1000), "gidMappings": one_to_one(0, 1000)}))
    msg = create_fails(runc_cli, b, cid, runtime_root, host_clean)
    assert "mounts[" in msg and "/kernel" in msg and "sysfs" in msg and "idmap" in msg


@pytest.mark.parametrize("mount, expected", [
    ({"options": ["rbind", "idmap"]}, "takes the container's user namespace mappings"),
    ({"options": ["rbind"], "uidMappings": one_to_one(0, 1000)},
     "needs both uidMappings and gidMappings"),
    ({"options": ["rbind", "idmap", "ridmap"], "uidMappings": one_to_one(0, 1000),
      "gidMappings": one_to_one(0, 1000)}, "exclude each other"),
    ({"options": ["rbind"], "uidMappings": [{"containerID": 0, "hostID": 1, "size": 0}],
      "gidMappings": one_to_one(0, 1000)}, "size: must be at least 1"),
])
def test_bad_idmapped_mounts_name_the_destination(runc_cli, bundle, cid, runtime_root,
                                                  host_clean, src, mount, expected):
    b = bundle()
    edit_config(b, lambda s: s["mounts"].append(
        {"destination": "/data", "type": "bind", "source": str(src), **mount}))
    msg = create_fails(runc_cli, b, cid, runtime_root, host_clean)
    assert "mounts[" in msg and "/data" in msg and expected in msg, msg


def test_idmap_alone_in_a_joined_user_namespace_uses_that_namespace(runc_cli, bundle, cid,
                                                                   tmp_path):
    holder = bundle(["sleep", "30"])
    edit_config(holder, userns)
    owned_by_container_root(holder)
    first = cid + "-ns"
    assert runc_cli("run", "-d", "--bundle", holder, first).returncode == 0
    try:
        pid = json.loads(runc_cli("state", first).stdout)["pid"]
        d = tmp_path / "hoci-joined"
        d.mkdir()
        b = bundle(["sh", "-c", "stat -c %u:%g /data; cat /proc/self/uid_map"])

        def cfg(s):
            s["linux"]["namespaces"].append({"type": "user", "path": f"/proc/{pid}/ns/user"})
            s["mounts"].append({"destination": "/data", "type": "bind", "source": str(d),
                                "options": ["bind", "idmap"]})

        edit_config(b, cfg)
        owned_by_container_root(b)
        out = runc_cli("run", "--bundle", b, cid)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["0:0", "0", str(CONTAINER_ROOT), "65536"]
    finally:
        runc_cli("delete", "--force", first)


def test_a_bind_source_closed_to_the_user_namespace_is_named(runc_cli, bundle, cid, runtime_root,
                                                             host_clean, tmp_path):
    # In a user namespace the init is not host root: a 0700 directory above the source
    # stops it, and the error must say that rather than "does not exist".
    closed = tmp_path / "closed"
    (closed / "data").mkdir(parents=True)
    closed.chmod(0o700)
    b = bundle(["/bin/true"])

    def edit(s: dict) -> None:
        userns(s)
        s["mounts"].append({"destination": "/data", "type": "bind",
                            "source": str(closed / "data"), "options": ["rbind"]})

    edit_config(b, edit)
    owned_by_container_root(b)
    closed.chmod(0o700)  # owned_by_container_root opened the bundle's parents for search
    msg = create_fails(runc_cli, b, cid, runtime_root, host_clean)
    assert str(closed / "data") in msg and "permission denied" in msg, msg
    assert "does not exist" not in msg
