"""The index: SQLite (default) or PostgreSQL behind one API.

Decision: SQLAlchemy Core 2.1 with the psycopg 3 driver. One code path serves both backends: text
SQL with named parameters, one pooled Engine per index, dialect-aware upserts; it is also the
reference's own dependency. psycopg alone would have needed a second code path for SQLite.

Written by the persistence worker (one transaction per drained batch), read by the history tools,
``broker rehydrate``, the import and the export. SQLite: WAL lets readers run while a batch commits,
the busy timeout makes concurrent writers queue; PostgreSQL: a connection pool with pre-ping.

Timestamps are stored as the ISO-8601 text the broker returns (``...+00:00``), so a value read
back is byte-for-byte what the tools showed. ``agents.registration_token`` holds ``sha256:<hex
digest>``: the broker never keeps tokens, only their digests, and rehydrate needs the digest.

API (contract 1 of issue 19): ``query(sql, params)`` -> rows readable as ``row["col"]``,
``row[0]``, ``dict(row)``; ``with transaction() as conn: conn.execute(sql, params)``;
``dialect`` ("sqlite" / "postgresql"); ``write_batch``; ``project_lock(slug)``.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, text
from sqlalchemy.exc import DBAPIError

from broker.errors import BrokerError
from broker.persistence.index import migrations
from broker.persistence.index.rows import Connection, Params, Row, run
from broker.persistence.index.target import make_engine, redacted, resolve
from broker.persistence.index.writes import Batch, write_batch

if TYPE_CHECKING:
    from broker.config import Settings

log = logging.getLogger(__name__)

_file_locks: dict[str, threading.Lock] = {}
_file_locks_guard = threading.Lock()


class Index:
    """One index database. ``Index(path)`` is an SQLite file; ``Index("postgresql://...")`` a
    PostgreSQL database; ``Index.from_settings(settings)`` what DATABASE_URL (or DATABASE_PATH)
    names. Opening is lazy: nothing connects until the first call."""

    def __init__(self, target: str | Path | URL) -> None:
        self.url = resolve(target)
        self.dialect: str = self.url.get_backend_name()
        # the SQLite file (None on PostgreSQL); drain locks and private modes use it
        self.path: Path | None = Path(self.url.database or "") if self.dialect == "sqlite" else None
        self._engine: Any = None
        self._engine_pid = 0
        self._engine_guard = threading.Lock()
        self._schema_ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Index:
        return cls(settings.index_url)

    @property
    def display_url(self) -> str:
        """Where the index is, as it may be shown (no password)."""
        return redacted(self.url)

    @property
    def engine(self) -> Any:
        """The pooled engine, made on first use (and again in a forked child: a pool's
        connections are never shared across processes)."""
        if self._engine is None or self._engine_pid != os.getpid():
            with self._engine_guard:
                if self._engine is None or self._engine_pid != os.getpid():
                    if self._engine is not None:
                        self._engine.dispose(close=False)
                    self._engine = make_engine(self.url)
                    self._engine_pid = os.getpid()
        return self._engine

    def close(self) -> None:
        """Close every pooled connection (the index opens again on its next call)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- reads and writes ----------------------------------------------------------------
    def query(self, sql: str, params: Params = None) -> list[Row]:
        """Rows of one statement, run in its own short transaction (on PostgreSQL the statement's
        own: autocommit spares the BEGIN and ROLLBACK round trips, ~0.5 ms of a 1.7 ms search)."""
        for attempt in range(2):
            with self.engine.connect() as conn:
                if self.dialect == "postgresql":
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                try:
                    return run(conn, sql, params).rows
                except Exception:
                    # a pooled connection the server dropped (a restart, an idle timeout): the pool
                    # has discarded it; a read is safe to run once more on a fresh one. This
                    # replaces a ping before every checkout, a round trip per call.
                    if attempt == 0 and conn.invalidated:
                        continue
                    raise
                finally:
                    if not conn.invalidated:
                        conn.rollback()
        raise AssertionError("unreachable")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction (SQLite: BEGIN IMMEDIATE), committed when the block ends, rolled
        back if it raises. The error is the driver's own."""
        with self.engine.connect() as sa:
            sa.info["write"] = True
            try:
                sa.begin()
                yield Connection(sa)
                try:
                    sa.commit()
                except DBAPIError as exc:
                    raise (exc.orig or exc) from None
            finally:
                sa.info.pop("write", None)
                if sa.in_transaction():
                    sa.rollback()

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only transaction that sees one state of the database from its first read to
        its end (SQLite: a WAL snapshot; PostgreSQL: REPEATABLE READ), rolled back at the end."""
        with self.engine.connect() as sa:
            if self.dialect == "postgresql":
                sa = sa.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            sa.info["snapshot"] = True
            try:
                sa.begin()
                yield Connection(sa)
            finally:
                sa.info.pop("snapshot", None)
                sa.rollback()

    def tables(self) -> set[str]:
        """The tables this database holds (our schema, migrations table included)."""
        if self.dialect == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        return {row[0] for row in self.query(sql)}

    def columns(self, table: str) -> list[str]:
        """The column names of ``table``, in order."""
        with self.engine.connect() as conn:
            try:
                return list(run(conn, f"SELECT * FROM {table} WHERE 1 = 0").keys)
            finally:
                conn.rollback()

    def ensure_schema(self) -> None:
        """Apply the migrations this database lacks (broker.persistence.index.migrations); a
        no-op after the first success on this Index."""
        if self._schema_ready:
            return
        try:
            migrations.apply(self.engine)
        except DBAPIError as exc:
            raise (exc.orig or exc) from None
        self._schema_ready = True

    def check(self) -> None:
        """Connect and migrate, or raise DATABASE_UNREACHABLE naming DATABASE_URL (start-up)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            self.ensure_schema()
        except BrokerError:
            raise
        except Exception as exc:
            raise BrokerError(
                "DATABASE_UNREACHABLE",
                f"the index at DATABASE_URL {self.display_url} cannot be opened ({_reason(exc)}). "
                "Start the database or fix DATABASE_URL; the broker does not fall back to another index.",
            ) from None

    def write_batch(self, batch: Batch) -> None:
        """Upsert a drained batch in one transaction. Idempotent: a replayed batch changes nothing
        (messages are immutable, read/ack times are set once, profiles are last-writer-wins).
        An agent or project that Redis lost and that came back under its name with a new id
        re-keys the indexed one instead of failing (docs/durability-ids.md)."""
        with self.transaction() as conn:
            write_batch(conn, batch)

    def indexed_values(self, table: str, ids: list[int], columns: tuple[str, ...]) -> dict[int, tuple[Any, ...]]:
        """id -> the ``columns`` of each of these ids that ``table`` holds (read in chunks)."""
        found: dict[int, tuple[Any, ...]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join(f":i{n}" for n in range(len(chunk)))
            params = {f"i{n}": value for n, value in enumerate(chunk)}
            for row in self.query(f"SELECT id, {', '.join(columns)} FROM {table} WHERE id IN ({marks})", params):
                found[int(row["id"])] = tuple(row[c] for c in columns)
        return found

    def project_id(self, slug: str, human_key: str = "") -> int | None:
        """The indexed id of the project with that slug (or that human_key), or None. Never
        creates an SQLite file, nor the schema."""
        if self.path is not None and not self.path.exists():
            return None
        try:
            rows = self.query(
                "SELECT id FROM projects WHERE slug = :slug OR human_key = :human_key",
                {"slug": slug, "human_key": human_key},
            )
        except Exception as exc:  # no schema yet
            if "projects" not in str(exc):
                raise
            return None
        return int(rows[0][0]) if rows else None

    # -- the drain lock ------------------------------------------------------------------
    @contextmanager
    def project_lock(self, slug: str) -> Iterator[None]:
        """One batch of a project at a time, across threads, processes and (on PostgreSQL)
        hosts: the persistence drain, the hard deletes, the purge and the export hold it.
        SQLite: a thread lock plus ``flock`` on a file next to the index. PostgreSQL: a session
        advisory lock on a hash of the slug, held on a connection of its own. Either is released
        by the OS or the server if its holder dies."""
        digest = hashlib.sha1(slug.encode()).digest()
        if self.path is not None:
            path = self.path.parent / ".drain-locks" / f"{digest.hex()[:20]}.lock"
            with _file_locks_guard:
                lock = _file_locks.setdefault(str(path.resolve()), threading.Lock())
            with lock:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    try:
                        yield
                    finally:
                        fcntl.flock(handle, fcntl.LOCK_UN)
            return
        key = int.from_bytes(digest[:8], "big", signed=True)
        with self.engine.connect() as conn:
            auto = conn.execution_options(isolation_level="AUTOCOMMIT")
            auto.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                auto.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


def _reason(exc: BaseException) -> str:
    """The driver's message without the URL (which may carry a password)."""
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return f"{type(orig).__name__}: {first}"[:300]


_shared: dict[tuple[int, str], Index] = {}
_shared_guard = threading.Lock()
SHARED_MAX = 8  # databases one process keeps a shared pool for (tests make one per test)


def shared_index(target: Settings | str | Path) -> Index:
    """One Index per database and process, for callers that would otherwise open one per call
    (the least recently used beyond SHARED_MAX is closed)."""
    url = target.index_url if hasattr(target, "index_url") else target
    key = (os.getpid(), str(url))
    with _shared_guard:
        index = _shared.pop(key, None)
        if index is None:
            index = Index(url)  # type: ignore[arg-type]
        _shared[key] = index  # newest last
        while len(_shared) > SHARED_MAX:
            _shared.pop(next(iter(_shared))).close()
        return index


def indexed_project_id(target: Settings | str | Path, slug: str, human_key: str = "") -> int | None:
    """The id in the index of the project with that slug (or that human_key), or None (no index
    file, no schema yet, or no such project). Never creates the SQLite file, and opens an SQLite
    index for this call only (no connection left on a file that may be moved or deleted)."""
    url = target.index_url if hasattr(target, "index_url") else target
    if resolve(url).get_backend_name() != "sqlite":  # type: ignore[arg-type]
        return shared_index(url).project_id(slug, human_key)  # type: ignore[arg-type]
    own = Index(url)  # type: ignore[arg-type]
    try:
        return own.project_id(slug, human_key)
    finally:
        own.close()
