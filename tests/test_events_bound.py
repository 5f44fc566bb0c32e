"""SSE streams are bounded per agent: every open stream re-reads the agent's inbox on each
arrival, so an agent holding thousands of streams made each message it received cost Redis
thousands of reads (a send is rate-limited, the reads it caused were not)."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
from helpers import SLUG, make_settings
from realtime_helpers import http_broker, local_tools

MAX_STREAMS_PER_AGENT = 8  # docs/limits.md


async def test_an_agent_cannot_hold_unbounded_sse_streams(backend: str, tmp_path: Path) -> None:
    settings = make_settings(backend, tmp_path, AGENT_AUTH="required")
    async with http_broker(settings) as (base, _store), local_tools(settings) as tools:
        await tools.project()
        token = (await tools.agent("GreenCastle"))["registration_token"]
        url = f"{base}/events/{SLUG}/GreenCastle"
        headers = {"X-Registration-Token": token}
        limits = httpx.Limits(max_connections=MAX_STREAMS_PER_AGENT + 2)
        async with httpx.AsyncClient(limits=limits, timeout=10) as http, AsyncExitStack() as open_streams:
            for _ in range(MAX_STREAMS_PER_AGENT):
                response = await open_streams.enter_async_context(http.stream("GET", url, headers=headers))
                assert response.status_code == 200
            async with http.stream("GET", url, headers=headers) as refused:
                assert refused.status_code == 429  # (it used to be served: 200, a stream more)
                body = json.loads(await refused.aread())
            assert body["error"] == "TOO_MANY_STREAMS" and "close" in body["detail"], body
        # closed streams are given back
        async with httpx.AsyncClient(timeout=10) as http, http.stream("GET", url, headers=headers) as again:
            assert again.status_code == 200


async def test_event_stream_requests_draw_on_the_client_bucket(backend: str, tmp_path: Path) -> None:
    """Opening a stream (even with a wrong token) is a request like a tool call: it costs Redis
    reads, so it draws on CLIENT_RATE_LIMIT too."""
    settings = make_settings(
        backend, tmp_path, AGENT_AUTH="required", CLIENT_RATE_LIMIT_PER_SECOND="1", CLIENT_RATE_LIMIT_BURST="3"
    )
    async with http_broker(settings) as (base, _store), local_tools(settings) as tools:
        await tools.project()
        await tools.agent("GreenCastle")
        async with httpx.AsyncClient(timeout=10) as http:
            url = f"{base}/events/{SLUG}/GreenCastle"
            answers = [await http.get(url, headers={"X-Registration-Token": "wrong"}) for _ in range(5)]
        assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
        assert answers[-1].json()["error"] == "RATE_LIMITED"
