"""A compiled filter installed in a real child process: the syscalls it names
fail the way the spec says, before and after execve."""

import errno
import os
import signal

import pytest

from pallet.errors import SystemFailure
from pallet.oci.linux import process, seccomp
from tests.fixtures.forked import result, run_child

pytestmark = pytest.mark.root

LINUX32 = 0x0008


def deny(names, **call) -> bytes:
    return seccomp.compile_filter(
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": names, "action": "SCMP_ACT_ERRNO", **call}],
        }
    )


def test_mkdir_denied_with_eperm(tmp_path):
    bpf = deny(["mkdir", "mkdirat"])

    def body():
        seccomp.install_filter(bpf, [])
        try:
            os.mkdir(tmp_path / "x")
        except OSError as e:
            return e.errno
        return "created"

    assert result(*run_child(body)) == {"ok": errno.EPERM}
    assert not (tmp_path / "x").exists()


def test_errno_ret_chooses_the_error_and_flags_are_accepted(tmp_path):
    bpf = deny(["mkdir", "mkdirat"], errnoRet=errno.EROFS)

    def body():
        seccomp.install_filter(
            bpf,
            [
                "SECCOMP_FILTER_FLAG_TSYNC",
                "SECCOMP_FILTER_FLAG_LOG",
                "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            ],
        )
        try:
            os.mkdir(tmp_path / "x")
        except OSError as e:
            return e.errno
        return "created"

    assert result(*run_child(body)) == {"ok": errno.EROFS}


def test_the_filter_survives_execve(tmp_path):
    bpf = deny(["mkdir", "mkdirat"])
    target = tmp_path / "made-by-mkdir"

    def body():
        seccomp.install_filter(bpf, [])
        os.dup2(1, 2)
        os.execv("/bin/mkdir", ["mkdir", str(target)])

    status, out = run_child(body)
    assert os.waitstatus_to_exitcode(status) == 1
    assert b"Operation not permitted" in out
    assert not target.exists()


def test_argument_filter_blocks_only_the_matching_call():
    # Like Docker's profile: personality(0xffffffff) (a query) is fine,
    # switching to LINUX32 is not.
    bpf = deny(["personality"], args=[{"index": 0, "value": LINUX32, "op": "SCMP_CMP_EQ"}])

    def body():
        seccomp.install_filter(bpf, [])
        query = process._personality(0xFFFFFFFF)
        try:
            process.set_personality("LINUX32")
        except SystemFailure as e:
            return [query, str(e)]
        return [query, "switched"]

    query, message = result(*run_child(body))["ok"]
    assert query >= 0
    assert message == "setting personality LINUX32: Operation not permitted"


def test_kill_process_kills_the_child_with_sigsys(tmp_path):
    bpf = seccomp.compile_filter(
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}],
        }
    )

    def body():
        seccomp.install_filter(bpf, [])
        os.mkdir(tmp_path / "x")

    status, out = run_child(body)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS
    assert out == b""


def test_a_truncated_program_is_refused_in_the_child():
    def body():
        seccomp.install_filter(b"\0" * 12, [])

    assert result(*run_child(body)) == {
        "error": "SystemFailure",
        "message": "seccomp: BPF program of 12 bytes is not a whole number of instructions",
    }


def test_a_garbage_program_is_reported_by_the_kernel():
    def body():
        # BPF_RET with an invalid class: the kernel's checker rejects it.
        seccomp.install_filter(b"\xff\xff" + b"\0" * 6, [])

    res = result(*run_child(body))
    assert res["error"] == "SystemFailure"
    assert res["message"] == "seccomp: installing the filter failed: Invalid argument"


def test_a_notify_filter_comes_with_a_close_on_exec_listener():
    bpf = seccomp.compile_filter(
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/unused",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}],
        }
    )

    def body():
        import fcntl

        fd = seccomp.install_filter(bpf, ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"], listener=True)
        return [os.readlink(f"/proc/self/fd/{fd}"),
                bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)]

    assert result(*run_child(body)) == {"ok": ["anon_inode:seccomp notify", True]}


def test_supported_flags_are_probed_from_the_kernel():
    found = seccomp.supported_flags()
    assert set(found) <= set(seccomp.FILTER_FLAGS)
    assert "SECCOMP_FILTER_FLAG_TSYNC" in found  # Linux 3.17
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    if (major, minor) >= (5, 19):
        assert "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" in found
