"""Workflow macro tools: macro_start_session, macro_prepare_thread, macro_file_reservation_cycle
(macro_contact_handshake lives with the contact tools). Each is one call composing the domain
functions of the single tools; see broker/macros/workflows.py."""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP

from broker.config import Settings
from broker.history.search import History
from broker.macros import workflows as macros
from broker.mail.inputs import check_format
from broker.mcp import notices
from broker.persistence.index import Index
from broker.store.store import Store


def register(mcp: FastMCP, store: Store, settings: Settings, backend: str) -> None:
    history = History(store, Index.from_settings(settings))

    @mcp.tool
    async def macro_start_session(
        human_key: str,
        program: str,
        model: str,
        task_description: str = "",
        agent_name: str | None = None,
        registration_token: str | None = None,
        file_reservation_paths: list[str] | None = None,
        file_reservation_reason: str = "macro-session",
        file_reservation_ttl_seconds: int = 3600,
        inbox_limit: int = 10,
        format: str | None = None,
    ) -> dict[str, Any]:
        """In one call: ensure the project (human_key: its absolute path), register the agent, reserve
        file_reservation_paths and list the newest inbox_limit messages."""
        check_format(format)
        result = await macros.start_session(
            store,
            human_key,
            program,
            model,
            task_description,
            agent_name,
            registration_token,
            file_reservation_paths,
            file_reservation_reason,
            file_reservation_ttl_seconds,
            inbox_limit,
        )
        await notices.warn_all(result)
        await notices.warn_renamed(agent_name, result["agent"]["name"])
        return result

    @mcp.tool
    async def macro_prepare_thread(
        project_key: str,
        thread_id: str,
        program: str,
        model: str,
        agent_name: str | None = None,
        registration_token: str | None = None,
        task_description: str = "",
        register_if_missing: bool = True,
        include_examples: bool = True,
        inbox_limit: int = 10,
        include_inbox_bodies: bool = False,
        llm_mode: bool = True,
        llm_model: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """In one call: register the agent (or only authenticate it: register_if_missing=False), summarize the thread
        as it sees it and list its inbox."""
        check_format(format)
        result = await macros.prepare_thread(
            store,
            history,
            project_key,
            thread_id,
            program,
            model,
            agent_name,
            registration_token,
            task_description,
            register_if_missing,
            include_examples,
            inbox_limit,
            include_inbox_bodies,
        )
        await notices.warn_renamed(agent_name, result["agent"]["name"])
        return result

    @mcp.tool
    async def macro_file_reservation_cycle(
        project_key: str,
        agent_name: str,
        paths: list[str],
        ttl_seconds: int = 3600,
        exclusive: bool = True,
        reason: str = "macro-file_reservation",
        auto_release: bool = False,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """file_reservation_paths, then with auto_release the release of what it granted."""
        check_format(format)
        result = await macros.file_reservation_cycle(
            store, project_key, agent_name, paths, ttl_seconds, exclusive, reason, auto_release, registration_token
        )
        await notices.warn_all(result)
        return result
