"""Fixtures for the CRI tests: `pallet daemon` as a real process on a temp socket and root,
and a gRPC client built on the same stubs the daemon serves.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
LOCAL_BACKEND = "tests.cri.local_backend:LocalProcessBackend"


@dataclass
class Daemon:
    dir: Path
    socket: str
    root: str
    proc: subprocess.Popen[bytes]
    log: Path
    channel: grpc.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.images = api_pb2_grpc.ImageServiceStub(self.channel)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def pallet_cli() -> str:
    return shutil.which("pallet", path=os.path.dirname(sys.executable)) or "pallet"


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def start_daemon(config_text: str = "", extra_args: list[str] | None = None,
                 timeout: float = 20) -> Daemon:
    # Short paths: a unix socket path must stay under 108 bytes.
    d = Path(tempfile.mkdtemp(prefix="pcri-"))
    sock, root = str(d / "cri.sock"), str(d / "root")
    cfg = write_config(d / "pallet.toml", config_text)
    log = d / "daemon.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PALLET_CONFIG": ""}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [pallet_cli(), "daemon", "--config", str(cfg), "--socket", sock,
             "--root", root, "--state-dir", str(d / "run"), *(extra_args or [])],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, env=env)
    daemon = Daemon(d, sock, root, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pallet daemon exited {proc.returncode}: {daemon.output()}")
        if os.path.exists(sock):
            try:
                grpc.channel_ready_future(daemon.channel).result(timeout=2)
                return daemon
            except grpc.FutureTimeoutError:
                pass
        time.sleep(0.05)
    daemon.stop(signal.SIGKILL)
    raise RuntimeError(f"pallet daemon did not listen in {timeout} s: {daemon.output()}")


@pytest.fixture
def daemon_factory() -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def make(config_text: str = "", extra_args: list[str] | None = None) -> Daemon:
        d = start_daemon(config_text, extra_args)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop(signal.SIGKILL)
        shutil.rmtree(d.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    """One daemon per test module, with the local-process stream backend."""
    d = start_daemon(f'[stream]\nbackend = "{LOCAL_BACKEND}"\n')
    yield d
    code = d.stop()
    out = d.output()
    shutil.rmtree(d.dir, ignore_errors=True)
    assert code == 0, f"daemon exited {code}: {out}"
    assert "ERROR pallet" not in out, out  # no RPC hit an unexpected internal error
