"""The embedded default (no REDIS_URL): `broker serve` persists in-process, so mail sent through
a stdio broker reaches the index and Git archive under STORAGE_ROOT without `broker worker`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from helpers import make_settings
from persist_helpers import committed_files, persisted_count

pytestmark = pytest.mark.integration
BROKER = str(Path(sys.executable).with_name("broker"))


async def test_serve_without_redis_url_runs_the_worker_in_process(tmp_path: Path) -> None:
    env = {"STORAGE_ROOT": str(tmp_path), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    client = Client(StdioTransport(BROKER, ["serve", "--transport", "stdio"], env=env))
    settings = make_settings("", tmp_path)
    try:
        async with client:
            await client.call_tool("ensure_project", {"human_key": "/srv/embedded"})
            for name in ("BlueLake", "GreenCastle"):
                await client.call_tool(
                    "register_agent", {"project_key": "/srv/embedded", "program": "p", "model": "m", "name": name}
                )
            await client.call_tool(
                "send_message",
                {"project_key": "/srv/embedded", "sender_name": "BlueLake", "to": ["GreenCastle"],
                 "subject": "persisted in-process", "body_md": "embedded worker"},
            )  # fmt: skip
            deadline = time.monotonic() + 20
            while not persisted_count(settings):
                assert time.monotonic() < deadline, "the in-process worker did not persist the message"
                await asyncio.sleep(0.1)
            found = await client.call_tool(
                "search_messages", {"project_key": "/srv/embedded", "query": "embedded", "agent_name": "GreenCastle"}
            )
            assert [item["subject"] for item in found.structured_content["result"]] == ["persisted in-process"]
        assert any(f.startswith("projects/srv-embedded/messages/") for f in committed_files(settings))
    finally:
        subprocess.run([BROKER, "redis-stop"], env=env, check=True, capture_output=True)
