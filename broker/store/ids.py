"""Broker-wide integer ids without touching a key outside the project's slot in a script.

Each process reserves a block of ids with one script call on a global counter and hands them
out locally (docs/architecture.md, decision 11). Ids are unique, not ordered in time; ``created_ts`` orders mail.

Ids never repeat, even when Redis loses its last writes (docs/durability-ids.md): the block
script (allocate_ids.lua) floors the counter at a value derived from Redis's clock, so a
counter that went back is moved past every id handed out before the loss; and the
persistence worker raises the counters past the highest id in the SQLite index whenever it
sees a Redis it has not seen before (``raise_past_index``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from broker.store.keys import Keys
from broker.store.scripts import run_sync, script_source

# The floor is (now_ms - ID_EPOCH_MS) * IDS_PER_MS: 2026-01-01T00:00:00Z, and 100 ids per ms,
# more than the broker sustains (about 10 sends per ms on one Redis). Ids reach ID_LIMIT in
# 2057; below it cjson (14 significant digits) and JSON clients (2^53) keep them exact.
ID_EPOCH_MS = 1_767_225_600_000
IDS_PER_MS = 100
ID_LIMIT = 10**14

# kind -> the index table holding ids of that kind, and the margin added above the index's
# largest id when the counter was found below it (see raise_past_index).
KINDS = {
    "message": ("messages", 1_000_000),
    "agent": ("agents", 10_000),
    "project": ("projects", 1_000),
    "reservation": ("file_reservations", 1_000_000),
}


class IdAllocator:
    def __init__(self, key: str, block: int = 256) -> None:
        self._key = key
        self._block = block
        self._next = 0
        self._end = 0  # exclusive
        self._lock: asyncio.Lock | None = None
        self._script: Any = None
        self._client: Redis | None = None

    async def next_id(self, client: Redis) -> int:
        if self._next < self._end:
            value = self._next
            self._next += 1
            return value
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._next >= self._end:
                top = await self._reserve(client)
                self._next, self._end = top - self._block + 1, top + 1
            value = self._next
            self._next += 1
            return value

    async def _reserve(self, client: Redis) -> int:
        if self._script is None or self._client is not client:
            source = script_source("allocate_ids", isinstance(client, RedisCluster))
            self._script, self._client = client.register_script(source), client
        try:
            return int(await self._script(keys=[self._key], args=[self._block, ID_EPOCH_MS, IDS_PER_MS, ID_LIMIT]))
        except Exception as exc:
            if "ID_SPACE" in str(exc):
                from broker.errors import BrokerError  # not at import: the git hook loads this module

                raise BrokerError(
                    "ID_SPACE", f"ids of {self._key} reached {ID_LIMIT}. see docs/durability-ids.md"
                ) from exc
            raise

    def reset(self) -> None:
        """Forget the local block (a new event loop or a new Redis)."""
        self._next = self._end = 0
        self._lock = None
        self._script = self._client = None


def largest_indexed_ids(index: Any) -> dict[str, int]:
    """kind -> the largest id of that kind in the SQLite index (0 for none)."""
    return {
        kind: int(index.query(f"SELECT coalesce(max(id), 0) FROM {table}")[0][0]) for kind, (table, _) in KINDS.items()
    }


def raise_past_index(client: SyncRedis, keys: Keys, index: Any) -> dict[str, int]:
    """Raise every id counter that is below the largest id of its kind in the index, by that
    id plus a margin: such a counter went back with Redis's data, and ids above the index's
    were handed out before the loss too (changes not persisted yet, whose ids clients may still
    hold, and the blocks running brokers reserved). Never lowers a counter. Returns the
    counters raised, kind -> new value."""
    raised: dict[str, int] = {}
    for kind, top in largest_indexed_ids(index).items():
        current = int(client.get(keys.ids(kind)) or 0)
        if current < top:
            raised[kind] = raise_counter(client, keys, kind=kind, at_least=top + KINDS[kind][1])
    return raised


def raise_counter(client: SyncRedis, keys: Keys, *, kind: str, at_least: int) -> int:
    """Raise the id counter of ``kind`` to at least ``at_least``, atomically (raise_counter.lua:
    never lowers it); returns its value afterwards."""
    return int(run_sync(client, "raise_counter", [keys.ids(kind)], [at_least]))
