"""Inputs that crashed with UNHANDLED_EXCEPTION get coded errors and change nothing: huge
max_age_days, NUL bytes in project keys (the guard's path inputs are in test_guard_safety)."""

from __future__ import annotations

from typing import Any

import pytest
from fastmcp import FastMCP
from helpers import PROJECT, Tools, snapshot


async def rejected(tools: Tools, server: FastMCP, tool: str, args: dict[str, Any], code: str) -> str:
    store = server.store  # type: ignore[attr-defined]
    before = await snapshot(store)
    error = await tools.error(tool, **args)
    assert error.startswith(f"{code}: "), error[:300]
    assert await snapshot(store) == before, f"{tool} changed stored state although it failed"
    return error


@pytest.mark.parametrize("days", [2**31, 2**63, 2**70, 36_501, 0, -5])
async def test_purge_with_an_age_out_of_range(tools: Tools, server: FastMCP, trio: Any, days: int) -> None:
    await tools.send("BlueLake", ["GreenCastle"])
    args = {"project_key": PROJECT, "max_age_days": days, "dry_run": False}
    error = await rejected(tools, server, "purge_old_messages", args, "INVALID_ARGUMENT")
    assert "at least 1 and at most 36500" in error


async def test_purge_with_a_cutoff_before_1970_purges_nothing(tools: Tools, trio: Any) -> None:
    await tools.send("BlueLake", ["GreenCastle"], subject="kept")
    done = await tools.call("purge_old_messages", project_key=PROJECT, max_age_days=36_500, dry_run=False)
    assert (done["status"], done["messages_affected"]) == ("purged", 0)
    assert [m["subject"] for m in await tools.inbox("GreenCastle")] == ["kept"]


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("ensure_project", {"human_key": "/tmp/con\x00current-test"}),
        ("fetch_inbox", {"project_key": "/tmp/concurrent-test\x00", "agent_name": "BlueLake"}),
        ("register_agent", {"project_key": "/tmp/\x00", "program": "claude-code", "model": "opus-4"}),
    ],
)
async def test_nul_in_a_project_path(tools: Tools, server: FastMCP, trio: Any, tool: str, args: dict[str, Any]) -> None:
    error = await rejected(tools, server, tool, args, "INVALID_ARGUMENT")
    assert "NUL" in error
