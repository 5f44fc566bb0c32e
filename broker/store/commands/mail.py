"""Typed commands of mail: sending (send_message), reading (inbox pages, fetch_inbox_indexed,
fetch_topic, get_message), read and acknowledgement state (mark_message), and the reads behind
routing (an agent's contact links) and idempotent sends (the keys' fingerprints).

Each command builds its keys and arguments, runs one script or one pipelined read, and returns
plain values or the frozen dataclasses below; a script's error reply raises ``Refusal``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from broker.store.commands.agent_record import StoredAgent, decode_agent
from broker.store.commands.contacts import Link
from broker.store.doorbell import RECEIPTS, change_event
from broker.store.luajson import INLINE_BODY_BYTES
from broker.store.refusals import accepted, refusal
from broker.store.store import Store


# -- sending ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A keyed send: its record lives in each target project under (sender_slug, sender, key)
    and holds ``fingerprint``, the SHA-256 hex of what the call asked to send."""

    sender_slug: str
    sender: str
    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Sent:
    """A message stored and delivered in one project (or the first delivery's reply again, for a
    key already used for the same content)."""

    human_key: str
    head: dict[str, Any]  # the inbox item without kind and body
    recipients: dict[str, list[str]]  # {to, cc, bcc} names
    held: list[dict[str, str]]  # [{name, kind}] held until they approve the sender
    skipped: list[dict[str, str]]  # [{recipient, reason}] a broadcast left out


@dataclass(frozen=True, slots=True)
class NobodyLeft:
    """Nothing was sent: every recipient of the broadcast was skipped."""

    skipped: list[dict[str, str]]


async def send_message(
    store: Store,
    *,
    slug: str,
    sender_name: str,
    credentials: tuple[str, str],
    foreign_sender: dict[str, Any] | None,
    subject: str,
    body_md: str,
    importance: str,
    ack_required: bool,
    thread_id: str,
    topic: str,
    broadcast_cutoff: str,
    max_recipients: int,
    to: list[str],
    cc: list[str],
    bcc: list[str],
    hold: bool,
    rate_spec: str,
    idempotency: IdempotencyRecord | None,
    attachments: list[dict[str, Any]] | None = None,
    past_contact_policy: bool = False,
) -> Sent | NobodyLeft:
    """Store a message and deliver it to its recipients in project ``slug`` (send_message.lua):
    all or none. ``foreign_sender`` is the record of a sender of another project, authenticated
    there; ``broadcast_cutoff`` the oldest last_active_ts a broadcast reaches ("" for none);
    ``attachments`` the metadata of its attachments (their bytes are staged on disk, never here).
    Refusals: the common codes, UNKNOWN_RECIPIENTS, TOO_MANY_RECIPIENTS, BROADCAST_TOO_LARGE,
    IDEMPOTENCY_CONFLICT, RATE_LIMITED, HOLD_FULL and the contact refusals, with what they name.
    ``past_contact_policy``: the human overseer's mail, which no contact policy holds back."""
    keys, settings = store.keys, store.settings
    script_keys = [keys.project(slug), keys.agents(slug), keys.active(slug), keys.pending(slug)]
    idem_args: list[Any] = []
    if idempotency:
        script_keys.append(keys.idempotency(slug, idempotency.sender_slug, idempotency.sender, idempotency.key))
        idem_args = [settings.idempotency_window_seconds * 1000, idempotency.fingerprint]
    message_id = await store.next_id("message")
    reply = await store.run(
        "send_message",
        script_keys,
        [
            keys.project_prefix(slug),
            keys.doorbell(slug),
            slug,
            message_id,
            sender_name,
            *credentials,
            subject,
            body_md,
            importance,
            "1" if ack_required else "0",
            thread_id,
            topic,
            broadcast_cutoff,
            INLINE_BODY_BYTES,
            max_recipients,
            len(to),
            len(cc),
            "1" if hold else "0",
            "2" if past_contact_policy else "0",
            json.dumps(foreign_sender) if foreign_sender else "",
            settings.contact_hold_ttl_seconds,
            settings.contact_max_held,
            rate_spec,
            json.dumps(attachments, separators=(",", ":")) if attachments else "[]",
            *(n.lower() for n in to),
            *(n.lower() for n in cc),
            *(n.lower() for n in bcc),
            *idem_args,
        ],
    )
    status = reply[0]
    if status == "ok":
        store.schedule_persist(slug, reply[4])
        return Sent(
            human_key=reply[3],
            head=json.loads(reply[1]),
            recipients=json.loads(reply[2]),
            held=json.loads(reply[5]),
            skipped=json.loads(reply[6]),
        )
    if status == "NO_RECIPIENTS":
        return NobodyLeft(json.loads(reply[1]))
    raise refusal(reply)


