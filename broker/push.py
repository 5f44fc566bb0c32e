"""MCP push for MCP 2026-07-28 clients: ``subscriptions/listen`` streams that name an inbox URI
get ``notifications/resources/updated`` for it on every arrival.

The URI of an agent's inbox is ``resource://inbox/<agent name, lower-cased>?project=<slug>``
(the reference's inbox resource, canonical form). A notification says only "mail arrived";
the client then reads with fetch_inbox or wait_for_mail. A listen request carries no agent
token, so push is offered only under ``AGENT_AUTH=open``, where any caller may act as any agent
anyway; under ``required`` the method is not served and clients use wait_for_mail or SSE.
Older (handshake-era) sessions have no listen method; ``resources/subscribe`` is not served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastmcp import FastMCP
from mcp.server.subscriptions import ListenHandler, ResourceUpdated, ServerEvent
from mcp_types import SubscriptionsListenRequestParams

from broker.store import Store

logger = logging.getLogger(__name__)


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

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        # Called on the server's loop when a stream opens: make sure the doorbell runs there.
        doorbell = self.store.doorbell
        if self._on_doorbell not in doorbell.observers:
            doorbell.observers.append(self._on_doorbell)
        doorbell.start()
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


def enable_push(mcp: FastMCP, store: Store) -> None:
    """Serve ``subscriptions/listen`` (only under open agent auth; see the module docstring)."""
    if store.bindings.mode != "open":
        return
    handler = ListenHandler(DoorbellBus(store))
    mcp._mcp_server.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, handler)
