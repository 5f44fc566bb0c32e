"""Cluster benchmark: send_message p50 on a 3-master Redis Cluster as a ratio to one redis-server.

Two brokers are built in this process (build_server, the in-memory FastMCP client, no HTTP):
one on a throwaway redis-server, one on a throwaway cluster of three masters (real
``redis-server --cluster-enabled yes`` processes, started by tests/cluster_helpers.py, the
same starter the test suite's cluster backend uses), with that redis-server as its queue Redis
(QUEUE_REDIS_URL). The same send (512-byte body, one recipient) is timed on each, alternating,
so machine noise hits both alike; a no-op FastMCP tool with the same arguments is timed in the
same rounds, for reference. Each round starts with the next of the three in turn (the first call
of a round was slower on the busy shared machine, whichever it was). No worker runs, as in the
other latency benchmarks.

Run: python -m benchmarks.cluster [--rounds N]   (from the repository root: it imports tests/)
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from fastmcp import Client, FastMCP

from benchmarks.common import bench_settings, interleaved, machine_load, percentile, redis_url
from benchmarks.messaging import BODY, floor_server
from broker.server import build_server
from tests.cluster_helpers import start_cluster

PROJECT = "/bench/cluster"
TARGET = 1.2


async def prepared(client: Client) -> dict[str, Any]:
    """A project with a sender and a reader; the send arguments between them."""
    await client.call_tool("ensure_project", {"human_key": PROJECT})
    names = []
    for _ in range(2):
        reg = await client.call_tool("register_agent", {"project_key": PROJECT, "program": "bench", "model": "m"})
        names.append(reg.data["name"])
    return {"project_key": PROJECT, "sender_name": names[0], "to": [names[1]], "subject": "bench", "body_md": BODY}


async def run(rounds: int) -> None:
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp:
        cluster = start_cluster(Path(tmp) / "cluster", masters=3)
        try:
            common = {"AGENT_RATE_LIMIT_PER_SECOND": 0}
            single = build_server(bench_settings(url, Path(tmp) / "single", **common))
            clustered = build_server(
                bench_settings(
                    cluster.plain_seed, Path(tmp) / "clustered", REDIS_CLUSTER=True, QUEUE_REDIS_URL=url, **common
                )
            )
            floor: FastMCP = floor_server()
            async with Client(single) as one, Client(clustered) as many, Client(floor) as noop:
                one_args, many_args = await prepared(one), await prepared(many)
                for _ in range(150):  # warm up: connections, script caches, the cluster's slot map
                    await one.call_tool("send_message", one_args)
                    await many.call_tool("send_message", many_args)
                    await noop.call_tool("send_message", one_args)
                sends = await interleaved(
                    {
                        "cluster": lambda: many.call_tool("send_message", many_args),
                        "single": lambda: one.call_tool("send_message", one_args),
                        "floor": lambda: noop.call_tool("send_message", one_args),
                    },
                    rounds,
                    rotate=True,
                )
            await single.store.close()  # type: ignore[attr-defined]
            await clustered.store.close()  # type: ignore[attr-defined]
        finally:
            cluster.stop()

    p50 = {name: percentile(samples, 50) * 1e3 for name, samples in sends.items()}
    p95 = {name: percentile(samples, 95) * 1e3 for name, samples in sends.items()}
    ratio = p50["cluster"] / p50["single"]
    print(f"Redis: {source} vs a 3-master cluster (no replicas); {rounds} sends each, interleaved; {machine_load()}")
    for name in ("single", "cluster", "floor"):
        print(f"  send_message p50 {name:<8} {p50[name]:7.3f} ms  p95 {p95[name]:7.3f} ms")
    print(
        f"send_message p50, cluster / single node: {ratio:5.2f}x "
        f"(target <= {TARGET}x: {'ok' if ratio <= TARGET else 'OVER TARGET'}); "
        f"to the no-op floor: single {p50['single'] / p50['floor']:4.2f}x, cluster {p50['cluster'] / p50['floor']:4.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000, help="sends per broker (and no-op calls)")
    args = parser.parse_args()
    asyncio.run(run(args.rounds))


if __name__ == "__main__":
    main()
