"""The HTTP face of realtime delivery, served by uvicorn in the test's loop: the SSE stream
(replay after Last-Event-ID, then live; bearer and agent-token auth), wait_for_mail over
streamable HTTP, and MCP push over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.messages import MessageHandler
from fastmcp.client.transports import StreamableHttpTransport
from helpers import PROJECT, SLUG, make_settings
from mcp.client.subscriptions import listen
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import ResourceUpdatedNotification
from realtime_helpers import http_broker, local_tools, read_events, until
from shapes import payload

BEARER = "bearer-for-events"


async def test_sse_replays_after_last_event_id_then_streams_live(backend: str, tmp_path: Path) -> None:
    settings = make_settings(backend, tmp_path)
    async with http_broker(settings) as (base, store), local_tools(settings) as tools, httpx.AsyncClient() as http:
        await tools.project()
        for name in ("BlueLake", "GreenCastle", "alpha-one"):
            await tools.agent(name)
        ids = [payload(await tools.send("BlueLake", ["GreenCastle"], subject=f"m{i}"))["id"] for i in range(3)]
        first = await tools.call(
            "wait_for_mail", project_key=PROJECT, agent_name="GreenCastle", limit=1, after_id="0-0", timeout_seconds=0
        )
        assert [m["id"] for m in first["messages"]] == ids[:1]

        url = f"{base}/events/{SLUG}/GreenCastle?include_bodies=true"
        async with http.stream("GET", url, headers={"Last-Event-ID": first["cursor"]}, timeout=10) as response:
            lines = response.aiter_lines()
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            replay = await read_events(lines, 2)
            assert [(kind, item["id"], item["body_md"]) for _, kind, item in replay] == [
                ("message", ids[1], "Body"),
                ("message", ids[2], "Body"),
            ]
            assert first["cursor"] < replay[0][0] < replay[1][0]  # ids are inbox cursors, increasing
            # Mail to others (bcc included) never shows up in this agent's stream.
            await tools.send("BlueLake", ["alpha-one"], bcc=["BlueLake"], subject="not for green")
            live_id = payload(await tools.send("BlueLake", ["GreenCastle"], subject="live"))["id"]
            [(last_seen, _, live)] = await read_events(lines, 1)
            assert (live["id"], live["subject"]) == (live_id, "live")

        # Reconnect after a gap: what arrived after Last-Event-ID, and nothing before it.
        gap_id = payload(await tools.send("BlueLake", ["GreenCastle"], subject="during the gap"))["id"]
        async with http.stream("GET", url, headers={"Last-Event-ID": last_seen}, timeout=10) as response:
            lines = response.aiter_lines()
            after_gap_id = payload(await tools.send("BlueLake", ["GreenCastle"], subject="after the gap"))["id"]
            resumed = await read_events(lines, 2)
            assert [item["id"] for _, _, item in resumed] == [gap_id, after_gap_id]

        # Without Last-Event-ID the stream starts at the newest entry: live mail only.
        async with http.stream("GET", f"{base}/events/{SLUG}/GreenCastle", timeout=10) as response:
            lines = response.aiter_lines()
            assert response.status_code == 200
            fresh_id = payload(await tools.send("BlueLake", ["GreenCastle"], subject="fresh"))["id"]
            [(_, _, fresh)] = await read_events(lines, 1)
            assert fresh["id"] == fresh_id and "body_md" not in fresh
        # ?after_id= takes a message id as well as a cursor.
        async with http.stream("GET", f"{base}/events/{SLUG}/GreenCastle?after_id={ids[2]}", timeout=10) as response:
            lines = response.aiter_lines()
            resumed = await read_events(lines, 2)
            assert [item["id"] for _, _, item in resumed] == [live_id, gap_id]
        # A client that hangs up leaves no waiter behind.
        await until(lambda: store.doorbell.waiter_count == 0)


async def test_sse_auth_is_mcp_auth(backend: str, tmp_path: Path) -> None:
    """Bearer token when configured, plus the agent's token when AGENT_AUTH requires it."""
    settings = make_settings(backend, tmp_path, HTTP_BEARER_TOKEN=BEARER, AGENT_AUTH="required")
    async with http_broker(settings) as (base, _store), local_tools(settings) as tools, httpx.AsyncClient() as http:
        await tools.project()
        token = (await tools.agent("GreenCastle"))["registration_token"]
        await tools.agent("BlueLake")
        url = f"{base}/events/{SLUG}/GreenCastle"
        bearer = {"Authorization": f"Bearer {BEARER}"}

        assert (await http.get(url)).status_code == 401
        refused = {
            (401, "AUTHENTICATION_REQUIRED"): {},
            (401, "AUTHENTICATION_FAILED"): {"X-Registration-Token": "not-the-token"},
        }
        for (status, code), extra in refused.items():
            response = await http.get(url, headers={**bearer, **extra})
            assert (response.status_code, response.json()["error"]) == (status, code)
        unknown = await http.get(f"{base}/events/{SLUG}/GreenCastel", headers={**bearer, "X-Registration-Token": token})
        assert unknown.status_code == 404 and "Did you mean: 'GreenCastle'" in unknown.json()["detail"]
        bad_cursor = await http.get(f"{url}?after_id=soon", headers={**bearer, "X-Registration-Token": token})
        assert (bad_cursor.status_code, bad_cursor.json()["error"]) == (400, "INVALID_ARGUMENT")

        # The project as its absolute path (URL-encoded) works as well as its slug.
        by_path = f"{base}/events/{quote(PROJECT, safe='')}/GreenCastle"
        async with http.stream("GET", by_path, headers={**bearer, "X-Registration-Token": token}) as response:
            assert response.status_code == 200

        # The token in the header, or in the query string for EventSource clients.
        for target, headers in ((url, {**bearer, "X-Registration-Token": token}),
                                (f"{url}?registration_token={token}", bearer)):  # fmt: skip
            async with http.stream("GET", target, headers=headers, timeout=10) as response:
                assert response.status_code == 200
                sent = payload(await tools.send("BlueLake", ["GreenCastle"], subject="authorized"))
                [(_, _, item)] = await read_events(response.aiter_lines(), 1)
                assert item["id"] == sent["id"]


