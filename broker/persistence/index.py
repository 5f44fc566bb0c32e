"""The SQLite index: the reference's tables and column names, plus FTS5 over subject and body.

Written only by the persistence worker (one transaction per drained batch), read by the
history tools (search, summaries) and by ``broker rehydrate``. WAL lets readers run while a
batch commits; the busy timeout makes concurrent writers queue instead of failing.

Timestamps are stored as the ISO-8601 text the broker returns (``...+00:00``), so a value
read back is byte-for-byte what the tools showed. ``agents.registration_token`` holds
``sha256:<hex digest>``: the broker never keeps tokens, only their digests, and rehydrate
needs the digest to restore authentication.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.persistence.private import private_dir, private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
  id INTEGER PRIMARY KEY,
  slug VARCHAR(255) NOT NULL UNIQUE,
  human_key VARCHAR(255) NOT NULL,
  created_at TEXT NOT NULL,
  archived_at TEXT
);
CREATE INDEX IF NOT EXISTS ix_projects_human_key ON projects(human_key);

CREATE TABLE IF NOT EXISTS agents (
  id INTEGER PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects(id),
  name VARCHAR(128) NOT NULL,
  program VARCHAR(128) NOT NULL,
  model VARCHAR(128) NOT NULL,
  task_description VARCHAR(2048) NOT NULL DEFAULT '',
  inception_ts TEXT NOT NULL,
  last_active_ts TEXT NOT NULL,
  attachments_policy VARCHAR(16) NOT NULL DEFAULT 'auto',
  contact_policy VARCHAR(16) NOT NULL DEFAULT 'auto',
  registration_token VARCHAR(80),
  retired_at TEXT,
  UNIQUE (project_id, name)
);
CREATE INDEX IF NOT EXISTS ix_agents_project_id ON agents(project_id);
CREATE INDEX IF NOT EXISTS ix_agents_registration_token ON agents(registration_token);

CREATE TABLE IF NOT EXISTS messages (
  id INTEGER PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects(id),
  sender_id INTEGER NOT NULL REFERENCES agents(id),
  thread_id VARCHAR(128),
  topic VARCHAR(64),
  subject VARCHAR(512) NOT NULL,
  body_md TEXT NOT NULL,
  importance VARCHAR(16) NOT NULL DEFAULT 'normal',
  ack_required BOOLEAN NOT NULL DEFAULT 0,
  created_ts TEXT NOT NULL,
  attachments JSON NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS ix_messages_project_id ON messages(project_id);
CREATE INDEX IF NOT EXISTS ix_messages_sender_id ON messages(sender_id);
CREATE INDEX IF NOT EXISTS idx_messages_thread_id ON messages(thread_id);
CREATE INDEX IF NOT EXISTS idx_messages_created_ts ON messages(created_ts);
CREATE INDEX IF NOT EXISTS idx_messages_importance ON messages(importance);
CREATE INDEX IF NOT EXISTS idx_messages_project_created ON messages(project_id, created_ts);
CREATE INDEX IF NOT EXISTS idx_messages_project_sender_created ON messages(project_id, sender_id, created_ts);
CREATE INDEX IF NOT EXISTS idx_messages_project_topic ON messages(project_id, topic);

CREATE TABLE IF NOT EXISTS message_recipients (
  message_id INTEGER NOT NULL REFERENCES messages(id),
  agent_id INTEGER NOT NULL REFERENCES agents(id),
  kind VARCHAR(8) NOT NULL DEFAULT 'to',
  read_ts TEXT,
  ack_ts TEXT,
  PRIMARY KEY (message_id, agent_id)
);
CREATE INDEX IF NOT EXISTS idx_message_recipients_agent ON message_recipients(agent_id);
CREATE INDEX IF NOT EXISTS idx_message_recipients_agent_message ON message_recipients(agent_id, message_id);

CREATE TABLE IF NOT EXISTS file_reservations (
  id INTEGER PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects(id),
  agent_id INTEGER NOT NULL REFERENCES agents(id),
  path_pattern VARCHAR(512) NOT NULL,
  exclusive BOOLEAN NOT NULL DEFAULT 1,
  reason VARCHAR(512) NOT NULL DEFAULT '',
  created_ts TEXT NOT NULL,
  expires_ts TEXT NOT NULL,
  released_ts TEXT
);
CREATE INDEX IF NOT EXISTS ix_file_reservations_project_id ON file_reservations(project_id);
CREATE INDEX IF NOT EXISTS ix_file_reservations_agent_id ON file_reservations(agent_id);
CREATE INDEX IF NOT EXISTS idx_file_reservations_project_released_expires
  ON file_reservations(project_id, released_ts, expires_ts);
CREATE INDEX IF NOT EXISTS idx_file_reservations_project_agent_released
  ON file_reservations(project_id, agent_id, released_ts);
CREATE INDEX IF NOT EXISTS idx_file_reservations_expires_ts ON file_reservations(expires_ts);

CREATE TABLE IF NOT EXISTS agent_links (
  id INTEGER PRIMARY KEY,
  a_project_id INTEGER NOT NULL REFERENCES projects(id),
  a_agent_id INTEGER NOT NULL REFERENCES agents(id),
  b_project_id INTEGER NOT NULL REFERENCES projects(id),
  b_agent_id INTEGER NOT NULL REFERENCES agents(id),
  status VARCHAR(16) NOT NULL DEFAULT 'pending',
  reason VARCHAR(512) NOT NULL DEFAULT '',
  created_ts TEXT NOT NULL,
  updated_ts TEXT NOT NULL,
  expires_ts TEXT,
  UNIQUE (a_project_id, a_agent_id, b_project_id, b_agent_id)
);
CREATE INDEX IF NOT EXISTS idx_agent_links_a_project ON agent_links(a_project_id);
CREATE INDEX IF NOT EXISTS idx_agent_links_b_project ON agent_links(b_project_id);
CREATE INDEX IF NOT EXISTS idx_agent_links_b_project_agent ON agent_links(b_project_id, b_agent_id);
CREATE INDEX IF NOT EXISTS idx_agent_links_status ON agent_links(status);

CREATE TABLE IF NOT EXISTS message_summaries (
  id INTEGER PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects(id),
  summary_text TEXT NOT NULL,
  start_ts TEXT NOT NULL,
  end_ts TEXT NOT NULL,
  source_message_count INTEGER NOT NULL DEFAULT 0,
  source_thread_ids TEXT NOT NULL DEFAULT '[]',
  llm_model VARCHAR(128),
  cost_usd REAL,
  created_ts TEXT NOT NULL,
  agent_id INTEGER
);
CREATE INDEX IF NOT EXISTS idx_summaries_project_end ON message_summaries(project_id, end_ts);

CREATE VIRTUAL TABLE IF NOT EXISTS fts_messages USING fts5(message_id UNINDEXED, subject, body);
CREATE TRIGGER IF NOT EXISTS fts_messages_ai AFTER INSERT ON messages BEGIN
  INSERT INTO fts_messages(rowid, message_id, subject, body) VALUES (new.id, new.id, new.subject, new.body_md);
END;
CREATE TRIGGER IF NOT EXISTS fts_messages_ad AFTER DELETE ON messages BEGIN
  DELETE FROM fts_messages WHERE rowid = old.id;
END;
CREATE TRIGGER IF NOT EXISTS fts_messages_au AFTER UPDATE ON messages BEGIN
  DELETE FROM fts_messages WHERE rowid = old.id;
  INSERT INTO fts_messages(rowid, message_id, subject, body) VALUES (new.id, new.id, new.subject, new.body_md);
END;
"""

