"""Tools for the agent and project lifecycle: retire_agent, unretire_agent, deregister_agent,
hard_delete_agent, archive_project, unarchive_project, hard_delete_project,
purge_old_messages, list_window_identities, rename_window, expire_window.

As in the reference, the destructive and state tools take no ``format`` argument."""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP

from broker.config import Settings
from broker.identity import windows
from broker.lifecycle import erase, retention
from broker.lifecycle import state as lifecycle
from broker.mail.inputs import check_format
from broker.store.store import Store


def register(mcp: FastMCP, store: Store, settings: Settings, backend: str) -> None:
    @mcp.tool
    async def retire_agent(
        project_key: str, agent_name: str, registration_token: str | None = None, operator_token: str | None = None
    ) -> dict[str, Any]:
        """Retire an agent: no new mail until it registers again or is unretired."""
        return await lifecycle.retire_agent(store, project_key, agent_name, registration_token, operator_token)

    @mcp.tool
    async def unretire_agent(
        project_key: str, agent_name: str, registration_token: str | None = None, operator_token: str | None = None
    ) -> dict[str, Any]:
        """Make a retired agent active again."""
        return await lifecycle.unretire_agent(store, project_key, agent_name, registration_token, operator_token)

    @mcp.tool
    async def deregister_agent(
        project_key: str, agent_name: str, registration_token: str | None = None, operator_token: str | None = None
    ) -> dict[str, Any]:
        """Stop all mail to an agent; its data is kept."""
        return await lifecycle.deregister_agent(store, project_key, agent_name, registration_token, operator_token)

    @mcp.tool
    async def archive_project(
        project_key: str, registration_token: str | None = None, operator_token: str | None = None
    ) -> dict[str, Any]:
        """Archive a project: reads work; no new mail, reservations or agents until unarchived."""
        return await lifecycle.archive_project(store, project_key, registration_token, operator_token)

    @mcp.tool
    async def unarchive_project(
        project_key: str, registration_token: str | None = None, operator_token: str | None = None
    ) -> dict[str, Any]:
        """Reopen an archived project for new work."""
        return await lifecycle.unarchive_project(store, project_key, registration_token, operator_token)

    @mcp.tool
    async def hard_delete_agent(
        project_key: str,
        agent_name: str,
        confirmation: str,
        registration_token: str | None = None,
        operator_token: str | None = None,
    ) -> dict[str, Any]:
        """Delete an agent and its mail, reservations and archive folder for good. confirmation: "I UNDERSTAND"."""
        return await erase.hard_delete_agent(
            store, project_key, agent_name, confirmation, registration_token, operator_token
        )

    @mcp.tool
    async def hard_delete_project(
        project_key: str, confirmation: str, registration_token: str | None = None, operator_token: str | None = None
    ) -> dict[str, Any]:
        """Delete a project and everything in it for good. confirmation: "I UNDERSTAND"."""
        return await erase.hard_delete_project(store, project_key, confirmation, registration_token, operator_token)

    @mcp.tool
    async def purge_old_messages(
        project_key: str,
        max_age_days: int | None = None,
        dry_run: bool = True,
        registration_token: str | None = None,
        operator_token: str | None = None,
    ) -> dict[str, Any]:
        """Delete messages older than max_age_days (default RETENTION_MAX_AGE_DAYS) from inboxes and the index;
        dry_run=True only counts them."""
        return await retention.purge_old_messages(
            store, project_key, max_age_days, dry_run, registration_token, operator_token=operator_token
        )

    @mcp.tool
    async def list_window_identities(project_key: str, format: str | None = None) -> dict[str, Any]:
        """The project's live window identities (window id -> agent name)."""
        check_format(format)
        return await windows.list_window_identities(store, project_key)

    @mcp.tool
    async def rename_window(
        project_key: str, window_uuid: str, new_display_name: str, format: str | None = None
    ) -> dict[str, Any]:
        """Give a window identity a new name (used at its next register_agent)."""
        check_format(format)
        return await windows.rename_window(store, project_key, window_uuid, new_display_name)

    @mcp.tool
    async def expire_window(project_key: str, window_uuid: str, format: str | None = None) -> dict[str, Any]:
        """End a window identity; its next register_agent gets a new name."""
        check_format(format)
        return await windows.expire_window(store, project_key, window_uuid)
