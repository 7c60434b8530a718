"""`pallet compose` on real containers as a docker compose user runs it: a web server and
a client that finds it by service name on the project network, a shared named volume, .env
interpolation, up -d / ps / logs / exec / port / down -v leaving the host clean, recreate on
a changed config, a failed up undone, bad files' one-line errors, images built from a
service's build section, and the smaller commands (ls, top, images, pause, kill...).

Project networks use 10.220.0.0/16 subnets only (set with ipam in every file)."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest

from tests.engine.conftest import leftovers

pytestmark = pytest.mark.root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WEB_CLIENT = """
services:
  web:
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo it-works > /www/index.html && echo $$GREETING > /data/greeting && echo web is up && exec httpd -f -p 8080 -h /www"]
    environment:
      GREETING: ${GREETING:-hello}
    ports: ["${HOST_PORT}:8080"]
    volumes: [shared:/data]
    networks:
      back:
        aliases: [www]
  client:
    image: busybox
    depends_on: [web]
    command: ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://web:8080/ && break; sleep 0.3; done; wget -qO- http://www:8080/; cat /data/greeting"]
    volumes: [shared:/data]
    networks: [back]
networks:
  back:
    ipam:
      config: [{subnet: "SUBNET"}]
volumes:
  shared:
"""


@pytest.fixture
def project(tmp_path, pallet):
    """A project dir with a compose file and the `pallet compose` runner for it; whatever a
    failing test left is taken down."""
    name = f"cb{uuid.uuid4().hex[:6]}"
    subnet = f"10.220.{random.randint(0, 254)}.0/24"
    d = tmp_path / "proj"
    d.mkdir()

    def compose(*args: str, **kw) -> subprocess.CompletedProcess:
        return pallet("compose", "-f", str(d / "compose.yaml"), "-p", name, *args, **kw)

    compose.dir, compose.name, compose.subnet = d, name, subnet
    yield compose
    compose("down", "-v", "--remove-orphans")


def _host_traces(pallet, name: str) -> list[str]:
    out = [f"container {c}" for c in pallet("ps", "-a", "--format", "{{.Names}}").stdout.split()
           if c.startswith(name)]
    out += [f"network {n}" for n in pallet("network", "ls", "--format", "json").stdout.splitlines()
            if name in n]
    out += [f"volume {v}" for v in pallet("volume", "ls", "-q").stdout.split() if name in v]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    out += [f"iptables {r}" for r in rules.splitlines() if name in r]
    return out


def _wait_exited(pallet, container: str, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = pallet("inspect", "-f", "{{.State.Status}}", container).stdout.strip()
        if state == "exited":
            return
        time.sleep(0.2)
    raise AssertionError(f"{container} still {state}")


def test_web_and_client_by_service_name_with_a_shared_volume_then_down_leaves_nothing(
        project, pallet):
    port = _free_port()
    (project.dir / "compose.yaml").write_text(WEB_CLIENT.replace("SUBNET", project.subnet))
    (project.dir / ".env").write_text(f"GREETING=bonjour\nHOST_PORT={port}\n")
    out = project("up", "-d")
    assert out.returncode == 0, out.stderr
    n = project.name
    for line in (f" Network {n}_back  Created", f" Volume {n}_shared  Created",
                 f" Container {n}-web-1  Started", f" Container {n}-client-1  Started"):
        assert line in out.stderr
    # docker compose's order: web before the client that depends on it.
    assert out.stderr.index(f"{n}-web-1  Started") < out.stderr.index(f"{n}-client-1  Creating")
    _wait_exited(pallet, f"{n}-client-1")

    logs = project("logs", "client").stdout
    assert logs == "client-1  | it-works\nclient-1  | it-works\nclient-1  | bonjour\n", logs
    assert "web-1     | web is up\n" in project("logs").stdout  # names padded alike
    # Published on the host.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        assert r.read() == b"it-works\n"
    assert project("port", "web", "8080").stdout == f"0.0.0.0:{port}\n"

    rows = [json.loads(x) for x in project("ps", "-a", "--format", "json").stdout.splitlines()]
    assert [(r["Name"], r["Service"], r["State"]) for r in rows] == [
        (f"{n}-client-1", "client", "exited"), (f"{n}-web-1", "web", "running")]
    assert [r["Name"] for r in map(json.loads, project("ps", "--format", "json").stdout.splitlines())] == [f"{n}-web-1"]
    labels = json.loads(pallet("inspect", "-f", "{{json .Config.Labels}}", f"{n}-web-1").stdout)
    assert labels["com.docker.compose.project"] == n
    assert labels["com.docker.compose.service"] == "web"
    assert labels["com.docker.compose.container-number"] == "1"
    assert labels["com.docker.compose.oneoff"] == "False"
    assert len(labels["com.docker.compose.config-hash"]) == 64

    ex = project("exec", "-T", "web", "sh", "-c", "cat /data/greeting; echo $GREETING")
    assert (ex.returncode, ex.stdout) == (0, "bonjour\nbonjour\n"), ex.stderr
    assert project("exec", "-T", "web", "sh", "-c", "exit 3").returncode == 3
    assert n in pallet("compose", "ls").stdout

    ids = pallet("ps", "-aq", "--no-trunc").stdout.split()
    down = project("down", "-v")
    assert down.returncode == 0, down.stderr
    assert f" Network {n}_back  Removed" in down.stderr
    assert f" Volume {n}_shared  Removed" in down.stderr
    assert _host_traces(pallet, n) == []
    assert leftovers(pallet, ids) == []


def test_up_again_keeps_unchanged_containers_and_recreates_changed_ones(project, pallet):
    text = """
