"""MCP push: a subscriptions/listen stream (MCP 2026-07-28) or a resources/subscribe session
(handshake era) naming an agent's inbox URI gets notifications/resources/updated on each
arrival for that agent, and only for it."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from fastmcp.client.messages import MessageHandler
from helpers import Tools, drop_prefix, make_settings
from mcp.client.subscriptions import listen
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import ResourceUpdatedNotification, SubscribeRequestParams
from realtime_helpers import until
from shapes import payload

from broker.realtime.push import SessionSubscriptions
from broker.server import build_server

SLUG = "tmp-concurrent-test"


async def test_listen_stream_hears_arrivals_for_its_inbox_uri(tools: Tools, trio: dict[str, Any]) -> None:
    green = f"resource://inbox/greencastle?project={SLUG}"
    async with listen(tools.client.session, resource_subscriptions=[green]) as subscription:
        assert subscription.honored.resource_subscriptions == [green]
        # Mail for another agent (and bcc copies) does not reach this stream; mail for Green does.
        await tools.send("BlueLake", ["alpha-one"], bcc=["BlueLake"])
        sent = payload(await tools.send("BlueLake", ["GreenCastle"], subject="pushed"))
        event = await asyncio.wait_for(anext(subscription), 5)
        assert event == ResourceUpdated(uri=green)
        # The notification says mail arrived; the message itself is read as usual.
        inbox = await tools.inbox("GreenCastle")
        assert inbox[0]["id"] == sent["id"]
        await tools.send("BlueLake", ["GreenCastle"], subject="again")
        assert await asyncio.wait_for(anext(subscription), 5) == ResourceUpdated(uri=green)


async def test_no_push_when_agent_tokens_are_required(backend: str, tmp_path: Path) -> None:
    """A listen request carries no agent token, so under AGENT_AUTH=required it is not served."""
    server: FastMCP = build_server(make_settings(backend, tmp_path, AGENT_AUTH="required"))
    try:
        async with Client(server) as client:
            with pytest.raises(MCPError, match=r"(?i)method not found"):
                async with listen(client.session, resource_subscriptions=["resource://inbox/x?project=y"]):
                    pass
    finally:
        await drop_prefix(server.store)  # type: ignore[attr-defined]


@pytest.mark.filterwarnings("ignore:resources/")  # the client SDK warns that it is handshake-era only
async def test_handshake_era_session_subscribed_with_resources_subscribe(server: FastMCP, trio: dict[str, Any]) -> None:
    green = f"resource://inbox/greencastle?project={SLUG}"
    updates: asyncio.Queue[str] = asyncio.Queue()

    class Updates(MessageHandler):
        async def on_resource_updated(self, message: ResourceUpdatedNotification) -> None:
            updates.put_nowait(str(message.params.uri))

    async with Client(server, mode="legacy", message_handler=Updates()) as client:
        tools = Tools(client)
        await client.session.subscribe_resource(green)
        await tools.send("BlueLake", ["alpha-one"], bcc=["BlueLake"])  # not for Green: no notification
        await tools.send("BlueLake", ["GreenCastle"], subject="pushed")
        assert await asyncio.wait_for(updates.get(), 5) == green
        assert updates.empty()
        await client.session.unsubscribe_resource(green)
        alpha = f"resource://inbox/alpha-one?project={SLUG}"
        await client.session.subscribe_resource(alpha)
        await tools.send("BlueLake", ["GreenCastle"], subject="after unsubscribe")
        await tools.send("BlueLake", ["alpha-one"], subject="for alpha")
        # Doorbells are handled in order: had Green's still notified, it would come first.
        assert await asyncio.wait_for(updates.get(), 5) == alpha


async def test_subscribe_answers_once_arrivals_are_heard(server: FastMCP, trio: dict[str, Any]) -> None:
    """resources/subscribe returns only when the doorbell subscriber is live, so mail sent right
    after it returns is notified (under load the subscriber's connect lost that race)."""
    async with Client(server, mode="legacy") as client:
        await client.session.subscribe_resource(f"resource://inbox/greencastle?project={SLUG}")
        assert server.store.doorbell.subscriptions >= 1  # type: ignore[attr-defined]


async def test_a_listen_stream_opens_once_arrivals_are_heard(
    server: FastMCP, tools: Tools, trio: dict[str, Any]
) -> None:
    """The listen stream's acknowledgement comes only when the doorbell subscriber is live."""
    uri = f"resource://inbox/greencastle?project={SLUG}"
    async with listen(tools.client.session, resource_subscriptions=[uri]):
        assert server.store.doorbell.subscriptions >= 1  # type: ignore[attr-defined]


class StuckConnection:
    """An SDK session connection whose client stopped reading: every send waits."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sent = 0
        self.exit_stack = AsyncExitStack()

    async def send_resource_updated(self, uri: str) -> None:
        await self.release.wait()
        self.sent += 1


async def test_a_stuck_session_holds_one_pending_notification_per_uri(server: FastMCP, trio: dict[str, Any]) -> None:
    """Arrivals for a session that does not read coalesce: one pending send per (session, URI),
    not one task per arrival piling up in memory; once it reads again it is notified."""
    sessions = SessionSubscriptions(server.store)  # type: ignore[attr-defined]
    stuck = StuckConnection()
    ctx = SimpleNamespace(session=SimpleNamespace(_connection=stuck))
    await sessions.subscribe(ctx, SubscribeRequestParams(uri=f"resource://inbox/greencastle?project={SLUG}"))  # type: ignore[arg-type]
    sessions._on_doorbell(SLUG, "greencastle")
    await asyncio.sleep(0)  # its send has begun (and waits)
    for _ in range(1000):
        sessions._on_doorbell(SLUG, "greencastle")
    await asyncio.sleep(0)
    assert len(sessions._sending) == 1
    stuck.release.set()
    await until(lambda: not sessions._sending)
    assert stuck.sent == 2  # the send under way, then one more for the arrivals during it
    sessions._on_doorbell(SLUG, "greencastle")  # later arrivals are notified again
    await until(lambda: stuck.sent == 3)


# -- only URIs that can fire; bounded; dropped with their session ------------------------------
BAD_URIS = {
    "resource://project/tmp-concurrent-test": "INVALID_SUBSCRIPTION",
    "resource://inbox/GreenCastle": "INVALID_SUBSCRIPTION",  # no project
    "resource://inbox/Nobody?project=tmp-concurrent-test": "NOT_FOUND",
    "resource://inbox/GreenCastle?project=no-such-project": "NOT_FOUND",
    "resource://inbox/GreenCastle?project=rel/path": "INVALID_ARGUMENT",
    "https://example.com/anything": "INVALID_SUBSCRIPTION",
}


@pytest.mark.filterwarnings("ignore:resources/")
async def test_uris_that_cannot_fire_are_refused(server: FastMCP, trio: dict[str, Any]) -> None:
    async with Client(server, mode="legacy") as client:
        for uri, code in BAD_URIS.items():
            with pytest.raises(MCPError, match=f"^{code}: "):
                await client.session.subscribe_resource(uri)
        assert server.push_sessions.count == 0  # type: ignore[attr-defined]
    async with Client(server) as client:
        for uri, code in BAD_URIS.items():
            with pytest.raises(MCPError, match=f"^{code}: "):
                async with listen(client.session, resource_subscriptions=[uri]):
                    pass


@pytest.mark.filterwarnings("ignore:resources/")
async def test_agent_in_any_case_and_project_by_path_or_slug(server: FastMCP, trio: dict[str, Any]) -> None:
    by_path = "resource://inbox/GREENCASTLE?project=/tmp/concurrent-test"
    updates: asyncio.Queue[str] = asyncio.Queue()

    class Updates(MessageHandler):
        async def on_resource_updated(self, message: ResourceUpdatedNotification) -> None:
            updates.put_nowait(str(message.params.uri))

    async with Client(server, mode="legacy", message_handler=Updates()) as client:
        await client.session.subscribe_resource(by_path)
        await Tools(client).send("BlueLake", ["GreenCastle"])
        assert await asyncio.wait_for(updates.get(), 5) == by_path  # notified with the URI it gave
    async with Client(server) as client:
        by_slug = f"resource://inbox/greenCastle?project={SLUG}"
        async with listen(client.session, resource_subscriptions=[by_path, by_slug]) as subscription:
            green = f"resource://inbox/greencastle?project={SLUG}"
            assert subscription.honored.resource_subscriptions == [green]  # acknowledged canonical
            await Tools(client).send("BlueLake", ["GreenCastle"])
            assert await asyncio.wait_for(anext(subscription), 5) == ResourceUpdated(uri=green)


@pytest.mark.filterwarnings("ignore:resources/")
async def test_a_sessions_subscriptions_are_bounded_and_go_with_it(server: FastMCP, trio: dict[str, Any]) -> None:
    sessions = server.push_sessions  # type: ignore[attr-defined]
    many = [f"resource://inbox/GreenCastle?project={SLUG}&limit={n}" for n in range(65)]
    async with Client(server, mode="legacy") as client:
        for uri in many[:64]:
            await client.session.subscribe_resource(uri)
        with pytest.raises(MCPError, match=r"^TOO_MANY_SUBSCRIPTIONS: "):
            await client.session.subscribe_resource(many[64])
        async with Client(server, mode="legacy") as other:
            await other.session.subscribe_resource(f"resource://inbox/alpha-one?project={SLUG}")
            assert sessions.count == 65
        # the other session closed without unsubscribing: its subscription is gone
        assert sessions.count == 64 and f"resource://inbox/alpha-one?project={SLUG}" not in sessions._watchers
    assert sessions.count == 0 and sessions._watchers == {}
    async with Client(server) as client:
        with pytest.raises(MCPError, match=r"^TOO_MANY_SUBSCRIPTIONS: "):
            async with listen(client.session, resource_subscriptions=many):
                pass
