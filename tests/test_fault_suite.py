"""The fault suite: real processes, each test on a redis-server of its own that it kills and
restarts, while agents keep sending. The worker SIGKILLed mid-batch; Redis SIGKILLed (AOF with
``appendfsync always``, so every send that returned is on disk: deterministic); Redis down for
5 s under a running ``broker worker`` and under the in-process worker of ``broker serve``; a
poison entry. Each ends with every accepted message exactly once in Redis (its record and its
inbox entry), in SQLite and in Git. Redis is the truth: a send cut off by the kill may have
landed without its caller hearing so; it must then be persisted once as well."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
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
from persist_helpers import committed_files, git, index_rows, show
from rq.registry import FailedJobRegistry

from broker.config import Settings
from broker.persistence.dead_letters import dead_letter_summary
from broker.persistence.index import Index
from broker.server import build_server
from broker.store.embedded import start_redis_server
from broker.store.keys import Keys
from workers.runner import PersistenceWorker

pytestmark = pytest.mark.integration
SLUG = "tmp-concurrent-test"
DEADLINE = 60.0


class RedisProcess:
    """A redis-server with AOF (fsync on every write) on a fixed port, so it can be killed and
    started again from its own files at the same address."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc, self.url = start_redis_server(data_dir, appendonly=True)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        self._fsync_always()

    def _fsync_always(self) -> None:
        redis.Redis.from_url(self.url).config_set("appendfsync", "always")

    def kill(self, signum: int = signal.SIGKILL) -> None:
        self.proc.send_signal(signum)
        self.proc.wait(10)

    def start(self) -> None:
        self.proc, _ = start_redis_server(self.data_dir, self.port, appendonly=True)
        self._fsync_always()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def env(redis_proc: RedisProcess, tmp_path: Path) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "PERSIST_", "HTTP_", "WORKER_"))}
    values.update(
        REDIS_URL=redis_proc.url,
        REDIS_KEY_PREFIX=f"s{uuid4().hex[:8]}",
        STORAGE_ROOT=str(tmp_path / "root"),
        AGENT_AUTH="open",
        PERSIST_BATCH_SIZE="50",
        # a fast safety net, so the suite polls for seconds rather than the defaults' tens
        PERSIST_RECONCILE_AGE_SECONDS="0.5",
        PERSIST_RECONCILE_INTERVAL_SECONDS="0.3",
        WORKER_RECONNECT_MAX_SECONDS="1",
        PERSIST_MAX_ATTEMPTS="3",
        PERSIST_RETRY_BASE_SECONDS="0.2",
    )
    return values


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(**{k: v for k, v in env.items() if k.startswith(("REDIS_", "STORAGE_", "PERSIST_", "WORKER_"))})


@pytest.fixture
async def tools(env: dict[str, str]) -> AsyncIterator[Tools]:
    async with Client(build_server(settings_of(env))) as client:
        tools = Tools(client)
        await tools.project()
        for name in ("BlueLake", "GreenCastle"):
            await tools.agent(name)
        yield tools


class Worker:
    """``broker worker`` as a child process, its log in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "broker.cli", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=handle
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it: it must exit promptly, outage or not."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("broker worker did not exit within 8 s of SIGTERM") from None


class Senders:
    """Agents sending all along, through a fault: the ids of the sends that returned."""

    def __init__(self, tools: Tools, subject: str = "m") -> None:
        self.tools, self.subject = tools, subject
        self.accepted: list[int] = []
        self.failed = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _loop(self, lane: int) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                sent = await asyncio.wait_for(
                    self.tools.send("BlueLake", ["GreenCastle"], subject=f"{self.subject}{lane}-{i}", thread_id="BULK"),
                    5,
                )
                self.accepted.append(sent["deliveries"][0]["payload"]["id"])
            except Exception:  # Redis is away: not accepted, try the next one shortly
                self.failed += 1
                await asyncio.sleep(0.05)
            i += 1

    def start(self, lanes: int = 4) -> None:
        self._tasks = [asyncio.create_task(self._loop(lane)) for lane in range(lanes)]

    async def until(self, count: int) -> None:
        """Wait until ``count`` more sends are accepted."""
        target, deadline = len(self.accepted) + count, time.monotonic() + DEADLINE
        while len(self.accepted) < target:
            assert time.monotonic() < deadline, f"sends stalled at {len(self.accepted)} ({self.failed} failed)"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


# -- what a user checks at the end --------------------------------------------------------
def redis_ids(env: dict[str, str]) -> list[int]:
    """Messages Redis holds (records), checked against the recipient's inbox: once each."""
    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    keys = Keys(env["REDIS_KEY_PREFIX"])
    # a set: SCAN may return a key twice
    records = sorted({int(k.rsplit(":", 1)[1]) for k in client.scan_iter(match=keys.message(SLUG, 0)[:-1] + "*")})
    inbox = sorted(int(fields["m"]) for _, fields in client.xrange(keys.inbox(SLUG, "GreenCastle")))
    assert inbox == records  # every message in the inbox exactly once
    return records


