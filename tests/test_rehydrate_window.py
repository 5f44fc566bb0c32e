"""``broker rehydrate`` restores the hot window only (issue 19, point 6): per inbox and outbox the
newest HOT_INBOX_MAX_MESSAGES within HOT_RETENTION_SECONDS, whole messages, plus what any
holder's window needs; the rest stays in the index, marked in the project's cold hash so every
read still answers (on fakeredis and a real Redis; the byte-for-byte comparison with the live
state is in test_rehydrate_exact.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cold_write_helpers import WINDOW, window_mail
from fastmcp import FastMCP
from helpers import PROJECT, Tools, make_settings
from persist_helpers import run_worker

from broker.config import Settings
from broker.lifecycle.rehydrate import rehydrate_all

SLUG = "tmp-concurrent-test"


@pytest.fixture
def settings(backend: str, tmp_path: Path) -> Settings:
    return make_settings(backend, tmp_path, **WINDOW)


async def read(tools: Tools, uri: str) -> Any:
    return json.loads((await tools.client.read_resource(uri))[0].text)


async def shown(tools: Tools, ids: list[int]) -> dict[str, Any]:
    """What the single reads show: each message to each agent that may see it, unread counts."""
    out: dict[str, Any] = {"agents": await read(tools, f"resource://agents/{SLUG}")}
    for ident in ids:
        for agent in ("BlueLake", "GreenCastle", "alpha-one"):
            try:
                out[f"{ident}/{agent}"] = await read(tools, f"resource://message/{ident}?project={SLUG}&agent={agent}")
            except Exception as exc:  # not visible to that agent: the same error before and after
                out[f"{ident}/{agent}"] = type(exc).__name__
    return out


async def lose_redis(server: FastMCP) -> None:
    store = server.store  # type: ignore[attr-defined]
    await store.client().delete(*[key async for key in store.client().scan_iter(match=f"{store.keys.prefix}:*")])


async def test_rehydrate_restores_the_window_and_marks_the_rest_cold(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    mail = await window_mail(tools, PROJECT)
    await run_worker(server, settings)
    before = await shown(tools, mail["ids"])
    await lose_redis(server)

    report = await rehydrate_all(settings, server.store.redis_url)  # type: ignore[attr-defined]
    assert (report.projects, report.messages, report.cold_messages) == ([SLUG], 4, 2)
    store = server.store  # type: ignore[attr-defined]
    client, keys = store.client(), store.keys
    for ident in mail["hot"]:
        assert await client.exists(keys.message(SLUG, ident))
    for ident in mail["cold"]:
        assert not await client.exists(keys.message(SLUG, ident))
        assert not await client.hexists(keys.bodies(SLUG), str(ident))
    assert [f["m"] for _, f in await client.xrange(keys.inbox(SLUG, "GreenCastle"))] == [
        str(i) for i in mail["hot"][:3]
    ]
    cold = await client.hgetall(keys.cold(SLUG))
    assert set(cold) == {"in:greencastle", "out:bluelake", "unread:greencastle", "t"}
    assert cold["unread:greencastle"] == "1"  # m3; m1 was read
    assert await shown(tools, mail["ids"]) == before  # unread counts included

    # a write on a message left in the index works and counts once
    unread = {a["name"]: a["unread_count"] for a in before["agents"]["agents"]}
    assert unread == {"BlueLake": 1, "GreenCastle": 4, "alpha-one": 0}
    await tools.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=mail["cold"][1])
    counts = {a["name"]: a["unread_count"] for a in (await read(tools, f"resource://agents/{SLUG}"))["agents"]}
    assert counts == {"BlueLake": 1, "GreenCastle": 3, "alpha-one": 0}  # m2, m4, m5


async def test_rehydrate_leaves_mail_older_than_the_retention_in_the_index(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    mail = await window_mail(tools, PROJECT)
    await run_worker(server, settings)
    before = await shown(tools, mail["ids"])
    await lose_redis(server)
    later = datetime.now(UTC) + timedelta(seconds=settings.hot_retention_seconds + 60)
    report = await rehydrate_all(settings, server.store.redis_url, now=later)  # type: ignore[attr-defined]
    assert (report.messages, report.cold_messages) == (0, 6)
    store = server.store  # type: ignore[attr-defined]
    assert [key async for key in store.client().scan_iter(match=f"{store.keys.prefix}:*msg:*")] == []
    assert await shown(tools, mail["ids"]) == before
    # ids go on past the index's: a new message gets a new id
    sent = await tools.send("BlueLake", ["GreenCastle"], subject="after")
    assert int(sent["deliveries"][0]["payload"]["id"]) > max(mail["ids"])
    thread = await read(tools, f"resource://thread/{mail['ids'][0]}?project={SLUG}&agent=GreenCastle")
    assert [m["id"] for m in thread["messages"]] == [mail["ids"][0]]
