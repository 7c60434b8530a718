"""The Compose spec's secrets, configs, extends and include as `pallet compose config` shows
them (no containers): extends merged by docker compose's rules with the base's paths
resolved against its own file, include bringing in another project's resources (and
refusing a conflicting one), secrets and configs in their long form, and one-line errors
for what docker compose refuses (exit 15, 14 for a missing file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PALLET = os.path.join(os.path.dirname(sys.executable), "pallet")


def write(path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def config(tmp_path, *args: str, env: dict[str, str] | None = None,
           file: str = "compose.yaml") -> subprocess.CompletedProcess:
    """`pallet compose -f FILE -p c2-spec config ARGS` in TMP_PATH, as a user runs it."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    environ.update(env or {})
    return subprocess.run([PALLET, "--root", str(tmp_path / "root"), "compose", "-f",
                           str(tmp_path / file), "-p", "c2-spec", "config", *args],
                          capture_output=True, text=True, env=environ, cwd=tmp_path,
                          timeout=60)


def model(tmp_path, **kw) -> dict:
    out = config(tmp_path, "--format", "json", **kw)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


BASE = """
services:
  base:
    image: busybox
    command: ["echo", "base"]
    entrypoint: ["/bin/sh", "-c"]
    environment: {A: "1", B: "base"}
    labels: {tier: base}
    ports: ["9090:90"]
    expose: ["90"]
    dns: [1.1.1.1]
    volumes: ["./cache:/cache", "./data:/data"]
    devices: ["/dev/null:/dev/x", "/dev/zero:/dev/zero"]
    healthcheck: {test: ["CMD", "true"], interval: 5s}
    depends_on: [db]
    secrets: [token]
    build: {dockerfile: Dockerfile.base}
"""


def test_extends_from_another_file_merges_by_compose_rules_with_its_paths_resolved_there(
        tmp_path):
    write(tmp_path / "common" / "base.yaml", BASE)
    write(tmp_path / "compose.yaml", """
services:
  web:
    extends: {file: common/base.yaml, service: base}
    command: ["echo", "web"]
    environment: {B: web, C: "3"}
    labels: {role: front}
    ports: ["8080:80"]
    expose: ["80"]
    dns: [8.8.8.8]
    volumes: ["./mine:/data"]
    devices: ["/dev/full:/dev/x"]
    healthcheck: {test: ["CMD", "false"]}
    depends_on: [cache]
    secrets: [{source: token, mode: 0400}]
  db: {image: busybox}
  cache: {image: busybox}
secrets:
  token: {file: ./token.txt}
""")
    web = model(tmp_path)["services"]["web"]
    common = str(tmp_path / "common")
    # Scalars and shell commands: the local value replaces the base's.
    assert web["command"] == ["echo", "web"] and web["entrypoint"] == ["/bin/sh", "-c"]
    # Mappings merged key by key, the local value winning.
    assert web["environment"] == {"A": "1", "B": "web", "C": "3"}
    assert web["labels"] == {"tier": "base", "role": "front"}
    assert web["healthcheck"]["Test"] == ["CMD", "false"]
    assert web["healthcheck"]["Interval"] == 5_000_000_000
    assert sorted(web["depends_on"]) == ["cache", "db"]
    # Sequences appended.
    assert [(p["published"], p["target"]) for p in web["ports"]] == [("9090", 90), ("8080", 80)]
    assert web["expose"] == ["90", "80"] and web["dns"] == ["1.1.1.1", "8.8.8.8"]
    # Mounts merged by target: the base's relative paths against the base's own file.
    assert [(v["source"], v["target"]) for v in web["volumes"]] == [
        (f"{common}/cache", "/cache"), (str(tmp_path / "mine"), "/data")]
    assert web["devices"] == [
        {"source": "/dev/full", "target": "/dev/x", "permissions": "rwm"},
        {"source": "/dev/zero", "target": "/dev/zero", "permissions": "rwm"}]
    assert web["secrets"] == [{"source": "token", "mode": 0o400}]
    assert web["build"] == {"context": common, "dockerfile": "Dockerfile.base"}
    assert "extends" not in web and "base" not in model(tmp_path)["services"]


