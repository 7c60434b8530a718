"""Compiling linux.seccomp: bad specs fail before anything exists, naming field and value."""

import pytest

from pallet.errors import SpecError
from pallet.oci.linux import seccomp


def spec(**over):
    base = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }
    base.update(over)
    return base


def compile_error(**over) -> str:
    with pytest.raises(SpecError) as e:
        seccomp.compile_filter(spec(**over))
    return str(e.value)


def test_a_valid_profile_compiles_to_whole_bpf_instructions():
    bpf = seccomp.compile_filter(spec())
    assert bpf and len(bpf) % 8 == 0


def test_every_action_and_operator_compiles():
    calls = [
        {"names": ["mkdir"], "action": "SCMP_ACT_KILL"},
        {"names": ["rmdir"], "action": "SCMP_ACT_KILL_PROCESS"},
        {"names": ["chdir"], "action": "SCMP_ACT_KILL_THREAD"},
        {"names": ["fchdir"], "action": "SCMP_ACT_TRAP"},
        {"names": ["unlink"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        {"names": ["symlink"], "action": "SCMP_ACT_TRACE"},
        {"names": ["link"], "action": "SCMP_ACT_LOG"},
    ]
    for i, op in enumerate(seccomp._OPS):
        calls.append(
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": i % 6, "value": 8, "valueTwo": 8, "op": op}],
            }
        )
    bpf = seccomp.compile_filter(
        spec(defaultAction="SCMP_ACT_ERRNO", defaultErrnoRet=38, syscalls=calls)
    )
    assert len(bpf) % 8 == 0


def test_two_conditions_on_one_argument_compile_like_runc():
    call = {
        "names": ["clone"],
        "action": "SCMP_ACT_ERRNO",
        "args": [
            {"index": 0, "value": 0x10000000, "valueTwo": 0x10000000, "op": "SCMP_CMP_MASKED_EQ"},
            {"index": 0, "value": 0x20000000, "valueTwo": 0x20000000, "op": "SCMP_CMP_MASKED_EQ"},
        ],
    }
    assert len(seccomp.compile_filter(spec(syscalls=[call]))) % 8 == 0


def test_a_syscall_that_exists_only_on_other_architectures_is_skipped():
    call = {
        "names": ["arm_fadvise64_64", "s390_pci_mmio_read", "mkdir"],
        "action": "SCMP_ACT_ERRNO",
    }
    only_native = seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [call]})
    assert len(only_native) % 8 == 0


def test_a_rule_with_the_default_action_changes_nothing():
    same = seccomp.compile_filter(spec(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ALLOW"}]))
    empty = seccomp.compile_filter(spec(syscalls=[]))
    assert same == empty


def test_more_architectures_make_a_longer_program():
    one = seccomp.compile_filter(spec(architectures=[]))
    three = seccomp.compile_filter(spec())
    assert len(three) > len(one)


def test_unknown_syscall_names_the_entry_and_the_name():
    calls = [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}] * 3 + [
        {"names": ["mkdir", "foo"], "action": "SCMP_ACT_ERRNO"}
    ]
    assert compile_error(syscalls=calls) == 'linux.seccomp.syscalls[3].names: unknown syscall "foo"'


@pytest.mark.parametrize(
    "over, expected",
    [
        (
            {"defaultAction": "SCMP_ACT_BOGUS"},
            "linux.seccomp.defaultAction: unknown seccomp action 'SCMP_ACT_BOGUS'",
        ),
        ({"defaultAction": None}, "linux.seccomp.defaultAction: unknown seccomp action None"),
        (
            {"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOPE"}]},
            "linux.seccomp.syscalls[0].action: unknown seccomp action 'SCMP_ACT_NOPE'",
        ),
        (
            {"architectures": ["SCMP_ARCH_VAX"]},
            "linux.seccomp.architectures[0]: unknown architecture 'SCMP_ARCH_VAX'",
        ),
        (
            {"architectures": ["x86_64"]},
            "linux.seccomp.architectures[0]: unknown architecture 'x86_64'",
        ),
        (
            {"flags": ["SECCOMP_FILTER_FLAG_BOGUS"]},
            "linux.seccomp.flags: unknown seccomp flag 'SECCOMP_FILTER_FLAG_BOGUS'",
        ),
        (
            {
                "syscalls": [
                    {
                        "names": ["mkdir"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_FOO"}],
                    }
                ]
            },
            "linux.seccomp.syscalls[0].args[0].op: unknown seccomp operator 'SCMP_CMP_FOO'",
        ),
        (
            {
                "syscalls": [
                    {
                        "names": ["mkdir"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}],
                    }
                ]
            },
            "linux.seccomp.syscalls[0].args[0].index: must be 0..5, got 6",
        ),
        (
            {
                "syscalls": [
                    {
                        "names": ["mkdir"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}],
                    }
                ]
            },
            "linux.seccomp.syscalls[0].args[0].value: must be an unsigned 64-bit integer, got -1",
        ),
        (
            {"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]},
            "linux.seccomp.syscalls[0].action: errnoRet must be an integer 0..65535, got 70000",
        ),
        (
            {"syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]},
            "linux.seccomp.syscalls[0].names: must be a non-empty list of syscall names",
        ),
    ],
)
def test_bad_fields_are_named_with_their_value(over, expected):
    assert compile_error(**over) == expected


def test_notify_rules_compile_with_a_listener_path():
    bpf = seccomp.compile_filter(spec(
        listenerPath="/run/agent.sock", listenerMetadata="m",
        syscalls=[{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]))
    # SECCOMP_RET_USER_NOTIF appears in the program as a return value.
    assert (0x7FC00000).to_bytes(4, "little") in bpf
    assert seccomp.uses_notify(spec(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]))
    assert not seccomp.uses_notify(spec(listenerPath="/run/agent.sock"))


@pytest.mark.parametrize("over, expected", [
    ({"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.listenerPath: required when SCMP_ACT_NOTIFY is used"),
    ({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/a"},
     "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action"),
    ({"listenerPath": "/a", "syscalls": [{"names": ["sendmsg"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.syscalls[0]: SCMP_ACT_NOTIFY cannot be used for sendmsg"),
    ({"listenerMetadata": "m"},
     "linux.seccomp.listenerMetadata: set without linux.seccomp.listenerPath"),
    ({"listenerPath": 7}, "linux.seccomp.listenerPath: must be a socket path, got 7"),
])
def test_bad_notify_profiles_are_named(over, expected):
    assert compile_error(**over).startswith(expected)


def test_a_listener_path_without_notify_rules_is_accepted():
    assert seccomp.compile_filter(spec(listenerPath="/run/agent.sock")) == \
        seccomp.compile_filter(spec())


def test_process_state_follows_the_runtime_spec():
    state = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 7,
             "bundle": "/b", "rootfs": "/b/rootfs", "created": "t", "owner": ""}
    assert seccomp.process_state({"listenerMetadata": "meta"}, 7, state) == {
        "ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": 7, "metadata": "meta",
        "state": {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 7,
                  "bundle": "/b"}}
    assert "metadata" not in seccomp.process_state({}, 7, state)


def test_flags_map_to_seccomp_bits():
    assert (
        seccomp.check_flags(
            [
                "SECCOMP_FILTER_FLAG_TSYNC",
                "SECCOMP_FILTER_FLAG_LOG",
                "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            ]
        )
        == 7
    )
    assert seccomp.check_flags(["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]) == 32
    assert seccomp.check_flags(None) == 0
