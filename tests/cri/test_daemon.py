"""`pallet daemon` as a kubelet or crictl meets it: a real process on a unix socket,
answering Version/Status/RuntimeConfig, mapping bad input to the right status codes,
surviving garbage, and cleaning up on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time

import grpc
import pytest
from cri_api.v1 import api_pb2 as pb

from tests.cri.conftest import Daemon, pallet_cli


def code_of(call, *args, **kw) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kw)
    return info.value.code(), info.value.details()


def test_version_names_pallet_and_cri_v1(daemon: Daemon) -> None:
    v = daemon.runtime.Version(pb.VersionRequest(version="v1"))
    assert v.runtime_name == "pallet"
    assert v.runtime_api_version == "v1"
    assert v.runtime_version


def test_status_reports_runtime_ready_and_handlers(daemon: Daemon) -> None:
    st = daemon.runtime.Status(pb.StatusRequest(verbose=True))
    cond = {c.type: c for c in st.status.conditions}
    assert cond["RuntimeReady"].status is True
    assert "NetworkReady" in cond
    if not cond["NetworkReady"].status:
        assert cond["NetworkReady"].reason == "NetworkPluginNotReady"
        assert "/etc/cni/net.d" in cond["NetworkReady"].message
    names = [h.name for h in st.runtime_handlers]
    assert names[:2] == ["", "pallet"]  # the default first, also under the empty name
    if os.access("/usr/sbin/runc", os.X_OK):
        assert "runc" in names
    assert "runsc" in names or not os.access("/usr/bin/runsc", os.X_OK)
    config = json.loads(st.info["config"])
    assert config["socket"]["path"] == daemon.socket
    assert st.info["streamServer"].startswith("http://127.0.0.1:")


def test_runtime_config_reports_cgroupfs(daemon: Daemon) -> None:
    r = daemon.runtime.RuntimeConfig(pb.RuntimeConfigRequest())
    assert r.linux.cgroup_driver == pb.CgroupDriver.CGROUPFS


def test_update_runtime_config_keeps_pod_cidr(daemon: Daemon) -> None:
    req = pb.UpdateRuntimeConfigRequest(runtime_config=pb.RuntimeConfig(
        network_config=pb.NetworkConfig(pod_cidr="10.88.0.0/16,fd00:88::/64")))
    daemon.runtime.UpdateRuntimeConfig(req)
    assert (daemon.dir / "run" / "pod-cidr").read_text().strip() == "10.88.0.0/16,fd00:88::/64"
    st = daemon.runtime.Status(pb.StatusRequest(verbose=True))
    assert st.info["podCIDR"] == "10.88.0.0/16,fd00:88::/64"


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "not-a-cidr", "10.0.0.0/8,;rm -rf /"])
def test_update_runtime_config_rejects_bad_cidr(daemon: Daemon, cidr: str) -> None:
    req = pb.UpdateRuntimeConfigRequest(runtime_config=pb.RuntimeConfig(
        network_config=pb.NetworkConfig(pod_cidr=cidr)))
    code, details = code_of(daemon.runtime.UpdateRuntimeConfig, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "pod_cidr" in details


def test_pod_rpcs_are_served_and_checkpoint_is_not(daemon: Daemon) -> None:
    # The engine has landed (tests/cri/test_pods.py drives it); an empty config is refused.
    code, details = code_of(daemon.runtime.RunPodSandbox, pb.RunPodSandboxRequest())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "metadata" in details
    assert daemon.runtime.ListContainers(pb.ListContainersRequest()).containers == []
    code, details = code_of(daemon.runtime.CheckpointContainer, pb.CheckpointContainerRequest())
    assert code == grpc.StatusCode.UNIMPLEMENTED


def test_bad_input_gets_status_codes_and_the_daemon_survives(daemon: Daemon) -> None:
    cases = [
        (daemon.images.PullImage, pb.PullImageRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (daemon.images.PullImage, pb.PullImageRequest(image=pb.ImageSpec(image="bad ref!")),
         grpc.StatusCode.INVALID_ARGUMENT),
        (daemon.images.ImageStatus, pb.ImageStatusRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (daemon.images.RemoveImage, pb.RemoveImageRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (daemon.runtime.Exec, pb.ExecRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (daemon.runtime.Exec, pb.ExecRequest(container_id="local", stdout=True),
         grpc.StatusCode.INVALID_ARGUMENT),
        (daemon.runtime.Exec, pb.ExecRequest(container_id="local", cmd=["sh"]),
         grpc.StatusCode.INVALID_ARGUMENT),
        (daemon.runtime.Exec, pb.ExecRequest(container_id="local", cmd=["sh"], tty=True,
                                             stdout=True, stderr=True),
         grpc.StatusCode.INVALID_ARGUMENT),
        (daemon.runtime.Exec, pb.ExecRequest(container_id="nope", cmd=["sh"], stdout=True),
         grpc.StatusCode.NOT_FOUND),
        (daemon.runtime.Attach, pb.AttachRequest(container_id="nope", stdout=True),
         grpc.StatusCode.NOT_FOUND),
        (daemon.runtime.PortForward, pb.PortForwardRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (daemon.runtime.PortForward, pb.PortForwardRequest(pod_sandbox_id="local-pod",
                                                           port=[70000]),
         grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for call, req, want in cases:
        code, details = code_of(call, req)
        assert code == want, (req, details)
        assert details
    assert daemon.runtime.Version(pb.VersionRequest()).runtime_name == "pallet"


def test_garbage_on_the_wire_does_not_crash_the_daemon(daemon: Daemon) -> None:
    # A request body that is not the protobuf the method expects.
    raw = daemon.channel.unary_unary("/runtime.v1.ImageService/ImageStatus")
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff\xff\xff\xff\x0f", timeout=5)
    assert info.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    # An unknown method.
    unknown = daemon.channel.unary_unary("/runtime.v1.RuntimeService/NoSuchThing")
    with pytest.raises(grpc.RpcError) as info:
        unknown(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # Not HTTP/2 at all.
    for junk in (b"GET / HTTP/1.1\r\n\r\n", os.urandom(4096), b""):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(daemon.socket)
            s.sendall(junk)
    assert daemon.alive()
    assert daemon.runtime.Version(pb.VersionRequest()).runtime_name == "pallet"


def test_socket_is_root_only_0660(daemon: Daemon) -> None:
    st = os.stat(daemon.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_uid == 0


def test_stale_socket_is_replaced_and_live_one_refused(daemon_factory) -> None:
    first = daemon_factory()
    # A second daemon on the same socket must refuse, not steal it.
    proc = subprocess.run([pallet_cli(), "daemon", "--socket", first.socket, "--root",
                           str(first.dir / "root2"), "--state-dir", str(first.dir / "run2"),
                           "--config", str(first.dir / "pallet.toml")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "another daemon is listening" in proc.stderr
    assert first.runtime.Version(pb.VersionRequest()).runtime_name == "pallet"
    # SIGKILL leaves the socket file behind; the next daemon removes it as stale.
    first.stop(signal.SIGKILL)
    assert os.path.exists(first.socket)
    again = Daemon_on(first)
    assert again.runtime.Version(pb.VersionRequest()).runtime_name == "pallet"
    assert again.stop() == 0


def Daemon_on(old: Daemon) -> Daemon:  # noqa: N802 - reads like a constructor
    """A new daemon on an old daemon's socket path and root."""
    from tests.cri.conftest import Daemon as D

    log = old.dir / "daemon2.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([pallet_cli(), "daemon", "--socket", old.socket, "--root",
                                 old.root, "--state-dir", str(old.dir / "run"), "--config",
                                 str(old.dir / "pallet.toml")], stdout=out,
                                stderr=subprocess.STDOUT)
    d = D(old.dir, old.socket, old.root, proc, log)
    grpc.channel_ready_future(d.channel).result(timeout=20)
    return d


