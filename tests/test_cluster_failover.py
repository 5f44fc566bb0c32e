"""Redis failing under load, as agents see it. A Redis Cluster (three masters, one replica each,
AOF everysec) loses the master of a busy project to SIGKILL and its replica is promoted; a
single redis-server with AOF everysec is SIGKILLed and started again from its files. Meanwhile
agents keep sending, each send retried with its idempotency key until it is acknowledged.

Every failed call must be a coded error that says to retry; the broker recovers without a
restart; no message is doubled and no id reused; an acknowledged message may be missing only
as the Redis setup allows (docs/durability.md#failover): on a failover, what the dead master
acknowledged but had not yet streamed to its replica (replication is asynchronous and the
broker does not WAIT), so only sends acknowledged just before the kill; on a process crash
under everysec, only writes Redis held back during a slow fsync (at most 2 s of them).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from cluster_helpers import QUEUE_URLS, Cluster, Node, start_cluster
from fastmcp import Client, FastMCP
from helpers import Tools, make_settings
from persist_helpers import index_rows
from process_helpers import stop_process
from redis import exceptions
from redis.crc import key_slot

from broker.config import Settings
from broker.persistence.dead_letters import is_transient
from broker.server import build_server
from broker.store.embedded import start_redis_server
from broker.store.errors import unexpected_error
from broker.store.keys import slugify
from workers.runner import PersistenceWorker

LANES = 4
PACE_SECONDS = 0.02  # between one lane's sends: a steady load, under fetch_inbox's 1,000 per page
RECOVERY_SECONDS = 15.0  # kill to sends succeeding again (a promotion takes ~1-4 s here)
SENDER = "BlueLake"
LISTENER = "GreenCastle"
FAST_PERSIST = {"PERSIST_RECONCILE_AGE_SECONDS": 0.5, "PERSIST_RECONCILE_INTERVAL_SECONDS": 0.3}


def recipient(lane: int) -> str:
    return f"lane-{lane}"


def assert_retryable(errors: list[str]) -> None:
    """What a failed call must say during a failover or restart: a coded error, to retry."""
    for text in errors:
        assert text.startswith("CONNECTION_ERROR: Redis is unreachable") and "Retry in a few seconds" in text, text


@dataclass
class Attempt:
    key: str  # the idempotency key, also the subject
    started: float  # time.monotonic()
    ended: float
    message_id: int | None  # set when acknowledged
    error: str | None  # the error text otherwise


@dataclass
class Senders:
    """Agents sending all along through a fault. Each lane sends to its own recipient and retries
    a send that failed with the same idempotency key until it is acknowledged, as a client
    following the error's remedy does; stopping lets each lane finish the send in progress."""

    tools: Tools
    project_key: str
    attempts: list[Attempt] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._lane(lane)) for lane in range(LANES)]

    async def _lane(self, lane: int) -> None:
        n = 0
        while not self._stop.is_set():
            key = f"l{lane}-{n}"
            while not await self._attempt(key, recipient(lane)):
                await asyncio.sleep(0.05)
            n += 1
            await asyncio.sleep(PACE_SECONDS)

    async def _attempt(self, key: str, to: str) -> bool:
        args = {"project_key": self.project_key, "sender_name": SENDER, "to": [to], "subject": key, "body_md": key}
        started = time.monotonic()
        result = await self.tools.client.call_tool(
            "send_message", {**args, "idempotency_key": key}, raise_on_error=False
        )
        ended = time.monotonic()
        if result.is_error:
            self.attempts.append(Attempt(key, started, ended, None, result.content[0].text))
            return False
        self.attempts.append(Attempt(key, started, ended, result.data["deliveries"][0]["payload"]["id"], None))
        return True

    def acknowledged(self) -> dict[str, Attempt]:
        return {a.key: a for a in self.attempts if a.message_id is not None}

    def errors(self) -> list[str]:
        return [a.error for a in self.attempts if a.error is not None]

    async def until_acknowledged_after(self, moment: float, count: int, timeout: float) -> None:
        """Until ``count`` sends that started after ``moment`` are acknowledged."""
        deadline = time.monotonic() + timeout
        while sum(a.started > moment and a.message_id is not None for a in self.attempts) < count:
            assert time.monotonic() < deadline, f"sends did not recover: {self.errors()[-3:]}"
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def held(self) -> list[tuple[str, int]]:
        """(subject, id) of every message in the lanes' inboxes, read as their recipients do."""
        held = []
        for lane in range(LANES):
            held += [
                (m["subject"], m["id"]) for m in await self.tools.inbox(recipient(lane), self.project_key, limit=1000)
            ]
        return held

    def missing(self, held: list[tuple[str, int]]) -> list[Attempt]:
        """The acknowledged sends the recipients do not have, after checking that nothing is
        doubled (retries included), no id was handed out twice, and every message held is the
        one its send acknowledged."""
        acknowledged = self.acknowledged()
        ids = [a.message_id for a in acknowledged.values()]
        assert len(ids) == len(set(ids)), "an id was acknowledged for two sends"
        subjects = [subject for subject, _ in held]
        assert len(subjects) == len(set(subjects)), "a send was delivered twice"
        assert all(acknowledged[subject].message_id == message_id for subject, message_id in held)
        return [a for key, a in acknowledged.items() if key not in set(subjects)]


