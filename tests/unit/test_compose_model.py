"""Compose files read as docker compose reads them: defaults found upward, .env
interpolation, files merged in order, the long syntax `config` prints, and one-line errors
naming the bad key (exit 15 for a bad file, 14 for a missing one)."""

from __future__ import annotations

import pytest

from pallet.compose.interpolate import InterpolationError, interpolate, parse_env_file
from pallet.compose.model import (
    ComposeFileError,
    ComposeFileNotFound,
    load,
    normalize_project_name,
)
from pallet.errors import InvalidArgument


def write(tmp_path, name, text):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_interpolation_forms():
    env = {"A": "1", "EMPTY": ""}
    cases = {
        "$A-${A}": "1-1", "${B:-dflt}": "dflt", "${EMPTY:-dflt}": "dflt", "${EMPTY-dflt}": "",
        "${A:+alt}": "alt", "${B+alt}": "", "$$A": "$A", "${B:-${A}x}": "1x", "cost: $$5": "cost: $5",
    }  # fmt: skip
    for text, want in cases.items():
        assert interpolate(text, env, "x") == want, text
    unset: list[str] = []
    assert interpolate({"k": ["$NOPE"]}, env, "", unset) == {"k": [""]}
    assert unset == ["NOPE"]
    with pytest.raises(InterpolationError, match="required variable B is missing a value: need B"):
        interpolate("${B:?need B}", env, "services.web.image")
    with pytest.raises(InterpolationError, match=r"invalid interpolation format for services\.web\.image"):
        interpolate("${A", env, "services.web.image")


def test_env_file_syntax():
    text = "# c\nexport A=1\nB='lit $x'\nC=\"a\\nb\"\nD=plain # comment\nE\n"
    assert parse_env_file(text, ".env", {"E": "from-shell"}) == {
        "A": "1", "B": "lit $x", "C": "a\nb", "D": "plain", "E": "from-shell"}


def test_default_file_found_in_a_parent_and_project_name_from_its_dir(tmp_path):
    write(tmp_path / "My_App.1", "compose.yaml", "services: {web: {image: busybox}}\n")
    sub = tmp_path / "My_App.1" / "deep" / "er"
    sub.mkdir(parents=True)
    p = load([], cwd=str(sub), environ={})
    assert p.name == "my_app1" == normalize_project_name("My_App.1")
    assert p.working_dir == str(tmp_path / "My_App.1")
    assert p.networks == {"default": {"name": "my_app1_default", "driver": "bridge",
                                      "external": False}}
    with pytest.raises(ComposeFileNotFound) as e:
        load([], cwd="/", environ={})
    assert e.value.exit_code == 14


def test_dotenv_interpolation_shell_wins_and_merge_in_order(tmp_path):
    write(tmp_path, ".env", "TAG=1.0\nPORT=8080\n")
    write(tmp_path, "compose.yaml", """
name: cmpmerge
services:
  web:
    image: busybox:${TAG}
    command: httpd -f -p ${PORT}
    environment: [A=1, B=2]
    ports: ["${PORT}:80"]
    volumes: ["./site:/www:ro", "data:/data"]
volumes: {data: {}}
""")
    write(tmp_path, "override.yaml", """
services:
  web:
    environment: {B: "3", C: null}
    volumes: ["other:/data"]
    ports: ["9000-9001:90-91/udp"]
volumes: {other: {name: shared-other}}
""")
    p = load(["compose.yaml", "override.yaml"], cwd=str(tmp_path), environ={"PORT": "81", "C": "c"})
    web = p.services["web"]
    assert p.name == "cmpmerge"
    assert web["image"] == "busybox:1.0" and web["command"] == ["httpd", "-f", "-p", "81"]
    assert web["environment"] == {"A": "1", "B": "3", "C": "c"}
    assert [(x["published"], x["target"], x["protocol"]) for x in web["ports"]] == [
        ("81", 80, "tcp"), ("9000", 90, "udp"), ("9001", 91, "udp")]
    assert web["volumes"] == [
        {"type": "bind", "source": str(tmp_path / "site"), "target": "/www", "read_only": True,
         "bind": {"create_host_path": True}},
        {"type": "volume", "source": "other", "target": "/data"}]
    assert p.volumes["other"] == {"name": "shared-other"}
    assert p.volumes["data"] == {"name": "cmpmerge_data"}
    assert load(["compose.yaml"], cwd=str(tmp_path), environ={}, project_name="cmpx").name == "cmpx"


def test_dependency_order_and_profiles(tmp_path):
    write(tmp_path, "compose.yaml", """
services:
  app: {image: busybox, depends_on: {db: {condition: service_completed_successfully}, cache: {condition: service_started}}}
  db: {image: busybox}
  cache: {image: busybox}
  debug: {image: busybox, profiles: [dev]}
""")
    p = load([], cwd=str(tmp_path), environ={})
    assert p.order() == ["cache", "db", "app"]
    assert p.order(["app"]) == ["cache", "db", "app"]
    assert "debug" not in p.services and "debug" in p.disabled
    assert "debug" in load([], cwd=str(tmp_path), environ={}, profiles=["dev"]).services


