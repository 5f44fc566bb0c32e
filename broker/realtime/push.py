"""MCP push: clients subscribed to an agent's inbox URI get ``notifications/resources/updated``
for it on every arrival, within milliseconds (fed by the doorbell subscriber, which hears the
deliveries of every broker process).

- MCP 2026-07-28 clients subscribe by opening a ``subscriptions/listen`` stream naming the URI;
- handshake-era sessions subscribe with ``resources/subscribe`` and are notified on their
  session (over streamable HTTP: the standalone GET stream).

The URI of an agent's inbox is ``resource://inbox/<agent name, lower-cased>?project=<slug>``
(the reference's inbox resource, canonical form). Only URIs that can fire are accepted: an
inbox URI of an agent that exists (name in any case; project by absolute path or slug), else a
coded error; a listen stream is acknowledged with the canonical URIs, a resources/subscribe
session is notified with the URI it gave. A session holds at most MAX_SUBSCRIPTIONS_PER_SESSION
URIs, and its subscriptions are dropped when its connection closes. A notification says only "mail arrived";
the client then reads with fetch_inbox or wait_for_mail. Subscribing carries no agent token, so
push is offered only under ``AGENT_AUTH=open``, where any caller may act as any agent anyway;
under ``required`` neither method is served and clients use wait_for_mail or SSE.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from fastmcp import FastMCP
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import ListenHandler, ResourceUpdated, ServerEvent
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    EmptyResult,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    UnsubscribeRequestParams,
)

from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.names import validate_name
from broker.identity.projects import project_slug
from broker.store.commands import arrivals as arrivals_store
from broker.store.commands import projects as project_store
from broker.store.store import Store

logger = logging.getLogger(__name__)

SUBSCRIBE_READY_SECONDS = 5.0
# URIs one session may watch (resources/subscribe), and one listen stream may name: each costs
# memory and a check per arrival for as long as the session lives.
MAX_SUBSCRIPTIONS_PER_SESSION = 64


def inbox_uri(slug: str, agent_name: str) -> str:
    return f"resource://inbox/{agent_name.lower()}?project={slug}"


INBOX_URI_PREFIX = "resource://inbox/"


def canonical_slug(uri: str) -> str:
    """The project slug of a canonical inbox URI (inbox_uri's output)."""
    return uri.rpartition("?project=")[2]


def _inbox_address(uri: str) -> tuple[str, str]:
    """(agent name, project key) of an inbox URI, or INVALID_SUBSCRIPTION."""
    shape = "resource://inbox/<agent>?project=<the project's absolute path or slug>"
    if not uri.startswith(INBOX_URI_PREFIX):
        raise BrokerError(
            "INVALID_SUBSCRIPTION", f"'{uri}' never changes: only an agent's inbox can be watched, as {shape}."
        )
    path, _, query = uri[len(INBOX_URI_PREFIX) :].partition("?")
    project = parse_qs(query).get("project", [""])[0]
    if not project.strip():
        raise BrokerError("INVALID_SUBSCRIPTION", f"'{uri}' names no project; write {shape}.")
    return validate_name(unquote(path), "agent in the inbox URI"), project


async def canonical_inbox_uris(store: Store, uris: list[str]) -> list[str]:
    """The canonical inbox URI of each URI (agent name in any case, project by path or slug),
    or the coded error of the first one whose agent or project does not exist."""
    addresses = [_inbox_address(uri) for uri in uris]
    slugs = [await project_slug(store, project) for _, project in addresses]
    found = await arrivals_store.agents_exist(
        store, agents=[(slug, name) for (name, _), slug in zip(addresses, slugs, strict=True)]
    )
    for (name, project), slug, exists in zip(addresses, slugs, found, strict=True):
        if not exists:
            if not await project_store.exists(store, slug=slug):
                raise await refusals.project_not_found(store, project)
            raise await refusals.agent_not_found(store, slug, name)
    return [inbox_uri(slug, name) for (name, _), slug in zip(addresses, slugs, strict=True)]


def _refused(exc: BrokerError) -> MCPError:
    """A coded error as the JSON-RPC error of a subscribe or listen request."""
    return MCPError(INVALID_PARAMS, str(exc))


class DoorbellBus:
    """A ``SubscriptionBus`` fed by this process's doorbell subscriber (broker/store/doorbell.py), which
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

    async def live(self, slugs: list[str]) -> None:
        """Wait (bounded) until the projects' doorbells are subscribed (the caller holds them), so
        a stream that opens after this hears every arrival from then on."""
        self._observe()
        for slug in slugs:
            await self.store.doorbell.ready(slug, SUBSCRIBE_READY_SECONDS)

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
    """``resources/subscribe`` for handshake-era sessions: per connection, the URIs it gave and
    the canonical URI each resolved to; per canonical URI, the connections watching it. A
    connection's subscriptions go when it closes (its exit stack) or a notification to it fails."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._given: dict[Any, dict[str, str]] = {}  # connection -> {given URI: canonical URI}
        self._watchers: dict[str, set[Any]] = {}  # canonical URI -> connections
        self._releases: dict[str, Callable[[], None]] = {}  # canonical URI -> stop hearing its project
        # One sender per (connection, URI) at most: arrivals while it sends only ask it to send
        # once more, so a session that stopped reading holds one task, not one per arrival.
        self._sending: dict[tuple[Any, str], asyncio.Task[None]] = {}
        self._again: set[tuple[Any, str]] = set()

    async def subscribe(self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        connection, given = _connection(ctx), str(params.uri)
        held = self._given.get(connection, {})
        if given not in held and len(held) >= MAX_SUBSCRIPTIONS_PER_SESSION:
            raise MCPError(
                INVALID_PARAMS,
                f"TOO_MANY_SUBSCRIPTIONS: this session already watches {len(held)} URIs, the most one "
                "session may. Unsubscribe from some first (resources/unsubscribe).",
            )
        try:
            [canonical] = await canonical_inbox_uris(self.store, [given])
        except BrokerError as exc:
            raise _refused(exc) from None
        doorbell = self.store.doorbell
        if self._on_doorbell not in doorbell.observers:
            doorbell.observers.append(self._on_doorbell)
        if connection not in self._given:
            self._given[connection] = {}
            connection.exit_stack.callback(self.forget, connection)
        self._given[connection][given] = canonical
        if canonical not in self._watchers:
            self._releases[canonical] = doorbell.watch(canonical_slug(canonical))
        self._watchers.setdefault(canonical, set()).add(connection)
        # Answer once the doorbell is subscribed: an arrival right after the client's subscribe
        # returned would otherwise go unheard (a notification has no cursor to catch up from).
        # Redis being down must not hang the request; the doorbell keeps reconnecting.
        await doorbell.ready(canonical_slug(canonical), SUBSCRIBE_READY_SECONDS)
        return EmptyResult()

    async def unsubscribe(self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
        connection = _connection(ctx)
        held = self._given.get(connection, {})
        canonical = held.pop(str(params.uri), None)
        if canonical is not None and canonical not in held.values():
            self._unwatch(canonical, connection)
        return EmptyResult()

    def forget(self, connection: Any) -> None:
        """Drop every subscription of a connection (it closed, or cannot be sent to)."""
        for canonical in set(self._given.pop(connection, {}).values()):
            self._unwatch(canonical, connection)

    def _unwatch(self, canonical: str, connection: Any) -> None:
        watchers = self._watchers.get(canonical)
        if watchers is not None:
            watchers.discard(connection)
            if not watchers:
                del self._watchers[canonical]
                release = self._releases.pop(canonical, None)
                if release is not None:
                    release()

    @property
    def count(self) -> int:
        """Subscriptions held, over all sessions."""
        return sum(len(held) for held in self._given.values())

    def _on_doorbell(self, slug: str, lower_name: str) -> None:
        canonical = inbox_uri(slug, lower_name)
        for connection in list(self._watchers.get(canonical, ())):
            for given, target in list(self._given.get(connection, {}).items()):
                if target != canonical:
                    continue
                key = (connection, given)
                if key in self._sending:
                    self._again.add(key)
                else:
                    self._sending[key] = asyncio.create_task(self._notify(connection, given))

    async def _notify(self, connection: Any, uri: str) -> None:
        key = (connection, uri)
        try:
            while True:
                self._again.discard(key)
                await connection.send_resource_updated(uri)
                if key not in self._again:
                    return  # no arrival since this send began
        except Exception:  # a closed connection: stop notifying it
            self.forget(connection)
        finally:
            # Here, not in a done callback: an arrival after the check above starts a new sender.
            self._again.discard(key)
            self._sending.pop(key, None)


async def _checked_listen(store: Store, params: SubscriptionsListenRequestParams) -> SubscriptionsListenRequestParams:
    """The listen request with its resource URIs resolved to canonical inbox URIs (which the
    acknowledgement then lists), or a coded error for a URI that cannot fire or too many."""
    uris = list(params.notifications.resource_subscriptions or ())
    if not uris:
        return params
    if len(uris) > MAX_SUBSCRIPTIONS_PER_SESSION:
        raise MCPError(
            INVALID_PARAMS,
            f"TOO_MANY_SUBSCRIPTIONS: {len(uris)} URIs in one listen request; the limit is "
            f"{MAX_SUBSCRIPTIONS_PER_SESSION}. Listen to fewer inboxes per stream.",
        )
    try:
        canonical = await canonical_inbox_uris(store, uris)
    except BrokerError as exc:
        raise _refused(exc) from None
    notifications = params.notifications.model_copy(update={"resource_subscriptions": list(dict.fromkeys(canonical))})
    return params.model_copy(update={"notifications": notifications})


def enable_push(mcp: FastMCP, store: Store) -> None:
    """Serve ``subscriptions/listen`` and ``resources/subscribe`` (only under open agent auth;
    see the module docstring)."""
    if store.bindings.mode != "open":
        return
    server = mcp._mcp_server
    bus = DoorbellBus(store)
    listen = ListenHandler(bus)

    async def listen_when_live(ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams) -> Any:
        params = await _checked_listen(store, params)
        slugs = [canonical_slug(uri) for uri in params.notifications.resource_subscriptions or ()]
        # The handler runs as long as the stream: its projects' doorbells are heard that long.
        with store.doorbell.watching(slugs):
            await bus.live(slugs)  # the stream's acknowledgement then means arrivals are heard
            return await listen(ctx, params)

    server.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, listen_when_live)
    sessions = SessionSubscriptions(store)
    mcp.push_sessions = sessions  # type: ignore[attr-defined]  # for health and tests
    # for /metrics (broker_push_subscriptions): listen streams plus resources/subscribe URIs
    mcp.push_subscriptions = lambda: len(bus._listeners) + sessions.count  # type: ignore[attr-defined]
    server.add_request_handler("resources/subscribe", SubscribeRequestParams, sessions.subscribe)
    server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, sessions.unsubscribe)
