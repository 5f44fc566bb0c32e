"""The HTTP client's bucket pays for reservation work, as the agent's does (docs/limits.md):
joining is free, so a client spreading dear reservation calls over many fresh agents (each with
a full bucket) was held back only by one token per call, about 500 calls of up to ~3.5 ms of
Redis each per second."""

from __future__ import annotations

from pathlib import Path

from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from helpers import PROJECT, make_settings
from realtime_helpers import http_broker, local_tools

AT_CAPS = "*" + "a" * 18 + "*" + "a" * 18  # as in test_fairness: weight 40 with one more character


async def test_dear_reservations_draw_on_the_client_bucket_by_their_work(backend: str, tmp_path: Path) -> None:
    settings = make_settings(backend, tmp_path, CLIENT_RATE_LIMIT_PER_SECOND="1", CLIENT_RATE_LIMIT_BURST="100")
    async with http_broker(settings) as (base, _store), local_tools(settings) as tools:
        await tools.project()
        holder = (await tools.agent())["name"]
        await tools.call(
            "file_reservation_paths", project_key=PROJECT, agent_name=holder,
            paths=[AT_CAPS + "b", *(f"src/*{i}x" for i in range(99))],
        )  # fmt: skip
        askers = [(await tools.agent())["name"] for _ in range(10)]  # fresh agents: full buckets
        outcomes = []
        async with Client(StreamableHttpTransport(f"{base}/mcp/")) as client:
            for name in askers:  # each call: ~20,500 matching steps (the longest path vs a glob at the caps)
                result = await client.call_tool(
                    "file_reservation_paths",
                    {"project_key": PROJECT, "agent_name": name, "paths": ["a" * 511 + "c"]},
                    raise_on_error=False,
                )
                outcomes.append(result.content[0].text.split(":")[0] if result.is_error else "ok")
        assert outcomes[:3] == ["ok"] * 3, outcomes
        assert "RATE_LIMITED" in outcomes[3:7], outcomes  # ~21 tokens a call from a bucket of 100
        assert all(o == "RATE_LIMITED" for o in outcomes[outcomes.index("RATE_LIMITED") :]), outcomes
