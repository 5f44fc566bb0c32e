"""Two drains of one project at once (two workers, or a worker and a job retry): the later
batch must never be overtaken by an earlier one that read older state from Redis."""

from __future__ import annotations

import asyncio
import fcntl
import json
import threading
from typing import Any

from fastmcp import FastMCP
from helpers import PROJECT, Tools
from persist_helpers import SLUG, index_rows, listing, reserve, show

from broker.config import Settings
from broker.persistence.drain import Persister
from broker.store.clients import make_sync_client


async def _until(check: Any, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_a_renewal_drained_while_an_older_batch_is_in_flight_is_not_overwritten(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    store = server.store  # type: ignore[attr-defined]
    pending, inflight = store.keys.pending(SLUG), store.keys.inflight(SLUG)
    rid = (await reserve(tools, "BlueLake", ["src/"]))["granted"][0]["id"]
    first = Persister(settings, make_sync_client(store.redis_url))
    second = Persister(settings, make_sync_client(store.redis_url))
    first.archive.ensure()
    # Hold the archive's lock: the first drain claims and reads its batch, then waits to commit.
    with open(settings.archive_path / "broker-archive.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        a = threading.Thread(target=first.drain, args=(SLUG,))
        a.start()
        await _until(lambda: _empty(store.client(), pending))
        await asyncio.sleep(0.3)  # the first batch has read the reservation's state by now
        await tools.call("renew_file_reservations", project_key=PROJECT, agent_name="BlueLake", extend_seconds=900)
        renewed = next(r for r in await listing(tools) if r["id"] == rid)["expires_ts"]
        b = threading.Thread(target=second.drain, args=(SLUG,))
        b.start()
        await asyncio.sleep(0.5)
        # The second drain waits for the batch in flight instead of claiming the renewal now.
        assert f"res:{rid}" in await store.client().zrange(pending, 0, -1)
        fcntl.flock(held, fcntl.LOCK_UN)
    await asyncio.to_thread(a.join, 30)
    await asyncio.to_thread(b.join, 30)
    assert await store.client().zcard(pending) == 0 and await store.client().zcard(inflight) == 0
    row = index_rows(settings, "SELECT expires_ts FROM file_reservations WHERE id = :id", {"id": rid})
    assert row == [{"expires_ts": renewed}]
    archived = json.loads(show(settings, f"projects/{SLUG}/file_reservations/id-{rid}.json"))
    assert archived["expires_ts"] == renewed


async def _empty(redis: Any, key: str) -> bool:
    return await redis.zcard(key) == 0
