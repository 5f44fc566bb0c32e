"""A Redis restart under a running broker: calls fail with CONNECTION_ERROR while it is down,
and work again once it is back (connections are re-made and scripts reloaded on NOSCRIPT)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastmcp import Client
from helpers import make_settings

from broker.server import build_server
from broker.store.embedded import start_redis_server

pytestmark = pytest.mark.integration


async def test_broker_survives_a_redis_restart(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    proc, url = start_redis_server(data, appendonly=True)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        async with Client(build_server(make_settings(url, tmp_path))) as client:
            await client.call_tool("ensure_project", {"human_key": "/tmp/restart"})
            reg = await client.call_tool(
                "register_agent", {"project_key": "/tmp/restart", "program": "p", "model": "m"}
            )
            name = reg.data["name"]
            send = {"project_key": "/tmp/restart", "sender_name": name, "to": [name], "subject": "one", "body_md": "b"}
            await client.call_tool("send_message", send)

            proc.terminate()
            proc.wait(10)
            down = await client.call_tool(
                "fetch_inbox", {"project_key": "/tmp/restart", "agent_name": name}, raise_on_error=False
            )
            assert down.is_error and down.content[0].text.startswith("CONNECTION_ERROR: Redis is unreachable")

            proc, _ = start_redis_server(data, port=port, appendonly=True)  # same data: AOF replays
            await client.call_tool("send_message", {**send, "subject": "two"})
            inbox = await client.call_tool("fetch_inbox", {"project_key": "/tmp/restart", "agent_name": name})
            assert [m["subject"] for m in inbox.data] == ["two", "one"]
    finally:
        proc.terminate()
        proc.wait(10)
