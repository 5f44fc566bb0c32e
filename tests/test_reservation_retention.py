"""Ended file reservations do not pile up: past FILE_RESERVATION_RETENTION_SECONDS, and once the
persistence worker has stored them, reserve and release calls forget them from Redis (a few per
call); listings of ended ones are bounded by ``limit``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, drop_prefix, make_settings, real_redis_only
from persist_helpers import index_rows, reserve

from broker.config import Settings
from broker.persistence.drain import Persister
from broker.server import build_server
from broker.store.clients import make_sync_client

SLUG = "tmp-concurrent-test"


@pytest.fixture
async def retained(backend: str, tmp_path: Path) -> AsyncIterator[tuple[Tools, FastMCP, Settings]]:
    settings = make_settings(backend, tmp_path, FILE_RESERVATION_MIN_TTL_SECONDS=1)
    # One second instead of the smallest allowed 60, so the test need not wait a minute.
    settings.file_reservation_retention_seconds = 1
    mcp = build_server(settings)
    try:
        async with Client(mcp) as client:
            tools = Tools(client)
            await tools.project()
            for name in ("BlueLake", "GreenCastle"):
                await tools.agent(name)
            yield tools, mcp, settings
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def release(tools: Tools, agent: str, **extra: Any) -> dict[str, Any]:
    return await tools.call("release_file_reservations", project_key=PROJECT, agent_name=agent, **extra)


async def test_ended_reservations_are_forgotten_once_retained_and_persisted(retained: Any) -> None:
    tools, mcp, settings = retained
    redis, keys = mcp.store.client(), mcp.store.keys
    old = [g["id"] for g in (await reserve(tools, "BlueLake", [f"old/{i}.py" for i in range(20)]))["granted"]]
    await release(tools, "BlueLake")
    await asyncio.sleep(1.1)
    # Past their retention, but the worker has not stored them yet: nothing is forgotten.
    await reserve(tools, "GreenCastle", ["a.py"])
    assert await redis.zcard(keys.reservation_all(SLUG)) == 21
    assert await redis.exists(*(keys.reservation(SLUG, i) for i in old)) == 20
    await asyncio.to_thread(Persister(settings, make_sync_client(mcp.store.redis_url)).drain, SLUG)
    # Stored now: the next reservation call forgets them, in Redis only.
    await reserve(tools, "GreenCastle", ["b.py"])
    assert await redis.zcard(keys.reservation_all(SLUG)) == 2
    assert await redis.exists(*(keys.reservation(SLUG, i) for i in old)) == 0
    assert await redis.zcard(keys.reservation_ended(SLUG)) == 0
    rows = {r["id"]: r["released_ts"] for r in index_rows(settings, "SELECT id, released_ts FROM file_reservations")}
    assert all(rows[i] for i in old)  # the index keeps them, released
    # The live ones are untouched.
    listed = json.loads((await tools.client.read_resource(f"resource://file_reservations/{SLUG}"))[0].text)
    assert [r["path_pattern"] for r in listed] == ["a.py", "b.py"]


@real_redis_only
async def test_reserve_and_release_cycles_keep_redis_bounded(retained: Any) -> None:
    """Agents that reserve and release over and over (the load test's pattern) leave only the
    reservations of the last retention period in Redis."""
    tools, mcp, settings = retained
    redis, keys = mcp.store.client(), mcp.store.keys
    persister = Persister(settings, make_sync_client(mcp.store.redis_url))  # the worker's drain, run here
    for cycle in range(4):
        await reserve(tools, "BlueLake", [f"c{cycle}/{i}.py" for i in range(30)])
        await release(tools, "BlueLake")
        await asyncio.to_thread(persister.drain, SLUG)
        await asyncio.sleep(1.05)
    await release(tools, "GreenCastle")  # releases nothing; still forgets up to 8
    await release(tools, "GreenCastle")
    await release(tools, "GreenCastle")
    await release(tools, "GreenCastle")
    assert await redis.zcard(keys.reservation_all(SLUG)) == 0
    assert len(index_rows(settings, "SELECT id FROM file_reservations")) == 120


async def test_listing_ended_reservations_is_bounded_by_limit(retained: Any) -> None:
    tools, mcp, _ = retained
    mcp.store.settings.file_reservation_retention_seconds = 3600
    live = [g["id"] for g in (await reserve(tools, "GreenCastle", ["x.py", "y.py", "z.py"]))["granted"]]
    ids = [g["id"] for g in (await reserve(tools, "BlueLake", [f"e/{i}.py" for i in range(30)]))["granted"]]
    for start in range(0, 30, 5):
        await release(tools, "BlueLake", file_reservation_ids=ids[start : start + 5])
        await asyncio.sleep(0.002)

    async def listed(query: str) -> list[int]:
        rows = json.loads((await tools.client.read_resource(f"resource://file_reservations/{SLUG}{query}"))[0].text)
        return [r["id"] for r in rows]

    assert await listed("?active_only=false&limit=5") == sorted(live + ids[25:])  # the 5 ended last, oldest first
    assert await listed("?active_only=false") == sorted(live + ids)  # default limit 100
    assert await listed("?limit=1") == live  # limit bounds ended ones only
    for bad in ("0", "1001", "x"):
        with pytest.raises(Exception, match="INVALID_LIMIT"):
            await listed(f"?active_only=false&limit={bad}")


async def test_a_dead_lettered_reservation_is_not_forgotten_before_it_is_persisted(retained: Any) -> None:
    """Pruning skipped entries waiting in pending or in flight, not dead letters: a reservation
    whose write failed until it was dead-lettered was forgotten once past its retention, and the
    retry after the fix found no record to write: it never reached SQLite or Git."""
    import sqlite3

    from broker.persistence.dead_letters import retry_dead_letters
    from broker.persistence.index import Index

    tools, mcp, settings = retained
    keys = mcp.store.keys
    Index(settings.index_path).ensure_schema()
    with sqlite3.connect(settings.index_path) as db:
        db.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON file_reservations WHEN NEW.path_pattern = 'poison.py' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
        )
    [granted] = (await reserve(tools, "BlueLake", ["poison.py"], ttl_seconds=1))["granted"]
    tuned = settings.model_copy(update={"persist_max_attempts": 1})
    persister = Persister(tuned, make_sync_client(mcp.store.redis_url))
    assert (await asyncio.to_thread(persister.drain, SLUG)).dead_lettered == 1

    await asyncio.sleep(2.2)  # expired, and past its retention
    await reserve(tools, "GreenCastle", ["a.py"])
    await reserve(tools, "GreenCastle", ["b.py"])

    with sqlite3.connect(settings.index_path) as db:
        db.execute("DROP TRIGGER poison")
    assert await asyncio.to_thread(retry_dead_letters, persister.connection, keys, SLUG) == [f"res:{granted['id']}"]
    await asyncio.to_thread(persister.drain, SLUG)
    rows = index_rows(settings, "SELECT path_pattern FROM file_reservations WHERE id = :id", {"id": granted["id"]})
    assert rows == [{"path_pattern": "poison.py"}]
