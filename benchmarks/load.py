"""A lean MCP client over streamable HTTP, and a load generator built on it, for the benchmarks
that measure served broker processes (benchmarks.scaling, benchmarks.transport).

The client speaks the protocol as any MCP client does (``initialize``, ``notifications/initialized``,
then ``tools/call`` on its session, replies read from the server-sent event stream of each POST),
but with each request body encoded once, on one shared connection pool: fastmcp's Client costs
several times more CPU per call, which on this 2-core machine would be taken from the servers
under test.

Run as the load process: python -m benchmarks.load --urls URL[,URL...] --calls FILE.json
    [--clients N] [--warmup S] [--seconds S]   (prints one JSON line of results)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

import httpx

PROTOCOL = "2025-06-18"
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


class McpSession:
    """One MCP session on a server; ``call`` sends a pre-encoded tools/call request."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url
        self.headers = dict(HEADERS)

    async def open(self) -> McpSession:
        hello = {
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
        }  # fmt: skip
        reply = await self.http.post(self.url, headers=self.headers, json=hello)
        reply.raise_for_status()
        self.headers["mcp-protocol-version"] = PROTOCOL
        if "mcp-session-id" in reply.headers:
            self.headers["mcp-session-id"] = reply.headers["mcp-session-id"]
        done = await self.http.post(
            self.url, headers=self.headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
        )
        done.raise_for_status()
        return self

    @staticmethod
    def encode(tool: str, arguments: dict[str, Any]) -> bytes:
        request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
        return json.dumps(request).encode()

    async def call(self, body: bytes) -> dict[str, Any]:
        """The JSON-RPC result of one call (raises on a transport or protocol error)."""
        reply = await self.http.post(self.url, headers=self.headers, content=body)
        reply.raise_for_status()
        text = reply.text
        if reply.headers.get("content-type", "").startswith("text/event-stream"):
            text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
        message = json.loads(text)
        if "error" in message:
            raise RuntimeError(f"JSON-RPC error: {message['error']}")
        return message["result"]


def http_client(connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=60)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def generate(urls: list[str], calls: list[tuple[str, dict[str, Any]]], clients: int, warmup: float,
                   seconds: float) -> dict[str, Any]:  # fmt: skip
    """``clients`` concurrent sessions, client i on urls[i % len(urls)], each calling its share of
    ``calls`` in turn as fast as replies come; counts the calls that end inside the window."""
    async with http_client(clients) as http:
        sessions = [await McpSession(http, urls[i % len(urls)]).open() for i in range(clients)]
        bodies = [McpSession.encode(tool, arguments) for tool, arguments in calls]
        start = time.perf_counter()
        window = (start + warmup, start + warmup + seconds)
        counts = {"ok": 0, "errors": 0}
        cpu_before: list[float] = []

        async def loop(i: int) -> None:
            mine = bodies[i::clients] or bodies
            n = 0
            while True:
                try:
                    result = await sessions[i].call(mine[n % len(mine)])
                    outcome = "errors" if result.get("isError") else "ok"
                except (httpx.HTTPError, RuntimeError, ValueError):
                    outcome = "errors"
                n += 1
                now = time.perf_counter()
                if now >= window[1]:
                    return
                if now >= window[0]:
                    if not cpu_before:
                        cpu_before.append(time.process_time())
                    counts[outcome] += 1

        async def announce() -> None:  # tells the parent when to sample the servers' CPU
            await asyncio.sleep(warmup)
            print(json.dumps({"window": "open"}), flush=True)

        await asyncio.gather(announce(), *(loop(i) for i in range(clients)))
        cpu = time.process_time() - cpu_before[0] if cpu_before else 0.0
    return {**counts, "seconds": seconds, "calls_per_s": counts["ok"] / seconds, "load_cpu_per_s": cpu / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description="MCP load over streamable HTTP, round-robin over servers")
    parser.add_argument("--urls", required=True, help="comma-separated MCP endpoint URLs")
    parser.add_argument("--calls", required=True, help="JSON file: a list of [tool, arguments]")
    parser.add_argument("--clients", type=int, default=64, help="concurrent MCP sessions")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before counting")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds counted")
    args = parser.parse_args()
    with open(args.calls) as file:
        calls = [(tool, arguments) for tool, arguments in json.load(file)]
    result = asyncio.run(generate(args.urls.split(","), calls, args.clients, args.warmup, args.seconds))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
