"""Per-process settings of the container child: names are validated, and each
setting is seen by the process (checked in forked children; needs root only for oom_score_adj)."""

import errno
import os

import pytest

from pallet.errors import SpecError
from pallet.oci.linux import process
from tests.fixtures.forked import result, run_child


def status_field(name: str) -> str:
    with open("/proc/self/status") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith(name + ":"))


def test_personality_names_are_validated():
    assert process.personality_value("LINUX") == 0
    assert process.personality_value("LINUX32") == 8
    with pytest.raises(SpecError) as e:
        process.personality_value("LINUX64")
    assert (
        str(e.value)
        == "linux.personality.domain: unknown domain 'LINUX64' (expected LINUX or LINUX32)"
    )


def test_oom_score_adj_out_of_range_is_a_spec_error():
    with pytest.raises(SpecError, match="process.oomScoreAdj: must be -1000..1000, got 1001"):
        process.set_oom_score_adj(1001)


def test_linux32_makes_uname_report_a_32_bit_machine():
    if os.uname().machine != "x86_64":
        pytest.skip("checked on x86_64")

    def body():
        process.set_personality("LINUX32")
        os.execv("/bin/uname", ["uname", "-m"])

    status, out = run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.strip() == b"i686"


def test_no_new_privs_is_set():
    def body():
        before = status_field("NoNewPrivs")
        process.set_no_new_privs()
        return [before, status_field("NoNewPrivs")]

    assert result(*run_child(body))["ok"] == ["0", "1"]


def test_dumpable_can_be_turned_off_and_on():
    def body():
        process.set_dumpable(False)
        off = os.stat("/proc/self/status").st_uid
        process.set_dumpable(True)
        return [off, os.stat("/proc/self/status").st_uid]

    # A non-dumpable process's /proc files belong to root; that is what keeps
    # the container from opening the runtime's /proc/self/exe.
    assert result(*run_child(body))["ok"] == [0, os.getuid()]


def test_raising_oom_score_adj_works():
    def body():
        process.set_oom_score_adj(500)
        with open("/proc/self/oom_score_adj") as f:
            return int(f.read())

    assert result(*run_child(body))["ok"] == 500


@pytest.mark.root
def test_lowering_oom_score_adj_without_privilege_says_why():
    def body():
        process.set_oom_score_adj(500)
        # An unprivileged process may not go back below its minimum.
        os.setuid(65534)
        process.set_oom_score_adj(-500)

    res = result(*run_child(body))
    assert res["error"] == "SystemFailure"
    assert res["message"].startswith("process.oomScoreAdj: cannot set -500: Permission denied")
    assert "CAP_SYS_RESOURCE" in res["message"]


def _cloexec(fd: int) -> bool:
    return not os.get_inheritable(fd)


def _close_fds_body(force_walk: bool):
    def body():
        fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(6)]
        for fd in fds:
            os.set_inheritable(fd, True)
        keep = {fds[1], fds[4]}
        if force_walk:
            process._cloexec_by_walking(fds[0], keep)
        else:
            process.close_fds_from(fds[0], keep)
        return {fd: _cloexec(fd) for fd in fds} | {
            "keep": sorted(keep),
            "stdio": [_cloexec(i) for i in (0, 1, 2)],
        }

    return body


@pytest.mark.parametrize("force_walk", [False, True], ids=["close_range", "proc-walk"])
def test_close_fds_from_marks_all_but_the_kept_fds_cloexec(force_walk):
    got = result(*run_child(_close_fds_body(force_walk)))["ok"]
    keep = set(got.pop("keep"))
    assert got.pop("stdio") == [False, False, False]
    assert got
    for fd, cloexec in got.items():
        assert cloexec == (int(fd) not in keep), fd


def test_a_kept_fd_survives_execve_and_the_others_do_not():
    def body():
        fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(3)]
        for fd in fds:
            os.set_inheritable(fd, True)
        process.close_fds_from(3, {fds[1]})
        os.execv("/bin/ls", ["ls", "/proc/self/fd"])

    status, out = run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0
    listed = {int(x) for x in out.split()}
    # ls's own directory fd shows up too; the others must be gone.
    assert {0, 1, 2} <= listed
    assert len(listed - {0, 1, 2}) == 2


def test_a_failing_close_range_falls_back_to_walking():
    # A seccomp filter written before close_range(2) existed answers it with its
    # default errno (EPERM here); the fds must still all be marked. A real filter,
    # loaded in the forked child.
    from pallet.oci.linux import seccomp

    bpf = seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["close_range"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}]})

    def body():
        seccomp.install_filter(bpf)
        refused = not process._close_range(1000, 1001)
        return _close_fds_body(force_walk=False)() | {"refused": refused}

    got = result(*run_child(body))["ok"]
    assert got.pop("refused") is True
    keep = set(got.pop("keep"))
    assert got.pop("stdio") == [False, False, False]
    for fd, cloexec in got.items():
        assert cloexec == (int(fd) not in keep), fd
