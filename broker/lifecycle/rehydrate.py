"""``broker rehydrate``: rebuild Redis from the SQLite index after Redis lost its data.

For each project in the index it writes back what the send and mark scripts would have
written: the project and agent records (with token digests, so tokens keep working), every
message with its body, each recipient's inbox stream entry, unread set, urgent and topic
indexes, read/ack times, the senders' outboxes and topic indexes, the thread indexes, and the
live file reservations.
Inbox stream ids are rebuilt from each message's creation time, so ``since_ts`` paging and
newest-first order behave as before. Id counters are raised past the largest id in the index
so new ids never collide. Nothing is added to the pending set: it is all persisted already.

A project that still exists in Redis is left alone unless ``force`` is given (then its keys
are deleted and rebuilt, but for the few only Redis holds: ``KEPT_BY_FORCE``). Even with
``force``, a project with pending, in-flight or dead-lettered entries is left alone: they are
not in the index yet, and rebuilding would delete them; so is one with mail held for a
contact approval (in Redis only).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from broker.config import Settings
from broker.persistence.index import Index
from broker.reservations import globs
from broker.store import luajson
from broker.store.clients import make_client
from broker.store.ids import KINDS, largest_indexed_ids
from broker.store.keys import Keys
from broker.store.luajson import INLINE_BODY_BYTES
from broker.store.scripts import script_source

PIPELINE_CHUNK = 500
# Per-project key suffixes (broker/store/keys.py) that only Redis holds and `rehydrate --force` keeps.
KEPT_BY_FORCE = ("idem:", "hookcursor:", "windows", "rate:")


@dataclass
class Report:
    projects: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unpersisted: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    agents: int = 0
    messages: int = 0
    deliveries: int = 0
    reservations: int = 0
    links: int = 0

    def lines(self) -> list[str]:
        out = [
            f"rehydrated {len(self.projects)} project(s): {self.agents} agents, {self.messages} messages, "
            f"{self.deliveries} inbox entries, {self.reservations} live file reservations, "
            f"{self.links} contact links"
        ]
        if self.skipped:
            out.append(f"left alone (still in Redis; use --force to rebuild): {', '.join(self.skipped)}")
        if self.unpersisted:
            out.append(
                f"left alone (changes not persisted yet; run `broker worker --burst`, and for dead letters "
                "`broker dead-letters retry`, then again): "
                f"{', '.join(self.unpersisted)}"
            )
        if self.held:
            out.append(
                "left alone (mail held for a contact approval, which the index cannot restore; "
                f"rebuild once it is approved, refused or expired): {', '.join(self.held)}"
            )
        return out


def _micros(iso: str) -> int:
    moment = datetime.fromisoformat(iso)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


class _StreamIds:
    """Explicit, strictly increasing stream ids ``<ms>-<seq>`` per stream."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}

    def next(self, stream: str, ms: int) -> str:
        last_ms, last_seq = self._last.get(stream, (-1, -1))
        ms, seq = (last_ms, last_seq + 1) if ms <= last_ms else (ms, 0)
        self._last[stream] = (ms, seq)
        return f"{ms}-{seq}"


async def rehydrate_all(settings: Settings, redis_url: str, force: bool = False) -> Report:
    client = make_client(redis_url)
    index = Index(settings.index_path)
    index.ensure_schema()
    report = Report()
    try:
        for project in index.query("SELECT * FROM projects ORDER BY id"):
            await rehydrate_project(
                client, Keys(settings.redis_key_prefix), index, dict(project), report, force,
                settings.file_reservation_retention_seconds,
            )  # fmt: skip
        await _raise_counters(client, Keys(settings.redis_key_prefix), index)
    finally:
        await client.aclose()
        index.close()
    return report


