"""Fault tests with real processes on a throwaway redis-server of this module's own:
the worker SIGKILLed mid-batch, Redis flushed and rehydrated, a backlog built while the
worker was down. Each checks what a user would: every message in Git and SQLite exactly once,
every inbox and read/ack state as before."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import redis
from fastmcp import Client
from helpers import PROJECT, Tools
from persist_helpers import (
    committed_files,
    git,
    hold_some,
    index_rows,
    listing,
    mailbox_state,
    persisted_count,
    show,
    write_mail,
)
from process_helpers import stop_process

from broker.config import Settings
from broker.server import build_server
from broker.store.embedded import start_redis_server

pytestmark = pytest.mark.integration
SLUG = "tmp-concurrent-test"


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server only these tests use (they FLUSHALL it), never 127.0.0.1:6379."""
    proc, url = start_redis_server(tmp_path_factory.mktemp("fault-redis"), appendonly=False)
    yield url
    proc.terminate()
    proc.wait(5)


@pytest.fixture
def env(own_redis: str, tmp_path: Path) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "PERSIST_", "HTTP_"))}
    values.update(
        REDIS_URL=own_redis,
        REDIS_KEY_PREFIX=f"f{uuid4().hex[:8]}",
        STORAGE_ROOT=str(tmp_path),
        AGENT_AUTH="open",
        PERSIST_BATCH_SIZE="300",
    )
    return values


@pytest.fixture
async def tools(env: dict[str, str]) -> AsyncIterator[Tools]:
    server = build_server(Settings(**{k: env[k] for k in ("REDIS_URL", "REDIS_KEY_PREFIX", "STORAGE_ROOT")}))
    async with Client(server) as client:
        tools = Tools(client)
        tools.server = server  # type: ignore[attr-defined]
        yield tools


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(**{k: env[k] for k in ("REDIS_URL", "REDIS_KEY_PREFIX", "STORAGE_ROOT")})


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def message_count(settings: Settings) -> int:
    return persisted_count(settings)


async def wait_persisted(settings: Settings, expected: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while message_count(settings) < expected:
        assert time.monotonic() < deadline, f"only {message_count(settings)} of {expected} persisted"
        await asyncio.sleep(0.1)


async def send_many(tools: Tools, count: int) -> list[int]:
    ids: list[int] = []
    for start in range(0, count, 100):
        sent = await asyncio.gather(
            *(
                tools.send("BlueLake", ["GreenCastle"], cc=["alpha-one"], subject=f"m{i}", thread_id="BULK")
                for i in range(start, min(start + 100, count))
            )
        )
        ids += [s["deliveries"][0]["payload"]["id"] for s in sent]
    return ids


def assert_exactly_once(settings: Settings, ids: list[int]) -> None:
    rows = index_rows(settings, "SELECT id FROM messages")
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert index_rows(settings, "SELECT count(*) AS n FROM message_recipients")[0]["n"] == 2 * len(ids)
    assert index_rows(settings, "SELECT count(*) AS n FROM fts_messages")[0]["n"] == len(ids)
    files = committed_files(settings)
    canonical = [f for f in files if f.startswith(f"projects/{SLUG}/messages/2")]
    assert sorted(int(f.rsplit("__", 1)[1][:-3]) for f in canonical) == sorted(ids)
    for copy in ("BlueLake/outbox", "GreenCastle/inbox", "alpha-one/inbox"):
        assert sum(f.startswith(f"projects/{SLUG}/agents/{copy}/") for f in files) == len(ids)
    digest = show(settings, f"projects/{SLUG}/messages/threads/BULK.md")
    assert digest.count("[View canonical]") == len(ids)
    assert git(settings, "fsck", "--no-dangling").strip() == ""  # a killed writer left no damage


async def setup_trio(tools: Tools) -> None:
    await tools.project()
    for name in ("BlueLake", "GreenCastle", "alpha-one"):
        await tools.agent(name)


async def test_worker_killed_mid_batch_loses_and_duplicates_nothing(tools: Tools, env: dict[str, str]) -> None:
    settings = settings_of(env)
    await setup_trio(tools)
    ids = await send_many(tools, 1500)
    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    inflight = tools.server.store.keys.inflight(SLUG)  # type: ignore[attr-defined]

    killed_mid_batch = False
    for _attempt in range(5):  # a kill that lands between two batches does not count: try again
        worker = start_worker(env)
        try:
            # Kill it while a batch is claimed but not finished, after at least one batch landed.
            deadline = time.monotonic() + 60
            while not (client.zcard(inflight) and message_count(settings) > 0):
                assert worker.poll() is None and time.monotonic() < deadline
                await asyncio.sleep(0.002)
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
        finally:
            stop_process(worker)
        if client.zcard(inflight) > 0:
            killed_mid_batch = True
            break
    assert killed_mid_batch and message_count(settings) < len(ids)

    worker = start_worker(env)
    try:
        await wait_persisted(settings, len(ids))
        await asyncio.sleep(0.5)  # let the last batch finish its ZREM
    finally:
        stop_process(worker)
    assert_exactly_once(settings, ids)
    assert client.zcard(inflight) == 0


async def test_backlog_built_while_worker_is_down_all_persists(tools: Tools, env: dict[str, str]) -> None:
    settings = settings_of(env)
    await setup_trio(tools)
    ids = await send_many(tools, 1000)
    assert message_count(settings) == 0
    worker = start_worker(env)
    try:
        await wait_persisted(settings, len(ids))
    finally:
        stop_process(worker)
    assert_exactly_once(settings, ids)


async def test_flushall_then_rehydrate_restores_every_inbox(tools: Tools, env: dict[str, str]) -> None:
    settings = settings_of(env)
    await setup_trio(tools)
    written: dict[str, Any] = await write_mail(tools)
    await hold_some(tools)
    reservations = await listing(tools)
    before = await mailbox_state(tools)
    worker = start_worker(env)
    try:
        await wait_persisted(settings, 8)
        await asyncio.sleep(0.5)
    finally:
        stop_process(worker)
    assert index_rows(settings, "SELECT count(*) AS n FROM message_recipients WHERE ack_ts IS NOT NULL")[0]["n"] == 2
    assert index_rows(settings, "SELECT count(*) AS n FROM file_reservations")[0]["n"] == 4

    redis.Redis.from_url(env["REDIS_URL"]).flushall()
    assert "NOT_FOUND" in await tools.error("fetch_inbox", project_key=PROJECT, agent_name="BlueLake")
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", "rehydrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "rehydrated 1 project(s)" in done.stderr and "3 live file reservations" in done.stderr
    assert await mailbox_state(tools) == before
    assert await listing(tools) == reservations
    again = await tools.call(
        "mark_message_read", project_key=PROJECT, agent_name="alpha-one", message_id=written["ids"][1]
    )
    assert again == written["read"]
    acked = await tools.call(
        "acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=written["ids"][0]
    )
    assert acked == written["acked"]


async def test_two_workers_share_the_work_and_write_each_message_once(tools: Tools, env: dict[str, str]) -> None:
    settings = settings_of(env)
    await setup_trio(tools)
    workers = [start_worker({**env, "PERSIST_BATCH_SIZE": "50"}) for _ in range(2)]
    try:
        ids = await send_many(tools, 600)  # sent while both workers drain
        await wait_persisted(settings, len(ids))
        await asyncio.sleep(0.5)
    finally:
        for worker in workers:
            stop_process(worker)
    assert_exactly_once(settings, ids)
