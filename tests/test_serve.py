"""`broker serve` as a real process: streamable HTTP with a bearer token, health probes, stdio,
and agent auth forced on beyond loopback. Runs against the session's real Redis."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
import redis
from fastmcp import Client
from fastmcp.client.transports import StdioTransport, StreamableHttpTransport
from process_helpers import BROKER, broker_env, free_port, serving_at

pytestmark = pytest.mark.integration
TOKEN = "s3cret-bearer"


async def test_http_with_bearer_token(redis_url: str, tmp_path: Path) -> None:
    with serving_at(broker_env(redis_url, tmp_path, HTTP_BEARER_TOKEN=TOKEN)) as base:
        assert httpx.get(f"{base}/health/liveness").json() == {"status": "alive"}
        assert httpx.get(f"{base}/health/readiness").json()["status"] == "ready"
        # Without the bearer token, or with a wrong one, the MCP endpoint refuses.
        assert httpx.post(f"{base}/mcp/", json={}).status_code == 401
        wrong = httpx.post(f"{base}/mcp/", json={}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401

        transport = StreamableHttpTransport(f"{base}/mcp/", headers={"Authorization": f"Bearer {TOKEN}"})
        async with Client(transport) as client:
            await client.call_tool("ensure_project", {"human_key": "/srv/http"})
            alice = (
                await client.call_tool("register_agent", {"project_key": "/srv/http", "program": "p", "model": "m"})
            ).data
            bob = (
                await client.call_tool("register_agent", {"project_key": "/srv/http", "program": "p", "model": "m"})
            ).data
            sent = await client.call_tool(
                "send_message",
                {"project_key": "/srv/http", "sender_name": alice["name"], "to": [bob["name"]],
                 "subject": "over http", "body_md": "hello"},
            )  # fmt: skip
            inbox = await client.call_tool(
                "fetch_inbox", {"project_key": "/srv/http", "agent_name": bob["name"], "include_bodies": True}
            )
        message_id = sent.data["deliveries"][0]["payload"]["id"]
        assert [(m["id"], m["subject"], m["body_md"]) for m in inbox.data] == [(message_id, "over http", "hello")]
        # The endpoint answers without its trailing slash too (no redirect), as the reference's does.
        bare = StreamableHttpTransport(f"{base}/mcp", headers={"Authorization": f"Bearer {TOKEN}"})
        async with Client(bare) as client:
            assert (await client.call_tool("health_check", {})).data["status"] == "ok"


async def test_readiness_fails_when_redis_is_unreachable(tmp_path: Path) -> None:
    with serving_at(broker_env(f"redis://127.0.0.1:{free_port()}/0", tmp_path)) as base:
        assert httpx.get(f"{base}/health/liveness").status_code == 200
        ready = httpx.get(f"{base}/health/readiness")
        assert ready.status_code == 503
        assert "Redis unreachable" in ready.json()["detail"]


async def test_beyond_loopback_agent_tokens_are_required(redis_url: str, tmp_path: Path) -> None:
    with serving_at(broker_env(redis_url, tmp_path, HTTP_BEARER_TOKEN=TOKEN), host="0.0.0.0") as base:
        transport = StreamableHttpTransport(f"{base}/mcp/", headers={"Authorization": f"Bearer {TOKEN}"})
        async with Client(transport) as client:
            health = (await client.call_tool("health_check", {})).data
            assert health["agent_auth"] == "required"
            await client.call_tool("ensure_project", {"human_key": "/srv/remote"})
            agent = (
                await client.call_tool("register_agent", {"project_key": "/srv/remote", "program": "p", "model": "m"})
            ).data
            args = {"project_key": "/srv/remote", "agent_name": agent["name"]}
            refused = await client.call_tool("fetch_inbox", args, raise_on_error=False)
            assert refused.is_error
            assert refused.content[0].text.startswith("AUTHENTICATION_REQUIRED:")
            allowed = await client.call_tool("fetch_inbox", {**args, "registration_token": agent["registration_token"]})
            assert allowed.data == []


async def test_stdio_transport(redis_url: str, tmp_path: Path) -> None:
    env = broker_env(redis_url, tmp_path)
    async with Client(StdioTransport(BROKER, ["serve", "--transport", "stdio"], env=env)) as client:
        health = (await client.call_tool("health_check", {})).data
        assert health["status"] == "ok"
        assert "REDIS_URL" in health["redis"]
        project = (await client.call_tool("ensure_project", {"human_key": "/srv/stdio"})).data
        assert project["slug"] == "srv-stdio"


async def test_embedded_redis_is_shared_by_broker_processes(tmp_path: Path) -> None:
    """With no REDIS_URL, two stdio brokers on one STORAGE_ROOT share one redis-server, so an
    agent registered through one is visible through the other."""
    env = broker_env("", tmp_path)
    env.pop("REDIS_URL")
    first = Client(StdioTransport(BROKER, ["serve", "--transport", "stdio"], env=env))
    second = Client(StdioTransport(BROKER, ["serve", "--transport", "stdio"], env=env))
    try:
        async with first, second:
            await first.call_tool("ensure_project", {"human_key": "/srv/embedded"})
            agent = (
                await first.call_tool("register_agent", {"project_key": "/srv/embedded", "program": "p", "model": "m"})
            ).data
            seen = (await second.call_tool("whois", {"project_key": "/srv/embedded", "agent_name": agent["name"]})).data
            assert seen["id"] == agent["id"]
            assert "embedded redis-server" in (await second.call_tool("health_check", {})).data["redis"]
            # Only its owner can read where it listens, and it wants the password written there.
            url_file = tmp_path / "redis" / "server.url"
            assert url_file.stat().st_mode & 0o777 == 0o600
            url = url_file.read_text().strip()
            assert redis.Redis.from_url(url).ping()
            with pytest.raises(redis.AuthenticationError):
                redis.Redis.from_url("redis://" + url.split("@", 1)[1]).ping()
    finally:
        subprocess.run([BROKER, "redis-stop"], env=env, check=True, capture_output=True)
    assert not (tmp_path / "redis" / "server.url").exists()
