"""Redis clients from a URL: redis://, rediss://, unix:// or memory:// (in-process fakeredis)."""

from __future__ import annotations

from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Redis

# memory:// servers are per name and per process, so two broker servers built in one
# process share state, exactly as two processes share a real Redis.
_fake_servers: dict[str, object] = {}


def make_client(url: str, max_connections: int = 32) -> Redis:
    if url.startswith("memory://"):
        import fakeredis

        name = url[len("memory://") :] or "default"
        server = _fake_servers.setdefault(name, fakeredis.FakeServer())
        # Its pool fails instead of blocking when full, and its connections are in-process
        # objects, not sockets: a large pool lets a burst (a thousand woken waiters) through.
        return fakeredis.FakeAsyncRedis(server=server, decode_responses=True, max_connections=100_000)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"REDIS_URL '{url}' is not supported: use redis://, rediss://, unix:// or memory://")
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
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"REDIS_URL '{url}' is not supported: use redis://, rediss://, unix:// or memory://")
    return SyncRedis.from_url(
        url,
        decode_responses=decode_responses,
        health_check_interval=30,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
