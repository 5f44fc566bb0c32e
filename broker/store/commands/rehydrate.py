"""The typed commands of ``broker rehydrate`` (broker/lifecycle/rehydrate.py): rebuild a
project's Redis keys from SQLite index rows, writing what the send, mark, contact and reserve
scripts would have written (byte for byte: broker/store/luajson.py), and clear what a rebuild
replaces.

``Rebuild`` holds one client of its own (rehydrate runs outside a server, on its own loop).
Index rows arrive as mappings (sqlite3.Row or dict) with the index's column names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.store import keys as layout
from broker.store import luajson
from broker.store.clients import make_client
from broker.store.ids import KINDS
from broker.store.keys import Keys, receipt_fields
from broker.store.luajson import INLINE_BODY_BYTES
from broker.store.scripts import Scripts
from broker.store.times import micros

PIPELINE_CHUNK = 500
SCAN_COUNT = 1000

Row = Mapping[str, Any]


class _StreamIds:
    """Explicit, strictly increasing stream ids ``<ms>-<seq>`` per stream."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}

    def next(self, stream: str, ms: int) -> str:
        last_ms, last_seq = self._last.get(stream, (-1, -1))
        ms, seq = (last_ms, last_seq + 1) if ms <= last_ms else (ms, 0)
        self._last[stream] = (ms, seq)
        return f"{ms}-{seq}"


@dataclass(frozen=True)
class MessageRecord:
    """A message as the send and mark scripts keep it in Redis, built from its index rows."""

    message_id: int
    created_us: int
    head: str  # the head JSON, the very bytes the send script writes
    fields: dict[str, str]  # the msg:<id> hash
    body: str
    sender: str  # the sender's name as registered
    ident: str  # the hash's ``sender``: the lower name, or project:<slug>#<name> for another project's
    foreign: bool  # the sender belongs to another project
    lists: dict[str, list[str]]  # {to, cc, bcc} names
    receivers: list[tuple[str, Row]]  # (name, recipient row) of each recipient still known


def message_record(
    message: Mapping[str, Any], agents: Mapping[int, Row], rows: list[Row], foreign: Mapping[int, Row]
) -> MessageRecord:
    """One message's Redis record from its index row, its recipient rows (``agents``: the
    project's agents by id; ``foreign``: agents of other projects by id, with slug and
    human_key). Used by rehydrate and by restore_message.lua's caller (broker/mail/cold.py)."""
    message = dict(message)
    found = foreign.get(message["sender_id"]) if message["sender_id"] not in agents else None
    other = dict(found) if found is not None else None
    sender = (other or agents.get(message["sender_id"], {})).get("name") or f"agent-{message['sender_id']}"
    ident = layout.foreign_participant(other["slug"], sender) if other else sender.lower()
    head_json = luajson.message_head(message, sender, other, json.loads(message["attachments"] or "[]"))
    us = micros(message["created_ts"])
    lists: dict[str, list[str]] = {"to": [], "cc": [], "bcc": []}
    fields: dict[str, str] = {}
    receivers: list[tuple[str, Row]] = []
    for row in rows:
        name = agents.get(row["agent_id"], {}).get("name")
        if name:
            receivers.append((name, row))
            lists[row["kind"]].append(name)
            kind_field, read_field, ack_field = receipt_fields(name)
            fields[kind_field] = row["kind"]
            if row["read_ts"]:
                fields[read_field] = row["read_ts"]
            if row["ack_ts"]:
                fields[ack_field] = row["ack_ts"]
    fields = {
        "head": head_json,
        "sender": ident,
        "recipients": luajson.recipients(lists),
        "created_us": str(us),
        **fields,
    }
    return MessageRecord(
        message["id"], us, head_json, fields, message["body_md"] or "", sender, ident, other is not None, lists,
        receivers,
    )  # fmt: skip


