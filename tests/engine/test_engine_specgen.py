"""What a user asks for, and what the generated OCI spec then says.

No root, no kernel: generate_spec is pure given the host description.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from pallet.engine import specgen
from pallet.engine.specgen import (
    DEFAULT_CAPABILITIES,
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    INIT_PATH,
    ContainerOptions,
    Device,
    HostInfo,
    Mount,
    generate_spec,
    parse_device,
    parse_ulimit,
)
from pallet.engine.users import ResolvedUser
from pallet.errors import InvalidArgument

HOST = HostInfo(machine="x86_64", kernel="6.1.0-18-amd64", cap_last_cap=40, ncpu=4)
NGINX = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/local/bin:/usr/bin", "NGINX_VERSION=1.25"],
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Cmd": ["nginx", "-g", "daemon off;"],
        "WorkingDir": "/srv",
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
        "Volumes": {"/var/cache/nginx": {}},
        "Labels": {"maintainer": "nginx", "tier": "web"},
        "StopSignal": "SIGQUIT",
    },
}
BUSYBOX = {"config": {"Cmd": ["sh"]}}


def spec(image=BUSYBOX, user=None, host=HOST, **opts):
    return generate_spec(image, ContainerOptions(**opts), user, host)


def syscall_names(s) -> set[str]:
    return {n for rule in s["linux"]["seccomp"]["syscalls"] for n in rule["names"]}


def mount_at(s, dest):
    return next(m for m in s["mounts"] if m["destination"] == dest)


# ------------------------------------------------------------------ command and env


def test_an_image_with_entrypoint_and_cmd_runs_both():
    assert spec(NGINX)["process"]["args"] == ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]


def test_a_command_after_the_image_replaces_cmd_but_keeps_the_entrypoint():
    assert spec(NGINX, command=["nginx", "-t"])["process"]["args"] == [
        "/docker-entrypoint.sh",
        "nginx",
        "-t",
    ]


def test_entrypoint_override_drops_the_images_cmd():
    assert spec(NGINX, entrypoint=["/bin/sh"])["process"]["args"] == ["/bin/sh"]
    assert spec(NGINX, entrypoint=[""], command=["ls"])["process"]["args"] == ["ls"]


def test_an_image_with_nothing_to_run_and_no_command_is_refused():
    with pytest.raises(InvalidArgument, match="no command specified"):
        spec({"config": {}})


def test_the_environment_is_image_then_user_with_docker_defaults():
    env = spec(NGINX, env=["NGINX_VERSION=2", "EXTRA=1", "PATH"], hostname="web1", tty=True)[
        "process"
    ]["env"]
    assert "HOSTNAME=web1" in env and "TERM=xterm" in env
    assert "NGINX_VERSION=2" in env and "NGINX_VERSION=1.25" not in env
    assert "EXTRA=1" in env
    # A bare name unsets, as in docker's ReplaceOrAppendEnvValues.
    assert not any(e.startswith("PATH=") for e in env)
    assert "HOME=/root" in env


def test_path_defaults_when_the_image_sets_none_and_home_comes_from_passwd():
    env = spec(user=ResolvedUser(uid=1000, gid=1000, home="/home/app"))["process"]["env"]
    assert env[0] == f"PATH={specgen.DEFAULT_PATH_ENV}"
    assert "HOME=/home/app" in env


def test_env_with_a_nul_byte_is_refused():
    with pytest.raises(InvalidArgument, match="NUL"):
        spec(env=["A=b\x00c"])


def test_working_directory_comes_from_the_image_and_must_be_absolute_when_given():
    assert spec(NGINX)["process"]["cwd"] == "/srv"
    assert spec(NGINX, workdir="/tmp/")["process"]["cwd"] == "/tmp"
    with pytest.raises(InvalidArgument, match="needs to be an absolute path"):
        spec(workdir="tmp")


def test_the_resolved_user_sets_uid_gid_and_groups():
    u = spec(user=ResolvedUser(uid=33, gid=33, additional_gids=(10, 29), home="/var/www"))[
        "process"
    ]["user"]
    assert u == {"uid": 33, "gid": 33, "additionalGids": [10, 29]}
    assert specgen.user_spec(NGINX, ContainerOptions()) == ""
    assert specgen.user_spec({"config": {"User": "nginx"}}, ContainerOptions()) == "nginx"
    assert specgen.user_spec({"config": {"User": "nginx"}}, ContainerOptions(user="0")) == "0"


# ------------------------------------------------------------------ capabilities


def test_a_default_container_gets_dockers_14_capabilities_in_three_sets():
    caps = spec()["process"]["capabilities"]
    assert len(DEFAULT_CAPABILITIES) == 14
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == list(DEFAULT_CAPABILITIES)
    assert "inheritable" not in caps and "ambient" not in caps


def test_cap_drop_all_cap_add_net_admin_leaves_only_net_admin():
    caps = spec(cap_drop=["ALL"], cap_add=["NET_ADMIN"])["process"]["capabilities"]
    assert caps["bounding"] == ["CAP_NET_ADMIN"]


def test_capability_names_work_with_or_without_the_prefix_in_any_case():
    caps = spec(cap_add=["sys_ptrace", "CAP_NET_ADMIN"], cap_drop=["cap_mknod", "NET_RAW"])
    bounding = caps["process"]["capabilities"]["bounding"]
    assert "CAP_SYS_PTRACE" in bounding and "CAP_NET_ADMIN" in bounding
    assert "CAP_MKNOD" not in bounding and "CAP_NET_RAW" not in bounding


def test_cap_add_all_minus_a_drop_is_everything_else():
    bounding = spec(cap_add=["ALL"], cap_drop=["SYS_ADMIN"])["process"]["capabilities"]["bounding"]
    assert len(bounding) == 40 and "CAP_SYS_ADMIN" not in bounding


def test_an_unknown_capability_is_refused_by_name():
    with pytest.raises(InvalidArgument, match="unknown capability: 'NET_ADMINN'"):
        spec(cap_add=["NET_ADMINN"])


def test_a_capability_the_hosts_kernel_lacks_is_refused():
    old = HostInfo(machine="x86_64", kernel="5.4.0", cap_last_cap=37)
    with pytest.raises(InvalidArgument, match="not supported by your kernel.*CAP_BPF"):
        spec(host=old, cap_add=["BPF"])
    assert len(spec(host=old, privileged=True)["process"]["capabilities"]["bounding"]) == 38


def test_privileged_inside_a_restricted_environment_gets_only_the_caps_it_can_grant():
    # A nested host whose own bounding set lacks CAP_SYS_RESOURCE (bit 24).
    nested = HostInfo(cap_bounding=((1 << 41) - 1) & ~(1 << 24))
    bounding = spec(host=nested, privileged=True)["process"]["capabilities"]["bounding"]
    assert len(bounding) == 40 and "CAP_SYS_RESOURCE" not in bounding
    with pytest.raises(
        InvalidArgument, match="not available in the current environment: 'CAP_SYS_RESOURCE'"
    ):
        spec(host=nested, cap_add=["SYS_RESOURCE"])


# ------------------------------------------------------------------ seccomp


def test_the_default_seccomp_profile_is_dockers_for_the_hosts_arch_family():
    sec = spec()["linux"]["seccomp"]
    assert sec["defaultAction"] == "SCMP_ACT_ERRNO" and sec["defaultErrnoRet"] == 1
    assert sec["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    names = syscall_names(spec())
    assert {"read", "execve", "arch_prctl", "ptrace"} <= names
    # Without CAP_SYS_ADMIN: no mount, and clone3 answers ENOSYS so libc uses clone.
    assert not {"mount", "umount2", "unshare", "setns", "bpf", "reboot"} & names
    clone3 = next(r for r in sec["syscalls"] if r["names"] == ["clone3"])
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}


def test_cap_add_sys_admin_unlocks_mount_and_lifts_the_clone_restriction():
    s = spec(cap_add=["SYS_ADMIN"])
    assert {"mount", "umount2", "unshare", "setns", "clone", "clone3"} <= syscall_names(s)
    rules = s["linux"]["seccomp"]["syscalls"]
    assert not any(r["names"] == ["clone"] and r.get("args") for r in rules)
    assert not any(r.get("action") == "SCMP_ACT_ERRNO" for r in rules)


def test_dropping_sys_chroot_removes_chroot_from_the_allow_list():
    assert "chroot" in syscall_names(spec())
    assert "chroot" not in syscall_names(spec(cap_drop=["SYS_CHROOT"]))


def test_an_arm64_host_gets_the_arm_family_and_arm_only_syscalls():
    s = spec(host=HostInfo(machine="aarch64", kernel="6.6.0"))
    assert s["linux"]["seccomp"]["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    names = syscall_names(s)
    assert "set_tls" in names and "arch_prctl" not in names


def test_on_a_kernel_older_than_4_8_ptrace_needs_cap_sys_ptrace():
    assert "ptrace" not in syscall_names(spec(host=HostInfo(kernel="4.4.0")))
    assert "ptrace" in syscall_names(spec(host=HostInfo(kernel="4.4.0"), cap_add=["SYS_PTRACE"]))


def test_seccomp_unconfined_removes_the_filter():
    assert "seccomp" not in spec(security_opt=["seccomp=unconfined"])["linux"]
    assert "seccomp" not in spec(security_opt=["seccomp:unconfined"])["linux"]


def test_seccomp_path_loads_a_docker_format_profile(tmp_path):
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {
                "names": ["mount"],
                "action": "SCMP_ACT_ALLOW",
                "includes": {"caps": ["CAP_SYS_ADMIN"]},
            },
        ],
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    sec = spec(security_opt=[f"seccomp={path}"])["linux"]["seccomp"]
    assert sec == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }


def test_seccomp_options_that_make_no_sense_are_refused(tmp_path):
    with pytest.raises(InvalidArgument, match="opening seccomp profile '/no/such.json' failed"):
        spec(security_opt=["seccomp=/no/such.json"])
    with pytest.raises(InvalidArgument, match="seccomp="):
        spec(security_opt=["seccomp="])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        spec(security_opt=[f"seccomp={bad}"])
    bad.write_text('{"defaultAction": "SCMP_ACT_MAYBE"}')
    with pytest.raises(InvalidArgument, match="unknown defaultAction 'SCMP_ACT_MAYBE'"):
        spec(security_opt=[f"seccomp={bad}"])
    with pytest.raises(InvalidArgument, match="invalid --security-opt 'selinux=off'"):
        spec(security_opt=["selinux=off"])


def test_no_new_privileges_and_apparmor_from_security_opt():
    s = spec(security_opt=["no-new-privileges", "apparmor=my-profile", "label=disable"])
    assert s["process"]["noNewPrivileges"] is True
    assert s["process"]["apparmorProfile"] == "my-profile"
    assert spec(security_opt=["no-new-privileges=false"])["process"]["noNewPrivileges"] is False
    assert spec(no_new_privileges=True)["process"]["noNewPrivileges"] is True
    with pytest.raises(InvalidArgument, match="no-new-privileges takes true or false"):
        spec(security_opt=["no-new-privileges=maybe"])


# ------------------------------------------------------------------ privileged, paths


def test_privileged_means_all_caps_no_seccomp_no_masks_rw_sys_and_host_devices():
    fuse = Device("/dev/fuse", "c", 10, 229, path_on_host="/dev/fuse")
    s = spec(privileged=True, devices=[fuse], security_opt=["seccomp=builtin"])
    assert len(s["process"]["capabilities"]["bounding"]) == 41
    assert "seccomp" not in s["linux"]
    assert s["linux"]["maskedPaths"] == [] and s["linux"]["readonlyPaths"] == []
    assert "ro" not in mount_at(s, "/sys")["options"]
    assert "ro" not in mount_at(s, "/sys/fs/cgroup")["options"]
    assert s["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert s["linux"]["devices"][0]["path"] == "/dev/fuse"


def test_masked_and_readonly_paths_default_to_dockers_and_can_be_replaced():
    s = spec()
    assert s["linux"]["maskedPaths"] == list(DEFAULT_MASKED_PATHS)
    assert "/proc/kcore" in DEFAULT_MASKED_PATHS and "/sys/firmware" in DEFAULT_MASKED_PATHS
    assert s["linux"]["readonlyPaths"] == list(DEFAULT_READONLY_PATHS)
    s = spec(masked_paths=["/proc/kcore"], readonly_paths=[])
    assert s["linux"]["maskedPaths"] == ["/proc/kcore"] and s["linux"]["readonlyPaths"] == []
    s = spec(security_opt=["systempaths=unconfined"])
    assert s["linux"]["maskedPaths"] == [] and s["linux"]["readonlyPaths"] == []


# ------------------------------------------------------------------ mounts


def test_default_mounts_are_dockers():
    s = spec()
    assert [m["destination"] for m in s["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm",
    ]  # fmt: skip
    pts = mount_at(s, "/dev/pts")["options"]
    assert {"newinstance", "ptmxmode=0666", "mode=0620", "gid=5"} <= set(pts)
    assert f"size={64 << 20}" in mount_at(s, "/dev/shm")["options"]
    assert (
        "ro" in mount_at(s, "/sys")["options"] and "ro" in mount_at(s, "/sys/fs/cgroup")["options"]
    )


def test_a_read_only_bind_with_propagation_and_parents_mounted_first():
    s = spec(
        mounts=[
            Mount("/data/cache", source="/srv/cache"),
            Mount("/data", source="/srv/data", readonly=True, propagation="rslave"),
        ]
    )
    user = s["mounts"][-2:]
    assert [m["destination"] for m in user] == ["/data", "/data/cache"]
    assert user[0]["options"] == ["rbind", "rslave", "ro"]
    assert user[1]["options"] == ["rbind", "rprivate"]
    assert s["linux"]["rootfsPropagation"] == "rslave"


def test_a_user_mount_on_dev_shm_replaces_the_default_one():
    s = spec(mounts=[Mount("/dev/shm", source="/run/pallet/pod1/shm")])
    shm = [m for m in s["mounts"] if m["destination"] == "/dev/shm"]
    assert len(shm) == 1 and shm[0]["type"] == "bind"


def test_tmpfs_options_merge_with_later_flags_winning():
    tmp = mount_at(
        spec(mounts=[Mount("/run", type="tmpfs", options=["exec", "size=1m", "size=2m"])]), "/run"
    )
    assert tmp["type"] == "tmpfs"
    assert "noexec" not in tmp["options"] and "exec" in tmp["options"]
    assert [o for o in tmp["options"] if o.startswith("size=")] == ["size=2m"]
    assert {"nosuid", "nodev"} <= set(tmp["options"])


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        (Mount("data", source="/srv"), "must be absolute"),
        (Mount("/", source="/srv"), "root cannot be a mount target"),
        (Mount("/a/../etc", source="/srv"), "'..' is not allowed"),
        (Mount("/data", source="relative"), "source must be an absolute path"),
        (Mount("/data", source="/srv", propagation="sideways"), "invalid propagation"),
        (Mount("/data", type="nfs", source="/srv"), "invalid mount type"),
    ],
)
def test_bad_mounts_are_refused(mount, message):
    with pytest.raises(InvalidArgument, match=message):
        spec(mounts=[mount])


def test_the_same_mount_point_twice_is_refused():
    with pytest.raises(InvalidArgument, match="Duplicate mount point: /data"):
        spec(mounts=[Mount("/data", source="/a"), Mount("/data/", source="/b")])


def test_read_only_rootfs_and_rootfs_path():
    s = spec(read_only=True, rootfs="/var/lib/pallet/c1/rootfs")
    assert s["root"] == {"path": "/var/lib/pallet/c1/rootfs", "readonly": True}


def test_init_runs_the_init_binary_in_front_of_the_command():
    s = spec(init=True, init_path="/usr/bin/tini-static")
    assert s["process"]["args"] == [INIT_PATH, "--", "sh"]
    assert mount_at(s, INIT_PATH)["source"] == "/usr/bin/tini-static"
    with pytest.raises(InvalidArgument, match="--init needs an init binary"):
        spec(init=True)


# ------------------------------------------------------------------ resources


def test_memory_limit_gets_dockers_default_swap_and_cpus_become_a_quota():
    res = spec(memory=512 << 20, cpus=1.5, pids_limit=100, cpu_shares=512, cpuset_cpus="0-1")[
        "linux"
    ]["resources"]
    assert res["memory"] == {"limit": 512 << 20, "swap": 1024 << 20}
    assert res["cpu"] == {"period": 100000, "quota": 150000, "shares": 512, "cpus": "0-1"}
    assert res["pids"] == {"limit": 100}


def test_unlimited_swap_and_cri_style_quota_and_period():
    res = spec(memory=64 << 20, memory_swap=-1, cpu_quota=50000, cpu_period=100000)["linux"][
        "resources"
    ]
    assert res["memory"]["swap"] == -1
    assert res["cpu"] == {"period": 100000, "quota": 50000}


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"memory": 1 << 20}, "minimum memory limit allowed is 6MB"),
        ({"memory": 64 << 20, "memory_swap": 32 << 20}, "memory\\+swap limit should be larger"),
        ({"cpus": 8.0}, "range of CPUs is from 0.01 to 4.00"),
        ({"cpus": 0.001}, "range of CPUs"),
        ({"cpuset_cpus": "0-a"}, "invalid cpuset"),
        ({"oom_score_adj": 1001}, "invalid oom score adjustment"),
    ],
)
def test_resource_values_out_of_range_are_refused(opts, message):
    with pytest.raises(InvalidArgument, match=message):
        spec(**opts)


def test_the_device_cgroup_denies_all_but_the_standard_devices_and_added_ones():
    rules = spec(devices=[Device("/dev/fuse", "c", 10, 229, permissions="rw")])["linux"][
        "resources"
    ]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in rules
    assert rules[-1] == {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"}


def test_device_flags_parse_and_stat_the_host_node():
    d = parse_device("/dev/null:/dev/mynull:rw")
    assert (d.path_in_container, d.type, d.major, d.minor, d.permissions) == (
        "/dev/mynull",
        "c",
        1,
        3,
        "rw",
    )
    assert parse_device("/dev/null:r").path_in_container == "/dev/null"
    with pytest.raises(InvalidArgument, match="invalid device permissions 'rwx'"):
        parse_device("/dev/null:/dev/n:rwx")
    with pytest.raises(InvalidArgument, match="error gathering device information"):
        parse_device("/dev/does-not-exist")
    with pytest.raises(InvalidArgument, match="not a character or block device"):
        parse_device("/etc/hostname" if os.path.exists("/etc/hostname") else "/etc/passwd")


def test_rlimits_default_nofile_and_ulimit_overrides():
    assert spec()["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "soft": 1048576, "hard": 1048576}
    ]
    rl = spec(ulimits=[parse_ulimit("nofile=1024:2048"), parse_ulimit("core=-1")])["process"][
        "rlimits"
    ]
    assert {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048} in rl
    assert {"type": "RLIMIT_CORE", "soft": 2**64 - 1, "hard": 2**64 - 1} in rl
    # A nested host whose runtime cannot raise its own hard limit of 20000.
    capped = HostInfo(nofile_max=20000)
    assert spec(host=capped)["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "soft": 20000, "hard": 20000}
    ]
    for bad in ("nofiles=1", "nofile=2:1", "nofile=x", "nofile"):
        with pytest.raises(InvalidArgument, match="ulimit"):
            parse_ulimit(bad)


# ------------------------------------------------------------------ sysctls


def test_a_sysctl_value_smuggling_a_second_sysctl_is_refused():
    with pytest.raises(InvalidArgument, match="invalid value 'x\\+kernel.core_pattern=|/evil'"):
        spec(sysctls={"kernel.shm_rmid_forced": "x+kernel.core_pattern=|/evil"})
    with pytest.raises(InvalidArgument, match="invalid value"):
        spec(sysctls={"net.ipv4.ip_forward": "1\nkernel.core_pattern=|/evil"})


def test_sysctls_that_are_not_namespaced_are_refused():
    with pytest.raises(InvalidArgument, match="'kernel.core_pattern' is not namespaced"):
        spec(sysctls={"kernel.core_pattern": "core"})
    with pytest.raises(InvalidArgument, match="use --hostname"):
        spec(sysctls={"kernel.hostname": "x"})


def test_sysctl_names_cannot_walk_out_of_proc_sys():
    for name in ("net/../../kernel/core_pattern", "net..ipv4", "net.ipv4.ip_forward=1", ""):
        with pytest.raises(InvalidArgument, match="invalid sysctl name"):
            spec(sysctls={name: "1"})


def test_namespaced_sysctls_pass_unless_that_namespace_is_the_hosts():
    s = spec(
        sysctls={
            "net.ipv4.ip_unprivileged_port_start": "0",
            "kernel.shmmax": "68719476736",
            "fs.mqueue.msg_max": "20",
        }
    )
    assert s["linux"]["sysctl"]["net.ipv4.ip_unprivileged_port_start"] == "0"
    assert spec(sysctls={"net.ipv4.ip_local_port_range": "1024 65000"})["linux"]["sysctl"]
    with pytest.raises(InvalidArgument, match="sharing the host's network namespace"):
        spec(sysctls={"net.ipv4.ip_forward": "1"}, namespaces={"network": "host"})


# ------------------------------------------------------------------ namespaces, hostname


def test_a_pod_member_joins_the_pods_namespaces_and_keeps_its_own_pid_and_mount():
    s = spec(
        hostname="ignored",
        namespaces={
            "network": "/run/pallet/netns/pod1",
            "ipc": "/proc/42/ns/ipc",
            "uts": "/proc/42/ns/uts",
        },
    )
    ns = {n["type"]: n.get("path", "") for n in s["linux"]["namespaces"]}
    assert ns == {
        "mount": "",
        "network": "/run/pallet/netns/pod1",
        "uts": "/proc/42/ns/uts",
        "pid": "",
        "ipc": "/proc/42/ns/ipc",
        "cgroup": "",
    }
    # The hostname lives in the pod's UTS namespace, set when the pod was made.
    assert "hostname" not in s


def test_host_network_leaves_the_network_namespace_out():
    types = [n["type"] for n in spec(namespaces={"network": "host"})["linux"]["namespaces"]]
    assert "network" not in types and "mount" in types


@pytest.mark.parametrize(
    ("namespaces", "message"),
    [
        ({"net": ""}, "unknown namespace type 'net'"),
        ({"network": "netns/pod1"}, "absolute path"),
        ({"mount": "host"}, "cannot share the host's mount namespace"),
    ],
)
def test_bad_namespace_options_are_refused(namespaces, message):
    with pytest.raises(InvalidArgument, match=message):
        spec(namespaces=namespaces)


def test_hostname_cgroups_path_and_annotations_are_written():
    s = spec(
        hostname="web-1", cgroups_path="/pallet/abc", annotations={"io.kubernetes.pod.name": "p"}
    )
    assert s["hostname"] == "web-1"
    assert s["linux"]["cgroupsPath"] == "/pallet/abc"
    assert s["annotations"] == {"io.kubernetes.pod.name": "p"}
    with pytest.raises(InvalidArgument, match="invalid hostname"):
        spec(hostname="bad_host!")


# ------------------------------------------------------------------ image helpers


def test_image_metadata_for_the_engine_record():
    opts = ContainerOptions(labels={"tier": "db"})
    assert specgen.exposed_ports(NGINX) == [(53, "udp"), (80, "tcp")]
    assert specgen.image_volumes(NGINX) == ["/var/cache/nginx"]
    assert specgen.merged_labels(NGINX, opts) == {"maintainer": "nginx", "tier": "db"}
    assert specgen.stop_signal(NGINX, ContainerOptions()) == signal.SIGQUIT
    assert specgen.stop_signal(BUSYBOX, ContainerOptions()) == signal.SIGTERM
    assert specgen.stop_signal(BUSYBOX, ContainerOptions(stop_signal="kill")) == signal.SIGKILL
    assert specgen.parse_signal("SIGRTMIN+3") == signal.SIGRTMIN + 3
    assert specgen.parse_signal("9") == 9
    with pytest.raises(InvalidArgument, match="invalid signal: 'SIGNOPE'"):
        specgen.parse_signal("SIGNOPE")


def test_the_generated_spec_passes_the_runtimes_own_validation(tmp_path):
    oci_spec = pytest.importorskip("pallet.oci.spec", reason="pallet.oci.spec not written yet")
    (tmp_path / "rootfs").mkdir()
    s = spec(
        NGINX,
        user=ResolvedUser(uid=101, gid=101, additional_gids=(10,), home="/var/cache/nginx"),
        tty=True,
        hostname="web",
        memory=256 << 20,
        cpus=0.5,
        sysctls={"net.core.somaxconn": "1024"},
        mounts=[Mount("/data", source=str(tmp_path)), Mount("/run", type="tmpfs")],
        devices=[Device("/dev/fuse", "c", 10, 229)],
        ulimits=[parse_ulimit("nproc=512")],
        oom_score_adj=100,
    )
    oci_spec.validate(s, str(tmp_path))
    json.dumps(s)  # and it is plain JSON
