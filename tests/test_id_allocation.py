"""Broker-wide integer ids handed out in blocks: unique under concurrency, also across allocators."""

from __future__ import annotations

import asyncio
import random

from redis.asyncio import Redis

from broker.store.ids import IdAllocator


# -- id allocation -------------------------------------------------------------------------------
async def test_id_allocators_hand_out_unique_ids_under_concurrency(redis_client: Redis) -> None:
    key = f"t{random.randrange(10**12)}:ids:message"
    allocators = [IdAllocator(key, block=16) for _ in range(3)]  # three processes sharing one counter

    async def take(allocator: IdAllocator) -> int:
        await asyncio.sleep(0)
        return await allocator.next_id(redis_client)

    try:
        ids = await asyncio.gather(*(take(allocators[i % 3]) for i in range(900)))
        assert len(set(ids)) == 900
        top = int(await redis_client.get(key))
        assert max(ids) <= top and min(ids) >= 1
        # After a reset (new loop or Redis) an allocator takes a fresh block: no id comes twice.
        allocators[0].reset()
        more = await asyncio.gather(*(take(allocators[0]) for _ in range(40)))
        assert len(set(more)) == 40 and not set(more) & set(ids)
        assert min(more) > top
    finally:
        await redis_client.delete(key)
