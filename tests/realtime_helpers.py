"""Helpers for the realtime tests: waiting on server-side state, starting wait_for_mail calls."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, drop_prefix

from broker.config import Settings
from broker.server import build_http_app, build_server
from broker.store.store import Store


async def until(condition: Any, timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds (a state change inside the server we cannot await)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


def store_of(server: FastMCP) -> Store:
    return server.store  # type: ignore[attr-defined]


async def waiting(server: FastMCP, tools: Tools, count: int = 1, **args: Any) -> asyncio.Task[Any]:
    """Start a wait_for_mail call and return once its waiter is registered with the doorbell."""
    doorbell = store_of(server).doorbell
    before = doorbell.waiter_count
    task = asyncio.create_task(tools.call("wait_for_mail", project_key=PROJECT, **args))
    await until(lambda: doorbell.waiter_count >= before + count or task.done())
    return task


@asynccontextmanager
async def http_broker(settings: Settings) -> AsyncIterator[tuple[str, Store]]:
    """``broker serve``'s app on a free port in this loop; yields its base URL and store."""
    app, mcp = build_http_app(settings, "127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or task.done())
        yield f"http://127.0.0.1:{port}", mcp.store  # type: ignore[attr-defined]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


@asynccontextmanager
async def local_tools(settings: Settings) -> AsyncIterator[Tools]:
    """Tools on an in-process server sharing the HTTP broker's Redis and key prefix."""
    async with Client(build_server(settings, agent_auth="open")) as client:
        yield Tools(client)


async def read_events(lines: AsyncIterator[str], count: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The next ``count`` SSE events as (id, event, data JSON); comment lines (pings) skipped."""
    events: list[tuple[str, str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    while len(events) < count:
        line = await asyncio.wait_for(anext(lines), 5)
        if not line:
            if "data" in fields:
                events.append((fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"])))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    return events
