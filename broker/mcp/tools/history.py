"""Tools that read history from the SQLite index: search_messages, summarize_thread,
summarize_recent, fetch_summary. They see a message once the persistence worker has written
it (the persistence lag; see docs/durability.md)."""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP

from broker.config import Settings
from broker.history.search import History
from broker.mail.inputs import check_format
from broker.persistence.index import Index
from broker.store.store import Store


def register(mcp: FastMCP, store: Store, settings: Settings, backend: str) -> None:
    history = History(store, Index.from_settings(settings))

    @mcp.tool
    async def search_messages(
        project_key: str,
        query: str,
        limit: int = 20,
        agent_name: str | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> list[dict[str, Any]]:
        """Full-text search (FTS5: phrases, prefix*, AND/OR/NOT, subject:/body:) of the agent's sent and received mail,
        best first."""
        check_format(format)
        # A list result reaches the wire as {"result": [...]}, the reference's shape.
        return await history.search(project_key, query, limit, agent_name, registration_token)

    @mcp.tool
    async def summarize_thread(
        project_key: str,
        thread_id: str,
        include_examples: bool = False,
        llm_mode: bool = True,
        llm_model: str | None = None,
        per_thread_limit: int = 50,
        agent_name: str | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Heuristic summary of a thread, or of comma-separated thread ids (no LLM is used)."""
        check_format(format)
        return await history.summarize_thread(
            project_key, thread_id, include_examples, per_thread_limit, agent_name, registration_token
        )

    @mcp.tool
    async def summarize_recent(
        project_key: str,
        since_hours: float = 1.0,
        llm_mode: bool = True,
        llm_model: str | None = None,
        max_messages: int = 500,
        agent_name: str | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Summary of the mail agent_name sent or received in the last since_hours (kept 5 minutes)."""
        check_format(format)
        return await history.summarize_recent(project_key, since_hours, max_messages, agent_name, registration_token)

    @mcp.tool
    async def fetch_summary(
        project_key: str,
        since_hours: float = 24.0,
        limit: int = 5,
        agent_name: str | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored summaries for agent_name from the last since_hours, newest first."""
        check_format(format)
        return await history.fetch_summary(project_key, since_hours, limit, agent_name, registration_token)