async def rehydrate_project(
    client: Redis,
    keys: Keys,
    index: Index,
    project: dict[str, Any],
    report: Report,
    force: bool,
    retention: int,
) -> None:
    slug = project["slug"]
    prefix = keys.project_prefix(slug)
    exists = await client.exists(keys.project(slug))
    if exists and not force:
        report.skipped.append(slug)
        return
    if exists:
        # Rebuilding deletes the pending and in-flight sets: changes not in the index yet would
        # be lost from Redis and never persisted.
        unwritten = (keys.pending(slug), keys.inflight(slug), keys.dead_letters(slug))
        if any([await client.zcard(key) for key in unwritten]):
            report.unpersisted.append(slug)
            return
    # Keys the index cannot rebuild stay: a retry's idempotency record (deleting it delivered
    # the retried send twice), hook cursors, window identities, rate buckets. Without the
    # project hash, what is left is a rebuild cut short (every write script needs the hash):
    # cleared, but the pending sets, which a drain writes once the project is back.
    kept = KEPT_BY_FORCE if exists else (*KEPT_BY_FORCE, "pending", "deadletter")
    stale = [
        key
        async for key in client.scan_iter(match=prefix + "*", count=1000)
        if not key.removeprefix(prefix).startswith(kept)
    ]
    # Mail held for a contact approval has no recipient rows in the index: rebuilding would
    # drop it while its sender was told it is queued.
    held = [key for key in stale if key.removeprefix(prefix).startswith("held:")]
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    if exists and held and any([await client.zcount(key, now_us, "+inf") for key in held]):
        report.held.append(slug)
        return
    for start in range(0, len(stale), PIPELINE_CHUNK):
        await client.delete(*stale[start : start + PIPELINE_CHUNK])
    # The project hash (deleted above) is written last: until then every call into the
    # project is refused (NO_PROJECT, ensure_project's REHYDRATE_REQUIRED), so a send during the
    # rebuild cannot append a live stream entry ahead of the older ones restored after it
    # (which failed the rebuild half-way, leaving inboxes without their older mail).
    pid = project["id"]
    agents = {row["id"]: dict(row) for row in index.query("SELECT * FROM agents WHERE project_id = ?", (pid,))}

    pipe = client.pipeline(transaction=False)
    for agent in agents.values():
        token = agent["registration_token"] or ""
        record = {
            "id": agent["id"],
            "name": agent["name"],
            "program": agent["program"],
            "model": agent["model"],
            "task_description": agent["task_description"],
            "inception_ts": agent["inception_ts"],
            "project_id": pid,
            "attachments_policy": agent["attachments_policy"],
            "contact_policy": agent["contact_policy"],
            "token_hash": token.removeprefix("sha256:"),
        }
        if agent["retired_at"]:
            record["retired_at"] = agent["retired_at"]
        pipe.hset(keys.agents(slug), agent["name"].lower(), json.dumps(record))
        pipe.hset(keys.active(slug), agent["name"], agent["last_active_ts"])
    await pipe.execute()
    report.agents += len(agents)

    recipients: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in index.query(
        "SELECT r.* FROM message_recipients r JOIN messages m ON m.id = r.message_id "
        "WHERE m.project_id = ? ORDER BY r.rowid",
        (pid,),
    ):
        recipients[row["message_id"]].append(dict(row))
    streams = _StreamIds()
    foreign = {
        row["id"]: dict(row)
        for row in index.query(
            "SELECT a.id, a.name, p.slug, p.human_key FROM agents a JOIN projects p ON p.id = a.project_id "
            "WHERE a.project_id != ?",
            (pid,),
        )
    }
    messages = index.query("SELECT * FROM messages WHERE project_id = ? ORDER BY created_ts, id", (pid,))
    for start in range(0, len(messages), PIPELINE_CHUNK):
        pipe = client.pipeline(transaction=False)
        for message in messages[start : start + PIPELINE_CHUNK]:
            report.deliveries += _restore_message(
                pipe, keys, slug, dict(message), agents, recipients.get(message["id"], []), streams, foreign
            )
        await pipe.execute()
    report.messages += len(messages)
    report.reservations += await _restore_reservations(client, keys, index, slug, pid, agents, retention)
    await _restore_mail_activity(client, keys, index, slug, pid, agents)
    report.links += await _restore_links(client, keys, index, pid)
    pipe = client.pipeline(transaction=True)
    if project["archived_at"]:
        pipe.hset(keys.project(slug), "archived_at", project["archived_at"])
    pipe.hset(keys.slug_owners, slug, project["human_key"])  # the index's slug, never recomputed
    pipe.hset(keys.projects, slug, project["human_key"])
    pipe.hset(
        keys.project(slug),
        mapping={"id": pid, "slug": slug, "human_key": project["human_key"], "created_at": project["created_at"]},
    )
    await pipe.execute()
    report.projects.append(slug)


