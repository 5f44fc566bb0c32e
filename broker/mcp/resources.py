"""The MCP resources, with the reference's URI templates and result shapes (its §4).

Thin like the tools: each resource parses its query parameters (they arrive as text) and calls
one read in broker/mail/views.py (mail), broker/identity/views.py (projects, agents) or
broker/mcp/tooling.py (configuration and the tool catalog). A failure reaches the client as
``CODE: message`` (a ResourceError carrying the BrokerError's text). The file reservations
resource is registered with its tools (broker/mcp/tools/reservations.py).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastmcp import FastMCP
from fastmcp.exceptions import ResourceError

from broker.config import Settings
from broker.errors import BrokerError
from broker.identity import repository
from broker.identity import views as project_views
from broker.identity.projects import project_slug
from broker.identity.slugs import known_slug
from broker.mail import views
from broker.mail.inputs import check_format
from broker.mail.views import flag, limit_of, number
from broker.mcp import tooling
from broker.store.store import Store

JSON = "application/json"


class ResourceFailure(ResourceError):
    """A BrokerError raised while reading a resource (it is the caller's
    mistake, not the server's, so logged at DEBUG), its text is the error's ``CODE: message``."""

    def __init__(self, error: BrokerError) -> None:
        super().__init__(str(error), log_level=logging.DEBUG)
        self.code = error.code


def guarded(read: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(read)
    async def wrapper(**kwargs: Any) -> Any:
        try:
            return await read(**kwargs)
        except BrokerError as exc:
            raise ResourceFailure(exc) from exc

    return wrapper


def register(mcp: FastMCP, store: Store, settings: Settings, backend: str) -> None:
    def resource(uri: str) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
        def decorate(read: Callable[..., Awaitable[Any]]) -> Any:
            # security=None: FastMCP's default screening refuses absolute paths in parameters,
            # and a project is named by its absolute path (values only reach Redis keys).
            return mcp.resource(uri, mime_type=JSON, security=None)(guarded(read))

        return decorate

    def static(uri: str, name: str, build: Callable[[], Any]) -> None:
        """A resource without path parameters, registered bare and with ``{?format}``."""
        description = inspect.getdoc(build)

        async def plain() -> Any:
            value = build()
            return await value if inspect.isawaitable(value) else value

        async def formatted(format: str | None = None) -> Any:
            check_format(format)
            return await plain()

        mcp.resource(uri, name=name, description=description, mime_type=JSON)(guarded(plain))
        mcp.resource(
            uri + "{?format}", name=f"{name}_formatted", description=description, mime_type=JSON, security=None
        )(guarded(formatted))

    def tools() -> dict[str, Any]:
        return tooling.registered_tools(mcp)

    # -- configuration and tooling --------------------------------------------------------
    def environment() -> dict[str, Any]:
        """The broker's environment, index location and HTTP address (no secrets)."""
        return tooling.environment(settings)

    def directory() -> dict[str, Any]:
        """The tools this server offers, grouped by cluster, with their summaries, plus playbooks."""
        return tooling.directory(tools())

    def schemas() -> dict[str, Any]:
        """Every tool's required and optional arguments and their JSON schemas."""
        return tooling.schemas(tools())

    def metrics() -> dict[str, Any]:
        """Calls and errors per tool, counted by this broker process since it started."""
        registered = tools()
        complexity = {name: tooling.complexity(tool) for name, tool in registered.items()}
        return {"generated_at": tooling.now_iso(), "tools": mcp.usage.metrics(complexity)}  # type: ignore[attr-defined]

    def locks() -> dict[str, Any]:
        """Archive lock files (always empty: the broker keeps none that can go stale)."""
        return tooling.locks()

    async def projects() -> list[dict[str, Any]]:
        """Every project, oldest first (test and demo projects included)."""
        return await project_views.list_projects(store)

    for uri, name, build in (
        ("resource://config/environment", "config_environment", environment),
        ("resource://tooling/directory", "tooling_directory", directory),
        ("resource://tooling/schemas", "tooling_schemas", schemas),
        ("resource://tooling/metrics", "tooling_metrics", metrics),
        ("resource://tooling/locks", "tooling_locks", locks),
        ("resource://tooling/projects", "tooling_projects", projects),
    ):
        static(uri, name, build)

    @resource("resource://tooling/capabilities/{agent}{?project,format}")
    async def tooling_capabilities(agent: str, project: str | None = None, format: str | None = None) -> Any:
        """Capabilities assigned to an agent (always empty here: nothing assigns any)."""
        check_format(format)
        return tooling.capabilities(agent, project)

    @resource("resource://tooling/recent/{window_seconds}{?agent,project,format}")
    async def tooling_recent(
        window_seconds: str, agent: str | None = None, project: str | None = None, format: str | None = None
    ) -> Any:
        """Successful tool calls of the last window_seconds served by this process, newest first
        (from a ring of the last 4096 calls); filter by agent and project."""
        check_format(format)
        window = number(window_seconds, "window_seconds", 0, 0, 366 * 86400)
        want = await project_slug(store, project) if project else None
        entries = mcp.usage.recent_entries(window, agent, want, functools.partial(known_slug, store))  # type: ignore[attr-defined]
        return {"generated_at": tooling.now_iso(), "window_seconds": window, "count": len(entries), "entries": entries}

    # -- projects and agents -------------------------------------------------------------------
    @resource("resource://project/{slug}{?format}")
    async def project_resource(slug: str, format: str | None = None) -> Any:
        """A project (by slug or URL-encoded absolute path) with its agents."""
        check_format(format)
        return await project_views.project_detail(store, slug)

    @resource("resource://identity/{project}{?format}")
    async def identity_resource(project: str, format: str | None = None) -> Any:
        """A repository's identity (by URL-encoded absolute path, or a project's slug): its slug,
        canonical path, Git facts on this host and project_uid."""
        check_format(format)
        return await repository.identity_of(store, project)

    @resource("resource://agents/{project_key}{?format}")
    async def agents_resource(project_key: str, format: str | None = None) -> Any:
        """A project's agents with unread counts, most recently active first; retired ones apart."""
        check_format(format)
        return await project_views.project_agents(store, project_key)

    # -- mail -------------------------------------------------------------------------------------
    @resource("resource://message/{message_id}{?project,agent,agent_token,format}")
    async def message_resource(
        message_id: str,
        project: str | None = None,
        agent: str | None = None,
        agent_token: str | None = None,
        format: str | None = None,
    ) -> Any:
        """One message the viewing agent sent or received, with its body."""
        check_format(format)
        return await views.message_view(store, message_id, project, agent, agent_token, "resource://message")

    @resource("resource://thread/{thread_id}{?project,agent,agent_token,include_bodies,format}")
    async def thread_resource(
        thread_id: str,
        project: str | None = None,
        agent: str | None = None,
        agent_token: str | None = None,
        include_bodies: str | None = None,
        format: str | None = None,
    ) -> Any:
        """A thread's messages the viewing agent sent or received, oldest first."""
        check_format(format)
        bodies = flag(include_bodies, "include_bodies", False)
        return await views.thread_view(store, thread_id, project, agent, bodies, agent_token, "resource://thread")

    @resource("resource://inbox/{agent}{?project,since_ts,urgent_only,include_bodies,limit,agent_token,format}")
    async def inbox_resource(
        agent: str,
        project: str | None = None,
        since_ts: str | None = None,
        urgent_only: str | None = None,
        include_bodies: str | None = None,
        limit: str | None = None,
        agent_token: str | None = None,
        format: str | None = None,
    ) -> Any:
        """The agent's received messages, newest first, each with its archive commit."""
        check_format(format)
        return await views.inbox_view(
            store, agent, project, since_ts, flag(urgent_only, "urgent_only", False),
            flag(include_bodies, "include_bodies", False), limit_of(limit, 20), agent_token, "resource://inbox",
        )  # fmt: skip

    def agent_listing(kind: str, doc: str, view: Callable[..., Awaitable[Any]]) -> None:
        """``resource://<kind>/{agent}{?project,limit,agent_token,format}``, read by
        ``view(agent, project, limit, agent_token, resource)``; e.g. kind "views/ack-required"
        is the resource ack_required_resource."""

        async def read(
            agent: str,
            project: str | None = None,
            limit: str | None = None,
            agent_token: str | None = None,
            format: str | None = None,
        ) -> Any:
            check_format(format)
            return await view(agent, project, limit_of(limit, 20), agent_token, f"resource://{kind}")

        read.__name__, read.__doc__ = kind.rpartition("/")[2].replace("-", "_") + "_resource", doc
        resource(f"resource://{kind}/{{agent}}{{?project,limit,agent_token,format}}")(read)

    async def mailbox(agent: str, project: str | None, limit: int, token: str | None, uri: str, detailed: str) -> Any:
        return await views.inbox_view(store, agent, project, None, False, False, limit, token, uri, detailed)

    for kind, detailed in (("mailbox", "basic"), ("mailbox-with-commits", "detailed")):
        agent_listing(
            kind,
            "The agent's received messages, newest first, with the archive commit of each "
            + ("(line counts and an excerpt too)." if detailed == "detailed" else "(sha, summary, time)."),
            functools.partial(mailbox, detailed=detailed),
        )

    @resource("resource://outbox/{agent}{?project,limit,include_bodies,since_ts,agent_token,format}")
    async def outbox_resource(
        agent: str,
        project: str | None = None,
        limit: str | None = None,
        include_bodies: str | None = None,
        since_ts: str | None = None,
        agent_token: str | None = None,
        format: str | None = None,
    ) -> Any:
        """Messages the agent sent, newest first, with recipients and archive commit."""
        check_format(format)
        return await views.outbox_view(
            store, agent, project, limit_of(limit, 20), flag(include_bodies, "include_bodies", False), since_ts,
            agent_token, "resource://outbox",
        )  # fmt: skip

    # -- inbox views -----------------------------------------------------------------------------
    for kind, doc, mode in (
        ("views/urgent-unread", "Received high/urgent messages not read yet, newest first.", "urgent-unread"),
        ("views/ack-required", "Received messages that need an acknowledgement not given yet, newest first.", "ack"),
    ):
        agent_listing(kind, doc, functools.partial(views.unanswered_view, store, mode))

    @resource("resource://views/acks-stale/{agent}{?project,ttl_seconds,limit,agent_token,format}")
    async def acks_stale_resource(
        agent: str,
        project: str | None = None,
        ttl_seconds: str | None = None,
        limit: str | None = None,
        agent_token: str | None = None,
        format: str | None = None,
    ) -> Any:
        """Unacknowledged ack-required messages at least ttl_seconds old (default ACK_TTL_SECONDS),
        oldest first, with read_at and age_seconds."""
        check_format(format)
        ttl = number(ttl_seconds, "ttl_seconds", settings.ack_ttl_seconds, 0, 366 * 86400)
        viewer, human_key, items = await views.overdue_acks(
            store, agent, project, ttl, limit_of(limit, 20), agent_token, "resource://views/acks-stale"
        )
        return views.listing(human_key, viewer, items, ttl_seconds=ttl)

    @resource("resource://views/ack-overdue/{agent}{?project,ttl_minutes,limit,agent_token,format}")
    async def ack_overdue_resource(
        agent: str,
        project: str | None = None,
        ttl_minutes: str | None = None,
        limit: str | None = None,
        agent_token: str | None = None,
        format: str | None = None,
    ) -> Any:
        """Unacknowledged ack-required messages created at least ttl_minutes ago (default 60),
        oldest first."""
        check_format(format)
        ttl = number(ttl_minutes, "ttl_minutes", 60, 0, 366 * 1440)
        viewer, human_key, items = await views.overdue_acks(
            store, agent, project, ttl * 60, limit_of(limit, 50), agent_token, "resource://views/ack-overdue"
        )
        shown = [{k: v for k, v in item.items() if k not in ("read_at", "age_seconds")} for item in items]
        return views.listing(human_key, viewer, shown)
