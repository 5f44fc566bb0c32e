"""The HTTP face: streamable-HTTP MCP at HTTP_PATH, health probes, optional bearer token."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from fastmcp import FastMCP
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.config import Settings
from broker.persistence.state import persistence_state, readiness_problems
from broker.store.commands.persist_state import ping

HEALTH_PREFIX = "/health/"
# Longest a health probe or a scrape waits for Redis (a frozen Redis must not hold them).
PROBE_TIMEOUT_SECONDS = 2.0


class BearerToken:
    """Require ``Authorization: Bearer <token>`` (constant-time compare) except on health probes.
    The scheme name is case-insensitive (RFC 7235 section 2.1): ``bearer <token>`` passes too."""

    def __init__(self, app: ASGIApp, token: str, open_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.expected = token.encode()
        self.open_prefixes = (HEALTH_PREFIX, *open_paths)

    def _authorized(self, header: bytes) -> bool:
        scheme, _, credentials = header.partition(b" ")
        # compare the token even when the scheme is wrong, so timing tells nothing about it
        token_ok = hmac.compare_digest(credentials.lstrip(b" "), self.expected)
        return scheme.lower() == b"bearer" and token_ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = (
            scope["type"] == "http"
            and not scope["path"].startswith(self.open_prefixes)
            and scope["method"] != "OPTIONS"
        )
        if guarded and not self._authorized(dict(scope["headers"]).get(b"authorization", b"")):
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
            # bounded: a frozen Redis would otherwise hold the probe for the client's socket timeout
            await asyncio.wait_for(ping(store), PROBE_TIMEOUT_SECONDS)
            state = await asyncio.wait_for(persistence_state(store, settings), PROBE_TIMEOUT_SECONDS)
        except TimeoutError:
            return JSONResponse({"detail": f"Redis did not answer within {PROBE_TIMEOUT_SECONDS:g} s"}, status_code=503)
        except Exception as exc:  # any failure to reach Redis means not ready
            return JSONResponse({"detail": f"Redis unreachable: {exc}"}, status_code=503)
        problems = readiness_problems(state, settings)
        if problems:
            return JSONResponse({"detail": "; ".join(problems), "persistence": state}, status_code=503)
        return JSONResponse({"status": "ready", "persistence": state})


def add_metrics_route(mcp: FastMCP, settings: Settings) -> None:
    """``GET METRICS_PATH``: the Prometheus text format (broker/mcp/metrics.py)."""
    metrics = mcp.metrics  # type: ignore[attr-defined]
    if metrics is None:
        return
    store = mcp.store  # type: ignore[attr-defined]

    @mcp.custom_route(settings.metrics_path, methods=["GET"])
    async def metrics_endpoint(request: Request) -> Response:
        await scrape(store, metrics, settings)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)


async def scrape(store: Any, metrics: Any, settings: Settings) -> None:
    """Refresh the figures read at scrape time; Redis being away shows as broker_redis_up 0."""
    started = time.perf_counter()
    try:
        await asyncio.wait_for(ping(store), PROBE_TIMEOUT_SECONDS)
        rtt = time.perf_counter() - started
        state = await asyncio.wait_for(persistence_state(store, settings, per_project=True), PROBE_TIMEOUT_SECONDS)
    except Exception:  # any failure to reach Redis: report it, keep the in-process figures
        metrics.redis_up.set(0)
        return
    metrics.redis_rtt.set(rtt)
    metrics.redis_up.set(1)
    metrics.set_persistence(state, settings.metrics_max_projects)
