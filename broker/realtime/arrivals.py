"""Reading mail as it arrives: the long-poll ``wait_for_mail``, the endless ``follow`` behind the
SSE stream and ``broker watch``, and the unseen-unread check behind ``broker hook check-inbox``.

Everything reads the agent's inbox STREAM by cursor (a stream entry id such as
``1732712345678-0``); the doorbell (broker/store/doorbell.py) only says when to read again. Readers
register their waiter *before* they read, so an arrival between the read and the wait still
rings it, and a cursor read never skips or repeats an entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from broker.errors import BrokerError
from broker.identity.names import validate_name
from broker.identity.projects import project_slug
from broker.mail.inbox import check_reader, items_from_entries
from broker.mail.inputs import check_limit
from broker.realtime.cancellation import stop_if_cancelled
from broker.store.commands import arrivals as arrivals_store
from broker.store.commands import identity as identity_store
from broker.store.commands.arrivals import InboxEntry
from broker.store.store import Store

MAX_WAITS_PER_AGENT = 16  # wait_for_mail calls waiting at once per agent, in one broker process
MAX_WAIT_SECONDS = 120  # one call (well under MCP clients' 300 s HTTP read timeout); loop for longer
STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")  # ASCII digits only (\d takes any script's)
MAX_STREAM_PART = 2**64 - 1
FOLLOW_PAGE = 100
START = "0-0"  # the cursor before the first entry of any inbox


# -- arguments ----------------------------------------------------------------------------------
def check_timeout(timeout_seconds: float) -> float:
    if not 0 <= timeout_seconds <= MAX_WAIT_SECONDS:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"timeout_seconds must be between 0 and {MAX_WAIT_SECONDS}, got {timeout_seconds}. "
            "To wait longer, call again with after_id set to the cursor returned.",
        )
    return float(timeout_seconds)


def parse_after_id(after_id: str | int | None) -> str | int | None:
    """A stream cursor (``"<ms>-<seq>"``, returned as ``cursor``), or an integer message id
    (an int, or a string of digits) meaning "after that message". ``"0"`` and ``"0-0"`` mean
    the start of the inbox. None or blank means "no cursor"."""
    if after_id is None or isinstance(after_id, bool):
        if after_id is None:
            return None
        raise BrokerError("INVALID_ARGUMENT", "after_id must be a cursor string or a message id, not a boolean.")
    if isinstance(after_id, int):
        if after_id < 0:
            raise BrokerError("INVALID_ARGUMENT", f"after_id {after_id} is negative; pass a message id or a cursor.")
        return START if after_id == 0 else after_id
    text = after_id.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit() and len(text) <= 19:
        return START if int(text) == 0 else int(text)
    if STREAM_ID.fullmatch(text) and all(int(part) <= MAX_STREAM_PART for part in text.split("-")):
        return text
    raise BrokerError(
        "INVALID_ARGUMENT",
        f"after_id '{after_id[:64]}' is not a cursor: pass the 'cursor' a previous wait_for_mail "
        "returned (like '1732712345678-0'), a message id, or omit it.",
    )


async def authenticate(
    store: Store, project_key: str, agent_name: str, registration_token: str | None
) -> tuple[str, str]:
    """(project slug, agent name) once the agent exists and the token (if any, or if required)
    matches; one HGET of the agent record."""
    slug = await project_slug(store, project_key)
    name = validate_name(agent_name)
    digest, require = store.bindings.args(slug, name, registration_token)
    agent = await identity_store.stored_agent(store, slug=slug, name=name)
    await check_reader(store, slug, project_key, name, agent, digest, require)
    if digest:
        store.bindings.bind(slug, name)
    return slug, name


async def cursor_of_message(store: Store, slug: str, name: str, message_id: int) -> str:
    """The inbox cursor of a received message: its entry's id, found near its creation time."""
    received = await arrivals_store.received_message(store, slug=slug, name=name, message_id=message_id)
    if received is None:
        raise BrokerError(
            "NOT_FOUND",
            f"Message '{message_id}' is not in the inbox of agent '{name}'. Pass a message id that "
            "fetch_inbox lists for this agent, or the cursor a previous wait_for_mail returned.",
        )
    if received.delivered_cursor:  # held until a contact approval delivered it (broker/scripts/lib/contacts.lua)
        return received.delivered_cursor
    cursor = await arrivals_store.entry_of_message(
        store, slug=slug, name=name, message_id=message_id, created_us=received.created_us
    )
    if cursor is not None:
        return cursor
    raise BrokerError("NOT_FOUND", f"Message '{message_id}' has no entry in the inbox of agent '{name}'.")


# -- reads ----------------------------------------------------------------------------------
async def entries_after(store: Store, slug: str, lower: str, cursor: str, count: int) -> list[InboxEntry]:
    return await arrivals_store.entries_after(store, slug=slug, name=lower, cursor=cursor, count=count)


async def recent_unread(
    store: Store, slug: str, lower: str, limit: int, after: str | None = None
) -> tuple[list[InboxEntry], str]:
    """The newest ``limit`` unread entries (oldest first) newer than ``after``, and the cursor of
    the inbox's newest entry (``after`` or the start when the inbox is empty)."""
    page = await arrivals_store.recent_unread(store, slug=slug, name=lower, limit=limit, after=after)
    return page.entries, page.newest or after or START


