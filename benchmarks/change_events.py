"""Change-event benchmark: what the web view's change events cost the scripts that publish them.

``reserve.lua`` (5 paths renewed in place, one of them held by another agent, among 100 held) and
``mark_message.lua`` (an acknowledgement of a new message each time) are run as shipped and as
the same source with its ``SPUBLISH`` line taken out, alternately, with the exact keys and
arguments the tools pass (recorded from a real call), in one run on one Redis: once with nobody
subscribed to the project's channel, once with one subscriber (an open page). Figures: each
variant's median time inside Redis (SLOWLOG) and its median round trip from Python, and the
ratio shipped / silent.

Run: python -m benchmarks.change_events [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastmcp import Client

from benchmarks.common import bench_settings, machine_load, redis_url
from broker.server import build_server
from broker.store.clients import make_client
from broker.store.scripts import script_source

PROJECT = "/bench/change-events"


def silent_source(name: str) -> str:
    """The script without its one SPUBLISH line."""
    lines = script_source(name).splitlines(keepends=True)
    kept = [line for line in lines if '"SPUBLISH"' not in line]
    assert len(kept) == len(lines) - 1, f"{name}: expected one SPUBLISH line"
    return "".join(kept)


async def compare(
    client: Any, name: str, keys: list[str], args_of: Callable[[int], list[Any]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Round trips (s) and SLOWLOG durations (us) of the shipped and silent script, alternating."""
    shas = {
        "shipped": await client.script_load(script_source(name)),
        "silent": await client.script_load(silent_source(name)),
    }
    await client.config_set("slowlog-log-slower-than", 0)
    await client.config_set("slowlog-max-len", 100_000)
    await client.slowlog_reset()
    trips: dict[str, list[float]] = {variant: [] for variant in shas}
    order = list(shas.items())
    for i in range(rounds):
        for variant, sha in order if i % 2 == 0 else order[::-1]:  # neither always goes first
            args = args_of(2 * i + (variant == "silent"))
            start = time.perf_counter()
            reply = await client.evalsha(sha, len(keys), *keys, *args)
            trips[variant].append(time.perf_counter() - start)
            assert reply[0] == "ok", reply
    entries = await client.slowlog_get(100_000)
    await client.config_set("slowlog-log-slower-than", 10_000)
    inside = {
        variant: [e["duration"] for e in entries if sha in str(e.get("command", ""))] for variant, sha in shas.items()
    }
    return trips, inside


def report(label: str, trips: dict[str, list[float]], inside: dict[str, list[int]]) -> str:
    med = {v: statistics.median(inside[v]) for v in inside}
    rt = {v: statistics.median(trips[v]) * 1e6 for v in trips}
    return (
        f"{label:<54} in Redis {med['silent']:5.0f} -> {med['shipped']:5.0f} us ({med['shipped'] / med['silent']:.2f}x)"
        f"   round trip {rt['silent']:5.0f} -> {rt['shipped']:5.0f} us ({rt['shipped'] / rt['silent']:.2f}x)"
    )


async def run(rounds: int) -> None:
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp:
        server = build_server(
            bench_settings(url, Path(tmp), AGENT_RATE_LIMIT_PER_SECOND=0)
        )  # thousands of calls of one agent
        store = server.store  # type: ignore[attr-defined]
        recorded: dict[str, tuple[list[str], list[Any]]] = {}
        original = store.run

        async def recording(name: str, keys: list[str], args: list[Any]) -> Any:
            recorded.setdefault(name, (list(keys), list(args)))
            return await original(name, keys, args)

        store.run = recording  # the exact keys and arguments the tools pass
        async with Client(server) as mcp:

            async def call(tool: str, **args: Any) -> Any:
                return (await mcp.call_tool(tool, {"project_key": PROJECT, **args})).data

            await mcp.call_tool("ensure_project", {"human_key": PROJECT})
            names = [(await call("register_agent", program="bench", model="m"))["name"] for _ in range(11)]
            holders, requester = names[:10], names[10]
            for d in range(100):
                await call("file_reservation_paths", agent_name=holders[d % 10], paths=[f"dir{d:02}/file.py"])
            paths = ["dir03/new.py", "dir17/new.py", "dir42/new.py", "dir77/new.py", "dir00/file.py"]
            await call("file_reservation_paths", agent_name=requester, paths=paths)
            ids = []
            for _ in range(4 * rounds + 1):
                sent = await call("send_message", sender_name=holders[0], to=[requester], subject="s", body_md="b",
                                  ack_required=True)  # fmt: skip
                ids.append(sent["deliveries"][0]["payload"]["id"])
            await call("acknowledge_message", agent_name=requester, message_id=ids.pop())
        store.run = original
        reserve_keys, reserve_args = recorded["reserve"]
        mark_keys, mark_args = recorded["mark_message"]
        client = make_client(url, 4)
        channel = mark_args[6]  # the project's doorbell channel, which both scripts publish on
        assert reserve_args[11] == channel
        lines = [f"Redis: {source}; {rounds} calls per variant and case, alternating; {machine_load()}"]
        subscriber = make_client(url, 1).pubsub()
        try:
            for listening in (False, True):
                if listening:
                    await subscriber.ssubscribe(channel)
                    drain = asyncio.create_task(_drain(subscriber))
                who = "1 subscriber" if listening else "no subscriber"
                trips, inside = await compare(client, "reserve", reserve_keys, lambda _: reserve_args, rounds)
                lines.append(report(f"reserve.lua, 5 paths renewed, 100 held, {who}", trips, inside))
                batch = ids[: 2 * rounds] if not listening else ids[2 * rounds :]

                def mark_args_for(i: int, batch: list[int] = batch) -> list[Any]:
                    return [*mark_args[:4], batch[i], *mark_args[5:]]

                trips, inside = await compare(client, "mark_message", mark_keys, mark_args_for, rounds)
                lines.append(report(f"mark_message.lua (ack), {who}", trips, inside))
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        finally:
            await subscriber.aclose()
            await client.aclose()
            await store.close()
    print("\n".join(lines))


async def _drain(pubsub: Any) -> None:
    while True:
        await pubsub.get_message(timeout=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000, help="calls per variant and case")
    args = parser.parse_args()
    asyncio.run(run(args.rounds))


if __name__ == "__main__":
    main()
