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
        """Retire an agent: it keeps its mail and profile but receives no new messages
        (registering it again, or unretire_agent, makes it active). Acts as the agent (its
        registration_token) or as the operator (operator_token)."""
        return await lifecycle.retire_agent(store, project_key, agent_name, registration_token, operator_token)

    @mcp.tool
    async def unretire_agent(
        project_key: str, agent_name: str, registration_token: str | None = None, operator_token: str | None = None
    ) -> dict[str, Any]:
        """Make a retired agent active again (as the agent, or the operator)."""
        return await lifecycle.unretire_agent(store, project_key, agent_name, registration_token, operator_token)

    @mcp.tool
    async def deregister_agent(
        project_key: str, agent_name: str, registration_token: str | None = None, operator_token: str | None = None
    ) -> dict[str, Any]:
        """Stop an agent from receiving mail (contact_policy block_all) and mark its task
        description "[DEREGISTERED at <time>]"; its data is kept (as the agent, or the operator)."""
        return await lifecycle.deregister_agent(store, project_key, agent_name, registration_token, operator_token)

    @mcp.tool
    async def archive_project(
        project_key: str, registration_token: str | None = None, operator_token: str | None = None
    ) -> dict[str, Any]:
        """Archive a project: reads keep working, but no new messages, reservations or agents
        until unarchive_project. Under AGENT_AUTH=required needs the broker's operator_token."""
        return await lifecycle.archive_project(store, project_key, registration_token, operator_token)

    @mcp.tool
    async def unarchive_project(
        project_key: str, registration_token: str | None = None, operator_token: str | None = None
    ) -> dict[str, Any]:
        """Reopen an archived project for new work (operator_token under AGENT_AUTH=required)."""
        return await lifecycle.unarchive_project(store, project_key, registration_token, operator_token)

    @mcp.tool
    async def hard_delete_agent(
        project_key: str,
        agent_name: str,
        confirmation: str,
        registration_token: str | None = None,
        operator_token: str | None = None,
    ) -> dict[str, Any]:
        """Delete an agent for good: its profile, the messages it sent (from every inbox), its
        copies of received mail, its reservations and its archive folder. confirmation must be
        exactly "I UNDERSTAND"; under AGENT_AUTH=required needs the broker's operator_token."""
        return await erase.hard_delete_agent(
            store, project_key, agent_name, confirmation, registration_token, operator_token
        )

    @mcp.tool
    async def hard_delete_project(
        project_key: str, confirmation: str, registration_token: str | None = None, operator_token: str | None = None
    ) -> dict[str, Any]:
        """Delete a project for good: every agent, message and reservation, in Redis, the index and
        the archive. confirmation must be exactly "I UNDERSTAND"; under AGENT_AUTH=required needs
        the broker's operator_token (an agent's token is not enough)."""
        return await erase.hard_delete_project(store, project_key, confirmation, registration_token, operator_token)

    @mcp.tool
    async def purge_old_messages(
        project_key: str,
        max_age_days: int | None = None,
        dry_run: bool = True,
        registration_token: str | None = None,
        operator_token: str | None = None,
    ) -> dict[str, Any]:
        """Delete the project's messages older than max_age_days (default RETENTION_MAX_AGE_DAYS,
        180) from every inbox and the search index; dry_run=True (the default) only counts them.
        The Git archive keeps them. Under AGENT_AUTH=required a purge needs the broker's
        operator_token; a dry run needs any agent's registration_token."""
        return await retention.purge_old_messages(
            store, project_key, max_age_days, dry_run, registration_token, operator_token=operator_token
        )

    @mcp.tool
    async def list_window_identities(project_key: str, format: str | None = None) -> dict[str, Any]:
        """The project's live window identities (MCP_AGENT_MAIL_WINDOW_ID -> agent name)."""
        check_format(format)
        return await windows.list_window_identities(store, project_key)

    @mcp.tool
    async def rename_window(
        project_key: str, window_uuid: str, new_display_name: str, format: str | None = None
    ) -> dict[str, Any]:
        """Give a window identity another adjective+noun name (used at its next register_agent)."""
        check_format(format)
        return await windows.rename_window(store, project_key, window_uuid, new_display_name)

    @mcp.tool
    async def expire_window(project_key: str, window_uuid: str, format: str | None = None) -> dict[str, Any]:
        """End a window identity now; its next register_agent gets a new name."""
        check_format(format)
        return await windows.expire_window(store, project_key, window_uuid)