def _restore_message(
    pipe: Any,
    keys: Keys,
    slug: str,
    message: dict[str, Any],
    agents: dict[int, dict[str, Any]],
    rows: list[dict[str, Any]],
    streams: _StreamIds,
    foreign: dict[int, dict[str, Any]],
) -> int:
    """Queue the writes of one message; returns how many inbox entries it made. A sender of
    another project gets the from_project fields and no outbox entry here."""
    other = foreign.get(message["sender_id"]) if message["sender_id"] not in agents else None
    sender = (other or agents.get(message["sender_id"], {})).get("name") or f"agent-{message['sender_id']}"
    sender_lower = sender.lower()
    ident = f"project:{other['slug']}#{sender_lower}" if other else sender_lower
    message_id = message["id"]
    # the very bytes the send script writes (scripts match inside them: fetch_view.lua)
    head_json = luajson.message_head(message, sender, other, json.loads(message["attachments"] or "[]"))
    us = _micros(message["created_ts"])
    ms = us // 1000
    lists: dict[str, list[str]] = {"to": [], "cc": [], "bcc": []}
    fields: dict[str, Any] = {}
    for row in rows:
        name = agents.get(row["agent_id"], {}).get("name")
        if name:
            lists[row["kind"]].append(name)
            fields[f"rk:{name.lower()}"] = row["kind"]
            if row["read_ts"]:
                fields[f"rt:{name.lower()}"] = row["read_ts"]
            if row["ack_ts"]:
                fields[f"at:{name.lower()}"] = row["ack_ts"]
    pipe.hset(
        keys.message(slug, message_id),
        mapping={
            "head": head_json,
            "sender": ident,
            "recipients": luajson.recipients(lists),
            "created_us": str(us),
            **fields,
        },
    )
    body = message["body_md"] or ""
    pipe.hset(keys.bodies(slug), str(message_id), body)
    urgent = message["importance"] in ("high", "urgent")
    topic = message["topic"] or ""
    filter_text = f"{us}|{1 if urgent else 0}|{topic.lower()}"
    inline = len(body.encode()) <= INLINE_BODY_BYTES
    delivered = 0
    for row in rows:
        name = agents.get(row["agent_id"], {}).get("name")
        if not name:
            continue
        inbox = keys.inbox(slug, name)
        entry = {"m": str(message_id), "f": filter_text, "j": luajson.inbox_item(head_json, row["kind"])}
        if inline:
            entry["b"] = body
        pipe.xadd(inbox, entry, id=streams.next(inbox, ms))
        if not row["read_ts"]:
            pipe.sadd(keys.unread(slug, name), str(message_id))
        if urgent:
            pipe.zadd(keys.urgent(slug, name), {str(message_id): us})
        if topic:
            pipe.zadd(keys.received_topic(slug, name, topic), {str(message_id): us})
        delivered += 1
    if not other:
        outbox = keys.outbox(slug, sender)
        pipe.xadd(outbox, {"m": str(message_id), "c": str(us)}, id=streams.next(outbox, ms))
        if topic:
            pipe.zadd(keys.sent_topic(slug, sender, topic), {str(message_id): us})
    if message["thread_id"]:
        pipe.zadd(keys.thread(slug, message["thread_id"]), {str(message_id): us})
        members = [ident] + [n.lower() for kind in lists.values() for n in kind]
        pipe.sadd(keys.thread_participants(slug, message["thread_id"]), *members)
    return delivered