def index_ids(settings: Settings) -> list[int]:
    try:
        return sorted(r["id"] for r in index_rows(settings, "SELECT id FROM messages"))
    except sqlite3.OperationalError:  # the worker has not created the schema yet
        return []


def drained(env: dict[str, str]) -> bool:
    client = redis.Redis.from_url(env["REDIS_URL"])
    keys = Keys(env["REDIS_KEY_PREFIX"])
    return not client.zcard(keys.pending(SLUG)) and not client.zcard(keys.inflight(SLUG))


async def wait_persisted(env: dict[str, str], excluding: set[int] = frozenset()) -> list[int]:  # type: ignore[assignment]
    """Wait until SQLite holds every message Redis holds (but ``excluding``) and nothing is
    pending or in flight; returns Redis's ids."""
    settings, deadline = settings_of(env), time.monotonic() + DEADLINE
    while True:
        expected = sorted(set(redis_ids(env)) - excluding)
        if index_ids(settings) == expected and drained(env):
            return expected
        assert time.monotonic() < deadline, f"{len(index_ids(settings))} of {len(expected)} persisted"
        await asyncio.sleep(0.1)


def assert_exactly_once(env: dict[str, str], accepted: list[int]) -> None:
    settings = settings_of(env)
    held = redis_ids(env)
    assert len(accepted) == len(set(accepted)) and set(accepted) <= set(held)  # no accepted send lost
    assert index_ids(settings) == held
    assert index_rows(settings, "SELECT count(*) AS n FROM message_recipients")[0]["n"] == len(held)
    assert index_rows(settings, "SELECT count(*) AS n FROM fts_messages")[0]["n"] == len(held)
    files = committed_files(settings)
    canonical = [f for f in files if f.startswith(f"projects/{SLUG}/messages/2")]
    assert sorted(int(f.rsplit("__", 1)[1][:-3]) for f in canonical) == held
    for copy in ("BlueLake/outbox", "GreenCastle/inbox"):
        assert sum(f.startswith(f"projects/{SLUG}/agents/{copy}/") for f in files) == len(held)
    assert show(settings, f"projects/{SLUG}/messages/threads/BULK.md").count("[View canonical]") == len(held)
    assert git(settings, "fsck", "--no-dangling").strip() == ""


# -- the faults ---------------------------------------------------------------------------
async def test_worker_sigkilled_mid_batch_while_agents_send(tools: Tools, env: dict[str, str], tmp_path: Path) -> None:
    client = redis.Redis.from_url(env["REDIS_URL"])
    inflight = Keys(env["REDIS_KEY_PREFIX"]).inflight(SLUG)
    senders = Senders(tools)
    senders.start()
    killed_mid_batch = False
    try:
        for _attempt in range(10):  # a kill landing between two batches does not count: again
            worker = Worker(env, tmp_path / "worker.log")
            deadline = time.monotonic() + DEADLINE
            while not (client.zcard(inflight) and index_ids(settings_of(env))):
                assert worker.alive() and time.monotonic() < deadline
                await asyncio.sleep(0.002)
            worker.kill()
            if client.zcard(inflight):
                killed_mid_batch = True
                break
        assert killed_mid_batch
        worker = Worker(env, tmp_path / "worker.log")
        await senders.until(100)
    finally:
        await senders.stop()
    try:
        await wait_persisted(env)
    finally:
        worker.stop()
    assert_exactly_once(env, senders.accepted)


async def test_redis_sigkilled_keeps_every_accepted_send(
    tools: Tools, env: dict[str, str], redis_proc: RedisProcess, tmp_path: Path
) -> None:
    worker = Worker(env, tmp_path / "worker.log")
    senders = Senders(tools)
    senders.start()
    try:
        await senders.until(200)
        redis_proc.kill(signal.SIGKILL)  # mid-send and, likely, mid-batch
        lost_at = len(senders.accepted)
        await asyncio.sleep(0.5)
        redis_proc.start()  # from its AOF
        await senders.until(200)
    finally:
        await senders.stop()
    try:
        await wait_persisted(env)
        assert worker.alive()  # it rode out the crash: nobody restarted it
    finally:
        worker.stop()
    assert lost_at > 0 and senders.failed > 0
    assert_exactly_once(env, senders.accepted)


