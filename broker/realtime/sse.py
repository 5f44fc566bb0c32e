"""Server-sent events: ``GET /events/{project}/{agent}`` streams an agent's arrivals live.

Each event is ``event: message``, ``id: <inbox cursor>``, ``data: <inbox item JSON>``. A client
that reconnects with ``Last-Event-ID`` (browsers' EventSource does so by itself) first gets
everything after that cursor, then live arrivals; without it the stream starts at the newest
entry, or after ``?after_id=`` (a cursor or message id, as wait_for_mail takes).

Auth is MCP's: the HTTP bearer token when HTTP_BEARER_TOKEN is set (the app's middleware), and
the agent's registration token when AGENT_AUTH requires it, in the ``X-Registration-Token``
header or the ``registration_token`` query parameter (EventSource cannot set headers).
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator

from fastmcp import FastMCP
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.errors import BrokerError
from broker.realtime import arrivals
from broker.store.errors import StoreFailure, unexpected_error
from broker.store.store import Store

EVENTS_ROUTE = "/events/{project:path}/{agent}"
TOKEN_HEADER = "x-registration-token"
TOKEN_PARAM = "registration_token"
PING_SECONDS = 15  # a comment line now and then keeps proxies from closing an idle stream
# Open streams per agent in this process: each re-reads the agent's inbox on every arrival, so
# streams without a bound turned one received message into as many reads as streams were open.
MAX_STREAMS_PER_AGENT = 8
STATUS = {
    "AUTHENTICATION_REQUIRED": 401,
    "AUTHENTICATION_FAILED": 401,
    "NOT_FOUND": 404,
    "TOO_MANY_STREAMS": 429,
    "RATE_LIMITED": 429,
    "CONNECTION_ERROR": 503,
}
TRUE = {"1", "true", "yes", "on"}


def add_event_routes(mcp: FastMCP) -> None:
    store: Store = mcp.store  # type: ignore[attr-defined]
    open_streams: dict[tuple[str, str], int] = {}

    @mcp.custom_route(EVENTS_ROUTE, methods=["GET"])
    async def agent_events(request: Request) -> Response:
        project, agent = request.path_params["project"], request.path_params["agent"]
        token = request.headers.get(TOKEN_HEADER) or request.query_params.get(TOKEN_PARAM)
        resume = request.headers.get("last-event-id") or request.query_params.get("after_id")
        include_bodies = request.query_params.get("include_bodies", "").lower() in TRUE
        try:
            # a request like a tool call (Redis reads, even with a wrong token): the client's bucket
            mcp.client_limiter.check_client(request.client.host if request.client else "unknown")  # type: ignore[attr-defined]
            slug, name = await arrivals.authenticate(store, project, agent, token)
            cursor = await arrivals.start_cursor(store, slug, name, resume)
        except BrokerError as exc:
            return error_response(exc)
        except StoreFailure as exc:
            return error_response(unexpected_error(exc))
        held = (slug, name.lower())
        if open_streams.get(held, 0) >= MAX_STREAMS_PER_AGENT:
            return error_response(
                BrokerError(
                    "TOO_MANY_STREAMS",
                    f"Agent '{name}' already has {MAX_STREAMS_PER_AGENT} event streams open on this broker; "
                    "close one (one stream per agent is enough: it resumes with Last-Event-ID) and retry.",
                )
            )
        open_streams[held] = open_streams.get(held, 0) + 1

        async def stream() -> AsyncIterator[ServerSentEvent]:
            try:
                async for entry_id, item in arrivals.follow(store, slug, name.lower(), cursor, include_bodies):
                    yield ServerSentEvent(arrivals.item_json(item), event="message", id=entry_id)
            finally:
                release()

        events = stream()
        # given back once: when the stream ends, or when a stream that never started is collected
        release = weakref.finalize(events, _give_back, open_streams, held)
        return EventSourceResponse(events, ping=PING_SECONDS)


def _give_back(open_streams: dict[tuple[str, str], int], held: tuple[str, str]) -> None:
    left = open_streams.pop(held, 1) - 1
    if left > 0:
        open_streams[held] = left


def error_response(exc: BrokerError) -> JSONResponse:
    status = STATUS.get(exc.code, 500 if exc.code in ("INTERNAL_ERROR", "UNHANDLED_EXCEPTION") else 400)
    return JSONResponse({"error": exc.code, "detail": str(exc)}, status_code=status)
