"""One SQLite database per experiment: spec, members, per-epoch metrics, verdicts, weights.

Commit semantics: each finished cohort is written in one transaction (`commit_runs`), so a
process killed at any instant (SIGKILL included) leaves a database that opens cleanly and holds
every cohort that finished, and no member half-written. The WAL journal lets readers (`lrlab
report`, `export`) read while a sweep writes; `synchronous=NORMAL` keeps every committed
transaction across a crash of the process (only a power loss may drop the last ones). A member
row exists from the start with `status` NULL; it becomes finished in the same transaction that
writes its metrics, which is what `lrlab resume` reads.

Only lrlab writes these files; weights are stored as `.npz` bytes and read back with
`allow_pickle=False` (nothing here ever unpickles).
"""

from __future__ import annotations

import io
import itertools
import json
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lrlab.errors import LrlabError

DB_NAME = "lrlab.sqlite"
SCHEMA_VERSION = 1
KNOWN_VERSIONS = (1,)
"""Store schema versions this code reads (the version is in the `meta` table)."""
SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    id INTEGER PRIMARY KEY, cohort INTEGER NOT NULL, swept TEXT NOT NULL,
    status TEXT, diverged_epoch INTEGER, seconds REAL, finished_at REAL,
    peak_rss_mb REAL, worker TEXT);
