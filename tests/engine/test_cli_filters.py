"""The listing and pruning commands as docker users script them: `--filter` on images,
volume ls, network ls and the prunes, `--format` templates and tables, `ps -s` and
`system df -v` — the lines printed, and the daemon's words and exit code for a filter it
does not know.

Real CLI and store, the busybox image; images made with `import` (no container), and
containers only where a filter is about them (created, never started, or --network none).
"""

from __future__ import annotations

import json
import re
import tarfile

import pytest

NONE = ("--network", "none")


def _tar(tmp_path) -> str:
    (tmp_path / "f").write_text("hi\n")
    path = str(tmp_path / "one-file.tar")
    with tarfile.open(path, "w") as tar:
        tar.add(str(tmp_path / "f"), arcname="f")
    return path


@pytest.fixture
def images(pallet, tmp_path):
    """busybox (created 2024-01-01) named thrice, a labelled image and a dangling one
    (both created now)."""
    pallet("tag", "busybox", "fl-one:1", check=True)
    pallet("tag", "busybox", "other/fl-two:2", check=True)
    tar = _tar(tmp_path)
    labelled = pallet("import", "-c", "LABEL tier=web", tar, "fl-lab:1", check=True)
    dangling = pallet("import", tar, check=True)
    return {"labelled": labelled.stdout.strip()[7:19], "dangling": dangling.stdout.strip()[7:19]}


def _names(pallet, *argv: str) -> list[str]:
    out = pallet("images", *argv, "--format", "{{.Repository}}:{{.Tag}}")
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.root
def test_images_filters_as_docker(pallet, images):
    everything = ["<none>:<none>", "fl-lab:1", "busybox:latest", "fl-one:1", "other/fl-two:2"]
    assert _names(pallet) == everything
    # reference= is a path glob on the familiar name, with or without its tag
    assert _names(pallet, "--filter", "reference=busy*") == ["busybox:latest"]
    assert _names(pallet, "-f", "reference=*/fl-*") == ["other/fl-two:2"]
    assert _names(pallet, "-f", "reference=fl-*:1") == ["fl-lab:1", "fl-one:1"]
    assert _names(pallet, "-f", "reference=*") == ["fl-lab:1", "busybox:latest", "fl-one:1"]
    assert _names(pallet, "-f", "dangling=true") == ["<none>:<none>"]
    assert pallet("images", "-q", "-f", "dangling=true").stdout == images["dangling"] + "\n"
    assert _names(pallet, "-f", "dangling=false") == everything[1:]
    assert _names(pallet, "-f", "label=tier") == ["fl-lab:1"]
    assert _names(pallet, "-f", "label=tier=web") == ["fl-lab:1"]
    assert _names(pallet, "-f", "label=tier=db") == []
    assert _names(pallet, "-f", "label!=tier") == [everything[0], *everything[2:]]
    assert _names(pallet, "-f", "before=fl-lab:1") == everything[2:]
    assert _names(pallet, "-f", "since=busybox") == everything[:2]
    assert _names(pallet, "-f", "until=2025-01-01T00:00:00Z") == everything[2:]
    assert _names(pallet, "-f", "until=1h") == everything[2:]
    # different keys: all must hold; one key twice: either value
    assert _names(pallet, "-f", "reference=fl-*", "-f", "label=tier") == ["fl-lab:1"]
    assert _names(pallet, "-f", "reference=busybox", "-f", "reference=fl-one") == \
        ["busybox:latest", "fl-one:1"]
    assert pallet("images", "-q", "-f", "reference=busybox").stdout == "b304c9b79131\n"


@pytest.mark.root
def test_images_bad_filters_exit_like_docker(pallet, images):
    for argv, err in [
        (("-f", "color=red"), "Error: invalid filter 'color'\n"),
        (("-f", "dangling=maybe"), "Error: invalid filter 'dangling=[maybe]'\n"),
        (("-f", "until=soon"), 'Error: failed to parse value as time or duration: "soon"\n'),
        (("-f", "before=nope:1"), "Error: No such image: nope:1\n"),
        (("-f", "reference=[x"), "Error: syntax error in pattern\n"),
    ]:
        out = pallet("images", *argv)
        assert (out.returncode, out.stdout, out.stderr) == (1, "", err), argv
    out = pallet("images", "-f", "dangling")
    assert (out.returncode, out.stdout) == (125, "")
    assert out.stderr.splitlines() == [
        'pallet: invalid argument "dangling" for "-f, --filter" flag: bad format of filter '
        "(expected name=value)", "See 'pallet images --help'."]


