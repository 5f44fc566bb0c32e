"""Helpers shared by the test modules: settings, tool calls through an MCP client, Redis snapshots."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from cluster_helpers import QUEUE_URLS
from fastmcp import Client

from broker.config import Settings
from broker.store.clients import is_cluster_url, plain_url
from broker.store.store import Store

PROJECT = "/tmp/concurrent-test"
SLUG = "tmp-concurrent-test"  # the slug of PROJECT


def real_redis_only(test: Any) -> Any:
    """Run a backend-parametrized test on the real redis-server only. For volume tests (a thousand
    sends, hundreds of property examples through one script): their fakeredis run executes the
    same Lua, only several times slower, and proves nothing the real Redis run does not."""
    return pytest.mark.integration(pytest.mark.parametrize("backend", ["redis"], indirect=True)(test))


def make_settings(url: str, root: Path, **overrides: Any) -> Settings:
    """Settings with a key prefix of their own, so tests sharing one Redis never collide."""
    if is_cluster_url(url):  # a cluster seed from tests/cluster_helpers.py, with its queue Redis
        overrides = {"REDIS_CLUSTER": True, "QUEUE_REDIS_URL": QUEUE_URLS[url], **overrides}
        url = plain_url(url)
    values: dict[str, Any] = {
        "REDIS_URL": url,
        "REDIS_KEY_PREFIX": f"t{uuid4().hex[:10]}",
        "STORAGE_ROOT": root,
        "AGENT_AUTH": "open",
        **overrides,
    }
    return Settings(**values)


async def drop_prefix(store: Store) -> None:
    """Delete every key under the store's prefix (keeps a shared Redis tidy), then close the client."""
    client = store.client()
    keys = [key async for key in client.scan_iter(match=f"{store.keys.prefix}:*", count=1000)]
    for start in range(0, len(keys), 500):
        await client.delete(*keys[start : start + 500])
    await store.close()


class Tools:
    """Calls tools through a fastmcp Client and unwraps their results.

    fastmcp 4 gives a dict tool's result as ``.data`` (equal to ``structured_content``); a list
    tool's ``structured_content`` is ``{"result": [...]}`` (the reference's wrapping) and
    ``.data`` is the unwrapped list.
    """

    def __init__(self, client: Client) -> None:
        self.client = client

    async def call(self, tool: str, /, **args: Any) -> Any:
        result = await self.client.call_tool(tool, args, raise_on_error=False)
        if result.is_error:
            raise AssertionError(f"{tool}({args}) failed: {result.content[0].text}")
        if isinstance(result.data, list):
            assert result.structured_content == {"result": result.data}
        else:
            assert isinstance(result.data, dict), result
            assert result.structured_content == result.data
        return result.data

    async def error(self, tool: str, /, **args: Any) -> str:
        """The error text of a call that must fail."""
        result = await self.client.call_tool(tool, args, raise_on_error=False)
        assert result.is_error, f"{tool}({args}) unexpectedly succeeded: {result.data}"
        return result.content[0].text

    # -- shortcuts for common setup steps ---------------------------------------------------
    async def project(self, human_key: str = PROJECT) -> dict[str, Any]:
        return await self.call("ensure_project", human_key=human_key)

    async def agent(self, name: str | None = None, project_key: str = PROJECT, **extra: Any) -> dict[str, Any]:
        args: dict[str, Any] = {"project_key": project_key, "program": "claude-code", "model": "opus-4", **extra}
        if name is not None:
            args["name"] = name
        return await self.call("register_agent", **args)

    async def send(self, sender: str, to: list[str], project_key: str = PROJECT, **extra: Any) -> dict[str, Any]:
        args = {"subject": "Hello", "body_md": "Body", **extra}
        return await self.call("send_message", project_key=project_key, sender_name=sender, to=to, **args)

    async def inbox(self, agent: str, project_key: str = PROJECT, **extra: Any) -> list[dict[str, Any]]:
        return await self.call("fetch_inbox", project_key=project_key, agent_name=agent, **extra)


async def snapshot(store: Store) -> dict[str, tuple[str, Any]]:
    """Every key under the test's prefix with its full contents.

    The id counters (``<p>:ids:*``) are left out: ids are reserved in blocks per process
    before a script runs (docs/architecture.md, decision 11), so a rejected call may legitimately use one.
    So are the agents' rate-limit buckets (``rate:<agent>``, docs/limits.md): accounting that
    expires about a second after a call, and that a refused reservation pays into. And the
    persistence workers' totals (``persist:stats``, for /metrics): a count of work done, not state.
    """
    client = store.client()
    prefix = store.keys.prefix
    state: dict[str, tuple[str, Any]] = {}
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        if key.startswith(f"{prefix}:ids:") or "}:rate:" in key or key == f"{prefix}:persist:stats":
            continue
        kind = await client.type(key)
        if kind == "hash":
            value: Any = await client.hgetall(key)
        elif kind == "stream":
            value = await client.xrange(key)
        elif kind == "zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(await client.smembers(key))
        elif kind == "list":
            value = await client.lrange(key, 0, -1)
        else:
            value = await client.get(key)
        state[key] = (kind, value)
    return state


PROFILE = {"program": "claude-code", "model": "opus-4"}


async def live_reservations(tools: Tools) -> list[tuple[str, str]]:
    rows = json.loads((await tools.client.read_resource(f"resource://file_reservations/{SLUG}"))[0].text)
    return [(row["agent"], row["path_pattern"]) for row in rows]


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    git(path, "config", "user.email", "agent@example.com")
    git(path, "config", "user.name", "Agent")
    return path


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=False)
