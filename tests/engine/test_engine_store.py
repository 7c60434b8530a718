"""The engine's durable store, used the way the CLI and the CRI server use it."""

from __future__ import annotations

import multiprocessing
import os
import re
import sqlite3
import stat

import pytest

from pallet.engine import store as store_mod
from pallet.engine.store import (
    ContainerFilter,
    ContainerRecord,
    NetworkRecord,
    PodFilter,
    PodRecord,
    Store,
    VolumeRecord,
    new_id,
    random_name,
)
from pallet.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound


@pytest.fixture
def db(tmp_path):
    with Store(str(tmp_path / "state")) as s:
        yield s


def container(name: str, id: str | None = None, **kw) -> ContainerRecord:
    return ContainerRecord(id=id or new_id(), name=name, **kw)


def test_ids_are_64_hex_and_names_are_adjective_surname():
    for _ in range(200):
        i = new_id()
        assert re.fullmatch(r"[0-9a-f]{64}", i) and not i[:12].isdigit()
    assert re.fullmatch(r"[a-z]+_[a-z]+", random_name())
    assert re.fullmatch(r"[a-z]+_[a-z]+\d", random_name(retry=1))


def test_a_container_is_found_by_full_id_name_slash_name_and_short_id(db):
    c = db.add_container(
        container("web", image_ref="docker.io/library/nginx:latest", labels={"tier": "web"})
    )
    assert c.created_at > 0
    for ref in (c.id, "web", "/web", c.id[:12], c.id[:1]):
        got = db.get_container(ref)
        assert got.id == c.id and got.labels == {"tier": "web"} and got.exit_code is None


def test_an_ambiguous_id_prefix_is_an_error_naming_the_prefix(db):
    db.add_container(container("one", "abc1" + "0" * 60))
    db.add_container(container("two", "abc2" + "0" * 60))
    with pytest.raises(InvalidArgument, match="prefix 'abc' is ambiguous"):
        db.get_container("abc")
    assert db.get_container("abc2").name == "two"


def test_an_unknown_reference_is_not_found_like_docker(db):
    with pytest.raises(NotFound, match="no such container: nope"):
        db.get_container("nope")
    with pytest.raises(InvalidArgument, match="empty"):
        db.get_container("")


def test_a_name_already_in_use_is_a_conflict_naming_the_owner(db):
    first = db.add_container(container("web"))
    with pytest.raises(
        AlreadyExists, match=f'name "/web" is already in use by container "{first.id}"'
    ):
        db.add_container(container("web"))
    with pytest.raises(AlreadyExists, match="already exists"):
        db.add_container(container("other", first.id))


@pytest.mark.parametrize("name", ["a", "-web", "we b", "web/1", "ünïcode"])
def test_names_docker_would_refuse_are_refused(db, name):
    with pytest.raises(InvalidArgument, match="invalid container name"):
        db.add_container(container(name))


def test_bad_ids_and_states_are_refused(db):
    with pytest.raises(InvalidArgument, match="expected 64 hex digits"):
        db.add_container(container("web", "XYZ"))
    with pytest.raises(InvalidArgument, match="invalid container state 'zombie'"):
        db.add_container(container("web", state="zombie"))


def test_generated_names_avoid_names_in_use(db, monkeypatch):
    names = iter(["busy_bee", "busy_bee1", "calm_curie"])
    monkeypatch.setattr(store_mod, "random_name", lambda retry=0: next(names))
    db.add_container(container("busy_bee"))
    db.add_container(container("busy_bee1"))
    assert db.unique_container_name() == "calm_curie"


def test_ps_filters_by_label_state_name_pod_and_id_prefix_newest_first(db):
    pod = db.add_pod(PodRecord(id=new_id(), name="pod1"))
    a = db.add_container(
        container("aa", labels={"app": "web", "env": "prod"}, state="running", created_at=1)
    )
    b = db.add_container(
        container("bb", labels={"app": "web", "env": "dev"}, state="exited", created_at=2)
    )
    c = db.add_container(
        container("cc", labels={"app": "db"}, state="running", pod_id=pod.id, created_at=3)
    )

    def ids(**kw):
        return [r.name for r in db.list_containers(ContainerFilter(**kw))]

    assert [r.name for r in db.list_containers()] == ["cc", "bb", "aa"]
    assert ids(labels={"app": "web"}) == ["bb", "aa"]
    assert ids(labels={"app": "web", "env": "prod"}) == ["aa"]
    assert ids(labels={"env": None}) == ["bb", "aa"]
    assert ids(states=["running"]) == ["cc", "aa"]
    assert ids(states=["running"], labels={"app": "web"}) == ["aa"]
    assert ids(pod_id=pod.id) == ["cc"]
    assert ids(name="/bb") == ["bb"]
    assert ids(id_prefix=a.id[:8]) == ["aa"]
    assert b.id != c.id
    with pytest.raises(InvalidArgument, match="invalid container state"):
        ids(states=["up"])


