"""Realtime delivery: the wait_for_mail tool (a long poll woken by the doorbell) and MCP push
(subscriptions/listen, broker/realtime/push.py)."""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP

from broker.config import Settings
from broker.realtime import arrivals
from broker.realtime.push import enable_push
from broker.store.store import Store


def register(mcp: FastMCP, store: Store, settings: Settings, backend: str) -> None:
    enable_push(mcp, store)

    @mcp.tool
    async def wait_for_mail(
        project_key: str,
        agent_name: str,
        timeout_seconds: float = 30,
        after_id: str | int | None = None,
        include_bodies: bool = False,
        limit: int = 20,
        registration_token: str | None = None,
    ) -> dict[str, Any]:
        """Long-poll the inbox: returns {messages, cursor, timed_out} as soon as there is mail newer than after_id
        (without it: unread mail, else the next arrival), or after timeout_seconds (0-120). Pass the returned cursor
        as the next after_id."""
        return await arrivals.wait_for_mail(
            store, project_key, agent_name, timeout_seconds, after_id, include_bodies, limit, registration_token
        )
