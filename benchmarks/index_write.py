"""Index write benchmark: persisted throughput of the worker on SQLite and on PostgreSQL, one run.

For each backend: a fresh broker (its own key prefix, STORAGE_ROOT and index) gets ``--messages``
sends (through ``broker.mail.send.send_message``: the tool's function and Lua script, without the
MCP layer) with no worker running, then the persistence worker drains that backlog in-process
(``PersistenceWorker.run(burst=True)``: the same batches, Git commits and index transactions as
``broker worker``). Reported per backend:

* persisted msg/s: messages / time from the worker's start to the backlog being empty (Git
  archive and index, end to end);
* index msg/s: messages / time spent inside ``Index.write_batch`` (the index's own share; the
  target of issue 19 is >= 1,500 msg/s on PostgreSQL, like SQLite).

PostgreSQL is a throwaway database (``test_bench_<hex>``) on ``--pg-admin`` (default
postgres@127.0.0.1:5432, trust auth), dropped at the end; no existing database is touched.

Run: python -m benchmarks.index_write [--messages 10000] [--pg-admin postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg

from benchmarks.common import bench_settings, machine_load, redis_url
from broker.mail import send as mail
from broker.persistence.index import Index
from broker.server import build_server
from workers.runner import PersistenceWorker

PROJECT = "/bench/index-write"
AGENTS = ("BlueLake", "GreenCastle", "RedStone")
BODY = "Benchmark message body with some words to index: deploy plan review. " * 7  # ~500 B
TARGET = 1500.0


class Timed:
    """Wraps Index.write_batch to add up the time spent in it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.batches = 0
        self.original = Index.write_batch

    def __enter__(self) -> Timed:
        timed = self

        def write_batch(index: Index, batch: Any) -> None:
            start = time.perf_counter()
            try:
                timed.original(index, batch)
            finally:
                timed.seconds += time.perf_counter() - start
                timed.batches += 1

        Index.write_batch = write_batch  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        Index.write_batch = self.original  # type: ignore[method-assign]


async def fill(settings: Any, url: str, count: int) -> None:
    """``count`` sends into Redis (no worker: they wait in the persistence backlog)."""
    server = build_server(settings)
    store = server.store  # type: ignore[attr-defined]
    from fastmcp import Client

    async with Client(server) as client:
        await client.call_tool("ensure_project", {"human_key": PROJECT})
        for name in AGENTS:
            await client.call_tool(
                "register_agent", {"project_key": PROJECT, "program": "bench", "model": "bench", "name": name}
            )

    async def one(i: int) -> None:
        cc = [AGENTS[(i + 2) % 3]] if i % 4 == 0 else None
        await mail.send_message(
            store, PROJECT, AGENTS[i % 3], [AGENTS[(i + 1) % 3]], f"bench #{i}", f"{BODY} code{i % 500}", cc, None,
            "normal", i % 10 == 0, f"thread-{i % 50}", False, None, None,
        )  # fmt: skip

    try:
        for start in range(0, count, 200):
            await asyncio.gather(*(one(i) for i in range(start, min(start + 200, count))))
    finally:
        await store.close()


def drain(settings: Any, url: str, count: int) -> dict[str, float]:
    index = Index.from_settings(settings)
    index.ensure_schema()  # the schema is made before the clock starts (as at a worker's start)
    with Timed() as timed:
        start = time.perf_counter()
        PersistenceWorker(settings, url).run(burst=True)
        elapsed = time.perf_counter() - start
    persisted = index.query("SELECT count(*) FROM messages")[0][0]
    index.close()
    assert persisted == count, f"{persisted} of {count} persisted"
    return {"elapsed": elapsed, "index": timed.seconds, "batches": timed.batches}


def run_backend(name: str, url: str, count: int, database_url: str = "") -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        overrides: dict[str, Any] = {"AGENT_RATE_LIMIT_PER_SECOND": 0}
        if database_url:
            overrides["DATABASE_URL"] = database_url
        settings = bench_settings(url, Path(tmp), **overrides)
        asyncio.run(fill(settings, url, count))
        figures = drain(settings, url, count)
    print(
        f"{name:<10} {count} messages: persisted {count / figures['elapsed']:8.0f} msg/s "
        f"({figures['elapsed']:.2f} s, {figures['batches']:.0f} batches); index alone "
        f"{count / figures['index']:8.0f} msg/s ({figures['index']:.2f} s in write_batch)"
    )
    return figures


def main(args: argparse.Namespace) -> None:
    print(f"machine load: {machine_load()}")
    name = f"test_bench_{uuid4().hex[:12]}"
    base = args.pg_admin.rpartition("/")[0]
    with redis_url() as (url, where):
        print(f"Redis: {where}; body {len(BODY)} B; one project, three agents, a CC on every 4th message")
        lite = run_backend("sqlite", url, args.messages)
        with psycopg.connect(args.pg_admin, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            pg = run_backend("postgresql", url, args.messages, f"{base}/{name}")
        finally:
            with psycopg.connect(args.pg_admin, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    index_rate = args.messages / pg["index"]
    print(
        f"PostgreSQL vs SQLite, same run: persisted {lite['elapsed'] / pg['elapsed']:.2f}x, index alone "
        f"{lite['index'] / pg['index']:.2f}x; PostgreSQL index writes {index_rate:.0f} msg/s "
        f"(target >= {TARGET:.0f}: {'ok' if index_rate >= TARGET else 'BELOW TARGET'})"
    )
    print(f"machine load at the end: {machine_load()}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
