"""Typed commands of writes on messages the hot-window trimmer moved out of Redis
(broker/mail/cold.py): putting one back from its index rows for a write (restore_message.lua),
removing the restored ones again once their changes are persisted (cool_messages.lua, run by
the persistence worker), and the cold hash's unread counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from broker.store.keys import Keys
from broker.store.refusals import accepted
from broker.store.scripts import SyncClient, run_sync
from broker.store.store import Store

# A restored message stays at least this long, so the write that restored it finds it.
COOL_AFTER_SECONDS = 60
COOL_BATCH = 200


async def restore_message(store: Store, *, slug: str, message_id: int, fields: Mapping[str, str], body: str) -> bool:
    """Put the message's hash (``fields``, as broker/store/commands/rehydrate.py message_record
    builds it) and body back (restore_message.lua); False when it was in Redis already.
    Refusals: NO_PROJECT."""
    keys = store.keys
    pairs = [part for item in fields.items() for part in item]
    reply = await store.run(
        "restore_message",
        [keys.project(slug), keys.message(slug, message_id)],
        [keys.project_prefix(slug), message_id, body, *pairs],
    )
    accepted(reply)
    return bool(int(reply[1]))


async def cold_unread(store: Store, *, slug: str, names: Sequence[str]) -> list[int]:
    """The cold hash's unread:<name> of each agent (0 where none), in the order of ``names``."""
    if not names:
        return []
    values = await store.client().hmget(store.keys.cold(slug), [f"unread:{n.lower()}" for n in names])
    return [int(v or 0) for v in values]


async def trimmed_any(store: Store, *, slug: str) -> bool:
    """Whether the trimmer ever moved a message of the project out of Redis (the cold hash's
    ``t``; rehydrate sets it too for what it leaves in the index)."""
    return bool(await store.client().hexists(store.keys.cold(slug), "t"))


def cool_messages(client: SyncClient, keys: Keys, *, slug: str, cutoff_us: int, limit: int = COOL_BATCH) -> int:
    """Remove restored messages that came back at or before ``cutoff_us`` and whose changes
    are persisted (cool_messages.lua); returns how many were removed. A gone project: 0."""
    reply = run_sync(
        client,
        "cool_messages",
        [keys.project(slug), keys.warm(slug), keys.pending(slug), keys.inflight(slug), keys.dead_letters(slug)],
        [keys.project_prefix(slug), cutoff_us, limit],
    )
    if reply[0] != "ok":
        return 0
    return int(reply[1])
