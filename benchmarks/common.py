"""Shared benchmark plumbing: a throwaway Redis, a broker server on it, timing helpers."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.store.embedded import start_redis_server


@contextmanager
def redis_url() -> Any:
    """REDIS_URL when set, else a throwaway redis-server (no persistence) for this run."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"], "REDIS_URL"
        return
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_redis_server(Path(tmp), appendonly=False)
        try:
            yield url, "throwaway redis-server"
        finally:
            proc.terminate()
            proc.wait(5)


def bench_settings(url: str, root: Path, **overrides: Any) -> Settings:
    return Settings(REDIS_URL=url, REDIS_KEY_PREFIX=f"bench{uuid.uuid4().hex[:8]}", STORAGE_ROOT=root, **overrides)


def machine_load() -> str:
    """The 1-minute load average beside the core count: the shared machine's state during a run."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if q != 50 else statistics.median(samples)


async def interleaved(
    calls: dict[str, Callable[[], Awaitable[Any]]], rounds: int, rotate: bool = False
) -> dict[str, list[float]]:
    """Time each call once per round, alternating, so machine noise hits all of them alike.
    ``rotate`` starts each round with the next call: on a busy machine the first call of a round
    (the first Redis round trip after the others' work) can be markedly slower than the rest."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls.items())
    for round_ in range(rounds):
        shift = round_ % len(order) if rotate else 0
        for name, call in order[shift:] + order[:shift]:
            start = time.perf_counter()
            await call()
            samples[name].append(time.perf_counter() - start)
    return samples


def row(label: str, ours: list[float], floor: list[float], target: float) -> str:
    p50, p95 = percentile(ours, 50) * 1e3, percentile(ours, 95) * 1e3
    f50 = percentile(floor, 50) * 1e3
    ratio = p50 / f50
    verdict = "ok" if ratio <= target else "OVER TARGET"
    return (
        f"{label:<34} p50 {p50:7.3f} ms  p95 {p95:7.3f} ms  floor p50 {f50:7.3f} ms  "
        f"ratio {ratio:5.2f}x (target <= {target}x: {verdict})"
    )