async def test_wait_for_mail_over_streamable_http(backend: str, tmp_path: Path) -> None:
    settings = make_settings(backend, tmp_path, HTTP_BEARER_TOKEN=BEARER)
    async with http_broker(settings) as (base, store), local_tools(settings) as tools:
        await tools.project()
        token = (await tools.agent("GreenCastle"))["registration_token"]
        await tools.agent("BlueLake")
        transport = StreamableHttpTransport(f"{base}/mcp/", headers={"Authorization": f"Bearer {BEARER}"})
        async with Client(transport) as remote:
            args = {"project_key": PROJECT, "agent_name": "GreenCastle", "timeout_seconds": 30,
                    "registration_token": token}  # fmt: skip
            call = asyncio.create_task(remote.call_tool("wait_for_mail", args))
            await until(lambda: store.doorbell.waiter_count == 1 or call.done())  # it waits in the server
            assert not call.done()
            sent = payload(await tools.send("BlueLake", ["GreenCastle"], subject="over http"))
            result = (await asyncio.wait_for(call, 10)).data
            # A call the client gives up on (MCP cancellation) stops waiting in the server too.
            abandoned = asyncio.create_task(remote.call_tool("wait_for_mail", {**args, "after_id": result["cursor"]}))
            await until(lambda: store.doorbell.waiter_count == 1 or abandoned.done())
            abandoned.cancel()
            await asyncio.gather(abandoned, return_exceptions=True)
            await until(lambda: store.doorbell.waiter_count == 0)
        assert [m["id"] for m in result["messages"]] == [sent["id"]]
        assert result["timed_out"] is False


@pytest.mark.filterwarnings("ignore:resources/")  # the client SDK warns that resources/subscribe is handshake-era
async def test_push_over_streamable_http(backend: str, tmp_path: Path) -> None:
    """Both ways to subscribe to an inbox URI work over HTTP: a 2026-07-28 listen stream, and
    resources/subscribe on a handshake-era session (notified on its standalone GET stream)."""
    settings = make_settings(backend, tmp_path)
    legacy_updates: asyncio.Queue[str] = asyncio.Queue()

    class Updates(MessageHandler):
        async def on_resource_updated(self, message: ResourceUpdatedNotification) -> None:
            legacy_updates.put_nowait(str(message.params.uri))

    async with http_broker(settings) as (base, _store), local_tools(settings) as tools:
        await tools.project()
        for name in ("BlueLake", "GreenCastle"):
            await tools.agent(name)
        uri = f"resource://inbox/greencastle?project={SLUG}"
        async with (
            Client(StreamableHttpTransport(f"{base}/mcp/")) as modern,
            Client(StreamableHttpTransport(f"{base}/mcp/"), mode="legacy", message_handler=Updates()) as legacy,
        ):
            await legacy.session.subscribe_resource(uri)
            async with listen(modern.session, resource_subscriptions=[uri]) as subscription:
                await tools.send("BlueLake", ["GreenCastle"], subject="pushed over http")
                assert await asyncio.wait_for(anext(subscription), 5) == ResourceUpdated(uri=uri)
                assert await asyncio.wait_for(legacy_updates.get(), 5) == uri