async def _result(store: Store, slug: str, entries: list[InboxEntry], include_bodies: bool) -> list[dict[str, Any]]:
    return await items_from_entries(store, slug, [entry.fields for entry in entries], include_bodies)


# -- wait_for_mail --------------------------------------------------------------------------
async def wait_for_mail(
    store: Store,
    project_key: str,
    agent_name: str,
    timeout_seconds: float,
    after_id: str | int | None,
    include_bodies: bool,
    limit: int,
    registration_token: str | None,
) -> dict[str, Any]:
    """Inbox items (oldest first) that arrived after ``after_id``, or the agent's unread mail when
    there is no cursor; waits up to ``timeout_seconds`` for the first one. ``cursor`` is the id
    of the last entry returned (or of the inbox's newest entry), to pass as ``after_id`` next."""
    check_limit(limit)
    timeout = check_timeout(timeout_seconds)
    after = parse_after_id(after_id)
    slug, name = await authenticate(store, project_key, agent_name, registration_token)
    lower = name.lower()
    if isinstance(after, int):
        after = await cursor_of_message(store, slug, name, after)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    doorbell = store.doorbell
    # Each open wait re-reads the inbox on every arrival: bound them, or an agent holding
    # thousands open makes each message it receives cost as many reads.
    if timeout > 0 and doorbell.waiting(slug, lower) >= MAX_WAITS_PER_AGENT:
        raise BrokerError(
            "TOO_MANY_WAITS",
            f"Agent '{name}' already has {MAX_WAITS_PER_AGENT} wait_for_mail calls waiting on this broker; "
            "one at a time is enough (pass the cursor it returns as after_id next). Retry when one returns.",
        )
    with doorbell.waiter(slug, lower) as waiter:
        if timeout > 0:
            await doorbell.ready(slug, timeout)  # if it is not up in time, the reads below still answer
        if after is None:
            unread, after = await recent_unread(store, slug, lower, limit)
            if unread:
                return {"messages": await _result(store, slug, unread, include_bodies), "cursor": after,
                        "timed_out": False}  # fmt: skip
        while True:
            waiter.ring.clear()
            entries = await entries_after(store, slug, lower, after, limit)
            if entries:
                messages = await _result(store, slug, entries, include_bodies)
                return {"messages": messages, "cursor": entries[-1].cursor, "timed_out": False}
            remaining = deadline - loop.time()
            if remaining <= 0:
                return {"messages": [], "cursor": after, "timed_out": True}
            # On timeout, one last read above, in case the doorbell was lost.
            await stop_if_cancelled()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await waiter.ring.wait()


# -- follow (SSE, watch) ----------------------------------------------------------------------
async def tail_cursor(store: Store, slug: str, lower: str) -> str:
    return await arrivals_store.newest_cursor(store, slug=slug, name=lower) or START


async def start_cursor(store: Store, slug: str, name: str, after_id: str | None) -> str:
    """Where a stream of arrivals starts: after ``after_id`` (a cursor or a message id), else
    after the newest entry (only mail still to come)."""
    after = parse_after_id(after_id)
    if isinstance(after, int):
        after = await cursor_of_message(store, slug, name, after)
    return after if after is not None else await tail_cursor(store, slug, name.lower())


async def follow(
    store: Store, slug: str, lower: str, cursor: str, include_bodies: bool
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(cursor, inbox item) for every entry after ``cursor``: the backlog first, then each
    arrival, forever. Redis errors propagate; resume with the last cursor yielded."""
    doorbell = store.doorbell
    with doorbell.waiter(slug, lower) as waiter:
        # The subscriber keeps reconnecting with back-off; reading before it is up could miss a ring.
        while not await doorbell.ready(slug, 5.0):
            await stop_if_cancelled()
        while True:
            waiter.ring.clear()
            entries = await entries_after(store, slug, lower, cursor, FOLLOW_PAGE)
            if not entries:
                await stop_if_cancelled()
                await waiter.ring.wait()
                continue
            items = await _result(store, slug, entries, include_bodies)
            for entry, item in zip(entries, items, strict=True):
                yield entry.cursor, item
                cursor = entry.cursor


# -- hook check-inbox ---------------------------------------------------------------------------
async def unseen_unread(store: Store, slug: str, name: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """The newest ``limit`` unread messages the hook has not shown yet (oldest first), and
    whether there were more, remembering what it showed: the cursor of the newest inbox entry
    seen is kept per agent, so old mail is never shown twice."""
    lower = name.lower()
    seen = await arrivals_store.hook_cursor(store, slug=slug, name=lower)
    entries, tail = await recent_unread(store, slug, lower, limit + 1, after=seen)
    more = len(entries) > limit
    items = await _result(store, slug, entries[-limit:], False)
    if tail != seen and tail != START:
        await arrivals_store.set_hook_cursor(store, slug=slug, name=lower, cursor=tail)
    return items, more


def item_json(item: dict[str, Any]) -> str:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False)
