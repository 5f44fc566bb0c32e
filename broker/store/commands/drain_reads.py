"""What a drain batch reads from Redis, in one round trip: its project's records and the current
state of each claimed pending entry, decoded into the records below (synchronous, like the
persistence worker).

Pending members name what changed (the write scripts add them): ``msg:<id>``,
``rcpt:<id>:<lower name>``, ``res:<id>``, ``link:<lower name>|<links field>``; ``project:<id>``
and ``agent:<id>`` read nothing beyond the project's records. Members of other kinds read
nothing (broker/persistence/entries.py leaves them in flight).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.client import Pipeline

from broker.store.commands.agent_record import StoredAgent, decode_agent
from broker.store.ids import KINDS
from broker.store.keys import Keys, receipt_fields
from broker.store.scripts import SyncClient


@dataclass(frozen=True)
class MessageRecord:
    """A message's ``msg:<id>`` HASH (empty when the message is gone from Redis) and its body."""

    fields: Mapping[str, str]
    body: str | None

    @property
    def found(self) -> bool:
        return bool(self.fields)

    @property
    def head(self) -> dict[str, Any]:
        """The inbox-item head: id, project_id, sender_id, from, subject, created_ts, ..."""
        return json.loads(self.fields["head"])

    @property
    def recipients(self) -> dict[str, list[str]]:
        """The names it was sent to, by kind: {"to": [...], "cc": [...], "bcc": [...]}."""
        return json.loads(self.fields["recipients"])

    @property
    def created_us(self) -> int | None:
        """Its creation time in µs, when the record holds it."""
        value = self.fields.get("created_us")
        return int(value) if value else None

    def read_ts(self, name: str) -> str | None:
        return self.fields.get(receipt_fields(name)[1])

    def ack_ts(self, name: str) -> str | None:
        return self.fields.get(receipt_fields(name)[2])


@dataclass(frozen=True)
class ReceiptRecord:
    """One recipient's copy of a message: its kind (None when gone), read and ack times, and the
    message's creation time in µs (None when the record lacks it)."""

    kind: str | None
    read_ts: str | None
    ack_ts: str | None
    created_us: int | None


# What a pending entry reads: MessageRecord (msg), ReceiptRecord (rcpt), the reservation's
# HASH (res, empty when gone: broker/store/commands/reservation_record.py decodes it), the link's JSON
# decoded (link, None when gone).
EntryRecord = MessageRecord | ReceiptRecord | dict[str, Any] | None


@dataclass(frozen=True)
class BatchRecords:
    """A project's records as a batch reads them: its HASH (empty when the project is gone), its
    agents (lower name -> stored agent JSON, decoded), their last-active times (name -> ISO),
    the broker's id counters (kind -> value) and each entry's record (member -> EntryRecord)."""

    project: dict[str, str]
    agents: dict[str, StoredAgent]
    active: dict[str, str]
    counters: dict[str, int]
    entries: dict[str, EntryRecord] = field(default_factory=dict)


def _queue_message(pipe: Pipeline, keys: Keys, slug: str, rest: str) -> Callable[[list[Any]], EntryRecord]:
    pipe.hgetall(keys.message(slug, int(rest)))
    pipe.hget(keys.bodies(slug), rest)
    return lambda replies: MessageRecord(replies[0], replies[1])


def _queue_receipt(pipe: Pipeline, keys: Keys, slug: str, rest: str) -> Callable[[list[Any]], EntryRecord]:
    message_id, _, name = rest.partition(":")
    pipe.hmget(keys.message(slug, int(message_id)), *receipt_fields(name), "created_us")

    def decode(replies: list[Any]) -> EntryRecord:
        kind, read_ts, ack_ts, created_us = replies[0]
        return ReceiptRecord(kind, read_ts, ack_ts, int(created_us) if created_us else None)

    return decode


def _queue_reservation(pipe: Pipeline, keys: Keys, slug: str, rest: str) -> Callable[[list[Any]], EntryRecord]:
    pipe.hgetall(keys.reservation(slug, rest))
    return lambda replies: replies[0]


def _queue_link(pipe: Pipeline, keys: Keys, slug: str, rest: str) -> Callable[[list[Any]], EntryRecord]:
    owner, _, field_name = rest.partition("|")
    pipe.hget(keys.links(slug, owner), field_name)
    return lambda replies: None if replies[0] is None else json.loads(replies[0])


# Pending-entry kind -> (replies it queues, how it queues them and decodes them).
_READERS: dict[str, tuple[int, Callable[[Pipeline, Keys, str, str], Callable[[list[Any]], EntryRecord]]]] = {
    "msg": (2, _queue_message),
    "rcpt": (1, _queue_receipt),
    "res": (1, _queue_reservation),
    "link": (1, _queue_link),
}


def read_batch(client: SyncClient, keys: Keys, *, slug: str, members: Sequence[str]) -> BatchRecords:
    """The project's records and every member's current state, in one pipeline. Members of a
    kind that reads nothing get no entry in ``entries``."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.project(slug))
    pipe.hgetall(keys.agents(slug))
    pipe.hgetall(keys.active(slug))
    for kind in KINDS:  # one GET each: a cluster pipeline refuses MGET (the counters span slots)
        pipe.get(keys.ids(kind))
    queued: list[tuple[str, int, Callable[[list[Any]], EntryRecord]]] = []
    for member in members:
        kind, _, rest = member.partition(":")
        reader = _READERS.get(kind)
        if reader is not None:
            count, queue = reader
            queued.append((member, count, queue(pipe, keys, slug, rest)))
    replies = pipe.execute()
    project, agents, active = replies[0], replies[1], replies[2]
    counters = {kind: int(value or 0) for kind, value in zip(KINDS, replies[3 : 3 + len(KINDS)], strict=True)}
    entries: dict[str, EntryRecord] = {}
    position = 3 + len(KINDS)
    for member, count, decode in queued:
        entries[member] = decode(replies[position : position + count])
        position += count
    return BatchRecords(project, {k: decode_agent(v) for k, v in agents.items()}, active, counters, entries)
