"""What the persistence worker writes: a Batch, upserted in one transaction with SQL that is the
same on SQLite and PostgreSQL (``ON CONFLICT ... DO UPDATE / DO NOTHING``, ``CASE`` for the newer
of two times, no ``INSERT/UPDATE OR IGNORE``), sent row by row through the driver's executemany
(psycopg 3 pipelines it: one round trip per statement kind, not per row)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from broker.persistence.index.rows import Connection

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
    # message_commits rows: each archived message's commit (broker/persistence/commit_rows.py)
    commits: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.projects)
            + len(self.agents)
            + len(self.messages)
            + len(self.recipients)
            + len(self.reservations)
            + len(self.links)
        )


UPSERT_PROJECT = (
    "INSERT INTO projects (id, slug, human_key, created_at, archived_at) VALUES (:id, :slug, :human_key, "
    ":created_at, :archived_at) ON CONFLICT (id) DO UPDATE SET human_key = excluded.human_key, "
    "archived_at = excluded.archived_at"
)
UPSERT_AGENT = (
    "INSERT INTO agents (id, project_id, name, program, model, task_description, inception_ts, "
    "last_active_ts, attachments_policy, contact_policy, registration_token, retired_at) VALUES (:id, "
    ":project_id, :name, :program, :model, :task_description, :inception_ts, :last_active_ts, "
    ":attachments_policy, :contact_policy, :registration_token, :retired_at) "
    "ON CONFLICT (id) DO UPDATE SET name = excluded.name, inception_ts = excluded.inception_ts, "
    "program = excluded.program, retired_at = excluded.retired_at, "
    "model = excluded.model, task_description = excluded.task_description, "
    "attachments_policy = excluded.attachments_policy, contact_policy = excluded.contact_policy, "
    "registration_token = excluded.registration_token, "
    "last_active_ts = CASE WHEN excluded.last_active_ts > agents.last_active_ts "
    "THEN excluded.last_active_ts ELSE agents.last_active_ts END"
)
# messages are immutable: a replayed one changes nothing
INSERT_MESSAGE = (
    "INSERT INTO messages (id, project_id, sender_id, thread_id, topic, subject, body_md, "
    "importance, ack_required, created_ts, attachments) VALUES (:id, :project_id, :sender_id, "
    ":thread_id, :topic, :subject, :body_md, :importance, :ack_required, :created_ts, :attachments) "
    "ON CONFLICT DO NOTHING"
)
UPSERT_RECIPIENT = (
    "INSERT INTO message_recipients (message_id, agent_id, kind, read_ts, ack_ts) "
    "VALUES (:message_id, :agent_id, :kind, :read_ts, :ack_ts) "
    "ON CONFLICT (message_id, agent_id) DO UPDATE SET "
    "read_ts = coalesce(message_recipients.read_ts, excluded.read_ts), "
    "ack_ts = coalesce(message_recipients.ack_ts, excluded.ack_ts)"
)
ACTIVITY = "UPDATE agents SET last_active_ts = :ts WHERE id = :id AND last_active_ts < :ts"
UPSERT_RESERVATION = (
    "INSERT INTO file_reservations (id, project_id, agent_id, path_pattern, exclusive, reason, "
    "created_ts, expires_ts, released_ts) VALUES (:id, :project_id, :agent_id, :path_pattern, "
    ":exclusive, :reason, :created_ts, :expires_ts, :released_ts) ON CONFLICT (id) DO UPDATE SET "
    "exclusive = excluded.exclusive, reason = excluded.reason, expires_ts = excluded.expires_ts, "
    "released_ts = coalesce(file_reservations.released_ts, excluded.released_ts)"
)
# only while both agents are indexed: a batch that read a link before one of them was
# hard-deleted (in either project) writes no row for it afterwards; the endpoint project that
# drains last, with both agents indexed, writes it
UPSERT_LINK = (
    "INSERT INTO agent_links (a_project_id, a_agent_id, b_project_id, b_agent_id, status, reason, "
    "created_ts, updated_ts, expires_ts) SELECT :a_project_id, :a_agent_id, :b_project_id, "
    ":b_agent_id, :status, :reason, :created_ts, :updated_ts, :expires_ts "
    "WHERE EXISTS (SELECT 1 FROM agents WHERE id = :a_agent_id AND project_id = :a_project_id) "
    "AND EXISTS (SELECT 1 FROM agents WHERE id = :b_agent_id AND project_id = :b_project_id) "
    "ON CONFLICT (a_project_id, a_agent_id, b_project_id, b_agent_id) DO UPDATE SET "
    "status = excluded.status, reason = excluded.reason, updated_ts = excluded.updated_ts, "
    "expires_ts = excluded.expires_ts WHERE excluded.updated_ts >= agent_links.updated_ts"
)
# written once: a replayed batch keeps the row of the commit that added the message's file
INSERT_COMMIT = (
    "INSERT INTO message_commits (message_id, hexsha, summary, authored_ts, insertions, deletions, excerpt) "
    "VALUES (:message_id, :hexsha, :summary, :authored_ts, :insertions, :deletions, :excerpt) "
    "ON CONFLICT (message_id) DO NOTHING"
)
# PostgreSQL infers no type for a parameter in a SELECT list: cast them to the columns' types
UPSERT_LINK_PG = UPSERT_LINK.replace(
    "SELECT :a_project_id, :a_agent_id, :b_project_id, :b_agent_id, :status, :reason, :created_ts, :updated_ts, "
    ":expires_ts",
    "SELECT CAST(:a_project_id AS BIGINT), CAST(:a_agent_id AS BIGINT), CAST(:b_project_id AS BIGINT), "
    "CAST(:b_agent_id AS BIGINT), CAST(:status AS TEXT), CAST(:reason AS TEXT), CAST(:created_ts AS TEXT), "
    "CAST(:updated_ts AS TEXT), CAST(:expires_ts AS TEXT)",
)


def write_batch(conn: Connection, batch: Batch) -> None:
    """Upsert a drained batch on ``conn`` (inside the caller's transaction)."""
    projects = _settle_projects(conn, batch.projects)
    agents = _settle_agents(conn, batch.agents)
    conn.executemany(UPSERT_PROJECT, projects)
    conn.executemany(UPSERT_AGENT, agents)
    conn.executemany(INSERT_MESSAGE, [_booleans(m, "ack_required") for m in batch.messages])
    conn.executemany(UPSERT_RECIPIENT, batch.recipients)
    conn.executemany(ACTIVITY, [{"id": agent_id, "ts": ts} for agent_id, ts in _newest(batch.activity).items()])
    conn.executemany(UPSERT_RESERVATION, [_booleans(r, "exclusive") for r in batch.reservations])
    conn.executemany(UPSERT_LINK_PG if conn.dialect == "postgresql" else UPSERT_LINK, batch.links)
    if batch.commits:
        conn.executemany(INSERT_COMMIT, batch.commits)


def _newest(activity: list[tuple[int, str]]) -> dict[int, str]:
    """Each agent's newest activity time of the batch: one update per agent, not one per send."""
    newest: dict[int, str] = {}
    for agent_id, ts in activity:
        if ts > newest.get(agent_id, ""):
            newest[agent_id] = ts
    return newest


def _booleans(row: dict[str, Any], column: str) -> dict[str, Any]:
    """A flag as a boolean: SQLite stores it as 0/1 either way, PostgreSQL's BOOLEAN takes no int."""
    return {**row, column: bool(row[column])} if column in row else row


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
# The unique keys a moved reference can collide on
UNIQUE_KEYS = {
    "agents": ("project_id", "name"),
    "message_recipients": ("message_id", "agent_id"),
    "agent_links": ("a_project_id", "a_agent_id", "b_project_id", "b_agent_id"),
}


def _rekey(conn: Connection, table: str, old: int, new: int, references: tuple[tuple[str, str], ...]) -> None:
    """Give the row ``old`` of ``table`` the id ``new``, and every row naming it too. A
    reference that would collide with one already naming ``new`` (a unique key) is a
    duplicate of it and is dropped (first), then the rest move."""
    ids = {"old": old, "new": new}
    for ref_table, column in references:
        key = UNIQUE_KEYS.get(ref_table, ())
        if column in key:
            same = " AND ".join(f"o.{k} = {ref_table}.{k}" for k in key if k != column)
            conn.execute(
                f"DELETE FROM {ref_table} WHERE {column} = :old AND EXISTS (SELECT 1 FROM {ref_table} o "
                f"WHERE o.{column} = :new AND {same})",
                ids,
            )
        conn.execute(f"UPDATE {ref_table} SET {column} = :new WHERE {column} = :old", ids)
    if conn.execute(f"SELECT 1 FROM {table} WHERE id = :new", ids).fetchone():
        conn.execute(f"DELETE FROM {table} WHERE id = :old", ids)
    else:
        conn.execute(f"UPDATE {table} SET id = :new WHERE id = :old", ids)


def _settle_projects(conn: Connection, projects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The project rows to upsert. A project created again under its slug with a new id (Redis
    lost it after it was indexed) is the live one: the indexed row and its history take its id,
    instead of failing every batch on ``UNIQUE(slug)``. A row whose id the index holds for
    another slug is left out (logged): it would overwrite that project."""
    kept = []
    for row in projects:
        held = conn.execute("SELECT slug FROM projects WHERE id = :id", {"id": row["id"]}).fetchone()
        if held and held[0] != row["slug"]:
            log.error("project id %s is indexed for %r, not %r: left as indexed", row["id"], held[0], row["slug"])
            continue
        for (old,) in conn.execute(
            "SELECT id FROM projects WHERE slug = :slug AND id != :id", {"slug": row["slug"], "id": row["id"]}
        ).fetchall():
            _rekey(conn, "projects", old, row["id"], PROJECT_REFERENCES)
        kept.append(row)
    return kept


def _settle_agents(conn: Connection, agents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The agent rows to upsert. An agent registered again under its name with a new id (Redis
    lost its record after it was indexed): names are what agents are addressed by, so the
    indexed agent and its mail, reservations and links take the live id, instead of failing
    every batch on ``UNIQUE(project_id, name)``. A row whose id the index holds for another
    agent is left out (logged)."""
    kept = []
    for row in agents:
        held = conn.execute("SELECT project_id, lower(name) FROM agents WHERE id = :id", {"id": row["id"]}).fetchone()
        if held and tuple(held) != (row["project_id"], row["name"].lower()):
            log.error("agent id %s is indexed for another agent, not %r: left as indexed", row["id"], row["name"])
            continue
        found = conn.execute(
            "SELECT id FROM agents WHERE project_id = :pid AND lower(name) = lower(:name) AND id != :id",
            {"pid": row["project_id"], "name": row["name"], "id": row["id"]},
        ).fetchall()
        for (old,) in found:
            _rekey(conn, "agents", old, row["id"], AGENT_REFERENCES)
        kept.append(row)
    return kept
