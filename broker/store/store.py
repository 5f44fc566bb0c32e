"""The connection to Redis: settings, key builder, Lua scripts, id allocators and the doorbell.

What the broker wires around it (session bindings, the persistence queue) is passed in by the
composition root, ``broker.server``: this package knows no domain.

The Redis client is created lazily inside the running event loop (never at import) and
re-created if the loop changes, so a server built in one loop works in another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from redis.asyncio import Redis

from broker.config import Settings
from broker.store.clients import make_client
from broker.store.doorbell import Doorbell
from broker.store.ids import IdAllocator
from broker.store.keys import Keys
from broker.store.scripts import Scripts


class Bindings(Protocol):
    """Which agent each MCP session proved it is (broker/identity/auth.py's SessionBindings)."""

    def current_agent(self, slug: str) -> str | None: ...
    def args(self, slug: str, name: str, token: str | None) -> tuple[str, str]: ...
    def bind(self, slug: str, name: str) -> None: ...


class Store:
    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        bindings: Bindings,
        *,
        on_write: Callable[[str], None] = lambda slug: None,
        on_close: Callable[[], None] = lambda: None,
        queue_url: str = "",
    ) -> None:
        self.settings = settings
        self.redis_url = redis_url
        # the Redis of the persistence queue (rq's jobs and worker registry): REDIS_URL's own
        # unless QUEUE_REDIS_URL names another (always so beside a cluster)
        self.queue_url = queue_url or redis_url
        self.keys = Keys(settings.redis_key_prefix)
        # charge the current HTTP client's rate bucket this many tokens (mcp.server.assemble sets it)
        self.charge_client: Callable[[int], None] = lambda tokens: None
        self.bindings = bindings
        self.ids = {
            "message": IdAllocator(self.keys.ids("message"), 256),
            "agent": IdAllocator(self.keys.ids("agent"), 16),
            "project": IdAllocator(self.keys.ids("project"), 4),
            "reservation": IdAllocator(self.keys.ids("reservation"), 256),
        }
        # enqueue a persistence drain of a project (the persistence queue's, wired in by broker.server)
        self._on_write = on_write
        self._on_close = on_close
        # human_key -> slug of projects seen in this process (broker/identity/slugs.py says why it is safe)
        self.slug_cache: dict[str, str] = {}
        self._client: Redis | None = None
        self._queue_client: Redis | None = None
        self._scripts: Scripts | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._doorbell: Doorbell | None = None
        # Called with each doorbell's cursor (the metrics' delivery lag), if set.
        self.on_doorbell: Callable[[str], None] | None = None

    def client(self) -> Redis:
        """The client bound to the running event loop (a new loop gets a new client, scripts and
        doorbell: a server built in one loop may serve in another). Only broker/store uses it."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = make_client(self.redis_url, self.settings.redis_max_connections)
            self._scripts = Scripts(self._client)
            self._loop = loop
            self._doorbell = None
            self._queue_client = None
            for allocator in self.ids.values():
                allocator.reset()
        return self._client

    def queue_client(self) -> Redis:
        """A client of the persistence queue's Redis (the data client when they are one)."""
        client = self.client()
        if self.queue_url == self.redis_url:
            return client
        if self._queue_client is None:
            self._queue_client = make_client(self.queue_url, 4)
        return self._queue_client

    @property
    def doorbell(self) -> Doorbell:
        """This process's doorbell subscriber (broker/store/doorbell.py), bound like the client to the
        running loop; its connection opens with the first waiter, not before."""
        self.client()  # a new loop drops what belonged to the old one
        if self._doorbell is None:
            self._doorbell = Doorbell(self.redis_url, self.keys.doorbell)
            self._doorbell.lag_observer = self.on_doorbell
        return self._doorbell

    @property
    def waiter_count(self) -> int:
        """Waiters registered with this process's doorbell (0 before the first one)."""
        return self._doorbell.waiter_count if self._doorbell is not None else 0

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        self.client()  # binds client and scripts to the running loop
        assert self._scripts is not None
        return await self._scripts.run(name, keys, args)

    def script_sha(self, name: str) -> str:
        self.client()  # binds client and scripts to the running loop
        assert self._scripts is not None
        return self._scripts.sha(name)

    def schedule_persist(self, slug: str, needed: int) -> None:
        """Enqueue a drain job when the write script claimed the project's "job scheduled" flag
        (``needed`` is its 1/0 reply), without waiting: the send does not pay for the enqueue,
        and a lost enqueue is caught by the reconciler."""
        if needed == 1:
            self._on_write(slug)

    async def next_id(self, kind: str) -> int:
        return await self.ids[kind].next_id(self.client())

    async def close(self) -> None:
        if self._doorbell is not None:
            await self._doorbell.close()
            self._doorbell = None
        self._on_close()
        if self._queue_client is not None:
            await self._queue_client.aclose()
            self._queue_client = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
