"""The HTTP face: streamable-HTTP MCP at HTTP_PATH, health probes, optional bearer token."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any
from urllib.parse import urlencode

from fastmcp import FastMCP
from starlette.requests import Request, cookie_parser
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.config import Settings
from broker.persistence.state import persistence_state, readiness_problems
from broker.store.commands.persist_state import ping

HEALTH_PREFIX = "/health/"
# Longest a health probe or a scrape waits for Redis (a frozen Redis must not hold them).
PROBE_TIMEOUT_SECONDS = 2.0


class BearerToken:
    """Require ``Authorization: Bearer <token>`` (constant-time compare) except on health probes.
    The scheme name is case-insensitive (RFC 7235 section 2.1): ``bearer <token>`` passes too.

    Under ``cookie_prefix`` (the web view, which a browser opens without that header) the token
    may come in the cookie ``cookie_name`` instead, set by the view's login form; a page request
    without either is sent to ``login_path``."""

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        open_paths: tuple[str, ...] = (),
        cookie_name: str = "",
        cookie_prefix: str = "",
        login_path: str = "",
    ) -> None:
        self.app = app
        self.expected = token.encode()
        self.open_prefixes = (HEALTH_PREFIX, *open_paths)
        self.cookie_name = cookie_name
        self.cookie_prefix = cookie_prefix
        self.login_path = login_path

    def _authorized(self, header: bytes) -> bool:
        scheme, _, credentials = header.partition(b" ")
        # compare the token even when the scheme is wrong, so timing tells nothing about it
        token_ok = hmac.compare_digest(credentials.lstrip(b" "), self.expected)
        return scheme.lower() == b"bearer" and token_ok

    def _cookie_authorized(self, header: bytes) -> bool:
        given = cookie_parser(header.decode("latin-1")).get(self.cookie_name, "")
        return hmac.compare_digest(given.encode(), self.expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = (
            scope["type"] == "http"
            and not scope["path"].startswith(self.open_prefixes)
            and scope["method"] != "OPTIONS"
        )
        if not guarded:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self._authorized(headers.get(b"authorization", b"")):
            await self.app(scope, receive, send)
            return
        web = bool(self.cookie_prefix) and (
            scope["path"] == self.cookie_prefix or scope["path"].startswith(self.cookie_prefix + "/")
        )
        if web and self._cookie_authorized(headers.get(b"cookie", b"")):
            await self.app(scope, receive, send)
            return
        response: Response
        if web and scope["method"] in ("GET", "HEAD") and b"text/html" in headers.get(b"accept", b""):
            query = scope.get("query_string", b"").decode("latin-1")
            target = scope["path"] + (f"?{query}" if query else "")
            response = RedirectResponse(f"{self.login_path}?{urlencode({'next': target})}", status_code=303)
        else:
            response = JSONResponse(
                {"detail": "Unauthorized: send 'Authorization: Bearer <HTTP_BEARER_TOKEN>'"}, status_code=401
            )
        await response(scope, receive, send)


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