# -- what a client reads ---------------------------------------------------------------------
# What redis-py's cluster client raises once its retries are spent, as Redis words it
# (redis-py's own texts for the last two).
CLUSTER_OUTAGES = [
    exceptions.ClusterDownError("The cluster is down"),
    exceptions.MasterDownError("Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
    exceptions.TryAgainError("Multiple keys request during rehashing of slot"),
    exceptions.ClusterError("TTL exhausted."),
    exceptions.SlotNotCoveredError('Slot "5" is not covered by the cluster.'),
    exceptions.RedisClusterUnreachableError(
        "Redis Cluster cannot be connected. Please provide at least one reachable node: Error 111"
    ),
    exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:7000. Connection refused."),
    exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
]


@pytest.mark.parametrize("outage", CLUSTER_OUTAGES, ids=lambda e: type(e).__name__)
def test_a_failover_reads_as_a_connection_error_to_retry(outage: Exception) -> None:
    """Not INTERNAL_ERROR "please report this" nor UNHANDLED_EXCEPTION: the client retries, and the
    persistence worker counts no try against the entries of a batch that met it."""
    error = unexpected_error(outage)
    assert_retryable([str(error)])
    assert str(outage) in str(error)
    assert is_transient(outage)


# -- a cluster master killed ----------------------------------------------------------------
@pytest.fixture
def queue_url(tmp_path: Path) -> Iterator[str]:
    proc, url = start_redis_server(tmp_path / "queue", appendonly=False)
    yield url
    stop_process(proc, 5)


@pytest.fixture
def cluster(tmp_path: Path, queue_url: str) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path / "cluster", masters=3, replicas=1, appendonly=True)
    QUEUE_URLS[cluster.seed_url] = queue_url
    try:
        yield cluster
    finally:
        cluster.stop()
        QUEUE_URLS.pop(cluster.seed_url, None)


@pytest.fixture
async def broker(cluster: Cluster, tmp_path: Path) -> AsyncIterator[tuple[FastMCP, Settings]]:
    """A broker and its persistence worker thread, as `broker serve` runs them, from before the fault."""
    settings = make_settings(cluster.seed_url, tmp_path / "root", **FAST_PERSIST)
    server = build_server(settings)
    worker = PersistenceWorker(settings, settings.data_redis_url)
    worker.start_thread()
    yield server, settings
    worker.stop()
    await server.store.close()  # type: ignore[attr-defined]


def slot_of(human_key: str) -> int:
    return key_slot(f"{{{slugify(human_key)}}}".encode())  # every key of a project has its {slug} tag


