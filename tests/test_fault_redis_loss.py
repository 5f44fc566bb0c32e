"""Fault test with real processes: the host crashes and Redis comes back from an older AOF
(what `appendfsync everysec` loses, or a failover to a lagging replica), after the worker had
already written the lost writes to SQLite and Git (issue 11 item 8). The broker restarts with
the host; new mail must get ids that were never handed out, the lost agent must register
again, persistence must go on, and after `broker rehydrate --force` every accepted message is
exactly once in Redis, SQLite and Git."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import redis
from fastmcp import Client
from helpers import PROJECT, Tools
from persist_helpers import committed_files, git, index_rows, persisted_count

from broker.config import Settings
from broker.server import build_server
from broker.store.embedded import start_redis_server

pytestmark = pytest.mark.integration
SLUG = "tmp-concurrent-test"


class Host:
    """A redis-server with AOF on a fixed port and data dir, and the environment of a broker
    and `broker worker` that use it."""

    def __init__(self, root: Path) -> None:
        self.data = root / "redis"
        self.proc, self.url = start_redis_server(self.data)  # appendonly yes, everysec
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "PERSIST_", "HTTP_"))}
        self.env.update(
            REDIS_URL=self.url,
            REDIS_KEY_PREFIX=f"f{uuid4().hex[:8]}",
            STORAGE_ROOT=str(root / "storage"),
            AGENT_AUTH="open",
            PERSIST_BATCH_SIZE="100",
        )
        self.settings = Settings(**{k: self.env[k] for k in ("REDIS_URL", "REDIS_KEY_PREFIX", "STORAGE_ROOT")})

    def checkpoint(self) -> Path:
        """A copy of the AOF as it is now: what survives the crash."""
        saved = self.data.parent / "aof-before-crash"
        shutil.copytree(self.data / "appendonlydir", saved)
        return saved

    def crash_and_restart(self, saved: Path) -> None:
        """SIGKILL Redis (the host dies), put the older AOF back, start Redis again."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        shutil.rmtree(self.data / "appendonlydir")
        shutil.copytree(saved, self.data / "appendonlydir")
        self.proc, url = start_redis_server(self.data, self.port)
        assert url == self.url

    def worker(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "worker"], env=self.env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    host = Host(tmp_path)
    yield host
    host.stop()


class Broker:
    """One broker process's life (in this test process): a server and its client."""

    def __init__(self, host: Host) -> None:
        self.server = build_server(host.settings)
        self.client = Client(self.server)

    async def __aenter__(self) -> Tools:
        await self.client.__aenter__()
        return Tools(self.client)

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.__aexit__(*exc)
        await self.server.store.close()  # type: ignore[attr-defined]


async def send(tools: Tools, sender: str, count: int, label: str, **extra: Any) -> list[int]:
    sent = await asyncio.gather(
        *(tools.send(sender, ["GreenCastle"], subject=f"{label} {i}", **extra) for i in range(count))
    )
    return [s["deliveries"][0]["payload"]["id"] for s in sent]


def drained(host: Host, worker: subprocess.Popen[bytes], expected: int, timeout: float = 90) -> None:
    """Wait until the index holds ``expected`` messages and nothing is pending, then stop."""
    client = redis.Redis.from_url(host.url)
    pending = f"{host.env['REDIS_KEY_PREFIX']}:{{{SLUG}}}:pending"
    deadline = time.monotonic() + timeout
    try:
        while persisted_count(host.settings) < expected or client.zcard(pending) or client.zcard(pending + ":inflight"):
            assert worker.poll() is None, worker.stderr.read().decode()[-3000:] if worker.stderr else ""
            assert time.monotonic() < deadline, f"{persisted_count(host.settings)} of {expected} persisted"
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:  # rq's teardown can hang joining its pubsub thread
            worker.kill()
            worker.wait()


async def test_aof_tail_lost_after_persisting_reuses_no_id_and_persistence_goes_on(host: Host) -> None:
    async with Broker(host) as tools:
        await tools.project()
        for name in ("BlueLake", "GreenCastle"):
            await tools.agent(name)
        first = await send(tools, "BlueLake", 256, "first")  # a whole block of ids
        drained(host, host.worker(), len(first))
        saved = host.checkpoint()

        lost_agent = await tools.agent("RedFox")
        lost = await send(tools, "RedFox", 20, "lost") + await send(tools, "BlueLake", 20, "lost cc", cc=["RedFox"])
        drained(host, host.worker(), len(first) + len(lost))  # SQLite and Git hold them
    host.crash_and_restart(saved)

    async with Broker(host) as tools:  # the broker restarted with the host
        assert "NOT_FOUND" in await tools.error("fetch_inbox", project_key=PROJECT, agent_name="RedFox")
        again = await tools.agent("RedFox")
        worker = host.worker()
        later = await send(tools, "RedFox", 20, "later") + await send(tools, "BlueLake", 20, "later cc", cc=["RedFox"])
        accepted = first + lost + later
        assert len(set(accepted)) == len(accepted), "an id was handed out twice"
        assert again["id"] != lost_agent["id"]
        drained(host, worker, len(accepted))

    # SQLite: every message once, the lost agent under its new id with all its mail
    assert sorted(r["id"] for r in index_rows(host.settings, "SELECT id FROM messages")) == sorted(accepted)
    assert index_rows(host.settings, "SELECT id FROM agents WHERE name = 'RedFox'") == [{"id": again["id"]}]
    from_lost = index_rows(host.settings, "SELECT id FROM messages WHERE sender_id = :id", {"id": again["id"]})
    assert sorted(r["id"] for r in from_lost) == sorted(lost[:20] + later[:20])
    cc_rows = index_rows(
        host.settings, "SELECT count(*) AS n FROM message_recipients WHERE agent_id = ?", (again["id"],)
    )
    assert cc_rows == [{"n": 40}]
    # Git: one canonical file per id
    files = committed_files(host.settings)
    canonical = [f for f in files if f.startswith(f"projects/{SLUG}/messages/2")]
    assert sorted(int(f.rsplit("__", 1)[1][:-3]) for f in canonical) == sorted(accepted)
    assert sum(f.startswith(f"projects/{SLUG}/agents/GreenCastle/inbox/") for f in files) == len(accepted)
    assert git(host.settings, "fsck", "--no-dangling").strip() == ""

    # Redis: the lost mail comes back from the index; every message once in every inbox
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", "rehydrate", "--force"], env=host.env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and "rehydrated 1 project(s)" in done.stderr, done.stderr
    client = redis.Redis.from_url(host.url, decode_responses=True)
    prefix = f"{host.env['REDIS_KEY_PREFIX']}:{{{SLUG}}}:"
    inbox = Counter(int(fields["m"]) for _, fields in client.xrange(prefix + "inbox:greencastle"))
    assert sorted(inbox.elements()) == sorted(accepted)
    lost_inbox = Counter(int(fields["m"]) for _, fields in client.xrange(prefix + "inbox:redfox"))
    assert sorted(lost_inbox.elements()) == sorted(lost[20:] + later[20:])
    assert all(client.exists(prefix + f"msg:{i}") for i in accepted)

    async with Broker(host) as tools:  # and the broker works on the rebuilt state
        inbox_now = await tools.inbox("GreenCastle", limit=20)
        assert {m["id"] for m in inbox_now} <= set(accepted)
        more = await send(tools, "RedFox", 5, "after rehydrate")
        assert not set(more) & set(accepted)
