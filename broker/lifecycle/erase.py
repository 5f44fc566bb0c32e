"""Hard deletes: hard_delete_agent and hard_delete_project, in Redis, the SQLite index and the
Git archive.

Redis goes first, in bounded atomic script calls (``hard_delete_agent.lua``; for a project,
SCAN + UNLINK in batches), each safe to repeat: the typed commands of ``broker/store/commands/erase.py``. The index and archive part runs under the
project's drain lock (``broker.persistence.drain.project_lock``), the lock a persistence batch holds from
claim to ack, so no batch that read the data before it was deleted can write it back after:
a batch either finished before (its rows are deleted here) or reads Redis after (and finds
nothing). Pending entries of deleted things are dropped by the scripts; a drain that still
meets one skips it (persist.py logs "gone from Redis").

The agent record (for a project: the project and agents hashes) is deleted last and only
after the index and archive, so an interrupted delete is finished by calling it again.

Runs on a thread with a synchronous Redis session (the drain lock is a file lock).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass, field
from typing import Any

from broker.config import Settings
from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.names import validate_name
from broker.identity.projects import project_slug
from broker.lifecycle.hot_window import cold_unread_counts
from broker.lifecycle.state import agent_or_operator, check_confirmation, project_state
from broker.persistence.archive import Archive, ArchiveMessage
from broker.persistence.drain import project_lock
from broker.persistence.index import Index
from broker.store.commands import build_slots as slot_store
from broker.store.commands import products as product_store
from broker.store.commands.erase import EraseSession, LinkCopy
from broker.store.commands.lifecycle import Caller
from broker.store.keys import Keys
from broker.store.refusals import Refusal
from broker.store.store import Store

log = logging.getLogger(__name__)

BATCH = 200  # messages, inbox entries or reservations per script call
MAX_ROUNDS = 5  # "final" finding new mail sends the delete round again, at most this often


@dataclass
class AgentDeletion:
    """What one hard_delete_agent removed, by store, so counts are of distinct things."""

    agent: dict[str, Any] = field(default_factory=dict)
    sent: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> {head, recipients}
    sent_pairs: set[tuple[int, str]] = field(default_factory=set)  # (message id, lower recipient)
    received: set[int] = field(default_factory=set)
    reservations: set[int] = field(default_factory=set)
    windows: int = 0
    agent_links: int = 0
    foreign_links: set[LinkCopy] = field(default_factory=set)  # copies kept in other projects
    archive: tuple[int, int, list[str]] = (0, 0, [])  # files, directories removed; errors


async def hard_delete_agent(
    store: Store,
    project_key: str,
    agent_name: str,
    confirmation: object,
    token: str | None,
    operator_token: str | None = None,
) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    name = validate_name(agent_name)
    check_confirmation(confirmation, "hard_delete_agent")
    # It removes mail from other agents' inboxes: under `required` only the operator may do it.
    caller = agent_or_operator(store, slug, name, token, operator_token, "hard_delete_agent", operator_only=True)
    try:
        done = await asyncio.to_thread(_delete_agent, store.settings, store.redis_url, store.keys, slug, name, caller)
    except Refusal as refused:  # no such agent or project, or auth
        await refusals.raise_for(store, refused.reply, slug, project_key)
        raise
    # its build slot leases go too (Redis only, not counted: the reference's counts have no key for them)
    await slot_store.drop_agent_leases(store, slug=slug, name=name)
    archive_files, archive_dirs, errors = done.archive
    return {
        "status": "hard_deleted",
        "agent_name": done.agent["name"],
        "project_key": project_key,
        "deleted_counts": {
            "message_recipients": len(done.received),
            "sent_message_recipients": len(done.sent_pairs),
            "messages_sent": len(done.sent),
            "file_reservations": len(done.reservations),
            "agent_links": done.agent_links,
            "window_identities": done.windows,
            "agent": 1,
            "archive_files_removed": archive_files,
            "archive_dirs_removed": archive_dirs,
        },
        "filesystem_errors": errors,
    }


def _delete_agent(
    settings: Settings, redis_url: str, keys: Keys, slug: str, name: str, caller: Caller
) -> AgentDeletion:
    """Raises Refusal for a script's error reply (no such agent or project, or auth)."""
    with EraseSession(redis_url, keys) as session:
        found = AgentDeletion()
        for _ in range(MAX_ROUNDS):
            _redis_rounds(session, slug, name, caller, found)
            session.forget_links(copies=found.foreign_links, batch=BATCH)
            with project_lock(settings.index_url, slug):
                cold_unread = _cold_unread_sent(settings, found)
                _index_delete_agent(settings, found)
                found.archive = _archive_delete_agent(settings, slug, found)
                final = session.delete_final(slug=slug, name=name, caller=caller, batch=BATCH)
                session.forget_cold(slug=slug, gone=name if final.done else "", counts=cold_unread)
            if final.done:
                found.reservations.update(final.reservations)
                found.windows += final.windows
                return found
        raise BrokerError(
            "RESOURCE_BUSY", "The agent kept receiving or sending mail while it was being deleted; call again."
        )


