"""Typed commands behind the mail resources (broker/mail/views.py): the inbox views (fetch_view),
sent messages (outbox), a thread's messages and a message's body. The viewing agent's token is
checked with broker/store/commands/identity.py's get_agent.

Each runs one script or one pipelined read and returns plain values or the frozen dataclasses
below; a script's error reply raises ``Refusal``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from broker.store.keys import receipt_fields
from broker.store.refusals import accepted
from broker.store.store import Store


@dataclass(frozen=True, slots=True)
class ViewItem:
    """An inbox item of a view (with kind, no body) and when the viewer read it (None: unread)."""

    item: dict[str, Any]
    read_at: str | None


@dataclass(frozen=True, slots=True)
class ViewPage:
    """A view's hot items, the inbox's cold mark read with them ("" for none), and where the
    walk stopped: entries looked at, the last one's position (urgent index score, or stream
    entry id; "" for none), and whether it ran out of entries."""

    items: list[ViewItem]
    mark: str
    seen: int
    last: str
    ended: bool


async def fetch_view(
    store: Store,
    *,
    slug: str,
    viewer: str,
    mode: str,
    limit: int,
    scan_entries: int,
    cutoff_ms: str = "+",
    order: str = "newest",
) -> ViewPage:
    """The messages of one inbox view (fetch_view.lua, read-only): ``mode`` "urgent-unread" or
    "ack", looking at no more than ``scan_entries`` entries. ``viewer`` is authenticated already
    (no token check). Refusals: the common codes."""
    keys = store.keys
    reply = await store.run(
        "fetch_view",
        [keys.project(slug), keys.agents(slug), keys.cold(slug)],
        [keys.project_prefix(slug), viewer, "", "0", mode, limit, scan_entries, cutoff_ms, order],
    )
    accepted(reply)
    items = [ViewItem(json.loads(reply[i]), reply[i + 1] or None) for i in range(5, len(reply), 2)]
    return ViewPage(items, reply[1], int(reply[2]), str(reply[3]), reply[4] == "1")


async def message_body(store: Store, *, slug: str, message_id: int) -> str:
    """The message's body_md ("" when it is not there)."""
    body: str | None = await store.client().hget(store.keys.bodies(slug), str(message_id))
    return body or ""


async def _messages(
    store: Store, slug: str, ids: list[str], include_bodies: bool, fields: tuple[str, ...]
) -> tuple[str | None, list[list[str | None]], list[str | None]]:
    """The project's human_key, the ``fields`` of each message ``ids`` and their bodies (all
    None unless asked for): one pipelined read."""
    keys = store.keys
    pipe = store.client().pipeline(transaction=False)
    pipe.hget(keys.project(slug), "human_key")
    for message_id in ids:
        pipe.hmget(keys.message(slug, int(message_id)), *fields)
    if include_bodies and ids:
        pipe.hmget(keys.bodies(slug), ids)
    replies = await pipe.execute()
    bodies = replies[-1] if include_bodies and ids else [None] * len(ids)
    return replies[0], replies[1 : 1 + len(ids)], bodies


# -- outbox -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SentIds:
    """The newest sent message ids (with their entry ids and created_us), newest first, and the
    outbox's cold mark read with them ("" for none)."""

    ids: list[str]
    entries: list[tuple[str, int]]  # (stream entry id, created_us) of each id
    mark: str


async def sent_ids(store: Store, *, slug: str, name: str, since_us: str, limit: int) -> SentIds:
    """Ids of the newest ``limit`` messages the agent sent, newest first, created strictly after
    ``since_us`` ("" for all): one XREVRANGE of its outbox stream, and in the same MULTI the
    outbox's mark in the cold hash."""
    oldest = str(int(since_us) // 1000) if since_us else "-"
    keys = store.keys
    pipe = store.client().pipeline(transaction=True)
    pipe.hget(keys.cold(slug), f"out:{name.lower()}")
    pipe.xrevrange(keys.outbox(slug, name), min=oldest, count=limit)
    mark, entries = await pipe.execute()
    kept = [(entry, fields) for entry, fields in entries if not since_us or int(fields["c"]) > int(since_us)]
    return SentIds([f["m"] for _e, f in kept], [(e, int(f["c"])) for e, f in kept], mark or "")


@dataclass(frozen=True, slots=True)
class SentMessage:
    head: dict[str, Any]
    recipients: dict[str, list[str]]  # {to, cc, bcc}
    body: str | None  # None when bodies were not asked for or it is gone


@dataclass(frozen=True, slots=True)
class SentPage:
    human_key: str | None
    messages: list[SentMessage]  # in the order of the ids asked for; purged ones left out


async def sent_messages(store: Store, *, slug: str, ids: list[str], include_bodies: bool) -> SentPage:
    """The project's human_key and the messages ``ids`` (heads, recipients, bodies if asked):
    one pipelined read."""
    human_key, records, bodies = await _messages(store, slug, ids, include_bodies, ("head", "recipients"))
    messages = [
        SentMessage(json.loads(head), json.loads(recipients), body)
        for (head, recipients), body in zip(records, bodies, strict=True)
        if head is not None
    ]
    return SentPage(human_key, messages)


# -- threads ------------------------------------------------------------------------------------
async def thread_ids(store: Store, *, slug: str, thread_id: str, newest: int) -> list[str]:
    """Ids of the thread's newest ``newest`` messages, oldest first."""
    ids: list[str] = await store.client().zrange(store.keys.thread(slug, thread_id), -newest, -1)
    return ids


@dataclass(frozen=True, slots=True)
class ThreadMessage:
    head: dict[str, Any]
    created_us: int
    body: str | None  # None when bodies were not asked for or it is gone


@dataclass(frozen=True, slots=True)
class ThreadPage:
    human_key: str | None
    messages: list[ThreadMessage]  # in the order of the ids asked for


async def viewer_messages(store: Store, *, slug: str, viewer: str, ids: list[str], include_bodies: bool) -> ThreadPage:
    """The project's human_key and those of the messages ``ids`` that ``viewer`` sent or received
    (heads, created_us, bodies if asked): one pipelined read."""
    me = viewer.lower()
    fields = ("head", "sender", receipt_fields(me)[0], "created_us")
    human_key, records, bodies = await _messages(store, slug, ids, include_bodies, fields)
    messages = [
        ThreadMessage(json.loads(head), int(created_us), body)
        for (head, sender, kind, created_us), body in zip(records, bodies, strict=True)
        if head is not None and (sender == me or kind is not None)
    ]
    return ThreadPage(human_key, messages)