async def idempotency_fingerprints(
    store: Store, *, slugs: list[str], sender_slug: str, sender: str, key: str
) -> list[str]:
    """The fingerprint each project's record of (sender, key) holds, "" where there is none, in
    the order of ``slugs``: one pipelined read."""
    pipe = store.client().pipeline(transaction=False)
    for slug in slugs:
        pipe.getrange(store.keys.idempotency(slug, sender_slug, sender, key), 0, 63)
    return [first or "" for first in await pipe.execute()]


# -- one message, read and acknowledgement state ----------------------------------------------
@dataclass(frozen=True, slots=True)
class VisibleMessage:
    """A stored message as its viewer (its sender or a recipient) may see it."""

    head: dict[str, Any]
    recipients: dict[str, list[str]]  # {to, cc, bcc}, bcc in full
    sender: str  # lower-cased
    viewer: str  # the viewer's name as registered
    viewer_kind: str | None  # "to", "cc" or "bcc" when the viewer is a recipient


async def get_message(
    store: Store, *, slug: str, viewer: str, credentials: tuple[str, str], message_id: int
) -> VisibleMessage:
    """One message its viewer sent or received (get_message.lua, read-only). Refusals:
    NO_MESSAGE (not there, or not the viewer's) and the common codes."""
    keys = store.keys
    reply = await store.run(
        "get_message",
        [keys.project(slug), keys.agents(slug)],
        [keys.project_prefix(slug), viewer, *credentials, message_id],
    )
    accepted(reply)
    return VisibleMessage(json.loads(reply[1]), json.loads(reply[2]), reply[3], reply[4], reply[5] or None)


@dataclass(frozen=True, slots=True)
class Marked:
    """A recipient's read and acknowledgement timestamps after mark_message (None: not set)."""

    read_at: str | None
    ack_at: str | None
    recipient: bool  # False for the message's sender, which has no recipient entry


async def mark_message(
    store: Store, *, slug: str, name: str, credentials: tuple[str, str], message_id: int, mode: str
) -> Marked:
    """Set the agent's read (``mode`` "read") or read and acknowledged ("ack") timestamp once
    (mark_message.lua). Refusals: NO_MESSAGE and the common codes."""
    keys = store.keys
    reply = await store.run(
        "mark_message",
        [keys.project(slug), keys.agents(slug), keys.pending(slug)],
        [keys.project_prefix(slug), name, *credentials, message_id, mode, keys.doorbell(slug),
         change_event(slug, RECEIPTS)],
    )  # fmt: skip
    accepted(reply)
    store.schedule_persist(slug, reply[4])
    return Marked(reply[1] or None, reply[2] or None, reply[3] == "1")


# -- inbox pages --------------------------------------------------------------------------------
async def fetch_inbox_indexed(
    store: Store,
    *,
    slug: str,
    name: str,
    credentials: tuple[str, str],
    limit: int,
    since_us: str,
    urgent_only: bool,
    topic: str,
    include_bodies: bool,
) -> tuple[list[dict[str, Any]], str]:
    """An inbox page filtered by urgency and/or (lower-cased) topic, newest first, from the
    per-agent indexes (fetch_inbox_indexed.lua), and the inbox's cold mark read with it ("" for
    none). ``since_us`` "" for all. Refusals: the common codes."""
    keys = store.keys
    reply = await store.run(
        "fetch_inbox_indexed",
        [keys.project(slug), keys.agents(slug), keys.cold(slug)],
        [keys.project_prefix(slug), name, *credentials, limit, since_us,
         "1" if urgent_only else "0", topic, "1" if include_bodies else "0"],
    )  # fmt: skip
    accepted(reply)
    items: list[dict[str, Any]] = json.loads(reply[1])
    return items, reply[2]


async def fetch_topic(
    store: Store,
    *,
    slug: str,
    viewer: str,
    credentials: tuple[str, str],
    topic: str,
    limit: int,
    since_us: str,
    include_bodies: bool,
) -> tuple[list[dict[str, Any]], str, str]:
    """Messages with one (lower-cased) topic the viewer sent or received, newest first
    (fetch_topic.lua), and the cold marks read with them: the viewer's inbox mark and the
    project's ``t`` ("" for none). Refusals: the common codes."""
    keys = store.keys
    reply = await store.run(
        "fetch_topic",
        [keys.project(slug), keys.agents(slug), keys.cold(slug)],
        [keys.project_prefix(slug), viewer, *credentials, topic, limit, since_us,
         "1" if include_bodies else "0"],
    )  # fmt: skip
    accepted(reply)
    items: list[dict[str, Any]] = json.loads(reply[1])
    return items, reply[2], reply[3]


