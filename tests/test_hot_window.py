"""The hot-window trimmer (broker/lifecycle/hot_window.py, trim_hot.lua) with a tiny window:
three messages per inbox and outbox, an hour of retention, time moved on by passing the
trimmer a later clock. Mail is persisted by the real worker; what the trimmer removed must be
gone from Redis entirely, counted in the project's cold hash, and still in the index."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from contact_helpers import policy, respond
from fastmcp import FastMCP
from helpers import PROJECT, Tools, make_settings, real_redis_only
from persist_helpers import index_rows, run_worker
from shapes import payload

from broker.config import Settings
from broker.lifecycle import hot_window, retention
from broker.lifecycle.hot_window import HotTrimmer, TrimReport
from broker.store.clients import make_sync_client

SLUG = "tmp-concurrent-test"
OTHER = "/tmp/other-proj"
OTHER_SLUG = "tmp-other-proj"
CAP = 3
RETENTION_S = 3600
HOUR_MS = RETENTION_S * 1000


@pytest.fixture
def settings(backend: str, tmp_path: Path) -> Settings:
    return make_settings(backend, tmp_path, HOT_INBOX_MAX_MESSAGES=CAP, HOT_RETENTION_SECONDS=RETENTION_S)


def trimmer(server: FastMCP, settings: Settings) -> HotTrimmer:
    store = server.store  # type: ignore[attr-defined]
    return HotTrimmer(settings, make_sync_client(store.redis_url), store.keys)


async def trim(server: FastMCP, settings: Settings, later_ms: int = 0) -> TrimReport:
    """One pass, its clock ``later_ms`` ahead of now."""
    now_ms = int(time.time() * 1000) + later_ms if later_ms else None
    return await asyncio.to_thread(trimmer(server, settings).run_pass, now_ms=now_ms)


async def send(tools: Tools, sender: str, to: list[str], subject: str, **extra: Any) -> int:
    return payload(await tools.send(sender, to, subject=subject, **extra))["id"]


async def cold(server: FastMCP, slug: str = SLUG) -> dict[str, str]:
    store = server.store  # type: ignore[attr-defined]
    return await store.client().hgetall(store.keys.cold(slug))


async def hot_ids(server: FastMCP, agent: str, project_key: str = PROJECT) -> list[int]:
    """The ids the agent's inbox stream holds in Redis (fetch_inbox answers with cold mail too)."""
    slug = {PROJECT: SLUG, OTHER: OTHER_SLUG}[project_key]
    store = server.store  # type: ignore[attr-defined]
    return sorted(int(f["m"]) for _entry, f in await store.client().xrange(store.keys.inbox(slug, agent.lower())))


async def entry_ids(server: FastMCP, key: str) -> dict[int, str]:
    """message id -> its entry id in a stream."""
    return {int(f["m"]): entry for entry, f in await server.store.client().xrange(key)}  # type: ignore[attr-defined]


async def residue(server: FastMCP, message_id: int) -> list[str]:
    """Every place under the test's prefix that still names the message: a key, a hash field, a
    set or sorted-set member (also as a pending entry), a stream entry."""
    store = server.store  # type: ignore[attr-defined]
    client = store.client()
    mid = str(message_id)
    found = []
    async for key in client.scan_iter(match=f"{store.keys.prefix}:*", count=1000):
        if key.endswith(f":msg:{mid}"):
            found.append(key)
            continue
        kind = await client.type(key)
        if kind == "hash":
            found += [f"{key}[{f}]" for f in await client.hkeys(key) if f == mid or f.startswith(f"msg:{mid}")]
        elif kind in ("set", "zset"):
            members = await client.smembers(key) if kind == "set" else await client.zrange(key, 0, -1)
            named = {mid, f"msg:{mid}"}
            found += [f"{key} {m}" for m in members if m in named or m.startswith(f"rcpt:{mid}:")]
        elif kind == "stream":
            found += [f"{key} {e}" for e, f in await client.xrange(key) if f.get("m") == mid]
    return found


def indexed(settings: Settings) -> set[int]:
    return {row["id"] for row in index_rows(settings, "SELECT id FROM messages")}