def test_extends_in_the_same_file_chains_and_the_base_stays_a_service(tmp_path):
    write(tmp_path / "compose.yaml", """
services:
  a: {image: busybox, environment: [X=a], command: a}
  b: {extends: a, environment: [Y=b]}
  c: {extends: {service: b}, command: c}
""")
    services = model(tmp_path)["services"]
    assert sorted(services) == ["a", "b", "c"]
    assert services["c"]["environment"] == {"X": "a", "Y": "b"}
    assert services["c"]["command"] == ["c"] and services["b"]["command"] == ["a"]


@pytest.mark.parametrize("text, code, message", [
    ("services:\n  a: {extends: b, image: busybox}\n  b: {extends: c}\n  c: {extends: a}\n",
     15, "Circular reference: a in {f}, extends b in {f}, extends c in {f}, extends a in {f}"),
    ("services:\n  a: {extends: a, image: busybox}\n",
     15, "Circular reference: a in {f}, extends a in {f}"),
    ("services:\n  a: {extends: nope, image: busybox}\n",
     15, 'cannot extend service "a" in {f}: service "nope" not found'),
    ("services:\n  a: {extends: {service: x, file: other.yaml}}\n",
     15, 'cannot extend service "a" in {f}: service "x" not found in other.yaml'),
    ("services:\n  a: {extends: {service: x, file: missing.yaml}}\n",
     14, "open {d}/missing.yaml: no such file or directory"),
    ("services:\n  a: {extends: {file: other.yaml}}\n",
     15, "services.a.extends.service: is required"),
    ("services:\n  a: {extends: {service: x, files: other.yaml}}\n",
     15, "services.a.extends: unknown key 'files'"),
    ("services:\n  a: {extends: {service: x, file: 'git@github.com:o/r.git'}}\n",
     15, 'services.a.extends.file: remote compose files are not supported by pallet compose: '
         '"git@github.com:o/r.git"'),
])
def test_bad_extends_is_one_line_naming_it(tmp_path, text, code, message):
    write(tmp_path / "other.yaml", "services:\n  y: {image: busybox}\n")
    f = write(tmp_path / "compose.yaml", text)
    out = config(tmp_path)
    assert (out.returncode, out.stderr) == (
        code, message.format(f=f, d=tmp_path) + "\n")


def test_include_brings_in_a_project_with_its_own_directory_and_env(tmp_path):
    write(tmp_path / "db" / "compose.yaml", """
services:
  db:
    image: busybox:${DB_TAG}
    volumes: ["./data:/var/lib/db", "dbvol:/vol"]
    environment: ["WHO=${WHO:-db}"]
    networks: [back]
networks:
  back: {ipam: {config: [{subnet: 10.224.9.0/24}]}}
volumes:
  dbvol:
secrets:
  dbpass: {file: ./pass.txt}
""")
    write(tmp_path / "db" / ".env", "DB_TAG=1.0\nWHO=included\n")
    write(tmp_path / "cache" / "svc.yaml", "services:\n  cache: {image: \"busybox:${CACHE_TAG}\"}\n")
    write(tmp_path / "envs" / "cache.env", "CACHE_TAG=7\n")
    write(tmp_path / "compose.yaml", """
include:
  - db/compose.yaml
  - path: [cache/svc.yaml]
    project_directory: cache
    env_file: envs/cache.env
services:
  app:
    image: busybox
    depends_on: [db, cache]
    secrets: [dbpass]
""")
    m = model(tmp_path, env={"WHO": "shell"})
    db = m["services"]["db"]
    assert db["image"] == "busybox:1.0"  # the included project's .env
    assert db["environment"] == {"WHO": "shell"}  # the including project's variables win
    assert db["volumes"][0]["source"] == str(tmp_path / "db" / "data")
    assert m["services"]["cache"]["image"] == "busybox:7"
    assert sorted(m["services"]["app"]["depends_on"]) == ["cache", "db"]
    assert m["networks"]["back"]["name"] == "c2-spec_back"
    assert m["volumes"]["dbvol"] == {"name": "c2-spec_dbvol"}
    assert m["secrets"]["dbpass"] == {"name": "c2-spec_dbpass",
                                      "file": str(tmp_path / "db" / "pass.txt")}
    listed = config(tmp_path, "--services")
    assert listed.stdout.split() == ["cache", "db", "app"]