def test_updates_are_atomic_and_can_require_the_current_state(db):
    c = db.add_container(container("web"))
    started = db.update_container(
        c.id, expect_state="created", state="running", pid=4242, started_at=10
    )
    assert (started.state, started.pid) == ("running", 4242)
    # A second `start` racing the first sees the new state and is refused.
    with pytest.raises(FailedPrecondition, match="is running, not created"):
        db.update_container(c.id, expect_state="created", state="running", pid=1)
    assert db.get_container(c.id).pid == 4242
    done = db.update_container(
        c.id, expect_state=("running", "paused"), state="exited", exit_code=137, pid=0
    )
    assert (done.state, done.exit_code) == ("exited", 137)


def test_updating_labels_changes_what_filters_find(db):
    c = db.add_container(container("web", labels={"v": "1"}))
    db.update_container(c.id, labels={"v": "2"})
    assert db.list_containers(ContainerFilter(labels={"v": "1"})) == []
    assert [r.id for r in db.list_containers(ContainerFilter(labels={"v": "2"}))] == [c.id]


def test_rename_keeps_names_unique_and_unknown_fields_are_refused(db):
    a = db.add_container(container("aa"))
    db.add_container(container("bb"))
    assert db.update_container(a.id, name="cc").name == "cc"
    with pytest.raises(AlreadyExists, match='"/bb" is already in use'):
        db.update_container(a.id, name="bb")
    with pytest.raises(InvalidArgument, match="cannot update container field"):
        db.update_container(a.id, colour="red")
    with pytest.raises(NotFound):
        db.update_container(new_id(), state="running")


def test_a_failed_transaction_leaves_nothing_behind(db):
    with pytest.raises(RuntimeError), db.transaction():
        db.add_container(container("ghost"))
        raise RuntimeError("crash between two writes")
    assert db.list_containers() == []


def test_remove_and_remove_again(db):
    c = db.add_container(container("web", labels={"a": "b"}))
    db.remove_container(c.id)
    with pytest.raises(NotFound):
        db.get_container("web")
    with pytest.raises(NotFound):
        db.remove_container(c.id)
    # The label index went with it.
    assert db.list_containers(ContainerFilter(labels={"a": "b"})) == []


def test_a_pod_cannot_be_removed_while_it_has_containers(db):
    pod = db.add_pod(
        PodRecord(
            id=new_id(), name="k8s_POD_web_default_uid_0", labels={"io.kubernetes.pod.name": "web"}
        )
    )
    c = db.add_container(container("web", pod_id=pod.id))
    with pytest.raises(FailedPrecondition, match="still has containers"):
        db.remove_pod(pod.id)
    db.remove_container(c.id)
    db.remove_pod(pod.id)
    with pytest.raises(NotFound, match="no such pod"):
        db.get_pod(pod.id[:10])


def test_a_container_in_a_missing_pod_is_refused(db):
    with pytest.raises(NotFound, match="no such pod"):
        db.add_container(container("web", pod_id=new_id()))


def test_pods_filter_by_state_and_label(db):
    p1 = db.add_pod(
        PodRecord(id=new_id(), name="p1", labels={"app": "a"}, netns_path="/run/netns/p1")
    )
    db.add_pod(PodRecord(id=new_id(), name="p2", labels={"app": "b"}, state="notready"))
    assert [p.name for p in db.list_pods(PodFilter(labels={"app": "a"}))] == ["p1"]
    assert [p.name for p in db.list_pods(PodFilter(states=["notready"]))] == ["p2"]
    assert db.update_pod(p1.id, state="notready").state == "notready"
    assert db.get_pod("p1").netns_path == "/run/netns/p1"


