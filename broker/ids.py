"""Broker-wide integer ids without touching a key outside the project's slot in a script.

Each process reserves a block of ids with one INCRBY on a global counter and hands them out
locally (DESIGN decision 11). Ids are unique, not ordered in time; ``created_ts`` orders mail.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis


class IdAllocator:
    def __init__(self, key: str, block: int = 256) -> None:
        self._key = key
        self._block = block
        self._next = 0
        self._end = 0  # exclusive
        self._lock: asyncio.Lock | None = None

    async def next_id(self, client: Redis) -> int:
        if self._next < self._end:
            value = self._next
            self._next += 1
            return value
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._next >= self._end:
                top = int(await client.incrby(self._key, self._block))
                self._next, self._end = top - self._block + 1, top + 1
            value = self._next
            self._next += 1
            return value

    def reset(self) -> None:
        """Forget the local block (a new event loop or a new Redis)."""
        self._next = self._end = 0
        self._lock = None
