"""Which database the index is, and the pooled SQLAlchemy engine that reaches it.

``DATABASE_URL`` unset or ``sqlite:///path`` is the embedded SQLite file (the default);
``postgresql://``, ``postgres://`` and ``postgresql+psycopg://`` are PostgreSQL through psycopg 3.
Anything else is refused with ``DATABASE_URL_UNSUPPORTED``: the broker never falls back to SQLite
when a server was asked for. The password never leaves this module in text (``redacted``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import QueuePool

from broker.errors import BrokerError
from broker.persistence.private import private_dir, private_file

BUSY_TIMEOUT_MS = 60_000
# SQLite: connections kept open between calls (more are opened under load and closed after)
SQLITE_POOL_SIZE = 8
# PostgreSQL: per process; a broker's tool calls and a worker's drains share them
PG_POOL_SIZE, PG_MAX_OVERFLOW = 5, 15
PG_CONNECT_TIMEOUT_S = 10
PG_RECYCLE_S = 1800
POSTGRES_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg"}


def resolve(target: str | Path | URL) -> URL:
    """The SQLAlchemy URL of an index target: a path (SQLite), ``sqlite:///path`` or a
    PostgreSQL URL (driver set to psycopg 3). Raises DATABASE_URL_UNSUPPORTED."""
    if isinstance(target, URL):
        url = target
    elif isinstance(target, Path) or "://" not in str(target):
        return URL.create("sqlite", database=str(Path(target).expanduser()))
    else:
        try:
            url = make_url(str(target).strip())
        except (ArgumentError, ValueError) as exc:
            raise _unsupported(str(target), f"it is not a URL ({type(exc).__name__})") from None
    scheme = url.drivername.lower()
    if scheme in ("sqlite", "sqlite+pysqlite"):
        if not url.database or url.database == ":memory:":
            raise _unsupported(url, "a SQLite index needs a file path (sqlite:///path/to/index.sqlite3)")
        return url.set(drivername="sqlite", database=str(Path(url.database).expanduser()))
    if scheme in POSTGRES_SCHEMES:
        if not url.database:
            raise _unsupported(url, "it names no database (postgresql://user@host:5432/<database>)")
        return url.set(drivername="postgresql+psycopg")
    if "+" in scheme:  # sqlite+aiosqlite://, postgresql+asyncpg://: MCP Agent Mail's own forms
        raise _unsupported(
            url,
            f"the scheme {scheme!r} names another driver (MCP Agent Mail's DATABASE_URL takes this form, and its "
            "database is not the broker's index; docs/migration.md)",
        )
    raise _unsupported(url, f"the scheme {scheme!r} is not one the index supports")


def redacted(url: URL) -> str:
    """The URL as it may be shown: no password (``postgresql://user@host:5432/db``)."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///{url.database}"
    scheme = "postgresql" if url.drivername.lower() in POSTGRES_SCHEMES else url.drivername
    return url._replace(drivername=scheme, password=None, query={}).render_as_string(hide_password=True)


def _unsupported(url: URL | str, why: str) -> BrokerError:
    shown = redacted(url) if isinstance(url, URL) else _strip_password(url)
    return BrokerError(
        "DATABASE_URL_UNSUPPORTED",
        f"DATABASE_URL {shown!r} cannot be used: {why}. Set DATABASE_URL to postgresql://user:password@host:5432/db, "
        "or to sqlite:///path, or leave it unset for the SQLite file under STORAGE_ROOT.",
    )


def _strip_password(text: str) -> str:
    scheme, sep, rest = text.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if sep and at:
        return f"{scheme}://{userinfo.partition(':')[0]}@{hostport}{slash}{path}"
    return text


def make_engine(url: URL) -> Engine:
    """One pooled engine per Index. SQLite: WAL, a long busy timeout, transactions begun by us
    (BEGIN IMMEDIATE for writes, so a writer queues for the lock up front instead of failing on
    upgrade), the file created 0600 before SQLite opens it. PostgreSQL: QueuePool, connections
    recycled after PG_RECYCLE_S; no ping before each checkout (a round trip per call, as long as
    a search's own under load): a read that meets a connection the server dropped runs again on a
    fresh one (``Index.query``), a write batch fails and is retried by the drain."""
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return create_engine(
        url,
        poolclass=QueuePool,
        pool_size=PG_POOL_SIZE,
        max_overflow=PG_MAX_OVERFLOW,
        pool_recycle=PG_RECYCLE_S,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S}
        if "application_name" in url.query
        else {"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "agent-broker"},
    )


def _sqlite_engine(url: URL) -> Engine:
    path = Path(url.database or "")

    def connect() -> sqlite3.Connection:
        # 0600 before SQLite opens it: the -wal and -shm files take the database file's mode
        if not path.parent.exists():
            private_dir(path.parent)
        private_file(path)
        # isolation_level=None: the driver never begins on its own; our "begin" hook does
        return sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)

    engine = create_engine(
        "sqlite://", creator=connect, poolclass=QueuePool, pool_size=SQLITE_POOL_SIZE, max_overflow=-1
    )

    @event.listens_for(engine, "connect")
    def _setup(dbapi_conn: Any, _record: Any) -> None:
        for pragma in (
            f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA temp_store=MEMORY",
        ):
            dbapi_conn.execute(pragma)

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # writes: BEGIN IMMEDIATE; a snapshot: BEGIN (the first read fixes it); a plain read runs
        # on its own (SQLite's implicit per-statement transaction), one statement fewer per query
        if conn.info.get("write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.info.get("snapshot"):
            conn.exec_driver_sql("BEGIN")

    engine.url_path = path  # type: ignore[attr-defined]
    return engine
