"""Redis clients from a URL: redis://, rediss://, unix://, memory:// (in-process fakeredis), and
the cluster forms redis+cluster:// and rediss+cluster:// (REDIS_CLUSTER=true marks REDIS_URL so:
see broker/store/embedded.py), which give redis-py's cluster clients seeded by that node."""

from __future__ import annotations

import asyncio
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.retry import Retry

# memory:// servers are per name and per process, so two broker servers built in one
# process share state, exactly as two processes share a real Redis.
_fake_servers: dict[str, object] = {}

CLUSTER_MARK = "+cluster"
SCHEMES = ("redis://", "rediss://", "unix://")
# A cluster call that meets a failover retries, refreshing the slot map each time, for about
# as long as Redis takes to promote a replica (cluster-node-timeout plus the election).
CLUSTER_RETRIES = 8


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].endswith(CLUSTER_MARK)


def plain_url(url: str) -> str:
    """The URL without the cluster mark (what redis-py parses)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.removesuffix(CLUSTER_MARK)}{sep}{rest}"


def _check_scheme(url: str) -> None:
    if not url.startswith(SCHEMES):
        raise ValueError(f"REDIS_URL '{url}' is not supported: use redis://, rediss://, unix:// or memory://")


class BoundedRedisCluster(RedisCluster):
    """redis-py's async cluster client, which raises MaxConnectionsError when a node's pool is
    full, made to wait instead, like the single-node client's blocking pool: at most
    ``max_concurrency`` commands or pipelines are in flight, so no node needs more connections."""

    def __init__(self, *args: Any, max_concurrency: int, **kwargs: Any) -> None:
        super().__init__(*args, max_connections=max_concurrency + 4, **kwargs)
        self._gate = asyncio.Semaphore(max_concurrency)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._gate:
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        return _GatedPipeline(self, transaction)


class _GatedPipeline(ClusterPipeline):
    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        async with self.cluster_client._gate:  # type: ignore[attr-defined]
            return await super().execute(*args, **kwargs)


def _backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(base=0.05, cap=1.0)


def make_client(url: str, max_connections: int = 32) -> Redis:
    if url.startswith("memory://"):
        import fakeredis

        name = url[len("memory://") :] or "default"
        server = _fake_servers.setdefault(name, fakeredis.FakeServer())
        # Its pool fails instead of blocking when full, and its connections are in-process
        # objects, not sockets: a large pool lets a burst (a thousand woken waiters) through.
        return fakeredis.FakeAsyncRedis(server=server, decode_responses=True, max_connections=100_000)
    if is_cluster_url(url):
        cluster = BoundedRedisCluster.from_url(
            plain_url(url),
            decode_responses=True,
            max_concurrency=max_connections,
            retry=AsyncRetry(_backoff(), CLUSTER_RETRIES),
            health_check_interval=30,
        )
        return cluster  # type: ignore[return-value]  # the same command surface, typed apart
    _check_scheme(url)
    # A bounded pool: hundreds of concurrent calls share a few dozen connections instead of
    # opening one each, which costs more CPU than it saves in waiting.
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=20, decode_responses=True, health_check_interval=30
    )
    return Redis.from_pool(pool)


def make_sync_client(url: str, decode_responses: bool = True, timeout: float | None = None) -> SyncRedis:
    """A blocking client for the same Redis (rq and the persistence worker are synchronous).
    rq stores binary job data, so it needs ``decode_responses=False``. ``timeout`` bounds
    connects and replies; leave it None for a worker, whose dequeue blocks for minutes."""
    if url.startswith("memory://"):
        import fakeredis

        name = url[len("memory://") :] or "default"
        server = _fake_servers.setdefault(name, fakeredis.FakeServer())
        return fakeredis.FakeRedis(server=server, decode_responses=decode_responses)
    if is_cluster_url(url):
        cluster = SyncRedisCluster.from_url(
            plain_url(url),
            decode_responses=decode_responses,
            retry=Retry(_backoff(), CLUSTER_RETRIES),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        return cluster  # type: ignore[return-value]
    _check_scheme(url)
    return SyncRedis.from_url(
        url,
        decode_responses=decode_responses,
        health_check_interval=30,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