@pytest.mark.parametrize("service, message", [
    ("ports: [abc]", 'services.web.ports[0]: invalid port "abc"'),
    ("ports: ['70000:80']", 'services.web.ports[0]: invalid port "70000"'),
    ("restart: sometimes", 'services.web.restart: invalid restart policy "sometimes"'),
    ("mem_limit: lots", 'services.web.mem_limit: invalid size "lots"'),
    ("colour: red", "services.web: unknown key 'colour'"),
    ("volumes: [nodecl:/data]", 'services.web.volumes[0]: undefined volume "nodecl"'),
    ("networks: [nodecl]", "service 'web' refers to undefined network nodecl"),
    ("depends_on: [ghost]", 'services.web.depends_on: undefined service "ghost"'),
    ("depends_on: {web: {condition: service_started}}", "dependency cycle detected involving service web"),
    ("network_mode: 'service:db'", """services.web.network_mode: service "db" not found for network_mode 'service:db'"""),
    ("network_mode: 'service:'", 'services.web.network_mode: invalid network mode "service:"'),
    ("network_mode: 'container:x'\n    ports: ['80:80']", "services.web.ports: conflicting options: port publishing and the container type network mode"),
    ("network_mode: 'container:x'\n    networks: [default]", "services.web: network_mode and networks cannot be combined"),
    ("image: ''", "services.web: has neither an image nor a build context specified"),
    ("build: {context: ., ssh: [default]}", "services.web.build: 'ssh' is not supported by pallet compose"),
    ("build: {context: 'https://github.com/x/y.git'}", "services.web.build.context: remote build contexts are not supported"),
    ("build: {context: ., no_cache: often}", 'services.web.build.no_cache: must be a boolean, not "often"'),
    ("build: {context: ., network: mynet}", 'services.web.build.network: invalid network "mynet"'),
    ("privileged: maybe", 'services.web.privileged: must be a boolean, not "maybe"'),
    ("stop_grace_period: soon", 'services.web.stop_grace_period: invalid duration "soon"'),
])  # fmt: skip
def test_bad_files_say_which_key(tmp_path, service, message):
    write(tmp_path, "compose.yaml", f"services:\n  web:\n    image: busybox\n    {service}\n")
    with pytest.raises(ComposeFileError) as e:
        load([], cwd=str(tmp_path), environ={})
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value) and e.value.exit_code == 15


def test_build_short_and_long_forms_normalised_with_the_default_image_name(tmp_path):
    write(tmp_path, "compose.yaml", """
services:
  web:
    build: ./web
  api:
    image: cbapi:1
    build:
      context: api
      dockerfile: api.Dockerfile
      args: [VERSION=2, FROM_SHELL, NOT_SET]
      target: prod
      labels: [team=core]
      no_cache: true
""")
    write(tmp_path, "override.yaml", "services:\n  api:\n    build:\n      args: {EXTRA: x}\n")
    p = load(["compose.yaml", "override.yaml"], cwd=str(tmp_path), project_name="cbproj",
             environ={"FROM_SHELL": "sh"})
    assert p.services["web"]["build"] == {"context": str(tmp_path / "web"),
                                          "dockerfile": "Dockerfile"}
    assert p.services["api"]["build"] == {
        "context": str(tmp_path / "api"), "dockerfile": "api.Dockerfile",
        "args": {"VERSION": "2", "FROM_SHELL": "sh", "EXTRA": "x"}, "target": "prod",
        "labels": {"team": "core"}, "no_cache": True}
    # docker compose v2's name for a built image with no image: PROJECT-SERVICE.
    assert (p.image("web"), p.image("api")) == ("cbproj-web", "cbapi:1")
    assert "image" not in p.to_dict()["services"]["web"]


def test_yaml_errors_and_bad_project_names(tmp_path):
    write(tmp_path, "compose.yaml", "services:\n  web: [\n")
    with pytest.raises(ComposeFileError, match=r"^yaml: compose.yaml: line \d+"):
        load([], cwd=str(tmp_path), environ={})
    write(tmp_path, "compose.yaml", "services: {web: {image: busybox}}\n")
    with pytest.raises(ComposeFileError, match="invalid project name 'Bad Name'"):
        load([], cwd=str(tmp_path), environ={}, project_name="Bad Name")