services:
  app:
    image: busybox
    command: sleep 300
    stop_signal: SIGKILL
    environment: {VERSION: "${VERSION:-1}"}
    networks: [net]
  side:
    image: busybox
    command: sleep 300
    stop_signal: SIGKILL
    networks: [net]
networks:
  net: {ipam: {config: [{subnet: "SUBNET"}]}}
""".replace("SUBNET", project.subnet)
    (project.dir / "compose.yaml").write_text(text)
    assert project("up", "-d").returncode == 0

    def ids() -> dict[str, str]:
        return {r["Service"]: r["ID"] for r in
                map(json.loads, project("ps", "--format", "json").stdout.splitlines())}

    first = ids()
    again = project("up", "-d")
    assert f" Container {project.name}-app-1  Running" in again.stderr
    assert ids() == first
    (project.dir / ".env").write_text("VERSION=2\n")
    changed = project("up", "-d")
    assert f" Container {project.name}-app-1  Recreate" in changed.stderr, changed.stderr
    now = ids()
    assert now["app"] != first["app"] and now["side"] == first["side"]
    assert project("exec", "-T", "app", "sh", "-c", "echo $VERSION").stdout == "2\n"
    assert project("up", "-d", "--force-recreate", "side").returncode == 0
    assert ids()["side"] != first["side"]
    # stop / start / restart / rm -s by service.
    assert project("stop", "side").returncode == 0
    assert set(ids()) == {"app"}
    assert project("start").returncode == 0 and set(ids()) == {"app", "side"}
    assert project("rm", "-s", "-f", "side").returncode == 0
    assert set(ids()) == {"app"}


def test_a_failed_up_removes_what_it_made(project, pallet):
    (project.dir / "compose.yaml").write_text(f"""
services:
  first:
    image: busybox
    command: sleep 300
    volumes: [data:/data]
    networks: [net]
  second:
    image: cmp-no-such-image:1
    pull_policy: never
    depends_on: [first]
    networks: [net]
networks:
  net: {{ipam: {{config: [{{subnet: "{project.subnet}"}}]}}}}
volumes:
  data:
""")
    ids_before = pallet("ps", "-aq", "--no-trunc").stdout.split()
    out = project("up", "-d")
    assert out.returncode == 1
    assert "cmp-no-such-image:1" in out.stderr.splitlines()[-1]
    assert _host_traces(pallet, project.name) == []
    assert pallet("ps", "-aq", "--no-trunc").stdout.split() == ids_before


def test_up_attached_prefixes_each_service_and_ends_when_they_exit(project, pallet):
    (project.dir / "compose.yaml").write_text(f"""
services:
  one:
    image: busybox
    command: ["sh", "-c", "echo first line; echo second line"]
    networks: [net]
  two:
    image: busybox
    command: ["sh", "-c", "sleep 0.3; echo from two >&2; exit 4"]
    networks: [net]
networks:
  net: {{ipam: {{config: [{{subnet: "{project.subnet}"}}]}}}}
