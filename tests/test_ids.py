"""Ids never repeat when Redis loses its last writes (issue 11 item 8): the id counters go
back, yet new ids land past every id handed out before, and the persistence worker never
stalls on a row it already holds (docs/durability-ids.md)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastmcp import FastMCP
from helpers import Tools
from persist_helpers import committed_files, index_rows, run_worker

from broker.config import Settings
from broker.persistence.drain import Persister
from broker.persistence.index import Batch, Index
from broker.store.clients import make_sync_client
from broker.store.ids import ID_LIMIT, IdAllocator

SLUG = "tmp-concurrent-test"


async def test_ids_after_a_counter_went_back_are_new(server: FastMCP) -> None:
    """The counter is put back to what it was before 600 ids were handed out (what a lost AOF
    tail does); the next ids of a fresh allocator still repeat none of them. The 600 ids ran
    at most 6 ms ahead of the clock's floor (100 ids per ms); a Redis restart or failover
    takes far longer than the 50 ms waited here."""
    store = server.store  # type: ignore[attr-defined]
    client = store.client()
    key = store.keys.ids("message")
    before = await client.get(key)
    first = IdAllocator(key, block=16)
    taken = [await first.next_id(client) for _ in range(600)]
    if before is None:
        await client.delete(key)
    else:
        await client.set(key, before)
    await asyncio.sleep(0.05)
    second = IdAllocator(key, block=16)  # another process, or this one after a reset
    again = [await second.next_id(client) for _ in range(600)]
    assert len(set(taken)) == len(set(again)) == 600
    assert not set(taken) & set(again)
    assert max(again) < ID_LIMIT


async def test_existing_small_counters_keep_working(server: FastMCP) -> None:
    """A counter of an older broker (small values) is only ever raised."""
    store = server.store  # type: ignore[attr-defined]
    key = store.keys.ids("agent")
    await store.client().set(key, "41")
    allocator = IdAllocator(key, block=4)
    ids = [await allocator.next_id(store.client()) for _ in range(5)]
    assert min(ids) > 41 and len(set(ids)) == 5
    assert int(await store.client().get(key)) >= max(ids)


async def test_agent_recreated_under_its_name_with_a_new_id_keeps_persisting(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """Redis lost alpha-one's record after the worker persisted it; alpha-one registers again
    (a new id) and sends: the worker writes the new id over the old row's, carries its mail
    over, and goes on persisting (before: UNIQUE constraint failed, the project stalled)."""
    store = server.store  # type: ignore[attr-defined]
    old_id = trio["agents"]["alpha-one"]["id"]
    first = await tools.send("alpha-one", ["BlueLake"], subject="before the loss")
    await run_worker(server, settings)
    await store.client().hdel(store.keys.agents(SLUG), "alpha-one")
    await store.client().hdel(store.keys.active(SLUG), "alpha-one")

    again = await tools.agent("alpha-one")
    assert again["id"] != old_id
    second = await tools.send("alpha-one", ["BlueLake"], subject="after the loss")
    await tools.send("BlueLake", ["GreenCastle"], subject="others keep going")
    await run_worker(server, settings)

    assert await store.client().zcard(store.keys.pending(SLUG)) == 0
    assert await store.client().zcard(store.keys.inflight(SLUG)) == 0
    rows = index_rows(settings, "SELECT id FROM agents WHERE name = 'alpha-one'")
    assert rows == [{"id": again["id"]}]
    senders = index_rows(settings, "SELECT id, sender_id FROM messages WHERE subject LIKE '%the loss' ORDER BY id")
    ids = [first["deliveries"][0]["payload"]["id"], second["deliveries"][0]["payload"]["id"]]
    assert senders == [{"id": i, "sender_id": again["id"]} for i in sorted(ids)]
    assert [r["subject"] for r in index_rows(settings, "SELECT subject FROM messages ORDER BY created_ts")] == [
        "before the loss",
        "after the loss",
        "others keep going",
    ]


async def test_a_second_message_under_a_persisted_id_is_not_written_twice(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """A message id that is already in the index with another message (ids reused after a
    loss, by an older broker): the worker keeps the persisted one, writes no second canonical
    file, and the rest of the batch persists."""
    store = server.store  # type: ignore[attr-defined]
    sent = await tools.send("BlueLake", ["GreenCastle"], subject="original", thread_id="T1")
    message_id = sent["deliveries"][0]["payload"]["id"]
    await run_worker(server, settings)
    key = store.keys.message(SLUG, message_id)
    head = (await store.client().hget(key, "head")).replace('"original"', '"impostor"')
    head = head.replace(sent["deliveries"][0]["payload"]["created_ts"][:4], "2031")
    created_us = int(await store.client().hget(key, "created_us")) + 5 * 365 * 86400 * 10**6
    await store.client().hset(key, mapping={"head": head, "created_us": str(created_us)})
    await store.client().hset(key, "rt:greencastle", "2031-01-01T00:00:00+00:00")
    await store.client().zadd(store.keys.pending(SLUG), {f"msg:{message_id}": 1, f"rcpt:{message_id}:greencastle": 1})
    later = await tools.send("BlueLake", ["GreenCastle"], subject="later")
    await run_worker(server, settings)

    assert await store.client().zcard(store.keys.pending(SLUG)) == 0
    assert await store.client().zcard(store.keys.inflight(SLUG)) == 0
    canonical = [f for f in committed_files(settings) if f.startswith(f"projects/{SLUG}/messages/2")]
    assert sorted(int(f.rsplit("__", 1)[1][:-3]) for f in canonical) == sorted(
        [message_id, later["deliveries"][0]["payload"]["id"]]
    )
    assert not any("impostor" in f for f in committed_files(settings))
    rows = index_rows(settings, "SELECT subject FROM messages WHERE id = :id", {"id": message_id})
    assert rows == [{"subject": "original"}]
    receipt = index_rows(settings, "SELECT read_ts FROM message_recipients WHERE message_id = :id", {"id": message_id})
    assert receipt == [{"read_ts": None}]


async def test_a_worker_starting_after_a_loss_raises_counters_past_the_index(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """Redis came back with counters below persisted ids (an old backup, or a promoted replica
    whose clock is behind, so the clock floor gives nothing): the worker raises them at start,
    before any batch, past every indexed id."""
    store = server.store  # type: ignore[attr-defined]
    sent = await tools.send("BlueLake", ["GreenCastle"])
    await run_worker(server, settings)
    for kind in ("message", "agent", "project"):
        await store.client().set(store.keys.ids(kind), "7")

    Persister(settings, make_sync_client(store.redis_url)).connection.close()
    assert int(await store.client().get(store.keys.ids("message"))) > sent["deliveries"][0]["payload"]["id"]
    assert int(await store.client().get(store.keys.ids("agent"))) > max(a["id"] for a in trio["agents"].values())
    assert int(await store.client().get(store.keys.ids("project"))) > trio["project"]["id"]


def test_a_project_created_again_under_its_slug_takes_its_history_along(settings: Settings) -> None:
    """The index's half of a project re-created with a new id: its agents and mail move to the
    new id instead of the batch failing on UNIQUE(slug)."""
    index = Index.from_settings(settings)
    index.ensure_schema()
    project = {"slug": "p", "human_key": "/p", "created_at": "2026-01-01T00:00:00+00:00", "archived_at": None}
    agent = {
        "project_id": 1, "name": "BlueLake", "program": "x", "model": "y", "task_description": "",
        "inception_ts": "2026-01-01T00:00:00+00:00", "last_active_ts": "2026-01-01T00:00:00+00:00",
        "attachments_policy": "auto", "contact_policy": "auto", "registration_token": None, "retired_at": None,
    }  # fmt: skip
    index.write_batch(Batch(projects=[{"id": 1, **project}], agents=[{"id": 10, **agent}]))
    index.write_batch(Batch(projects=[{"id": 2, **project}], agents=[{"id": 20, **agent, "project_id": 2}]))
    assert [dict(r) for r in index.query("SELECT id, slug FROM projects")] == [{"id": 2, "slug": "p"}]
    assert [dict(r) for r in index.query("SELECT id, project_id FROM agents")] == [{"id": 20, "project_id": 2}]
    index.close()
