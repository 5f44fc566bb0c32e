"""Tools of the product bus (the reference's gated cluster): ensure_product, products_link,
search_messages_product, fetch_inbox_product, summarize_thread_product, and the resource
resource://product/{key}. Not registered at all unless WORKTREES_ENABLED or GIT_IDENTITY_ENABLED."""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP

from broker.config import Settings
from broker.history.products import ProductReads
from broker.history.search import History
from broker.identity import products
from broker.mail.inputs import check_format
from broker.mcp.resources import guarded
from broker.persistence.index import Index
from broker.store.store import Store


def register(mcp: FastMCP, store: Store, settings: Settings, backend: str) -> None:
    if not settings.gated_tools_enabled:
        return
    reads = ProductReads(store, History(store, Index.from_settings(settings)))

    @mcp.tool
    async def ensure_product(
        product_key: str | None = None, name: str | None = None, format: str | None = None
    ) -> dict[str, Any]:
        """Find or create a product (a group of projects) by product_uid or name."""
        check_format(format)
        return await products.ensure_product(store, product_key, name)

    @mcp.tool
    async def products_link(product_key: str, project_key: str, format: str | None = None) -> dict[str, Any]:
        """Link a project to a product (idempotent)."""
        check_format(format)
        return await products.products_link(store, product_key, project_key)

    @mcp.tool
    async def search_messages_product(
        product_key: str,
        query: str,
        limit: int = 20,
        agent_name: str | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> list[dict[str, Any]]:
        """search_messages across the product's linked projects the agent is authenticated in."""
        check_format(format)
        return await reads.search(product_key, query, limit, agent_name, registration_token)

    @mcp.tool
    async def fetch_inbox_product(
        product_key: str,
        agent_name: str,
        limit: int = 20,
        urgent_only: bool = False,
        include_bodies: bool = False,
        since_ts: str | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> list[dict[str, Any]]:
        """The agent's inboxes in the product's linked projects, merged newest first."""
        check_format(format)
        return await reads.fetch_inbox(
            product_key, agent_name, limit, urgent_only, include_bodies, since_ts, registration_token
        )

    @mcp.tool
    async def summarize_thread_product(
        product_key: str,
        thread_id: str,
        include_examples: bool = False,
        llm_mode: bool = True,
        llm_model: str | None = None,
        per_thread_limit: int | None = None,
        agent_name: str | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """summarize_thread of one thread across the product's linked projects."""
        check_format(format)
        return await reads.summarize_thread(
            product_key, thread_id, include_examples, per_thread_limit, agent_name, registration_token
        )

    @mcp.resource("resource://product/{key}{?format}", mime_type="application/json", security=None)
    @guarded
    async def product_resource(key: str, format: str | None = None) -> dict[str, Any]:
        """A product and its linked projects."""
        check_format(format)
        return await products.product_view(store, key)