@pytest.mark.root
def test_images_formats(pallet, images):
    out = pallet("image", "ls", "-f", "reference=fl-*", "--format",
                 "table {{.Repository}}\t{{.Tag}}\t{{.Containers}}", check=True)
    assert out.stdout.splitlines() == [
        "REPOSITORY   TAG       CONTAINERS",
        "fl-lab       1         N/A",
        "fl-one       1         N/A"]
    out = pallet("images", "-f", "reference=busybox", "--format",
                 "{{.ID}} {{.CreatedAt}} {{.CreatedSince}} {{.Size}}", check=True)
    assert out.stdout == "b304c9b79131 2024-01-01 00:00:00 +0000 UTC 2 years ago 1.16MB\n"
    (row,) = [json.loads(ln) for ln in
              pallet("images", "-f", "reference=fl-lab", "--format", "json").stdout.splitlines()]
    assert (row["Repository"], row["Tag"], row["ID"]) == ("fl-lab", "1", images["labelled"])
    assert set(row) >= {"Containers", "CreatedAt", "CreatedSince", "Digest", "SharedSize",
                        "Size", "UniqueSize", "VirtualSize"}
    full = pallet("images", "--no-trunc", "-q", "-f", "reference=busybox").stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", full)
    head = pallet("images", "--digests", "-f", "reference=busybox").stdout.splitlines()
    assert head[0].split() == ["REPOSITORY", "TAG", "DIGEST", "IMAGE", "ID", "CREATED", "SIZE"]
    assert head[1].split()[:3] == ["busybox", "latest", head[1].split()[2]]
    assert head[1].split()[2].startswith("sha256:")
    bad = pallet("images", "--format", "{{.Nope}}")
    assert bad.returncode == 1 and "Nope" in bad.stderr


@pytest.mark.root
def test_image_prune_filters(pallet, images):
    out = pallet("image", "prune", "-f", "--filter", "label=tier")
    assert out.stdout == "Total reclaimed space: 0B\n"  # the labelled one is not dangling
    out = pallet("image", "prune", "-a", "-f", "--filter", "label=tier")
    assert out.stdout.splitlines()[:2] == ["Deleted Images:", "untagged: fl-lab:1"]
    assert _names(pallet) == ["<none>:<none>", "busybox:latest", "fl-one:1", "other/fl-two:2"]
    out = pallet("image", "prune", "-a", "-f", "--filter", "until=2025-01-01")
    assert out.stdout.splitlines()[:4] == ["Deleted Images:", "untagged: busybox:latest",
                                           "untagged: fl-one:1", "untagged: other/fl-two:2"]
    assert _names(pallet) == ["<none>:<none>"]
    out = pallet("image", "prune", "-f", "--filter", "label!=x")
    assert out.stdout.startswith(f"Deleted Images:\ndeleted: sha256:{images['dangling']}")
    assert _names(pallet) == []
    bad = pallet("image", "prune", "-f", "--filter", "reference=x")
    assert (bad.returncode, bad.stderr) == (1, "Error: invalid filter 'reference'\n")


