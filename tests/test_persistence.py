"""The persistence worker: pending changes reach the Git archive and SQLite index once each,
in group commits, on fakeredis and a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastmcp import FastMCP
from helpers import PROJECT, Tools
from index_helpers import on_index_backend
from persist_helpers import committed_files, front_matter, git, index_rows, run_worker, show

from broker.config import Settings
from broker.persistence.drain import Persister
from broker.store.clients import make_sync_client


@pytest.fixture
def settings(settings: Settings, index_backend: str, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Every test here on the SQLite and on the PostgreSQL index."""
    with on_index_backend(settings, index_backend, request) as on_backend:
        yield on_backend


async def test_messages_profiles_and_receipts_reach_git_and_sqlite_once(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    sent = [
        await tools.send("BlueLake", ["GreenCastle"], cc=["alpha-one"], subject=f"Plan {i}", thread_id="FEAT-1")
        for i in range(5)
    ]
    ids = [s["deliveries"][0]["payload"]["id"] for s in sent]
    await tools.call("acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=ids[0])
    await run_worker(server, settings)

    rows = index_rows(settings, "SELECT id, subject, thread_id, created_ts FROM messages ORDER BY id")
    assert [r["id"] for r in rows] == sorted(ids)
    recipients = index_rows(
        settings,
        "SELECT r.message_id, a.name, r.kind, r.read_ts, r.ack_ts FROM message_recipients r "
        "JOIN agents a ON a.id = r.agent_id ORDER BY r.message_id, a.name",
    )
    assert len(recipients) == 10
    acked = next(r for r in recipients if r["message_id"] == ids[0] and r["name"] == "GreenCastle")
    assert acked["ack_ts"] and acked["read_ts"] and acked["kind"] == "to"
    agents = index_rows(settings, "SELECT name, registration_token FROM agents ORDER BY name")
    assert [a["name"] for a in agents] == ["BlueLake", "GreenCastle", "alpha-one"]
    assert all(a["registration_token"].startswith("sha256:") for a in agents)

    files = committed_files(settings)
    slug = "tmp-concurrent-test"
    for message_id in ids:
        canonical = [
            f for f in files if f.startswith(f"projects/{slug}/messages/2") and f.endswith(f"__{message_id}.md")
        ]
        assert len(canonical) == 1
        name = canonical[0].rsplit("/", 1)[1]
        for copy in ("BlueLake/outbox", "GreenCastle/inbox", "alpha-one/inbox"):
            assert any(f.startswith(f"projects/{slug}/agents/{copy}/") and f.endswith(name) for f in files), copy
    assert f"projects/{slug}/agents/BlueLake/profile.json" in files
    digest = show(settings, f"projects/{slug}/messages/threads/FEAT-1.md")
    assert digest.startswith("# Thread FEAT-1\n") and digest.count("[View canonical]") == 5
    # group commit: the whole backlog went out in one commit after the initial one
    assert len(git(settings, "log", "--format=%H").splitlines()) == 2


async def test_bcc_names_only_in_sender_and_that_recipients_copies(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    sent = await tools.send("BlueLake", ["GreenCastle"], bcc=["alpha-one"], subject="Quiet")
    message_id = sent["deliveries"][0]["payload"]["id"]
    await run_worker(server, settings)
    base = "projects/tmp-concurrent-test/"
    copies = {
        f.removeprefix(base): front_matter(settings, f)
        for f in committed_files(settings)
        if f.endswith(f"__{message_id}.md")
    }
    assert len(copies) == 4
    for path, front in copies.items():
        expected = ["alpha-one"] if path.startswith(("agents/BlueLake/outbox", "agents/alpha-one/inbox")) else []
        assert front["bcc"] == expected, path
        assert front["to"] == ["GreenCastle"] and front["from"] == "BlueLake"
    kinds = index_rows(
        settings, "SELECT kind FROM message_recipients WHERE message_id = ? ORDER BY kind", (message_id,)
    )
    assert [k["kind"] for k in kinds] == ["bcc", "to"]


async def test_replayed_batch_writes_nothing_twice(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    for i in range(3):
        await tools.send("BlueLake", ["GreenCastle"], subject=f"Once {i}", thread_id="T-9")
    await run_worker(server, settings)
    head = git(settings, "rev-parse", "HEAD")
    digest = show(settings, "projects/tmp-concurrent-test/messages/threads/T-9.md")

    # A duplicated or retried job: the same members drained again.
    persister = Persister(settings, make_sync_client(server.store.redis_url))  # type: ignore[attr-defined]
    ids = [r["id"] for r in index_rows(settings, "SELECT id FROM messages")]
    members = [f"msg:{i}" for i in ids] + ["project:1"]
    done, commit, _ = await asyncio.to_thread(persister.persist_batch, "tmp-concurrent-test", members)
    assert sorted(done) == sorted(members) and commit is None
    assert git(settings, "rev-parse", "HEAD") == head
    assert show(settings, "projects/tmp-concurrent-test/messages/threads/T-9.md") == digest
    assert index_rows(settings, "SELECT count(*) AS n FROM messages")[0]["n"] == 3
    assert index_rows(settings, "SELECT count(*) AS n FROM fts_messages")[0]["n"] == 3
    assert index_rows(settings, "SELECT count(*) AS n FROM message_recipients")[0]["n"] == 3


async def test_a_burst_of_sends_enqueues_one_job_and_drains_empty(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    store = server.store  # type: ignore[attr-defined]
    keys = store.keys
    await tools.send("BlueLake", ["GreenCastle"])  # the flag may already be set by setup; settle it
    await asyncio.to_thread(server.persist_queue.wait_idle)
    queue = server.persist_queue.queue
    before = await asyncio.to_thread(lambda: queue.count)
    await asyncio.gather(*(tools.send("BlueLake", ["GreenCastle"], subject=f"B{i}") for i in range(30)))
    await asyncio.to_thread(server.persist_queue.wait_idle)
    assert await asyncio.to_thread(lambda: queue.count) == before  # the flag was already claimed: no new job
    assert await store.client().exists(keys.pending_flag("tmp-concurrent-test"))

    await run_worker(server, settings)
    assert await store.client().zcard(keys.pending("tmp-concurrent-test")) == 0
    assert await store.client().zcard(keys.inflight("tmp-concurrent-test")) == 0
    assert not await store.client().exists(keys.pending_flag("tmp-concurrent-test"))
    assert index_rows(settings, "SELECT count(*) AS n FROM messages")[0]["n"] == 31

    # The flag was cleared by the drain, so the next send enqueues a job of its own.
    await tools.send("BlueLake", ["GreenCastle"], subject="after")
    await asyncio.to_thread(server.persist_queue.wait_idle)
    assert await asyncio.to_thread(lambda: queue.count) == 1


async def test_reconciler_requeues_a_lost_enqueue_and_a_dead_batch(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    store = server.store  # type: ignore[attr-defined]
    keys = store.keys
    slug = "tmp-concurrent-test"
    sent = await tools.send("BlueLake", ["GreenCastle"], subject="lost")
    # A job that died after claiming its batch: the entries sit in in-flight, no job is queued.
    await store.client().zadd(keys.inflight(slug), {f"msg:{sent['deliveries'][0]['payload']['id']}": 1})
    await store.client().zrem(keys.pending(slug), f"msg:{sent['deliveries'][0]['payload']['id']}")
    await asyncio.to_thread(server.persist_queue.wait_idle)
    await asyncio.to_thread(server.persist_queue.queue.empty)
    await store.client().delete(keys.pending_flag(slug))

    worker = await run_worker(server, settings)  # start-up reconcile finds both
    assert index_rows(settings, "SELECT subject FROM messages") == [{"subject": "lost"}]
    assert await store.client().zcard(keys.inflight(slug)) == 0
    assert worker.reconcile() == []  # nothing left to do


async def test_periodic_reconcile_enqueues_only_aged_projects(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    from workers.runner import PersistenceWorker

    store = server.store  # type: ignore[attr-defined]
    slug = "tmp-concurrent-test"
    worker = PersistenceWorker(settings, store.redis_url)
    await run_worker(server, settings)  # drains the setup
    await tools.send("BlueLake", ["GreenCastle"], subject="fresh")
    assert await asyncio.to_thread(worker.reconcile) == []  # younger than PERSIST_RECONCILE_AGE_SECONDS
    pending = await store.client().zrange(store.keys.pending(slug), 0, -1)
    await store.client().zadd(store.keys.pending(slug), dict.fromkeys(pending, 1))  # as if enqueued long ago
    await store.client().delete(store.keys.pending_flag(slug))  # and its "drain scheduled" flag expired
    await asyncio.to_thread(server.persist_queue.wait_idle)  # the send's own enqueue has landed
    before = await asyncio.to_thread(lambda: server.persist_queue.queue.count)
    assert await asyncio.to_thread(worker.reconcile) == [slug]
    assert await asyncio.to_thread(lambda: server.persist_queue.queue.count) == before + 1


async def test_a_failed_batch_goes_back_to_pending(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    store = server.store  # type: ignore[attr-defined]
    slug = "tmp-concurrent-test"
    await tools.send("BlueLake", ["GreenCastle"], subject="retry me")
    persister = Persister(settings, make_sync_client(store.redis_url))
    # The archive path is taken by a file, so the Git write fails.
    settings.archive_path.parent.mkdir(parents=True, exist_ok=True)
    settings.archive_path.write_text("not a repository")
    with pytest.raises(OSError):
        await asyncio.to_thread(persister.drain, slug)
    assert await store.client().zcard(store.keys.inflight(slug)) == 0
    assert "msg:" in " ".join(await store.client().zrange(store.keys.pending(slug), 0, -1))
    settings.archive_path.unlink()
    await asyncio.to_thread(persister.drain, slug)
    assert index_rows(settings, "SELECT subject FROM messages") == [{"subject": "retry me"}]


async def test_whois_lists_the_archives_recent_commits(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    assert (await tools.call("whois", project_key=PROJECT, agent_name="BlueLake"))["recent_commits"] == []
    await tools.send("BlueLake", ["GreenCastle"], subject="commit me")
    await run_worker(server, settings)
    commits = (await tools.call("whois", project_key=PROJECT, agent_name="BlueLake", commit_limit=1))["recent_commits"]
    assert len(commits) == 1
    assert commits[0]["summary"].startswith("batch: 1 messages") and len(commits[0]["hexsha"]) == 12
    assert commits[0]["hexsha"] == git(settings, "rev-parse", "--short=12", "HEAD").strip()
    unasked = await tools.call("whois", project_key=PROJECT, agent_name="BlueLake", include_recent_commits=False)
    assert unasked["recent_commits"] == []  # the key is always there (as in the reference), empty when not asked
