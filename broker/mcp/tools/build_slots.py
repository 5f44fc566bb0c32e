"""Tools for build slots (the reference's gated cluster): acquire_build_slot, renew_build_slot,
release_build_slot. Registered only with WORKTREES_ENABLED or GIT_IDENTITY_ENABLED."""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP

from broker.config import Settings
from broker.mail.inputs import check_format
from broker.reservations import build_slots
from broker.store.store import Store


def register(mcp: FastMCP, store: Store, settings: Settings, backend: str) -> None:
    if not settings.gated_tools_enabled:
        return

    @mcp.tool
    async def acquire_build_slot(
        project_key: str,
        agent_name: str,
        slot: str,
        branch: str | None = None,
        ttl_seconds: int = 3600,
        exclusive: bool = True,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Lease a named build slot (advisory: always granted; conflicts list other live leases
        when either side is exclusive). branch defaults to the project's checked-out branch."""
        check_format(format)
        return await build_slots.acquire(
            store, project_key, agent_name, slot, branch, ttl_seconds, exclusive, registration_token
        )

    @mcp.tool
    async def renew_build_slot(
        project_key: str,
        agent_name: str,
        slot: str,
        branch: str | None = None,
        extend_seconds: int = 1800,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Extend your live build slot lease (new expiry = max(now, old expiry) + extend_seconds)."""
        check_format(format)
        return await build_slots.renew(store, project_key, agent_name, slot, branch, extend_seconds, registration_token)

    @mcp.tool
    async def release_build_slot(
        project_key: str,
        agent_name: str,
        slot: str,
        branch: str | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Release your build slot lease."""
        check_format(format)
        return await build_slots.release(store, project_key, agent_name, slot, branch, registration_token)
