"""The seed's archive and SQLite scenarios (test_concurrent_operations.py), ported to our
archive and index, with stricter checks: every write succeeds and is in Git or SQLite."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import make_settings
from persist_helpers import committed_files, front_matter, git, show

from broker.config import Settings
from broker.persistence.archive import ensure_archive, write_agent_profile, write_message_bundle
from broker.persistence.index import Index


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings("memory://unused", tmp_path)


async def test_concurrent_archive_writes(settings: Settings) -> None:
    archive = await ensure_archive(settings, "archive-lock-test")

    async def write_profile(i: int) -> None:
        await write_agent_profile(
            archive,
            {"name": f"Agent{i}", "program": "claude-code", "model": "opus-4", "task_description": f"Task {i}"},
        )

    results = await asyncio.gather(*(write_profile(i) for i in range(5)), return_exceptions=True)
    assert [r for r in results if isinstance(r, Exception)] == []
    files = committed_files(settings)
    for i in range(5):
        path = f"projects/archive-lock-test/agents/Agent{i}/profile.json"
        assert path in files
        assert json.loads(show(settings, path))["task_description"] == f"Task {i}"
    assert git(settings, "log", "-1", "--format=%an <%ae>").strip() == "mcp-agent <mcp-agent@example.com>"


async def test_concurrent_message_bundle_writes(settings: Settings) -> None:
    archive = await ensure_archive(settings, "bundle-lock-test")

    async def write_bundle(i: int) -> None:
        await write_message_bundle(
            archive,
            message={"id": i, "subject": f"Subject {i}"},
            body_md=f"Body {i}",
            sender=f"Sender{i}",
            recipients=[f"Recipient{i}"],
        )

    results = await asyncio.gather(*(write_bundle(i) for i in range(10)), return_exceptions=True)
    assert [r for r in results if isinstance(r, Exception)] == []
    files = committed_files(settings)
    base = "projects/bundle-lock-test"
    for i in range(10):
        canonical = [f for f in files if f.startswith(f"{base}/messages/") and f.endswith(f"__subject-{i}__{i}.md")]
        assert len(canonical) == 1
        front = front_matter(settings, canonical[0])
        assert (front["id"], front["from"], front["to"], front["subject"]) == (
            i,
            f"Sender{i}",
            [f"Recipient{i}"],
            f"Subject {i}",
        )
        assert any(f.startswith(f"{base}/agents/Sender{i}/outbox/") for f in files)
        assert any(f.startswith(f"{base}/agents/Recipient{i}/inbox/") for f in files)
    assert len(git(settings, "log", "--format=%H").splitlines()) == 11  # initial commit + one per bundle


async def test_concurrent_message_read_write(settings: Settings) -> None:
    """Ten concurrent writers and five readers on the index raise no error."""
    index = Index(settings.index_path)
    index.ensure_schema()
    index.ensure_schema()  # idempotent
    with index.transaction() as conn:
        conn.execute(
            "INSERT INTO projects (id, slug, human_key, created_at) VALUES (1, :slug, :key, :now)",
            {"slug": "db-concurrent", "key": "/tmp/db-concurrent", "now": "2026-01-01T00:00:00+00:00"},
        )
    project_id = index.query("SELECT id FROM projects WHERE slug = :slug", {"slug": "db-concurrent"})[0][0]

    def write_message(i: int) -> None:
        with index.transaction() as tx:
            tx.execute(
                "INSERT INTO messages (id, project_id, subject, body_md, importance, ack_required, sender_id, "
                "created_ts) VALUES (:id, :pid, :subject, :body, 'normal', FALSE, 1, :now)",
                {
                    "id": i + 1,
                    "pid": project_id,
                    "subject": f"Msg {i}",
                    "body": f"Body {i}",
                    "now": f"2026-01-01T00:00:{i:02d}+00:00",
                },
            )

    def read_messages() -> int:
        return index.query("SELECT COUNT(*) FROM messages WHERE project_id = :pid", {"pid": project_id})[0][0]

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=15) as pool:  # all fifteen at once, each its own connection
        results = await asyncio.gather(
            *(loop.run_in_executor(pool, write_message, i) for i in range(10)),
            *(loop.run_in_executor(pool, read_messages) for _ in range(5)),
            return_exceptions=True,
        )
    assert [r for r in results if isinstance(r, Exception)] == []
    assert read_messages() == 10
    # the FTS table follows the messages table through its triggers
    hits = index.query("SELECT rowid FROM fts_messages WHERE fts_messages MATCH 'Msg'")
    assert len(hits) == 10
    assert index.query("PRAGMA journal_mode")[0][0] == "wal"
    assert {
        "projects",
        "agents",
        "messages",
        "message_recipients",
        "file_reservations",
        "agent_links",
    } <= index.tables()


def test_a_transaction_that_sqlite_already_ended_reports_the_real_error(tmp_path: Path) -> None:
    """When SQLite has ended the transaction itself (as after some COMMIT failures), the caller
    sees its own error, not "cannot rollback", and the connection's next batch works."""
    index = Index(tmp_path / "index.sqlite3")
    index.ensure_schema()
    with pytest.raises(ValueError, match="the real problem"), index.transaction() as conn:
        conn.execute("ROLLBACK")  # the transaction is gone before the block fails
        raise ValueError("the real problem")
    with index.transaction() as conn:
        conn.execute("INSERT INTO projects (id, slug, human_key, created_at) VALUES (1, 's', '/s', 'now')")
    assert [tuple(r) for r in index.query("SELECT id, slug FROM projects")] == [(1, "s")]
    index.close()
