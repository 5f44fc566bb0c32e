"""Window identities (MCP_AGENT_MAIL_WINDOW_ID): register_agent without a name keeps the window's
name; list_window_identities, rename_window and expire_window, on fakeredis and a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, drop_prefix, make_settings

from broker.identity.names import is_generated_shape
from broker.server import build_server

WINDOW = str(uuid4())


@pytest.fixture
async def window_tools(backend: str, tmp_path: Path) -> AsyncIterator[Tools]:
    """A broker whose process runs in a window with MCP_AGENT_MAIL_WINDOW_ID set."""
    server: FastMCP = build_server(make_settings(backend, tmp_path, MCP_AGENT_MAIL_WINDOW_ID=WINDOW.upper()))
    try:
        async with Client(server) as client:
            yield Tools(client)
    finally:
        await drop_prefix(server.store)  # type: ignore[attr-defined]


async def windows(tools: Tools) -> dict[str, Any]:
    return await tools.call("list_window_identities", project_key=PROJECT)


async def test_a_window_keeps_its_name(window_tools: Tools) -> None:
    tools = window_tools
    await tools.project()
    assert await windows(tools) == {"identities": [], "count": 0}
    first = await tools.agent()
    assert first["window_id"] == WINDOW and is_generated_shape(first["name"])
    assert first["window_display_name"] == first["name"]
    again = await tools.agent(task_description="second session")
    assert (again["id"], again["name"], again["window_id"]) == (first["id"], first["name"], WINDOW)
    assert again["task_description"] == "second session"
    named = await tools.agent("GreenCastle")  # an explicit name does not involve the window
    assert "window_id" not in named

    listed = await windows(tools)
    assert listed["count"] == 1
    window = listed["identities"][0]
    assert window.keys() == {
        "id", "window_uuid", "display_name", "created_ts", "last_active_ts", "expires_ts", "age_days"
    }  # fmt: skip
    assert (window["window_uuid"], window["display_name"], window["age_days"]) == (WINDOW, first["name"], 0)
    expires = datetime.fromisoformat(window["expires_ts"])
    assert abs((expires - datetime.now(UTC) - timedelta(days=30)).total_seconds()) < 60

    renamed = await tools.call("rename_window", project_key=PROJECT, window_uuid=WINDOW, new_display_name="RedStone")
    assert renamed == {
        "id": window["id"],
        "window_uuid": WINDOW,
        "display_name": "RedStone",
        "old_display_name": first["name"],
        "last_active_ts": window["last_active_ts"],
    }
    moved = await tools.agent()
    assert (moved["name"], moved["window_display_name"]) == ("RedStone", "RedStone")

    expired = await tools.call("expire_window", project_key=PROJECT, window_uuid=WINDOW)
    assert expired.keys() == {"window_uuid", "display_name", "expired", "expired_at"}
    assert (expired["window_uuid"], expired["display_name"], expired["expired"]) == (WINDOW, "RedStone", True)
    assert await windows(tools) == {"identities": [], "count": 0}
    fresh = await tools.agent()
    assert fresh["name"] not in ("RedStone", first["name"]) and fresh["window_display_name"] == fresh["name"]
    deleted = await tools.call(
        "hard_delete_agent", project_key=PROJECT, agent_name=fresh["name"], confirmation="I UNDERSTAND"
    )
    assert deleted["deleted_counts"]["window_identities"] == 1
    assert (await windows(tools))["count"] == 0


async def test_window_errors(tools: Tools, trio: dict[str, Any]) -> None:
    assert "window_id" not in trio["agents"]["BlueLake"]  # no MCP_AGENT_MAIL_WINDOW_ID here
    for tool, extra in (("rename_window", {"new_display_name": "RedStone"}), ("expire_window", {})):
        error = await tools.error(tool, project_key=PROJECT, window_uuid="not-a-uuid", **extra)
        assert error.startswith("INVALID_WINDOW_UUID:"), error
        error = await tools.error(tool, project_key=PROJECT, window_uuid=str(uuid4()), **extra)
        assert error.startswith("WINDOW_NOT_FOUND:"), error
        error = await tools.error(tool, project_key="/tmp/nowhere", window_uuid=str(uuid4()), **extra)
        assert error.startswith("NOT_FOUND:"), error
    for bad in ("alpha-one", "", "BlueLakes"):
        error = await tools.error("rename_window", project_key=PROJECT, window_uuid=str(uuid4()), new_display_name=bad)
        assert error.startswith("INVALID_DISPLAY_NAME:"), error
    error = await tools.error("list_window_identities", project_key="/tmp/nowhere")
    assert error.startswith("NOT_FOUND:")