""")
    out = project("up", timeout=60)
    assert out.returncode == 0, out.stderr
    assert "one-1  | first line\none-1  | second line\n" in out.stdout
    assert "two-1  | from two\n" in out.stderr
    assert "one-1 exited with code 0" in out.stdout
    assert "two-1 exited with code 4" in out.stdout
    assert "\033[" not in out.stdout  # no colours into a pipe


def test_run_a_one_off_command_with_its_dependencies_up(project, pallet):
    (project.dir / "compose.yaml").write_text(f"""
services:
  db:
    image: busybox
    command: ["sh", "-c", "echo ok > /data/ready; exec sleep 300"]
    stop_signal: SIGKILL
    volumes: [data:/data]
    networks: [net]
  tool:
    image: busybox
    depends_on: [db]
    volumes: [data:/data]
    networks: [net]
networks:
  net: {{ipam: {{config: [{{subnet: "{project.subnet}"}}]}}}}
volumes:
  data:
""")
    out = project("run", "--rm", "-T", "-e", "X=42", "tool", "sh", "-c",
                  "sleep 0.5; cat /data/ready; echo $X; ping -c1 -W2 db >/dev/null && echo reach")
    assert (out.returncode, out.stdout) == (0, "ok\n42\nreach\n"), out.stderr
    names = pallet("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert names == [f"{project.name}-db-1"]  # the one-off container is gone (--rm)


def test_config_prints_the_interpolated_model_and_bad_files_exit_15(project, pallet):
    (project.dir / "compose.yaml").write_text("services:\n  web:\n    image: busybox:${TAG:-9}\n"
                                              "    ports: ['80']\n")
    out = project("config")
    assert out.returncode == 0
    assert project("exec", "web", "true").returncode == 1  # not running
    assert f"name: {project.name}\nservices:\n  web:\n    image: busybox:9\n" in out.stdout
    (project.dir / "compose.yaml").write_text("services:\n  web:\n    image: busybox\n"
                                              "    ports: [abc]\n")
    out = project("up", "-d")
    assert (out.returncode, out.stderr) == (15, 'services.web.ports[0]: invalid port "abc"\n')
    missing = pallet("compose", "-f", str(project.dir / "nope.yaml"), "config")
    assert missing.returncode == 14 and "nope.yaml" in missing.stderr


APP_DOCKERFILE = """\
FROM busybox
ARG GREETING=unset
RUN echo "$GREETING from RUN" > /greeting
CMD ["cat", "/greeting"]
"""


def _image_id(pallet, ref: str) -> str:
    out = pallet("image", "inspect", "-f", "{{.Id}}", ref)
    return out.stdout.strip() if out.returncode == 0 else ""


def test_up_builds_missing_images_then_build_and_up_build_rebuild_them(project, pallet):
    (project.dir / "app").mkdir()
    (project.dir / "app" / "Dockerfile").write_text(APP_DOCKERFILE)
    (project.dir / "short").mkdir()
    (project.dir / "short" / "msg").write_text("first message\n")
    (project.dir / "short" / "Dockerfile").write_text("FROM busybox\nCOPY msg /msg\n"
                                                     'CMD ["cat", "/msg"]\n')
    (project.dir / "compose.yaml").write_text("""
services:
  app:
    build:
      context: ./app
      args: [GREETING]
      labels: {cb.built-by: compose}
      network: none
    network_mode: none
  short:
    image: cb-short
    build: ./short
    network_mode: none
