"""Users and groups resolve from the image's own /etc files, never the host's.

Each story runs twice: once through openat2(RESOLVE_IN_ROOT), once through the
userspace walk used on kernels without it.
"""

from __future__ import annotations

import os

import pytest

from pallet.engine import users
from pallet.engine.users import ResolvedUser, parse_group, parse_passwd, resolve_ids, resolve_user
from pallet.errors import InvalidArgument

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
# a comment line
broken line without fields
bad:x:notanumber:0::/:/bin/sh
"""
GROUP = """\
root:x:0:
wheel:x:10:root,app
audio:x:29:app
www-data:x:33:
app:x:1000:
staff:x:50:
nogroup:x:65534:
"""


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "walk":
        monkeypatch.setattr(users, "_openat2_missing", True)
    else:
        monkeypatch.setattr(users, "_openat2_missing", False)
    return request.param


@pytest.fixture
def rootfs(tmp_path, resolver) -> str:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return str(root)


def test_a_user_nobody_from_the_images_passwd_becomes_uid_65534(rootfs):
    u = resolve_user(rootfs, "nobody")
    assert (u.uid, u.gid, u.home, u.name) == (65534, 65534, "/nonexistent", "nobody")


def test_no_user_means_root_with_roots_groups_from_the_image(rootfs):
    u = resolve_user(rootfs, "")
    assert (u.uid, u.gid, u.home) == (0, 0, "/root")
    # root is listed in wheel, so like runc it gets wheel as a supplementary group.
    assert u.additional_gids == (10,)


def test_a_named_user_gets_the_groups_it_is_a_member_of(rootfs):
    u = resolve_user(rootfs, "app")
    assert (u.uid, u.gid) == (1000, 1000)
    assert u.additional_gids == (10, 29)


def test_an_explicit_group_replaces_the_implicit_supplementary_groups(rootfs):
    u = resolve_user(rootfs, "app:staff")
    assert (u.uid, u.gid, u.additional_gids) == (1000, 50, ())


def test_numeric_uid_and_gid_are_taken_as_given(rootfs):
    u = resolve_user(rootfs, "4242:4343")
    assert (u.uid, u.gid, u.home) == (4242, 4343, "/")


def test_a_numeric_uid_in_passwd_takes_its_home_and_primary_group(rootfs):
    u = resolve_user(rootfs, "33")
    assert (u.uid, u.gid, u.home, u.name) == (33, 33, "/var/www", "www-data")


def test_a_name_not_in_passwd_is_refused_like_docker(rootfs):
    with pytest.raises(
        InvalidArgument, match="unable to find user foo: no matching entries in passwd file"
    ):
        resolve_user(rootfs, "foo")


def test_a_group_not_in_the_group_file_is_refused(rootfs):
    with pytest.raises(
        InvalidArgument, match="unable to find group video: no matching entries in group file"
    ):
        resolve_user(rootfs, "app:video")


def test_group_add_takes_names_and_numbers_without_duplicates(rootfs):
    u = resolve_user(rootfs, "app", ["audio", "777", "staff"])
    assert u.additional_gids == (10, 29, 777, 50)
    with pytest.raises(InvalidArgument, match="unable to find group nosuch"):
        resolve_user(rootfs, "app", ["nosuch"])


def test_an_image_without_passwd_still_runs_numeric_users_but_not_names(tmp_path, resolver):
    root = tmp_path / "empty"
    root.mkdir()
    assert resolve_user(str(root), "1000") == ResolvedUser(uid=1000, gid=0, home="/")
    assert resolve_user(str(root), "") == ResolvedUser(uid=0, gid=0, home="/")
    with pytest.raises(InvalidArgument, match="unable to find user app"):
        resolve_user(str(root), "app")


def test_an_absolute_passwd_symlink_resolves_inside_the_rootfs(rootfs):
    etc = os.path.join(rootfs, "etc")
    os.makedirs(os.path.join(rootfs, "real"))
    os.rename(os.path.join(etc, "passwd"), os.path.join(rootfs, "real", "passwd"))
    os.symlink("/real/passwd", os.path.join(etc, "passwd"))
    assert resolve_user(rootfs, "nobody").uid == 65534


def test_a_passwd_symlink_pointing_out_of_the_rootfs_never_reads_the_host_file(rootfs, tmp_path):
    # A hostile image: /etc/passwd -> ../../../host_passwd, which exists next to the rootfs.
    (tmp_path / "host_passwd").write_text("evil:x:0:0::/:/bin/sh\n")
    os.unlink(os.path.join(rootfs, "etc", "passwd"))
    os.symlink("../../../host_passwd", os.path.join(rootfs, "etc", "passwd"))
    with pytest.raises(InvalidArgument, match="unable to find user evil"):
        resolve_user(rootfs, "evil")


def test_an_etc_symlink_to_slash_means_the_rootfs_top_not_the_hosts(rootfs):
    os.rename(os.path.join(rootfs, "etc"), os.path.join(rootfs, "etc.real"))
    os.symlink("/", os.path.join(rootfs, "etc"))
    # /etc -> / inside the container, so /etc/passwd is <rootfs>/passwd (absent),
    # never the host's /etc/passwd which has a root entry.
    with pytest.raises(InvalidArgument, match="unable to find user daemon"):
        resolve_user(rootfs, "daemon")
    with open(os.path.join(rootfs, "passwd"), "w") as f:
        f.write("inner:x:7:7::/in:/bin/sh\n")
    assert resolve_user(rootfs, "inner").uid == 7


def test_a_symlink_loop_in_the_image_is_a_clear_error(rootfs):
    os.unlink(os.path.join(rootfs, "etc", "passwd"))
    os.symlink("passwd", os.path.join(rootfs, "etc", "passwd"))
    with pytest.raises(InvalidArgument, match="cannot read /etc/passwd in the image"):
        resolve_user(rootfs, "app")


def test_a_passwd_that_is_a_directory_is_refused(rootfs):
    os.unlink(os.path.join(rootfs, "etc", "passwd"))
    os.mkdir(os.path.join(rootfs, "etc", "passwd"))
    with pytest.raises(InvalidArgument, match="not a regular file"):
        resolve_user(rootfs, "app")


def test_malformed_lines_are_skipped_and_ids_out_of_range_refused():
    entries = parse_passwd(PASSWD)
    assert [e.name for e in entries] == ["root", "daemon", "www-data", "app", "nobody"]
    assert [g.name for g in parse_group(GROUP)][:2] == ["root", "wheel"]
    with pytest.raises(InvalidArgument, match="out of range"):
        resolve_ids("4294967295", entries, [])
    with pytest.raises(InvalidArgument, match="invalid user"):
        resolve_ids("app:", entries, [])


def test_a_fifo_planted_at_etc_group_is_refused_instead_of_blocking(rootfs):
    os.unlink(os.path.join(rootfs, "etc", "group"))
    os.mkfifo(os.path.join(rootfs, "etc", "group"))
    with pytest.raises(InvalidArgument, match="/etc/group in the image is not a regular file"):
        resolve_user(rootfs, "app")
