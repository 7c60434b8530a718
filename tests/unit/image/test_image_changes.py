"""Pure parts of commit/import/diff: Dockerfile instructions on a config, and the changes
an overlay upper dir holds over layers (whiteouts, opaque dirs, parents), as docker
reports them."""

from __future__ import annotations

import os
import stat

import pytest

from pallet.errors import InvalidArgument
from pallet.image.diff import LayerStack, overlay_changes
from pallet.image.instructions import apply_changes


def test_instructions_set_the_config_as_a_dockerfile_would():
    cfg = apply_changes({"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/srv"}, [
        'ENV A=1 B="x y"', "ENV PATH=$PATH:/opt/bin", 'CMD ["cat", "/etc/motd"]',
        "EXPOSE 80 53/udp 8000-8001", "LABEL team=web", "WORKDIR app", "USER nobody",
        "VOLUME /data", "STOPSIGNAL SIGINT"])
    assert cfg["Env"] == ["A=1", "B=x y", "PATH=/bin:/opt/bin"]
    assert cfg["Cmd"] == ["cat", "/etc/motd"]
    assert set(cfg["ExposedPorts"]) == {"80/tcp", "53/udp", "8000/tcp", "8001/tcp"}
    assert (cfg["Labels"], cfg["WorkingDir"], cfg["User"]) == ({"team": "web"}, "/srv/app",
                                                               "nobody")
    assert (cfg["Volumes"], cfg["StopSignal"]) == ({"/data": {}}, "SIGINT")
    # Shell form; a new ENTRYPOINT drops the inherited CMD, not one set alongside it.
    assert apply_changes({"Cmd": ["sh"]}, ["ENTRYPOINT echo hi"]) == \
        {"Cmd": None, "Entrypoint": ["/bin/sh", "-c", "echo hi"]}
    assert apply_changes({}, ["CMD x", "ENTRYPOINT [\"e\"]"])["Cmd"] == ["/bin/sh", "-c", "x"]
    assert apply_changes({}, ["ENV K V W"]) == {"Env": ["K=V W"]}


@pytest.mark.parametrize("change, message", [
    ("RUN make", "run is not a valid change command"),
    ("FROM scratch", "from is not a valid change command"),
    ("ENV", "ENV requires at least one argument"),
    ("EXPOSE 99999", "invalid containerPort: 99999"),
    ("EXPOSE 80/icmp", "invalid proto: icmp"),
])
def test_bad_instructions_are_refused_with_dockers_words(change, message):
    with pytest.raises(InvalidArgument, match=message):
        apply_changes({}, [change])


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts need root (mknod)")


def _whiteout(path):
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


@needs_root
def test_overlay_changes_read_whiteouts_opaque_dirs_and_parents(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for d in ("etc", "var/lib", "opt/old", "gone"):
        (lower / d).mkdir(parents=True)
    (lower / "etc" / "passwd").write_text("root")
    (lower / "opt" / "old" / "f").write_text("old")
    (lower / "opt" / "keep").write_text("k")
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "passwd").write_text("root\nme")
    (upper / "etc" / "hosts").write_text("")  # a mount point the runtime made
    (upper / "var" / "lib" / "new").mkdir(parents=True)
    (upper / "opt").mkdir()
    os.setxattr(upper / "opt", "trusted.overlay.opaque", b"y")  # rm -rf /opt; mkdir /opt
    (upper / "opt" / "keep").write_text("k2")
    _whiteout(upper / "gone")
    _whiteout(upper / "never-there")  # made and deleted in the container: no change
    for d in ("etc", "var", "var/lib"):  # copied up only as parents: unchanged themselves
        st = os.stat(lower / d)
        os.utime(upper / d, ns=(st.st_atime_ns, st.st_mtime_ns))
    got = overlay_changes(str(upper), [str(lower)], lambda p: p == "/etc/hosts")
    assert [str(c) for c in got] == [
        "C /etc/passwd", "D /gone", "C /opt", "C /opt/keep", "D /opt/old", "C /var/lib",
        "A /var/lib/new"]

@needs_root
def test_layer_stack_merges_layers_as_overlay_does(tmp_path):
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    (bottom / "a").mkdir(parents=True)
    (bottom / "a" / "x").write_text("x")
    (bottom / "b").write_text("b")
    (bottom / "link").symlink_to("/etc")
    (top / "a").mkdir(parents=True)
    _whiteout(top / "b")
    stack = LayerStack([str(top), str(bottom)])
    assert stack.lstat("/a/x") is not None and stack.lstat("/b") is None
    assert stack.listdir("/") == {"a", "link"}
    assert stack.lstat("/link/passwd") is None  # never through a symlink to the host
    os.setxattr(top / "a", "trusted.overlay.opaque", b"y")
    stack = LayerStack([str(top), str(bottom)])
    assert stack.lstat("/a/x") is None and stack.listdir("/a") == set()
