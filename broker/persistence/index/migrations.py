"""Versioned schema migrations, one ordered list with a step per backend.

``schema_migrations(version, name, applied_at)`` records what a database has. ``apply`` runs the
missing ones in order at start (``Index.ensure_schema``), each in its own transaction together
with its row in ``schema_migrations``, so a migration is applied whole or not at all.

Concurrency: on PostgreSQL the runner holds a session advisory lock (``MIGRATION_LOCK``) while it
reads and applies, so two brokers or workers starting at once apply each migration once (the
second waits, then finds it recorded). On SQLite each migration's ``BEGIN IMMEDIATE`` takes the
file's write lock and re-reads the recorded versions inside it.

Migration 1 is the whole schema with ``IF NOT EXISTS``: on an SQLite file made before versions
were recorded it creates only what is missing (the ``message_summaries.agent_id`` column of
older files included) and records version 1; it changes no existing row.

To change the schema: append ``Migration(n + 1, ...)`` with a step for each backend; never edit
an applied one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection as SAConnection
from sqlalchemy import text

from broker.persistence.index import recipient_order, schema_commits, schema_postgresql, schema_sqlite, search_words
from broker.persistence.index.rows import Connection

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

Step = Callable[[Connection], None]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sqlite: Step
    postgresql: Step


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "baseline: the reference's tables, full-text search, message_summaries.agent_id",
        schema_sqlite.baseline,
        schema_postgresql.baseline,
    ),
    Migration(
        2,
        "search words as FTS5's: ASCII punctuation separates words in PostgreSQL's documents",
        search_words.sqlite,
        search_words.postgresql,
    ),
    Migration(
        3,
        "message_commits: each message's archive commit, so brokers need no archive to show it",
        schema_commits.sqlite,
        schema_commits.postgresql,
    ),
    Migration(
        4,
        "message_recipients.seq on PostgreSQL: recipients in the order they were named",
        recipient_order.sqlite,
        recipient_order.postgresql,
    ),
)
LATEST = MIGRATIONS[-1].version
VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "applied_at TEXT NOT NULL)"
)
# pg_advisory_lock key of the migration runner ("brokermi" as a big-endian int64)
MIGRATION_LOCK = int.from_bytes(b"brokermi", "big")


def current_version(conn: SAConnection) -> int | None:
    """The newest recorded migration, or None when nothing is recorded yet."""
    try:
        return conn.execute(text("SELECT max(version) FROM schema_migrations")).scalar()
    except Exception:  # no such table yet
        conn.rollback()
        return None


def apply(engine: Engine) -> list[int]:
    """Apply every missing migration; the versions applied by this call."""
    with engine.connect() as conn:
        if current_version(conn) == LATEST:
            conn.rollback()
            return []
        conn.rollback()
        if conn.dialect.name == "postgresql":
            return _apply_postgresql(conn)
        return _apply_sqlite(conn)


def _record(conn: Connection, migration: Migration) -> None:
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (:version, :name, :at)",
        {"version": migration.version, "name": migration.name, "at": datetime.now(UTC).isoformat()},
    )


def _applied(conn: Connection) -> set[int]:
    return {int(row[0]) for row in conn.execute("SELECT version FROM schema_migrations")}


def _apply_sqlite(sa: SAConnection) -> list[int]:
    done: list[int] = []
    for migration in MIGRATIONS:
        sa.info["write"] = True  # BEGIN IMMEDIATE: one migrator at a time, re-reading inside the lock
        try:
            with sa.begin():
                conn = Connection(sa)
                conn.execute(VERSION_TABLE)
                if migration.version in _applied(conn):
                    continue
                migration.sqlite(conn)
                _record(conn, migration)
        finally:
            sa.info.pop("write", None)
        log.info("index: applied migration %s (%s)", migration.version, migration.name)
        done.append(migration.version)
    return done


def _apply_postgresql(sa: SAConnection) -> list[int]:
    done: list[int] = []
    sa.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
    sa.commit()
    try:
        with sa.begin():
            sa.execute(text(VERSION_TABLE))
        for migration in MIGRATIONS:
            with sa.begin():
                conn = Connection(sa)
                if migration.version in _applied(conn):
                    continue
                migration.postgresql(conn)
                _record(conn, migration)
            log.info("index: applied migration %s (%s)", migration.version, migration.name)
            done.append(migration.version)
    finally:
        sa.rollback()
        sa.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        sa.commit()
    return done