def project_on(cluster: Cluster, port: int, name: str) -> str:
    """A project key whose slot the node at ``port`` serves."""
    for n in range(10_000):
        if cluster.node_of_slot(slot_of(key := f"/tmp/{name}-{n}")).port == port:
            return key
    raise LookupError(f"no project key hashes to the node at port {port}")


def replica_of(cluster: Cluster, master: Node) -> Node:
    return next(n for n in cluster.nodes if n.client().info("replication").get("master_port") == master.port)


async def promoted(replica: Node) -> float:
    """When the replica took over as a master, by time.monotonic()."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while (await asyncio.to_thread(replica.client().info, "replication"))["role"] != "master":
        assert time.monotonic() < deadline, "the replica was not promoted"
        await asyncio.sleep(0.02)
    return time.monotonic()


async def listen(client: Client, project_key: str) -> tuple[float, dict[str, Any], list[str]]:
    """wait_for_mail for the listener's next message, called again after a coded error: when it
    returned, its result, and the errors met on the way."""
    errors = []
    while True:
        args = {"project_key": project_key, "agent_name": LISTENER, "timeout_seconds": 60}
        result = await client.call_tool("wait_for_mail", args, raise_on_error=False)
        if not result.is_error:
            return time.monotonic(), result.data, errors
        errors.append(result.content[0].text)
        await asyncio.sleep(0.05)


async def read_bystander(client: Client, project_key: str, stop: asyncio.Event) -> tuple[list[str], float]:
    """fetch_inbox on a project of a master that stays up, all along: its errors, slowest call."""
    errors, slowest = [], 0.0
    while not stop.is_set():
        started = time.monotonic()
        args = {"project_key": project_key, "agent_name": SENDER}
        result = await client.call_tool("fetch_inbox", args, raise_on_error=False)
        slowest = max(slowest, time.monotonic() - started)
        if result.is_error:
            errors.append(result.content[0].text)
        await asyncio.sleep(0.05)
    return errors, slowest


@pytest.mark.integration
@pytest.mark.cluster
async def test_a_cluster_master_killed_under_load(cluster: Cluster, broker: tuple[FastMCP, Settings]) -> None:
    server, settings = broker
    # The busy project's master is REDIS_URL's own node (the first of `--cluster create` is a
    # master), the hardest case: every client must find the cluster without its seed.
    victim = cluster.nodes[0]
    project_key = project_on(cluster, victim.port, "busy")
    bystander_key = project_on(cluster, cluster.nodes[1].port, "calm")
    replica = replica_of(cluster, victim)
    async with Client(server) as client:
        tools = Tools(client)
        slug = (await tools.project(project_key))["slug"]
        for name in (SENDER, LISTENER, *(recipient(lane) for lane in range(LANES))):
            await tools.agent(name, project_key)
        await tools.project(bystander_key)
        await tools.agent(SENDER, bystander_key)
        doorbell = server.store.doorbell  # type: ignore[attr-defined]
        listener = asyncio.create_task(listen(client, project_key))
        senders = Senders(tools, project_key)
        calm = asyncio.Event()
        bystander = asyncio.create_task(read_bystander(client, bystander_key, calm))
        try:
            while not (doorbell.waiting(slug, LISTENER.lower()) and doorbell.subscriptions):
                await asyncio.sleep(0.01)  # the listener waits, its project's channel subscribed
            senders.start()
            await senders.until_acknowledged_after(0, 100, 30)

            killed_at = time.monotonic()
            victim.proc.kill()
            promoted_at = await promoted(replica)
            await senders.until_acknowledged_after(promoted_at, 100, RECOVERY_SECONDS)
            sent = await tools.send(SENDER, [LISTENER], project_key, subject="after the failover")
            sent_at = time.monotonic()
            heard_at, heard, listen_errors = await asyncio.wait_for(listener, 15)
        finally:
            await senders.stop()
            calm.set()
            listener.cancel()
        bystander_errors, bystander_slowest = await bystander
        held = await senders.held()
        errors = senders.errors()
        first_after = min(a.ended for a in senders.attempts if a.started > killed_at and a.message_id)
        last_error = max((a.ended for a in senders.attempts if a.error), default=killed_at)
        lost = senders.missing(held)
        print(
            f"failover: {len(senders.acknowledged())} sends acknowledged, {len(errors)} failed calls "
            f"(+{len(bystander_errors)} reads of a project on a live master, slowest {bystander_slowest:.2f} s); "
            f"replica promoted {promoted_at - killed_at:.2f} s after the kill, first send acknowledged after "
            f"{first_after - killed_at:.2f} s, last failure at {last_error - killed_at:.2f} s, slowest send "
            f"{max(a.ended - a.started for a in senders.attempts):.2f} s; {len(lost)} acknowledged sends lost "
            f"{[round(a.ended - killed_at, 3) for a in lost]}; the listener heard mail {heard_at - sent_at:.3f} s "
            f"after its send ({len(listen_errors)} errors)"
        )
        assert_retryable(errors + listen_errors + bystander_errors)
        assert last_error - killed_at < RECOVERY_SECONDS
        # asynchronous replication: only what the dead master acknowledged just before dying
        assert all(killed_at - 1.0 <= a.ended <= promoted_at for a in lost), lost
        # the doorbell followed the project's slot to the promoted replica: the listener heard the
        # mail long before its 60 s timeout (a re-route waits out the subscriber's back-off, <= 3 s)
        assert [m["id"] for m in heard["messages"]] == [sent["deliveries"][0]["payload"]["id"]]
        assert heard_at - sent_at < 10

        # the persistence worker rode the failover out: each message held is indexed once
        expected = {message_id for _, message_id in held}
        deadline = time.monotonic() + 30
        while not expected <= (persisted := indexed(settings, slug)):
            assert time.monotonic() < deadline, f"{len(expected - persisted)} messages not persisted"
            await asyncio.sleep(0.2)
        assert persisted - expected <= {a.message_id for a in lost} | {sent["deliveries"][0]["payload"]["id"]}


def indexed(settings: Settings, slug: str) -> set[int]:
    """Ids of the project's messages in the SQLite index (a primary key: each once)."""
    sql = "SELECT m.id FROM messages m JOIN projects p ON p.id = m.project_id WHERE p.slug = ?"
    try:
        return {row["id"] for row in index_rows(settings, sql, (slug,))}
    except sqlite3.OperationalError:  # the worker has not created the schema yet
        return set()


