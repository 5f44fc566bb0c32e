"""The HTTP face: streamable-HTTP MCP at HTTP_PATH, health probes, optional bearer token."""

from __future__ import annotations

import hmac
from typing import Any

from fastmcp import FastMCP
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.config import Settings
from broker.events import add_event_routes
from broker.persist_state import persistence_state, readiness_problems
from broker.server import build_server

HEALTH_PREFIX = "/health/"


class BearerToken:
    """Require ``Authorization: Bearer <token>`` (constant-time compare) except on health probes."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(HEALTH_PREFIX) and scope["method"] != "OPTIONS":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse(
                    {"detail": "Unauthorized: send 'Authorization: Bearer <HTTP_BEARER_TOKEN>'"}, status_code=401
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SlashAlias:
    """Serve the MCP endpoint at HTTP_PATH both with and without its trailing slash, as the
    reference does, instead of answering the bare path with a redirect."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.bare = path.rstrip("/")
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.bare and scope["path"] == self.bare:
            scope = {**scope, "path": self.path, "raw_path": self.path.encode()}
        await self.app(scope, receive, send)


def add_health_routes(mcp: FastMCP, settings: Settings) -> None:
    store = mcp.store  # type: ignore[attr-defined]

    @mcp.custom_route(HEALTH_PREFIX + "liveness", methods=["GET"])
    async def liveness(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @mcp.custom_route(HEALTH_PREFIX + "readiness", methods=["GET"])
    async def readiness(request: Request) -> JSONResponse:
        try:
            await store.redis.ping()
            state = await persistence_state(store.redis, store.keys, settings)
        except Exception as exc:  # any failure to reach Redis means not ready
            return JSONResponse({"detail": f"Redis unreachable: {exc}"}, status_code=503)
        problems = readiness_problems(state, settings)
        if problems:
            return JSONResponse({"detail": "; ".join(problems), "persistence": state}, status_code=503)
        return JSONResponse({"status": "ready", "persistence": state})


def build_http_app(settings: Settings, host: str) -> tuple[Any, FastMCP]:
    """The ASGI app for ``broker serve`` and the server behind it."""
    mcp = build_server(settings, agent_auth=settings.effective_agent_auth(host))
    add_health_routes(mcp, settings)
    add_event_routes(mcp)
    middleware = [Middleware(SlashAlias, path=settings.http_path)]
    if settings.http_bearer_token:
        middleware.append(Middleware(BearerToken, token=settings.http_bearer_token))
    return mcp.http_app(path=settings.http_path, middleware=middleware), mcp
