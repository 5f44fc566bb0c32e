"""Reservation benchmark: file_reservation_paths (5 paths) against 100 and 10,000 held
reservations spread over 100 directories, as a ratio to a no-op FastMCP call with the same
arguments timed in the same run; and the reserve script's own time in Redis (SLOWLOG).

Held reservations: per directory ``dirNN/``, files ``dirNN/subK/fileJ.py`` plus one glob
``dirNN/subK/*.md`` in ten; holders are ten agents. The request: four new files in four
directories plus one file that a holder has, so one conflict is reported each time.

Run: make bench   (or: python -m benchmarks.reservations [--rounds N])
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path
from typing import Any

from fastmcp import Client, FastMCP

from benchmarks.common import bench_settings, interleaved, redis_url, row
from broker.server import build_server

PROJECT = "/bench/reservations"
DIRECTORIES = 100


def floor_server() -> FastMCP:
    noop = FastMCP("floor")

    @noop.tool
    async def file_reservation_paths(
        project_key: str, agent_name: str, paths: list[str], ttl_seconds: int = 3600, exclusive: bool = True,
        reason: str = "", registration_token: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        return {}

    return noop


def held_patterns(total: int) -> list[str]:
    per_dir = total // DIRECTORIES
    patterns = []
    for d in range(DIRECTORIES):
        for j in range(per_dir):
            sub = j % 10
            patterns.append(f"dir{d:02}/sub{sub}/*.md" if j % 10 == 9 else f"dir{d:02}/sub{sub}/file{j}.py")
    return patterns


async def measure(client: Client, floor: Client, store: Any, held: int, rounds: int) -> tuple[str, float | None]:
    project = f"{PROJECT}-{held}"
    await client.call_tool("ensure_project", {"human_key": project})
    holders = []
    for _ in range(11):
        reg = await client.call_tool("register_agent", {"project_key": project, "program": "bench", "model": "m"})
        holders.append(reg.data["name"])
    requester = holders.pop()
    patterns = held_patterns(held)
    for start in range(0, len(patterns), 100):
        await client.call_tool(
            "file_reservation_paths",
            {
                "project_key": project,
                "agent_name": holders[(start // 100) % 10],
                "paths": patterns[start : start + 100],
            },
        )
    request = {
        "project_key": project,
        "agent_name": requester,
        "paths": ["dir03/sub1/new.py", "dir17/sub4/new.py", "dir42/sub2/new.py", "dir77/sub8/new.py", patterns[0]],
    }
    first = await client.call_tool("file_reservation_paths", request)
    assert len(first.data["granted"]) == 5 and len(first.data["conflicts"]) == 1, first.data
    redis = store.client()
    await redis.config_set("slowlog-log-slower-than", 0)
    await redis.config_set("slowlog-max-len", 100_000)
    await redis.slowlog_reset()
    samples = await interleaved(
        {"ours": lambda: client.call_tool("file_reservation_paths", request),
         "floor": lambda: floor.call_tool("file_reservation_paths", request)}, rounds)  # fmt: skip
    sha = store.script_sha("reserve")
    entries = await redis.slowlog_get(100_000)
    script_us = [e["duration"] for e in entries if sha in str(e.get("command", ""))]
    await redis.config_set("slowlog-log-slower-than", 10_000)
    label = f"reserve 5 paths, {held:>6,} held"
    text = row(label, samples["ours"], samples["floor"], target=2.0 if held <= 100 else 3.0)
    return text, statistics.median(script_us) if script_us else None


async def run(rounds: int) -> None:
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp:
        server = build_server(bench_settings(url, Path(tmp)))
        store = server.store  # type: ignore[attr-defined]
        async with Client(server) as ours, Client(floor_server()) as floor:
            for _ in range(100):  # warm up both paths
                await floor.call_tool(
                    "file_reservation_paths", {"project_key": PROJECT, "agent_name": "x", "paths": ["a"]}
                )
            results = [await measure(ours, floor, store, held, rounds) for held in (100, 10_000)]
        await store.close()
    print(f"Redis: {source}; {rounds} calls per tool and size, interleaved")
    for text, script_us in results:
        print(text)
        if script_us is not None:
            verdict = "ok" if script_us < 1000 else "OVER TARGET"
            print(
                f"{'':<34} reserve.lua itself: median {script_us:.0f} us in Redis (SLOWLOG; target < 1000 us: {verdict})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000, help="latency samples per tool and size")
    args = parser.parse_args()
    asyncio.run(run(args.rounds))


if __name__ == "__main__":
    main()
