"""`pallet compose` secrets, configs, extends and include on real containers, as a user
sees them: the files inside the container (content, mode, owner, read-only), docker
compose's errors for a missing file, an unset variable or an external secret with nothing
left behind, the project's state gone after `down`; create / wait / cp.

Project names start with c2-; any network uses a 10.224.0.0/16 subnet."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
import uuid

import pytest

from tests.engine.conftest import PALLET, leftovers

pytestmark = pytest.mark.root


@pytest.fixture
def project(tmp_path, pallet):
    """A project dir and the `pallet compose` runner for it; whatever a failing test left is
    taken down."""
    name = f"c2-{uuid.uuid4().hex[:6]}"
    d = tmp_path / "proj"
    d.mkdir()

    def compose(*args: str, **kw) -> subprocess.CompletedProcess:
        return pallet("compose", "-f", str(d / "compose.yaml"), "-p", name, *args, **kw)

    compose.dir, compose.name = d, name
    compose.subnet = f"10.224.{random.randint(0, 254)}.0/24"
    compose.state = os.path.join(pallet.root, "compose", name)
    yield compose
    compose("down", "-v", "--remove-orphans")


def _traces(pallet, project) -> list[str]:
    """What the project left: containers, networks, volumes, its state dir."""
    out = [f"container {c}" for c in pallet("ps", "-a", "--format", "{{.Names}}").stdout.split()
           if c.startswith(project.name)]
    out += [f"network {n}" for n in pallet("network", "ls", "--format", "json").stdout.splitlines()
            if project.name in n]
    out += [f"volume {v}" for v in pallet("volume", "ls", "-q").stdout.split() if project.name in v]
    if os.path.exists(os.path.dirname(project.state)):
        out.append(f"state {os.path.dirname(project.state)}")
    return out


SHOW = 'for f in $$FILES; do echo "$$f $$(stat -c "%a %u:%g" $$f) $$(cat $$f)"; done'


def test_secrets_and_configs_are_read_only_files_with_their_mode_and_owner(project, pallet):
    (project.dir / "certs").mkdir()
    (project.dir / "certs" / "server.crt").write_text("CERT")
    (project.dir / "app.conf").write_text("conf-from-file")
    (project.dir / ".env").write_text("TOKEN=s3cret\nGREETING=hello\n")
    (project.dir / "compose.yaml").write_text(f"""
services:
  app:
    image: busybox
    network_mode: none
    user: "1000"
    environment:
      FILES: >-
        /run/secrets/token /run/secrets/server.crt /etc/token /app.conf /etc/greeting
        /motd
    command: ["sh", "-c", '{SHOW}; echo x > /run/secrets/token || echo read-only']
    secrets:
      - token
      - source: cert
        target: server.crt
        mode: 0400
      - source: token
        target: /etc/token
        uid: "1000"
        gid: "1001"
        mode: 0400
    configs:
      - source: conf
        target: app.conf
      - source: greeting
        target: /etc/greeting
        mode: 0440
      - motd
secrets:
  token: {{environment: TOKEN}}
  cert: {{file: ./certs/server.crt}}
configs:
  conf: {{file: ./app.conf}}
  greeting: {{environment: GREETING}}
  motd:
    content: "${{GREETING}} from ${{PLACE:-content}}"
""")
    up = project("up", timeout=60)
    assert up.returncode == 0, up.stderr
    lines = [ln.split("| ", 1)[1] for ln in up.stdout.splitlines() if ln.startswith("app-1  | ")]
    assert lines == [
        "/run/secrets/token 444 0:0 s3cret",
        # A file-backed one is the user's file, bind-mounted: its own mode and owner (docker
        # compose ignores uid/gid/mode for those, with its warning).
        "/run/secrets/server.crt 644 0:0 CERT",
        "/etc/token 400 1000:1001 s3cret",
        "/app.conf 644 0:0 conf-from-file",
        "/etc/greeting 440 0:0 hello",
        "/motd 444 0:0 hello from content",
        "read-only",
    ], up.stdout
    assert "WARN[0000] secrets `uid`, `gid` and `mode` are not supported, they will be " \
        "ignored" in up.stderr
    # The written ones live under the project's state, out of other users' reach.
    assert os.stat(project.state).st_mode & 0o777 == 0o700
    assert "s3cret" not in json.dumps(json.loads(pallet("inspect", f"{project.name}-app-1").stdout))

    down = project("down")
    assert down.returncode == 0, down.stderr
    assert _traces(pallet, project) == []
    assert (project.dir / "certs" / "server.crt").read_text() == "CERT"  # the user's file stays


@pytest.mark.parametrize("secret, env, message", [
    ("{file: ./missing.txt}", {},
     'Error response from daemon: invalid mount config for type "bind": bind source path '
     "does not exist: {dir}/missing.txt"),
    ("{environment: C2_UNSET_TOKEN}", {},
     'environment variable "C2_UNSET_TOKEN" required by file "{name}_token" is not set'),
    ("{external: true}", {}, "unsupported external secret token"),
])
def test_a_secret_that_cannot_be_mounted_fails_up_and_leaves_nothing(project, pallet, secret,
                                                                      env, message):
    (project.dir / "compose.yaml").write_text(f"""
