"""purge_old_messages: remove messages older than a cutoff from Redis and the SQLite index.

Old messages are found through the streams, whose entry ids are the server's millisecond clock
(or, after rehydrate, the creation time): each agent's outbox and inbox are read from their
oldest entry up to the cutoff, so the work is bounded by what is old plus one page, never a
scan of the project (``old_mail`` in ``broker/store/commands/lifecycle.py``). Deletion runs in script
batches (``purge_messages.lua``), then the index rows go under the project's drain lock (so no
persistence batch writes them back). The Git archive keeps its files: it is history.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.projects import project_slug
from broker.lifecycle.hot_window import cold_unread_counts
from broker.lifecycle.state import project_state
from broker.persistence.index import Index
from broker.store.commands import lifecycle as commands
from broker.store.commands.lifecycle import OldMail
from broker.store.refusals import Refusal
from broker.store.store import Store

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
    old = await commands.old_mail(store, slug=slug, cutoff_us=cutoff_us) if cutoff_us > 0 else OldMail((), ())
    ids, entries = list(old.message_ids), list(old.stream_entries)
    if not dry_run:
        for start in range(0, max(len(ids), len(entries)), BATCH):
            try:
                await commands.purge_messages(
                    store,
                    slug=slug,
                    message_ids=ids[start : start + BATCH],
                    stream_entries=entries[start : start + BATCH],
                )
            except Refusal as refused:
                await refusals.raise_for(store, refused.reply, slug, project_key)
    url, cutoff_iso = store.settings.index_url, cutoff.isoformat()
    cold_unread = {} if dry_run else await asyncio.to_thread(_cold_unread, url, slug, cutoff_iso, set(ids))
    indexed = await asyncio.to_thread(_index_purge, url, slug, cutoff_iso, dry_run)
    await commands.forget_cold_unread(store, slug=slug, counts=cold_unread)
    return {
        "status": "dry_run" if dry_run else "purged",
        "messages_affected": len(set(ids) | indexed),
        "cutoff_date": cutoff.isoformat(),
        "max_age_days": days,
    }


def _cold_unread(url: str, slug: str, cutoff_iso: str, hot: set[int]) -> dict[str, int]:
    """Per agent, how many of the project's indexed messages created before the cutoff it had not
    read and were not in Redis (``hot``): the cold unread counts the purge must lower."""
    return cold_unread_counts(
        url,
        "SELECT a.name AS name, m.id AS id FROM messages m JOIN projects p ON p.id = m.project_id "
        "JOIN message_recipients r ON r.message_id = m.id JOIN agents a ON a.id = r.agent_id "
        "WHERE p.slug = :slug AND m.created_ts < :cutoff AND r.read_ts IS NULL",
        {"slug": slug, "cutoff": cutoff_iso},
        hot,
    )


def _index_purge(url: str, slug: str, cutoff_iso: str, dry_run: bool) -> set[int]:
    """Ids of the project's indexed messages created before the cutoff; deleted unless dry_run.
    Stored times are the ISO text the tools return, which sorts as time within one offset."""
    index = Index(url)
    if index.path is not None and not index.path.exists():
        return set()
    params = {"slug": slug, "cutoff": cutoff_iso}
    try:
        index.ensure_schema()
        if dry_run:
            rows = index.query(
                "SELECT m.id FROM messages m JOIN projects p ON p.id = m.project_id "
                "WHERE p.slug = :slug AND m.created_ts < :cutoff",
                params,
            )
            return {row[0] for row in rows}
        with index.project_lock(slug), index.transaction() as conn:
            old = "SELECT m.id FROM messages m JOIN projects p ON p.id = m.project_id WHERE p.slug = :slug AND m.created_ts < :cutoff"
            conn.execute(f"DELETE FROM message_recipients WHERE message_id IN ({old})", params)
            return {row[0] for row in conn.execute(f"DELETE FROM messages WHERE id IN ({old}) RETURNING id", params)}
    finally:
        index.close()