def test_networks_and_volumes(db):
    net = db.add_network(
        NetworkRecord(
            id=new_id(),
            name="backend",
            subnet="10.89.0.0/24",
            gateway="10.89.0.1",
            labels={"x": "1"},
        )
    )
    assert (
        db.get_network("backend").id == net.id
        and db.get_network(net.id[:6]).subnet == "10.89.0.0/24"
    )
    assert [n.name for n in db.list_networks({"x": "1"})] == ["backend"]
    assert db.list_networks({"x": "2"}) == []
    db.update_network(net.id, config={"cniVersion": "1.0.0"})
    assert db.get_network("backend").config == {"cniVersion": "1.0.0"}
    db.remove_network(net.id)

    vol = db.add_volume(
        VolumeRecord(
            name="data", mountpoint="/var/lib/pallet/volumes/data/_data", labels={"k": "v"}
        )
    )
    assert db.get_volume("data").mountpoint == vol.mountpoint
    with pytest.raises(AlreadyExists, match="volume data already exists"):
        db.add_volume(VolumeRecord(name="data"))
    assert [v.name for v in db.list_volumes({"k": None})] == ["data"]
    assert db.update_volume("data", labels={}).labels == {}
    db.remove_volume("data")
    with pytest.raises(NotFound, match="no such volume: data"):
        db.get_volume("data")


def test_state_survives_reopening_in_wal_mode_with_a_private_file(tmp_path):
    root = str(tmp_path / "state")
    with Store(root) as s:
        c = s.add_container(container("web", config={"env": ["SECRET=1"]}))
    assert stat.S_IMODE(os.stat(os.path.join(root, "pallet.db")).st_mode) == 0o600
    with Store(root) as s:
        assert s.get_container("web").config == {"env": ["SECRET=1"]}
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.id


def test_a_database_from_a_newer_pallet_is_refused(tmp_path):
    root = tmp_path / "state"
    Store(str(root)).close()
    conn = sqlite3.connect(root / "pallet.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(FailedPrecondition, match="schema version 99"):
        Store(str(root))


def _worker(root: str, n: int, shared_id: str, worker: int) -> None:
    s = Store(root)
    for i in range(n):
        s.add_container(container(f"w{worker}-{i}"))
        # Read-modify-write of one counter: only safe if the transaction is real.
        with s.transaction():
            count = s.get_container(shared_id).restart_count
            s.update_container(shared_id, restart_count=count + 1)
    s.close()


def test_concurrent_processes_never_lose_an_update(tmp_path):
    root = str(tmp_path / "state")
    with Store(root) as s:
        shared = s.add_container(container("shared"))
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(root, 25, shared.id, w)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    with Store(root) as s:
        assert s.get_container(shared.id).restart_count == 150
        assert len(s.list_containers()) == 151


def test_many_processes_opening_a_new_store_at_once_all_succeed(tmp_path):
    """Several first `pallet` commands at one time: switching a fresh database to WAL
    answered "database is locked" at once to the losers (seen in CI)."""
    import multiprocessing as mp

    def opener(root: str, q) -> None:  # noqa: ANN001
        try:
            Store(root).close()
            q.put("ok")
        except Exception as e:  # noqa: BLE001 - reported to the test
            q.put(repr(e))

    ctx = mp.get_context("fork")
    for i in range(15):
        root = str(tmp_path / f"r{i}")
        q = ctx.Queue()
        procs = [ctx.Process(target=opener, args=(root, q)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert [q.get(timeout=5) for _ in procs] == ["ok"] * 6



def test_a_second_store_in_a_process_keeps_the_first_ones_locks(tmp_path):
    # Two Stores of one database in one process (a CLI command holding two Engines). Opening
    # the second must not drop the first's POSIX locks (closing any fd of a file drops all of
    # a process's locks on it): else the next process to close its connection thinks it is
    # the last one, deletes the WAL and the shared memory, and the commits of this process
    # that follow go to unlinked files, lost.
    import subprocess
    import sys

    root = str(tmp_path / "state")
    first = Store(root)
    first.add_container(container("before"))
    second = Store(root)
    reader = subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect("
                             "sys.argv[1]); c.execute('SELECT count(*) FROM containers'); "
                             "c.close()", first.path])
    assert reader.returncode == 0
    assert os.path.exists(first.path + "-wal") and os.path.exists(first.path + "-shm")
    second.add_container(container("after"))
    first.close()
    second.close()
    with Store(root) as again:
        assert sorted(c.name for c in again.list_containers()) == ["after", "before"]
