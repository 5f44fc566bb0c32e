"""Migration 3: ``message_commits``, each message's archive commit (broker/persistence/commit_rows.py),
so brokers read the mailbox resources' ``commit`` fields from the index, not from the Git archive.

One row per message, written by the persistence worker in the batch's transaction; a trigger
drops it with its message (hard deletes, the retention purge), so no excerpt of a deleted
message stays behind. ``excerpt`` is a JSON list of the canonical file's first lines.
"""

from __future__ import annotations

from typing import Any

TABLE = """
CREATE TABLE IF NOT EXISTS message_commits (
  message_id {id_type} PRIMARY KEY,
  hexsha VARCHAR(40) NOT NULL,
  summary TEXT NOT NULL,
  authored_ts TEXT NOT NULL,
  insertions INTEGER NOT NULL DEFAULT 0,
  deletions INTEGER NOT NULL DEFAULT 0,
  excerpt TEXT NOT NULL DEFAULT '[]'
)
"""

SQLITE_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS message_commits_ad AFTER DELETE ON messages BEGIN
  DELETE FROM message_commits WHERE message_id = old.id;
END
"""

POSTGRESQL_TRIGGER = """
CREATE OR REPLACE FUNCTION message_commits_drop() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  DELETE FROM message_commits WHERE message_id = OLD.id;
  RETURN OLD;
END
$body$;
DROP TRIGGER IF EXISTS message_commits_drop ON messages;
CREATE TRIGGER message_commits_drop AFTER DELETE ON messages
  FOR EACH ROW EXECUTE FUNCTION message_commits_drop();
"""


def sqlite(conn: Any) -> None:
    conn.execute(TABLE.format(id_type="INTEGER"))
    conn.execute(SQLITE_TRIGGER.strip())


def postgresql(conn: Any) -> None:
    conn.execute(TABLE.format(id_type="BIGINT"))
    # a function body holds ';': sent as one script (no parameters), as migration 1 does
    conn.sa.connection.dbapi_connection.cursor().execute(POSTGRESQL_TRIGGER)
