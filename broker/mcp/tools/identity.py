"""Tools for projects and agent identities: health_check, ensure_project, register_agent,
create_agent_identity, whois."""

from __future__ import annotations

import asyncio
from typing import Any

from fastmcp import FastMCP

from broker.config import Settings
from broker.identity import agents as identity
from broker.identity.projects import project_slug
from broker.mail.inputs import check_format
from broker.mcp import notices
from broker.persistence.archive import recent_commits
from broker.persistence.commit_rows import recent_rows
from broker.persistence.index import shared_index
from broker.persistence.state import persistence_state
from broker.store.commands.persist_state import ping
from broker.store.store import Store


def register(mcp: FastMCP, store: Store, settings: Settings, backend: str) -> None:
    @mcp.tool
    async def health_check(format: str | None = None) -> dict[str, Any]:
        """Ping Redis; echo the configuration and the persistence state (workers, backlog, dead letters)."""
        check_format(format)
        await ping(store)
        return {
            "status": "ok",
            "environment": settings.environment,
            "http_host": settings.http_host,
            "http_port": settings.http_port,
            "database_url": settings.index_url_redacted,
            "redis": backend,
            "agent_auth": store.bindings.mode,
            "persistence": await persistence_state(store, settings),
        }

    @mcp.tool
    async def ensure_project(
        human_key: str, identity_mode: str | None = None, format: str | None = None
    ) -> dict[str, Any]:
        """Create the project for a repository (idempotent). human_key: its absolute path."""
        check_format(format)
        return await identity.ensure_project(store, human_key)

    @mcp.tool
    async def register_agent(
        project_key: str,
        program: str,
        model: str,
        name: str | None = None,
        task_description: str = "",
        attachments_policy: str = "auto",
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Register or update an agent; returns its profile and registration_token. Omit name to get one generated."""
        check_format(format)
        agent = await identity.register_agent(
            store, project_key, program, model, name, task_description, attachments_policy, registration_token
        )
        await notices.warn_renamed(name, agent["name"])
        return agent

    @mcp.tool
    async def create_agent_identity(
        project_key: str,
        program: str,
        model: str,
        name_hint: str | None = None,
        task_description: str = "",
        attachments_policy: str = "auto",
        format: str | None = None,
    ) -> dict[str, Any]:
        """Always create a new agent (name_hint used when valid and free)."""
        check_format(format)
        agent = await identity.create_agent_identity(
            store, project_key, program, model, name_hint, task_description, attachments_policy
        )
        await notices.warn_renamed(name_hint, agent["name"])
        return agent

    @mcp.tool
    async def whois(
        project_key: str,
        agent_name: str,
        registration_token: str | None = None,
        include_recent_commits: bool = True,
        commit_limit: int = 5,
        format: str | None = None,
    ) -> dict[str, Any]:
        """An agent's profile and the archive's newest commits (commit_limit 1..50)."""
        check_format(format)
        agent = await identity.whois(store, project_key, agent_name, registration_token)
        # A commit's summary names a message's sender, recipients and subject: under `required`
        # the agent sees only commits of its own folder (its profile, its mail), not the
        # repository-wide list of the reference, which spans every agent and project.
        own = None
        slug = await project_slug(store, project_key)
        if store.bindings.mode == "required":
            own = f"projects/{slug}/agents/{agent['name']}/"
        # The reference always has recent_commits: empty when not asked for.
        limit = max(1, min(commit_limit, 50))
        if not include_recent_commits:
            agent["recent_commits"] = []
        elif (settings.archive_path / "HEAD").exists():
            agent["recent_commits"] = await recent_commits(settings, limit, own)
        else:  # a broker without the archive: the commits that carried mail, from the index
            index = shared_index(settings)
            mine = (slug, agent["name"]) if own else (None, None)
            agent["recent_commits"] = await asyncio.to_thread(recent_rows, index, limit, *mine)
        return agent