@pytest.mark.parametrize("where", ["broker worker", "in-process"])
async def test_redis_down_five_seconds_the_worker_resumes_by_itself(
    tools: Tools, env: dict[str, str], redis_proc: RedisProcess, tmp_path: Path, where: str
) -> None:
    if where == "broker worker":
        worker: Any = Worker(env, tmp_path / "worker.log")
    else:  # as `broker serve` runs it: a thread of the server process
        worker = PersistenceWorker(settings_of(env), env["REDIS_URL"])
        thread = worker.start_thread()
    senders = Senders(tools)
    senders.start()
    try:
        await senders.until(100)
        redis_proc.kill(signal.SIGTERM)  # a clean shutdown: AOF flushed
        down_at = time.monotonic()
        await asyncio.sleep(5)
        redis_proc.start()
        await senders.until(100)  # sent after the outage: only a resumed worker persists them
        assert time.monotonic() - down_at < 5 + DEADLINE
    finally:
        await senders.stop()
    try:
        await wait_persisted(env)
        assert worker.alive() if where == "broker worker" else thread.is_alive()
    finally:
        worker.stop()
    if where == "in-process":  # and it stops when asked (a server shutting down)
        await asyncio.to_thread(thread.join, 15)
        assert not thread.is_alive()
    assert_exactly_once(env, senders.accepted)


async def test_poison_entry_is_dead_lettered_the_rest_persists_and_retry_writes_it(
    tools: Tools, env: dict[str, str], tmp_path: Path
) -> None:
    settings = settings_of(env)
    Index(settings.index_path).ensure_schema()
    with sqlite3.connect(settings.index_path) as db:  # SQLite refuses this one message's row
        db.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.subject = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
        )
    worker = Worker(env, tmp_path / "worker.log")
    senders = Senders(tools)
    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    keys = Keys(env["REDIS_KEY_PREFIX"])
    try:
        senders.start()
        await senders.until(50)
        bad = (await tools.send("BlueLake", ["GreenCastle"], subject="poison", thread_id="BULK"))["deliveries"][0]
        bad_id = bad["payload"]["id"]
        await senders.until(200)
        await senders.stop()
        await wait_persisted(env, excluding={bad_id})  # the rest of the project persisted
        deadline = time.monotonic() + DEADLINE
        while dead_letter_summary(client, keys).count < 1:
            assert time.monotonic() < deadline, "never dead-lettered"
            await asyncio.sleep(0.1)
        summary = dead_letter_summary(client, keys)
        assert summary.count == 1 and summary.projects == {SLUG: 1}

        cli = [sys.executable, "-m", "broker.cli", "dead-letters"]
        listed = subprocess.run([*cli, "list", "--project", PROJECT], env=env, capture_output=True, text=True)
        assert listed.returncode == 0, listed.stderr
        assert f"{SLUG}\tmsg:{bad_id}\t" in listed.stdout and "3 tries" in listed.stdout
        assert "poisoned row" in listed.stdout
        await asyncio.sleep(1)  # parked: tried no more, nothing piles up meanwhile
        assert len(FailedJobRegistry(keys.persist_queue, connection=redis.Redis.from_url(env["REDIS_URL"]))) == 0
        # no flood: a few warnings for the tries and the dead letter, no traceback per try
        log_lines = [line for line in (tmp_path / "worker.log").read_text().splitlines() if " INFO " not in line]
        assert len(log_lines) < 10, "\n".join(log_lines[-20:])

        with sqlite3.connect(settings.index_path) as db:  # the cause fixed
            db.execute("DROP TRIGGER poison")
        retried = subprocess.run([*cli, "retry", "--project", PROJECT], env=env, capture_output=True, text=True)
        assert retried.returncode == 0 and "1 dead letter(s) back in pending" in retried.stderr, retried.stderr
        await wait_persisted(env)
    finally:
        await senders.stop()
        worker.stop()
    assert dead_letter_summary(client, keys).count == 0
    assert_exactly_once(env, [*senders.accepted, bad_id])


async def test_steady_sends_keep_the_drain_queue_short(tools: Tools, env: dict[str, str], tmp_path: Path) -> None:
    """Not a fault, but what made rq's keys grow without bound: under steady sends each drain
    ran several batches and each batch's claim let the next send enqueue one more job."""
    queue_len = redis.Redis.from_url(env["REDIS_URL"]).llen
    queue_key = f"rq:queue:{Keys(env['REDIS_KEY_PREFIX']).persist_queue}"
    worker = Worker({**env, "PERSIST_BATCH_SIZE": "10"}, tmp_path / "worker.log")
    senders = Senders(tools)
    senders.start(lanes=6)
    longest = 0
    try:
        await senders.until(50)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            longest = max(longest, queue_len(queue_key))
            await asyncio.sleep(0.05)
    finally:
        await senders.stop()
    try:
        await wait_persisted(env)
    finally:
        worker.stop()
    assert longest <= 3, f"{longest} drain jobs queued for one project"
    assert_exactly_once(env, senders.accepted)
