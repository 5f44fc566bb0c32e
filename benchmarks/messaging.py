"""Messaging benchmark: send_message and fetch_inbox latency, concurrent send throughput.

Each figure is also a ratio to a no-op FastMCP tool timed in the same run (machines here are
shared and noisy, so only same-run ratios compare). The no-op tools take the same arguments as
the tools they stand for; the fetch_inbox floor also returns 100 inbox items with 512-byte
bodies under the same return annotation, i.e. FastMCP's own cost of carrying that payload.

Run: make bench   (or: python -m benchmarks.messaging [--rounds N])
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

from fastmcp import Client, FastMCP

from benchmarks.common import bench_settings, interleaved, redis_url, row
from broker.server import build_server

BODY = "x" * 512
PROJECT = "/bench/messaging"


def floor_server() -> FastMCP:
    noop = FastMCP("floor")
    item = {
        "id": 1, "project_id": 1, "sender_id": 1, "thread_id": None, "topic": None, "subject": "benchmark subject",
        "importance": "normal", "ack_required": False, "created_ts": "2026-01-01T00:00:00.123456+00:00",
        "attachments": [], "from": "BlueLake", "kind": "to", "body_md": BODY,
    }  # fmt: skip

    @noop.tool
    async def send_message(
        project_key: str, sender_name: str, to: list[str], subject: str, body_md: str,
        cc: list[str] | None = None, bcc: list[str] | None = None, importance: str = "normal",
        ack_required: bool = False, thread_id: str | None = None, topic: str | None = None,
        sender_token: str | None = None, idempotency_key: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        return {}

    @noop.tool
    async def fetch_inbox(
        project_key: str, agent_name: str, limit: int = 20, urgent_only: bool = False,
        include_bodies: bool = False, since_ts: str | None = None, topic: str | None = None,
        registration_token: str | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        return [dict(item, id=i) for i in range(100)]

    return noop


async def concurrent_rate(client: Client, args_for: Any, in_flight: int) -> tuple[float, int]:
    start = time.perf_counter()
    results = await asyncio.gather(
        *(client.call_tool("send_message", args_for(i), raise_on_error=False) for i in range(in_flight))
    )
    elapsed = time.perf_counter() - start
    return in_flight / elapsed, sum(1 for r in results if r.is_error)


async def run(rounds: int, in_flight: int, waves: int) -> None:
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp:
        server = build_server(bench_settings(url, Path(tmp)))
        async with Client(server) as ours, Client(floor_server()) as floor:
            await ours.call_tool("ensure_project", {"human_key": PROJECT})
            names = []
            for _ in range(4):
                reg = await ours.call_tool("register_agent", {"project_key": PROJECT, "program": "bench", "model": "m"})
                names.append(reg.data["name"])
            sender, reader = names[0], names[1]
            send_args = {"project_key": PROJECT, "sender_name": sender, "to": [reader],
                         "subject": "benchmark subject", "body_md": BODY}  # fmt: skip
            fetch_args = {"project_key": PROJECT, "agent_name": reader, "limit": 100, "include_bodies": True}
            for _ in range(150):  # warm up, and fill the reader's inbox past 100
                await ours.call_tool("send_message", send_args)
                await floor.call_tool("send_message", send_args)

            sends = await interleaved(
                {"ours": lambda: ours.call_tool("send_message", send_args),
                 "floor": lambda: floor.call_tool("send_message", send_args)}, rounds)  # fmt: skip
            keys = itertools.count()  # a new key per call: a first send with a key, never a replay
            keyed = await interleaved(
                {"ours": lambda: ours.call_tool("send_message", {**send_args, "idempotency_key": f"k{next(keys)}"}),
                 "floor": lambda: floor.call_tool("send_message", {**send_args, "idempotency_key": "k"})},
                max(rounds // 3, 50))  # fmt: skip
            fetches = await interleaved(
                {"ours": lambda: ours.call_tool("fetch_inbox", fetch_args),
                 "floor": lambda: floor.call_tool("fetch_inbox", fetch_args)}, max(rounds // 3, 50))  # fmt: skip
            check = await ours.call_tool("fetch_inbox", fetch_args)
            assert len(check.structured_content["result"]) == 100

            def spread(i: int) -> dict[str, Any]:
                return {**send_args, "sender_name": names[i % 4], "to": [names[(i + 1) % 4]]}

            ours_rates, floor_rates, errors = [], [], 0
            for _ in range(waves):
                rate, failed = await concurrent_rate(ours, spread, in_flight)
                ours_rates.append(rate)
                errors += failed
                rate, _ = await concurrent_rate(floor, spread, in_flight)
                floor_rates.append(rate)
            ours_rate, floor_rate = sorted(ours_rates)[len(ours_rates) // 2], sorted(floor_rates)[len(floor_rates) // 2]

        print(f"Redis: {source}; {rounds} sends and {max(rounds // 3, 50)} fetches per tool, interleaved")
        print(row("send_message (512 B, 1 recipient)", sends["ours"], sends["floor"], target=2.0))
        print(row("send_message with idempotency_key", keyed["ours"], keyed["floor"], target=2.0))
        print(row("fetch_inbox (100, with bodies)", fetches["ours"], fetches["floor"], target=1.3))
        ratio = ours_rate / floor_rate
        verdict = "ok" if ratio >= 0.5 and errors == 0 else "BELOW TARGET"
        print(
            f"{'concurrent send_message':<34} {ours_rate:7.0f} msg/s with {in_flight} in flight; "
            f"no-op {floor_rate:7.0f} calls/s; ratio {ratio:5.2f}x (target >= 0.5x, no errors: {verdict}); "
            f"errors {errors}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000, help="latency samples per tool")
    parser.add_argument("--in-flight", type=int, default=500, help="concurrent sends per wave")
    parser.add_argument("--waves", type=int, default=5, help="throughput waves per tool (median reported)")
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.in_flight, args.waves))


if __name__ == "__main__":
    main()