""")
    n = project.name
    pallet.env["GREETING"] = "howdy"  # a bare arg takes the shell's value
    up = project("up", timeout=120)
    assert up.returncode == 0, up.stderr
    # The builder's lines on stderr, the containers' output on stdout.
    assert "Step 1/4 : FROM busybox" in up.stderr and "Step 1/3 : FROM busybox" in up.stderr
    assert f"Successfully tagged {n}-app:latest" in up.stderr
    assert "Successfully tagged cb-short:latest" in up.stderr
    assert " Service app  Built" in up.stderr and "Step" not in up.stdout
    assert "app-1    | howdy from RUN" in up.stdout
    assert "short-1  | first message" in up.stdout
    labels = pallet("image", "inspect", "-f", "{{json .Config.Labels}}", f"{n}-app").stdout
    assert json.loads(labels) == {"cb.built-by": "compose"}

    # Present now: up neither builds nor recreates.
    app_id = _image_id(pallet, f"{n}-app")
    again = project("up", timeout=60)
    assert "Step" not in again.stderr and f"Container {n}-app-1  Recreate" not in again.stderr

    # compose build: output on stdout; a changed context gives a new image, up recreates.
    (project.dir / "short" / "msg").write_text("second message\n")
    built = project("build", "short")
    assert built.returncode == 0, built.stderr
    assert "Successfully tagged cb-short:latest" in built.stdout
    assert _image_id(pallet, f"{n}-app") == app_id  # not asked for
    up = project("up", timeout=60)
    assert f"Container {n}-short-1  Recreate" in up.stderr
    assert "short-1  | second message" in up.stdout

    # up --build rebuilds (from the cache); --no-cache runs every step again.
    assert " ---> Using cache" in project("up", "--build", timeout=120).stderr
    nocache = project("build", "--no-cache", "app")
    assert nocache.returncode == 0 and " ---> Using cache" not in nocache.stdout
    quiet = project("build", "-q")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")

    # config shows the normalised section; --no-build refuses a missing image.
    config = project("config").stdout
    assert f"    build:\n      context: {project.dir / 'short'}\n      dockerfile: Dockerfile\n" \
        in config
    assert pallet("rmi", "-f", "cb-short").returncode == 0
    refused = project("up", "--no-build", "short")
    assert refused.returncode == 1 and "cb-short" in refused.stderr
    assert project("up", "--build", "--no-build").returncode == 1


def test_a_failed_build_says_why_in_one_line_and_up_creates_nothing(project, pallet):
    (project.dir / "Dockerfile").write_text("FROM busybox\nRUN false\n")
    (project.dir / "compose.yaml").write_text("""
services:
  app:
    build: {context: ., network: none}
    network_mode: none
""")
    out = project("up", "-d", timeout=60)
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == "The command '/bin/sh -c false' returned a non-zero code: 1"
    assert pallet("ps", "-aq").stdout == "" and _image_id(pallet, f"{project.name}-app") == ""
    assert leftovers(pallet) == []


def test_profiles_extra_hosts_ls_top_images_pause_and_kill_as_a_user_sees_them(project, pallet):
    (project.dir / "compose.yaml").write_text("""
services:
  app:
    image: busybox
    command: sleep 300
    stop_signal: SIGKILL
    network_mode: none
    extra_hosts: ["db.example:10.220.99.9"]
  debug:
    image: busybox
    command: sleep 301
    stop_signal: SIGKILL
    network_mode: none
    profiles: [dev]
""")
    n = project.name

    def state(service: str) -> str:
        return pallet("inspect", "-f", "{{.State.Status}}", f"{n}-{service}-1").stdout.strip()

    # A service in a profile starts only with --profile.
    assert project("up", "-d").returncode == 0
    assert project("ps", "--services").stdout == "app\n"
    assert pallet("inspect", f"{n}-debug-1").returncode != 0
    up = pallet("compose", "-f", str(project.dir / "compose.yaml"), "-p", n, "--profile", "dev",
                "up", "-d")
    assert up.returncode == 0, up.stderr
    assert f" Container {n}-debug-1  Started" in up.stderr and state("debug") == "running"

    hosts = project("exec", "-T", "app", "cat", "/etc/hosts").stdout
    assert "10.220.99.9\tdb.example\n" in hosts, hosts

    ls = pallet("compose", "ls").stdout.splitlines()
    assert ls[0].split() == ["NAME", "STATUS", "CONFIG", "FILES"]
    assert ls[1].split() == [n, "running(2)", str(project.dir / "compose.yaml")]
    assert pallet("compose", "ls", "-q").stdout == f"{n}\n"
    assert json.loads(pallet("compose", "ls", "--format", "json").stdout) == [
        {"Name": n, "Status": "running(2)", "ConfigFiles": str(project.dir / "compose.yaml")}]

    top = project("top", "app").stdout.splitlines()
    assert top[0] == f"{n}-app-1" and top[1].split()[0] == "UID"
    assert any(line.endswith("sleep 300") for line in top[2:]), top
    images = project("images", "app").stdout.splitlines()
    assert images[0].split() == ["CONTAINER", "REPOSITORY", "TAG", "IMAGE", "ID", "SIZE"]
    assert images[1].split()[:3] == [f"{n}-app-1", "busybox", "latest"]

    paused = project("pause", "app")
    assert f" Container {n}-app-1  Paused" in paused.stderr and state("app") == "paused"
    assert pallet("compose", "ls").stdout.splitlines()[1].split()[1] == "paused(1),"
    unpaused = project("unpause", "app")
    assert f" Container {n}-app-1  Unpaused" in unpaused.stderr and state("app") == "running"

    killed = project("kill", "app")
    assert f" Container {n}-app-1  Killed" in killed.stderr and "debug" not in killed.stderr
    _wait_exited(pallet, f"{n}-app-1")
    assert pallet("inspect", "-f", "{{.State.ExitCode}}", f"{n}-app-1").stdout == "137\n"
    assert pallet("compose", "ls").stdout.splitlines()[1].split()[1] == "exited(1),"
    # No service named: every running container of the project, profiles or not (docker's).
    assert f" Container {n}-debug-1  Killed" in project("kill", "-s", "KILL").stderr
    _wait_exited(pallet, f"{n}-debug-1")
    assert pallet("compose", "ls").stdout.splitlines()[1:] == []  # none running
    assert pallet("compose", "ls", "-a").stdout.splitlines()[1].split()[:2] == [n, "exited(2)"]


SIDECAR = """
services:
  sidecar:
    image: busybox
    network_mode: "service:web"
    stop_signal: SIGKILL
    command: ["sh", "-c", "for i in $$(seq 50); do wget -qO- http://127.0.0.1:8080/ && break; sleep 0.1; done; exec sleep 300"]
  web:
    image: busybox
    stop_signal: SIGKILL
    command: ["sh", "-c", "mkdir -p /www && echo it-works > /www/index.html && exec httpd -f -p 8080 -h /www"]
    networks: [back]
  peek:
    image: busybox
    network_mode: "container:PROJECT-web-1"
    depends_on: [web]
    stop_signal: SIGKILL
    command: sleep 300
