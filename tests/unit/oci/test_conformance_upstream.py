"""scripts/conformance/upstream.py removes the cgroups the runtime-tools cgroup tests leave."""

from __future__ import annotations

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
SCRIPTS = os.path.join(ROOT, "scripts", "conformance")


def _upstream():
    sys.path.insert(0, SCRIPTS)
    try:
        spec = importlib.util.spec_from_file_location("conformance_upstream",
                                                      os.path.join(SCRIPTS, "upstream.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(SCRIPTS)


HYBRID_MOUNTINFO = """\
30 23 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
35 23 0:31 / /proc rw - proc proc rw
"""
HYBRID_CGROUP = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n"


def test_the_runtimes_own_cgroup_is_found_in_every_hybrid_hierarchy():
    dirs = _upstream().own_cgroup_dirs(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    assert dirs == [
        ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu/"),
        ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory/process_api/abc"),
        ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/systemd/"),
        ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/unified/"),
    ]


def test_on_a_pure_v2_host_inside_a_cgroup_namespace_the_mount_root_is_stripped():
    mountinfo = "40 23 0:26 /ci/job /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    dirs = _upstream().own_cgroup_dirs(mountinfo, "0::/ci/job/runner\n")
    assert dirs == [("/sys/fs/cgroup", "/sys/fs/cgroup/runner")]


def test_only_the_test_cgroups_that_are_gone_or_empty_are_removed(tmp_path):
    up = _upstream()
    made = tmp_path / "testdir" / "cgrouptest"
    made.mkdir(parents=True)
    busy = tmp_path / "busy"
    (busy / "child").mkdir(parents=True)
    left = up.remove_test_cgroups([str(made / "container"), str(made), str(made.parent),
                                   str(busy)])
    assert not (tmp_path / "testdir").exists()
    assert len(left) == 1 and left[0].startswith(str(busy))
