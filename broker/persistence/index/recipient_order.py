"""Migration 4 and the order of a message's recipient rows: the order they were named in (to,
cc, bcc, each in the order of the send), which the hot store keeps and cold reads and rehydrate
must give back.

The worker inserts a message's recipient rows in that order. SQLite keeps it as the rows'
``rowid``. PostgreSQL has no such column (``ctid`` moves when a read or an ack updates the row),
so migration 4 gives ``message_recipients`` an identity column ``seq``, numbered as rows are
inserted and never changed by an update. Rows that existed before the migration are numbered
in their physical order, which is their insertion order unless they were updated since.
"""

from __future__ import annotations

from typing import Any


def sqlite(conn: Any) -> None:
    """Nothing to add: ``rowid`` is the insertion order."""


def postgresql(conn: Any) -> None:
    conn.execute("ALTER TABLE message_recipients ADD COLUMN IF NOT EXISTS seq BIGINT GENERATED ALWAYS AS IDENTITY")


def recipient_order(index: Any, alias: str = "r") -> str:
    """The ORDER BY expression of ``message_recipients`` rows (under ``alias``) in send order."""
    return f"{alias}.seq" if index.dialect == "postgresql" else f"{alias}.rowid"
