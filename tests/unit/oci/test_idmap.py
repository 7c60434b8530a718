"""Planning idmapped mounts: which mounts, with which mappings, and what is refused."""

import pytest

from pallet.errors import SpecError
from pallet.oci.linux import idmap
from pallet.oci.linux import syscalls as sc

MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def spec(*mounts, userns=None):
    s = {"mounts": list(mounts), "linux": {"namespaces": [{"type": "mount"}]}}
    if userns is not None:
        s["linux"]["namespaces"].append({"type": "user", **userns})
        if not userns:
            s["linux"]["uidMappings"] = MAP
            s["linux"]["gidMappings"] = MAP
    return s


def bind(**kw):
    return {"destination": "/data", "type": "bind", "source": "/srv/data", **kw}


def test_mounts_without_idmapping_are_left_alone():
    assert idmap.plan(spec(bind(options=["rbind", "ro"]), {"destination": "/proc",
                                                           "type": "proc"}), "/b") == []


def test_explicit_mappings_without_an_option_mean_a_non_recursive_idmap():
    [p] = idmap.plan(spec({"destination": "/x"}, bind(options=["rbind", "ro"],
                                                      uidMappings=MAP, gidMappings=MAP)), "/b")
    assert (p.index, p.destination, p.source) == (1, "/data", "/srv/data")
    assert p.flags & sc.MS_BIND and p.flags & sc.MS_REC and p.flags & sc.MS_RDONLY
    assert not p.recursive_idmap
    assert p.uid_mappings == p.gid_mappings == [(0, 100000, 65536)]


def test_ridmap_is_recursive_and_a_relative_source_is_in_the_bundle():
    [p] = idmap.plan(spec(bind(source="vol", options=["rbind", "ridmap"], uidMappings=MAP,
                               gidMappings=MAP)), "/b")
    assert p.recursive_idmap and p.source == "/b/vol"


def test_idmap_alone_takes_the_containers_mappings_or_its_joined_namespace():
    [p] = idmap.plan(spec(bind(options=["idmap"]), userns={}), "/b")
    assert p.uid_mappings == [(0, 100000, 65536)] and p.userns_path is None
    [p] = idmap.plan(spec(bind(options=["idmap"]), userns={"path": "/proc/1/ns/user"}), "/b")
    assert p.userns_path == "/proc/1/ns/user" and p.uid_mappings == []


@pytest.mark.parametrize("mount, expected", [
    ({"destination": "/t", "type": "tmpfs", "options": ["idmap"]},
     "mounts[0] /t: uidMappings, gidMappings, idmap and ridmap need a bind mount"),
    (bind(options=["idmap"]), "mounts[0] /data: idmap without uidMappings and gidMappings"),
    (bind(uidMappings=MAP), "mounts[0] /data: an idmapped mount needs both"),
    (bind(options=["idmap", "ridmap"], uidMappings=MAP, gidMappings=MAP),
     "mounts[0] /data: options idmap and ridmap exclude each other"),
    (bind(uidMappings=[{"containerID": 0, "hostID": -1, "size": 1}], gidMappings=MAP),
     "mounts[0] /data: uidMappings[0].hostID: must be an unsigned 32-bit integer, got -1"),
    (bind(uidMappings=MAP, gidMappings={"containerID": 0}),
     "mounts[0] /data: gidMappings: must be a list"),
])
def test_unusable_mounts_are_named(mount, expected):
    with pytest.raises(SpecError) as e:
        idmap.plan(spec(mount), "/b")
    assert str(e.value).startswith(expected)
