"""The doorbell subscriber losing its connection on a real Redis (``CLIENT KILL TYPE pubsub`` on a
redis-server of the test's own): waiters and followers catch up from the inbox stream by cursor,
with nothing lost and nothing repeated."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastmcp import Client, FastMCP
from helpers import PROJECT, SLUG, Tools, make_settings
from realtime_helpers import store_of, until, waiting
from shapes import payload

from broker.identity.projects import project_slug
from broker.realtime import arrivals
from broker.server import build_server
from broker.store.embedded import start_redis_server

pytestmark = pytest.mark.integration


@pytest.fixture
async def own_server(tmp_path: Path) -> AsyncIterator[FastMCP]:
    """A broker on a redis-server no other test uses, so killing its pub/sub clients is ours alone."""
    proc, url = start_redis_server(tmp_path / "redis", appendonly=False)
    server = build_server(make_settings(url, tmp_path))
    try:
        yield server
    finally:
        await store_of(server).close()
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def own_tools(own_server: FastMCP) -> AsyncIterator[Tools]:
    async with Client(own_server) as client:
        tools = Tools(client)
        await tools.project()
        for name in ("BlueLake", "GreenCastle"):
            await tools.agent(name)
        yield tools


async def drop_subscriber(server: FastMCP) -> None:
    store = store_of(server)
    assert await store.client().client_kill_filter(_type="pubsub") == 1
    # Nobody hears the project's doorbell until the subscriber is back.
    assert (await store.client().pubsub_shardnumsub(store.keys.doorbell(SLUG)))[0][1] == 0


async def test_waiter_catches_up_after_the_subscriber_is_dropped(own_server: FastMCP, own_tools: Tools) -> None:
    """The doorbell of a send made while the subscriber is down is lost; the waiter still gets
    the message, from the stream, once the subscriber is back."""
    store = store_of(own_server)
    doorbell = store.doorbell
    task = await waiting(own_server, own_tools, agent_name="GreenCastle", timeout_seconds=30)
    await until(lambda: doorbell.subscriptions == 1)
    # Refuse new connections, so the subscriber cannot come back until we allow it (with idle
    # pooled connections opened first for the send).
    await asyncio.gather(*(store.client().ping() for _ in range(8)))
    connected = len(await store.client().client_list())
    await store.client().config_set("maxclients", connected - 1)
    try:
        await drop_subscriber(own_server)
        sent = payload(await own_tools.send("BlueLake", ["GreenCastle"], subject="while dropped"))
        await asyncio.sleep(0.3)  # the subscriber keeps retrying meanwhile
        assert not task.done()  # nothing rang: the doorbell went out to nobody
    finally:
        await store.client().config_set("maxclients", 10000)
    result = await asyncio.wait_for(task, 10)
    assert [m["id"] for m in result["messages"]] == [sent["id"]]
    assert result["timed_out"] is False
    assert doorbell.subscriptions == 2  # it reconnected with back-off and the waiter re-read the stream


async def test_follow_loses_and_repeats_nothing_across_reconnects(own_server: FastMCP, own_tools: Tools) -> None:
    store = store_of(own_server)
    received: list[int] = []
    all_arrived = asyncio.Event()

    async def consume() -> None:
        async for _cursor, item in arrivals.follow(
            store, await project_slug(store, PROJECT), "greencastle", "0-0", False
        ):
            received.append(item["id"])
            if len(received) == 40:
                all_arrived.set()

    consumer = asyncio.create_task(consume())
    await until(lambda: store.doorbell.waiter_count == 1 and store.doorbell.subscriptions == 1)
    sent: list[int] = []
    for round_ in range(4):
        for _ in range(10):
            sent.append(payload(await own_tools.send("BlueLake", ["GreenCastle"]))["id"])
        await drop_subscriber(own_server)
        await until(lambda round_=round_: store.doorbell.subscriptions == round_ + 2, timeout=10)
    await asyncio.wait_for(all_arrived.wait(), 10)
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
    assert received == sent
    assert store.doorbell.waiter_count == 0


async def test_follow_stops_when_a_library_dropped_its_cancellation(own_server: FastMCP, own_tools: Tools) -> None:
    """On Python 3.11, ``asyncio.wait_for`` inside redis-py drops a cancel that lands as a command
    completes (CPython gh-86296): the follower must still stop at its next wait, not wait forever
    (this hung a test teardown, and would keep an SSE follower alive after its client left)."""
    store = store_of(own_server)
    slug = await project_slug(store, PROJECT)

    async def consume() -> None:
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        with contextlib.suppress(asyncio.CancelledError):  # dropped, as the library does;
            await asyncio.sleep(0)  # the task still counts the request
        async for _ in arrivals.follow(store, slug, "greencastle", "0-0", False):
            pass

    consumer = asyncio.create_task(consume())
    done, _ = await asyncio.wait({consumer}, timeout=5)
    assert consumer in done and consumer.cancelled()
    assert store.doorbell.waiter_count == 0
