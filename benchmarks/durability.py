"""Durability benchmark: persistence lag and throughput of the worker, search latency.

* Persistence lag: time from a send returning to its row being in SQLite. The worker commits a
  batch to Git before it writes the batch to SQLite, so a visible row implies its Git commit;
  the run also checks at the end that every message's canonical file is in the archive's HEAD.
  Sends are paced at a fixed rate for a fixed time, through ``broker.mail.send.send_message`` (the
  function behind the tool: the same Lua script, without the MCP layer, which alone could not
  offer 1000+ sends/s from one process here). The worker is a real ``broker worker`` process.
* Highest sustained rate: rates are raised until one no longer keeps up (every message
  persisted within 2 s of the end of sending and lag p99 <= 2 s); the last one that did is it.
* Messages per commit: messages persisted / Git commits made during each phase.
* search_messages p50 through an in-process FastMCP client, as a ratio to a no-op tool with the
  same arguments that returns as many items of the same shape, timed in the same run.

Run: make bench   (or: python -m benchmarks.durability [--seconds N] [--rates 200,1000,1500])
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fastmcp import Client, FastMCP

from benchmarks.common import bench_settings, interleaved, percentile, redis_url, row
from broker.config import Settings
from broker.mail import send as mail
from broker.persistence.index import Index
from broker.server import build_server

PROJECT = "/bench/durability"
AGENTS = ("BlueLake", "GreenCastle")
BODY = "Benchmark message body with some words to index: deploy plan review. " * 7  # ~500 B
LAG_TARGET_S = 2.0


class Poller(threading.Thread):
    """Records when each sent message id first shows up in SQLite."""

    def __init__(self, index_url: str) -> None:
        super().__init__(daemon=True)
        self.index = Index(index_url)
        self.unseen: set[int] = set()
        self.seen_at: dict[int, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def expect(self, message_id: int) -> None:
        with self.lock:
            self.unseen.add(message_id)

    def run(self) -> None:
        # Every 20 ms (the lag's resolution): polling faster costs the sending process CPU it
        # shares with the sends, which would inflate the lag it measures.
        while not self.stop.wait(0.02):
            with self.lock:
                if not self.unseen:
                    continue
                low = min(self.unseen) - 1
            try:
                rows = self.index.query("SELECT id FROM messages WHERE id > :low", {"low": low})
            except Exception:  # the worker may not have created the schema yet
                continue
            now = time.perf_counter()
            with self.lock:
                for (message_id,) in rows:
                    if message_id in self.unseen:
                        self.unseen.discard(message_id)
                        self.seen_at[message_id] = now


def git_commit_count(settings: Settings) -> int:
    done = subprocess.run(
        ["git", "-C", str(settings.archive_path), "rev-list", "--count", "HEAD"], capture_output=True, text=True
    )
    return int(done.stdout.strip() or 0) if done.returncode == 0 else 0


async def paced_sends(
    settings: Settings, server: FastMCP, poller: Poller, rate: int, seconds: float
) -> tuple[dict[int, float], float]:
    """Send ``rate`` messages per second for ``seconds``; returns id -> send-returned time."""
    store = server.store  # type: ignore[attr-defined]
    returned: dict[int, float] = {}

    async def one(i: int) -> None:
        result = await mail.send_message(
            store, PROJECT, AGENTS[i % 2], [AGENTS[(i + 1) % 2]], f"bench {rate}/s #{i}", f"{BODY} code{i % 500}",
            None, None, "normal", False, f"bench-{rate}-{i % 50}", False, None, None,
        )  # fmt: skip
        message_id = result["deliveries"][0]["payload"]["id"]
        returned[message_id] = time.perf_counter()
        poller.expect(message_id)

    total = int(rate * seconds)
    start = time.perf_counter()
    tasks = []
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    offered = total / (time.perf_counter() - start)
    return returned, offered


async def lag_phase(settings: Settings, server: FastMCP, poller: Poller, rate: int, seconds: float) -> dict[str, Any]:
    commits_before = git_commit_count(settings)
    returned, offered = await paced_sends(settings, server, poller, rate, seconds)
    deadline = time.perf_counter() + LAG_TARGET_S
    while time.perf_counter() < deadline:
        with poller.lock:
            if not poller.unseen & set(returned):
                break
        await asyncio.sleep(0.01)
    with poller.lock:
        missing = len(set(returned) & poller.unseen)
        lags = [poller.seen_at[i] - t for i, t in returned.items() if i in poller.seen_at]
    # wait for stragglers so the next phase starts clean (and commits are counted)
    while True:
        with poller.lock:
            if not poller.unseen:
                break
        await asyncio.sleep(0.05)
    commits = git_commit_count(settings) - commits_before
    p50, p99 = (percentile(lags, 50), percentile(lags, 99)) if len(lags) > 1 else (float("nan"), float("nan"))
    kept_up = missing == 0 and p99 <= LAG_TARGET_S and offered >= rate * 0.95
    return {
        "rate": rate, "offered": offered, "sent": len(returned), "p50": p50, "p99": p99, "missing": missing,
        "commits": commits, "per_commit": len(returned) / max(commits, 1), "kept_up": kept_up,
    }  # fmt: skip


def floor_server() -> FastMCP:
    """No-op search_messages with the same arguments that returns 20 items of the result shape
    (FastMCP's own cost of carrying that payload, as the messaging benchmark's inbox floor)."""
    noop = FastMCP("floor")
    item = {
        "id": 1, "subject": "bench 1000/s #17", "importance": "normal", "ack_required": 0,
        "created_ts": "2026-01-01T00:00:00.123456+00:00", "thread_id": "bench-1000-17", "from": "BlueLake",
    }  # fmt: skip

    @noop.tool
    async def search_messages(
        project_key: str, query: str, limit: int = 20, agent_name: str | None = None,
        registration_token: str | None = None, format: str | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        return [dict(item, id=i) for i in range(limit)]

    return noop


async def search_latency(server: FastMCP, rounds: int, query: str, label: str, target: bool = True) -> str:
    args = {"project_key": PROJECT, "query": query, "limit": 20, "agent_name": "BlueLake"}
    async with Client(server) as ours, Client(floor_server()) as floor:
        result = await ours.call_tool("search_messages", args)
        assert result.structured_content and result.structured_content["result"], "search found nothing"
        samples = await interleaved(
            {
                "ours": lambda: ours.call_tool("search_messages", args),
                "floor": lambda: floor.call_tool("search_messages", args),
            },
            rounds,
        )
    line = row(label, samples["ours"], samples["floor"], 2.5)
    return line if target else line.split(" (target")[0] + " (no target: bm25 ranks every match)"


def check_archive(settings: Settings, expected: int) -> int:
    listing = subprocess.run(
        ["git", "-C", str(settings.archive_path), "ls-tree", "-r", "--name-only", "HEAD", "projects/bench-durability/messages/"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    canonical = [p for p in listing.stdout.splitlines() if not p.split("messages/", 1)[1].startswith("threads/")]
    return len(canonical) - expected


async def main(args: argparse.Namespace) -> None:
    with redis_url() as (url, where), tempfile.TemporaryDirectory() as tmp:
        # one agent offers up to 3,000 sends a second: the per-agent rate limit (100/s) would refuse
        # most of them, and this measures persistence, not the limiter
        settings = bench_settings(url, Path(tmp), AGENT_RATE_LIMIT_PER_SECOND=0)
        server = build_server(settings)
        async with Client(server) as client:
            await client.call_tool("ensure_project", {"human_key": PROJECT})
            for name in AGENTS:
                await client.call_tool(
                    "register_agent", {"project_key": PROJECT, "program": "bench", "model": "bench", "name": name}
                )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "PERSIST_"))}
        env.update(REDIS_URL=url, REDIS_KEY_PREFIX=settings.redis_key_prefix, STORAGE_ROOT=tmp)
        worker = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poller = Poller(settings.index_url)
        poller.start()
        print(f"Redis: {where}; worker: broker worker process; {args.seconds:g} s per rate; body {len(BODY)} B")
        try:
            total, best = 0, None
            for rate in args.rates:
                phase = await lag_phase(settings, server, poller, rate, args.seconds)
                total += phase["sent"]
                verdict = "kept up" if phase["kept_up"] else "did NOT keep up"
                print(
                    f"{rate:>5} msg/s offered {phase['offered']:7.1f}/s  lag p50 {phase['p50'] * 1e3:7.1f} ms  "
                    f"p99 {phase['p99'] * 1e3:7.1f} ms  not persisted 2 s after the end: {phase['missing']:>5}  "
                    f"{phase['commits']:>4} commits ({phase['per_commit']:.1f} msgs/commit)  {verdict}"
                )
                if not phase["kept_up"]:
                    break
                best = phase
            extra = check_archive(settings, total)
            print(f"archive: every persisted message has its canonical file in HEAD ({'ok' if extra == 0 else extra})")
            if best:
                print(
                    f"highest sustained rate: {best['rate']} msg/s persisted (lag p99 {best['p99'] * 1e3:.0f} ms; "
                    f"target >= 1000 msg/s with p99 <= {LAG_TARGET_S * 1e3:.0f} ms: "
                    f"{'ok' if best['rate'] >= 1000 else 'BELOW TARGET'})"
                )
            # A selective query (one word of every 500th message: ~total/500 matches, 20 returned)
            # is the target; a query every message matches shows the cost of ranking them all.
            print(await search_latency(server, args.rounds, "code17", f"search_messages ~{total // 500} matches"))
            print(
                await search_latency(
                    server, args.rounds // 5, "deploy plan", f"search_messages {total} matches", target=False
                )
            )
        finally:
            poller.stop.set()
            worker.terminate()
            worker.wait(10)
            await server.store.close()  # type: ignore[attr-defined]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="sending time per rate")
    parser.add_argument(
        "--rates", type=lambda s: [int(x) for x in s.split(",")], default=[200, 500, 1000, 1500, 2000, 3000]
    )
    parser.add_argument("--rounds", type=int, default=500, help="search latency samples")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
