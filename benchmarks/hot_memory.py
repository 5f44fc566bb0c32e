"""Hot-window benchmark: Redis memory stays flat as the history grows (issue 19).

Sends messages (a 600-byte body unless ``--body-bytes``, one recipient, round robin between
``--agents`` agents of one project) through ``broker.mail.send.send_message`` (the tool's
function and Lua script, without the MCP layer), ``--in-flight`` at a time, to a throwaway
redis-server, while a ``broker worker`` process persists them and runs the hot-window trimmer
every ``--trim-interval`` seconds with HOT_INBOX_MAX_MESSAGES = ``--cap``. At each checkpoint
(``--checkpoints``, messages sent so far) it waits until the worker has persisted everything
and the trimmer has brought every stream back to the cap, then reads Redis ``used_memory``.

With 10 agents and a cap of 1,000, 10,000 messages fill every inbox and outbox exactly to the
cap; every message after that is past the window. The figure that matters is the growth per
message between the first checkpoint and the last (goal: at most 100 bytes; what the trimmer
leaves per message is 0 bytes, so what remains is allocator noise and the queue).

Run: python -m benchmarks.hot_memory [--checkpoints 10000,100000] [--agents 10] [--cap 1000]
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

from benchmarks.common import bench_settings, machine_load, percentile, redis_url
from broker.mail import send as mail
from broker.server import build_server
from broker.store.keys import Keys

PROJECT = "/bench/hot-memory"


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def start_worker(url: str, prefix: str, root: str, cap: int, interval: float) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "PERSIST", "HOT_"))}
    env.update(
        REDIS_URL=url,
        REDIS_KEY_PREFIX=prefix,
        STORAGE_ROOT=root,
        HOT_INBOX_MAX_MESSAGES=str(cap),
        HOT_TRIM_INTERVAL_SECONDS=str(interval),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def settle(client: redis.Redis, keys: Keys, slug: str, streams: list[str], cap: int, worker: subprocess.Popen) -> float:
    """Wait until nothing is pending and every stream is back at the cap; returns the wait."""
    start = time.perf_counter()
    while True:
        if worker.poll() is not None:
            raise RuntimeError("the worker exited")
        pipe = client.pipeline(transaction=False)
        pipe.zcard(keys.pending(slug))
        pipe.zcard(keys.inflight(slug))
        for stream in streams:
            pipe.xlen(stream)
        pending, inflight, *lengths = pipe.execute()
        if not pending and not inflight and max(lengths) <= cap:
            return time.perf_counter() - start
        time.sleep(0.5)


async def run(args: argparse.Namespace) -> None:
    checkpoints = sorted(int(n) for n in args.checkpoints.split(","))
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(
            url,
            Path(tmp),
            AGENT_RATE_LIMIT_PER_SECOND=0,
            PERSISTENCE_WORKER="external",
            HOT_INBOX_MAX_MESSAGES=args.cap,
        )
        server = build_server(settings)
        store = server.store  # type: ignore[attr-defined]
        keys = store.keys
        sync = redis.Redis.from_url(url, decode_responses=True)
        async with Client(server) as client:
            slug = (await client.call_tool("ensure_project", {"human_key": PROJECT})).data["slug"]
            names = []
            for _ in range(args.agents):
                reg = await client.call_tool("register_agent", {"project_key": PROJECT, "program": "b", "model": "m"})
                names.append(reg.data["name"])
        streams = [key for name in names for key in (keys.inbox(slug, name), keys.outbox(slug, name))]
        body = "x" * args.body_bytes
        latencies: list[float] = []

        async def send(i: int) -> None:
            sender, recipient = names[i % len(names)], names[(i + 1) % len(names)]
            started = time.perf_counter()
            await mail.send_message(
                store, PROJECT, sender, [recipient], f"hot window benchmark #{i}", body,
                None, None, "normal", False, None, False, None, None,
            )  # fmt: skip
            latencies.append(time.perf_counter() - started)

        baseline = used_memory(sync)
        worker = start_worker(url, settings.redis_key_prefix, tmp, args.cap, args.trim_interval)
        rows = []
        try:
            sent, started = 0, time.perf_counter()
            for target in checkpoints:
                for start in range(sent, target, args.in_flight):
                    await asyncio.gather(*(send(i) for i in range(start, min(start + args.in_flight, target))))
                sent = target
                waited = await asyncio.to_thread(settle, sync, keys, slug, streams, args.cap, worker)
                hot = sum(sync.xlen(k) for k in streams if "inbox:" in k)
                rows.append((target, used_memory(sync) - baseline, hot, waited, time.perf_counter() - started))
        finally:
            worker.terminate()
            worker.wait(10)
            cold = sync.hgetall(keys.cold(slug))
            await store.close()

    print(
        f"Redis: {source}; {args.agents} agents, {args.body_bytes} B bodies, 1 recipient, cap "
        f"HOT_INBOX_MAX_MESSAGES={args.cap}, trimmer every {args.trim_interval} s; {machine_load()}"
    )
    for target, memory, hot, waited, elapsed in rows:
        print(
            f"after {target:>7,} messages: used_memory +{memory / 1e6:7.2f} MB over the empty project "
            f"({memory / target:6.0f} B per message sent), {hot:,} messages hot; "
            f"settled {waited:.1f} s after the last send, {elapsed:.0f} s in all"
        )
    if len(rows) > 1:
        (first, m1, *_), (last, m2, *_) = rows[0], rows[-1]
        growth = (m2 - m1) / (last - first)
        verdict = "ok" if growth <= 100 else "OVER TARGET"
        print(f"growth past the window: {growth:.1f} B per message (target <= 100 B: {verdict})")
    print(
        f"send latency while the worker persisted and trimmed: p50 {percentile(latencies, 50) * 1e3:.2f} ms, "
        f"p99 {percentile(latencies, 99) * 1e3:.2f} ms, max {max(latencies) * 1e3:.1f} ms"
    )
    print(
        f"cold marks: {len(cold)} fields, unread counted {sum(int(v) for k, v in cold.items() if k[:7] == 'unread:'):,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", default="10000,100000", help="messages sent at each memory reading")
    parser.add_argument("--agents", type=int, default=10, help="agents of the project")
    parser.add_argument("--cap", type=int, default=1000, help="HOT_INBOX_MAX_MESSAGES")
    parser.add_argument("--body-bytes", type=int, default=600, help="size of each message's body_md")
    parser.add_argument("--in-flight", type=int, default=50, help="concurrent sends")
    parser.add_argument("--trim-interval", type=float, default=1.0, help="HOT_TRIM_INTERVAL_SECONDS of the worker")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