async def test_only_persisted_mail_past_the_window_leaves_and_is_counted(
    tools: Tools, server: FastMCP, settings: Settings, trio: dict[str, Any]
) -> None:
    ids = [await send(tools, "BlueLake", ["GreenCastle"], f"n{i}") for i in range(5)]
    # nothing persisted yet: nothing leaves, past the cap or past the retention
    assert (await trim(server, settings)).deleted == 0
    assert (await trim(server, settings, later_ms=2 * HOUR_MS)).deleted == 0
    assert await hot_ids(server, "GreenCastle") == ids
    await tools.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=ids[0])
    await run_worker(server, settings)
    store = server.store  # type: ignore[attr-defined]
    inbox = await entry_ids(server, store.keys.inbox(SLUG, "GreenCastle"))
    outbox = await entry_ids(server, store.keys.outbox(SLUG, "BlueLake"))
    created_us = {i: await store.client().hget(store.keys.message(SLUG, i), "created_us") for i in ids}

    report = await trim(server, settings)
    assert report.deleted == 2 and report.complete
    assert await hot_ids(server, "GreenCastle") == ids[2:]
    marks = await cold(server)
    assert marks["in:greencastle"] == inbox[ids[1]] and marks["out:bluelake"] == outbox[ids[1]]
    assert marks["unread:greencastle"] == "1"  # the first one was read before it left
    assert set(marks) == {"in:greencastle", "out:bluelake", "unread:greencastle", "t"}
    assert marks["t"] == created_us[ids[1]]  # the newest message that left
    for gone in ids[:2]:
        assert await residue(server, gone) == []
    for kept in ids[2:]:
        assert await residue(server, kept) != []
    assert indexed(settings) == set(ids)  # the index still has every one

    again = await trim(server, settings)  # idempotent: nothing more leaves, the marks stay
    assert again.deleted == 0 and await cold(server) == marks
    assert await hot_ids(server, "GreenCastle") == ids[2:]