BUSY_TIMEOUT_MS = 60_000
log = logging.getLogger(__name__)


@dataclass
class Batch:
    """What one drain writes, all in one transaction. Rows are dicts keyed by column name."""

    projects: list[dict[str, Any]] = field(default_factory=list)
    agents: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    # message_recipients rows: message_id, agent_id, kind, read_ts, ack_ts
    recipients: list[dict[str, Any]] = field(default_factory=list)
    # sender activity implied by a send: (agent_id, last_active_ts)
    activity: list[tuple[int, str]] = field(default_factory=list)
    # file_reservations rows (full state of each reservation, upserted by id)
    reservations: list[dict[str, Any]] = field(default_factory=list)
    # agent_links rows (full state of each link, upserted by its endpoints)
    links: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.projects)
            + len(self.agents)
            + len(self.messages)
            + len(self.recipients)
            + len(self.reservations)
            + len(self.links)
        )


class Index:
    """One SQLite file; a connection per thread (sqlite3 connections are not shared)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()

    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # 0600 before SQLite opens it: the -wal and -shm files take the database file's mode
            if not self.path.parent.exists():
                private_dir(self.path.parent)
            private_file(self.path)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE for writes, so a
            # writer waits for the lock up front instead of failing on upgrade).
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA temp_store=MEMORY")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (disk full, I/O error) leaves the transaction open, and SQLite may
            # already have rolled back by itself: end it if it is still open, never hide the error,
            # so the next batch on this connection starts clean.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def ensure_schema(self) -> None:
        """Create every table, index and trigger that is missing; safe to call any number of times."""
        conn = self.connect()
        with self.transaction():
            for statement in _statements(SCHEMA):
                conn.execute(statement)
            # message_summaries.agent_id (not in the reference): the agent a summary was made for,
            # NULL for a project-wide one (AGENT_AUTH=open without an agent). Added to older files.
            columns = {row[1] for row in conn.execute("PRAGMA table_info(message_summaries)")}
            if "agent_id" not in columns:
                conn.execute("ALTER TABLE message_summaries ADD COLUMN agent_id INTEGER")
            conn.execute(
                "CREATE INDEX IF NOT EXISTS idx_summaries_project_agent_end ON message_summaries(project_id, "
                "agent_id, end_ts)"
            )

    def query(self, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return self.connect().execute(sql, params).fetchall()

    def write_batch(self, batch: Batch) -> None:
        """Upsert a drained batch in one transaction. Idempotent: a replayed batch changes nothing
        (messages are immutable, read/ack times are set once, profiles are last-writer-wins).
        An agent or project that Redis lost and that came back under its name with a new id
        re-keys the indexed one instead of failing (docs/durability-ids.md)."""
        with self.transaction() as conn:
            projects = _settle_projects(conn, batch.projects)
            agents = _settle_agents(conn, batch.agents)
            conn.executemany(
                "INSERT INTO projects (id, slug, human_key, created_at, archived_at) VALUES (:id, :slug, :human_key, "
                ":created_at, :archived_at) ON CONFLICT(id) DO UPDATE SET human_key = excluded.human_key, "
                "archived_at = excluded.archived_at",
                projects,
            )
            conn.executemany(
                "INSERT INTO agents (id, project_id, name, program, model, task_description, inception_ts, "
                "last_active_ts, attachments_policy, contact_policy, registration_token, retired_at) VALUES (:id, "
                ":project_id, :name, :program, :model, :task_description, :inception_ts, :last_active_ts, "
                ":attachments_policy, :contact_policy, :registration_token, :retired_at) "
                "ON CONFLICT(id) DO UPDATE SET name = excluded.name, inception_ts = excluded.inception_ts, "
                "program = excluded.program, retired_at = excluded.retired_at, "
                "model = excluded.model, task_description = excluded.task_description, "
                "attachments_policy = excluded.attachments_policy, contact_policy = excluded.contact_policy, "
                "registration_token = excluded.registration_token, "
                "last_active_ts = max(agents.last_active_ts, excluded.last_active_ts)",
                agents,
            )
            conn.executemany(
                "INSERT OR IGNORE INTO messages (id, project_id, sender_id, thread_id, topic, subject, body_md, "
                "importance, ack_required, created_ts, attachments) VALUES (:id, :project_id, :sender_id, "
                ":thread_id, :topic, :subject, :body_md, :importance, :ack_required, :created_ts, :attachments)",
                batch.messages,
            )
            conn.executemany(
                "INSERT INTO message_recipients (message_id, agent_id, kind, read_ts, ack_ts) "
                "VALUES (:message_id, :agent_id, :kind, :read_ts, :ack_ts) "
                "ON CONFLICT(message_id, agent_id) DO UPDATE SET "
                "read_ts = coalesce(message_recipients.read_ts, excluded.read_ts), "
                "ack_ts = coalesce(message_recipients.ack_ts, excluded.ack_ts)",
                batch.recipients,
            )
            conn.executemany(
                "UPDATE agents SET last_active_ts = ?2 WHERE id = ?1 AND last_active_ts < ?2", batch.activity
            )
            conn.executemany(
                "INSERT INTO file_reservations (id, project_id, agent_id, path_pattern, exclusive, reason, "
                "created_ts, expires_ts, released_ts) VALUES (:id, :project_id, :agent_id, :path_pattern, "
                ":exclusive, :reason, :created_ts, :expires_ts, :released_ts) ON CONFLICT(id) DO UPDATE SET "
                "exclusive = excluded.exclusive, reason = excluded.reason, expires_ts = excluded.expires_ts, "
                "released_ts = coalesce(file_reservations.released_ts, excluded.released_ts)",
                batch.reservations,
            )
            conn.executemany(
                # only while both agents are indexed: a batch that read a link before one of
                # them was hard-deleted (in either project) writes no row for it afterwards;
                # the endpoint project that drains last, with both agents indexed, writes it
                "INSERT INTO agent_links (a_project_id, a_agent_id, b_project_id, b_agent_id, status, reason, "
                "created_ts, updated_ts, expires_ts) SELECT :a_project_id, :a_agent_id, :b_project_id, "
                ":b_agent_id, :status, :reason, :created_ts, :updated_ts, :expires_ts "
                "WHERE EXISTS (SELECT 1 FROM agents WHERE id = :a_agent_id AND project_id = :a_project_id) "
                "AND EXISTS (SELECT 1 FROM agents WHERE id = :b_agent_id AND project_id = :b_project_id) "
                "ON CONFLICT(a_project_id, a_agent_id, b_project_id, b_agent_id) DO UPDATE SET "
                "status = excluded.status, reason = excluded.reason, updated_ts = excluded.updated_ts, "
                "expires_ts = excluded.expires_ts WHERE excluded.updated_ts >= agent_links.updated_ts",
                batch.links,
            )

    def indexed_values(self, table: str, ids: list[int], columns: tuple[str, ...]) -> dict[int, tuple[Any, ...]]:
        """id -> the ``columns`` of each of these ids that ``table`` holds (read in chunks)."""
        found: dict[int, tuple[Any, ...]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.query(f"SELECT id, {', '.join(columns)} FROM {table} WHERE id IN ({marks})", chunk):
                found[int(row["id"])] = tuple(row[c] for c in columns)
        return found


# Rows that name an agent or a project by id: (table, column) pairs moved by a re-key.
AGENT_REFERENCES = (
    ("messages", "sender_id"),
    ("message_recipients", "agent_id"),
    ("file_reservations", "agent_id"),
    ("agent_links", "a_agent_id"),
    ("agent_links", "b_agent_id"),
)
PROJECT_REFERENCES = (
    ("agents", "project_id"),
    ("messages", "project_id"),
    ("file_reservations", "project_id"),
    ("agent_links", "a_project_id"),
    ("agent_links", "b_project_id"),
    ("message_summaries", "project_id"),
)


def _rekey(conn: sqlite3.Connection, table: str, old: int, new: int, references: tuple[tuple[str, str], ...]) -> None:
    """Give the row ``old`` of ``table`` the id ``new``, and every row naming it too. A
    reference that would collide with one already naming ``new`` (a unique key) is a
    duplicate of it and is dropped."""
    for ref_table, column in references:
        conn.execute(f"UPDATE OR IGNORE {ref_table} SET {column} = ?2 WHERE {column} = ?1", (old, new))
        conn.execute(f"DELETE FROM {ref_table} WHERE {column} = ?1", (old,))
    if conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (new,)).fetchone():
        conn.execute(f"DELETE FROM {table} WHERE id = ?", (old,))
    else:
        conn.execute(f"UPDATE {table} SET id = ?2 WHERE id = ?1", (old, new))


def _settle_projects(conn: sqlite3.Connection, projects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The project rows to upsert. A project created again under its slug with a new id (Redis
    lost it after it was indexed) is the live one: the indexed row and its history take its id,
    instead of failing every batch on ``UNIQUE(slug)``. A row whose id the index holds for
    another slug is left out (logged): it would overwrite that project."""
    kept = []
    for row in projects:
        held = conn.execute("SELECT slug FROM projects WHERE id = ?", (row["id"],)).fetchone()
        if held and held[0] != row["slug"]:
            log.error("project id %s is indexed for %r, not %r: left as indexed", row["id"], held[0], row["slug"])
            continue
        for (old,) in conn.execute("SELECT id FROM projects WHERE slug = ? AND id != ?", (row["slug"], row["id"])):
            _rekey(conn, "projects", old, row["id"], PROJECT_REFERENCES)
        kept.append(row)
    return kept


