"""Tools for file reservations: file_reservation_paths, release_file_reservations,
renew_file_reservations, force_release_file_reservation, install_precommit_guard,
uninstall_precommit_guard, and the resource resource://file_reservations/{slug}."""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP

from broker.config import Settings
from broker.mail.inputs import check_format
from broker.mail.views import flag, limit_of
from broker.mcp import notices
from broker.mcp.resources import guarded
from broker.reservations import guard
from broker.reservations import service as reservations
from broker.store.store import Store


def register(mcp: FastMCP, store: Store, settings: Settings, backend: str) -> None:
    @mcp.tool
    async def file_reservation_paths(
        project_key: str,
        agent_name: str,
        paths: list[str],
        ttl_seconds: int = 3600,
        exclusive: bool = True,
        reason: str = "",
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Reserve paths before editing. Advisory: always granted; conflicts lists other agents' overlapping
        reservations. Patterns are relative to the project root: 'src/', 'src/**/*.py'."""
        check_format(format)
        result = await reservations.reserve(
            store, project_key, agent_name, paths, ttl_seconds, exclusive, reason, registration_token
        )
        await notices.warn_all(result)
        return result

    @mcp.tool
    async def release_file_reservations(
        project_key: str,
        agent_name: str,
        paths: list[str] | None = None,
        file_reservation_ids: list[int] | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Release your reservations with these patterns or ids, else all of them."""
        check_format(format)
        return await reservations.release(
            store, project_key, agent_name, paths, file_reservation_ids, registration_token
        )

    @mcp.tool
    async def renew_file_reservations(
        project_key: str,
        agent_name: str,
        extend_seconds: int = 1800,
        paths: list[str] | None = None,
        file_reservation_ids: list[int] | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Extend your live reservations by extend_seconds."""
        check_format(format)
        result = await reservations.renew(
            store, project_key, agent_name, extend_seconds, paths, file_reservation_ids, registration_token
        )
        await notices.warn_all(result)
        return result

    @mcp.tool
    async def force_release_file_reservation(
        project_key: str,
        agent_name: str,
        file_reservation_id: int,
        notify_previous: bool = True,
        note: str = "",
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Release another agent's reservation if its holder looks stale; the holder is told by mail."""
        check_format(format)
        return await reservations.force_release(
            store, project_key, agent_name, file_reservation_id, notify_previous, note, registration_token
        )

    @mcp.tool
    async def install_precommit_guard(
        project_key: str,
        code_repo_path: str,
        agent_name: str | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Install a git pre-commit hook in code_repo_path that refuses commits touching files another agent holds
        exclusively (an existing hook is chained)."""
        check_format(format)
        return await guard.install_for_project(store, project_key, code_repo_path, agent_name, registration_token)

    @mcp.tool
    async def uninstall_precommit_guard(
        code_repo_path: str,
        project_key: str | None = None,
        agent_name: str | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Remove the broker's pre-commit hook, restoring any hook it chained."""
        check_format(format)
        return await guard.uninstall(store, code_repo_path, project_key, agent_name, registration_token)

    # security=None: a project may be named by its (URL-encoded) absolute path
    @mcp.resource(
        "resource://file_reservations/{slug}{?active_only,limit,format}", mime_type="application/json", security=None
    )
    @guarded
    async def file_reservations_resource(
        slug: str, active_only: str | None = None, limit: str | None = None, format: str | None = None
    ) -> list[dict[str, Any]]:
        """A project's file reservations (live ones; with active_only=false also the `limit` most
        recently ended, default 100), oldest first."""
        check_format(format)
        return await reservations.list_reservations(
            store, slug, flag(active_only, "active_only", True), limit_of(limit, reservations.ENDED_LISTED)
        )