async def test_read_and_ack_state_not_yet_persisted_keeps_the_message(
    tools: Tools, server: FastMCP, settings: Settings, trio: dict[str, Any]
) -> None:
    ids = [await send(tools, "BlueLake", ["GreenCastle"], f"n{i}", ack_required=True) for i in range(5)]
    await run_worker(server, settings)
    await tools.call("acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=ids[0])
    store = server.store  # type: ignore[attr-defined]
    # the second one's receipt failed for good: dead-lettered, as the worker leaves it
    await store.client().zadd(store.keys.dead_letters(SLUG), {f"rcpt:{ids[1]}:greencastle": 1})
    assert (await trim(server, settings)).deleted == 0
    assert await hot_ids(server, "GreenCastle") == ids

    await run_worker(server, settings)  # the acknowledgement reaches the index
    assert (await trim(server, settings)).deleted == 1
    assert await hot_ids(server, "GreenCastle") == ids[1:]
    assert (await cold(server)).get("unread:greencastle") is None  # acknowledged means read

    await store.client().zrem(store.keys.dead_letters(SLUG), f"rcpt:{ids[1]}:greencastle")
    assert (await trim(server, settings)).deleted == 1
    assert await hot_ids(server, "GreenCastle") == ids[2:]
    assert (await cold(server))["unread:greencastle"] == "1"


async def test_a_message_in_one_window_stays_for_everyone_until_its_time_is_up(
    tools: Tools, server: FastMCP, settings: Settings, trio: dict[str, Any]
) -> None:
    shared = await send(tools, "BlueLake", ["GreenCastle", "alpha-one"], "shared")
    rest = [await send(tools, "BlueLake", ["alpha-one"], f"n{i}") for i in range(4)]
    await run_worker(server, settings)

    # past the cap in alpha-one's inbox and BlueLake's outbox, but GreenCastle holds three at most
    assert (await trim(server, settings)).deleted == 1
    assert await hot_ids(server, "alpha-one") == [shared, *rest[1:]]
    assert await hot_ids(server, "GreenCastle") == [shared]
    assert await residue(server, rest[0]) == []

    # GreenCastle never reads: an hour on, the time window lets everything go
    assert (await trim(server, settings, later_ms=HOUR_MS - 60_000)).deleted == 0
    assert (await trim(server, settings, later_ms=HOUR_MS + 60_000)).deleted == 4
    assert await hot_ids(server, "alpha-one") == [] and await hot_ids(server, "GreenCastle") == []
    marks = await cold(server)
    assert (marks["unread:alpha-one"], marks["unread:greencastle"]) == ("5", "1")
    for message_id in (shared, *rest):
        assert await residue(server, message_id) == []
    assert indexed(settings) == {shared, *rest}


async def test_held_mail_stays_until_its_hold_ends(
    tools: Tools, server: FastMCP, settings: Settings, trio: dict[str, Any]
) -> None:
    await policy(tools, "GreenCastle", "contacts_only")
    sent = payload(await tools.send("BlueLake", ["GreenCastle"], subject="held"))
    held = sent["id"]
    assert sent["to"] == []  # held until GreenCastle approves BlueLake
    for i in range(4):
        await send(tools, "BlueLake", ["alpha-one"], f"n{i}")
    await run_worker(server, settings)

    two_hours = 2 * HOUR_MS
    # all but the held one: the four, and the intro mail of the contact request the hold made
    assert (await trim(server, settings, later_ms=two_hours)).deleted == 5
    assert await residue(server, held) != []
    assert (await respond(tools, "GreenCastle", "BlueLake"))["delivered_message_ids"] == [held]
    assert await hot_ids(server, "GreenCastle") == [held]
    await run_worker(server, settings)
    assert (await trim(server, settings, later_ms=two_hours)).deleted == 1
    assert await residue(server, held) == []
    assert (await cold(server))["unread:greencastle"] == "2"  # the intro too


async def test_a_hold_that_expired_does_not_keep_the_message(
    tools: Tools, server: FastMCP, settings: Settings, trio: dict[str, Any]
) -> None:
    await policy(tools, "GreenCastle", "contacts_only")
    held = await send(tools, "BlueLake", ["GreenCastle"], "held")
    await run_worker(server, settings)
    assert (await trim(server, settings, later_ms=2 * HOUR_MS)).deleted == 1  # the contact request's intro
    assert await residue(server, held) != []
    past_hold = (settings.contact_hold_ttl_seconds + 60) * 1000
    assert (await trim(server, settings, later_ms=past_hold)).deleted == 1
    assert await residue(server, held) == []


async def test_mail_from_another_project_is_trimmed_in_the_project_that_holds_it(
    tools: Tools, server: FastMCP, settings: Settings, trio: dict[str, Any]
) -> None:
    await tools.project(OTHER)
    await tools.agent("RedFox", project_key=OTHER)
    await tools.call("set_contact_policy", project_key=OTHER, agent_name="RedFox", policy="open")
    address = f"project:{OTHER_SLUG}#RedFox"
    ids = [await send(tools, "BlueLake", [address], f"n{i}") for i in range(4)]
    await run_worker(server, settings)
    assert (await trim(server, settings)).deleted == 1
    assert await hot_ids(server, "RedFox", project_key=OTHER) == ids[1:]
    assert set(await cold(server, OTHER_SLUG)) == {"in:redfox", "unread:redfox", "t"}  # no outbox there
    assert await cold(server) == {}
    assert await residue(server, ids[0]) == []


async def test_a_purge_takes_what_it_deletes_out_of_the_cold_counts(
    tools: Tools, server: FastMCP, settings: Settings, trio: dict[str, Any]
) -> None:
    ids = [await send(tools, "BlueLake", ["GreenCastle"], f"n{i}") for i in range(CAP + 3)]
    await tools.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=ids[0])
    await run_worker(server, settings)
    assert (await trim(server, settings)).deleted == 3
    assert (await cold(server))["unread:greencastle"] == "2"
    store = server.store  # type: ignore[attr-defined]
    later = datetime.now(UTC) + timedelta(days=2)
    purged = await retention.purge_old_messages(store, PROJECT, 1, False, None, now=later)
    assert purged["messages_affected"] == len(ids)
    assert "unread:greencastle" not in await cold(server)
    assert indexed(settings) == set()


async def test_a_hard_deleted_agent_takes_its_cold_marks_and_counts_along(
    tools: Tools, server: FastMCP, settings: Settings, trio: dict[str, Any]
) -> None:
    await send(tools, "BlueLake", ["alpha-one"], "from BlueLake")  # one of alpha-one's that stays counted
    for i in range(CAP + 2):
        await send(tools, "BlueLake", ["GreenCastle"], f"in{i}")
        await send(tools, "GreenCastle", ["alpha-one"], f"out{i}")
    await run_worker(server, settings)
    assert (await trim(server, settings)).deleted == 5
    marks = await cold(server)
    assert marks["unread:greencastle"] == "2" and marks["unread:alpha-one"] == "3"
    assert {"in:greencastle", "out:greencastle"} <= set(marks)

    deleted = await tools.call(
        "hard_delete_agent", project_key=PROJECT, agent_name="GreenCastle", confirmation="I UNDERSTAND"
    )
    assert deleted["status"] == "hard_deleted"
    marks = await cold(server)
    assert not {"in:greencastle", "out:greencastle", "unread:greencastle"} & set(marks)
    # GreenCastle's two trimmed messages to alpha-one left the index with it; BlueLake's stays
    assert marks["unread:alpha-one"] == "1"


