"""A lean MCP client over streamable HTTP, and a load generator built on it, for the benchmarks
that measure served broker processes (benchmarks.scaling, benchmarks.transport).

The client speaks the protocol as any MCP client does (``initialize``, ``notifications/initialized``,
then ``tools/call`` on its session, replies read from the server-sent event stream of each POST),
but with each request body encoded once and HTTP/1.1 written by hand on one keep-alive
connection per session: fastmcp's Client (or httpx) costs several times more CPU per call, which
on this 2-core machine would be taken from the servers under test.

Run as the load process: python -m benchmarks.load --urls URL[,URL...] --calls FILE.json
    [--clients N] [--warmup S] [--seconds S]   (prints one JSON line of results)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from typing import Any
from urllib.parse import urlsplit

PROTOCOL = "2025-06-18"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class McpSession:
    """One MCP session on its own HTTP/1.1 keep-alive connection; ``call`` sends a pre-encoded
    tools/call request. The HTTP is written by hand (one write per request, the reply read as a
    chunked or sized body): the load process must spend as little CPU per call as it can."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
        self.headers = {"Host": f"{self.host}:{self.port}", **HEADERS}
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> McpSession:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        hello = {
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
        }  # fmt: skip
        status, headers, _ = await self._post(json.dumps(hello).encode())
        if status != 200:
            raise RuntimeError(f"initialize answered HTTP {status}")
        self.headers["mcp-protocol-version"] = PROTOCOL
        if "mcp-session-id" in headers:
            self.headers["mcp-session-id"] = headers["mcp-session-id"]
        status, _, _ = await self._post(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode())
        if status >= 300:
            raise RuntimeError(f"notifications/initialized answered HTTP {status}")
        return self

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()

    @staticmethod
    def encode(tool: str, arguments: dict[str, Any]) -> bytes:
        request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
        return json.dumps(request).encode()

    async def _post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self.reader is not None and self.writer is not None, "open() first"
        head = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        self.writer.write(f"POST {self.path} HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status = int((await self.reader.readline()).split(b" ", 2)[1])
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            chunks = []
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                chunks.append((await self.reader.readexactly(size + 2))[:-2])
            await self.reader.readline()  # the blank line after the last chunk
            return status, headers, b"".join(chunks)
        return status, headers, await self.reader.readexactly(int(headers.get("content-length", 0)))

    async def call(self, body: bytes) -> dict[str, Any]:
        """The JSON-RPC result of one call (raises on a transport or protocol error)."""
        status, headers, payload = await self._post(body)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")
        if headers.get("content-type", "").startswith("text/event-stream"):
            payload = next(line[5:] for line in payload.splitlines() if line.startswith(b"data:"))
        message = json.loads(payload)
        if "error" in message:
            raise RuntimeError(f"JSON-RPC error: {message['error']}")
        return message["result"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def generate(urls: list[str], calls: list[tuple[str, dict[str, Any]]], clients: int, warmup: float,
                   seconds: float) -> dict[str, Any]:  # fmt: skip
    """``clients`` concurrent sessions, client i on urls[i % len(urls)], each calling its share of
    ``calls`` in turn as fast as replies come; counts the calls that end inside the window."""
    sessions = [await McpSession(urls[i % len(urls)]).open() for i in range(clients)]
    try:
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
                except (RuntimeError, ValueError):  # an HTTP or JSON-RPC error: the session goes on
                    outcome = "errors"
                except (OSError, asyncio.IncompleteReadError):  # the connection is gone: so is the session
                    counts["errors"] += 1
                    return
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
    finally:
        for session in sessions:
            await session.close()
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
