"""Throwaway PostgreSQL databases on the local server (127.0.0.1:5432, user postgres, trust auth):
``test_<uuid>`` made for a test and dropped after it; existing databases are never touched.
$BROKER_TEST_POSTGRES overrides the server's admin URL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import uuid4

import psycopg
import pytest

ADMIN_URL = os.environ.get("BROKER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _server(url: str) -> str:
    return url.rsplit("/", 1)[0]


def postgres_available() -> bool:
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@contextmanager
def throwaway_database() -> Iterator[str]:
    """The URL of a new empty database, dropped (its connections closed) on exit."""
    if not postgres_available():
        pytest.skip(f"no PostgreSQL at {ADMIN_URL}")
    name = f"test_{uuid4().hex[:16]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{_server(ADMIN_URL)}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