@pytest.mark.root
def test_volume_ls_filters_and_formats(pallet):
    pallet("volume", "create", "--label", "tier=web", "fl-web", check=True)
    pallet("volume", "create", "fl-db", check=True)
    pallet("volume", "create", "other", check=True)
    pallet("create", *NONE, "--name", "fl-user", "-v", "fl-web:/w", "busybox", "true",
           check=True)
    ls = lambda *a: pallet("volume", "ls", *a, "--format", "{{.Name}}").stdout.split()  # noqa: E731
    assert ls() == ["fl-db", "fl-web", "other"]
    assert ls("-f", "dangling=true") == ["fl-db", "other"]
    assert ls("-f", "dangling=0") == ["fl-web"]
    assert ls("-f", "name=fl-") == ["fl-db", "fl-web"]
    assert ls("-f", "name=^o") == ["other"]
    assert ls("-f", "label=tier") == ["fl-web"]
    assert ls("-f", "label=tier=db") == []
    assert ls("-f", "driver=local", "-f", "dangling=true", "-f", "name=fl") == ["fl-db"]
    assert pallet("volume", "ls", "-q", "-f", "name=db").stdout == "fl-db\n"
    out = pallet("volume", "ls", "-f", "name=fl-").stdout
    assert out.splitlines() == ["DRIVER    VOLUME NAME", "local     fl-db", "local     fl-web"]
    out = pallet("volume", "ls", "-f", "label=tier", "--format",
                 '{{.Name}} {{.Driver}} {{.Scope}} {{.Labels}} {{.Label "tier"}}').stdout
    assert out == "fl-web local local tier=web web\n"
    mp = pallet("volume", "ls", "-f", "name=fl-db", "--format", "{{.Mountpoint}}").stdout
    assert mp == f"{pallet.root}/volumes/fl-db/_data\n"
    out = pallet("volume", "ls", "-f", "name=fl-", "--format",
                 "table {{.Name}}\t{{.Driver}}\t{{.Labels}}").stdout
    assert out.splitlines() == ["VOLUME NAME   DRIVER    LABELS", "fl-db         local",
                                "fl-web        local     tier=web"]
    (row,) = [json.loads(ln) for ln in
              pallet("volume", "ls", "-f", "name=fl-db", "--format", "json").stdout.splitlines()]
    assert row == {"Availability": "N/A", "Driver": "local", "Group": "N/A", "Labels": "",
                   "Links": "N/A", "Mountpoint": f"{pallet.root}/volumes/fl-db/_data",
                   "Name": "fl-db", "Scope": "local", "Size": "N/A", "Status": "N/A"}
    for argv, err in [(("-f", "until=1h"), "Error: invalid filter 'until'\n"),
                      (("-f", "dangling=yes"), "Error: invalid filter 'dangling=[yes]'\n")]:
        out = pallet("volume", "ls", *argv)
        assert (out.returncode, out.stdout, out.stderr) == (1, "", err)


@pytest.mark.root
def test_volume_prune_anonymous_unless_all_with_label_filters(pallet):
    pallet("volume", "create", "--label", "keep=1", "fl-keep", check=True)
    pallet("volume", "create", "fl-named", check=True)
    pallet("create", *NONE, "--name", "fl-anon", "-v", "/data", "busybox", "true",
           check=True)
    anon = pallet("volume", "ls", "-q", "-f", "dangling=false").stdout.strip()
    pallet("rm", "fl-anon", check=True)  # leaves its anonymous volume unused
    out = pallet("volume", "prune", input="n\n")
    assert out.stdout == ("WARNING! This will remove anonymous local volumes not used by at "
                          "least one container.\nAre you sure you want to continue? [y/N] \n")
    out = pallet("volume", "prune", "-f", "--filter", "label=keep")
    assert out.stdout == "Total reclaimed space: 0B\n"  # only anonymous ones without -a
    out = pallet("volume", "prune", "-f")
    assert out.stdout == f"Deleted Volumes:\n{anon}\n\nTotal reclaimed space: 0B\n"
    out = pallet("volume", "prune", "-a", "-f", "--filter", "label!=keep")
    assert out.stdout == "Deleted Volumes:\nfl-named\n\nTotal reclaimed space: 0B\n"
    assert pallet("volume", "ls", "-q").stdout == "fl-keep\n"
    bad = pallet("volume", "prune", "-f", "--filter", "until=1h")
    assert (bad.returncode, bad.stderr) == (1, "Error: invalid filter 'until'\n")


