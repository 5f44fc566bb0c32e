"""What index queries return and run on: rows readable by name, by position and as ``dict(row)``
(as ``sqlite3.Row`` was), and a connection whose ``execute(sql, params)`` runs text SQL with
named parameters (``:name`` and a dict) on either backend.

Errors reach callers as the driver's own (``sqlite3.OperationalError``, ``psycopg.errors...``),
not wrapped in SQLAlchemy's, so code that tells a locked database from a bad row keeps working;
``TRANSIENT_ERRORS`` lists the ones that are the environment's fault on either backend.

Positional ``?`` / ``?N`` parameters with a tuple are still accepted (rewritten to named ones)
for code not yet ported; new SQL uses ``:name`` (the brief's contract 1).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

import psycopg
from sqlalchemy import Connection as SAConnection
from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError

# A locked or unreachable database, a dropped connection: retried whole later, no entry blamed
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (sqlite3.OperationalError, psycopg.OperationalError)
Params = Mapping[str, Any] | Sequence[Any] | None


class Row(tuple):  # type: ignore[type-arg]
    """One result row: ``row["col"]``, ``row[0]``, ``dict(row)``, ``row.keys()``, tuple equality.
    A subclass per column list (``_row_class``) holds the name -> position map."""

    __slots__ = ()
    _names: tuple[str, ...] = ()
    _positions: dict[str, int] = {}  # noqa: RUF012 (set per subclass)

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._positions[key])
            except KeyError:
                raise IndexError(f"No item with that key: {key!r}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)

    def get(self, key: str, default: Any = None) -> Any:
        position = self._positions.get(key)
        return default if position is None else tuple.__getitem__(self, position)


@lru_cache(maxsize=1024)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    positions: dict[str, int] = {}
    for i, name in enumerate(names):
        positions.setdefault(name, i)  # a repeated name reads its first column, as sqlite3.Row
    return type("Row", (Row,), {"__slots__": (), "_names": names, "_positions": positions})


class Result:
    """Rows of one statement, already fetched (the connection is free again)."""

    def __init__(self, rows: list[Row], rowcount: int, lastrowid: int | None, keys: tuple[str, ...] = ()) -> None:
        self.rows = rows
        self.keys = keys
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchall(self) -> list[Row]:
        return self.rows

    def fetchone(self) -> Row | None:
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)


_POSITIONAL = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*")|\?(\d*)""")


@lru_cache(maxsize=2048)
def _named(sql: str) -> tuple[str, bool]:
    """``?`` / ``?N`` outside quotes -> ``:pN`` (1-based, as SQLite numbers them); whether any was."""
    counter = 0
    found = False

    def swap(match: re.Match[str]) -> str:
        nonlocal counter, found
        if match.group(1):
            return match.group(1)
        found = True
        if match.group(2):
            return f":p{match.group(2)}"
        counter += 1
        return f":p{counter}"

    return _POSITIONAL.sub(swap, sql), found


@lru_cache(maxsize=2048)
def _clause(sql: str) -> TextClause:
    return text(sql)


def _prepare(sql: str, params: Params) -> tuple[TextClause, Any]:
    if params is None:
        return _clause(sql), {}
    if isinstance(params, Mapping):
        return _clause(sql), params
    values = list(params)
    if values and isinstance(values[0], Mapping):  # many rows
        return _clause(sql), values
    named, _ = _named(sql)
    if values and isinstance(values[0], (tuple, list)):  # many positional rows
        return _clause(named), [{f"p{i + 1}": v for i, v in enumerate(row)} for row in values]
    return _clause(named), {f"p{i + 1}": v for i, v in enumerate(values)}


BOOL_OID = 16  # PostgreSQL's boolean type


def _boolean_columns(result: Any) -> tuple[int, ...]:
    """Positions of PostgreSQL BOOLEAN columns: read back as 1/0, as SQLite stores flags, so a
    row (and what tools return from it) is the same on both backends."""
    description = getattr(getattr(result, "cursor", None), "description", None) or ()
    return tuple(i for i, column in enumerate(description) if getattr(column, "type_code", None) == BOOL_OID)


def _as_ints(row: Any, flags: tuple[int, ...]) -> list[Any]:
    values = list(row)
    for i in flags:
        if values[i] is not None:
            values[i] = int(values[i])
    return values


def run(conn: SAConnection, sql: str, params: Params = None) -> Result:
    """Execute on an SQLAlchemy connection; the driver's error is raised, not SQLAlchemy's."""
    clause, bound = _prepare(sql, params)
    try:
        result = conn.execute(clause, bound)
        keys: tuple[str, ...] = ()
        rows: list[Row] = []
        if result.returns_rows:
            keys = tuple(result.keys())
            cls = _row_class(keys)
            flags = _boolean_columns(result)
            if flags:
                rows = [cls(_as_ints(r, flags)) for r in result.fetchall()]
            else:
                rows = [cls(r) for r in result.fetchall()]
        lastrowid = getattr(result, "lastrowid", None) if conn.dialect.name == "sqlite" else None
        return Result(rows, result.rowcount, lastrowid, keys)
    except DBAPIError as exc:
        if exc.orig is not None:
            raise exc.orig from None
        raise


class Connection:
    """The connection ``Index.transaction()`` yields: ``execute(sql, params)`` (a list of dicts
    runs it once per row, batched by the driver), ``executemany(sql, rows)``."""

    def __init__(self, conn: SAConnection) -> None:
        self.sa = conn
        self.dialect = conn.dialect.name

    def execute(self, sql: str, params: Params = None) -> Result:
        return run(self.sa, sql, params)

    def executemany(self, sql: str, rows: Sequence[Any]) -> None:
        if rows:
            run(self.sa, sql, list(rows))

    def stream(self, sql: str, params: Params = None, size: int = 1000) -> Iterator[list[Row]]:
        """The rows of a large read in lists of ``size`` (a server-side cursor on PostgreSQL,
        so a whole table is never held in memory at once)."""
        clause, bound = _prepare(sql, params)
        try:
            result = self.sa.execution_options(yield_per=size).execute(clause, bound)
            cls = _row_class(tuple(result.keys()))
            for part in result.partitions(size):
                yield [cls(r) for r in part]
        except DBAPIError as exc:
            if exc.orig is not None:
                raise exc.orig from None
            raise
