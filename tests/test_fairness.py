"""One caller must not stall everyone (docs/limits.md): reservation work is priced and capped
before it runs, and agents (in Redis) and HTTP clients (in process) have token buckets.
SLOWLOG figures need a real redis-server; the rest runs on both backends."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from fastmcp.client.transports import StreamableHttpTransport
from helpers import PROJECT, Tools, drop_prefix, make_settings, snapshot
from process_helpers import broker_env, serving_at

from broker.reservations import service as reservations
from broker.server import build_server

P = PROJECT
# "A few milliseconds": the budget prices ~3.6 ms of the costliest steps; the margin is for a
# shared, loaded test machine (SLOWLOG is wall time: a full CI run on 2 cores measured 8.7 ms in
# three rounds out of three). Before the budget such requests took 100-350 ms.
FEW_MS_US = 15_000
OLD_COSTLIEST = "*" + "a" * 254 + "*" + "a" * 254  # ~38 ms per pair, accepted before the caps


async def reserve_error(tools: Tools, agent: str, paths: list[str]) -> str:
    return await tools.error("file_reservation_paths", project_key=P, agent_name=agent, paths=paths)


async def reserve(tools: Tools, agent: str, paths: list[str]) -> dict[str, Any]:
    return await tools.call("file_reservation_paths", project_key=P, agent_name=agent, paths=paths)


async def reserve_durations(store: Any) -> list[int]:
    """Microseconds of every reserve.lua run since the last reset (SLOWLOG at threshold 0)."""
    sha = store.script_sha("reserve")
    return [e["duration"] for e in await store.client().slowlog_get(10_000) if sha in str(e.get("command", ""))]


# SLOWLOG exists only on a real redis-server: these run on that backend alone (not skipped on fakeredis).
REAL_REDIS_ONLY = pytest.mark.parametrize("backend", ["redis"], indirect=True)


@pytest.fixture
async def slowlog(server: FastMCP, backend: str) -> Any:
    assert not backend.startswith("memory://"), "SLOWLOG needs a real redis-server: mark the test REAL_REDIS_ONLY"
    store = server.store  # type: ignore[attr-defined]
    await store.client().config_set("slowlog-log-slower-than", 0)
    await store.client().config_set("slowlog-max-len", 10_000)
    await store.client().slowlog_reset()
    yield store
    await store.client().config_set("slowlog-log-slower-than", 10_000)


@REAL_REDIS_ONLY
async def test_the_costliest_pattern_shape_is_refused_before_redis(tools: Tools, slowlog: Any) -> None:
    """Two agents holding and requesting long '*...*' globs held Redis ~100 ms per refused call;
    such a pattern is now refused by its shape in Python, and reserve.lua never runs."""
    await tools.project()
    a, b = (await tools.agent())["name"], (await tools.agent())["name"]
    await slowlog.client().slowlog_reset()
    for agent, end in ((a, "b"), (b, "c")):
        error = await reserve_error(tools, agent, [OLD_COSTLIEST + end])
        assert error.startswith("INVALID_PATH_PATTERN: "), error
        assert "to 128 characters" in error, error
    assert await reserve_durations(slowlog) == []


@REAL_REDIS_ONLY
async def test_worst_allowed_requests_hold_redis_a_few_ms(tools: Tools, slowlog: Any) -> None:
    """The costliest shapes the caps allow, held and requested in bulk: every reserve.lua run,
    granted or refused as too complex, stays within a few milliseconds of Redis."""
    await tools.project()
    holder = (await tools.agent())["name"]
    at_caps = "*" + "a" * 18 + "*" + "a" * 18  # weight 40 with one more character
    await reserve(tools, holder, [at_caps + "b", *(f"src/*{i}x" for i in range(99))])
    requests = [
        ["a" * 511 + "c"],  # the longest plain path against a glob at the caps: ~20,500 steps
        [f"src/{i}.py" for i in range(2)],  # two paths against 100 globs: ~18,000
        ["src/" + at_caps + "c"],  # at the caps against 99 globs: over the budget
        [at_caps + "c"],  # a root glob reads every bucket: 100 pairs, over the budget
        [f"**/*{i}*.py" for i in range(100)],  # 100 '**' globs x 100 holdings: far over
        [f"src/{i}.py" for i in range(100)],  # 100 paths x 100 holdings: far over
    ]
    # SLOWLOG times are wall time inside Redis: a busy machine can only make them longer, so the
    # cost is the best of three rounds (a real regression is slow in every round).
    worst_per_round = []
    for _round in range(3):
        asker = (await tools.agent())["name"]
        await slowlog.client().slowlog_reset()
        outcomes = []
        for paths in requests:
            result = await tools.client.call_tool(
                "file_reservation_paths", {"project_key": P, "agent_name": asker, "paths": paths}, raise_on_error=False
            )
            outcomes.append(result.content[0].text.split(":")[0] if result.is_error else "granted")
        durations = await reserve_durations(slowlog)
        assert len(durations) == len(requests)
        assert outcomes == ["granted"] * 2 + ["RESERVATION_TOO_COMPLEX"] * 4, outcomes
        worst_per_round.append(max(durations))
        if worst_per_round[-1] < FEW_MS_US:
            break
    assert min(worst_per_round) < FEW_MS_US, worst_per_round


@REAL_REDIS_ONLY
async def test_a_costly_reservation_is_refused_before_matching(tools: Tools, server: FastMCP, slowlog: Any) -> None:
    """Many cheap pairs cost as much as one dear one: a call that would compare 100 '**' globs
    with 300 holdings is refused on its price, cheaply, and changes nothing."""
    await tools.project()
    holder, asker = (await tools.agent())["name"], (await tools.agent())["name"]
    for start in range(0, 300, 100):
        await reserve(tools, holder, [f"d{i}/*.py" for i in range(start, start + 100)])
    before = await snapshot(server.store)  # type: ignore[attr-defined]
    await slowlog.client().slowlog_reset()
    error = await reserve_error(tools, asker, [f"**/*{i}.py" for i in range(100)])
    assert error.startswith("RESERVATION_TOO_COMPLEX: "), error
    assert f"limit per call is {reservations.STEP_BUDGET:,}" in error, error
    assert await snapshot(server.store) == before  # type: ignore[attr-defined]
    assert max(await reserve_durations(slowlog)) < 2_000


# -- rate limits -----------------------------------------------------------------------------
@pytest.fixture
async def limited(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """Tools on a server whose agents get `rate` tokens a second and a bucket of `burst`."""
    rate, burst = getattr(request, "param", (2, 3))
    mcp = build_server(make_settings(backend, tmp_path, AGENT_RATE_LIMIT_PER_SECOND=rate, AGENT_RATE_LIMIT_BURST=burst))
    async with Client(mcp) as client:
        yield Tools(client), mcp.store  # type: ignore[attr-defined]
    await drop_prefix(mcp.store)  # type: ignore[attr-defined]


def retry_after(error: str) -> float:
    found = re.search(r"retry_after=([0-9.]+)", error)
    assert found, error
    return float(found.group(1))


async def test_an_agent_past_its_burst_is_rate_limited_with_retry_after(limited: Any) -> None:
    tools, store = limited
    await tools.project()
    sender, reader = (await tools.agent())["name"], (await tools.agent())["name"]
    for _ in range(3):
        await tools.send(sender, [reader])
    before = await snapshot(store)
    error = await tools.error("send_message", project_key=P, sender_name=sender, to=[reader], subject="s", body_md="b")
    assert error.startswith("RATE_LIMITED: "), error
    assert "AGENT_RATE_LIMIT_PER_SECOND=2" in error, error
    wait = retry_after(error)
    assert 0 < wait <= 0.5  # one token at 2 a second
    assert await snapshot(store) == before  # nothing stored for the refused send
    # reservations draw on the same bucket; other agents have their own
    assert (await reserve_error(tools, sender, ["src/a.py"])).startswith("RATE_LIMITED: ")
    await tools.send(reader, [sender])
    await asyncio.sleep(wait + 0.05)
    await tools.send(sender, [reader])
    assert len(await tools.inbox(reader)) == 4


@pytest.mark.parametrize("limited", [(0, 3), (2, 0)], indirect=True)
async def test_a_limit_of_zero_disables_it(limited: Any) -> None:
    tools, _ = limited
    await tools.project()
    sender, reader = (await tools.agent())["name"], (await tools.agent())["name"]
    for _ in range(10):
        await tools.send(sender, [reader])
    await reserve(tools, sender, ["src/a.py"])
    assert len(await tools.inbox(reader, limit=20)) == 10


@pytest.mark.parametrize("limited", [(1, 30)], indirect=True)
async def test_a_reservation_pays_for_its_matching_work(limited: Any) -> None:
    """One token buys an ordinary call; a reservation that compares costly pairs pays a token per
    1,000 steps, so an agent cannot keep Redis busy with allowed-but-dear calls."""
    tools, _ = limited
    await tools.project()
    holder, asker = (await tools.agent())["name"], (await tools.agent())["name"]
    await reserve(tools, holder, ["*" + "a" * 18 + "*" + "a" * 18 + c for c in "bcd"])
    await reserve(tools, asker, ["*" + "a" * 18 + "*" + "a" * 18 + "e"])  # 3 x 4,800 steps: 15 tokens
    calls = 0
    while calls < 40:
        result = await tools.client.call_tool(
            "file_reservation_paths", {"project_key": P, "agent_name": asker, "paths": ["x.py"]}, raise_on_error=False
        )
        if result.is_error:
            assert result.content[0].text.startswith("RATE_LIMITED: ")
            break
        calls += 1
    assert 12 <= calls <= 18, calls  # 30 - 15 tokens, plus what refilled meanwhile (not 29)


@pytest.mark.integration
async def test_an_http_client_past_its_burst_is_rate_limited(redis_url: str, tmp_path: Path) -> None:
    """Per client (remote address), before any tool runs: even calls that never name a valid
    agent count, and a new MCP session does not reset the bucket."""
    env = broker_env(redis_url, tmp_path, CLIENT_RATE_LIMIT_PER_SECOND="1", CLIENT_RATE_LIMIT_BURST="5")
    with serving_at(env) as base:
        errors = []
        for _ in range(2):  # two sessions, one address
            async with Client(StreamableHttpTransport(f"{base}/mcp/")) as client:
                for _ in range(4):
                    result = await client.call_tool(
                        "fetch_inbox", {"project_key": "/nope", "agent_name": "Nobody"}, raise_on_error=False
                    )
                    errors.append(result.content[0].text)
        codes = [e.split(":")[0] for e in errors]
        assert codes[:5] == ["NOT_FOUND"] * 5, errors
        assert set(codes[5:]) == {"RATE_LIMITED"}, errors
        assert "CLIENT_RATE_LIMIT_PER_SECOND=1" in errors[-1] and retry_after(errors[-1]) <= 1.0


@pytest.mark.integration
async def test_an_http_client_reading_resources_is_rate_limited_too(redis_url: str, tmp_path: Path) -> None:
    """Resource reads cost the broker work as tool calls do (resource://agents/... reads every
    agent of a project), so a client that reads resources in a loop is limited by the same
    bucket instead of going around it."""
    env = broker_env(redis_url, tmp_path, CLIENT_RATE_LIMIT_PER_SECOND="1", CLIENT_RATE_LIMIT_BURST="5")
    with serving_at(env) as base:
        outcomes = []
        async with Client(StreamableHttpTransport(f"{base}/mcp/")) as client:
            for _ in range(8):
                try:
                    await client.read_resource("resource://tooling/projects")
                    outcomes.append("ok")
                except Exception as exc:  # the client raises the server's error text
                    outcomes.append(str(exc))
        assert outcomes[:5] == ["ok"] * 5, outcomes
        assert all("RATE_LIMITED: " in o for o in outcomes[5:]), outcomes
        assert "CLIENT_RATE_LIMIT_PER_SECOND=1" in outcomes[-1]
