"""The index on PostgreSQL in tests: a throwaway database per test session, a schema per test.

The session's database is ``test_<uuid>`` on the local server (``postgres@127.0.0.1:5432``, trust
auth; ``BROKER_TEST_PG_ADMIN`` overrides the administration URL), created at the first use and
dropped at the end; no existing database is ever touched. Each test gets a schema of its own in
it (``search_path`` set through the URL), so ids restarting at 1 in every test never collide, and
its connections carry the schema's name as ``application_name``, so they are ended after it.

Use it from any test module::

    def test_x(index_settings):          # sqlite and postgresql (the conftest fixture)
        ...

    settings = pg_settings(settings, pg_database)   # an existing Settings on PostgreSQL
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import psycopg

from broker.config import Settings

ADMIN_URL = os.environ.get("BROKER_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin() -> psycopg.Connection:
    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A new empty database (its URL), dropped afterwards with every connection to it."""
    name = f"test_{uuid4().hex[:16]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_schema_url(database_url: str) -> str:
    """A fresh schema in ``database_url`` and the URL whose connections use it."""
    schema = f"t_{uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    options = quote(f"-csearch_path={schema}")
    return f"{database_url}?application_name={schema}&options={options}"


def end_connections(url: str) -> None:
    """End every connection a test left open to its schema (pools it never closed)."""
    name = url.partition("application_name=")[2].partition("&")[0]
    if not name:
        return
    with _admin() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s AND pid <> "
            "pg_backend_pid()",
            (name,),
        )


@contextmanager
def on_index_backend(settings: Settings, index_backend: str, request: Any) -> Iterator[Settings]:
    """``settings`` on the ``index_backend`` index ("sqlite": as they are; "postgresql": a new
    schema of the session's database, its connections ended afterwards). For a module that
    runs its tests on both backends by overriding ``settings``::

        @pytest.fixture
        def settings(settings, index_backend, request):
            with on_index_backend(settings, index_backend, request) as on_backend:
                yield on_backend
    """
    if index_backend == "sqlite":
        yield settings
        return
    on_pg = pg_settings(settings, request.getfixturevalue("pg_database"))
    try:
        yield on_pg
    finally:
        end_connections(on_pg.database_url)


def pg_settings(settings: Settings, database_url: str) -> Settings:
    """``settings`` with DATABASE_URL on a new schema of the session's database."""
    return settings.model_copy(update={"database_url": new_schema_url(database_url)})