def test_sigterm_and_sigint_stop_cleanly(daemon_factory) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        d = daemon_factory()
        children = _children(d.proc.pid)
        assert len(children) == 1, "expected exactly the spawner as a child"
        t = time.monotonic()
        assert d.stop(sig) == 0, d.output()
        assert time.monotonic() - t < 10
        assert not os.path.exists(d.socket), "socket left behind"
        assert not any(os.path.exists(f"/proc/{c}") and _state(c) != "Z" for c in children), \
            "spawner left running"


def test_bad_config_fails_naming_the_key(tmp_path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[stream]\nport = 'eighty'\n")
    proc = subprocess.run([pallet_cli(), "daemon", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "stream.port" in proc.stderr


def test_help_describes_the_config() -> None:
    out = subprocess.run([pallet_cli(), "daemon", "--help"], capture_output=True, text=True,
                         timeout=30).stdout
    for word in ("--config", "/etc/pallet/pallet.toml", "[socket]", "[runtimes.NAME]",
                 "[registry]", "[cni]", "[stream]", "cgroup_driver", "docs/config.md"):
        assert word in out, word


def test_pallet_cli_does_not_import_grpc() -> None:
    code = ("import sys, pallet.cli; pallet.cli.build_parser(); "
            "print(any(m.startswith(('grpc', 'cri_api')) for m in sys.modules))")
    out = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "False", out.stderr


def _children(pid: int) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
