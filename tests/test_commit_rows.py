"""Each message's archive commit is kept in the index (``message_commits``, migration 3), so the
mailbox resources show ``commit`` fields without the Git archive: the rows equal what Git says,
on SQLite and on PostgreSQL; a batch replayed after its commit landed keeps the first commit; a
message indexed before the table existed falls back to Git where the archive is, else shows
None; a deleted message takes its row with it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import FastMCP
from helpers import PROJECT, Tools, make_settings
from index_helpers import throwaway_database
from persist_helpers import index_rows, run_worker

from broker.config import Settings
from broker.persistence.archive import Archive, ArchiveMessage
from broker.persistence.commit_rows import backfill, batch_rows, read_rows
from broker.persistence.commits import message_commits
from broker.persistence.index import Index

SLUG = "tmp-concurrent-test"
Q = f"?project={PROJECT}"


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield make_settings(backend, tmp_path)
        return
    with throwaway_database() as url:
        yield make_settings(backend, tmp_path, DATABASE_URL=url)


async def read(tools: Tools, uri: str) -> Any:
    contents = await tools.client.read_resource(uri)
    return json.loads(contents[0].text)


def items_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": m["id"], "subject": m["subject"], "created_ts": m["created_ts"]} for m in messages]


async def send_some(tools: Tools) -> None:
    await tools.send("BlueLake", ["GreenCastle"], subject="Plan", body_md="line one\nline two")
    await tools.send("BlueLake", ["GreenCastle"], bcc=["alpha-one"], subject="Quiet", thread_id="T-1")
    await tools.send("alpha-one", ["GreenCastle"], subject="Reply", thread_id="T-1", body_md="x\n" * 40)


async def test_index_rows_equal_what_git_says(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings, tmp_path: Path
) -> None:
    await send_some(tools)
    await run_worker(server, settings)
    later = await tools.send("BlueLake", ["GreenCastle"], subject="Not persisted yet")

    detailed = await read(tools, f"resource://mailbox-with-commits/GreenCastle{Q}&limit=1000")
    basic = await read(tools, f"resource://mailbox/GreenCastle{Q}")
    persisted = detailed["messages"][1:]
    from_git = message_commits(settings.archive_path, SLUG, items_of(persisted), detailed=True)
    assert len(from_git) == 3
    assert {m["id"]: m["commit"] for m in persisted} == from_git
    rows = index_rows(settings, "SELECT message_id FROM message_commits")
    assert sorted(r["message_id"] for r in rows) == sorted(from_git)
    assert detailed["messages"][0]["id"] == later["deliveries"][0]["payload"]["id"]
    assert detailed["messages"][0]["commit"] is None

    # the broker's host loses the archive: every commit field still answers, from the index
    shutil.move(settings.archive_path, tmp_path / "archive-elsewhere")
    assert await read(tools, f"resource://mailbox-with-commits/GreenCastle{Q}&limit=1000") == detailed
    assert await read(tools, f"resource://mailbox/GreenCastle{Q}") == basic
    outbox = await read(tools, f"resource://outbox/BlueLake{Q}")
    assert [m["commit"] for m in outbox["messages"]] == [None] + [
        {k: from_git[m["id"]][k] for k in ("hexsha", "summary", "authored_ts")} for m in outbox["messages"][1:]
    ]


async def test_an_older_index_falls_back_to_git_where_the_archive_is(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings, tmp_path: Path
) -> None:
    await send_some(tools)
    await run_worker(server, settings)
    expected = await read(tools, f"resource://mailbox-with-commits/GreenCastle{Q}")
    index = Index.from_settings(settings)
    with index.transaction() as conn:  # what an index written before migration 3 holds
        conn.execute("DELETE FROM message_commits")
    index.close()

    assert await read(tools, f"resource://mailbox-with-commits/GreenCastle{Q}") == expected
    shutil.move(settings.archive_path, tmp_path / "archive-elsewhere")
    gone = await read(tools, f"resource://mailbox-with-commits/GreenCastle{Q}")
    assert [m["commit"] for m in gone["messages"]] == [None, None, None]
    assert [m["id"] for m in gone["messages"]] == [m["id"] for m in expected["messages"]]


def test_a_replayed_batch_keeps_the_commit_that_added_the_file(settings: Settings) -> None:
    archive = Archive(settings.archive_path, "", staging=None)
    messages = [
        (
            SLUG,
            PROJECT,
            ArchiveMessage(
                id=n,
                subject=f"S{n}",
                body_md=f"body {n}\n" * n,
                sender="BlueLake",
                created=f"2026-01-0{n}T10:00:00+00:00",
                to=["GreenCastle"],
            ),
        )
        for n in (1, 2, 3)
    ]
    first = archive.write_batch_detailed(messages=messages[:2])
    rows = batch_rows(archive.root, SLUG, first, [m for _, _, m in messages[:2]])
    assert [r["hexsha"] for r in rows] == [first.sha[:12]] * 2  # type: ignore[index]

    # the index transaction of that batch was lost: the replay adds message 3, and reads 1 and 2 from Git
    again = archive.write_batch_detailed(messages=messages)
    replayed = batch_rows(archive.root, SLUG, again, [m for _, _, m in messages])
    assert {r["message_id"]: r for r in replayed if r["message_id"] != 3} == {r["message_id"]: r for r in rows}
    assert next(r for r in replayed if r["message_id"] == 3)["hexsha"] == again.sha[:12]  # type: ignore[index]
    nothing_new = archive.write_batch_detailed(messages=messages)
    assert nothing_new.sha is None
    assert sorted(batch_rows(archive.root, SLUG, nothing_new, [m for _, _, m in messages]), key=str) == sorted(
        replayed, key=str
    )

    index = Index.from_settings(settings)
    index.ensure_schema()
    with index.transaction() as conn:  # the index keeps the first row it was given
        for row in replayed:
            conn.execute("INSERT INTO message_commits (message_id, hexsha, summary, authored_ts, insertions, "
                         "deletions, excerpt) VALUES (:message_id, :hexsha, :summary, :authored_ts, :insertions, "
                         ":deletions, :excerpt) ON CONFLICT (message_id) DO NOTHING", row)  # fmt: skip
    items = [{"id": m.id, "subject": m.subject, "created_ts": m.created} for _, _, m in messages]
    assert read_rows(index, [1, 2, 3], detailed=True) == message_commits(archive.root, SLUG, items, detailed=True)
    index.close()


async def test_a_deleted_message_takes_its_commit_row_with_it(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    await send_some(tools)
    await run_worker(server, settings)
    index = Index.from_settings(settings)
    victim = index_rows(settings, "SELECT min(id) AS id FROM messages")[0]["id"]
    with index.transaction() as conn:
        conn.execute("DELETE FROM message_recipients WHERE message_id = :id", {"id": victim})
        conn.execute("DELETE FROM messages WHERE id = :id", {"id": victim})
    index.close()
    left = [r["message_id"] for r in index_rows(settings, "SELECT message_id FROM message_commits")]
    assert victim not in left and len(left) == 2


async def test_whois_lists_the_commits_that_carried_mail_without_the_archive(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings, tmp_path: Path
) -> None:
    await send_some(tools)
    await run_worker(server, settings)
    await tools.send("GreenCastle", ["BlueLake"], subject="Second batch")
    await run_worker(server, settings)
    with_archive = (await tools.call("whois", project_key=PROJECT, agent_name="BlueLake", commit_limit=50))[
        "recent_commits"
    ]
    mail = {row["hexsha"] for row in index_rows(settings, "SELECT hexsha FROM message_commits")}
    assert len(mail) == 2 and len(with_archive) > 2  # the first commits made the archive and profiles

    shutil.move(settings.archive_path, tmp_path / "archive-elsewhere")
    without = await tools.call("whois", project_key=PROJECT, agent_name="BlueLake", commit_limit=50)
    assert without["recent_commits"] == [c for c in with_archive if c["hexsha"] in mail]
    one = await tools.call("whois", project_key=PROJECT, agent_name="BlueLake", commit_limit=1)
    assert one["recent_commits"] == without["recent_commits"][:1]


async def test_backfill_gives_an_older_index_its_commit_rows(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings, tmp_path: Path
) -> None:
    await send_some(tools)
    await run_worker(server, settings)
    written = index_rows(settings, "SELECT * FROM message_commits ORDER BY message_id")
    index = Index.from_settings(settings)
    with index.transaction() as conn:  # an index written before migration 3
        conn.execute("DELETE FROM message_commits")
    assert backfill(index, settings.archive_path, chunk=2) == 3
    assert backfill(index, settings.archive_path) == 0  # nothing left to give
    index.close()
    assert index_rows(settings, "SELECT * FROM message_commits ORDER BY message_id") == written
