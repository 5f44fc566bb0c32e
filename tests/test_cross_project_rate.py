"""A sender's rate limit (docs/limits.md) holds when it writes only into other projects: its own
project's bucket pays for deliveries and contact requests elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastmcp import Client
from helpers import Tools, drop_prefix, make_settings

from broker.server import build_server


@pytest.fixture
async def tools(backend: str, tmp_path: Path) -> AsyncIterator[Tools]:
    mcp = build_server(make_settings(backend, tmp_path, AGENT_RATE_LIMIT_PER_SECOND="0.2", AGENT_RATE_LIMIT_BURST="5"))
    async with Client(mcp) as client:
        tools = Tools(client)
        await tools.project("/x/a")
        await tools.project("/x/b")
        for name, key in (("BlueLake", "/x/a"), ("RedFox", "/x/b"), ("GreenCastle", "/x/b")):
            await tools.agent(name, project_key=key)
        yield tools
    await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def outcomes(tools: Tools, tool: str, calls: list[dict[str, object]]) -> list[str]:
    codes = []
    for args in calls:
        result = await tools.client.call_tool(tool, args, raise_on_error=False)
        codes.append(result.content[0].text.split(":")[0] if result.is_error else "ok")
    return codes


async def test_sends_into_another_project_draw_on_the_senders_bucket(tools: Tools) -> None:
    # an approved link; its contact request paid one of the 5 tokens
    await tools.call("request_contact", project_key="/x/a", from_agent="BlueLake", to_agent="RedFox", to_project="/x/b")
    await tools.call(
        "respond_contact",
        project_key="/x/b",
        to_agent="RedFox",
        from_agent="BlueLake",
        from_project="/x/a",
        accept=True,
    )
    send = {"project_key": "/x/a", "sender_name": "BlueLake", "to": ["project:x-b#RedFox"], "body_md": "b"}
    codes = await outcomes(tools, "send_message", [{**send, "subject": f"s{i}"} for i in range(8)])
    assert codes == ["ok"] * 4 + ["RATE_LIMITED"] * 4, codes
    inbox = await tools.inbox("RedFox", project_key="/x/b")
    assert len([m for m in inbox if m["subject"].startswith("s")]) == 4  # a refusal delivers nothing


async def test_contact_requests_into_another_project_draw_on_it_too(tools: Tools) -> None:
    request = {"project_key": "/x/a", "from_agent": "BlueLake", "to_project": "/x/b"}
    calls = [{**request, "to_agent": name} for name in ["RedFox", "GreenCastle"] * 4]
    assert (await outcomes(tools, "request_contact", calls))[5:] == ["RATE_LIMITED"] * 3
