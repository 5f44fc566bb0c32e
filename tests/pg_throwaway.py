"""A throwaway PostgreSQL database on the local server (127.0.0.1:5432, user postgres, trust auth):
``test_<uuid>``, created for a test and dropped after it. No other database is touched."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

import pytest

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _admin() -> Any:  # psycopg is imported lazily: a machine without it skips
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.connect(ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")


@contextmanager
def throwaway_database() -> Iterator[str]:
    """Yield the URL of a new empty database; drop it (closing its sessions) afterwards."""
    name = f"test_{uuid4().hex}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
