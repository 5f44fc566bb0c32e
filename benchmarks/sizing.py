"""Sizing benchmark: Redis CPU and memory per message, the figures behind docs/operations.md#sizing.

Sends ``--messages`` messages (a 512-byte body unless ``--body-bytes``, one recipient, between
``--agents`` agents of one project) through ``broker.mail.send.send_message`` (the tool's function and Lua script, without
the MCP layer: this measures Redis, not the caller), ``--in-flight`` at a time, to a throwaway
redis-server, and reports per message:

* Redis CPU: the user + system time of the redis-server process (script, commands, network I/O,
  the persistence queue's calls, everything Redis did for the sends), and the part of it
  ``INFO commandstats`` counts inside the send script (EVALSHA);
* Redis CPU per ``fetch_inbox`` (an agent's 20 newest messages with bodies, ``--fetches`` calls
  through the in-memory FastMCP client, one at a time), for the reads beside the sends;
* Redis memory: the growth of ``used_memory``, first with every message still pending
  persistence (no worker ran), then after a ``broker worker`` process has drained them (what
  stays in Redis for as long as the mail is kept).

Run: python -m benchmarks.sizing [--messages N] [--agents N] [--in-flight N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from fastmcp import Client

from benchmarks.common import bench_settings, machine_load, redis_url
from benchmarks.load import cpu_seconds
from broker.mail import send as mail
from broker.server import build_server
from broker.store.keys import Keys

PROJECT = "/bench/sizing"


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def script_usec(client: redis.Redis) -> tuple[int, int]:
    """(calls, microseconds) of EVALSHA so far."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(stats["calls"]), int(stats["usec"])


def drain(url: str, prefix: str, root: str, pending_key: str, client: redis.Redis) -> float:
    """Run a `broker worker` until the project has nothing pending; returns how long it took."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "PERSIST"))}
    env.update(REDIS_URL=url, REDIS_KEY_PREFIX=prefix, STORAGE_ROOT=root)
    worker = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    start = time.perf_counter()
    try:
        while client.zcard(pending_key) or client.zcard(pending_key + ":inflight"):
            if worker.poll() is not None:
                raise RuntimeError("the worker exited before it drained the project")
            time.sleep(0.2)
        return time.perf_counter() - start
    finally:
        worker.terminate()
        worker.wait(10)


async def run(args: argparse.Namespace) -> None:
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(url, Path(tmp), AGENT_RATE_LIMIT_PER_SECOND=0, PERSISTENCE_WORKER="external")
        server = build_server(settings)
        store = server.store  # type: ignore[attr-defined]
        sync = redis.Redis.from_url(url, decode_responses=True)
        redis_pid = int(sync.info("server")["process_id"])
        async with Client(server) as client:
            await client.call_tool("ensure_project", {"human_key": PROJECT})
            names = []
            for _ in range(args.agents):
                reg = await client.call_tool("register_agent", {"project_key": PROJECT, "program": "b", "model": "m"})
                names.append(reg.data["name"])
            slug = (await client.call_tool("ensure_project", {"human_key": PROJECT})).data["slug"]

        body = "x" * args.body_bytes

        async def send(i: int) -> None:
            sender, recipient = names[i % len(names)], names[(i + 1) % len(names)]
            await mail.send_message(
                store, PROJECT, sender, [recipient], f"sizing benchmark #{i}", body,
                None, None, "normal", False, None, False, None, None,
            )  # fmt: skip

        async def send_all(first: int, count: int) -> None:
            for start in range(first, first + count, args.in_flight):
                await asyncio.gather(*(send(i) for i in range(start, min(start + args.in_flight, first + count))))

        await send_all(0, 500)  # warm up: connections, the script cache, id blocks
        memory_before, script_before = used_memory(sync), script_usec(sync)
        cpu_before, started = cpu_seconds(redis_pid), time.perf_counter()
        await send_all(500, args.messages)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(redis_pid) - cpu_before
        script_after = script_usec(sync)
        calls, usec = script_after[0] - script_before[0], script_after[1] - script_before[1]
        memory_pending = used_memory(sync) - memory_before
        async with Client(server) as client:  # the commonest read: an agent's 20 newest, with bodies
            cpu_before = cpu_seconds(redis_pid)
            for i in range(args.fetches):
                fetch = {"project_key": PROJECT, "agent_name": names[i % len(names)], "include_bodies": True}
                await client.call_tool("fetch_inbox", fetch)
            fetch_cpu = cpu_seconds(redis_pid) - cpu_before
        await server.store.close()  # type: ignore[attr-defined]
        drained = drain(url, settings.redis_key_prefix, tmp, Keys(settings.redis_key_prefix).pending(slug), sync)
        memory_kept = used_memory(sync) - memory_before

    n = args.messages
    print(f"Redis: {source}; {n} messages ({args.body_bytes} B body, 1 recipient) among {args.agents} agents, "
          f"{args.in_flight} in flight, {n / elapsed:.0f} msg/s from one process; {machine_load()}")  # fmt: skip
    print(f"Redis CPU per send: {cpu / n * 1e6:6.1f} us of redis-server process time "
          f"(so at most {n / cpu:,.0f} sends/s per master at 100% of its core); "
          f"inside the send script (EVALSHA, {calls / n:.2f} calls per send): {usec / n:6.1f} us")  # fmt: skip
    print(f"Redis CPU per fetch_inbox (20 newest, with bodies): {fetch_cpu / args.fetches * 1e6:6.1f} us")
    print(
        f"Redis memory per message: {memory_pending / n:6.0f} B while pending persistence, "
        f"{memory_kept / n:6.0f} B once persisted (a broker worker drained them in {drained:.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages sent and measured")
    parser.add_argument("--agents", type=int, default=100, help="agents of the project")
    parser.add_argument("--body-bytes", type=int, default=512, help="size of each message's body_md")
    parser.add_argument("--in-flight", type=int, default=50, help="concurrent sends")
    parser.add_argument("--fetches", type=int, default=2000, help="fetch_inbox calls measured")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