services:
  app:
    image: busybox
    command: "true"
    secrets: [token]
    networks: [net]
networks:
  net: {{ipam: {{config: [{{subnet: "{project.subnet}"}}]}}}}
secrets:
  token: {secret}
""")
    assert project("config", "-q").returncode == 0  # a valid model: up is what fails
    out = project("up", "-d")
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == message.format(dir=project.dir, name=project.name)
    assert _traces(pallet, project) == []


def test_a_failed_up_removes_the_files_it_wrote(project, pallet):
    (project.dir / "compose.yaml").write_text("""
services:
  first:
    image: busybox
    command: sleep 300
    stop_signal: SIGKILL
    network_mode: none
    configs: [motd]
  second:
    image: c2-no-such-image:1
    pull_policy: never
    depends_on: [first]
    network_mode: none
configs:
  motd: {content: hi}
""")
    ids = pallet("ps", "-aq", "--no-trunc").stdout.split()
    out = project("up", "-d")
    assert out.returncode == 1 and "c2-no-such-image:1" in out.stderr.splitlines()[-1]
    assert _traces(pallet, project) == []
    assert leftovers(pallet, ids) == []


def test_extends_and_include_on_real_containers(project, pallet):
    (project.dir / "common" / "site").mkdir(parents=True)
    (project.dir / "common" / "site" / "index.html").write_text("from-common\n")
    (project.dir / "common" / "base.yaml").write_text("""
services:
  base:
    image: busybox
    network_mode: none
    volumes: ["./site:/site:ro"]
    environment: {LEVEL: base, KEEP: kept}
    dns: [10.224.0.53]
""")
    (project.dir / "db").mkdir()
    (project.dir / "db" / ".env").write_text("DB_MSG=db-env\n")
    (project.dir / "db" / "compose.yaml").write_text("""
services:
  db:
    image: busybox
    network_mode: none
    command: ["sh", "-c", "echo $${MSG}; cat /conf/db.conf"]
    environment: {MSG: "${DB_MSG}"}
    volumes: ["./conf:/conf"]
""")
    (project.dir / "db" / "conf").mkdir()
    (project.dir / "db" / "conf" / "db.conf").write_text("db-conf\n")
    (project.dir / "compose.yaml").write_text("""
include: [db/compose.yaml]
services:
  web:
    extends: {file: common/base.yaml, service: base}
    environment: {LEVEL: web}
    dns: [10.224.0.54]
    depends_on:
      db: {condition: service_completed_successfully}
    command: ["sh", "-c", "cat /site/index.html; echo $$LEVEL $$KEEP; grep nameserver /etc/resolv.conf"]
""")
    up = project("up", timeout=60)
    assert up.returncode == 0, up.stderr

    def lines(prefix: str) -> list[str]:
        return [ln.split("| ", 1)[1] for ln in up.stdout.splitlines()
                if ln.startswith(prefix + "-1 ") and "| " in ln]

    # The included service: its .env, its relative paths against its own directory.
    assert lines("db") == ["db-env", "db-conf"], up.stdout
    # The extended one: the base's bind path against common/, mappings merged, dns appended.
    assert lines("web") == ["from-common", "web kept", "nameserver 10.224.0.53",
                            "nameserver 10.224.0.54"], up.stdout
    assert project("down").returncode == 0
    assert _traces(pallet, project) == []


def test_create_then_cp_in_wait_and_cp_out(project, pallet, tmp_path):
    (project.dir / "compose.yaml").write_text("""