@pytest.mark.root
def test_container_prune_until_and_label_filters(pallet):
    old = pallet("create", *NONE, "--label", "tier=web", "busybox", "true", check=True)
    other = pallet("create", *NONE, "busybox", "true", check=True)
    out = pallet("container", "prune", "-f", "--filter", "until=1h")
    assert out.stdout == "Total reclaimed space: 0B\n"  # both are newer than an hour ago
    out = pallet("container", "prune", "-f", "--filter", "label!=tier")
    assert out.stdout == f"Deleted Containers:\n{other.stdout.strip()}\n\n" \
        "Total reclaimed space: 0B\n"
    out = pallet("container", "prune", "-f", "--filter", "until=2100-01-01T00:00:00Z",
                 "--filter", "label=tier=web")
    assert out.stdout.startswith(f"Deleted Containers:\n{old.stdout.strip()}\n")
    bad = pallet("container", "prune", "-f", "--filter", "status=exited")
    assert (bad.returncode, bad.stderr) == (1, "Error: invalid filter 'status'\n")


@pytest.mark.root
def test_system_prune_passes_its_filters_on(pallet):
    kept = pallet("create", *NONE, "--label", "keep=1", "busybox", "true", check=True)
    gone = pallet("create", *NONE, "busybox", "true", check=True)
    out = pallet("system", "prune", "--filter", "label!=keep", input="n\n")
    assert out.stdout.startswith("WARNING! This will remove:\n  - all stopped containers\n")
    assert "\n  Items to be pruned will be filtered with:\n  - label!=keep\n\n" \
        "Are you sure you want to continue? [y/N] " in out.stdout
    out = pallet("system", "prune", "-f", "--filter", "label!=keep")
    assert out.stdout.startswith(f"Deleted Containers:\n{gone.stdout.strip()}\n\n")
    assert pallet("ps", "-aq", "--no-trunc").stdout == kept.stdout
    bad = pallet("system", "prune", "-f", "--volumes", "--filter", "until=1h")
    assert (bad.returncode, bad.stderr) == (
        1, 'Error: ERROR: The "until" filter is not supported with "--volumes"\n')
    bad = pallet("system", "prune", "-f", "--filter", "dangling=true")
    assert (bad.returncode, bad.stderr) == (1, "Error: invalid filter 'dangling'\n")


@pytest.mark.root
def test_ps_size_column(pallet):
    pallet("run", *NONE, "--name", "fl-sized", "busybox", "sh", "-c",
           "head -c 5000 /dev/zero > /five-k", check=True)
    lines = pallet("ps", "-a", "-s").stdout.splitlines()
    assert lines[0].split()[-2:] == ["NAMES", "SIZE"]
    # the file's 5000 bytes as docker counts them (apparent sizes, not disk blocks)
    assert re.search(r"   fl-sized   5kB \(virtual \d+(\.\d+)?MB\)$", lines[1]), lines
    out = pallet("ps", "-a", "--format", "{{.Names}}: {{.Size}}").stdout
    assert re.fullmatch(r"fl-sized: 5kB \(virtual \d+(\.\d+)?MB\)\n", out), out
    assert "SIZE" not in pallet("ps", "-a").stdout


@pytest.mark.root
def test_system_df_verbose_tables(pallet):
    pallet("volume", "create", "fl-vol", check=True)
    cid = pallet("create", *NONE, "--name", "fl-df", "-v", "fl-vol:/v", "busybox", "true",
                 check=True).stdout.strip()
    out = pallet("system", "df", "-v", check=True).stdout
    sections = out.split("\n\n")
    assert sections[0] == "Images space usage:"
    assert re.split(r"  +", sections[1].splitlines()[0]) == [
        "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE",
        "CONTAINERS"]
    assert re.fullmatch(r"busybox +latest +b304c9b79131 +2 years ago +1\.16MB +0B +1\.16MB +1",
                        sections[1].splitlines()[1])
    assert sections[2] == "Containers space usage:"
    head, row = sections[3].splitlines()
    assert re.split(r"  +", head) == ["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES",
                                      "SIZE", "CREATED", "STATUS", "NAMES"]
    assert row.startswith(f"{cid[:12]}   busybox   \"true\"    ") and row.endswith(
        "   Created   fl-df")
    assert sections[4:7] == ["Local Volumes space usage:",
                             "VOLUME NAME   LINKS     SIZE\nfl-vol        1         0B",
                             "Build cache usage: 0B"]
    assert sections[7] == "CACHE ID   CACHE TYPE   SIZE      CREATED   LAST USED   USAGE     " \
        "SHARED\n"
    summary = pallet("system", "df").stdout.splitlines()
    assert [ln.split("  ")[0] for ln in summary] == [
        "TYPE", "Images", "Containers", "Local Volumes", "Build Cache"]