def _settle_agents(conn: sqlite3.Connection, agents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The agent rows to upsert. An agent registered again under its name with a new id (Redis
    lost its record after it was indexed): names are what agents are addressed by, so the
    indexed agent and its mail, reservations and links take the live id, instead of failing
    every batch on ``UNIQUE(project_id, name)``. A row whose id the index holds for another
    agent is left out (logged)."""
    kept = []
    for row in agents:
        held = conn.execute("SELECT project_id, lower(name) FROM agents WHERE id = ?", (row["id"],)).fetchone()
        if held and tuple(held) != (row["project_id"], row["name"].lower()):
            log.error("agent id %s is indexed for another agent, not %r: left as indexed", row["id"], row["name"])
            continue
        found = conn.execute(
            "SELECT id FROM agents WHERE project_id = ? AND lower(name) = lower(?) AND id != ?",
            (row["project_id"], row["name"], row["id"]),
        ).fetchall()
        for (old,) in found:
            _rekey(conn, "agents", old, row["id"], AGENT_REFERENCES)
        kept.append(row)
    return kept


def indexed_project_id(path: Path, slug: str, human_key: str = "") -> int | None:
    """The id in the index at ``path`` of the project with that slug (or that human_key), or
    None (no index file, no schema yet, or no such project). Opens and closes its own
    connection; never creates the file."""
    if not Path(path).exists():
        return None
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        row = conn.execute("SELECT id FROM projects WHERE slug = ? OR human_key = ?", (slug, human_key)).fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()
    return int(row[0]) if row else None


def _statements(script: str) -> list[str]:
    """Split the schema into statements (triggers contain ';' inside BEGIN ... END)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s]
