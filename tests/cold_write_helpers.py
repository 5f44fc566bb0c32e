"""Making messages cold before the trimmer exists: what the hot-window trimmer does to a persisted
message (docs/data-model.md, "The hot window"), in one function, through the broker's own purge
script. The lead unifies this with tests/cold_helpers.py (cold reads) and the trimmer itself.
"""

from __future__ import annotations

import time
from typing import Any

from broker.store.clients import make_sync_client
from broker.store.commands import lifecycle as lifecycle_store
from broker.store.commands.cold import cool_messages
from broker.store.keys import inbox_suffix, outbox_suffix
from broker.store.store import Store


def _later(a: str, b: str | None) -> bool:
    """Stream id ``a`` is after ``b`` (None: nothing)."""
    if b is None:
        return True
    return tuple(map(int, a.split("-"))) > tuple(map(int, b.split("-")))


async def _entry_id(store: Store, stream: str, message_id: int) -> str | None:
    for entry_id, fields in await store.client().xrange(stream):
        if fields.get("m") == str(message_id):
            return str(entry_id)
    return None


async def make_cold(store: Store, slug: str, message_ids: list[int]) -> None:
    """Move persisted messages out of Redis as the trimmer does: delete them whole
    (purge_messages.lua) and set the project's cold hash: in:/out:<name> the newest entry id
    removed from that inbox/outbox, unread:<name> +1 per recipient that had not read one (none
    for a message restored from the index: its hash has ``cold``, it is counted already), ``t``
    the newest created_us removed."""
    client, keys = store.client(), store.keys
    cold = keys.cold(slug)
    pending = set(await client.zrange(keys.pending(slug), 0, -1)) | set(await client.zrange(keys.inflight(slug), 0, -1))
    marks: dict[str, Any] = await client.hgetall(cold)
    unread: dict[str, int] = {}
    entries: list[tuple[str, str]] = []
    for message_id in message_ids:
        record = await client.hgetall(keys.message(slug, message_id))
        assert record, f"message {message_id} is not in Redis"
        names = [field[3:] for field in record if field.startswith("rk:")]
        assert f"msg:{message_id}" not in pending, "persist it first (persist_helpers.run_worker)"
        assert not any(f"rcpt:{message_id}:{n}" in pending for n in names), "persist it first"
        for name in names:
            entry = await _entry_id(store, keys.inbox(slug, name), message_id)
            if entry:
                entries.append((inbox_suffix(name), entry))
                if _later(entry, marks.get(f"in:{name}")):
                    marks[f"in:{name}"] = entry
            if f"rt:{name}" not in record and "cold" not in record:
                unread[name] = unread.get(name, 0) + 1
        sender = record["sender"]
        if not sender.startswith("project:"):
            entry = await _entry_id(store, keys.outbox(slug, sender), message_id)
            if entry:
                entries.append((outbox_suffix(sender), entry))
                if _later(entry, marks.get(f"out:{sender}")):
                    marks[f"out:{sender}"] = entry
        marks["t"] = str(max(int(marks.get("t", 0)), int(record["created_us"])))
    await lifecycle_store.purge_messages(store, slug=slug, message_ids=message_ids, stream_entries=entries)
    await client.hset(cold, mapping={k: v for k, v in marks.items() if not k.startswith("unread:")})
    for name, count in unread.items():
        await client.hincrby(cold, f"unread:{name}", count)


def cool_now(store: Store, slug: str) -> int:
    """Remove every restored message whose write is persisted, however recently it came back
    (the worker waits COOL_AFTER_SECONDS); how many."""
    client = make_sync_client(store.redis_url)
    try:
        return cool_messages(client, store.keys, slug=slug, cutoff_us=int(time.time() * 1_000_000) + 1)
    finally:
        client.close()


# -- a small hot window (HOT_INBOX_MAX_MESSAGES=2) and what stays in it ---------------------------
WINDOW = {"HOT_INBOX_MAX_MESSAGES": 2}


async def window_mail(tools: Any, project: str) -> dict[str, Any]:
    """Six messages under a window of 2 per inbox and outbox: BlueLake -> GreenCastle m1..m5
    (alpha-one cc'd on m2 only), GreenCastle -> BlueLake m6; GreenCastle read m1, alpha-one
    acknowledged m2. Inside some holder's window: m2 (alpha-one's inbox), m4, m5, m6; m1 and
    m3 are outside every one (``cold``)."""
    ids = []
    for n in range(1, 6):
        extra = {"cc": ["alpha-one"], "ack_required": True} if n == 2 else {}
        sent = await tools.send("BlueLake", ["GreenCastle"], project_key=project, subject=f"m{n}", **extra)
        ids.append(int(sent["deliveries"][0]["payload"]["id"]))
    sent = await tools.send("GreenCastle", ["BlueLake"], project_key=project, subject="m6", topic="ops")
    ids.append(int(sent["deliveries"][0]["payload"]["id"]))
    await tools.call("mark_message_read", project_key=project, agent_name="GreenCastle", message_id=ids[0])
    await tools.call("acknowledge_message", project_key=project, agent_name="alpha-one", message_id=ids[1])
    return {"ids": ids, "cold": [ids[0], ids[2]], "hot": [ids[1], ids[3], ids[4], ids[5]]}