# -- a single redis-server killed and restarted -----------------------------------------------
@pytest.mark.integration
async def test_a_redis_process_killed_and_restarted_under_everysec(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    proc, url = start_redis_server(data, appendonly=True)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        assert redis.Redis.from_url(url, decode_responses=True).config_get("appendfsync") == {"appendfsync": "everysec"}
        async with Client(build_server(make_settings(url, tmp_path / "root"))) as client:
            tools = Tools(client)
            project_key = "/tmp/restart-under-load"
            await tools.project(project_key)
            for name in (SENDER, *(recipient(lane) for lane in range(LANES))):
                await tools.agent(name, project_key)
            senders = Senders(tools, project_key)
            senders.start()
            try:
                await senders.until_acknowledged_after(0, 50, 30)
                killed_at = time.monotonic()
                proc.kill()  # SIGKILL: no AOF flush, no shutdown
                proc.wait(10)
                proc, _ = start_redis_server(data, port, appendonly=True)  # replays the AOF
                back_at = time.monotonic()
                await senders.until_acknowledged_after(back_at, 50, RECOVERY_SECONDS)
            finally:
                await senders.stop()
            held = await senders.held()
        lost = senders.missing(held)
        errors = senders.errors()
        print(
            f"restart: {len(senders.acknowledged())} sends acknowledged, {len(errors)} failed calls while Redis "
            f"was down ({back_at - killed_at:.2f} s); {len(lost)} acknowledged sends lost"
        )
        assert len(held) >= 100
        assert_retryable(errors)
        # everysec: a crash of the process alone loses only what Redis held back during a slow fsync
        assert all(a.ended >= killed_at - 2.0 for a in lost), lost
    finally:
        stop_process(proc, 5)
