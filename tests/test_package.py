"""What a user of the installed package sees: ``broker --version``, the package's version in the
MCP server info, and the bearer token accepted whatever the case of its scheme name."""

from __future__ import annotations

import subprocess
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from process_helpers import BROKER, broker_env, serving

import broker

pytestmark = pytest.mark.integration
TOKEN = "case-token"


def test_version_option_prints_the_package_version() -> None:
    done = subprocess.run([BROKER, "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"agent-broker {version('agent-broker')}"
    assert broker.__version__ == version("agent-broker")


async def test_bearer_scheme_is_case_insensitive(redis_url: str, tmp_path: Path) -> None:
    with serving(broker_env(redis_url, tmp_path, HTTP_BEARER_TOKEN=TOKEN)) as served:
        for scheme in ("Bearer", "bearer", "BEARER"):
            transport = StreamableHttpTransport(served.mcp_url, headers={"Authorization": f"{scheme} {TOKEN}"})
            async with Client(transport) as client:
                info = client.server_info
                assert (info.name, info.version) == ("agent-broker", broker.__version__)
                assert (await client.call_tool("health_check", {})).data["status"] == "ok"
        # Only the scheme's case is free: a wrong token, another scheme or no space still fail.
        for header in (f"bearer {TOKEN}x", f"Basic {TOKEN}", f"Bearer{TOKEN}", TOKEN, f"bearer  {TOKEN[:-1]}"):
            refused = httpx.post(served.mcp_url, json={}, headers={"Authorization": header})
            assert refused.status_code == 401, header
