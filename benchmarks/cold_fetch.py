"""Cold fetch benchmark: fetch_inbox of 100 items with bodies when every one has left Redis
(the hot-window trimmer moved them to the index) against the same page still hot.

Two readers get the same 100 messages (600-byte bodies, alternating topics and importance)
from the same sender; both are persisted by the real worker. The trimmer then moves the first
reader's messages out of Redis (a retention of one second, its clock a minute ahead); the
second reader's copies are sent after that pass and stay hot. Both pages are read through an
in-process MCP client, alternating, and checked equal but for ids and times.
``--others K`` interleaves K messages to other agents between two of the cold reader's (all
cold too), as in a project where each agent receives a small share of the mail: the index
walks the project's mail newest first and skips what the reader did not receive.
Target: cold p50 <= 2x hot p50 (issue 19, point 8).

Run: python -m benchmarks.cold_fetch [--rounds N] [--others K]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from fastmcp import Client

from benchmarks.common import bench_settings, interleaved, machine_load, percentile, redis_url
from broker.lifecycle.hot_window import HotTrimmer
from broker.mail import inbox
from broker.server import build_server
from broker.store.clients import make_sync_client
from workers.runner import PersistenceWorker

PROJECT = "/bench/cold-fetch"
BODY = "Cold fetch benchmark body: the history the index serves once Redis lets it go. " * 8  # ~640 B
PAGE = 100
TARGET = 2.0


async def send_page(client: Client, sender: str, reader: str, others: list[str] | None = None, k: int = 0) -> None:
    for i in range(PAGE):
        for j in range(k):
            await client.call_tool(
                "send_message",
                {"project_key": PROJECT, "sender_name": sender, "to": [others[j % len(others)]],  # type: ignore[index]
                 "subject": "to someone else", "body_md": BODY[:600]},
            )  # fmt: skip
        await client.call_tool(
            "send_message",
            {"project_key": PROJECT, "sender_name": sender, "to": [reader], "subject": f"message {i}",
             "body_md": BODY[: 600], "topic": "build" if i % 2 else None,
             "importance": "high" if i % 3 == 0 else "normal", "ack_required": i % 4 == 0},
        )  # fmt: skip


def comparable(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items without what differs between the two readers' copies."""
    return [{k: v for k, v in item.items() if k not in ("id", "created_ts")} for item in items]


async def run(rounds: int, others_per_message: int) -> None:
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(url, Path(tmp), HOT_RETENTION_SECONDS=1)
        server = build_server(settings)
        store = server.store  # type: ignore[attr-defined]
        async with Client(server) as client:
            await client.call_tool("ensure_project", {"human_key": PROJECT})
            names = []
            for _ in range(3 + (4 if others_per_message else 0)):
                reg = await client.call_tool("register_agent", {"project_key": PROJECT, "program": "b", "model": "m"})
                names.append(reg.data["name"])
            sender, cold_reader, hot_reader, *others = names
            await send_page(client, sender, cold_reader, others, others_per_message)
            worker = PersistenceWorker(settings, url)
            await asyncio.to_thread(worker.run, burst=True)
            trimmer = HotTrimmer(settings, make_sync_client(url), store.keys)
            report = await asyncio.to_thread(trimmer.run_pass, now_ms=int(time.time() * 1000) + 60_000)
            assert report.deleted == PAGE * (1 + others_per_message), report
            await send_page(client, sender, hot_reader)

            def fetch(reader: str) -> Any:
                args = {"project_key": PROJECT, "agent_name": reader, "limit": PAGE, "include_bodies": True}
                return client.call_tool("fetch_inbox", args)

            cold_page = (await fetch(cold_reader)).structured_content["result"]
            hot_page = (await fetch(hot_reader)).structured_content["result"]
            assert len(cold_page) == len(hot_page) == PAGE
            assert comparable(cold_page) == comparable(hot_page)
            for _ in range(20):  # warm both paths (the index's connection, its page cache)
                await fetch(cold_reader)
                await fetch(hot_reader)
            samples = await interleaved(
                {"hot": lambda: fetch(hot_reader), "cold": lambda: fetch(cold_reader)}, rounds, rotate=True
            )

            def direct(reader: str) -> Any:  # the read itself, without the MCP layer around it
                return inbox.fetch_inbox(store, PROJECT, reader, PAGE, False, True, None, None, None)

            bare = await interleaved(
                {"hot": lambda: direct(hot_reader), "cold": lambda: direct(cold_reader)}, rounds, rotate=True
            )
        await store.close()
    hot50, cold50 = percentile(samples["hot"], 50) * 1e3, percentile(samples["cold"], 50) * 1e3
    hot95, cold95 = percentile(samples["hot"], 95) * 1e3, percentile(samples["cold"], 95) * 1e3
    ratio = cold50 / hot50
    verdict = "ok" if ratio <= TARGET else "OVER TARGET"
    print(f"Redis: {source}; index: SQLite; {rounds} fetches each, alternating; {machine_load()}")
    if others_per_message:
        print(f"{others_per_message} cold messages to other agents between two of the cold reader's")
    print(f"fetch_inbox ({PAGE}, with bodies) hot   p50 {hot50:7.3f} ms  p95 {hot95:7.3f} ms")
    print(f"fetch_inbox ({PAGE}, with bodies) cold  p50 {cold50:7.3f} ms  p95 {cold95:7.3f} ms")
    print(f"cold / hot p50 ratio {ratio:5.2f}x (target <= {TARGET}x: {verdict})")
    hot50, cold50 = percentile(bare["hot"], 50) * 1e3, percentile(bare["cold"], 50) * 1e3
    print(f"without the MCP layer (broker.mail.inbox.fetch_inbox): hot p50 {hot50:6.3f} ms, cold p50 "
          f"{cold50:6.3f} ms, ratio {cold50 / hot50:5.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="fetches per reader")
    parser.add_argument("--others", type=int, default=0, help="messages to other agents between the reader's")
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.others))


if __name__ == "__main__":
    main()
