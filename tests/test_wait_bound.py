"""wait_for_mail calls held open at once are bounded per agent: each one re-reads the inbox on
every arrival, so an agent keeping thousands of waits open (each call lasts up to 120 s) made
every message it received cost Redis thousands of reads."""

from __future__ import annotations

import asyncio

from fastmcp import FastMCP
from helpers import PROJECT, Tools
from realtime_helpers import until

MAX_WAITS_PER_AGENT = 16  # docs/limits.md


async def test_an_agent_cannot_hold_unbounded_waits(tools: Tools, server: FastMCP) -> None:
    await tools.project()
    await tools.agent("GreenCastle")
    wait = {"project_key": PROJECT, "agent_name": "GreenCastle", "timeout_seconds": 5}
    doorbell = server.store.doorbell  # type: ignore[attr-defined]
    held = [asyncio.create_task(tools.call("wait_for_mail", **wait)) for _ in range(MAX_WAITS_PER_AGENT)]
    try:
        await until(lambda: doorbell.waiter_count >= MAX_WAITS_PER_AGENT)
        error = await tools.error("wait_for_mail", **{**wait, "timeout_seconds": 0.5})
        assert error.startswith("TOO_MANY_WAITS: "), error
    finally:
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
    await until(lambda: doorbell.waiter_count == 0)
    assert (await tools.call("wait_for_mail", **{**wait, "timeout_seconds": 0}))["timed_out"]