def _redis_rounds(session: EraseSession, slug: str, name: str, caller: Caller, found: AgentDeletion) -> None:
    """The bounded phases before "final"."""
    more = True
    while more:
        sent = session.delete_sent(slug=slug, name=name, caller=caller, batch=BATCH)
        found.agent = sent.agent
        for item in sent.items:
            message_id = int(item.head["id"])
            found.sent[message_id] = {"head": item.head, "recipients": item.recipients}
            for kind in ("to", "cc", "bcc"):
                for recipient in item.recipients.get(kind) or []:
                    found.sent_pairs.add((message_id, recipient.lower()))
                    if recipient.lower() == found.agent["name"].lower():
                        found.received.add(message_id)  # its copy of a message to itself
        more = sent.more
    more = True
    while more:
        received = session.delete_received(slug=slug, name=name, caller=caller, batch=BATCH)
        found.received.update(received.items)
        more = received.more
    cursor, more = "0", True
    while more:
        step = session.delete_reservations(slug=slug, name=name, caller=caller, batch=BATCH, cursor=cursor)
        found.reservations.update(step.items)
        cursor, more = step.cursor, step.more
    cursor, more = "0", True
    while more:
        step = session.delete_contacts(slug=slug, name=name, caller=caller, batch=BATCH, cursor=cursor)
        found.foreign_links.update(step.items)
        cursor, more = step.cursor, step.more


def _cold_unread_sent(settings: Settings, found: AgentDeletion) -> dict[str, int]:
    """Per recipient, the messages the agent sent that are only in the index (the hot-window
    trimmer moved them out of Redis; the hot ones are in ``found.sent`` already) and that it had
    not read: deleting them from the index lowers the project's cold unread counts."""
    agent_id, project_id = int(found.agent["id"]), int(found.agent["project_id"])
    return cold_unread_counts(
        settings.index_url,
        "SELECT m.id AS id, a.name AS name FROM messages m JOIN message_recipients r ON r.message_id = m.id "
        "JOIN agents a ON a.id = r.agent_id WHERE m.project_id = :project AND m.sender_id = :agent "
        "AND r.agent_id <> :agent AND r.read_ts IS NULL",
        {"project": project_id, "agent": agent_id},
        set(found.sent),
    )


