"""Helpers shared by several test modules."""

from __future__ import annotations

import json
from typing import Any

from fastmcp import FastMCP
from helpers import PROJECT, Tools


async def policy(tools: Tools, agent: str, value: str) -> dict[str, Any]:
    return await tools.call("set_contact_policy", project_key=PROJECT, agent_name=agent, policy=value)


async def request(tools: Tools, frm: str, to: str, **extra: Any) -> dict[str, Any]:
    return await tools.call("request_contact", project_key=PROJECT, from_agent=frm, to_agent=to, **extra)


async def respond(tools: Tools, to: str, frm: str, accept: bool = True, **extra: Any) -> dict[str, Any]:
    return await tools.call("respond_contact", project_key=PROJECT, to_agent=to, from_agent=frm, accept=accept, **extra)


async def retire(server: FastMCP, slug: str, name: str) -> None:
    """Mark an agent retired the way the lifecycle tools do (the agent record's retired_at)."""
    store = server.store  # type: ignore[attr-defined]
    key = store.keys.agents(slug)
    record = json.loads(await store.client().hget(key, name.lower()))
    record["retired_at"] = "2025-01-01T00:00:00+00:00"
    await store.client().hset(key, name.lower(), json.dumps(record))
