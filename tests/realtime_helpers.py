"""Helpers for the realtime tests: waiting on server-side state, starting wait_for_mail calls."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastmcp import FastMCP
from helpers import PROJECT, Tools

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
