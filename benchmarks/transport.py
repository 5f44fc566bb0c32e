"""Transport benchmark: send_message p50 over streamable HTTP, as a ratio to a no-op tool served
over HTTP the same way.

Two server processes on loopback: `broker serve` on a throwaway redis-server, and a FastMCP
server whose `send_message` takes the same arguments and does nothing (benchmarks.messaging's
floor), served as `broker serve` serves the broker (the FastMCP streamable-HTTP app under
uvicorn, on a socket bound beforehand). One fastmcp Client per server, over
StreamableHttpTransport, sends the same 512-byte message, alternating between the two servers
(each round starting with the other one), so both pay the same client, HTTP and machine noise.
The rate limits are off and nothing persists (PERSISTENCE_WORKER=external, no worker).

Run: python -m benchmarks.transport [--rounds N]   (from the repository root: it starts the
broker with tests/process_helpers.py)
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from benchmarks.common import interleaved, machine_load, redis_url, row
from benchmarks.messaging import BODY, floor_server
from benchmarks.scaling import UNLIMITED
from tests.process_helpers import broker_env, free_port, serving, stop_process

PROJECT = "/bench/transport"
TARGET = 1.5


def serve_noop(port: int) -> None:
    """The no-op server process: the floor tools under uvicorn, as `broker serve` runs the broker."""
    import socket

    import uvicorn

    # IPPROTO_TCP as `broker serve` binds (broker/cli.py, from getaddrinfo): asyncio turns Nagle's
    # algorithm off only on sockets created with it, and with Nagle on, each reply's event waited
    # for the client's delayed ACK of the headers (about 40 ms a call).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    asgi = floor_server().http_app(path="/mcp/")
    uvicorn.Server(uvicorn.Config(asgi, log_level="warning")).run(sockets=[sock])


@contextmanager
def noop_serving() -> Iterator[str]:
    """The no-op server in a process of its own; yields its MCP URL once it answers."""
    port = free_port()
    # a session of its own, as the broker's (see benchmarks.scaling: CPU is shared per session)
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.transport", "--serve-noop", str(port)], start_new_session=True
    )
    url = f"http://127.0.0.1:{port}/mcp/"
    try:
        deadline = time.monotonic() + 120  # imports take a while on a busy machine
        while True:
            try:
                httpx.get(url, timeout=1)  # any HTTP answer (a 4xx to a bare GET) means it serves
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the no-op server did not start (exit status {proc.poll()})") from None
                time.sleep(0.1)
        yield url
    finally:
        stop_process(proc)


async def measure(broker_url: str, noop_url: str, rounds: int) -> dict[str, list[float]]:
    async with Client(StreamableHttpTransport(broker_url)) as ours, Client(StreamableHttpTransport(noop_url)) as noop:
        await ours.call_tool("ensure_project", {"human_key": PROJECT})
        names = []
        for _ in range(2):
            reg = await ours.call_tool("register_agent", {"project_key": PROJECT, "program": "bench", "model": "m"})
            names.append(reg.data["name"])
        args = {"project_key": PROJECT, "sender_name": names[0], "to": [names[1]], "subject": "bench", "body_md": BODY}
        for _ in range(100):  # warm up both servers and both connections
            await ours.call_tool("send_message", args)
            await noop.call_tool("send_message", args)
        return await interleaved(
            {
                "ours": lambda: ours.call_tool("send_message", args),
                "noop": lambda: noop.call_tool("send_message", args),
            },
            rounds,
            rotate=True,
        )


def run(rounds: int) -> None:
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp:
        env = broker_env(url, Path(tmp), PERSISTENCE_WORKER="external", **UNLIMITED)
        with serving(env, new_session=True) as broker, noop_serving() as noop_url:
            sends = asyncio.run(measure(broker.mcp_url, noop_url, rounds))
    print(
        f"Redis: {source}; {rounds} sends per server over streamable HTTP (fastmcp Client), interleaved; {machine_load()}"
    )
    print(row("send_message over HTTP vs no-op", sends["ours"], sends["noop"], target=TARGET))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000, help="sends per server")
    parser.add_argument("--serve-noop", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_noop:
        serve_noop(args.serve_noop)
    else:
        run(args.rounds)


if __name__ == "__main__":
    main()