class ColdMarks:
    """What rehydrate leaves in the index, as the trimmer would have marked it in the project's
    ``cold`` hash (docs/data-model.md, "The hot window"): per inbox and outbox the newest
    entry id left out, per agent how many left-out messages it had not read, and ``t``."""

    def __init__(self, hot_ids: set[int]) -> None:
        self._hot = hot_ids
        self.fields: dict[str, str | int] = {}
        self._unread: dict[str, int] = {}
        self._t = 0

    def keep(self, message_id: int) -> bool:
        return message_id in self._hot

    def trimmed(self, stream: str, name: str, entry_id: str, *, unread: bool) -> None:
        self.fields[f"{stream}:{name.lower()}"] = entry_id  # ids come oldest first
        if unread:
            self._unread[name.lower()] = self._unread.get(name.lower(), 0) + 1

    def newest(self, created_us: int) -> None:
        self._t = max(self._t, created_us)

    def mapping(self) -> dict[str, str | int]:
        out = dict(self.fields)
        out.update({f"unread:{name}": count for name, count in self._unread.items()})
        if self._t:
            out["t"] = str(self._t)
        return out


class Rebuild:
    """A connection to the Redis being rebuilt; ``await rebuild.close()`` when done."""

    def __init__(self, redis_url: str, keys: Keys) -> None:
        self.keys = keys
        self._client = make_client(redis_url)
        self._scripts = Scripts(self._client)

    async def close(self) -> None:
        await self._client.aclose()

    # -- what is there -------------------------------------------------------------------
    async def project_exists(self, *, slug: str) -> bool:
        return bool(await self._client.exists(self.keys.project(slug)))

    async def project_record(self, *, slug: str) -> dict[str, str]:
        """The project hash (id, slug, human_key, created_at), empty when it is not there."""
        return await self._client.hgetall(self.keys.project(slug))

    async def has_unpersisted(self, *, slug: str) -> bool:
        """Pending, in-flight or dead-lettered entries: changes not in the index yet."""
        keys = self.keys
        unwritten = (keys.pending(slug), keys.inflight(slug), keys.dead_letters(slug))
        return any([await self._client.zcard(key) for key in unwritten])

    async def clear(self, *, slug: str, keep_pending: bool, unless_live_held_after_us: int | None) -> bool:
        """Delete the project's keys a rebuild writes again. Kept: what only Redis holds
        (broker.store.keys.KEPT_BY_REBUILD) and, when ``keep_pending``, the pending sets. With
        ``unless_live_held_after_us``, nothing is deleted (False) if mail is held for a contact
        approval with a deadline after that microsecond (the index cannot restore it)."""
        keys = self.keys
        prefix = keys.project_prefix(slug)
        kept = layout.KEPT_BY_UNFINISHED_REBUILD if keep_pending else layout.KEPT_BY_REBUILD
        stale = [
            key
            async for key in self._client.scan_iter(match=keys.project_pattern(slug), count=SCAN_COUNT)
            if not key.removeprefix(prefix).startswith(kept)
        ]
        if unless_live_held_after_us is not None:
            held = [key for key in stale if key.removeprefix(prefix).startswith(layout.HELD_SUFFIX)]
            if held and any([await self._client.zcount(key, unless_live_held_after_us, "+inf") for key in held]):
                return False
        for start in range(0, len(stale), PIPELINE_CHUNK):
            await self._client.delete(*stale[start : start + PIPELINE_CHUNK])
        return True

    # -- writes --------------------------------------------------------------------------
    async def write_agents(self, *, slug: str, project_id: int, agents: list[Row]) -> None:
        """The agents' records (with token digests, so tokens keep working) and activity."""
        keys = self.keys
        pipe = self._client.pipeline(transaction=False)
        for agent in agents:
            token = agent["registration_token"] or ""
            record = {
                "id": agent["id"],
                "name": agent["name"],
                "program": agent["program"],
                "model": agent["model"],
                "task_description": agent["task_description"],
                "inception_ts": agent["inception_ts"],
                "project_id": project_id,
                "attachments_policy": agent["attachments_policy"],
                "contact_policy": agent["contact_policy"],
                "token_hash": token.removeprefix("sha256:"),
            }
            if agent["retired_at"]:
                record["retired_at"] = agent["retired_at"]
            pipe.hset(keys.agents(slug), agent["name"].lower(), json.dumps(record))
            pipe.hset(keys.active(slug), agent["name"], agent["last_active_ts"])
        await pipe.execute()

    async def write_messages(
        self,
        *,
        slug: str,
        messages: list[Row],
        agents: Mapping[int, Row],
        recipients: Mapping[int, list[Row]],
        foreign: Mapping[int, Row],
        marks: ColdMarks | None = None,
    ) -> int:
        """The project's messages (index rows, oldest first) with their recipient rows: hash,
        body, inbox entries, unread, urgent and topic indexes, outboxes, thread indexes. Senders
        not in ``agents`` are looked up in ``foreign`` (agents of other projects, with slug and
        human_key). With ``marks``, only the messages it keeps are written; the others (whose
        rows need no body) set the project's cold hash as the trimmer would have. Returns how
        many inbox entries were written."""
        streams = _StreamIds()
        delivered = 0
        for start in range(0, len(messages), PIPELINE_CHUNK):
            pipe = self._client.pipeline(transaction=False)
            for message in messages[start : start + PIPELINE_CHUNK]:
                delivered += self._message(
                    pipe, slug, dict(message), agents, recipients.get(message["id"], []), streams, foreign, marks
                )
            await pipe.execute()
        if marks is not None and marks.mapping():
            await self._client.hset(self.keys.cold(slug), mapping=marks.mapping())
        return delivered

    def _message(
        self,
        pipe: Any,
        slug: str,
        message: dict[str, Any],
        agents: Mapping[int, Row],
        rows: list[Row],
        streams: _StreamIds,
        foreign: Mapping[int, Row],
        marks: ColdMarks | None = None,
    ) -> int:
        """Queue the writes of one message; returns how many inbox entries it made. A sender of
        another project gets the from_project fields and no outbox entry here. With ``marks``,
        a message left in the index (``marks.keep`` is False for it) only moves the cold marks
        its stream entries would have had, and its thread participants."""
        keys = self.keys
        record = message_record(message, agents, rows, foreign)
        message_id, us, ms = record.message_id, record.created_us, record.created_us // 1000
        hot = marks is None or marks.keep(message_id)
        if hot:
            pipe.hset(keys.message(slug, message_id), mapping=record.fields)
            pipe.hset(keys.bodies(slug), str(message_id), record.body)
        urgent = message["importance"] in ("high", "urgent")
        topic = message["topic"] or ""
        filter_text = f"{us}|{1 if urgent else 0}|{topic.lower()}"
        inline = len(record.body.encode()) <= INLINE_BODY_BYTES
        delivered = 0
        for name, row in record.receivers:
            inbox = keys.inbox(slug, name)
            entry_id = streams.next(inbox, ms)
            if not hot:
                assert marks is not None
                marks.trimmed("in", name, entry_id, unread=not row["read_ts"])
                continue
            entry = {"m": str(message_id), "f": filter_text, "j": luajson.inbox_item(record.head, row["kind"])}
            if inline:
                entry["b"] = record.body
            pipe.xadd(inbox, entry, id=entry_id)
            if not row["read_ts"]:
                pipe.sadd(keys.unread(slug, name), str(message_id))
            if urgent:
                pipe.zadd(keys.urgent(slug, name), {str(message_id): us})
            if topic:
                pipe.zadd(keys.received_topic(slug, name, topic), {str(message_id): us})
            delivered += 1
        if not record.foreign:
            outbox = keys.outbox(slug, record.sender)
            entry_id = streams.next(outbox, ms)
            if hot:
                pipe.xadd(outbox, {"m": str(message_id), "c": str(us)}, id=entry_id)
                if topic:
                    pipe.zadd(keys.sent_topic(slug, record.sender, topic), {str(message_id): us})
            else:
                assert marks is not None
                marks.trimmed("out", record.sender, entry_id, unread=False)
        if not hot:
            assert marks is not None
            marks.newest(us)
        if message["thread_id"]:
            if hot:
                pipe.zadd(keys.thread(slug, message["thread_id"]), {str(message_id): us})
            members = [record.ident] + [n.lower() for kind in record.lists.values() for n in kind]
            pipe.sadd(keys.thread_participants(slug, message["thread_id"]), *members)
        return delivered

    async def write_links(self, *, project_id: int, links: list[Row]) -> None:
        """The contact links with an endpoint in project ``project_id``: each endpoint's copy that
        lives there (layout in broker/scripts/lib/contacts.lua). Rows are agent_links rows with
        a_name, b_name, a_slug, b_slug, a_hk, b_hk of their endpoints."""
        keys = self.keys
        pipe = self._client.pipeline(transaction=False)
        for row in links:
            link: dict[str, Any] = {
                "a": row["a_name"], "a_id": row["a_agent_id"], "a_pid": row["a_project_id"], "a_slug": row["a_slug"],
                "a_hk": row["a_hk"], "b": row["b_name"], "b_id": row["b_agent_id"], "b_pid": row["b_project_id"],
                "b_slug": row["b_slug"], "b_hk": row["b_hk"], "status": row["status"], "reason": row["reason"] or "",
                "created_ts": row["created_ts"], "updated_ts": row["updated_ts"],
                "upd_us": str(micros(row["updated_ts"])),
                "exp_us": str(micros(row["expires_ts"])) if row["expires_ts"] else "",
            }  # fmt: skip
            if row["expires_ts"]:
                link["expires_ts"] = row["expires_ts"]
            raw = json.dumps(link)
            if row["a_project_id"] == project_id:
                field_name = layout.link_field("out", row["b_slug"], row["b_name"])
                pipe.hset(keys.links(row["a_slug"], row["a_name"]), field_name, raw)
            if row["b_project_id"] == project_id:
                field_name = layout.link_field("in", row["a_slug"], row["a_name"])
                pipe.hset(keys.links(row["b_slug"], row["b_name"]), field_name, raw)
        await pipe.execute()

    async def restore_reservation(
        self,
        *,
        slug: str,
        reservation_id: int,
        agent: str,
        pattern: str,
        exclusive: bool,
        reason: str,
        created_us: int,
        expires_us: int,
        bucket: str,
        forget_after_us: int | None,
        released_us: int | None,
    ) -> bool:
        """Put back one reservation as reserve.lua stored it (restore_reservation.lua): a live one
        (``forget_after_us`` None) with its index entries, an ended one as the record release
        and pruning leave until ``forget_after_us``. False when it was already there."""
        added = await self._scripts.run(
            "restore_reservation",
            [self.keys.reservation(slug, reservation_id)],
            [
                self.keys.project_prefix(slug), reservation_id, agent, pattern, "1" if exclusive else "0",
                reason, created_us, expires_us, bucket,
                "" if forget_after_us is None else str(forget_after_us),
                "" if released_us is None else str(released_us),
            ],
        )  # fmt: skip
        return bool(added)

    async def write_mail_activity(self, *, slug: str, last_ms: Mapping[str, int]) -> None:
        """Each agent's (lower name) last read or ack in ms, which keeps its reservations from
        looking stale."""
        if last_ms:
            await self._client.hset(self.keys.mail_activity(slug), mapping=dict(last_ms))

    async def write_project(self, *, slug: str, project: Row) -> None:
        """Its slug's owner and its directory entry, then the project hash (written last: until
        then every call into the project is refused). Two steps, since the global hashes live in
        other cluster slots than the project; a rebuild cut short between them is re-run whole."""
        keys = self.keys
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(keys.slug_owners, slug, project["human_key"])  # the index's slug, never recomputed
        pipe.hset(keys.projects, slug, project["human_key"])
        await pipe.execute()
        pipe = self._client.pipeline(transaction=True)
        if project["archived_at"]:
            pipe.hset(keys.project(slug), "archived_at", project["archived_at"])
        pipe.hset(
            keys.project(slug),
            mapping={
                "id": project["id"],
                "slug": slug,
                "human_key": project["human_key"],
                "created_at": project["created_at"],
            },
        )
        await pipe.execute()

    async def raise_counters(self, *, largest: Mapping[str, int]) -> None:
        """Id counters past the largest id of their kind (``largest``, from the index), so new
        ids never reuse one (the async twin of broker.store.ids.raise_past_index, which says
        why by a margin)."""
        for kind, top in largest.items():
            current = int(await self._client.get(self.keys.ids(kind)) or 0)
            if current < top:
                await self._scripts.run("raise_counter", [self.keys.ids(kind)], [top + KINDS[kind][1]])
