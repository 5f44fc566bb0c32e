"""A broadcast's work is bounded before it starts (docs/limits.md), however many agents a
stranger registers in the project (joining is free): on a real redis-server, with SLOWLOG."""

from __future__ import annotations

import json

import pytest
from fastmcp import FastMCP
from helpers import PROJECT, Tools

pytestmark = pytest.mark.integration

FEW_MS_US = 8_000  # as in test_fairness: "a few milliseconds", with a margin for a loaded machine
BOTS = 20_000  # before the bound one refused broadcast read them all: about 150 ms of Lua


@pytest.fixture
def backend(redis_url: str) -> str:  # SLOWLOG: the real redis-server only
    return redis_url


async def test_a_broadcast_in_a_crowded_project_is_refused_before_reading_every_agent(
    tools: Tools, server: FastMCP
) -> None:
    store = server.store  # type: ignore[attr-defined]
    keys = store.keys
    project = await tools.project()
    await tools.agent("BlueLake")
    await tools.agent("GreenCastle")
    # what BOTS calls of create_agent_identity leave behind, written directly to save time
    record = json.loads(await store.redis.hget(keys.agents(project["slug"]), "greencastle"))
    active = await store.redis.hget(keys.active(project["slug"]), "GreenCastle")
    pipe = store.redis.pipeline(transaction=False)
    for i in range(BOTS):
        name = f"bot-{i}"
        pipe.hset(keys.agents(project["slug"]), name, json.dumps({**record, "name": name, "id": record["id"] + 1 + i}))
        pipe.hset(keys.active(project["slug"]), name, active)
    await pipe.execute()

    await store.redis.config_set("slowlog-log-slower-than", 0)
    await store.redis.slowlog_reset()
    error = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=[], broadcast=True, subject="s", body_md="b"
    )
    sha = store.script_sha("send_message")
    runs = [e["duration"] for e in await store.redis.slowlog_get(1000) if sha in str(e.get("command", ""))]
    assert runs and max(runs) < FEW_MS_US, runs
    assert error.startswith("INVALID_ARGUMENT: ") and "registered agents" in error, error
    assert await tools.inbox("GreenCastle") == []  # nothing was delivered