def test_build_options_read_the_dockerfile_in_the_context_and_tag_the_service_image(tmp_path):
    from pallet.compose.build import build_options

    write(tmp_path, "app/docker/Dockerfile.dev", "FROM busybox\n")
    write(tmp_path, "compose.yaml", """
services:
  app:
    build: {context: app, dockerfile: docker/Dockerfile.dev, args: {A: "1", B: "2"},
            target: dev, tags: ["cbapp:extra"], network: none}
    platform: linux/amd64
""")
    p = load([], cwd=str(tmp_path), environ={}, project_name="cbp")
    opts = build_options(p, "app", no_cache=True, build_args={"B": "3"})
    assert (opts.dockerfile, opts.context) == ("FROM busybox\n", str(tmp_path / "app"))
    assert opts.tags == ["cbp-app", "cbapp:extra"] and opts.build_args == {"A": "1", "B": "3"}
    assert (opts.target, opts.no_cache, opts.network, opts.platform) == (
        "dev", True, "none", "linux/amd64")
    (tmp_path / "app/docker/Dockerfile.dev").unlink()
    with pytest.raises(InvalidArgument, match=r"^services\.app\.build\.dockerfile: Cannot locate "
                                              r"specified Dockerfile: docker/Dockerfile\.dev$"):
        build_options(p, "app")


def test_up_builds_what_is_missing_and_pull_policy_build_every_time(tmp_path):
    from types import SimpleNamespace

    from pallet.compose.build import missing

    write(tmp_path, "compose.yaml", """
services:
  built: {build: .}
  fresh: {build: ., pull_policy: build}
  pulled: {image: busybox}
""")
    p = load([], cwd=str(tmp_path), environ={}, project_name="cbp")
    names = ["built", "fresh", "pulled"]
    have = SimpleNamespace(images=SimpleNamespace(exists=lambda ref: True))
    none = SimpleNamespace(images=SimpleNamespace(exists=lambda ref: False))
    assert missing(have, p, names) == ["fresh"]
    assert missing(none, p, names) == ["built", "fresh"]


def test_network_mode_service_implies_the_dependency(tmp_path):
    write(tmp_path, "compose.yaml", """
services:
  sidecar:
    image: busybox
    network_mode: "service:web"
  other:
    image: busybox
    network_mode: "container:some-ctr"
  web:
    image: busybox
""")
    p = load([], cwd=str(tmp_path), environ={})
    # As compose-go's normalisation: service_started, required, restarted with it.
    assert p.services["sidecar"]["depends_on"] == {
        "web": {"condition": "service_started", "required": True, "restart": True}}
    assert "networks" not in p.services["sidecar"] and "depends_on" not in p.services["other"]
    assert p.order(["sidecar"]) == ["web", "sidecar"]


def test_reset_and_override_tags_in_an_override_file(tmp_path):
    write(tmp_path, "compose.yaml", """
services:
  web:
    image: busybox
    command: httpd -f
    environment: {A: "1", B: "2"}
    ports: ["8080:80"]
    cap_add: [NET_ADMIN]
""")
    write(tmp_path, "override.yaml", """
services:
  web:
    ports: !reset []
    command: !reset null
    environment: !override {C: "3"}
    cap_add: !override [SYS_TIME]
""")
    web = load(["compose.yaml", "override.yaml"], cwd=str(tmp_path), project_name="rst",
               environ={}).services["web"]
    assert "ports" not in web and "command" not in web
    assert web["environment"] == {"C": "3"}  # not merged with A and B
    assert web["cap_add"] == ["SYS_TIME"]  # not appended to
    # Without the tags the same file merges, as before.
    write(tmp_path, "plain.yaml", """
services:
  web:
    environment: {C: "3"}
    cap_add: [SYS_TIME]
""")
    web = load(["compose.yaml", "plain.yaml"], cwd=str(tmp_path), project_name="rst",
               environ={}).services["web"]
    assert web["environment"] == {"A": "1", "B": "2", "C": "3"}
    assert web["cap_add"] == ["NET_ADMIN", "SYS_TIME"] and web["ports"]


def test_reset_and_override_tags_apply_through_extends(tmp_path):
    write(tmp_path, "compose.yaml", """
services:
  base:
    image: busybox
    command: httpd -f
    environment: {A: "1"}
    ports: ["8080:80"]
  web:
    extends: base
    ports: !reset []
    environment: !override {B: "2"}
  plain:
    extends: base
    environment: {B: "2"}
""")
    svcs = load(["compose.yaml"], cwd=str(tmp_path), project_name="rst", environ={}).services
    assert "ports" not in svcs["web"] and svcs["web"]["command"] == ["httpd", "-f"]
    assert svcs["web"]["environment"] == {"B": "2"}
    # Untagged, the extending service merges with its base as before.
    assert svcs["plain"]["environment"] == {"A": "1", "B": "2"}
    assert len(svcs["plain"]["ports"]) == 1


def test_reset_elsewhere_is_refused_with_where(tmp_path):
    write(tmp_path, "compose.yaml", """
services:
  web:
    image: busybox
    environment: {A: !reset null}
""")
    with pytest.raises(ComposeFileError, match=r"services\.web\.environment\.A: !reset is "
                       r"supported on a service's attributes"):
        load(["compose.yaml"], cwd=str(tmp_path), project_name="rst", environ={})