services:
  job:
    image: busybox
    network_mode: none
    command: ["sh", "-c", "while [ ! -f /tmp/go ]; do sleep 0.1; done; tr a-z A-Z < /tmp/go > /tmp/out; sleep 1; exit 3"]
  idle:
    image: busybox
    network_mode: none
    command: sleep 300
    stop_signal: SIGKILL
""")
    n = project.name
    created = project("create")
    assert created.returncode == 0, created.stderr
    assert created.stderr.count(f" Container {n}-job-1  Created") == 1, created.stderr
    states = pallet("ps", "-a", "--format", "{{.Names}} {{.State}}").stdout.split("\n")
    assert sorted(s for s in states if s) == [f"{n}-idle-1 created", f"{n}-job-1 created"]
    assert project("start").returncode == 0

    (tmp_path / "go").write_text("hello\n")
    cp = project("cp", str(tmp_path / "go"), "job:/tmp/go")
    assert cp.returncode == 0, cp.stderr
    waited = project("wait", "job", timeout=30)
    rid = pallet("inspect", "-f", "{{.Id}}", f"{n}-job-1").stdout.strip()
    assert (waited.returncode, waited.stdout) == (
        3, f'container "{rid}" exited with status code 3\n'), waited.stderr
    out = project("cp", "job:/tmp/out", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out").read_text() == "HELLO\n"
    assert project("cp", "job:/tmp/out", "nope:/x").returncode == 1
    assert project("cp", "--index", "2", "job:/tmp/out", str(tmp_path)).returncode == 1

    # --down-project: the project goes when the first container stops.
    assert project("up", "-d", "idle").returncode == 0
    waiting = subprocess.Popen(
        [PALLET, "--root", pallet.root, "compose", "-f", str(project.dir / "compose.yaml"),
         "-p", n, "wait", "--down-project", "idle"],
        env=pallet.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    assert waiting.poll() is None  # still waiting
    assert pallet("kill", f"{n}-idle-1").returncode == 0
    stdout, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 137, stderr
    assert stdout.endswith("exited with status code 137\n")
    assert f" Container {n}-job-1  Removed" in stderr
    assert _traces(pallet, project) == [], stderr


def test_build_secrets_reach_run_mounts_and_not_the_image(project, pallet):
    """build.secrets: BuildKit's `RUN --mount=type=secret`, the id being the reference's
    target or its source; the value never lands in the image."""
    (project.dir / "npmrc").write_text("token-from-file")
    (project.dir / ".env").write_text("API_KEY=key-from-env\n")
    (project.dir / "Dockerfile").write_text(
        "FROM busybox\n"
        "RUN --mount=type=secret,id=npmrc --mount=type=secret,id=api,env=API "
        "sh -c 'echo \"$(cat /run/secrets/npmrc) $API\" | wc -c > /lens'\n")
    (project.dir / "compose.yaml").write_text(f"""
services:
  app:
    image: {project.name}-app:1
    network_mode: none
    build:
      context: .
      network: none
      secrets:
        - npmrc
        - source: key
          target: api
    command: ["cat", "/lens"]
secrets:
  npmrc:
    file: ./npmrc
  key:
    environment: API_KEY
""")
    out = project("build")
    assert out.returncode == 0, out.stderr
    run = project("run", "--rm", "app")
    assert run.stdout.strip() == str(len("token-from-file key-from-env\n")), run.stderr
    leaked = pallet("run", "--rm", "--network", "none", f"{project.name}-app:1", "sh", "-c",
                    "ls -A /run/secrets 2>/dev/null; grep -rl -e token-from-file -e "
                    "key-from-env /bin /etc /run /lens 2>/dev/null; true", check=True).stdout
    assert leaked == ""
    history = pallet("history", "--no-trunc", f"{project.name}-app:1", check=True).stdout
    assert "token-from-file" not in history and "key-from-env" not in history
    (project.dir / "compose.yaml").write_text(
        (project.dir / "compose.yaml").read_text().replace("- npmrc\n", "- nosuch\n"))
    bad = project("build")
    assert bad.returncode == 15
    assert "refers to undefined build secret nosuch" in bad.stderr