def _index_delete_agent(settings: Settings, found: AgentDeletion) -> None:
    """The agent's rows in the index: its recipient rows, the messages it sent (with their
    recipient rows), the summaries made for it, its reservations, links touching it, and the
    agent row."""
    agent_id, project_id = int(found.agent["id"]), int(found.agent["project_id"])
    index = Index.from_settings(settings)
    try:
        index.ensure_schema()
        with index.transaction() as conn:
            received = conn.execute(
                "DELETE FROM message_recipients WHERE agent_id = :agent RETURNING message_id", {"agent": agent_id}
            ).fetchall()
            found.received.update(row[0] for row in received)
            sent = conn.execute(
                "SELECT id, subject, created_ts FROM messages WHERE project_id = :pid AND sender_id = :agent",
                {"pid": project_id, "agent": agent_id},
            ).fetchall()
            sent_ids = [row["id"] for row in sent]
            names: dict[int, list[str]] = {}
            for start in range(0, len(sent_ids), 500):
                chunk = sent_ids[start : start + 500]
                marks = ", ".join(f":m{n}" for n in range(len(chunk)))
                chunk_ids = {f"m{n}": mid for n, mid in enumerate(chunk)}
                for row in conn.execute(
                    f"SELECT r.message_id, a.name FROM message_recipients r JOIN agents a ON a.id = r.agent_id "
                    f"WHERE r.message_id IN ({marks})",
                    chunk_ids,
                ):
                    names.setdefault(row["message_id"], []).append(row["name"])
                    found.sent_pairs.add((row["message_id"], row["name"].lower()))
                conn.execute(f"DELETE FROM message_recipients WHERE message_id IN ({marks})", chunk_ids)
                conn.execute(f"DELETE FROM messages WHERE id IN ({marks})", chunk_ids)
            for row in sent:
                found.sent.setdefault(
                    row["id"],
                    {
                        "head": {"id": row["id"], "subject": row["subject"], "created_ts": row["created_ts"]},
                        "recipients": {"to": names.get(row["id"], []), "cc": [], "bcc": []},
                    },
                )
            # summaries made for it hold key points of its mail (not counted: not a reference key)
            conn.execute("DELETE FROM message_summaries WHERE agent_id = :agent", {"agent": agent_id})
            held = conn.execute(
                "DELETE FROM file_reservations WHERE agent_id = :agent RETURNING id", {"agent": agent_id}
            )
            found.reservations.update(row[0] for row in held.fetchall())
            links = conn.execute(
                "DELETE FROM agent_links WHERE (a_project_id = :pid AND a_agent_id = :agent) "
                "OR (b_project_id = :pid AND b_agent_id = :agent)",
                {"pid": project_id, "agent": agent_id},
            )
            found.agent_links = links.rowcount
            conn.execute("DELETE FROM agents WHERE id = :agent", {"agent": agent_id})
    finally:
        index.close()


def _archive_delete_agent(settings: Settings, slug: str, found: AgentDeletion) -> tuple[int, int, list[str]]:
    """agents/<Name>/ and, for each message it sent, the canonical copy and the recipients'
    inbox copies (thread digests keep their entries: they are history, not the message)."""
    base = f"projects/{slug}"
    name = found.agent["name"]
    paths = [f"{base}/agents/{name}"]
    for item in found.sent.values():
        head = item["head"]
        message = ArchiveMessage(
            id=int(head["id"]), subject=head.get("subject") or "", body_md="", sender=name, created=head["created_ts"]
        )
        where = f"{message.month_dir}/{message.filename}"
        paths.append(f"{base}/messages/{where}")
        recipients = item["recipients"]
        for recipient in {*recipients.get("to", []), *recipients.get("cc", []), *recipients.get("bcc", [])}:
            paths.append(f"{base}/agents/{recipient}/inbox/{where}")
    try:
        files, dirs = Archive(settings.archive_path, slug).remove_paths(
            sorted(set(paths)), f"hard_delete_agent: {name}", keep=base
        )
        return files, dirs, []
    except Exception as exc:  # the data is gone from Redis and the index; report, do not fail
        log.warning("archive cleanup of agent %s in %s failed: %s", name, slug, exc)
        return 0, 0, [f"{type(exc).__name__}: {exc}"]


# -- projects ------------------------------------------------------------------------------
async def hard_delete_project(
    store: Store, project_key: str, confirmation: object, token: str | None, operator_token: str | None = None
) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    check_confirmation(confirmation, "hard_delete_project")
    # Archiving first (with the operator check) stops new agents, mail and reservations while
    # the keys go; the project hash itself goes last, so a repeated call finishes the job.
    await project_state(store, project_key, token, operator_token, "archive", "hard_delete_project")
    counts, errors = await asyncio.to_thread(_delete_project, store.settings, store.redis_url, store.keys, slug)
    # Products are global keys (another cluster slot): their links to the project go in a step of
    # their own. A link this misses counts for nothing (it names a project id that is gone).
    counts["product_links"] = await product_store.unlink_project(store, slug=slug)
    return {
        "status": "hard_deleted",
        "project_key": project_key,
        "slug": slug,
        "deleted_counts": counts,
        "filesystem_errors": errors,
    }


