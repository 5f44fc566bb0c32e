"""Realtime benchmark: delivery latency to agents blocked in wait_for_mail.

100 agents wait (each in its own wait_for_mail call, re-armed with the returned cursor); a
sender then sends to each in turn. Latency is from the start of the send_message call to the
return of that agent's wait_for_mail call, so it includes the send itself, the doorbell, the
waiter's stream read and both MCP round trips. Measured in-process (fastmcp's in-memory
transport) and over streamable HTTP against a `broker serve` subprocess. The reference has no
such tool: its agents poll fetch_inbox, so their delivery latency is their polling interval.

Run: make bench   (or: python -m benchmarks.realtime [--agents N] [--rounds N] [--long-wait])
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from benchmarks.common import bench_settings, percentile, redis_url
from broker.config import Settings
from broker.server import build_server

PROJECT = "/bench/realtime"
TARGET_P99_MS = 20.0


class Waiters:
    """One wait_for_mail loop per agent; records when each call returns with mail."""

    def __init__(self, clients: list[Client], names: list[str], cursors: dict[str, str]) -> None:
        self.clients = clients
        self.names = names
        self.cursors = cursors
        self.arrived: dict[str, asyncio.Queue[float]] = {name: asyncio.Queue() for name in names}
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for i, name in enumerate(self.names):
            self.tasks.append(asyncio.create_task(self._loop(self.clients[i % len(self.clients)], name)))

    async def _loop(self, client: Client, name: str) -> None:
        while True:
            args = {"project_key": PROJECT, "agent_name": name, "after_id": self.cursors[name], "timeout_seconds": 60}
            result = await client.call_tool("wait_for_mail", args)
            returned = time.perf_counter()
            self.cursors[name] = result.data["cursor"]
            if result.data["messages"]:
                self.arrived[name].put_nowait(returned)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def setup(client: Client, agents: int) -> tuple[str, list[str], dict[str, str]]:
    await client.call_tool("ensure_project", {"human_key": PROJECT})

    async def register() -> str:
        reg = await client.call_tool("register_agent", {"project_key": PROJECT, "program": "bench", "model": "m"})
        return reg.data["name"]

    sender = await register()
    names = [await register() for _ in range(agents)]
    cursors = {}
    for name in names:
        first = await client.call_tool(
            "wait_for_mail", {"project_key": PROJECT, "agent_name": name, "timeout_seconds": 0}
        )
        cursors[name] = first.data["cursor"]
    return sender, names, cursors


async def measure(
    sender_client: Client, wait_clients: list[Client], agents: int, rounds: int
) -> tuple[list[float], list[float]]:
    """(delivery latencies, send_message call durations) in seconds."""
    sender, names, cursors = await setup(sender_client, agents)
    waiters = Waiters(wait_clients, names, cursors)
    waiters.start()
    await asyncio.sleep(1.0)  # let every agent's call reach the server and block
    deliveries, sends = [], []
    try:
        for round_ in range(rounds + 1):  # round 0 warms up
            for name in names:
                args = {"project_key": PROJECT, "sender_name": sender, "to": [name], "subject": "ping", "body_md": "x"}
                start = time.perf_counter()
                await sender_client.call_tool("send_message", args)
                sent = time.perf_counter()
                returned = await asyncio.wait_for(waiters.arrived[name].get(), 10)
                if round_:
                    deliveries.append(returned - start)
                    sends.append(sent - start)
    finally:
        await waiters.stop()
    return deliveries, sends


def report(label: str, deliveries: list[float], sends: list[float], target: float | None) -> str:
    p50, p99 = percentile(deliveries, 50) * 1e3, percentile(deliveries, 99) * 1e3
    s50 = percentile(sends, 50) * 1e3
    verdict = ""
    if target is not None:
        verdict = f"  (target p99 <= {target:.0f} ms: {'ok' if p99 <= target else 'OVER TARGET'})"
    return f"{label:<30} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  (send_message alone p50 {s50:5.2f} ms){verdict}"


async def in_process(settings: Settings, agents: int, rounds: int) -> tuple[list[float], list[float]]:
    server = build_server(settings)
    try:
        async with Client(server) as sender, Client(server) as waiting:
            return await measure(sender, [waiting], agents, rounds)
    finally:
        await server.store.close()  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def broker_process(url: str, prefix: str, root: Path) -> AsyncIterator[str]:
    """`broker serve` on a free port; yields its MCP URL once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "REDIS_URL": url, "REDIS_KEY_PREFIX": prefix, "STORAGE_ROOT": str(root)}
    env.pop("HTTP_BEARER_TOKEN", None)
    broker = str(Path(sys.executable).with_name("broker"))
    proc = subprocess.Popen([broker, "serve", "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{base}/health/readiness")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield f"{base}/mcp/"
    finally:
        proc.terminate()
        proc.wait(10)


async def over_http(settings: Settings, agents: int, rounds: int, long_wait: bool) -> tuple[list[float], list[float]]:
    prefix = settings.redis_key_prefix + "h"
    async with (
        broker_process(settings.redis_url, prefix, settings.storage_root) as mcp_url,
        contextlib.AsyncExitStack() as stack,
    ):
        # Several HTTP clients share the waiting calls, as several agents' connections would.
        sender = await stack.enter_async_context(Client(StreamableHttpTransport(mcp_url)))
        waiting = [await stack.enter_async_context(Client(StreamableHttpTransport(mcp_url))) for _ in range(4)]
        result = await measure(sender, waiting, agents, rounds)
        if long_wait:
            await check_long_wait(sender)
        return result


async def check_long_wait(client: Client) -> None:
    """A 30 s wait_for_mail over streamable HTTP returns timed_out, not a transport timeout."""
    reg = await client.call_tool("register_agent", {"project_key": PROJECT, "program": "bench", "model": "m"})
    start = time.perf_counter()
    result = await client.call_tool(
        "wait_for_mail", {"project_key": PROJECT, "agent_name": reg.data["name"], "timeout_seconds": 30}
    )
    elapsed = time.perf_counter() - start
    ok = result.data["timed_out"] and 29.5 < elapsed < 35
    print(f"{'30 s wait_for_mail over HTTP':<30} returned timed_out={result.data['timed_out']} after {elapsed:.1f} s "
          f"({'ok' if ok else 'UNEXPECTED'})")  # fmt: skip


async def run(agents: int, rounds: int, long_wait: bool) -> None:
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(url, Path(tmp))
        local = await in_process(settings, agents, rounds)
        print(f"Redis: {source}; {agents} agents waiting, {rounds} sends to each in turn (after a warm-up round)")
        print(report("delivery, in-process", *local, target=TARGET_P99_MS))
        remote = await over_http(settings, agents, rounds, long_wait)
        print(report("delivery, streamable HTTP", *remote, target=None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100, help="agents blocked in wait_for_mail")
    parser.add_argument("--rounds", type=int, default=5, help="sends to each agent (samples = agents x rounds)")
    parser.add_argument("--long-wait", action="store_true", help="also check a 30 s wait over HTTP")
    args = parser.parse_args()
    asyncio.run(run(args.agents, args.rounds, args.long_wait))


if __name__ == "__main__":
    main()