@dataclass(frozen=True, slots=True)
class InboxPage:
    """The newest entries of an agent's inbox stream (what ``inbox_items`` turns into items), the
    agent's record when it was read in the same round trip (None: not read, or no such agent),
    the stream ids of the entries, and the inbox's cold mark read with them ("" for none)."""

    entries: list[dict[str, str]]
    agent: StoredAgent | None
    entry_ids: list[str]
    mark: str


async def inbox_page(store: Store, *, slug: str, name: str, since_us: str, limit: int, with_agent: bool) -> InboxPage:
    """Up to ``limit`` inbox entries, newest first, created strictly after ``since_us`` ("" for
    all): one XREVRANGE and, in the same MULTI, the inbox's cold mark (and the agent record's
    HGET when asked). Stream ids are the server's millisecond clock, the one that stamps
    created_ts, so ``since_us`` bounds the range."""
    keys = store.keys
    lower = name.lower()
    inbox = keys.inbox(slug, lower)
    oldest = str(int(since_us) // 1000) if since_us else "-"
    record = None
    pipe = store.client().pipeline(transaction=True)
    pipe.hget(keys.cold(slug), f"in:{lower}")
    if with_agent:
        pipe.hget(keys.agents(slug), lower)
    pipe.xrevrange(inbox, min=oldest, count=limit)
    replies = await pipe.execute()
    mark, entries = replies[0], replies[-1]
    if with_agent:
        record = replies[1]
    if since_us:
        # Only entries of the boundary millisecond can be too old; they are the last ones.
        cutoff = int(since_us)
        while entries and int(entries[-1][1]["f"].split("|", 1)[0]) <= cutoff:
            entries.pop()
    return InboxPage(
        [fields for _entry_id, fields in entries],
        None if record is None else decode_agent(record),
        [entry_id for entry_id, _fields in entries],
        mark or "",
    )


async def inbox_items(
    store: Store,
    *,
    slug: str,
    entries: list[dict[str, str]],
    include_bodies: bool,
    gone: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Inbox items from inbox stream entries' fields, in the order given; bodies too large to be
    copied into the entry are read from the project's bodies hash in one HMGET. A body no longer
    there (its message left Redis after the entries were read) is "", and its item is added to
    ``gone`` when given, for the caller to take the body from the index."""
    # One parse of the joined items is about twice as fast as a parse per item.
    items: list[dict[str, Any]] = json.loads("[" + ",".join([fields["j"] for fields in entries]) + "]")
    if include_bodies:
        large = [fields["m"] for fields in entries if "b" not in fields]
        bodies = store.keys.bodies(slug)
        stored = dict(zip(large, await store.client().hmget(bodies, large), strict=True)) if large else {}
        for item, fields in zip(items, entries, strict=True):
            body = fields.get("b")
            if body is None:
                body = stored.get(fields["m"])
                if body is None and gone is not None:
                    gone.append(item)
            item["body_md"] = body or ""
    return items


async def receipts(store: Store, *, slug: str, name: str, ids: list[int]) -> dict[int, tuple[str | None, str | None]]:
    """The agent's (read_ts, ack_ts) on each of the messages ``ids`` that Redis holds (a message
    brought back into Redis after it left): one pipelined read; messages not there are left out."""
    keys = store.keys
    lower = name.lower()
    pipe = store.client().pipeline(transaction=False)
    for message_id in ids:
        pipe.hmget(keys.message(slug, message_id), "head", f"rt:{lower}", f"at:{lower}")
    found = {}
    for message_id, (head, read_ts, ack_ts) in zip(ids, await pipe.execute(), strict=True):
        if head is not None:
            found[message_id] = (read_ts, ack_ts)
    return found


# -- routing ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ContactLinks:
    """An agent's contact links (both directions) and the server's clock."""

    links: list[Link]
    now_us: int


async def contact_links(store: Store, *, slug: str, name: str) -> ContactLinks:
    """Every contact link of the agent and Redis's TIME, read at once (two concurrent commands:
    a cluster pipeline refuses TIME, which has no key to route by)."""
    client = store.client()
    links, (sec, usec) = await asyncio.gather(client.hgetall(store.keys.links(slug, name)), client.time())
    return ContactLinks([Link.decode(raw) for raw in links.values()], sec * 1_000_000 + usec)
