"""What each kind of pending entry reads from Redis and writes to the archive and index.

A drain (broker/persistence/drain.py) claims a batch of pending members, reads each member's
record from Redis in one round trip (broker/store/commands/drain_reads.py), then turns the records into
SQLite rows and archive files (``EntryKind.load``), collected in a ``Work``. To persist a new
kind of entry, add it to ``HANDLERS`` (and, if it reads a record of its own, a reader to
broker/store/commands/drain_reads.py); entries of a kind without a handler stay in flight (logged)
instead of being dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker.persistence.archive import ArchiveMessage
from broker.persistence.index import Batch
from broker.store.commands.drain_reads import EntryRecord, MessageRecord, ReceiptRecord
from broker.store.commands.reservation_record import record_dict
from broker.store.times import micros

log = logging.getLogger(__name__)


@dataclass
class ProjectState:
    """What a batch needs to know about its project, read once per batch."""

    slug: str
    project: dict[str, str]
    agents: dict[str, dict[str, Any]]  # lower name -> stored agent JSON
    active: dict[str, str]  # name -> last_active_ts
    counters: dict[str, int] = field(default_factory=dict)  # id kind -> its counter, read with the batch

    def agent_id(self, name: str) -> int | None:
        agent = self.agents.get(name.lower())
        return int(agent["id"]) if agent else None


@dataclass
class Work:
    """One batch being assembled: SQLite rows plus archive writes."""

    batch: Batch = field(default_factory=Batch)
    profiles: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    messages: list[tuple[str, str, ArchiveMessage]] = field(default_factory=list)
    reservations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # message id -> its creation time (µs), for every message the batch writes rows of: what
    # tells a message from another one that got the same id (see persist_guards.drop_clashes)
    created_us: dict[int, int] = field(default_factory=dict)


def _load_project(state: ProjectState, member: str, record: EntryRecord, work: Work) -> None:
    """The project row is written with every batch (see persist_batch); nothing else to do."""


PROFILE_FIELDS = (
    "id", "name", "program", "model", "task_description", "inception_ts", "last_active_ts", "project_id",
    "attachments_policy",
)  # fmt: skip


def _load_agent(state: ProjectState, member: str, record: EntryRecord, work: Work) -> None:
    agent_id = int(member.split(":", 1)[1])
    agent = next((a for a in state.agents.values() if int(a["id"]) == agent_id), None)
    if agent is None:
        log.warning("agent %s of project %s is gone from Redis; skipped", agent_id, state.slug)
        return
    last_active = state.active.get(agent["name"]) or agent["inception_ts"]
    work.batch.agents.append(
        {
            "id": agent_id,
            "project_id": int(agent["project_id"]),
            "name": agent["name"],
            "program": agent["program"],
            "model": agent["model"],
            "task_description": agent.get("task_description", ""),
            "inception_ts": agent["inception_ts"],
            "last_active_ts": last_active,
            "attachments_policy": agent.get("attachments_policy", "auto"),
            "contact_policy": agent.get("contact_policy", "auto"),
            "registration_token": f"sha256:{agent['token_hash']}" if agent.get("token_hash") else None,
            "retired_at": agent.get("retired_at"),
        }
    )
    # the archive's profile.json: the row's public fields, as whois shows them
    profile = {key: work.batch.agents[-1][key] for key in PROFILE_FIELDS}
    if agent.get("retired_at"):
        profile["retired_at"] = agent["retired_at"]
    work.profiles.append((state.slug, profile))


# Head fields of a message whose sender belongs to another project (archived in front matter).
FOREIGN_FIELDS = ("from_project", "from_project_slug", "from_address")


def _load_message(state: ProjectState, member: str, record: MessageRecord, work: Work) -> None:
    if not record.found:
        log.warning("%s of project %s is gone from Redis; skipped", member, state.slug)
        return
    head = record.head
    recipients = record.recipients
    body = record.body
    message_id = int(head["id"])
    work.batch.messages.append(
        {
            "id": message_id,
            "project_id": int(head["project_id"]),
            "sender_id": int(head["sender_id"]),
            "thread_id": head["thread_id"],
            "topic": head["topic"],
            "subject": head["subject"],
            "body_md": body or "",
            "importance": head["importance"],
            "ack_required": 1 if head["ack_required"] else 0,
            "created_ts": head["created_ts"],
            "attachments": json.dumps(head.get("attachments") or []),
        }
    )
    created_us = record.created_us
    work.created_us[message_id] = micros(head["created_ts"]) if created_us is None else created_us
    work.batch.activity.append((int(head["sender_id"]), head["created_ts"]))
    for kind in ("to", "cc", "bcc"):
        for name in recipients[kind]:
            agent_id = state.agent_id(name)
            if agent_id is None:
                continue
            work.batch.recipients.append(
                {
                    "message_id": message_id,
                    "agent_id": agent_id,
                    "kind": kind,
                    "read_ts": record.read_ts(name),
                    "ack_ts": record.ack_ts(name),
                }
            )
    message = ArchiveMessage(
        id=message_id,
        subject=head["subject"],
        body_md=body or "",
        sender=head["from"],
        created=head["created_ts"],
        to=recipients["to"],
        cc=recipients["cc"],
        bcc=recipients["bcc"],
        thread_id=head["thread_id"],
        importance=head["importance"],
        ack_required=bool(head["ack_required"]),
        attachments=head.get("attachments") or [],
        extra={key: head[key] for key in FOREIGN_FIELDS if key in head},
    )
    work.messages.append((state.slug, state.project["human_key"], message))


def _load_link(state: ProjectState, member: str, record: dict[str, Any] | None, work: Work) -> None:
    """A contact link's current state, upserted by its endpoints (both projects persist their
    copy; the newer update wins)."""
    if record is None:
        log.warning("%s of project %s is gone from Redis; skipped", member, state.slug)
        return
    link = record
    for side in ("a", "b"):  # an endpoint of this project must still be this very agent
        if link[f"{side}_slug"] == state.slug and state.agent_id(link[side]) != int(link[f"{side}_id"]):
            log.warning("%s of project %s names a deleted agent %s; skipped", member, state.slug, link[side])
            return
    work.batch.links.append(
        {
            "a_project_id": int(link["a_pid"]),
            "a_agent_id": int(link["a_id"]),
            "b_project_id": int(link["b_pid"]),
            "b_agent_id": int(link["b_id"]),
            "status": link["status"],
            "reason": link.get("reason") or "",
            "created_ts": link["created_ts"],
            "updated_ts": link["updated_ts"],
            "expires_ts": link.get("expires_ts"),
        }
    )


def _load_receipt(state: ProjectState, member: str, record: ReceiptRecord, work: Work) -> None:
    _, message_id, name = member.split(":", 2)
    agent_id = state.agent_id(name)
    if record.kind is None or agent_id is None:
        log.warning("%s of project %s is gone from Redis; skipped", member, state.slug)
        return
    if record.created_us is not None:
        work.created_us[int(message_id)] = record.created_us
    work.batch.recipients.append(
        {
            "message_id": int(message_id),
            "agent_id": agent_id,
            "kind": record.kind,
            "read_ts": record.read_ts,
            "ack_ts": record.ack_ts,
        }
    )


def _load_reservation(state: ProjectState, member: str, record: dict[str, str], work: Work) -> None:
    """The reservation's current state (grant, renewal, release or expiry), upserted by id."""
    if not record.get("id"):
        log.warning("%s of project %s is gone from Redis (past its retention); skipped", member, state.slug)
        return
    shown = record_dict(record)
    agent_id = state.agent_id(shown["agent"])
    if agent_id is None:
        log.warning("%s of project %s names an unknown agent; skipped", member, state.slug)
        return
    work.batch.reservations.append(
        {
            "id": shown["id"],
            "project_id": int(state.project["id"]),
            "agent_id": agent_id,
            "path_pattern": shown["path_pattern"],
            "exclusive": 1 if shown["exclusive"] else 0,
            "reason": shown["reason"],
            "created_ts": shown["created_ts"],
            "expires_ts": shown["expires_ts"],
            "released_ts": shown["released_ts"],
        }
    )
    archived = {"id": shown["id"], "project": state.project["human_key"], **shown}
    if archived["released_ts"] is None:
        del archived["released_ts"]
    work.reservations.append((state.slug, archived))


@dataclass(frozen=True)
class EntryKind:
    """How one kind of pending entry is persisted: ``load`` turns the entry's record (what
    broker/store/commands/drain_reads.py read for it; None for a kind that reads nothing) into rows and
    archive files."""

    load: Callable[[ProjectState, str, Any, Work], None]  # the record: an EntryRecord of its kind


# Pending-entry kind -> how to persist it.
HANDLERS: dict[str, EntryKind] = {
    "project": EntryKind(_load_project),
    "agent": EntryKind(_load_agent),
    "msg": EntryKind(_load_message),
    "rcpt": EntryKind(_load_receipt),
    "res": EntryKind(_load_reservation),
    "link": EntryKind(_load_link),
}