def test_include_conflicts_and_cycles_are_refused(tmp_path):
    write(tmp_path / "inc.yaml", "services:\n  db: {image: busybox}\n")
    write(tmp_path / "compose.yaml", "include: [inc.yaml]\nservices:\n  db: {image: busybox}\n")
    # The same definition twice is no conflict (docker compose's DeepEqual).
    assert config(tmp_path).returncode == 0
    write(tmp_path / "compose.yaml",
          "include: [inc.yaml]\nservices:\n  db: {image: busybox:2}\n")
    out = config(tmp_path)
    assert (out.returncode, out.stderr) == (15, "services.db conflicts with imported resource\n")
    write(tmp_path / "compose.yaml", "include: [inc.yaml]\nservices:\n  app: {image: busybox}\n"
          "volumes: {db: {}}\n")
    assert config(tmp_path).returncode == 0  # another kind of resource: no conflict
    write(tmp_path / "inc.yaml", "include: [compose.yaml]\nservices:\n  db: {image: busybox}\n")
    out = config(tmp_path)
    assert out.returncode == 15
    assert out.stderr == (f"include cycle detected: {tmp_path}/compose.yaml include "
                          f"{tmp_path}/inc.yaml include {tmp_path}/compose.yaml\n")
    write(tmp_path / "compose.yaml", "include: ['oci://example.test/app:1']\n")
    out = config(tmp_path)
    assert (out.returncode, out.stderr) == (15, 'include[0].path: remote compose files are not '
                                                'supported by pallet compose: '
                                                '"oci://example.test/app:1"\n')
    write(tmp_path / "compose.yaml", "include: [{path: inc.yaml, env_file: nope.env}]\n"
          "services:\n  app: {image: busybox}\n")
    out = config(tmp_path)
    assert out.returncode == 14 and f"couldn't find env file: {tmp_path}/nope.env" in out.stderr


def test_secrets_and_configs_in_their_long_form(tmp_path):
    write(tmp_path / "compose.yaml", """
services:
  app:
    image: busybox
    secrets:
      - token
      - {source: cert, target: server.crt, uid: "100", gid: "101", mode: 0440}
    configs:
      - nginx
      - {source: motd, target: /etc/motd, mode: "0600"}
secrets:
  token: {environment: TOKEN}
  cert: {file: ./certs/server.crt}
  ext: {external: true}
configs:
  nginx: {file: ~/nginx.conf}
  motd:
    content: |
      hello ${WHO:-world}
      cost $$5
""")
    out = config(tmp_path, env={"WHO": "you", "HOME": "/home/me"})
    assert out.returncode == 0, out.stderr
    assert """    secrets:
    - source: token
    - source: cert
      target: server.crt
      uid: '100'
      gid: '101'
      mode: 288
""" in out.stdout, out.stdout
    assert "  motd:\n    name: c2-spec_motd\n    content: |\n      hello you\n      cost $5\n" \
        in out.stdout
    m = model(tmp_path, env={"WHO": "you", "HOME": "/home/me"})
    assert m["services"]["app"]["secrets"] == [
        {"source": "token"},
        {"source": "cert", "target": "server.crt", "uid": "100", "gid": "101", "mode": 0o440}]
    assert m["services"]["app"]["configs"] == [
        {"source": "nginx"}, {"source": "motd", "target": "/etc/motd", "mode": 0o600}]
    assert m["secrets"] == {
        "token": {"name": "c2-spec_token", "environment": "TOKEN"},
        "cert": {"name": "c2-spec_cert", "file": str(tmp_path / "certs" / "server.crt")},
        "ext": {"name": "ext", "external": True}}
    assert m["configs"] == {
        "nginx": {"name": "c2-spec_nginx", "file": "/home/me/nginx.conf"},
        "motd": {"name": "c2-spec_motd", "content": "hello you\ncost $5\n"}}


