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
        """Wait for mail: returns {messages (inbox items, oldest first), cursor, timed_out}.

        Without after_id: at once with the agent's unread mail if it has any, else at the next
        arrival. With after_id (the cursor a previous call returned, or a message id): as soon as
        anything newer than it is in the inbox. Pass the returned cursor as after_id next time so
        nothing is missed or repeated. Waits at most timeout_seconds (0-120); read-only."""
        return await arrivals.wait_for_mail(
            store, project_key, agent_name, timeout_seconds, after_id, include_bodies, limit, registration_token
        )