def _delete_project(settings: Settings, redis_url: str, keys: Keys, slug: str) -> tuple[dict[str, int], list[str]]:
    with EraseSession(redis_url, keys) as session, project_lock(settings.index_url, slug):
        # A project made before <p>:slugs existed owns its slug only through its directory
        # entry, which goes below: claim the slug for its path first, so that no other path
        # can take it (another process may still have this path cached under this slug).
        session.claim_slug(slug=slug)
        counts = _redis_counts(session, slug)
        session.forget_links(copies=session.link_copies(slug=slug), batch=BATCH)
        _index_delete_project(settings, slug, counts)
        errors: list[str] = []
        try:
            files, dirs = Archive(settings.archive_path, slug).remove_paths(
                [f"projects/{slug}"], f"hard_delete_project: {slug}"
            )
        except Exception as exc:
            log.warning("archive cleanup of project %s failed: %s", slug, exc)
            files, dirs, errors = 0, 0, [f"{type(exc).__name__}: {exc}"]
        # attachment files sent but not committed yet (broker/persistence/attachments.py)
        shutil.rmtree(settings.attachments_staging_path / f"projects/{slug}", ignore_errors=True)
        counts["archive_files_removed"], counts["archive_dirs_removed"] = files, dirs
        session.unlink_project(slug=slug)
    return counts, errors


def _redis_counts(session: EraseSession, slug: str) -> dict[str, Any]:
    """What Redis holds (every indexed message, agent and recipient row is also in Redis, until
    purged or deleted from both); reservation ids are merged with the index's below."""
    held = session.project_counts(slug=slug)
    return {
        "project_id": held.project_id,
        "agents": held.agents,
        "messages": held.messages,
        "message_recipients": held.message_recipients,
        "file_reservations": set(held.reservations),
        "window_identities": held.windows,
    }


def _index_delete_project(settings: Settings, slug: str, counts: dict[str, Any]) -> None:
    index = Index.from_settings(settings)
    try:
        index.ensure_schema()
        with index.transaction() as conn:
            row = conn.execute("SELECT id FROM projects WHERE slug = :slug", {"slug": slug}).fetchone()
            indexed: dict[str, int] = {}
            held: set[int] = set()
            if row is not None:
                pid = {"pid": row["id"]}
                agents = "SELECT id FROM agents WHERE project_id = :pid"
                indexed["message_recipients"] = conn.execute(
                    "DELETE FROM message_recipients WHERE message_id IN (SELECT id FROM messages WHERE project_id = :pid) "
                    f"OR agent_id IN ({agents})",
                    pid,
                ).rowcount
                indexed["messages"] = conn.execute("DELETE FROM messages WHERE project_id = :pid", pid).rowcount
                held = {
                    r[0]
                    for r in conn.execute("DELETE FROM file_reservations WHERE project_id = :pid RETURNING id", pid)
                }
                indexed["agent_links"] = conn.execute(
                    "DELETE FROM agent_links WHERE a_project_id = :pid OR b_project_id = :pid", pid
                ).rowcount
                indexed["message_summaries"] = conn.execute(
                    "DELETE FROM message_summaries WHERE project_id = :pid", pid
                ).rowcount
                indexed["agents"] = conn.execute("DELETE FROM agents WHERE project_id = :pid", pid).rowcount
                conn.execute("DELETE FROM projects WHERE id = :pid", pid)
    finally:
        index.close()
    counts.pop("project_id")
    counts["file_reservations"] = len(counts["file_reservations"] | held)
    for key in ("agents", "messages", "message_recipients"):
        counts[key] = max(counts[key], indexed.get(key, 0))
    counts["agent_links"] = indexed.get("agent_links", 0)
    counts["message_summaries"] = indexed.get("message_summaries", 0)
    counts["sibling_suggestions"] = 0
    counts["product_links"] = 0  # hard_delete_project counts them
    counts["project"] = 1
