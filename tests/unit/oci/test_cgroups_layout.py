"""Detection of v1/v2/hybrid hosts from mountinfo text, and cgroupsPath resolution like runc's cgroupfs."""

import pytest

from pallet.oci.cgroups import CgroupError, InvalidCgroupValue
from pallet.oci.cgroups.layout import (
    cgroup_dir,
    detect,
    normalize_cgroups_path,
    parse_mountinfo,
    parse_proc_cgroup,
)

HYBRID = """\
23 1 0:21 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

PURE_V2 = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""

# Debian-style v1 with co-mounted cpu,cpuacct and optional fields before the separator.
PURE_V1 = """\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid shared:9 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
31 25 0:28 /docker/abc /sys/fs/cgroup/pids rw shared:15 - cgroup cgroup rw,pids
"""


def test_this_kind_of_host_is_hybrid_with_unified_beside_v1():
    layout = detect(HYBRID)
    assert layout.mode == "hybrid"
    assert layout.unified is not None and layout.unified.mountpoint == "/sys/fs/cgroup/unified"
    assert layout.v1["memory"].mountpoint == "/sys/fs/cgroup/memory"
    assert layout.v1["name=systemd"].mountpoint == "/sys/fs/cgroup/systemd"
    assert "hugetlb" not in layout.v1  # not bound to v1 here: it lives on cgroup2


def test_pure_v2_host():
    layout = detect(PURE_V2)
    assert layout.mode == "v2"
    assert layout.v1 == {}
    assert layout.unified.mountpoint == "/sys/fs/cgroup"


def test_pure_v1_host_with_comounted_cpu_and_cpuacct():
    layout = detect(PURE_V1)
    assert layout.mode == "v1"
    assert layout.v1["cpu"] is layout.v1["cpuacct"]
    assert layout.v1["cpu"].mountpoint == "/sys/fs/cgroup/cpu,cpuacct"
    # Mount options such as xattr and release_agent=... are not controllers.
    assert layout.v1["name=systemd"].controllers == frozenset({"name=systemd"})


def test_only_a_named_v1_hierarchy_beside_cgroup2_is_still_v2():
    text = PURE_V2 + "40 31 0:37 / /run/systemd rw - cgroup cgroup rw,name=systemd\n"
    assert detect(text).mode == "v2"


def test_no_cgroups_at_all():
    assert detect("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n").mode == "none"


def test_escaped_mountpoints_are_decoded():
    text = "41 31 0:38 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n"
    assert parse_mountinfo(text)[0].mountpoint == "/mnt/my cgroup"


def test_proc_cgroup_maps_every_controller_and_the_unified_entry():
    own = parse_proc_cgroup("4:memory:/process_api/x\n2:cpu,cpuacct:/a\n1:name=systemd:/s\n0::/u\n")
    assert own == {
        "memory": "/process_api/x",
        "cpu": "/a",
        "cpuacct": "/a",
        "name=systemd": "/s",
        "": "/u",
    }


def test_default_path_is_under_pallet():
    assert normalize_cgroups_path(None, "c1") == "/pallet/c1"
    assert normalize_cgroups_path("", "c1") == "/pallet/c1"


@pytest.mark.parametrize("bad", ["/a/../../etc", "..", "/"])
def test_paths_that_escape_or_name_the_root_are_refused(bad):
    with pytest.raises(InvalidCgroupValue):
        normalize_cgroups_path(bad, "c1")


@pytest.mark.parametrize("spec,path", [
    ("system.slice:pallet:c1", "/system.slice/pallet-c1.scope"),
    ("kubepods-besteffort-pod12.slice:cri-containerd:abc",
     "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/"
     "cri-containerd-abc.scope"),
    ("machine.slice:libpod:x", "/machine.slice/libpod-x.scope"),
    (":docker:y", "/system.slice/docker-y.scope"),
])
def test_systemd_slice_form_maps_where_systemd_would_put_it(spec, path):
    """--systemd-cgroup callers (containerd, podman) pass slice:prefix:name; runc's layout."""
    assert normalize_cgroups_path(spec, "c1") == path


@pytest.mark.parametrize("bad", ["notaslice:p:n", "a--b.slice:p:n", "system.slice:p:"])
def test_malformed_systemd_forms_are_refused(bad):
    with pytest.raises(CgroupError, match="slice"):
        normalize_cgroups_path(bad, "c1")


def test_absolute_path_hangs_off_each_hierarchy_root():
    layout = detect(PURE_V1)
    assert (
        cgroup_dir(layout.v1["memory"], "/pallet/c1", "/ignored")
        == "/sys/fs/cgroup/memory/pallet/c1"
    )


def test_relative_path_hangs_off_the_callers_own_cgroup():
    layout = detect(HYBRID)
    assert (
        cgroup_dir(layout.v1["memory"], "ctr/c1", "/process_api/x")
        == "/sys/fs/cgroup/memory/process_api/x/ctr/c1"
    )


def test_relative_path_strips_the_mount_root_from_our_own_cgroup():
    # Without a cgroup namespace, /proc/self/cgroup shows /docker/abc/...; the mount shows its inside.
    pids = detect(PURE_V1).v1["pids"]
    assert cgroup_dir(pids, "c1", "/docker/abc/sub") == "/sys/fs/cgroup/pids/sub/c1"
