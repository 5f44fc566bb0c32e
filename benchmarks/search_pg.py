"""search_messages on PostgreSQL against the no-op floor, with SQLite beside it, in one run.

A corpus of --messages messages (~500 B bodies, one word of every 500th message in common, as
benchmarks/durability.py) is sent through the send function behind the tool and persisted by the
worker into SQLite; ``broker index copy``'s function copies that index into a throwaway
PostgreSQL database (timed); then one broker server per index, on the same Redis, answers the
same searches through an in-process FastMCP client, alternated call by call with a no-op
``search_messages`` that returns 20 items of the result's shape (the floor of
benchmarks/durability.py). Target (issue 19): PostgreSQL's p50 <= 2.5x the floor for the
selective query.

Run: python -m benchmarks.search_pg [--messages 50000] [--rounds 500]
Needs PostgreSQL on 127.0.0.1:5432 (user postgres) or $BENCH_POSTGRES (an admin URL); the
database it makes (bench_<hex>) is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from fastmcp import Client, FastMCP

from benchmarks.common import bench_settings, interleaved, machine_load, redis_url, row
from benchmarks.durability import BODY, floor_server
from broker.mail import send as mail
from broker.persistence.index import Index
from broker.persistence.index_copy import copy_index
from broker.server import build_server
from workers.runner import PersistenceWorker

PROJECT = "/bench/search"
AGENTS = ("BlueLake", "GreenCastle")
ADMIN_URL = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


async def corpus(server: FastMCP, total: int) -> None:
    store = server.store  # type: ignore[attr-defined]
    async with Client(server) as client:
        await client.call_tool("ensure_project", {"human_key": PROJECT})
        for name in AGENTS:
            await client.call_tool(
                "register_agent", {"project_key": PROJECT, "program": "bench", "model": "bench", "name": name}
            )

    async def one(i: int) -> None:
        await mail.send_message(
            store, PROJECT, AGENTS[i % 2], [AGENTS[(i + 1) % 2]], f"bench search #{i}", f"{BODY} code{i % 500}",
            None, None, "normal", False, f"bench-{i % 50}", False, None, None,
        )  # fmt: skip

    for start in range(0, total, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(total, start + 200))))


async def main(args: argparse.Namespace) -> None:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    pg_url = f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        with redis_url() as (url, where), tempfile.TemporaryDirectory() as tmp:
            settings = bench_settings(url, Path(tmp), AGENT_RATE_LIMIT_PER_SECOND=0)
            lite = build_server(settings)
            started = time.perf_counter()
            await corpus(lite, args.messages)
            await asyncio.to_thread(PersistenceWorker(settings, url).run, burst=True)
            built = time.perf_counter() - started
            source, target = Index(settings.index_path), Index(pg_url)
            started = time.perf_counter()
            counts = copy_index(source, target)
            copied = time.perf_counter() - started
            source.close()
            target.close()
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("CHECKPOINT")  # the copy's writes flushed now, not during the timing
            pg = build_server(settings.model_copy(update={"database_url": pg_url}))
            print(
                f"Redis: {where}; {counts['messages'].target} messages sent and persisted in {built:.1f} s, "
                f"copied into PostgreSQL in {copied:.1f} s; {machine_load()}"
            )
            for query, label, rounds, target_ratio in (
                ("code17", f"~{args.messages // 500} matches, up to 20 returned", args.rounds, 2.5),
                ("deploy plan", f"all {args.messages} match, 20 returned", max(args.rounds // 10, 20), None),
            ):
                call = {"project_key": PROJECT, "query": query, "limit": 20, "agent_name": "BlueLake"}
                async with Client(lite) as a, Client(pg) as b, Client(floor_server()) as floor:
                    found_a = (await a.call_tool("search_messages", call)).structured_content["result"]
                    found_b = (await b.call_tool("search_messages", call)).structured_content["result"]
                    assert len(found_a) == len(found_b) > 0, "the engines found different numbers of messages"
                    for _ in range(50):  # warm both pools and caches
                        await a.call_tool("search_messages", call)
                        await b.call_tool("search_messages", call)
                    samples = await interleaved(
                        {
                            "sqlite": lambda a=a, call=call: a.call_tool("search_messages", call),
                            "postgresql": lambda b=b, call=call: b.call_tool("search_messages", call),
                            "floor": lambda floor=floor, call=call: floor.call_tool("search_messages", call),
                        },
                        rounds,
                        rotate=True,
                    )
                for engine in ("postgresql", "sqlite"):
                    line = row(f"{engine} {query!r} ({label})", samples[engine], samples["floor"], target_ratio or 0)
                    if target_ratio is None or engine == "sqlite":
                        line = line.split(" (target")[0]
                    print(line)
            await pg.store.close()  # type: ignore[attr-defined]
            await lite.store.close()  # type: ignore[attr-defined]
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000, help="corpus size")
    parser.add_argument("--rounds", type=int, default=500, help="search latency samples per engine")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
