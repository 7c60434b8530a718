"""`pallet build --ssh` (BuildKit's SSH forwarding): the specs in buildx's syntax (pure),
the agents they name, and the sockets a RUN's `--mount=type=ssh` sees.

An id names an agent socket (the caller's; `--ssh default` alone: $SSH_AUTH_SOCK) or key
files, which an ssh-agent started for the build holds (`ssh-agent -D -a` on a socket in the
build's private tmp dir, keys fed to `ssh-add -`), killed when the build ends, failed or
not. A RUN never gets an agent's own socket: each of its ssh mounts is a socket made for
that RUN with the mount's mode and owner, relayed to the agent by a forwarder process
(ssh_forward.py) that ends with the RUN.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pallet.errors import InvalidArgument

if TYPE_CHECKING:
    import subprocess

DEFAULT_ID = "default"


@dataclass(frozen=True)
class SSHSpec:
    """One --ssh: ID and its agent socket or key files (PATHS), TEXT as given."""

    id: str
    paths: tuple[str, ...]
    text: str


def parse_ssh_specs(specs: list[str], auth_sock: str) -> list[SSHSpec]:
    """--ssh values (`default`, `ID=SOCKET`, `ID=KEY[,KEY...]`) as buildx and BuildKit read
    them: no path (or an empty one) means AUTH_SOCK (the caller's $SSH_AUTH_SOCK), an empty
    id "default". Nothing is looked at on disk here."""
    out: list[SSHSpec] = []
    for text in specs:
        if not text:
            continue
        sid, _, value = text.partition("=")
        sid = sid or DEFAULT_ID
        paths = tuple(value.split(",")) if value else ()
        if "" in paths:
            raise InvalidArgument(f"invalid --ssh {text}: an empty path in the list")
        if not paths:
            if not auth_sock:
                raise InvalidArgument(f"invalid --ssh {text}: no agent socket or key given "
                                      "and SSH_AUTH_SOCK is not set")
            paths = (auth_sock,)
        if any(s.id == sid for s in out):
            raise InvalidArgument(f"invalid --ssh {text}: duplicate id {sid}")
        out.append(SSHSpec(sid, paths, text))
    return out


class SSHAgents:
    """The agents of a build's --ssh SPECS, by id, and the sockets of RUNs' ssh mounts, in
    DIR (made private on first use; the caller removes it). A context manager: entering
    checks every spec and starts the agents key files need; leaving (or a failed enter)
    kills them and removes their sockets."""

    def __init__(self, specs: list[SSHSpec], dir: str):
        self.specs = specs
        self.dir = dir
        self._agents: dict[str, str] = {}  # id -> socket path (a relative one: in DIR)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._n = 0  # sockets made in DIR

    def __enter__(self) -> SSHAgents:
        try:
            for spec in self.specs:
                self._agents[spec.id] = self._agent(spec)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def socket(self, sid: str) -> str | None:
        """The agent socket of id SID (a relative path: in DIR); None: not given."""
        return self._agents.get(sid)

    def close(self) -> None:
        import subprocess

        procs, self._procs = self._procs, []
        for proc in procs:
            proc.terminate()  # ssh-agent removes its socket on SIGTERM
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for f in (proc.stdout, proc.stderr):
                if f is not None:
                    f.close()
        for path in self._agents.values():
            if not os.path.isabs(path):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.dir, path))
        self._agents.clear()

    # -- agents --------------------------------------------------------------------------
    def _agent(self, spec: SSHSpec) -> str:
        modes = []
        for path in spec.paths:
            try:
                modes.append(os.stat(path).st_mode)
            except OSError as e:
                raise InvalidArgument(f"invalid --ssh {spec.text}: {path}: {e.strerror}"
                                      ) from None
        if any(stat.S_ISSOCK(m) for m in modes):
            if len(spec.paths) > 1:
                raise InvalidArgument(f"invalid --ssh {spec.text}: only a single agent socket "
                                      "is allowed, not with other sockets or keys")
            return os.path.abspath(spec.paths[0])
        keys = []
        for path, mode in zip(spec.paths, modes, strict=True):
            if not stat.S_ISREG(mode):
                raise InvalidArgument(f"invalid --ssh {spec.text}: {path} is neither an agent "
                                      "socket nor a key file")
            try:
                with open(path, "rb") as f:
                    keys.append((path, f.read()))
            except OSError as e:
                raise InvalidArgument(f"invalid --ssh {spec.text}: {path}: {e.strerror}"
                                      ) from None
        name = self._start_agent(spec)
        for path, data in keys:
            self._add_key(spec, name, path, data)
        return name

    def _start_agent(self, spec: SSHSpec) -> str:
        """An ssh-agent in the foreground on a new socket in DIR (named relative to it: the
        sun_path limit is 108 bytes); its name once it listens."""
        import subprocess

        name = self._name("agent")
        try:
            proc = subprocess.Popen(["ssh-agent", "-D", "-a", name], cwd=self._dir(),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except FileNotFoundError:
            raise InvalidArgument(f"invalid --ssh {spec.text}: key files need ssh-agent and "
                                  "ssh-add (openssh-client), which are not installed"
                                  ) from None
        self._procs.append(proc)
        assert proc.stdout is not None and proc.stderr is not None
        if not proc.stdout.readline():  # `SSH_AUTH_SOCK=...`, printed once it listens
            proc.wait()
            why = proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise InvalidArgument(f"invalid --ssh {spec.text}: ssh-agent failed: "
                                  f"{why[-1] if why else f'exit {proc.returncode}'}")
        return name

    def _add_key(self, spec: SSHSpec, name: str, path: str, data: bytes) -> None:
        """Key DATA (read from PATH) added to the agent on socket NAME, through stdin: no
        permission check on the file (BuildKit reads it as it is), and no terminal to ask
        a passphrase on."""
        import subprocess

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SSH_AUTH_SOCK": name,
               "SSH_ASKPASS_REQUIRE": "never"}
        try:
            out = subprocess.run(["ssh-add", "-q", "-"], input=data, cwd=self.dir, env=env,
                                 capture_output=True, start_new_session=True, timeout=30)
        except (FileNotFoundError, subprocess.TimeoutExpired) as e:
            raise InvalidArgument(f"invalid --ssh {spec.text}: ssh-add failed: {e}") from None
        if out.returncode != 0:
            err = out.stderr.decode(errors="replace")
            if "passphrase" in err:
                raise InvalidArgument(f"invalid --ssh {spec.text}: key {path} needs a "
                                      "passphrase: add it to an agent (ssh-add) and pass the "
                                      "agent's socket instead")
            why = err.strip().splitlines()
            raise InvalidArgument(f"invalid --ssh {spec.text}: cannot load key {path}: "
                                  f"{why[-1] if why else f'ssh-add exit {out.returncode}'}")

    # -- a RUN's sockets -----------------------------------------------------------------
    @contextlib.contextmanager
    def forward(self, ends: list[tuple[str, int, int, int]]) -> Iterator[list[str]]:
        """For each (agent socket, mode, uid, gid) of ENDS, a new socket in DIR with that
        mode and owner, relayed to the agent by a forwarder process while in the context;
        yields their paths. Leaving stops the forwarder and removes the sockets."""
        import socket
        import subprocess
        import sys

        dfd = os.open(self._dir(), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        listeners: list[socket.socket] = []
        names: list[str] = []
        proc = None
        life = -1
        try:
            for _, mode, uid, gid in ends:
                name = self._name("run")
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listeners.append(sock)
                sock.bind(f"/proc/self/fd/{dfd}/{name}")  # sun_path is short; DIR may not be
                names.append(name)
                os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
                os.chmod(name, mode, dir_fd=dfd)
                sock.listen(16)
            r, life = os.pipe()
            try:
                argv = [sys.executable, "-I", "-S",
                        os.path.join(os.path.dirname(__file__), "ssh_forward.py"), str(r),
                        *(f"{s.fileno()}:{end[0]}"
                          for s, end in zip(listeners, ends, strict=True))]
                proc = subprocess.Popen(argv, cwd=self.dir, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, start_new_session=True,
                                        pass_fds=[r, *(s.fileno() for s in listeners)])
            finally:
                os.close(r)
            for s in listeners:  # the forwarder's now
                s.close()
            yield [os.path.join(self.dir, n) for n in names]
        finally:
            for s in listeners:
                s.close()
            if life >= 0:
                os.close(life)  # the forwarder's EOF: it exits
            if proc is not None:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for n in names:
                with contextlib.suppress(OSError):
                    os.unlink(n, dir_fd=dfd)
            os.close(dfd)

    def _dir(self) -> str:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        return self.dir

    def _name(self, kind: str) -> str:
        self._n += 1
        return f"{kind}-{self._n}.sock"