CREATE TABLE IF NOT EXISTS metrics (
    member INTEGER NOT NULL, epoch INTEGER NOT NULL, name TEXT NOT NULL, value REAL,
    PRIMARY KEY (member, epoch, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series (
    member INTEGER NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (member, name));
CREATE TABLE IF NOT EXISTS weights (member INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (
    member INTEGER PRIMARY KEY, label TEXT NOT NULL, labels TEXT NOT NULL,
    evidence TEXT NOT NULL, explanation TEXT NOT NULL);
"""
_TABLES = frozenset({"meta", "members", "metrics", "series", "weights", "verdicts"})
# Columns added after the first schema: (name, SQL type), added to older databases on open.
_ADDED_MEMBER_COLUMNS = (("peak_rss_mb", "REAL"), ("worker", "TEXT"))


def _finite(x: Any) -> Any:
    return x if x is None or not isinstance(x, float) or math.isfinite(x) else None


class Store:
    """An experiment's database. Open with `Store.create` (new) or `Store.open` (existing)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self.writer = True
        self._member_cols = "peak_rss_mb, worker"

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: str | Path, meta: dict[str, str],
               members: Iterable[tuple[int, int, dict[str, Any]]]) -> Store:
        """A new database in `directory` with its meta and (unfinished) member rows."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        store = cls(d / DB_NAME, _connect(d / DB_NAME))
        with store.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                          [("schema_version", str(SCHEMA_VERSION)), *meta.items()])
            c.executemany("INSERT OR IGNORE INTO members (id, cohort, swept) VALUES (?, ?, ?)",
                          [(i, co, json.dumps(sw)) for i, co, sw in members])
        return store

    @classmethod
    def open(cls, directory: str | Path, *, write: bool = False,
             complete: bool = True) -> Store:
        """An existing experiment's database, checked first (LrlabError naming the file and
        what is wrong: missing, empty, garbled, another program's SQLite file, an unknown schema
        version, or, with `complete`, a creation that never finished).

        Read-only by default: nothing is written to the file or beside it. `write=True` opens
        it for a writer (WAL mode; older databases gain the columns added since).
        """
        path = Path(directory) / DB_NAME
        _check_file(path, directory)
        try:  # checked through a read-only connection, before a writer may touch it
            conn = _connect_readonly(path)
        except sqlite3.DatabaseError as exc:
            raise LrlabError(f"{str(path)!r} is not a readable lrlab store ({exc})") from None
        store = cls(path, conn)
        store.writer = False
        try:
            store._validate(complete)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise LrlabError(f"{str(path)!r} is damaged: SQLite cannot read it ({exc})") from None
        except BaseException:
            conn.close()
            raise
        if write:
            conn.close()
            store.conn, store.writer = _connect(path), True
        return store

    def _validate(self, complete: bool) -> None:
        """An lrlab store of a known schema version (and, with `complete`, with its spec)."""
        name = repr(str(self.path))
        tables = {n for (n,) in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table'") if not n.startswith("sqlite_")}
        try:
            meta = self.meta() if "meta" in tables else {}
        except sqlite3.OperationalError:  # a `meta` table of another shape
            meta = {}
            tables.add("meta (not lrlab's)")
        if "schema_version" not in meta:
            if tables <= _TABLES and not meta:  # stopped before its meta and members were written
                if not complete:
                    return
                raise LrlabError(f"{name} holds no experiment: its sweep was stopped while "
                                 "creating it (or it is an empty database); run the sweep again")
            if tables >= _TABLES:
                raise LrlabError(f"{name} has no store schema version in its meta table, so "
                                 f"lrlab cannot read it (this lrlab reads version "
                                 f"{SCHEMA_VERSION})")
            held = ", ".join(sorted(tables)[:6])
            raise LrlabError(f"{name} is an SQLite database of another program, not an lrlab "
                             f"store (its tables: {held})")
        version = meta["schema_version"]
        if version not in {str(v) for v in KNOWN_VERSIONS}:
            raise LrlabError(f"{name} has store schema version {version!r}; this lrlab reads "
                             f"version {', '.join(map(str, KNOWN_VERSIONS))}")
        missing = sorted(_TABLES - tables)
        if missing:
            raise LrlabError(f"{name} is a damaged lrlab store: table(s) {', '.join(missing)} "
                             "missing")
        if complete and "spec_json" not in meta:
            raise LrlabError(f"{name} is a damaged lrlab store: its meta table holds no spec")
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(members)")}
        self._member_cols = ", ".join(c if c in have else f"NULL AS {c}"
                                      for c in ("peak_rss_mb", "worker"))

    def close(self) -> None:
        """Close; a writer leaves the file in rollback-journal mode when no reader holds it,
        so that a later read-only open creates no -wal/-shm files beside it."""
        if self.writer:
            try:
                self.conn.execute("PRAGMA busy_timeout = 0")
                self.conn.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.DatabaseError:  # a reader has it open: it stays in WAL mode
                pass
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.conn:  # BEGIN ... COMMIT, or ROLLBACK on error
            yield self.conn

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside the block see one state of the database, whatever a writer commits
        meanwhile (a WAL read transaction): no member counted finished without its metrics."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.rollback()  # ends the read transaction; it wrote nothing

    # -- writing -------------------------------------------------------------------------

    def commit_runs(self, runs: Iterable[Any], *, peak_rss_mb: float | None = None,
                    worker: str | None = None) -> None:
        """Write finished members (engine.MemberRun) in one transaction: all or nothing.

        `peak_rss_mb` (the peak resident memory of the process while their cohort ran) and
        `worker` (where it ran) are stored on each member row.
        """
        now = time.time()
        with self.transaction() as c:
            for r in runs:
                mid = r.member.index
                c.execute("DELETE FROM metrics WHERE member = ?", (mid,))
                rows = []
                hist = r.history
                for i, ep in enumerate(hist.get("epoch", [])):
                    for name, col in hist.items():  # an absent row reads back as None
                        if name != "epoch" and (v := _finite(col[i])) is not None:
                            rows.append((mid, ep, name, v))
                c.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)", rows)
                c.executemany("INSERT OR REPLACE INTO series VALUES (?, ?, ?)",
                              [(mid, k, json.dumps(v)) for k, v in r.steps.items()])
                if r.params:
                    buf = io.BytesIO()
                    np.savez(buf, *r.params)
                    c.execute("INSERT OR REPLACE INTO weights VALUES (?, ?)",
                              (mid, buf.getvalue()))
                c.execute("UPDATE members SET status = ?, diverged_epoch = ?, seconds = ?, "
                          "finished_at = ?, peak_rss_mb = ?, worker = ? WHERE id = ?",
                          (r.status, r.diverged_epoch, r.seconds, now, peak_rss_mb, worker, mid))

    def set_meta(self, **values: str) -> None:
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    def write_verdicts(self, verdicts: dict[int, Any]) -> None:
        """verdicts: member id -> verdicts.Verdict."""
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?)",
                [(mid, v.label, json.dumps(list(v.labels)), json.dumps(v.evidence, default=float),
                  v.explanation) for mid, v in verdicts.items()])

    # -- reading -------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta"))

    def members(self) -> list[dict[str, Any]]:
        """Every member row, finished (`status` set) or not (`status` None), by id."""
        rows = self.conn.execute(
            "SELECT id, cohort, swept, status, diverged_epoch, seconds, "
            f"{self._member_cols} FROM members ORDER BY id")
        return [{"id": i, "cohort": co, "swept": json.loads(sw), "status": st,
                 "diverged_epoch": de, "seconds": s, "peak_rss_mb": rss, "worker": w}
                for i, co, sw, st, de, s, rss, w in rows]

    def finished_ids(self) -> set[int]:
        return {i for (i,) in self.conn.execute(
            "SELECT id FROM members WHERE status IS NOT NULL")}

    def cohort_of(self) -> dict[int, int]:
        """member id -> the cohort it was assigned when the experiment was created."""
        return dict(self.conn.execute("SELECT id, cohort FROM members"))

    def check(self) -> str:
        """SQLite's integrity check: "ok", or what is wrong."""
        return "; ".join(r for (r,) in self.conn.execute("PRAGMA integrity_check"))

    def history(self, member: int) -> dict[str, list[Any]]:
        """Per-epoch lists for one member: {"epoch": [...], "train_loss": [...], ...}."""
        rows = self.conn.execute(
            "SELECT epoch, name, value FROM metrics WHERE member = ? ORDER BY epoch", (member,))
        return _pivot(rows)

    def histories(self) -> dict[int, dict[str, list[Any]]]:
        """Every finished member's history, read in one pass (one member's rows at a time).

        One snapshot: a sweep committing meanwhile is either wholly in it or not at all.
        """
        out: dict[int, dict[str, list[Any]]] = {}
        rows = self.conn.execute(
            "SELECT member, epoch, name, value FROM metrics ORDER BY member, epoch")
        for m, group in itertools.groupby(rows, key=lambda r: r[0]):
            out[m] = _pivot(r[1:] for r in group)
        return out

    def series(self, member: int) -> dict[str, list[float]]:
        return {k: json.loads(v) for k, v in self.conn.execute(
            "SELECT name, data FROM series WHERE member = ?", (member,))}

    def weights(self, member: int) -> list[np.ndarray] | None:
        row = self.conn.execute("SELECT data FROM weights WHERE member = ?", (member,)).fetchone()
        if row is None:
            return None
        with np.load(io.BytesIO(row[0]), allow_pickle=False) as z:
            return [z[f"arr_{i}"] for i in range(len(z.files))]

    def verdicts(self) -> dict[int, dict[str, Any]]:
        return {m: {"label": lab, "labels": json.loads(labs), "evidence": json.loads(ev),
                    "explanation": ex}
                for m, lab, labs, ev, ex in self.conn.execute("SELECT * FROM verdicts")}


def _pivot(rows: Iterable[tuple[int, str, Any]]) -> dict[str, list[Any]]:
    epochs: list[int] = []
    cols: dict[str, dict[int, Any]] = {}
    for ep, name, v in rows:
        if not epochs or epochs[-1] != ep:
            epochs.append(ep)
        cols.setdefault(name, {})[ep] = v
    out: dict[str, list[Any]] = {"epoch": epochs}
    for name, col in cols.items():
        out[name] = [col.get(ep) for ep in epochs]
    return out


def _check_file(path: Path, directory: str | Path) -> None:
    """The file exists and starts like an SQLite database (LrlabError otherwise)."""
    d = Path(directory)
    if not d.is_dir():
        raise LrlabError(f"{str(d)!r} holds no lrlab experiment: "
                         f"{'it is not a folder' if d.exists() else 'it does not exist'}")
    if not path.exists():
        raise LrlabError(f"{str(directory)!r} holds no lrlab experiment (no {DB_NAME})")
    if not path.is_file():
        raise LrlabError(f"{str(path)!r} is not a file, so not an lrlab store")
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise LrlabError(f"{str(path)!r} cannot be read ({exc.strerror})") from None
    if not head:
        raise LrlabError(f"{str(path)!r} is empty (0 bytes), not an lrlab store: it was "
                         "truncated or never written")
    if head != SQLITE_MAGIC:
        raise LrlabError(f"{str(path)!r} is not a readable lrlab database: it is not an SQLite "
                         "database (garbled, or another kind of file)")


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection that writes nothing, in the file or beside it.

    A database left in WAL mode with no -wal file beside it (no writer has it open) is read as
    immutable, since opening it in WAL mode would create -wal/-shm files; otherwise SQLite's
    read-only mode, which shares a running writer's WAL.
    """
    with open(path, "rb") as f:
        header = f.read(20)
    wal_header = len(header) == 20 and header[18] == 2
    wal_absent = not path.with_name(path.name + "-wal").exists()
    flags = "mode=ro&immutable=1" if wal_header and wal_absent else "mode=ro"
    uri = f"{path.resolve().as_uri()}?{flags}"
    return sqlite3.connect(uri, uri=True, timeout=60)


def _connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode with the current schema (older databases gain new columns)."""
    conn = sqlite3.connect(path, timeout=60)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables >= _TABLES:  # a reader of a complete database takes no write lock here
            conn.executescript(_SCHEMA)
        have = {row[1] for row in conn.execute("PRAGMA table_info(members)")}
        for name, kind in _ADDED_MEMBER_COLUMNS:
            if name not in have:
                conn.execute(f"ALTER TABLE members ADD COLUMN {name} {kind}")
        conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn
