"""Three ``broker serve`` processes on one Redis behave as one broker, on a single redis-server and
on the 3-master cluster: a waiter, an SSE stream or a push subscription on one process hears mail
sent through another, racing reservations spread over all three stay atomic, and the one
persistence worker (A's) persists what every process writes. MCP sessions
(handshake-era clients) are the one thing that does not travel: a session lives in the process
that opened it, with its agent bindings, so a load balancer must keep it there (docs/deploy.md,
"Several broker processes").

A persists on a thread of its own (the default); B and C run with PERSISTENCE_WORKER=external.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import httpx2
import pytest
from cluster_helpers import QUEUE_URLS
from fastmcp import Client
from fastmcp.client.messages import MessageHandler
from fastmcp.client.transports import StreamableHttpTransport
from helpers import PROJECT, Tools, make_settings
from mcp.client.subscriptions import listen
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import ResourceUpdatedNotification
from process_helpers import Served, broker_env, serving_all
from realtime_helpers import http_broker, read_events
from shapes import payload

from broker.store.clients import plain_url

# starts three processes (each imports for seconds of CPU) before its checks
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
PROMPTLY = 10.0  # seconds; a doorbell takes milliseconds, this bounds a loaded CI machine (not 30 s waits)


@pytest.fixture(
    params=[pytest.param("redis", id="redis"), pytest.param("cluster", id="cluster", marks=pytest.mark.cluster)],
)
def brokers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Served]]:
    """A, B and C: three `broker serve` processes sharing one Redis, key prefix and STORAGE_ROOT.

    Started once per backend for the one test below (whose checks run in turn on them): a test
    per check would start them once per xdist worker that runs any of those tests."""
    if request.param == "cluster":
        seed = request.getfixturevalue("cluster_url")
        url, extra = plain_url(seed), {"REDIS_CLUSTER": "true", "QUEUE_REDIS_URL": QUEUE_URLS[seed]}
    else:
        url, extra = request.getfixturevalue("redis_url"), {}
    env = broker_env(url, tmp_path_factory.mktemp("many"), AGENT_AUTH="open", **extra)
    external = {**env, "PERSISTENCE_WORKER": "external"}
    with serving_all([env, external, external]) as served:
        yield served


@asynccontextmanager
async def tools_on(*processes: Served) -> AsyncIterator[list[Tools]]:
    """One MCP client per process, over streamable HTTP."""
    async with AsyncExitStack() as stack:
        clients = [Client(StreamableHttpTransport(served.mcp_url)) for served in processes]
        yield [Tools(await stack.enter_async_context(client)) for client in clients]


async def new_project(tools: Tools, *agents: str) -> tuple[str, str]:
    """A project of the check's own (the checks share the processes), with these agents."""
    project = await tools.project(f"/srv/many/{uuid4().hex[:12]}")
    for name in agents:
        await tools.agent(name, project_key=project["human_key"])
    return project["human_key"], project["slug"]


async def until_gauge(served: Served, series: str, holds: Callable[[float], bool]) -> None:
    """Wait until a gauge on the process's /metrics holds (server state we cannot await)."""
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(timeout=20) as http:
        while True:
            text = (await http.get(f"{served.base}/metrics")).text
            value = next(float(line.split()[1]) for line in text.splitlines() if line.startswith(f"{series} "))
            if holds(value):
                return
            assert time.monotonic() < deadline, f"{series} is {value} on {served.base}"
            await asyncio.sleep(0.02)


async def a_waiter_on_one_process_hears_mail_sent_through_the_others(brokers: list[Served]) -> None:
    a, b, c = brokers
    async with tools_on(a, b, c) as (on_a, on_b, on_c):
        project, _ = await new_project(on_b, "GreenCastle", "BlueLake")  # registered through B
        cursor = "0-0"
        for sender, via in ((on_b, "B"), (on_c, "C")):
            waiting = asyncio.create_task(
                on_a.call("wait_for_mail", project_key=project, agent_name="GreenCastle", after_id=cursor,
                          timeout_seconds=30)
            )  # fmt: skip
            await until_gauge(a, "broker_waiters", lambda n: n >= 1)  # it waits in A
            sent = payload(await sender.send("BlueLake", ["GreenCastle"], project_key=project, subject=f"via {via}"))
            result = await asyncio.wait_for(waiting, PROMPTLY)  # woken by B's or C's doorbell, not its timeout
            assert [(m["id"], m["subject"]) for m in result["messages"]] == [(sent["id"], f"via {via}")]
            assert result["timed_out"] is False
            cursor = result["cursor"]
    await until_gauge(a, "broker_waiters", lambda n: n == 0)


async def reservations_stay_atomic_across_processes(brokers: list[Served]) -> None:
    """Nine agents, three per process, reserve one file exclusively at once: they behave as some
    serial order of the nine calls, so exactly one holds it without conflicts and each later
    one is told of every earlier holder, whichever process served it."""
    async with tools_on(*brokers) as on:
        project, slug = await new_project(on[0])
        names = [(await on[i % 3].agent(project_key=project))["name"] for i in range(9)]
        results = await asyncio.gather(
            *(
                on[i % 3].call("file_reservation_paths", project_key=project, agent_name=name,
                               paths=["shared/config.json"], exclusive=True)
                for i, name in enumerate(names)
            )
        )  # fmt: skip
        assert all(len(result["granted"]) == 1 for result in results)  # advisory: always granted
        seen = {
            name: [holder["agent"] for conflict in result["conflicts"] for holder in conflict["holders"]]
            for name, result in zip(names, results, strict=True)
        }
        serial = sorted(names, key=lambda name: len(seen[name]))
        assert [len(seen[name]) for name in serial] == list(range(9))
        for k, name in enumerate(serial):
            assert sorted(seen[name]) == sorted(serial[:k])
        # Every process lists the same nine holders.
        for tools in on:
            rows = await tools.client.read_resource(f"resource://file_reservations/{slug}")
            assert len(rows) == 1 and rows[0].text.count('"path_pattern"') == 9


async def an_sse_stream_on_one_process_delivers_mail_sent_through_the_others(brokers: list[Served]) -> None:
    a, b, c = brokers
    async with tools_on(b, c) as (on_b, on_c), httpx.AsyncClient() as http:
        project, slug = await new_project(on_b, "GreenCastle", "BlueLake")
        url = f"{a.base}/events/{slug}/GreenCastle?include_bodies=true"
        async with http.stream("GET", url, timeout=10) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            await until_gauge(a, "broker_waiters", lambda n: n >= 1)  # the stream waits in A
            sent = [
                payload(await sender.send("BlueLake", ["GreenCastle"], project_key=project, subject=f"via {via}"))
                for sender, via in ((on_b, "B"), (on_c, "C"))
            ]
            events = await read_events(lines, 2)
        assert [(item["id"], item["subject"], item["body_md"]) for _, _, item in events] == [
            (sent[0]["id"], "via B", "Body"),
            (sent[1]["id"], "via C", "Body"),
        ]
    await until_gauge(a, "broker_waiters", lambda n: n == 0)  # a hung-up stream leaves no waiter


async def push_subscriptions_on_one_process_hear_mail_sent_through_the_others(brokers: list[Served]) -> None:
    """A 2026-07-28 listen stream and a handshake-era resources/subscribe session, both on A."""
    a, b, c = brokers
    legacy_updates: asyncio.Queue[str] = asyncio.Queue()

    class Updates(MessageHandler):
        async def on_resource_updated(self, message: ResourceUpdatedNotification) -> None:
            legacy_updates.put_nowait(str(message.params.uri))

    async with (
        tools_on(a, b, c) as (on_a, on_b, on_c),
        Client(StreamableHttpTransport(a.mcp_url), mode="legacy", message_handler=Updates()) as legacy,
    ):
        project, slug = await new_project(on_a, "GreenCastle", "BlueLake")
        uri = f"resource://inbox/greencastle?project={slug}"
        await legacy.session.subscribe_resource(uri)
        async with listen(on_a.client.session, resource_subscriptions=[uri]) as subscription:
            for sender in (on_b, on_c):
                await sender.send("BlueLake", ["GreenCastle"], project_key=project)
                assert await asyncio.wait_for(anext(subscription), PROMPTLY) == ResourceUpdated(uri=uri)
                assert await asyncio.wait_for(legacy_updates.get(), PROMPTLY) == uri


async def one_worker_persists_what_every_process_writes(brokers: list[Served]) -> None:
    """Only A persists: mail sent through B and C reaches the one index of STORAGE_ROOT, and
    search_messages finds it through every process."""
    async with tools_on(*brokers) as on:
        project, _ = await new_project(on[1], "GreenCastle", "BlueLake")
        word = f"w{uuid4().hex[:12]}"
        sent = set()
        for tools, via in ((on[1], "B"), (on[2], "C")):
            result = await tools.send("BlueLake", ["GreenCastle"], project_key=project, subject=f"{word} via {via}")
            sent.add(payload(result)["id"])
        deadline = time.monotonic() + 30
        for tools in on:
            while True:  # persisted a moment after the send (no event reaches this test)
                found = await tools.call("search_messages", project_key=project, query=word, agent_name="GreenCastle")
                if {m["id"] for m in found} == sent:
                    break
                assert time.monotonic() < deadline, f"persisted so far: {found}"
                await asyncio.sleep(0.05)


class Balancer(httpx2.AsyncHTTPTransport):
    """A load balancer in the client: each request goes to the next process of ``route``."""

    def __init__(self, route: Iterator[Served]) -> None:
        super().__init__()
        self._route = route

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(port=httpx2.URL(next(self._route).base).port)
        return await super().handle_async_request(request)

    def client(self, served: Served, mode: str = "auto") -> Client:
        """An MCP client whose requests all go through this balancer."""

        def factory(**kwargs: Any) -> httpx2.AsyncClient:
            return httpx2.AsyncClient(transport=self, **kwargs)

        return Client(StreamableHttpTransport(served.mcp_url, httpx_client_factory=factory), mode=mode)  # type: ignore[arg-type]


async def sessionless_calls_work_on_any_process_and_a_session_only_on_its_own(brokers: list[Served]) -> None:
    """Behind a round-robin balancer, a 2026-07-28 client (no MCP session) works: each call lands
    on another process. A handshake-era session lives in the process that opened it (FastMCP
    keeps Mcp-Session-Id in memory, with the session's agent bindings and resources/subscribe
    watches): the others answer HTTP 404 "Session not found", so it needs a sticky balancer."""
    a, b, c = brokers
    async with Balancer(itertools.cycle(brokers)).client(a) as modern:  # round robin
        tools = Tools(modern)
        project, _ = await new_project(tools, "GreenCastle", "BlueLake")
        ports = {(await tools.call("health_check"))["http_port"] for _ in range(6)}
        assert ports == {httpx2.URL(served.base).port for served in brokers}
        sent = payload(await tools.send("BlueLake", ["GreenCastle"], project_key=project))
        assert [m["id"] for m in await tools.inbox("GreenCastle", project_key=project)] == [sent["id"]]

    # A session opened on A whose later requests go to B (a balancer without stickiness).
    with pytest.raises(MCPError, match="Session not found"):
        async with Balancer(itertools.chain([a], itertools.repeat(b))).client(a, mode="legacy") as moved:
            await moved.call_tool("health_check", {})

    async with Client(StreamableHttpTransport(a.mcp_url), mode="legacy") as legacy:
        session = legacy.transport.get_session_id()  # type: ignore[attr-defined]
        assert session
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "health_check", "arguments": {}}}
        headers = {
            "Mcp-Session-Id": session,
            "MCP-Protocol-Version": legacy.initialize_result.protocol_version,  # type: ignore[union-attr]
            "Accept": "application/json, text/event-stream",
        }
        async with httpx.AsyncClient() as http:
            for elsewhere in (b, c):
                refused = await http.post(elsewhere.mcp_url, json=call, headers=headers)
                assert refused.status_code == 404
                assert refused.json()["error"]["message"] == "Session not found"
            assert (await http.post(a.mcp_url, json=call, headers=headers)).status_code == 200
    # The sticky way: every request of the session to the process that opened it.
    async with Balancer(itertools.repeat(b)).client(a, mode="legacy") as pinned:
        assert (await pinned.call_tool("health_check", {})).data["http_port"] == httpx2.URL(b.base).port


@pytest.mark.filterwarnings("ignore:resources/")  # the client SDK warns that resources/subscribe is handshake-era
async def test_three_processes_behave_as_one(brokers: list[Served]) -> None:
    await a_waiter_on_one_process_hears_mail_sent_through_the_others(brokers)
    await reservations_stay_atomic_across_processes(brokers)
    await an_sse_stream_on_one_process_delivers_mail_sent_through_the_others(brokers)
    await push_subscriptions_on_one_process_hear_mail_sent_through_the_others(brokers)
    await one_worker_persists_what_every_process_writes(brokers)
    await sessionless_calls_work_on_any_process_and_a_session_only_on_its_own(brokers)


async def test_an_agent_binding_stays_with_the_session_and_process_that_made_it(redis_url: str, tmp_path: Path) -> None:
    """Under AGENT_AUTH=required a handshake-era session that passed an agent's token once may
    leave it out afterwards, on that session only: another broker (two apps on one Redis and
    key prefix, in this loop: no state shared but Redis's) does not know the binding."""
    settings = make_settings(redis_url, tmp_path, AGENT_AUTH="required")
    async with http_broker(settings) as (a, _), http_broker(settings) as (b, _):
        async with Client(StreamableHttpTransport(f"{b}/mcp/")) as setup:  # apart: registering binds its session
            await Tools(setup).project()
            token = (await Tools(setup).agent("GreenCastle"))["registration_token"]
        args = {"project_key": PROJECT, "agent_name": "GreenCastle"}
        async with (
            Client(StreamableHttpTransport(f"{a}/mcp/"), mode="legacy") as client_a,
            Client(StreamableHttpTransport(f"{b}/mcp/"), mode="legacy") as client_b,
        ):
            on_a, on_b = Tools(client_a), Tools(client_b)
            assert (await on_a.error("fetch_inbox", **args)).startswith("AUTHENTICATION_REQUIRED:")
            assert await on_a.call("fetch_inbox", **args, registration_token=token) == []
            assert await on_a.call("fetch_inbox", **args) == []  # bound: A's session may leave the token out
            assert (await on_b.error("fetch_inbox", **args)).startswith("AUTHENTICATION_REQUIRED:")
            # With its token the call works on B too: token-carrying calls need no stickiness.
            assert await on_b.call("fetch_inbox", **args, registration_token=token) == []
