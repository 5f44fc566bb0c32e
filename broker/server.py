"""The documented entry point and composition root: ``broker.server.build_server()``.

It wires the parts that must not know each other: the Store (the connection to Redis, which
knows no domain), the MCP sessions' agent bindings (broker/identity/auth.py) and the
persistence queue (broker/persistence/queue.py), then hands the store to the FastMCP facade.
"""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP
from starlette.middleware import Middleware

from broker.config import Settings, get_settings
from broker.identity.auth import SessionBindings
from broker.mcp.http import BearerToken, SlashAlias, add_health_routes, add_metrics_route
from broker.mcp.server import assemble
from broker.persistence.queue import PersistQueue
from broker.realtime.sse import add_event_routes
from broker.store.embedded import resolve_redis_url
from broker.store.keys import Keys
from broker.store.store import Store
from broker.web.routes import add_web_routes
from broker.web.security import AUTH_COOKIE, LOGIN_PATH, STATIC_PREFIX, WEB_PREFIX


def wire_store(settings: Settings, redis_url: str, agent_auth: str | None = None) -> tuple[Store, PersistQueue]:
    """A Store with this process's session bindings and persistence queue wired in."""
    queue_url = settings.queue_url(redis_url)
    queue = PersistQueue(queue_url, Keys(settings.redis_key_prefix))
    bindings = SessionBindings(agent_auth or settings.agent_auth, settings.session_binding_ttl_seconds)
    store = Store(settings, redis_url, bindings, on_write=queue.enqueue_soon, on_close=queue.close, queue_url=queue_url)
    return store, queue


def build_server(settings: Settings | None = None, *, agent_auth: str | None = None) -> FastMCP:
    """The broker's MCP server: tools, resources and HTTP routes over one Store."""
    settings = settings or get_settings()
    redis_url, backend = resolve_redis_url(settings.data_redis_url, settings.storage_root)
    store, queue = wire_store(settings, redis_url, agent_auth)
    mcp = assemble(settings, store, backend)
    mcp.persist_queue = queue  # type: ignore[attr-defined]  # for tests that wait for the queue
    return mcp


def build_http_app(settings: Settings, host: str) -> tuple[Any, FastMCP]:
    """The ASGI app for ``broker serve`` and the server behind it."""
    mcp = build_server(settings, agent_auth=settings.effective_agent_auth(host))
    add_health_routes(mcp, settings)
    add_event_routes(mcp)
    add_metrics_route(mcp, settings)
    add_web_routes(mcp, settings, host)
    middleware = [Middleware(SlashAlias, path=settings.http_path)]
    if settings.http_bearer_token:
        open_paths = (LOGIN_PATH, STATIC_PREFIX)
        if settings.metrics_auth == "none":
            open_paths += (settings.metrics_path,)
        middleware.append(
            Middleware(
                BearerToken,
                token=settings.http_bearer_token,
                open_paths=open_paths,
                cookie_name=AUTH_COOKIE,
                cookie_prefix=WEB_PREFIX,
                login_path=LOGIN_PATH,
            )
        )
    return mcp.http_app(path=settings.http_path, middleware=middleware), mcp
