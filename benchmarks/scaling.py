"""Scaling benchmark: send_message calls/s of 1 vs 2 `broker serve` processes on one redis-server.

Two real `broker serve` processes (MCP over streamable HTTP) run on one throwaway redis-server
with the same key prefix, as a deployment of several processes behind a load balancer would.
The load comes from a third process (benchmarks/load.py): ``--clients`` concurrent MCP sessions,
session i on process i mod N, each sending 512-byte messages between the project's agents as
fast as replies come. Phases alternate between 1 process and 2 (the same number of sessions),
``--repeats`` times each; the ratio is the median over the repeats of 2 processes / 1 process,
each repeat's two phases run back to back.

The per-agent and per-client rate limits are off (AGENT_RATE_LIMIT_PER_SECOND=0,
CLIENT_RATE_LIMIT_PER_SECOND=0: all the load comes from one address) and nothing persists
(PERSISTENCE_WORKER=external with no worker), the same in both arms. The CPU each process used
during the counted window is printed too, to show where the machine's cores went.

Each broker runs in a session of its own, as a service manager (systemd, a container runtime)
would start it. Linux shares the CPU fairly between sessions (autogroup scheduling): started in
this benchmark's session, two brokers would split one session's share on a busy shared
machine, and the second process could add nothing however well the broker scales (measured:
0.92x with 7 other busy sessions, while the same code gave 1.81x with a session each).

Run: python -m benchmarks.scaling [--clients N] [--seconds S] [--repeats N]   (from the repository
root: it starts the brokers with tests/process_helpers.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from benchmarks.common import machine_load, redis_url
from benchmarks.load import McpSession, cpu_seconds
from benchmarks.messaging import BODY
from tests.process_helpers import Served, broker_env, serving

PROJECT = "/bench/scaling"
TARGET = 1.5
# Off in both arms, so that neither limiter caps the load (docs/limits.md).
UNLIMITED = {"AGENT_RATE_LIMIT_PER_SECOND": "0", "CLIENT_RATE_LIMIT_PER_SECOND": "0"}


async def send_calls(mcp_url: str, agents: int) -> list[tuple[str, dict[str, Any]]]:
    """Register ``agents`` agents; one send_message per agent, each to the next one."""
    session = await McpSession(mcp_url).open()
    await session.call(McpSession.encode("ensure_project", {"human_key": PROJECT}))
    names = []
    for _ in range(agents):
        reply = await session.call(
            McpSession.encode("register_agent", {"project_key": PROJECT, "program": "bench", "model": "m"})
        )
        names.append(reply["structuredContent"]["name"])
    await session.close()
    return [
        ("send_message", {"project_key": PROJECT, "sender_name": name, "to": [names[(i + 1) % agents]],
                          "subject": "scaling benchmark", "body_md": BODY})
        for i, name in enumerate(names)
    ]  # fmt: skip


def phase(served: list[Served], redis_pid: int, calls_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One run of the load process against ``served``; its result plus the CPU (cores) each
    server process and Redis used while it counted."""
    command = [sys.executable, "-m", "benchmarks.load", "--urls", ",".join(s.mcp_url for s in served)]
    command += ["--calls", str(calls_file), "--clients", str(args.clients), "--seconds", str(args.seconds)]
    pids = {"redis": redis_pid, **{f"broker{i + 1}": s.proc.pid for i, s in enumerate(served)}}
    load = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert load.stdout is not None
    before, opened = {}, 0.0
    result: dict[str, Any] = {}
    for line in load.stdout:
        message = json.loads(line)
        if message.get("window") == "open":
            before, opened = {name: cpu_seconds(pid) for name, pid in pids.items()}, time.perf_counter()
        else:
            elapsed = time.perf_counter() - opened
            result = {**message, **{name: (cpu_seconds(pid) - before[name]) / elapsed for name, pid in pids.items()}}
    if load.wait() != 0 or not result:
        raise RuntimeError("the load process failed")
    return result


def describe(label: str, result: dict[str, Any]) -> str:
    cores = ", ".join(f"{name} {value:4.2f}" for name, value in result.items() if name.startswith(("broker", "redis")))
    rate = max(result["calls_per_s"], 1e-9)
    brokers = sum(value for name, value in result.items() if name.startswith("broker"))
    return (
        f"  {label:<11} {result['calls_per_s']:7.0f} calls/s  errors {result['errors']:<3} "
        f"CPU cores: {cores}, load {result['load_cpu_per_s']:4.2f}; per call: broker {brokers / rate * 1e3:4.2f} ms, "
        f"redis {result['redis'] / rate * 1e6:4.0f} us"
    )


def run(args: argparse.Namespace) -> None:
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        env = broker_env(url, Path(tmp), PERSISTENCE_WORKER="external", **UNLIMITED)  # one key prefix for both
        served = [stack.enter_context(serving(env, new_session=True)) for _ in range(2)]
        calls_file = Path(tmp) / "calls.json"
        calls_file.write_text(json.dumps(asyncio.run(send_calls(served[0].mcp_url, args.agents))))
        redis_pid = int(redis.Redis.from_url(url).info("server")["process_id"])
        rates: dict[int, list[float]] = {1: [], 2: []}
        per_core: dict[int, list[float]] = {1: [], 2: []}  # calls per second of broker CPU
        print(f"Redis: {source}; {args.clients} MCP sessions in one load process, {args.agents} agents, "
              f"{args.seconds:g} s counted per phase; {machine_load()}")  # fmt: skip
        for repeat in range(args.repeats):
            for processes in (1, 2) if repeat % 2 == 0 else (2, 1):
                result = phase(served[:processes], redis_pid, calls_file, args)
                rates[processes].append(result["calls_per_s"])
                cores = sum(value for name, value in result.items() if name.startswith("broker"))
                per_core[processes].append(result["calls_per_s"] / max(cores, 1e-9))
                print(describe(f"{processes} process{'es' if processes > 1 else ''}", result), flush=True)
    # Each repeat's two phases run back to back, so their ratio sees the same machine; the
    # shared machine's other load drifts between repeats, which a ratio of medians would mix in.
    ratios = [two / one for one, two in zip(rates[1], rates[2], strict=True)]
    ratio = statistics.median(ratios)
    print(
        f"send_message calls/s, median of {args.repeats}: 1 process {statistics.median(rates[1]):.0f}, "
        f"2 processes {statistics.median(rates[2]):.0f}; ratio per repeat {', '.join(f'{r:.2f}' for r in ratios)}; "
        f"median {ratio:4.2f}x (target >= {TARGET}x: {'ok' if ratio >= TARGET else 'BELOW TARGET'})"
    )
    # What the scheduler gave the brokers varies with the machine's other load; the calls each
    # second of broker CPU buys does not, and says what a second process costs per call.
    core_one, core_two = statistics.median(per_core[1]), statistics.median(per_core[2])
    print(
        f"calls per second of broker CPU: 1 process {core_one:.0f}, 2 processes {core_two:.0f} "
        f"({core_two / core_one:4.2f}x; 1.00x: a second process costs nothing per call)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64, help="concurrent MCP sessions, in both arms")
    parser.add_argument("--agents", type=int, default=64, help="agents sending to each other")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds counted per phase")
    parser.add_argument("--repeats", type=int, default=5, help="phases of each arm")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
