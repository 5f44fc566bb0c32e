"""Servers built in one process share all state through Redis, as broker processes do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, drop_prefix, make_settings

from broker.config import Settings
from broker.server import build_server


@pytest.fixture
async def two_servers(settings: Settings) -> AsyncIterator[tuple[FastMCP, FastMCP]]:
    first, second = build_server(settings), build_server(settings)
    yield first, second
    await drop_prefix(first.store)  # type: ignore[attr-defined]
    await second.store.close()  # type: ignore[attr-defined]


async def test_two_servers_share_state(two_servers: tuple[FastMCP, FastMCP]) -> None:
    first, second = two_servers
    async with Client(first) as c1, Client(second) as c2:
        a, b = Tools(c1), Tools(c2)
        project = await a.project()
        assert await b.project() == project
        blue = await a.agent("BlueLake")
        assert (await b.call("whois", project_key=PROJECT, agent_name="bluelake"))["id"] == blue["id"]
        green = await b.agent("GreenCastle")
        assert green["project_id"] == project["id"]

        sent = await a.send("BlueLake", ["GreenCastle"], subject="from server one")
        message_id = sent["deliveries"][0]["payload"]["id"]
        [item] = await b.inbox("GreenCastle")
        assert (item["id"], item["subject"], item["from"]) == (message_id, "from server one", "BlueLake")

        read = await b.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=message_id)
        again = await a.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=message_id)
        assert again == read

        reply = await b.call(
            "reply_message", project_key=PROJECT, message_id=message_id, sender_name="GreenCastle", body_md="ok"
        )
        assert [m["id"] for m in await a.inbox("BlueLake")] == [reply["id"]]

        # A token issued by one server authenticates on the other.
        await b.call("whois", project_key=PROJECT, agent_name="BlueLake", registration_token=blue["registration_token"])
        error = await b.error("whois", project_key=PROJECT, agent_name="BlueLake", registration_token="wrong")
        assert error.startswith("AUTHENTICATION_FAILED:")


async def test_concurrent_sends_through_two_servers_get_distinct_ids(two_servers: tuple[FastMCP, FastMCP]) -> None:
    first, second = two_servers
    async with Client(first) as c1, Client(second) as c2:
        a, b = Tools(c1), Tools(c2)
        await a.project()
        await a.agent("BlueLake")
        await b.agent("GreenCastle")
        results = await asyncio.gather(
            *(
                (a if i % 2 else b).send("BlueLake", ["GreenCastle"], subject=f"m{i}", body_md=f"body {i}")
                for i in range(60)
            )
        )
        ids = [r["deliveries"][0]["payload"]["id"] for r in results]
        assert len(set(ids)) == 60
        inbox = await a.inbox("GreenCastle", limit=100, include_bodies=True)
        assert sorted(m["id"] for m in inbox) == sorted(ids)
        assert {m["id"]: m["body_md"] for m in inbox} == {mid: f"body {i}" for i, mid in enumerate(ids)}


async def test_servers_with_different_prefixes_are_isolated(settings: Settings, tmp_path: Path) -> None:
    mine = build_server(settings)
    theirs = build_server(make_settings(settings.data_redis_url, tmp_path))
    try:
        async with Client(mine) as c1, Client(theirs) as c2:
            a, b = Tools(c1), Tools(c2)
            await a.project()
            await a.agent("BlueLake")
            error = await b.error("whois", project_key=PROJECT, agent_name="BlueLake")
            assert error.startswith("NOT_FOUND:") and "ensure_project" in error
            other = await b.project()
            assert (await b.agent("BlueLake"))["project_id"] == other["id"]
            assert await b.inbox("BlueLake") == []
    finally:
        await drop_prefix(mine.store)  # type: ignore[attr-defined]
        await drop_prefix(theirs.store)  # type: ignore[attr-defined]