async def test_sends_go_on_while_the_trimmer_works_in_small_calls(
    tools: Tools, server: FastMCP, settings: Settings, trio: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hot_window, "WORK_BUDGET", 40)
    monkeypatch.setattr(hot_window, "DELETE_MAX", 2)
    first = [await send(tools, "BlueLake", ["GreenCastle", "alpha-one"], f"a{i}") for i in range(20)]
    await run_worker(server, settings)
    task = asyncio.create_task(trim(server, settings))
    later = [await send(tools, "GreenCastle", ["BlueLake"], f"b{i}") for i in range(10)]
    report = await task
    assert report.deleted == len(first) - CAP and report.calls >= report.deleted / 2  # two per call at most
    await run_worker(server, settings)
    while (await trim(server, settings)).deleted:
        pass
    assert await hot_ids(server, "GreenCastle") == first[-CAP:]
    assert await hot_ids(server, "BlueLake") == later[-CAP:]
    assert indexed(settings) == {*first, *later}
    marks = await cold(server)
    assert marks["unread:greencastle"] == marks["unread:alpha-one"] == str(len(first) - CAP)
    assert marks["unread:bluelake"] == str(len(later) - CAP)


async def test_a_budget_smaller_than_one_message_still_moves_mail(
    tools: Tools, server: FastMCP, settings: Settings, trio: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call decides its first message even when reading every holder's stream costs more than
    its budget (a message to many recipients), so no message stays hot for that."""
    monkeypatch.setattr(hot_window, "WORK_BUDGET", 6)
    ids = [await send(tools, "BlueLake", ["GreenCastle", "alpha-one"], f"n{i}") for i in range(CAP + 2)]
    await run_worker(server, settings)
    assert (await trim(server, settings)).deleted == 2
    assert await hot_ids(server, "GreenCastle") == await hot_ids(server, "alpha-one") == ids[2:]


async def test_the_worker_trims_on_its_own(tools: Tools, server: FastMCP) -> None:
    from workers.runner import PersistenceWorker

    settings = server.store.settings  # type: ignore[attr-defined]
    fast = settings.model_copy(update={"hot_trim_interval_seconds": 0.2})
    await tools.project()
    for name in ("BlueLake", "GreenCastle"):
        await tools.agent(name)
    ids = [await send(tools, "BlueLake", ["GreenCastle"], f"n{i}") for i in range(CAP + 2)]
    worker = PersistenceWorker(fast, server.store.redis_url)  # type: ignore[attr-defined]
    worker.start_thread()
    try:
        for _ in range(100):
            if await hot_ids(server, "GreenCastle") == ids[2:]:
                break
            await asyncio.sleep(0.1)
        assert await hot_ids(server, "GreenCastle") == ids[2:]
    finally:
        await asyncio.to_thread(worker.stop)


@real_redis_only  # the command is another process: it cannot share an in-process fakeredis
async def test_broker_trim_runs_one_pass_by_hand(
    tools: Tools, server: FastMCP, settings: Settings, trio: dict[str, Any]
) -> None:
    ids = [await send(tools, "BlueLake", ["GreenCastle"], f"n{i}") for i in range(CAP + 2)]
    await run_worker(server, settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "QUEUE_", "STORAGE_", "AGENT_", "HOT_"))}
    env.update(
        REDIS_URL=settings.redis_url,
        REDIS_KEY_PREFIX=settings.redis_key_prefix,
        STORAGE_ROOT=str(settings.storage_root),
        HOT_INBOX_MAX_MESSAGES=str(CAP),
    )
    command = [sys.executable, "-m", "broker.cli", "trim", "--project", PROJECT]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{SLUG}\t2\n"
    assert "2 message(s) moved out of Redis" in done.stderr
    assert await hot_ids(server, "GreenCastle") == ids[2:]
