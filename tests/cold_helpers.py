"""Making messages cold for the cold-read tests, exactly as the hot-window contract says
(docs/data-model.md, "The hot window"): persisted first, then deleted from Redis entirely (as
purge_old_messages deletes them), with the project's ``cold`` marks raised to cover them.

``make_cold`` moves chosen messages (any pattern, e.g. every third one); ``trim_to`` runs the
real trimmer (broker/lifecycle/hot_window.py) with a window of ``cap`` messages per stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from fastmcp import FastMCP
from helpers import SLUG
from persist_helpers import run_worker

from broker.config import Settings
from broker.lifecycle.hot_window import HotTrimmer, TrimReport
from broker.store.clients import make_sync_client
from broker.store.commands import lifecycle
from broker.store.store import Store


async def trim_to(server: FastMCP, settings: Settings, cap: int) -> TrimReport:
    """One pass of the real trimmer keeping the newest ``cap`` entries of every stream (messages
    already persisted; the retention stays as set)."""
    store: Store = server.store  # type: ignore[attr-defined]
    window = settings.model_copy(update={"hot_inbox_max_messages": cap})
    trimmer = HotTrimmer(window, make_sync_client(store.redis_url), store.keys)
    return await asyncio.to_thread(trimmer.run_pass)


def _newer(a: str | None, b: str) -> str:
    """The later of two stream entry ids (None: none yet)."""
    if a is None:
        return b
    return max(a, b, key=lambda entry: tuple(int(part) for part in entry.split("-")))


async def make_cold(
    server: FastMCP, settings: Settings, ids: Iterable[int], slug: str = SLUG, persist: bool = True
) -> None:
    """Persist the project (the real worker), then move messages ``ids`` out of Redis: raise the
    marks (``in:<name>``/``out:<name>`` to their newest entry, ``unread:<name>`` by each one the
    agent had not read, ``t`` to the newest created_us) and delete them everywhere. The marks go
    up before the messages go, so a reader between the two finds them on both sides, never on
    neither. ``persist=False`` skips the worker (the caller persisted already)."""
    if persist:
        await run_worker(server, settings)
    store: Store = server.store  # type: ignore[attr-defined]
    keys, client = store.keys, store.client()
    wanted = {str(i) for i in ids}
    if not wanted:
        return
    pending = {m for m in await client.zrange(keys.pending(slug), 0, -1)} | set(
        await client.smembers(keys.pending(slug) + ":inflight")
    )
    assert not any(m == f"msg:{i}" or m.startswith(f"rcpt:{i}:") for i in wanted for m in pending), pending
    marks: dict[str, str] = dict(await client.hgetall(keys.cold(slug)))
    entries: list[tuple[str, str]] = []
    unread_counts: dict[str, int] = {}
    newest_us = int(marks.get("t", "0"))
    for lower in await client.hkeys(keys.agents(slug)):
        for kind, suffix in (("in", f"inbox:{lower}"), ("out", f"outbox:{lower}")):
            for entry_id, fields in await client.xrange(keys.project_prefix(slug) + suffix):
                if fields["m"] in wanted:
                    entries.append((suffix, entry_id))
                    marks[f"{kind}:{lower}"] = _newer(marks.get(f"{kind}:{lower}"), entry_id)
        unread = await client.smembers(keys.unread(slug, lower))
        gone_unread = len(wanted & set(unread))
        if gone_unread:
            unread_counts[lower] = gone_unread
    for message_id in wanted:
        created = await client.hget(keys.message(slug, int(message_id)), "created_us")
        if created is not None:
            newest_us = max(newest_us, int(created))
    marks["t"] = str(newest_us)
    for lower, count in unread_counts.items():
        marks[f"unread:{lower}"] = str(int(marks.get(f"unread:{lower}", "0")) + count)
    await client.hset(keys.cold(slug), mapping=marks)
    await lifecycle.purge_messages(
        store, slug=slug, message_ids=[int(i) for i in sorted(wanted, key=int)], stream_entries=entries
    )