async def _restore_links(client: Redis, keys: Keys, index: Index, pid: int) -> int:
    """The contact links with an endpoint in this project, each endpoint's copy that lives here
    (layout in broker/scripts/lib/contacts.lua). Messages held for approval are not restored."""
    rows = index.query(
        "SELECT l.*, a.name AS a_name, b.name AS b_name, pa.slug AS a_slug, pa.human_key AS a_hk, "
        "pb.slug AS b_slug, pb.human_key AS b_hk FROM agent_links l "
        "JOIN agents a ON a.id = l.a_agent_id JOIN agents b ON b.id = l.b_agent_id "
        "JOIN projects pa ON pa.id = l.a_project_id JOIN projects pb ON pb.id = l.b_project_id "
        "WHERE l.a_project_id = ? OR l.b_project_id = ?",
        (pid, pid),
    )
    pipe = client.pipeline(transaction=False)
    for row in rows:
        link: dict[str, Any] = {
            "a": row["a_name"], "a_id": row["a_agent_id"], "a_pid": row["a_project_id"], "a_slug": row["a_slug"],
            "a_hk": row["a_hk"], "b": row["b_name"], "b_id": row["b_agent_id"], "b_pid": row["b_project_id"],
            "b_slug": row["b_slug"], "b_hk": row["b_hk"], "status": row["status"], "reason": row["reason"] or "",
            "created_ts": row["created_ts"], "updated_ts": row["updated_ts"], "upd_us": str(_micros(row["updated_ts"])),
            "exp_us": str(_micros(row["expires_ts"])) if row["expires_ts"] else "",
        }  # fmt: skip
        if row["expires_ts"]:
            link["expires_ts"] = row["expires_ts"]
        raw = json.dumps(link)
        if row["a_project_id"] == pid:
            field_name = f"out:{row['b_slug']}#{row['b_name'].lower()}"
            pipe.hset(keys.links(row["a_slug"], row["a_name"]), field_name, raw)
        if row["b_project_id"] == pid:
            field_name = f"in:{row['a_slug']}#{row['a_name'].lower()}"
            pipe.hset(keys.links(row["b_slug"], row["b_name"]), field_name, raw)
    await pipe.execute()
    return len(rows)


async def _restore_reservations(
    client: Redis,
    keys: Keys,
    index: Index,
    slug: str,
    pid: int,
    agents: dict[int, dict[str, Any]],
    retention: int,
) -> int:
    """Put back the project's reservations: live ones (unreleased, unexpired) with their index
    entries, ended ones whose record is still within its retention (released, or expired,
    ``retention`` seconds after the end) as the record that release and pruning leave, so
    listings of ended reservations read as before. Returns how many live ones."""
    restore = client.register_script(script_source("restore_reservation"))
    now = datetime.now(UTC)
    rows = index.query("SELECT * FROM file_reservations WHERE project_id = ? ORDER BY id", (pid,))
    restored = 0
    for row in rows:
        agent = agents.get(row["agent_id"], {}).get("name")
        if agent is None:
            continue
        ended = row["released_ts"] or (row["expires_ts"] if row["expires_ts"] <= now.isoformat() else None)
        forget_us = ""
        if ended:
            if (datetime.fromisoformat(ended) - now).total_seconds() + retention <= 0:
                continue  # gone from Redis after its retention, as it would have been
            forget_us = str(_micros(ended) + retention * 1_000_000)
        pattern = row["path_pattern"]
        released = str(_micros(row["released_ts"])) if row["released_ts"] else ""
        added = await restore(
            keys=[],
            args=[
                keys.project_prefix(slug), row["id"], agent, pattern, "1" if row["exclusive"] else "0",
                row["reason"] or "", _micros(row["created_ts"]), _micros(row["expires_ts"]), globs.index_bucket(pattern),
                forget_us, released,
            ],
        )  # fmt: skip
        restored += added if not ended else 0
    return restored


async def _restore_mail_activity(
    client: Redis, keys: Keys, index: Index, slug: str, pid: int, agents: dict[int, dict[str, Any]]
) -> None:
    """Each agent's last read or ack, which keeps its reservations from looking stale."""
    rows = index.query(
        "SELECT r.agent_id, max(max(coalesce(r.read_ts, ''), coalesce(r.ack_ts, ''))) AS last "
        "FROM message_recipients r JOIN messages m ON m.id = r.message_id "
        "WHERE m.project_id = ? GROUP BY r.agent_id",
        (pid,),
    )
    latest = {
        agents[row["agent_id"]]["name"].lower(): _micros(row["last"]) // 1000
        for row in rows
        if row["last"] and row["agent_id"] in agents
    }
    if latest:
        await client.hset(keys.mail_activity(slug), mapping=latest)


async def _raise_counters(client: Redis, keys: Keys, index: Index) -> None:
    """Id counters past the largest id in the index, so new ids never reuse one (the async
    twin of broker.store.ids.raise_past_index, which says why by a margin)."""
    raise_counter = client.register_script(script_source("raise_counter"))
    for kind, top in largest_indexed_ids(index).items():
        current = int(await client.get(keys.ids(kind)) or 0)
        if current < top:
            await raise_counter(keys=[keys.ids(kind)], args=[top + KINDS[kind][1]])
