"""Running the broker as users deploy it, with real processes on a throwaway redis-server:
`broker serve` with REDIS_URL persists by itself, a separate `broker worker` shows up in health
(and its death within seconds), readiness can fail on lag or no worker, the port is bound before
anything is announced, health reports the bound address, and no rq worker entry outlives a broker."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastmcp import Client
from fastmcp.client.transports import StdioTransport, StreamableHttpTransport
from helpers import make_settings
from persist_helpers import index_rows, persisted_count
from process_helpers import BROKER, broker_env, serving_at

from broker.store.keys import Keys

pytestmark = pytest.mark.integration


async def call(base: str, tool: str, args: dict[str, Any] | None = None) -> Any:
    async with Client(StreamableHttpTransport(f"{base}/mcp/")) as client:
        return (await client.call_tool(tool, args or {})).structured_content


async def mail(base: str, project: str, subject: str) -> None:
    """Two agents in ``project``; the first mails the second."""
    async with Client(StreamableHttpTransport(f"{base}/mcp/")) as client:
        await client.call_tool("ensure_project", {"human_key": project})
        for name in ("BlueLake", "GreenCastle"):
            await client.call_tool(
                "register_agent", {"project_key": project, "program": "p", "model": "m", "name": name}
            )
        await client.call_tool(
            "send_message",
            {"project_key": project, "sender_name": "BlueLake", "to": ["GreenCastle"], "subject": subject,
             "body_md": "persisted without broker worker"},
        )  # fmt: skip


async def wait_for(predicate: Any, what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await predicate()):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)
    return value


@contextmanager
def worker_process(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([BROKER, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def test_serve_with_redis_url_persists_in_process(redis_url: str, tmp_path: Path) -> None:
    env = broker_env(redis_url, tmp_path)
    settings = make_settings(redis_url, tmp_path)
    with serving_at(env) as base:
        await mail(base, "/srv/ops", "reaches the index")
        await wait_for(lambda: asyncio.to_thread(persisted_count, settings), "serve did not persist the message")
        found = await call(
            base, "search_messages", {"project_key": "/srv/ops", "query": "persisted", "agent_name": "GreenCastle"}
        )
        assert [m["subject"] for m in found["result"]] == ["reaches the index"]
        health = await call(base, "health_check")
    assert index_rows(settings, "SELECT subject FROM messages") == [{"subject": "reaches the index"}]
    persistence = health["persistence"]
    assert persistence["mode"] == "inprocess"
    assert persistence["workers_alive"] == 1
    assert (persistence["pending"], persistence["in_flight"], persistence["dead_letters"]) == (0, 0, 0)
    assert persistence["projects_examined"] == persistence["projects_total"] == 1


async def test_external_worker_death_shows_in_health_within_seconds(redis_url: str, tmp_path: Path) -> None:
    env = broker_env(
        redis_url, tmp_path, PERSISTENCE_WORKER="external", READINESS_REQUIRE_PERSIST_WORKER="true",
        READINESS_MAX_PERSIST_LAG_SECONDS="2", PERSIST_WORKER_HEARTBEAT_SECONDS="1",
    )  # fmt: skip
    settings = make_settings(redis_url, tmp_path)
    with serving_at(env) as base:
        # No worker: nothing is persisted, readiness says so, and so does health.
        await mail(base, "/srv/ext", "waits for a worker")
        await asyncio.sleep(2.5)
        assert persisted_count(settings) == 0
        ready = httpx.get(f"{base}/health/readiness")
        assert ready.status_code == 503
        assert "no persistence worker is alive" in ready.json()["detail"]
        assert "persistence lags" in ready.json()["detail"]
        state = (await call(base, "health_check"))["persistence"]
        assert (state["mode"], state["workers_alive"]) == ("external", 0)
        assert state["pending"] >= 1 and state["oldest_pending_age_seconds"] >= 2

        with worker_process(env) as worker:
            await wait_for(lambda: asyncio.to_thread(persisted_count, settings), "broker worker did not persist")
            await wait_for(
                lambda: asyncio.to_thread(lambda: httpx.get(f"{base}/health/readiness").status_code == 200),
                "readiness stayed 503 with a live worker and nothing pending",
            )
            state = (await call(base, "health_check"))["persistence"]
            assert state["workers_alive"] == 1 and state["workers"][0]["pid"] == worker.pid
            assert state["pending"] == 0 and state["oldest_pending_age_seconds"] is None

            worker.send_signal(signal.SIGKILL)
            worker.wait(5)
            killed = time.monotonic()

            async def gone() -> bool:
                return (await call(base, "health_check"))["persistence"]["workers_alive"] == 0

            await wait_for(gone, "a SIGKILLed worker still counts as alive", timeout=10)
            noticed = time.monotonic() - killed
        state = (await call(base, "health_check"))["persistence"]
        assert state["stale_worker_entries"] == 1  # rq's entry is still there; it is not counted alive
        assert httpx.get(f"{base}/health/readiness").status_code == 503
    assert noticed < 6, noticed


def test_busy_port_fails_before_announcing(redis_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [BROKER, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=broker_env(redis_url, tmp_path), capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert done.returncode == 1
    assert "serving MCP" not in done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "persistence worker" not in done.stderr  # nothing started before the bind


async def test_health_check_reports_the_bound_address(redis_url: str, tmp_path: Path) -> None:
    env = broker_env(redis_url, tmp_path, HTTP_HOST="localhost", HTTP_PORT="1")
    with serving_at(env) as base:
        health = await call(base, "health_check")
    assert (health["http_host"], health["http_port"]) == ("127.0.0.1", int(base.rsplit(":", 1)[1]))


def registered(redis_url: str, env: dict[str, str]) -> set[bytes]:
    return redis.Redis.from_url(redis_url).smembers(Keys(env["REDIS_KEY_PREFIX"]).persist_workers)


async def test_brokers_leave_no_rq_worker_entry(redis_url: str, tmp_path: Path) -> None:
    env = broker_env(redis_url, tmp_path)
    stdio = StdioTransport(BROKER, ["serve", "--transport", "stdio"], env=env, keep_alive=False)
    async with Client(stdio) as client:  # closing it closes the broker's stdin
        await wait_for(lambda: asyncio.to_thread(registered, redis_url, env), "stdio broker runs no worker")
        assert (await client.call_tool("health_check", {})).data["persistence"]["workers_alive"] == 1
    await wait_for(lambda: asyncio.to_thread(lambda: not registered(redis_url, env)), "stdio left an entry", 10)

    with serving_at(env):  # HTTP, stopped with SIGTERM
        await wait_for(lambda: asyncio.to_thread(registered, redis_url, env), "HTTP broker runs no worker")
    assert not registered(redis_url, env)


def test_start_up_says_who_persists(redis_url: str, tmp_path: Path) -> None:
    """The start-up lines name the persistence mode and, when a separate worker should run but
    none does, warn that nothing reaches the archive or index (stdio; stdin closed at once)."""

    def start(**extra: str) -> str:
        env = broker_env(redis_url, tmp_path, **extra)
        command = [BROKER, "serve", "--transport", "stdio"]
        return subprocess.run(command, env=env, input="", capture_output=True, text=True, timeout=30).stderr

    external = start(PERSISTENCE_WORKER="external")
    assert "persistence worker: external" in external
    assert "0 worker(s) alive on queue" in external
    assert "warning: no `broker worker` is alive" in external
    inprocess = start()
    assert "persistence worker: in-process" in inprocess
    assert "warning" not in inprocess
