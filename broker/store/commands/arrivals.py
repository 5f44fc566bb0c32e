"""Reads of an agent's inbox stream by cursor, behind wait_for_mail, follow (SSE, ``broker
watch``), ``broker hook check-inbox`` and push subscriptions: entries after a cursor, the newest
unread entries, the cursor of a received message, the hook's cursor, and which agents exist.

A cursor is an inbox stream entry id (``<ms>-<seq>``)."""

from __future__ import annotations

from dataclasses import dataclass

from broker.store.keys import delivered_cursor_field, receipt_fields
from broker.store.store import Store

MAX_UNREAD_SCAN = 2000  # inbox entries examined for unread mail, newest first
SCAN_PAGE = 200


@dataclass(frozen=True, slots=True)
class InboxEntry:
    cursor: str  # the stream entry id
    fields: dict[str, str]  # the entry as stored (broker.mail.inbox.items_from_entries reads it)


def _entries(raw: list[tuple[str, dict[str, str]]]) -> list[InboxEntry]:
    return [InboxEntry(entry_id, fields) for entry_id, fields in raw]


async def entries_after(store: Store, *, slug: str, name: str, cursor: str, count: int) -> list[InboxEntry]:
    """Up to ``count`` inbox entries after ``cursor``, oldest first."""
    return _entries(await store.client().xrange(store.keys.inbox(slug, name), min="(" + cursor, count=count))


async def newest_cursor(store: Store, *, slug: str, name: str) -> str | None:
    """The cursor of the inbox's newest entry, or None when the inbox is empty."""
    newest = await store.client().xrevrange(store.keys.inbox(slug, name), count=1)
    return newest[0][0] if newest else None


@dataclass(frozen=True, slots=True)
class UnreadPage:
    entries: list[InboxEntry]  # oldest first
    newest: str | None  # cursor of the newest entry after the floor, None when there is none


async def recent_unread(store: Store, *, slug: str, name: str, limit: int, after: str | None) -> UnreadPage:
    """The newest ``limit`` unread entries newer than ``after`` (the whole inbox when None), and
    the cursor of the newest entry. Looks at most MAX_UNREAD_SCAN entries back, so an agent with a
    long unread backlog still gets an answer."""
    keys, client = store.keys, store.client()
    inbox, unread = keys.inbox(slug, name), keys.unread(slug, name)
    floor = "(" + after if after else "-"
    # One snapshot (MULTI): mail delivered between the two reads would become the cursor
    # without being counted unread, and so be neither returned nor waited for.
    pipe = client.pipeline(transaction=True)
    pipe.scard(unread)
    pipe.xrevrange(inbox, max="+", min=floor, count=SCAN_PAGE)
    unread_count, entries = await pipe.execute()
    newest = entries[0][0] if entries else None
    found: list[tuple[str, dict[str, str]]] = []
    scanned = 0
    while unread_count and entries and len(found) < limit and scanned < MAX_UNREAD_SCAN:
        flags = await client.smismember(unread, [fields["m"] for _id, fields in entries])
        found.extend(entry for entry, flag in zip(entries, flags, strict=True) if flag)
        scanned += len(entries)
        if len(entries) < SCAN_PAGE:
            break
        entries = await client.xrevrange(inbox, max="(" + entries[-1][0], min=floor, count=SCAN_PAGE)
    found = found[:limit]
    found.reverse()
    return UnreadPage(_entries(found), newest)


@dataclass(frozen=True, slots=True)
class Received:
    created_us: int
    delivered_cursor: str | None  # the entry of a message held for a contact approval, then delivered


async def received_message(store: Store, *, slug: str, name: str, message_id: int) -> Received | None:
    """How the agent received the message, or None when it is not one of its recipients."""
    keys = store.keys
    created_us, kind, cursor = await store.client().hmget(
        keys.message(slug, message_id),
        ["created_us", receipt_fields(name)[0], delivered_cursor_field(name)],
    )
    if created_us is None or kind is None:
        return None
    return Received(int(created_us), cursor or None)


async def entry_of_message(store: Store, *, slug: str, name: str, message_id: int, created_us: int) -> str | None:
    """The cursor of the message's inbox entry, looked for near its creation time, or None."""
    inbox = store.keys.inbox(slug, name)
    created_ms = created_us // 1000
    # The entry is written in the same script that read the clock, so within a few ms of it.
    for slack, count in ((5, 1000), (1000, 20000)):
        entries = await store.client().xrange(
            inbox, min=str(created_ms - slack), max=str(created_ms + slack), count=count
        )
        for entry_id, fields in entries:
            if fields.get("m") == str(message_id):
                return entry_id
    return None


async def hook_cursor(store: Store, *, slug: str, name: str) -> str | None:
    """The cursor of the newest entry ``broker hook check-inbox`` has looked at, if any."""
    return await store.client().get(store.keys.hook_cursor(slug, name))


async def set_hook_cursor(store: Store, *, slug: str, name: str, cursor: str) -> None:
    await store.client().set(store.keys.hook_cursor(slug, name), cursor)


async def agents_exist(store: Store, *, agents: list[tuple[str, str]]) -> list[bool]:
    """For each (slug, agent name), whether the agent exists (one round trip)."""
    pipe = store.client().pipeline(transaction=False)
    for slug, name in agents:
        pipe.hexists(store.keys.agents(slug), name.lower())
    return [bool(found) for found in await pipe.execute()]
