"""Work that reads every agent of a project is bounded before it starts (docs/limits.md), however
many agents a stranger registers in it (joining is free): a broadcast, and the check of "a token
of any agent of the project". On a real redis-server, with SLOWLOG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastmcp import FastMCP
from helpers import PROJECT, Tools, make_settings

from broker.config import Settings

pytestmark = pytest.mark.integration

FEW_MS_US = 8_000  # "a few milliseconds", with a margin for a loaded machine
BOTS = 20_000  # before the bound one refused broadcast read them all: about 150 ms of Lua


@pytest.fixture
def backend(redis_url: str) -> str:  # SLOWLOG: the real redis-server only
    return redis_url


async def crowd(tools: Tools, server: FastMCP) -> str:
    """BlueLake, GreenCastle and BOTS more agents in the project; returns BlueLake's token."""
    store = server.store  # type: ignore[attr-defined]
    keys = store.keys
    project = await tools.project()
    token = (await tools.agent("BlueLake"))["registration_token"]
    await tools.agent("GreenCastle")
    # what BOTS calls of create_agent_identity leave behind, written directly to save time
    record = json.loads(await store.client().hget(keys.agents(project["slug"]), "greencastle"))
    active = await store.client().hget(keys.active(project["slug"]), "GreenCastle")
    pipe = store.client().pipeline(transaction=False)
    for i in range(BOTS):
        name = f"bot-{i}"
        pipe.hset(keys.agents(project["slug"]), name, json.dumps({**record, "name": name, "id": record["id"] + 1 + i}))
        pipe.hset(keys.active(project["slug"]), name, active)
    await pipe.execute()
    await store.client().config_set("slowlog-log-slower-than", 0)
    await store.client().slowlog_reset()
    return token


async def script_runs(server: FastMCP, script: str) -> list[int]:
    """Microseconds of each run of ``script`` since crowd() (SLOWLOG at threshold 0)."""
    store = server.store  # type: ignore[attr-defined]
    sha = store.script_sha(script)
    return [e["duration"] for e in await store.client().slowlog_get(1000) if sha in str(e.get("command", ""))]


async def test_a_broadcast_in_a_crowded_project_is_refused_before_reading_every_agent(
    tools: Tools, server: FastMCP
) -> None:
    token = await crowd(tools, server)
    error = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", sender_token=token, to=[], broadcast=True,
        subject="s", body_md="b",
    )  # fmt: skip
    runs = await script_runs(server, "send_message")
    assert runs and max(runs) < FEW_MS_US, runs
    assert error.startswith("INVALID_ARGUMENT: ") and "registered agents" in error, error
    store = server.store  # type: ignore[attr-defined]
    assert await store.client().xlen(store.keys.inbox("tmp-concurrent-test", "greencastle")) == 0  # nothing delivered


@pytest.fixture
def settings(backend: str, tmp_path: Path) -> Settings:
    return make_settings(backend, tmp_path, AGENT_AUTH="required")


async def test_any_caller_cannot_make_redis_search_a_crowded_project_for_a_token(tools: Tools, server: FastMCP) -> None:
    """purge_old_messages(dry_run=True) takes "a token of any agent of the project": with a made-up
    token, anyone made Redis decode every agent (about 60 ms with 20,000), as often as they liked."""
    await crowd(tools, server)
    for _ in range(3):
        error = await tools.error("purge_old_messages", project_key=PROJECT, dry_run=True, registration_token="x" * 43)
        assert error.startswith(("AUTHENTICATION_FAILED: ", "OPERATOR_REQUIRED: ")), error
    runs = await script_runs(server, "project_state")
    assert max(runs, default=0) < FEW_MS_US, runs
