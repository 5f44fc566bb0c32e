"""The overseers' web view shows mail the hot-window trimmer moved out of Redis: the unified
project inbox (every filter, paged by its cursor), an agent's outbox and a thread answer the same
before and after a trim to a window of one message per stream: merged from Redis and the index,
no duplicate, no gap, same order."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from cold_helpers import trim_to
from fastmcp import FastMCP
from helpers import PROJECT, Tools
from persist_helpers import run_worker

from broker.config import Settings
from broker.mail import oversight
from broker.store.store import Store

FILTERS: list[dict[str, Any]] = [
    {},
    {"agent": "GreenCastle"},
    {"agent": "BlueLake"},
    {"importance": "urgent"},
    {"topic": "Builds"},
    {"unread_only": True},
    {"agent": "GreenCastle", "unread_only": True},
]


async def send_mixed(tools: Tools) -> None:
    """Fifteen messages among three agents: cc'd ones, urgent ones, a topic, a thread; some read."""
    agents = ["BlueLake", "GreenCastle", "alpha-one"]
    for n in range(15):
        sender, to = agents[n % 3], agents[(n + 1) % 3]
        extra: dict[str, Any] = {}
        if n % 4 == 0:
            extra["cc"] = [agents[(n + 2) % 3]]
        if n % 5 == 0:
            extra["importance"] = "urgent"
        if n % 3 == 1:
            extra["topic"] = "builds"
        if n % 6 == 2:
            extra["thread_id"] = "T-web"
        sent = await tools.send(sender, [to], subject=f"M{n}", body_md=f"body {n}", **extra)
        if n % 2:
            message_id = sent["deliveries"][0]["payload"]["id"]
            await tools.call("mark_message_read", project_key=PROJECT, agent_name=to, message_id=message_id)


async def pages(store: Store, size: int, filters: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Every page of the unified inbox with these filters, following the Older cursor."""
    out: list[list[dict[str, Any]]] = []
    cursor = ""
    while True:
        page = await oversight.inbox_page(store, PROJECT, cursor=cursor, limit=size, **filters)
        out.append([asdict(row) for row in page.rows])
        if not page.more or not page.rows:
            return out
        cursor = page.rows[-1].cursor


async def everything(store: Store) -> dict[str, Any]:
    views: dict[str, Any] = {}
    for n, filters in enumerate(FILTERS):
        for size in (1, 4, 200):
            views[f"inbox {n} {size}"] = await pages(store, size, filters)
    for name in ("BlueLake", "GreenCastle", "alpha-one"):
        for limit in (2, 50):
            views[f"outbox {name} {limit}"] = await oversight.outbox(store, PROJECT, name, limit)
    views["thread"] = await oversight.thread(store, PROJECT, "T-web")
    return views


async def test_web_view_reads_are_the_same_after_a_trim_to_one(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    store: Store = server.store  # type: ignore[attr-defined]
    await send_mixed(tools)
    before = await everything(store)
    assert len(before["inbox 0 200"][0]) == 15
    assert [len(p) for p in before["inbox 0 4"]] == [4, 4, 4, 3]

    await run_worker(server, settings)
    report = await trim_to(server, settings, 1)
    assert report.deleted >= 10  # most of the mail left Redis
    after = await everything(store)
    assert after == before

    # a page's rows are unique and continue the previous page with no gap
    flat = [row["item"]["id"] for page in after["inbox 0 1"] for row in page]
    assert flat == [row["item"]["id"] for row in after["inbox 0 200"][0]] and len(set(flat)) == 15