networks:
  back:
    ipam:
      config: [{subnet: "SUBNET"}]
"""


def test_network_mode_service_shares_the_web_servers_network(project, pallet):
    # Subnets of this test in 10.223/16 (this feature's range).
    subnet = f"10.223.{random.randint(0, 254)}.0/24"
    n = project.name
    (project.dir / "compose.yaml").write_text(
        SIDECAR.replace("SUBNET", subnet).replace("PROJECT", n))
    out = project("up", "-d")
    assert out.returncode == 0, out.stderr
    # service:web starts web first, as docker compose's implied dependency.
    assert out.stderr.index(f"{n}-web-1  Started") < out.stderr.index(f"{n}-sidecar-1  Creating")
    web = pallet("inspect", f"{n}-web-1", check=True)
    web_id = json.loads(web.stdout)[0]["Id"]
    mode = "{{.HostConfig.NetworkMode}}"
    for side in ("sidecar", "peek"):
        assert pallet("inspect", "-f", mode, f"{n}-{side}-1").stdout.strip() == \
            f"container:{web_id}"
    assert "sidecar-1  | it-works" in project("logs", "sidecar").stdout
    ex = project("exec", "-T", "peek", "wget", "-qO-", "http://127.0.0.1:8080/")
    assert (ex.returncode, ex.stdout) == (0, "it-works\n"), ex.stderr
    one = project("run", "--rm", "-T", "sidecar", "wget", "-qO-", "http://127.0.0.1:8080/")
    assert (one.returncode, one.stdout) == (0, "it-works\n"), one.stderr

    # web recreated: the next up recreates the sidecar too (its namespace was web's).
    assert project("up", "-d", "--force-recreate", "web").returncode == 0
    out = project("up", "-d", "sidecar")
    assert out.returncode == 0, out.stderr
    assert f"Container {n}-sidecar-1  Recreate" in out.stderr
    new_web = json.loads(pallet("inspect", f"{n}-web-1", check=True).stdout)[0]["Id"]
    assert pallet("inspect", "-f", mode, f"{n}-sidecar-1").stdout.strip() == \
        f"container:{new_web}"
    ex = project("exec", "-T", "sidecar", "wget", "-qO-", "http://127.0.0.1:8080/")
    assert (ex.returncode, ex.stdout) == (0, "it-works\n"), ex.stderr

    ids = pallet("ps", "-aq", "--no-trunc").stdout.split()
    down = project("down")
    assert down.returncode == 0, down.stderr
    assert _host_traces(pallet, n) == []
    assert leftovers(pallet, ids) == []
