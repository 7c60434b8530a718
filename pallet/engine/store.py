"""The engine's one durable store: pods, containers, networks and volumes in SQLite
(WAL mode) at <root>/pallet.db, shared safely by concurrent CLIs and the daemon.

In a paragraph: each object is one row; labels are also kept in a (key, value)
table so label filters use an index; every write runs in a BEGIN IMMEDIATE
transaction, so two processes never both read-then-write stale state, and a
writer waits (busy_timeout) rather than failing while another one commits.
Lookups accept a full id, a name, or a unique id prefix, in docker's order.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from pallet.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

SCHEMA_VERSION = 1
DB_NAME = "pallet.db"
BUSY_TIMEOUT_S = 30.0

CONTAINER_STATES = ("created", "running", "paused", "restarting", "exited", "removing", "unknown")
POD_STATES = ("ready", "notready")

# docker's rule for names; also keeps names safe as path components and log tags.
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_HEX = re.compile(r"^[0-9a-f]+$")


def now_ns() -> int:
    return time.time_ns()


def new_id() -> str:
    """A random 64-hex id whose 12-char short form is never all digits (as docker),
    so a short id is never mistaken for a number."""
    while True:
        value = secrets.token_hex(32)
        if not value[:12].isdigit():
            return value


# Our own lists in docker's adjective_surname style; surnames are scientists and engineers.
_ADJECTIVES = (
    "admiring", "adoring", "agile", "amazing", "bold", "brave", "bright", "busy", "calm",
    "careful", "charming", "cheerful", "clever", "cool", "curious", "daring", "eager",
    "elated", "epic", "fervent", "festive", "focused", "friendly", "gallant", "gentle",
    "happy", "hopeful", "jolly", "keen", "kind", "lucid", "merry", "modest", "nifty",
    "noble", "patient", "peaceful", "quirky", "relaxed", "serene", "sharp", "sleepy",
    "steady", "sweet", "tender", "trusting", "upbeat", "vibrant", "wise", "zealous",
)  # fmt: skip
_SURNAMES = (
    "agnesi", "babbage", "bardeen", "bohr", "boole", "brahe", "carson", "cerf", "curie",
    "darwin", "dijkstra", "einstein", "euclid", "euler", "faraday", "fermi", "feynman",
    "franklin", "galileo", "gauss", "goodall", "hamilton", "hawking", "hopper", "hypatia",
    "johnson", "kepler", "knuth", "lamarr", "leakey", "lovelace", "maxwell", "meitner",
    "mendel", "mirzakhani", "morse", "newton", "noether", "pasteur", "planck", "ramanujan",
    "ritchie", "sagan", "shannon", "somerville", "tesla", "thompson", "torvalds", "turing",
    "volta",
)  # fmt: skip


def random_name(retry: int = 0) -> str:
    """adjective_surname; after a collision docker appends a digit, and so do we."""
    name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_SURNAMES)}"
    return f"{name}{secrets.randbelow(10)}" if retry else name


def validate_name(name: str, kind: str = "container") -> str:
    clean = name[1:] if name.startswith("/") else name
    if not _NAME.match(clean):
        raise InvalidArgument(
            f"invalid {kind} name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, "
            "at least two characters"
        )
    return clean


@dataclass
class PodRecord:
    id: str
    name: str
    created_at: int = 0  # ns since the epoch; 0 means "now" on add
    state: str = "ready"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    runtime_handler: str = ""
    netns_path: str = ""
    cgroup_parent: str = ""
    log_directory: str = ""


@dataclass
class ContainerRecord:
    id: str
    name: str
    image_ref: str = ""
    image_id: str = ""
    pod_id: str | None = None
    created_at: int = 0
    state: str = "created"
    pid: int = 0
    exit_code: int | None = None
    started_at: int = 0
    finished_at: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    runtime_handler: str = ""
    log_path: str = ""
    restart_policy: str = "no"
    restart_count: int = 0


@dataclass
class NetworkRecord:
    id: str
    name: str
    driver: str = "bridge"
    subnet: str = ""
    gateway: str = ""
    created_at: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class VolumeRecord:
    name: str
    driver: str = "local"
    mountpoint: str = ""
    created_at: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class PodFilter:
    """All given conditions must hold. labels: key -> value, or None for "has key"."""

    id_prefix: str = ""
    name: str = ""
    labels: Mapping[str, str | None] = field(default_factory=dict)
    states: Sequence[str] = ()


@dataclass
class ContainerFilter(PodFilter):
    pod_id: str = ""


_SCHEMA = """
CREATE TABLE pods (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    config TEXT NOT NULL,
    runtime_handler TEXT NOT NULL,
    netns_path TEXT NOT NULL,
    cgroup_parent TEXT NOT NULL,
    log_directory TEXT NOT NULL
);
CREATE INDEX pods_state ON pods(state);
CREATE TABLE containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image_ref TEXT NOT NULL,
    image_id TEXT NOT NULL,
    pod_id TEXT REFERENCES pods(id) ON DELETE RESTRICT,
    created_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    pid INTEGER NOT NULL,
    exit_code INTEGER,
    started_at INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    config TEXT NOT NULL,
    runtime_handler TEXT NOT NULL,
    log_path TEXT NOT NULL,
    restart_policy TEXT NOT NULL,
    restart_count INTEGER NOT NULL
);
CREATE INDEX containers_pod ON containers(pod_id);
CREATE INDEX containers_state ON containers(state);
CREATE TABLE pod_labels (
    owner TEXT NOT NULL REFERENCES pods(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE INDEX pod_labels_kv ON pod_labels(key, value);
CREATE TABLE container_labels (
    owner TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE INDEX container_labels_kv ON container_labels(key, value);
CREATE TABLE networks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    driver TEXT NOT NULL,
    subnet TEXT NOT NULL,
    gateway TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    labels TEXT NOT NULL,
    config TEXT NOT NULL
);
CREATE TABLE volumes (
    name TEXT PRIMARY KEY,
    driver TEXT NOT NULL,
    mountpoint TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    labels TEXT NOT NULL,
    options TEXT NOT NULL
);
"""


def _labels_match(labels: Mapping[str, str], wanted: Mapping[str, str | None]) -> bool:
    return all(k in labels and (v is None or labels[k] == v) for k, v in wanted.items())


R = TypeVar("R", PodRecord, ContainerRecord, NetworkRecord, VolumeRecord)


@dataclass(frozen=True)
class _Kind:
    table: str
    record: type
    noun: str  # for messages
    key: str  # primary-key column
    json_cols: tuple[str, ...]
    label_table: str = ""  # set when labels are indexed for filtering
    states: tuple[str, ...] = ()


_PODS = _Kind(
    "pods", PodRecord, "pod", "id", ("labels", "annotations", "config"), "pod_labels", POD_STATES
)
_CONTAINERS = _Kind(
    "containers",
    ContainerRecord,
    "container",
    "id",
    ("labels", "annotations", "config"),
    "container_labels",
    CONTAINER_STATES,
)
_NETWORKS = _Kind("networks", NetworkRecord, "network", "id", ("labels", "config"))
_VOLUMES = _Kind("volumes", VolumeRecord, "volume", "name", ("labels", "options"))


class Store:
    """Open (creating if needed) <root>/pallet.db. Use one Store per process; it is
    safe to share between threads, and any number of processes may open the file."""

    def __init__(self, root: str, busy_timeout: float = BUSY_TIMEOUT_S):
        os.makedirs(root, mode=0o711, exist_ok=True)
        self.path = os.path.join(root, DB_NAME)
        # Created 0600 before SQLite sees it: configs hold env vars, i.e. secrets. Only when
        # missing: closing any fd of an open database drops every POSIX lock this process
        # holds on it (another Store's too), and the next process to close its connection
        # would then delete the WAL under that Store's feet, losing its later commits.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC,
                             0o600))
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        self._set_wal(busy_timeout)
        # NORMAL in WAL mode survives process crashes; a power cut may lose the
        # last commits, but it also kills every container, and the engine
        # reconciles its state from the monitors' exit files on start.
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def _set_wal(self, budget: float) -> None:
        # Switching a fresh database to WAL needs an exclusive lock, and SQLite answers
        # "database is locked" at once (no busy handler) when another process is doing
        # the same: several first `pallet` commands at one time. Retry within the budget.
        deadline = time.monotonic() + budget
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def generation(self) -> int:
        """A number that changes whenever another process (connection) commits, so a poller
        re-reads only after a change. (SQLite's data_version: this Store's own commits leave
        it as it was.)"""
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ transactions

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Group several calls into one atomic write; nested uses join the outer one.

        BEGIN IMMEDIATE takes the write lock up front, so a read-check-write inside
        cannot race another process (and cannot deadlock on a lock upgrade)."""
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self._db
            except BaseException:
                self._depth -= 1
                if outer:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise FailedPrecondition(
                    f"{self.path} has schema version {version}, newer than this pallet "
                    f"understands ({SCHEMA_VERSION}); upgrade pallet"
                )
            if version == 0:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ------------------------------------------------------------ generic rows

    def _row_values(self, kind: _Kind, rec: Any) -> dict[str, Any]:
        values = asdict(rec)
        for col in kind.json_cols:
            values[col] = json.dumps(values[col], sort_keys=True)
        return values

    def _from_row(self, kind: _Kind, row: sqlite3.Row) -> Any:
        values = dict(row)
        for col in kind.json_cols:
            values[col] = json.loads(values[col])
        return kind.record(**values)

    def _check_state(self, kind: _Kind, state: str) -> None:
        if kind.states and state not in kind.states:
            raise InvalidArgument(
                f"invalid {kind.noun} state {state!r}; use one of {', '.join(kind.states)}"
            )

    def _write_labels(self, kind: _Kind, owner: str, labels: Mapping[str, str]) -> None:
        if not kind.label_table:
            return
        self._db.execute(f"DELETE FROM {kind.label_table} WHERE owner = ?", (owner,))
        self._db.executemany(
            f"INSERT INTO {kind.label_table} (owner, key, value) VALUES (?, ?, ?)",
            [(owner, k, str(v)) for k, v in labels.items()],
        )

    def _add(self, kind: _Kind, rec: R) -> R:
        if kind.key == "id" and not (len(rec.id) == 64 and _HEX.match(rec.id)):
            raise InvalidArgument(f"invalid {kind.noun} id {rec.id!r}: expected 64 hex digits")
        rec.name = validate_name(rec.name, kind.noun)
        if hasattr(rec, "state"):
            self._check_state(kind, rec.state)
        if not rec.created_at:
            rec.created_at = now_ns()
        values = self._row_values(kind, rec)
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self.transaction() as db:
            try:
                db.execute(
                    f"INSERT INTO {kind.table} ({cols}) VALUES ({marks})", list(values.values())
                )
            except sqlite3.IntegrityError as e:
                raise self._integrity(kind, rec, e) from None
            self._write_labels(kind, getattr(rec, kind.key), rec.labels)
        return rec

    def _integrity(self, kind: _Kind, rec: Any, err: sqlite3.IntegrityError) -> Exception:
        text = str(err)
        if f"{kind.table}.{kind.key}" in text:
            return AlreadyExists(f"{kind.noun} {getattr(rec, kind.key)} already exists")
        if f"{kind.table}.name" in text:
            row = self._db.execute(
                f"SELECT {kind.key} FROM {kind.table} WHERE name = ?", (rec.name,)
            ).fetchone()
            owner = row[0] if row else "?"
            return AlreadyExists(
                f'Conflict. The {kind.noun} name "/{rec.name}" is already in use by {kind.noun} '
                f'"{owner}". You have to remove (or rename) that {kind.noun} to be able to reuse that name.'
            )
        if "FOREIGN KEY" in text:
            return NotFound(f"no such pod: {getattr(rec, 'pod_id', '')}; create the pod first")
        return InvalidArgument(f"{kind.noun} {getattr(rec, kind.key)}: {text}")

    def _resolve(self, kind: _Kind, ref: str) -> sqlite3.Row:
        """Full id, then name, then unique id prefix — docker's order."""
        if not ref:
            raise InvalidArgument(f"{kind.noun} reference is empty; give an id or a name")
        table = kind.table
        row = self._db.execute(f"SELECT * FROM {table} WHERE {kind.key} = ?", (ref,)).fetchone()
        if row is not None:
            return row
        name = ref[1:] if ref.startswith("/") else ref
        row = self._db.execute(f"SELECT * FROM {table} WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return row
        if kind.key == "id" and _HEX.match(ref):
            rows = self._db.execute(
                f"SELECT * FROM {table} WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
                (ref, ref + "g"),  # 'g' sorts after every hex digit
            ).fetchall()
            if len(rows) == 1:
                return rows[0]
            if len(rows) > 1:
                raise InvalidArgument(
                    f"{kind.noun} id prefix {ref!r} is ambiguous: it matches more than one "
                    f"{kind.noun}; give more characters of the id, or the name"
                )
        raise NotFound(f"no such {kind.noun}: {ref}")

    def _get(self, kind: _Kind, ref: str) -> Any:
        with self._lock:
            return self._from_row(kind, self._resolve(kind, ref))

    def _list(self, kind: _Kind, flt: PodFilter | None) -> list[Any]:
        where: list[str] = []
        params: list[Any] = []
        if flt is not None:
            if flt.id_prefix:
                where.append(f"t.{kind.key} >= ? AND t.{kind.key} < ?")
                params += [flt.id_prefix, flt.id_prefix + "\U0010ffff"]
            if flt.name:
                where.append("t.name = ?")
                params.append(flt.name[1:] if flt.name.startswith("/") else flt.name)
            if flt.states:
                for s in flt.states:
                    self._check_state(kind, s)
                where.append(f"t.state IN ({', '.join('?' for _ in flt.states)})")
                params += list(flt.states)
            # Kinds without a label table (networks, volumes) are few: filtered below.
            for key, value in flt.labels.items() if kind.label_table else ():
                cond = f"EXISTS (SELECT 1 FROM {kind.label_table} l WHERE l.owner = t.{kind.key} AND l.key = ?"
                params.append(key)
                if value is not None:
                    cond += " AND l.value = ?"
                    params.append(value)
                where.append(cond + ")")
            if isinstance(flt, ContainerFilter) and flt.pod_id:
                where.append("t.pod_id = ?")
                params.append(flt.pod_id)
        sql = f"SELECT t.* FROM {kind.table} t"
        if where:
            sql += " WHERE " + " AND ".join(f"({w})" for w in where)
        sql += " ORDER BY t.created_at DESC, t.name"
        with self._lock:
            out = [self._from_row(kind, r) for r in self._db.execute(sql, params)]
        if flt is not None and flt.labels and not kind.label_table:
            out = [r for r in out if _labels_match(r.labels, flt.labels)]
        return out

    def _update(
        self,
        kind: _Kind,
        key: str,
        expect_state: str | Sequence[str] | None,
        changes: dict[str, Any],
    ) -> Any:
        allowed = {f.name for f in fields(kind.record)} - {kind.key, "created_at"}
        unknown = set(changes) - allowed
        if unknown:
            raise InvalidArgument(
                f"cannot update {kind.noun} field(s) {', '.join(sorted(unknown))}; "
                f"updatable: {', '.join(sorted(allowed))}"
            )
        if "state" in changes:
            self._check_state(kind, changes["state"])
        if "name" in changes:
            changes["name"] = validate_name(changes["name"], kind.noun)
        values = {
            k: (json.dumps(v, sort_keys=True) if k in kind.json_cols else v)
            for k, v in changes.items()
        }
        with self.transaction() as db:
            row = db.execute(f"SELECT * FROM {kind.table} WHERE {kind.key} = ?", (key,)).fetchone()
            if row is None:
                raise NotFound(f"no such {kind.noun}: {key}")
            if expect_state is not None:
                wanted = (expect_state,) if isinstance(expect_state, str) else tuple(expect_state)
                if row["state"] not in wanted:
                    raise FailedPrecondition(
                        f"{kind.noun} {key[:12]} is {row['state']}, not {' or '.join(wanted)}"
                    )
            if values:
                sets = ", ".join(f"{k} = ?" for k in values)
                rec = self._from_row(kind, row)
                for k, v in changes.items():
                    setattr(rec, k, v)
                try:
                    db.execute(
                        f"UPDATE {kind.table} SET {sets} WHERE {kind.key} = ?",
                        [*values.values(), key],
                    )
                except sqlite3.IntegrityError as e:
                    raise self._integrity(kind, rec, e) from None
                if "labels" in changes:
                    self._write_labels(kind, key, changes["labels"])
            row = db.execute(f"SELECT * FROM {kind.table} WHERE {kind.key} = ?", (key,)).fetchone()
            return self._from_row(kind, row)

    def _remove(self, kind: _Kind, key: str) -> None:
        with self.transaction() as db:
            try:
                cur = db.execute(f"DELETE FROM {kind.table} WHERE {kind.key} = ?", (key,))
            except sqlite3.IntegrityError:
                raise FailedPrecondition(
                    f"{kind.noun} {key[:12]} still has containers; remove them first"
                ) from None
            if cur.rowcount == 0:
                raise NotFound(f"no such {kind.noun}: {key}")

    def _unique_name(self, kind: _Kind) -> str:
        with self._lock:
            for attempt in range(20):
                name = random_name(attempt)
                if (
                    self._db.execute(
                        f"SELECT 1 FROM {kind.table} WHERE name = ?", (name,)
                    ).fetchone()
                    is None
                ):
                    return name
        # 2500 names x 10 digits exhausted by chance: fall back to something unique.
        return f"{random_name()}_{secrets.token_hex(4)}"

    # ------------------------------------------------------------ containers

    def add_container(self, rec: ContainerRecord) -> ContainerRecord:
        """Insert a new container; AlreadyExists on a taken name or id."""
        return self._add(_CONTAINERS, rec)

    def get_container(self, ref: str) -> ContainerRecord:
        """By full id, name, or unique id prefix; NotFound or ambiguous-prefix InvalidArgument."""
        return self._get(_CONTAINERS, ref)

    def list_containers(self, filters: ContainerFilter | None = None) -> list[ContainerRecord]:
        """Newest first."""
        return self._list(_CONTAINERS, filters)

    def update_container(
        self, id: str, *, expect_state: str | Sequence[str] | None = None, **changes: Any
    ) -> ContainerRecord:
        """Change fields of container ID atomically; with expect_state, only if the
        container is (one of) that state, else FailedPrecondition."""
        return self._update(_CONTAINERS, id, expect_state, changes)

    def remove_container(self, id: str) -> None:
        self._remove(_CONTAINERS, id)

    def unique_container_name(self) -> str:
        return self._unique_name(_CONTAINERS)

    # ------------------------------------------------------------ pods

    def add_pod(self, rec: PodRecord) -> PodRecord:
        return self._add(_PODS, rec)

    def get_pod(self, ref: str) -> PodRecord:
        return self._get(_PODS, ref)

    def list_pods(self, filters: PodFilter | None = None) -> list[PodRecord]:
        return self._list(_PODS, filters)

    def update_pod(
        self, id: str, *, expect_state: str | Sequence[str] | None = None, **changes: Any
    ) -> PodRecord:
        return self._update(_PODS, id, expect_state, changes)

    def remove_pod(self, id: str) -> None:
        """FailedPrecondition while any container still belongs to the pod."""
        self._remove(_PODS, id)

    def unique_pod_name(self) -> str:
        return self._unique_name(_PODS)

    # ------------------------------------------------------------ networks

    def add_network(self, rec: NetworkRecord) -> NetworkRecord:
        return self._add(_NETWORKS, rec)

    def get_network(self, ref: str) -> NetworkRecord:
        return self._get(_NETWORKS, ref)

    def list_networks(self, labels: Mapping[str, str | None] | None = None) -> list[NetworkRecord]:
        return self._list(_NETWORKS, PodFilter(labels=labels or {}))

    def update_network(self, id: str, **changes: Any) -> NetworkRecord:
        return self._update(_NETWORKS, id, None, changes)

    def remove_network(self, id: str) -> None:
        self._remove(_NETWORKS, id)

    # ------------------------------------------------------------ volumes

    def add_volume(self, rec: VolumeRecord) -> VolumeRecord:
        return self._add(_VOLUMES, rec)

    def get_volume(self, name: str) -> VolumeRecord:
        return self._get(_VOLUMES, name)

    def list_volumes(self, labels: Mapping[str, str | None] | None = None) -> list[VolumeRecord]:
        return self._list(_VOLUMES, PodFilter(labels=labels or {}))

    def update_volume(self, name: str, **changes: Any) -> VolumeRecord:
        return self._update(_VOLUMES, name, None, changes)

    def remove_volume(self, name: str) -> None:
        self._remove(_VOLUMES, name)
