"""Web view benchmark: the unified inbox page of a project with 10,000 messages.

Seeds a project of 8 agents with 10,000 messages (one or two recipients each, mixed importance
and topics) through send_message, then requests the unified inbox page (/mail/<slug>) and its
variants in-process (httpx's ASGI transport: no socket, so what is measured is the broker) and
reads the time the broker spent on each from its ``Server-Timing`` header. The page reads one
bounded walk per agent (project_inbox.lua), never the whole project, so its time does not grow
with the number of messages.

Run: make bench   (or: python -m benchmarks.bench_web [--messages N] [--rounds N])
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import tempfile
import time
from pathlib import Path

import httpx
from fastmcp import Client

from benchmarks.common import bench_settings, percentile, redis_url
from broker.server import build_http_app

PROJECT = "/bench/web-view"
SLUG = "bench-web-view"
AGENTS = 8
TARGET_P50_MS = 100.0
TOPICS = ["", "", "build", "deploy", "review"]
IMPORTANCE = ["normal", "normal", "normal", "low", "high", "urgent"]


async def seed(client: Client, messages: int) -> list[str]:
    await client.call_tool("ensure_project", {"human_key": PROJECT})
    names = []
    for _ in range(AGENTS):
        registered = await client.call_tool(
            "register_agent", {"project_key": PROJECT, "program": "bench", "model": "m"}
        )
        names.append(registered.data["name"])
    rng = random.Random(15)

    async def send(i: int) -> None:
        sender = names[i % AGENTS]
        others = [n for n in names if n != sender]
        args = {
            "project_key": PROJECT, "sender_name": sender, "to": rng.sample(others, rng.choice((1, 1, 2))),
            "subject": f"Message {i} about the build", "body_md": f"Body of message {i}.",
            "importance": rng.choice(IMPORTANCE), "ack_required": i % 7 == 0,
        }  # fmt: skip
        topic = rng.choice(TOPICS)
        if topic:
            args["topic"] = topic
        await client.call_tool("send_message", args)

    started = time.perf_counter()
    batch = 100
    for start in range(0, messages, batch):
        await asyncio.gather(*(send(i) for i in range(start, min(start + batch, messages))))
    print(f"seeded {messages} messages to {AGENTS} agents in {time.perf_counter() - started:.1f} s")
    return names


def server_ms(response: httpx.Response) -> float:
    assert response.status_code == 200, response.text[:500]
    found = re.match(r"app;dur=([0-9.]+)", response.headers["server-timing"])
    assert found is not None
    return float(found.group(1))


async def run(messages: int, rounds: int) -> None:
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(url, Path(tmp), AGENT_RATE_LIMIT_BURST=0, CLIENT_RATE_LIMIT_BURST=0)
        app, mcp = build_http_app(settings, "127.0.0.1")
        async with Client(mcp) as client:
            names = await seed(client, messages)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            first = await http.get(f"/mail/{SLUG}")
            older = re.search(r'rel="next" href="\?([^"]+)"', first.text)
            assert older is not None
            variants = {
                "unified inbox, first page (50)": f"/mail/{SLUG}",
                "unified inbox, second page": f"/mail/{SLUG}?{older.group(1).replace('&amp;', '&')}",
                "filtered: one agent, unread": f"/mail/{SLUG}?agent={names[1]}&unread=true",
                "filtered: urgent, topic build": f"/mail/{SLUG}?importance=urgent&topic=build",
                "agent page (inbox + outbox)": f"/mail/{SLUG}/agents/{names[2]}",
            }
            for path in variants.values():  # warm up: templates compiled, scripts loaded
                server_ms(await http.get(path))
            samples: dict[str, list[float]] = {label: [] for label in variants}
            for _ in range(rounds):
                for label, path in variants.items():
                    samples[label].append(server_ms(await http.get(path)))
        rows = len(re.findall(r"data-message-id=", first.text))
        print(f"Redis: {source}; {messages} messages, {rounds} requests per page; server time (Server-Timing)")
        for label, values in samples.items():
            p50, p95 = percentile(values, 50), percentile(values, 95)
            verdict = ""
            if label.startswith("unified inbox, first"):
                verdict = f"  target p50 <= {TARGET_P50_MS:g} ms: {'ok' if p50 <= TARGET_P50_MS else 'OVER TARGET'}"
            print(f"{label:<32} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms{verdict}")
        print(f"(first page shows {rows} messages)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages in the project")
    parser.add_argument("--rounds", type=int, default=100, help="requests per page variant")
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.rounds))


if __name__ == "__main__":
    main()
