"""MCP push: clients subscribed to an agent's inbox URI get ``notifications/resources/updated``
for it on every arrival, within milliseconds (fed by the doorbell subscriber, which hears the
deliveries of every broker process).

- MCP 2026-07-28 clients subscribe by opening a ``subscriptions/listen`` stream naming the URI;
- handshake-era sessions subscribe with ``resources/subscribe`` and are notified on their
  session (over streamable HTTP: the standalone GET stream).

The URI of an agent's inbox is ``resource://inbox/<agent name, lower-cased>?project=<slug>``
(the reference's inbox resource, canonical form). A notification says only "mail arrived";
the client then reads with fetch_inbox or wait_for_mail. Subscribing carries no agent token, so
push is offered only under ``AGENT_AUTH=open``, where any caller may act as any agent anyway;
under ``required`` neither method is served and clients use wait_for_mail or SSE.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

from fastmcp import FastMCP
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import ListenHandler, ResourceUpdated, ServerEvent
from mcp_types import EmptyResult, SubscribeRequestParams, SubscriptionsListenRequestParams, UnsubscribeRequestParams

from broker.store import Store

logger = logging.getLogger(__name__)

SUBSCRIBE_READY_SECONDS = 5.0


def inbox_uri(slug: str, agent_name: str) -> str:
    return f"resource://inbox/{agent_name.lower()}?project={slug}"


class DoorbellBus:
    """A ``SubscriptionBus`` fed by this process's doorbell subscriber (broker/doorbell.py), which
    already hears every broker process's deliveries, so each listen stream sees them all."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._listeners: dict[object, Callable[[ServerEvent], None]] = {}

    async def publish(self, event: ServerEvent) -> None:
        self._deliver(event)

    def _observe(self) -> None:
        doorbell = self.store.doorbell
        if self._on_doorbell not in doorbell.observers:
            doorbell.observers.append(self._on_doorbell)
        doorbell.start()

    async def live(self) -> None:
        """Start hearing the doorbell and wait (bounded) until it is subscribed, so a stream that
        opens after this hears every arrival from then on."""
        self._observe()
        await self.store.doorbell.ready(SUBSCRIBE_READY_SECONDS)

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        # Called on the server's loop when a stream opens: make sure the doorbell runs there.
        self._observe()
        token = object()
        self._listeners[token] = listener

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe

    def _on_doorbell(self, slug: str, lower_name: str) -> None:
        if self._listeners:
            self._deliver(ResourceUpdated(uri=inbox_uri(slug, lower_name)))

    def _deliver(self, event: ServerEvent) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except Exception:  # one stream's failure must not starve the others
                logger.exception("listen stream listener failed")


def _connection(ctx: ServerRequestContext[Any, Any]) -> Any:
    # ctx.session is a per-request proxy; the connection behind it is what outlives the request
    # (one per client session), and it sends on the session's standalone channel. The SDK has
    # no public accessor for it in low-level handlers.
    return ctx.session._connection


class SessionSubscriptions:
    """``resources/subscribe`` for handshake-era sessions: URI -> subscribed connections, held
    weakly so a connection that goes away without unsubscribing is simply forgotten."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._sessions: dict[str, weakref.WeakSet[Any]] = {}
        # One sender per (connection, URI) at most: arrivals while it sends only ask it to send
        # once more, so a session that stopped reading holds one task, not one per arrival.
        self._sending: dict[tuple[Any, str], asyncio.Task[None]] = {}
        self._again: set[tuple[Any, str]] = set()

    async def subscribe(self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        doorbell = self.store.doorbell
        if self._on_doorbell not in doorbell.observers:
            doorbell.observers.append(self._on_doorbell)
        self._sessions.setdefault(str(params.uri), weakref.WeakSet()).add(_connection(ctx))
        # Answer once the doorbell is subscribed: an arrival right after the client's subscribe
        # returned would otherwise go unheard (a notification has no cursor to catch up from).
        # Redis being down must not hang the request; the doorbell keeps reconnecting.
        await doorbell.ready(SUBSCRIBE_READY_SECONDS)
        return EmptyResult()

    async def unsubscribe(self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
        sessions = self._sessions.get(str(params.uri))
        if sessions is not None:
            sessions.discard(_connection(ctx))
            if not sessions:
                del self._sessions[str(params.uri)]
        return EmptyResult()

    def _on_doorbell(self, slug: str, lower_name: str) -> None:
        uri = inbox_uri(slug, lower_name)
        for connection in list(self._sessions.get(uri, ())):
            key = (connection, uri)
            if key in self._sending:
                self._again.add(key)
            else:
                self._sending[key] = asyncio.create_task(self._notify(connection, uri))

    async def _notify(self, connection: Any, uri: str) -> None:
        key = (connection, uri)
        try:
            while True:
                self._again.discard(key)
                await connection.send_resource_updated(uri)
                if key not in self._again:
                    return  # no arrival since this send began
        except Exception:  # a closed connection: stop notifying it
            sessions = self._sessions.get(uri)
            if sessions is not None:
                sessions.discard(connection)
        finally:
            # Here, not in a done callback: an arrival after the check above starts a new sender.
            self._again.discard(key)
            self._sending.pop(key, None)


def enable_push(mcp: FastMCP, store: Store) -> None:
    """Serve ``subscriptions/listen`` and ``resources/subscribe`` (only under open agent auth;
    see the module docstring)."""
    if store.bindings.mode != "open":
        return
    server = mcp._mcp_server
    bus = DoorbellBus(store)
    listen = ListenHandler(bus)

    async def listen_when_live(ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams) -> Any:
        await bus.live()  # the stream's acknowledgement then means arrivals are heard
        return await listen(ctx, params)

    server.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, listen_when_live)
    sessions = SessionSubscriptions(store)
    server.add_request_handler("resources/subscribe", SubscribeRequestParams, sessions.subscribe)
    server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, sessions.unsubscribe)
