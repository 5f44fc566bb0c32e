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


def used_memory(client: redis.Redis) -> tuple[int, int]:
    """Redis ``used_memory``, and its ``used_memory_dataset`` (without the clients' buffers, the
    script cache and Redis's own overhead: steadier between readings)."""
    info = client.info("memory")
    return int(info["used_memory"]), int(info["used_memory_dataset"])


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
                memory, dataset = used_memory(sync)
                rows.append(
                    (target, memory - baseline[0], dataset - baseline[1], hot, waited, time.perf_counter() - started)
                )
            # then how long each script call holds Redis, by its own clock (SLOWLOG of every
            # command): ``--probe`` more messages, every one past the window
            sync.config_set("slowlog-log-slower-than", 0)
            sync.config_set("slowlog-max-len", 1_000_000)
            sync.slowlog_reset()
            before_probe = latencies[:]
            latencies.clear()
            for start in range(sent, sent + args.probe, args.in_flight):
                await asyncio.gather(*(send(i) for i in range(start, min(start + args.in_flight, sent + args.probe))))
            await asyncio.to_thread(settle, sync, keys, slug, streams, args.cap, worker)
            time.sleep(2 * args.trim_interval)  # and a pass that finds nothing more to do
            scripts = {store.script_sha("trim_hot"): "trim_hot", store.script_sha("send_message"): "send_message"}
            calls: dict[str, list[float]] = {name: [] for name in scripts.values()}
            for entry in sync.slowlog_get(1_000_000):
                raw = entry["command"]
                command = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw).split(" ", 2)
                if command[0].lower() == "evalsha" and len(command) > 1 and command[1] in scripts:
                    calls[scripts[command[1]]].append(int(entry["duration"]) / 1e3)
        finally:
            worker.terminate()
            worker.wait(10)
            cold = sync.hgetall(keys.cold(slug))
            await store.close()

    print(
        f"Redis: {source}; {args.agents} agents, {args.body_bytes} B bodies, 1 recipient, cap "
        f"HOT_INBOX_MAX_MESSAGES={args.cap}, trimmer every {args.trim_interval} s; {machine_load()}"
    )
    for target, memory, dataset, hot, waited, elapsed in rows:
        print(
            f"after {target:>7,} messages: used_memory +{memory / 1e6:7.2f} MB over the empty project "
            f"({memory / target:5.0f} B per message sent; dataset +{dataset / 1e6:.2f} MB), {hot:,} messages hot; "
            f"settled {waited:.1f} s after the last send, {elapsed:.0f} s in all"
        )
    if len(rows) > 1:
        (first, m1, d1, *_), (last, m2, d2, *_) = rows[0], rows[-1]
        growth = (m2 - m1) / (last - first)
        verdict = "ok" if growth <= 100 else "OVER TARGET"
        print(
            f"growth past the window: {growth:.1f} B per message of used_memory (target <= 100 B: {verdict}), "
            f"{(d2 - d1) / (last - first):.1f} B of dataset"
        )
    print(
        "send latency while the worker persisted and trimmed, up to the last checkpoint: "
        f"p50 {percentile(before_probe, 50) * 1e3:.2f} ms, p99 {percentile(before_probe, 99) * 1e3:.2f} ms, max {max(before_probe) * 1e3:.1f} ms"
    )
    for name, found in calls.items():
        if found:
            print(
                f"{name} calls during {args.probe:,} more sends: {len(found):,}, Redis time per call "
                f"p50 {percentile(found, 50):.2f} ms, p99 {percentile(found, 99):.2f} ms, max {max(found):.2f} ms"
            )
    print(
        f"send latency during those sends: p50 {percentile(latencies, 50) * 1e3:.2f} ms, "
        f"p99 {percentile(latencies, 99) * 1e3:.2f} ms"
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
    parser.add_argument("--probe", type=int, default=5000, help="messages sent while script calls are timed")
    parser.add_argument("--trim-interval", type=float, default=1.0, help="HOT_TRIM_INTERVAL_SECONDS of the worker")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