# -- network ls and prune: in process, no container needed --------------------------------


@pytest.fixture
def network(network_cli):
    return network_cli


def test_network_ls_filters_and_formats(network):
    web = network("create", "--subnet", "10.229.10.0/24", "--label", "tier=web",
                  "--internal", "fl-web")[1].strip()
    network("create", "--subnet", "10.229.11.0/24", "fl-db")
    names = lambda *a: network("ls", *a, "--format", "{{.Name}}")[1].split()  # noqa: E731
    assert names() == ["fl-db", "fl-web", "pallet"]
    assert names("-f", "type=custom") == ["fl-db", "fl-web"]
    assert names("-f", "type=builtin") == ["pallet"]
    assert names("-f", "dangling=true") == ["fl-db", "fl-web"]  # no container on them
    assert names("-f", "dangling=false") == ["pallet"]
    assert names("-f", "name=^fl-w") == ["fl-web"]
    assert names("-f", "name=db", "-f", "name=web") == ["fl-db", "fl-web"]
    assert names("-f", f"id={web[:6]}") == ["fl-web"]
    assert names("-f", "label=tier=web") == ["fl-web"]
    assert names("-f", "driver=bridge", "-f", "scope=local", "-f", "label=tier") == ["fl-web"]
    assert names("-f", "scope=swarm") == []
    assert network("ls", "-q", "-f", "name=fl-web") == (0, web[:12] + "\n", "")
    assert network("ls", "-q", "--no-trunc", "-f", "name=fl-web") == (0, web + "\n", "")
    code, out, _ = network("ls", "-f", "name=fl-", "--format",
                           'table {{.Name}}\t{{.Internal}}\t{{.IPv6}}\t{{.Label "tier"}}')
    assert out.splitlines() == ["NAME      INTERNAL   IPV6      LABEL",
                                "fl-db     false      false",
                                "fl-web    true       false     web"]
    code, out, _ = network("ls", "-f", "name=fl-web", "--format",
                           "{{.ID}} {{.Driver}} {{.Scope}} {{.Labels}} {{.CreatedAt}}")
    assert re.fullmatch(rf"{web[:12]} bridge local tier=web "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC\n", out), out
    code, out, _ = network("ls", "-f", "type=custom")
    assert out.splitlines()[0] == "NETWORK ID     NAME      DRIVER    SCOPE"
    for argv, err in [
        (("-f", "color=red"), "Error: invalid filter 'color'\n"),
        (("-f", "type=other"), "Error: Invalid filter: 'type'='other'\n"),
        (("-f", "dangling=maybe"), "Error: invalid value for filter 'dangling', must be "
                                   '"true" (or "1"), or "false" (or "0")\n'),
    ]:
        assert network("ls", *argv) == (1, "", err), argv


def test_network_prune_until_and_label_filters(network):
    network("create", "--subnet", "10.229.12.0/24", "--label", "keep=1", "fl-keep")
    network("create", "--subnet", "10.229.13.0/24", "fl-go")
    assert network("prune", "-f", "--filter", "until=1h") == (0, "", "")  # both too new
    assert network("prune", "-f", "--filter", "label!=keep") == \
        (0, "Deleted Networks:\nfl-go\n", "")
    assert network("prune", "-f", "--filter", "until=2100-01-01T00:00:00Z") == \
        (0, "Deleted Networks:\nfl-keep\n", "")
    assert network("prune", "-f", "--filter", "name=x") == \
        (1, "", "Error: invalid filter 'name'\n")
