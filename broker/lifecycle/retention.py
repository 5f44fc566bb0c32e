"""purge_old_messages: remove messages older than a cutoff from Redis and the SQLite index.

Old messages are found through the streams, whose entry ids are the server's millisecond clock
(or, after rehydrate, the creation time): each agent's outbox and inbox are read from their
oldest entry up to the cutoff (``XRANGE - <cutoff ms>``), so the work is bounded by what is
old plus one page, never a scan of the project. Entries carry the message's creation time
(``c`` in the outbox, ``f`` in the inbox), which decides. Deletion runs in script batches
(``purge_messages.lua``), then the index rows go under the project's drain lock (so no
persistence batch writes them back). The Git archive keeps its files: it is history.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.projects import project_slug
from broker.lifecycle.state import project_state
from broker.persistence.drain import project_lock
from broker.persistence.index import Index
from broker.store.store import Store

PAGE = 1000
BATCH = 200
MAX_AGE_DAYS = 36_500  # a date arithmetic can hold (timedelta stops near 2.7 million years)


def check_age(store: Store, max_age_days: object) -> int:
    if max_age_days is None:
        return store.settings.retention_max_age_days
    if isinstance(max_age_days, bool) or not isinstance(max_age_days, int) or not 1 <= max_age_days <= MAX_AGE_DAYS:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"max_age_days must be a whole number of days, at least 1 and at most {MAX_AGE_DAYS} (100 years), "
            f"got {str(max_age_days)[:40]}.",
        )
    return max_age_days


async def purge_old_messages(
    store: Store,
    project_key: str,
    max_age_days: int | None,
    dry_run: bool,
    token: str | None,
    now: datetime | None = None,
    operator_token: str | None = None,
) -> dict[str, Any]:
    """``now`` is the clock (tests pass one to age messages honestly instead of waiting)."""
    slug = await project_slug(store, project_key)
    days = check_age(store, max_age_days)
    # auth only ("check"): a real purge is the operator's under `required`; counting (dry_run) is
    # open to any agent of the project. A wrong token is refused either way.
    await project_state(
        store, project_key, token, operator_token, "check", "purge_old_messages", operator_only=not dry_run
    )
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    cutoff_us = int(cutoff.timestamp()) * 1_000_000 + cutoff.microsecond
    # a cutoff before 1970 is older than every message (and than any stream id can say)
    ids, entries = await _old_messages(store, slug, cutoff_us) if cutoff_us > 0 else ([], [])
    if not dry_run:
        for start in range(0, max(len(ids), len(entries)), BATCH):
            chunk_ids, chunk_entries = ids[start : start + BATCH], entries[start : start + BATCH]
            reply = await store.run(
                "purge_messages",
                [store.keys.project(slug), store.keys.pending(slug)],
                [store.keys.project_prefix(slug), len(chunk_ids), *chunk_ids, *(x for e in chunk_entries for x in e)],
            )
            if reply[0] != "ok":
                await refusals.raise_for(store, reply, slug, project_key)
    indexed = await asyncio.to_thread(_index_purge, store.settings.index_path, slug, cutoff.isoformat(), dry_run)
    return {
        "status": "dry_run" if dry_run else "purged",
        "messages_affected": len({int(i) for i in ids} | indexed),
        "cutoff_date": cutoff.isoformat(),
        "max_age_days": days,
    }


async def _old_messages(store: Store, slug: str, cutoff_us: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Ids of messages created before the cutoff, and the stream entries that point at them."""
    keys = store.keys
    end = str(cutoff_us // 1000)  # an entry's id is never below its message's creation ms
    ids: dict[str, None] = {}
    entries: list[tuple[str, str]] = []
    for lower in await store.redis.hkeys(keys.agents(slug)):
        for suffix, created in ((f"outbox:{lower}", "c"), (f"inbox:{lower}", "f")):
            start = "-"
            while True:
                page = await store.redis.xrange(keys.project_prefix(slug) + suffix, start, end, count=PAGE)
                for entry_id, fields in page:
                    if int(fields[created].split("|", 1)[0]) < cutoff_us:
                        ids.setdefault(fields["m"], None)
                        entries.append((suffix, entry_id))
                if len(page) < PAGE:
                    break
                start = "(" + page[-1][0]
    await _old_held(store, slug, cutoff_us, ids)
    return list(ids), entries


async def _old_held(store: Store, slug: str, cutoff_us: int, ids: dict[str, None]) -> None:
    """Old messages held for an agent until it approves a sender of ANOTHER project: they are in
    no stream of this project (a held message is in no inbox yet, and a sender of another project
    has no outbox here). Found through the agent's inbound links (the contact request made for
    the hold); delete_message then takes them out of their held sets."""
    keys = store.keys
    agents = await store.redis.hkeys(keys.agents(slug))
    pipe = store.redis.pipeline(transaction=False)
    for lower in agents:
        pipe.hkeys(keys.links(slug, lower))
    held_keys = [
        f"{keys.project_prefix(slug)}held:{lower}:{field_name[3:]}"
        for lower, fields in zip(agents, await pipe.execute(), strict=True)
        for field_name in fields
        if field_name.startswith("in:") and not field_name.startswith(f"in:{slug}#")
    ]
    for key in held_keys:
        members = await store.redis.zrange(key, 0, -1)
        if not members:
            continue
        pipe = store.redis.pipeline(transaction=False)
        for member in members:
            pipe.hget(keys.message(slug, int(member)), "created_us")
        for member, created in zip(members, await pipe.execute(), strict=True):
            if created is not None and int(created) < cutoff_us:
                ids.setdefault(member, None)


def _index_purge(path: Path, slug: str, cutoff_iso: str, dry_run: bool) -> set[int]:
    """Ids of the project's indexed messages created before the cutoff; deleted unless dry_run.
    Stored times are the ISO text the tools return, which sorts as time within one offset."""
    if not Path(path).exists():
        return set()
    index = Index(path)
    try:
        index.ensure_schema()
        if dry_run:
            rows = index.query(
                "SELECT m.id FROM messages m JOIN projects p ON p.id = m.project_id "
                "WHERE p.slug = ? AND m.created_ts < ?",
                (slug, cutoff_iso),
            )
            return {row[0] for row in rows}
        with project_lock(path, slug), index.transaction() as conn:
            old = "SELECT m.id FROM messages m JOIN projects p ON p.id = m.project_id WHERE p.slug = ?1 AND m.created_ts < ?2"
            conn.execute(f"DELETE FROM message_recipients WHERE message_id IN ({old})", (slug, cutoff_iso))
            return {
                row[0]
                for row in conn.execute(f"DELETE FROM messages WHERE id IN ({old}) RETURNING id", (slug, cutoff_iso))
            }
    finally:
        index.close()
