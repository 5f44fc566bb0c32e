"""Fairness benchmark: one caller must not stall everyone (docs/limits.md).

1. The worst single reserve.lua run in Redis (SLOWLOG) for the costliest requests the caps allow,
   granted (priced just under the step budget) and refused (far over it).
2. Another project's send_message p50 while 4 callers loop costly reservation requests, as a
   ratio to its p50 without them (target <= 1.5x). The attackers run in a process of their own
   (a broker on the same Redis, as a second broker process would), each as its own agent; on
   RATE_LIMITED they wait the retry_after it names, or with ``--spin`` retry at once (then their
   own CPU, on the same machine, weighs on the victim too). ``--no-limits`` turns the agent rate
   limit off in the attackers' broker, to show what the step budget alone does.

Run: python -m benchmarks.fairness [--sends N] [--spin] [--no-limits]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from fastmcp import Client

from benchmarks.common import percentile, redis_url
from broker.config import Settings
from broker.server import build_server

VICTIM = "/bench/fairness/victim"
ARENA = "/bench/fairness/arena"
AT_CAPS = "*" + "a" * 18 + "*" + "a" * 18  # 39 characters of wildcard segment with one more
ATTACKERS = 4
ROUNDS = 10


def settings_for(url: str, prefix: str, root: Path, limits: bool) -> Settings:
    extra: dict[str, Any] = {} if limits else {"AGENT_RATE_LIMIT_PER_SECOND": 0}
    return Settings(REDIS_URL=url, REDIS_KEY_PREFIX=prefix, STORAGE_ROOT=root, **extra)


def costly_requests() -> list[list[str]]:
    """The costliest requests against the arena's holdings: two priced just under the budget,
    then ones the budget refuses (every pattern starting with a wildcard reads every bucket)."""
    return [
        ["a" * 511 + "c"],  # the longest plain path against a glob at the caps
        [f"src/{i}.py" for i in range(2)],  # two paths against 99 globs of their directory
        [AT_CAPS + "c"],
        [f"**/*{i}*.py" for i in range(100)],
        [f"src/{i}.py" for i in range(100)],
    ]


async def arena(client: Client) -> list[str]:
    """The arena project: one holder of a glob at the caps and 99 globs under src/; returns
    the names of ATTACKERS agents."""
    await client.call_tool("ensure_project", {"human_key": ARENA})
    names = []
    for _ in range(ATTACKERS + 1):
        reg = await client.call_tool("register_agent", {"project_key": ARENA, "program": "bench", "model": "m"})
        names.append(reg.data["name"])
    holding = [AT_CAPS + "b", *(f"src/*{i}x" for i in range(99))]
    await client.call_tool("file_reservation_paths", {"project_key": ARENA, "agent_name": names[0], "paths": holding})
    return names[1:]


async def worst_single(client: Client, store: Any, agent: str) -> list[tuple[str, int, int]]:
    """(outcome, paths, microseconds in Redis) of each costly request."""
    redis = store.client()
    sha = store.script_sha("reserve")
    rows = []
    for paths in costly_requests():
        await redis.config_set("slowlog-log-slower-than", 0)
        await redis.slowlog_reset()
        result = await client.call_tool(
            "file_reservation_paths", {"project_key": ARENA, "agent_name": agent, "paths": paths}, raise_on_error=False
        )
        entries = await redis.slowlog_get(1000)
        await redis.config_set("slowlog-log-slower-than", 10_000)
        micros = max(e["duration"] for e in entries if sha in str(e.get("command", "")))
        outcome = result.content[0].text.split(":")[0] if result.is_error else "granted"
        rows.append((outcome, len(paths), micros))
    return rows


def attack(
    url: str, prefix: str, root: str, names: list[str], limits: bool, spin: bool, active: Any, stop: Any, counts: Any
) -> None:
    """Child process: each agent loops the costly requests while `active` is set, until `stop`."""
    logging.getLogger("fastmcp").setLevel(logging.CRITICAL)  # a refused call logs a traceback

    async def one(client: Client, index: int, name: str) -> None:
        requests = costly_requests()
        k = 0
        while not stop.is_set():
            if not active.is_set():
                await asyncio.sleep(0.01)
                continue
            paths = requests[k % len(requests)]
            k += 1
            result = await client.call_tool(
                "file_reservation_paths", {"project_key": ARENA, "agent_name": name, "paths": paths},
                raise_on_error=False,
            )  # fmt: skip
            code = result.content[0].text.split(":")[0] if result.is_error else "granted"
            slot = {"granted": 0, "RESERVATION_TOO_COMPLEX": 1, "RATE_LIMITED": 2}.get(code, 3)
            counts[index * 4 + slot] += 1
            if slot == 2 and not spin:
                wait = re.search(r"retry_after=([0-9.]+)", result.content[0].text)
                await asyncio.sleep(float(wait.group(1)) if wait else 0.1)

    async def main() -> None:
        server = build_server(settings_for(url, prefix, Path(root), limits))
        clients = [Client(server) for _ in names]
        for client in clients:
            await client.__aenter__()
        await asyncio.gather(*(one(c, i, n) for i, (c, n) in enumerate(zip(clients, names, strict=True))))
        for client in clients:
            await client.__aexit__(None, None, None)
        await server.store.close()  # type: ignore[attr-defined]

    asyncio.run(main())


async def send_p50(client: Client, args: dict[str, Any], sends: int) -> tuple[float, list[float]]:
    samples = []
    for _ in range(sends):
        start = time.perf_counter()
        await client.call_tool("send_message", args)
        samples.append(time.perf_counter() - start)
    return percentile(samples, 50), samples


async def run(sends: int, limits: bool, spin: bool, warmup: float) -> None:
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp:
        prefix = f"fair{int(time.time())}"
        settings = settings_for(url, prefix, Path(tmp), True)
        server = build_server(settings)
        store = server.store  # type: ignore[attr-defined]
        async with Client(server) as client:
            await client.call_tool("ensure_project", {"human_key": VICTIM})
            pair = []
            for _ in range(2):
                reg = await client.call_tool("register_agent", {"project_key": VICTIM, "program": "b", "model": "m"})
                pair.append(reg.data["name"])
            send_args = {"project_key": VICTIM, "sender_name": pair[0], "to": [pair[1]],
                         "subject": "fairness", "body_md": "x" * 512}  # fmt: skip
            attackers = await arena(client)
            worst = await worst_single(client, store, attackers[0])
            for _ in range(100):
                await client.call_tool("send_message", send_args)  # warm up

            ctx = multiprocessing.get_context("spawn")
            active, stop, counts = ctx.Event(), ctx.Event(), ctx.Array("l", ATTACKERS * 4)
            args = (url, prefix, tmp, attackers, limits, spin, active, stop, counts)
            child = ctx.Process(target=attack, args=args)
            child.start()
            active.set()
            await asyncio.sleep(warmup)  # the attackers start and spend their bursts
            before = list(counts)
            sha = store.script_sha("reserve")
            await store.client().config_set("slowlog-log-slower-than", 0)
            await store.client().config_set("slowlog-max-len", 1_000_000)
            await store.client().slowlog_reset()
            # Quiet and attacked windows alternate, so the machine's drift hits both alike.
            quiet_samples: list[float] = []
            attacked_samples: list[float] = []
            for _ in range(ROUNDS):
                active.clear()
                await asyncio.sleep(0.1)  # calls in flight finish
                quiet_samples += (await send_p50(client, send_args, sends // ROUNDS))[1]
                active.set()
                await asyncio.sleep(0.1)
                attacked_samples += (await send_p50(client, send_args, sends // ROUNDS))[1]
            entries = await store.client().slowlog_get(1_000_000)
            await store.client().config_set("slowlog-log-slower-than", 10_000)
            during = [c - b for c, b in zip(counts, before, strict=True)]
            stop.set()
            child.join(30)
        await store.close()

    reserve_us = [e["duration"] for e in entries if sha in str(e.get("command", ""))]
    busy = sum(reserve_us) / 1e6
    mode = "retry at once" if spin else "wait retry_after"
    print(f"Redis: {source}; agent rate limit {'on (defaults)' if limits else 'OFF'}; attackers {mode}")
    print("1. worst single reserve.lua run, costliest requests the caps allow (SLOWLOG):")
    for outcome, paths, micros in worst:
        print(f"   {outcome:<24} {paths:>3} paths  {micros / 1000:6.2f} ms")
    print(f"   worst: {max(m for _, _, m in worst) / 1000:.2f} ms (target: a few ms)")
    print(
        f"2. victim send_message, {sends} sends each way in {ROUNDS} alternating windows, "
        f"{ATTACKERS} attackers looping in another process:"
    )
    quiet, attacked = percentile(quiet_samples, 50), percentile(attacked_samples, 50)
    ratio = attacked / quiet
    verdict = "ok" if ratio <= 1.5 else "OVER TARGET"
    print(f"   without attackers: p50 {quiet * 1e3:.3f} ms, p95 {percentile(quiet_samples, 95) * 1e3:.3f} ms")
    print(
        f"   with attackers:    p50 {attacked * 1e3:.3f} ms, p95 {percentile(attacked_samples, 95) * 1e3:.3f} ms; "
        f"p50 ratio {ratio:.2f}x (target <= 1.5x: {verdict})"
    )
    totals = [sum(during[i * 4 + s] for i in range(ATTACKERS)) for s in range(4)]
    print(
        f"   attackers during the measured phase: {totals[0]} granted, {totals[1]} too complex, "
        f"{totals[2]} rate limited, {totals[3]} other; reserve.lua ran {len(reserve_us)} times, "
        f"{busy * 1e3:.0f} ms of Redis in all"
    )
    if reserve_us:
        over = sum(1 for us in reserve_us if us > 5000)
        print(
            f"   reserve.lua runs meanwhile: p50 {percentile(reserve_us, 50) / 1000:.2f} ms, "
            f"p99 {percentile(reserve_us, 99) / 1000:.2f} ms, worst {max(reserve_us) / 1000:.2f} ms, "
            f"{over} over 5 ms (SLOWLOG is wall time: on a busy machine it includes preemption)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=500, help="victim sends per phase")
    parser.add_argument("--no-limits", action="store_true", help="attackers' broker without the agent rate limit")
    parser.add_argument("--spin", action="store_true", help="attackers retry a RATE_LIMITED call at once")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds the attackers run before measuring")
    args = parser.parse_args()
    logging.getLogger("fastmcp").setLevel(logging.CRITICAL)  # a refused call logs a traceback
    asyncio.run(run(args.sends, not args.no_limits, args.spin, args.warmup))


if __name__ == "__main__":
    main()
