"""A pending entry that always fails to persist: its batch is taken apart so the rest of the
project persists, it is tried a bounded number of times with back-off, then parked in the
project's dead-letter set, reported by the summary health reads, and written once retried after
the cause is fixed. The failure is a SQLite trigger refusing one message (as a constraint the
row breaks would), on fakeredis and a real Redis."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import pytest
from fastmcp import FastMCP
from helpers import Tools
from persist_helpers import committed_files, git, index_rows

from broker.config import Settings
from broker.lifecycle.rehydrate import rehydrate_all
from broker.persistence.dead_letters import dead_letter_summary, list_dead_letters, retry_dead_letters
from broker.persistence.drain import Persister
from broker.persistence.index import Index
from broker.store.clients import make_sync_client

SLUG = "tmp-concurrent-test"


def poison_subject(settings: Settings, subject: str) -> None:
    """Make SQLite refuse any message with this subject (the cause a user would then fix)."""
    Index(settings.index_path).ensure_schema()
    with sqlite3.connect(settings.index_path) as db:
        db.execute(
            f"CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.subject = '{subject}' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
        )


def cure(settings: Settings) -> None:
    with sqlite3.connect(settings.index_path) as db:
        db.execute("DROP TRIGGER poison")


def persisted_ids(settings: Settings) -> list[int]:
    return sorted(r["id"] for r in index_rows(settings, "SELECT id FROM messages"))


def canonical_ids(settings: Settings) -> list[int]:
    files = [f for f in committed_files(settings) if f.startswith(f"projects/{SLUG}/messages/2")]
    return sorted(int(f.rsplit("__", 1)[1][:-3]) for f in files)


async def send_ids(tools: Tools, subjects: list[str]) -> list[int]:
    sent = [await tools.send("BlueLake", ["GreenCastle"], subject=s) for s in subjects]
    return [s["deliveries"][0]["payload"]["id"] for s in sent]


def sync_client(store: Any) -> Any:
    return make_sync_client(store.redis_url)


def persister_for(server: FastMCP, settings: Settings, **overrides: Any) -> Persister:
    tuned = settings.model_copy(update=overrides)
    return Persister(tuned, make_sync_client(server.store.redis_url))  # type: ignore[attr-defined]


async def test_poison_entry_is_isolated_tried_then_dead_lettered_and_retried_once_fixed(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    store = server.store  # type: ignore[attr-defined]
    keys = store.keys
    poison_subject(settings, "poison")
    ids = await send_ids(tools, ["a", "b", "poison", "c", "d"])
    bad = ids[2]
    persister = persister_for(
        server, settings, persist_max_attempts=3, persist_retry_base_seconds=0, persist_retry_max_seconds=0
    )

    stats = await asyncio.to_thread(persister.drain, SLUG)
    assert persisted_ids(settings) == sorted(set(ids) - {bad})  # the rest of its batch persisted
    assert stats.failed == 1 and stats.dead_lettered == 0
    assert await store.client().hget(keys.attempts(SLUG), f"msg:{bad}") == "1"
    assert await store.client().zrange(keys.pending(SLUG), 0, -1) == [f"msg:{bad}"]
    assert await store.client().zcard(keys.inflight(SLUG)) == 0

    for _ in range(2):  # no back-off here: each drain is one more try
        stats = await asyncio.to_thread(persister.drain, SLUG)
    assert stats.dead_lettered == 1
    assert await store.client().zcard(keys.pending(SLUG)) == 0
    assert await store.client().zcard(keys.inflight(SLUG)) == 0
    assert not await store.client().exists(keys.attempts(SLUG))
    summary = await asyncio.to_thread(dead_letter_summary, sync_client(store), keys)
    assert summary.count == 1 and summary.projects == {SLUG: 1}
    assert summary.oldest_age_seconds is not None and 0 <= summary.oldest_age_seconds < 60
    assert summary.as_dict()["oldest_ts"].endswith("+00:00")
    [dead] = await asyncio.to_thread(list_dead_letters, persister.connection, keys, SLUG)
    assert dead.entry == f"msg:{bad}" and dead.attempts == 3 and "poisoned row" in dead.error
    # parked: further drains leave it alone (no endless retry, no log or registry growth)
    assert (await asyncio.to_thread(persister.drain, SLUG)).batches == 0

    cure(settings)
    assert await asyncio.to_thread(retry_dead_letters, persister.connection, keys, SLUG) == [f"msg:{bad}"]
    await asyncio.to_thread(persister.drain, SLUG)
    assert persisted_ids(settings) == sorted(ids)
    assert canonical_ids(settings) == sorted(ids)
    assert (await asyncio.to_thread(dead_letter_summary, sync_client(store), keys)).count == 0
    assert not await store.client().exists(keys.dead_letter_info(SLUG))


async def test_a_failed_entry_waits_out_its_back_off_while_later_mail_persists(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    store = server.store  # type: ignore[attr-defined]
    poison_subject(settings, "poison")
    [bad] = await send_ids(tools, ["poison"])
    persister = persister_for(server, settings, persist_retry_base_seconds=60)
    await asyncio.to_thread(persister.drain, SLUG)
    score = await store.client().zscore(store.keys.pending(SLUG), f"msg:{bad}")
    assert score > time.time() * 1000 + 50_000  # next try in about a minute, not first in line

    later = await send_ids(tools, ["after"])
    stats = await asyncio.to_thread(persister.drain, SLUG)
    assert persisted_ids(settings) == later and stats.failed == 0  # not claimed again meanwhile
    assert await store.client().hget(store.keys.attempts(SLUG), f"msg:{bad}") == "1"


async def test_a_batch_of_many_with_one_poison_costs_few_commits(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    poison_subject(settings, "poison")
    ids = await send_ids(tools, [f"m{i}" for i in range(40)] + ["poison"] + [f"n{i}" for i in range(39)])
    stats = await asyncio.to_thread(persister_for(server, settings).drain, SLUG)
    assert len(persisted_ids(settings)) == len(ids) - 1 and stats.failed == 1
    # taken apart by halves: one commit per level (about log2 of the batch), not one per entry
    assert len(git(settings, "log", "--format=%H").splitlines()) <= 1 + 8


async def test_a_broken_archive_counts_no_try_against_the_entries(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    store = server.store  # type: ignore[attr-defined]
    ids = await send_ids(tools, ["a", "b"])
    persister = persister_for(server, settings, persist_max_attempts=1)
    settings.archive_path.parent.mkdir(parents=True, exist_ok=True)
    settings.archive_path.write_text("not a repository")  # every write fails, whatever the entry
    for _ in range(2):
        with pytest.raises(OSError):
            await asyncio.to_thread(persister.drain, SLUG)
    assert not await store.client().exists(store.keys.attempts(SLUG))
    assert (await asyncio.to_thread(dead_letter_summary, sync_client(store), store.keys)).count == 0
    assert await store.client().zcard(store.keys.inflight(SLUG)) == 0
    settings.archive_path.unlink()
    await asyncio.to_thread(persister.drain, SLUG)
    assert persisted_ids(settings) == sorted(ids)


async def test_rehydrate_force_leaves_a_project_with_dead_letters_alone(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """A dead letter's record is in Redis only: rebuilding the project from the index would
    delete it for good, so `rehydrate --force` skips the project until it is retried."""
    store = server.store  # type: ignore[attr-defined]
    poison_subject(settings, "poison")
    ids = await send_ids(tools, ["kept", "poison"])
    persister = persister_for(
        server, settings, persist_max_attempts=1, persist_retry_base_seconds=0, persist_retry_max_seconds=0
    )
    await asyncio.to_thread(persister.drain, SLUG)
    assert (await asyncio.to_thread(dead_letter_summary, sync_client(store), store.keys)).count == 1

    report = await rehydrate_all(settings, store.redis_url, force=True)
    assert report.projects == [] and report.unpersisted == [SLUG]
    assert "dead-letters retry" in " ".join(report.lines())
    assert sorted(m["id"] for m in await tools.inbox("GreenCastle")) == sorted(ids)


async def test_a_batch_failing_for_the_environment_keeps_its_age_for_readiness(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """While the index cannot be written (a full disk, a broken file: failures that count no
    try), every drain gives the batch back; it must come back as old as it was, or the oldest
    pending age (readiness, the lag alert) restarts at 0 on each try and never reports the lag."""
    from broker.persistence.state import persistence_state, readiness_problems

    store = server.store  # type: ignore[attr-defined]
    await send_ids(tools, ["stuck"])
    persister = persister_for(server, settings)
    with sqlite3.connect(settings.index_path) as db:  # every message insert fails as "operational"
        db.execute("CREATE TRIGGER broken BEFORE INSERT ON messages BEGIN SELECT no_such_function(); END")
    await asyncio.sleep(1.5)
    with pytest.raises(sqlite3.OperationalError):
        await asyncio.to_thread(persister.drain, SLUG)
    state = await persistence_state(store, settings)
    assert state["pending"] >= 1 and state["oldest_pending_age_seconds"] >= 1.5
    lagging = settings.model_copy(update={"readiness_max_persist_lag_seconds": 1.0})
    assert readiness_problems(state, lagging), state