def test_an_override_file_replaces_a_secret_by_its_target(tmp_path):
    write(tmp_path / "compose.yaml", """
services:
  app:
    image: busybox
    secrets: [a, {source: b, target: /etc/b}]
secrets:
  a: {file: ./a}
  b: {file: ./b}
  c: {file: ./c}
""")
    write(tmp_path / "override.yaml", """
services:
  app:
    secrets: [{source: c, target: a}, {source: b, target: /etc/b, mode: 0400}]
""")
    out = subprocess.run([PALLET, "--root", str(tmp_path / "root"), "compose", "-f",
                          str(tmp_path / "compose.yaml"), "-f", str(tmp_path / "override.yaml"),
                          "-p", "c2-spec", "config", "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # `a` mounts at /run/secrets/a: the override's `c` there replaces it.
    assert json.loads(out.stdout)["services"]["app"]["secrets"] == [
        {"source": "c", "target": "a"}, {"source": "b", "target": "/etc/b", "mode": 0o400}]


@pytest.mark.parametrize("text, message", [
    ("services:\n  a: {image: busybox, secrets: [nope]}\n",
     "service \"a\" refers to undefined secret nope: invalid compose project"),
    ("services:\n  a: {image: busybox, configs: [nope]}\n",
     "service \"a\" refers to undefined config nope: invalid compose project"),
    ("services:\n  a: {image: busybox}\nsecrets:\n  s: {}\n",
     "secret \"s\" must declare either `file` or `environment`"),
    ("services:\n  a: {image: busybox}\nconfigs:\n  c: {file: x, content: y}\n",
     "config \"c\" must declare only one of `file`, `environment` or `content`"),
    ("services:\n  a: {image: busybox}\nsecrets:\n  s: {content: x}\n",
     "secrets.s: unknown key 'content'"),
    ("services:\n  a: {image: busybox}\nsecrets:\n  s: {external: true, file: x}\n",
     "secrets.s: conflicting parameters \"external\" and \"file\" specified"),
    ("services:\n  a: {image: busybox}\nsecrets:\n  s: {file: x, driver: vault}\n",
     "secrets.s.driver: not supported by pallet compose (docker compose does not support "
     "secrets.*.driver either)"),
    ("services:\n  a: {image: busybox, secrets: [{source: s, mode: \"999\"}]}\n",
     "services.a.secrets[0].mode: invalid mode \"999\": use an octal number such as 0440"),
    ("services:\n  a: {image: busybox, secrets: [{source: s, uid: root}]}\n",
     "services.a.secrets[0].uid: invalid uid \"root\": use a number"),
    ("services:\n  a: {image: busybox, configs: [{source: c, owner: x}]}\n",
     "services.a.configs[0]: unknown key 'owner': use source, target, uid, gid, mode"),
    ("services:\n  a: {image: busybox, configs: [{target: /x}]}\n",
     "services.a.configs[0].source: is required"),
])
def test_bad_secrets_and_configs_are_one_line_naming_them(tmp_path, text, message):
    write(tmp_path / "compose.yaml", text)
    out = config(tmp_path)
    assert (out.returncode, out.stderr) == (15, message + "\n")
