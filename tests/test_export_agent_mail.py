"""``broker export-agent-mail``: the persisted state written back in MCP Agent Mail's layout
(reference §6): a database with its schema and value forms, and a normal Git repository with
its archive files (docs/migration.md, "Export")."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from fastmcp import Client, FastMCP
from helpers import Tools, drop_prefix, make_repo, make_settings
from persist_helpers import index_rows, run_worker
from test_attachments import png

from broker.config import Settings
from broker.errors import BrokerError
from broker.migration.exporter import export_agent_mail, redis_rows_reader
from broker.migration.reference import SCHEMA, TABLES
from broker.persistence.archive import Archive, ArchiveMessage
from broker.persistence.index import Batch, Index
from broker.server import build_server

pytestmark = pytest.mark.integration

WINDOW = str(uuid4())
OTHER = "/tmp/export-other"
OTHER_SLUG = "tmp-export-other"
REFERENCE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")
MESSAGE_FILE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ__[a-z0-9._-]+__(\d+)\.md$")
FRONT_KEYS = {"id", "thread_id", "project", "project_slug", "from", "to", "cc", "bcc", "subject", "importance"}
FRONT_KEYS |= {"ack_required", "created", "attachments"}


@pytest.fixture
async def broker(redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[Tools, Settings, FastMCP, Path]]:
    """A broker on the session's real Redis, with a project at a real Git work tree (for attachments)."""
    # a window identity for the process, and the product bus (gated)
    settings = make_settings(
        redis_url, tmp_path / "storage", MCP_AGENT_MAIL_WINDOW_ID=WINDOW, GIT_IDENTITY_ENABLED="true"
    )
    server = build_server(settings)
    repo = make_repo(tmp_path / "work" / "repo")
    (repo / "shots").mkdir()
    (repo / "shots" / "screen.png").write_bytes(png(300, 200, noisy=True))
    async with Client(server) as client:
        yield Tools(client), settings, server, repo
    await drop_prefix(server.store)  # type: ignore[attr-defined]


async def persisted_state(tools: Tools, settings: Settings, server: FastMCP, repo: Path) -> dict[str, Any]:
    """The state below persisted by the worker, plus a summary (made from the index)."""
    ids = await build_state(tools, repo)
    await run_worker(server, settings)
    await tools.call("summarize_recent", project_key=str(repo), agent_name="BlueLake")
    return ids


async def build_state(tools: Tools, repo: Path) -> dict[str, Any]:
    """Two projects; a cross-project link and message; CC, BCC, a thread with a reply and a
    topic; read and ack state; held and released reservations; a file attachment."""
    here = str(repo)
    await tools.project(here)
    await tools.project(OTHER)
    registered = [await tools.agent(name, project_key=here) for name in ("BlueLake", "GreenCastle", "alpha-one")]
    await tools.agent("RedFox", project_key=here, attachments_policy="file")
    await tools.agent("OrangeOwl", project_key=OTHER)
    windowed = await tools.agent(project_key=OTHER)  # no name: the window's identity
    await tools.call("ensure_product", name="shop")
    await tools.call("products_link", product_key="shop", project_key=here)

    async def send(sender: str, to: list[str], **extra: Any) -> int:
        result = await tools.send(sender, to, project_key=here, **extra)
        return int(result["deliveries"][0]["payload"]["id"])

    plan = await send(
        "BlueLake", ["GreenCastle"], cc=["RedFox"], bcc=["alpha-one"], subject="Plan: the export",
        body_md="We export the mailbox.\n- first the rows", thread_id="FEAT-1", topic="release",
        importance="high", ack_required=True,
    )  # fmt: skip
    reply = await tools.call(
        "reply_message", project_key=here, message_id=plan, sender_name="GreenCastle", body_md="Agreed."
    )
    shot = await send("RedFox", ["BlueLake"], subject="Screenshot", attachment_paths=["shots/screen.png"])
    await tools.call("mark_message_read", project_key=here, agent_name="RedFox", message_id=plan)
    await tools.call("acknowledge_message", project_key=here, agent_name="GreenCastle", message_id=plan)

    await tools.call("request_contact", project_key=here, from_agent="BlueLake", to_agent="OrangeOwl", to_project=OTHER)
    await tools.call(
        "respond_contact", project_key=OTHER, to_agent="OrangeOwl", from_agent="BlueLake", from_project=here,
        accept=True,
    )  # fmt: skip
    away = await send("BlueLake", [f"project:{OTHER_SLUG}#OrangeOwl"], subject="Across")

    held = await tools.call(
        "file_reservation_paths", project_key=here, agent_name="BlueLake", paths=["src/**"], reason="export work"
    )
    await tools.call(
        "file_reservation_paths", project_key=here, agent_name="GreenCastle", paths=["docs/*.md"], exclusive=False
    )
    await tools.call("release_file_reservations", project_key=here, agent_name="GreenCastle", paths=["docs/*.md"])
    return {
        "token": registered[0]["registration_token"],
        "window_name": windowed["name"],
        "plan": plan,
        "reply": int(reply["id"]),
        "shot": shot,
        "away": away,
        "held": held["granted"][0]["id"],
    }


async def export(settings: Settings, out: Path) -> Any:
    """The export as the command makes it, Redis-only tables included (off the test's loop)."""
    live = redis_rows_reader(settings, settings.redis_url)
    return await asyncio.to_thread(export_agent_mail, settings.index_url, settings.archive_path, out, live)


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def tree_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def front(text: str) -> dict[str, Any]:
    assert text.startswith("---json\n"), text[:40]
    return json.loads(text[len("---json\n") : text.index("\n---\n")])


def instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


async def test_export_writes_every_row_and_archive_file_in_the_reference_layout(
    broker: tuple[Tools, Settings, FastMCP, Path], tmp_path: Path
) -> None:
    tools, settings, server, repo = broker
    ids = await persisted_state(tools, settings, server, repo)
    out = tmp_path / "back"
    report = await export(settings, out)
    db = out / "storage.sqlite3"
    slug = rows(db, "SELECT slug FROM projects WHERE human_key = ?", (str(repo),))[0]["slug"]

    # the reference's schema, table by table and column by column
    reference = sqlite3.connect(":memory:")
    reference.executescript(SCHEMA)
    for table in TABLES:
        expected = reference.execute(f"PRAGMA table_info({table})").fetchall()
        assert sqlite3.connect(db).execute(f"PRAGMA table_info({table})").fetchall() == expected, table

    # every indexed row is there, with the same instants in the reference's naive UTC text
    for table, key in (
        ("projects", "id"), ("agents", "id"), ("messages", "id"), ("file_reservations", "id"),
        ("message_summaries", "id"), ("message_recipients", "message_id, agent_id"),
        ("agent_links", "a_agent_id, b_agent_id"),
    ):  # fmt: skip
        ours = index_rows(settings, f"SELECT * FROM {table} ORDER BY {key}")
        theirs = rows(db, f"SELECT * FROM {table} ORDER BY {key}")
        assert len(theirs) == len(ours) > 0, table
        assert report.rows[table] == len(ours)
        for mine, back in zip(ours, theirs, strict=True):
            for column, value in back.items():
                if column.endswith(("_ts", "_at")) and value is not None:
                    assert REFERENCE_TIME.match(value), (table, column, value)
                    assert instant(value) == instant(mine[column]), (table, column)
                elif column != "registration_token":
                    assert value == mine[column], (table, column)
    assert "agent_id" not in rows(db, "SELECT * FROM message_summaries")[0]

    # tokens: none in clear, no digest passed off as one
    assert {a["registration_token"] for a in rows(db, "SELECT registration_token FROM agents")} == {None}
    assert report.tokens_cleared == 6
    assert b"sha256:" not in db.read_bytes()

    plan = rows(db, "SELECT *, typeof(ack_required) AS t FROM messages WHERE id = ?", (ids["plan"],))[0]
    assert (plan["ack_required"], plan["t"], plan["topic"], plan["thread_id"]) == (1, "integer", "release", "FEAT-1")
    kinds = rows(
        db,
        "SELECT a.name, r.kind, r.read_ts, r.ack_ts FROM message_recipients r JOIN agents a ON a.id = r.agent_id "
        "WHERE r.message_id = ? ORDER BY a.name",
        (ids["plan"],),
    )
    assert [(k["name"], k["kind"], bool(k["read_ts"]), bool(k["ack_ts"])) for k in kinds] == [
        ("GreenCastle", "to", True, True),
        ("RedFox", "cc", True, False),
        ("alpha-one", "bcc", False, False),
    ]
    [reply] = rows(db, "SELECT thread_id, subject FROM messages WHERE id = ?", (ids["reply"],))
    assert reply == {"thread_id": "FEAT-1", "subject": "Re: Plan: the export"}
    [attachment] = json.loads(
        rows(db, "SELECT attachments FROM messages WHERE id = ?", (ids["shot"],))[0]["attachments"]
    )
    assert attachment["type"] == "file" and attachment["media_type"] == "image/webp"
    [away] = rows(
        db, "SELECT p.slug FROM messages m JOIN projects p ON p.id = m.project_id WHERE m.id = ?", (ids["away"],)
    )
    assert away["slug"] == OTHER_SLUG  # stored in the target project, as the reference does
    [link] = rows(
        db,
        "SELECT pa.slug AS a, pb.slug AS b, l.status FROM agent_links l JOIN projects pa ON pa.id = l.a_project_id "
        "JOIN projects pb ON pb.id = l.b_project_id",
    )
    assert link == {"a": slug, "b": OTHER_SLUG, "status": "approved"}
    reservations = rows(
        db, "SELECT id, path_pattern, exclusive, typeof(exclusive) AS t, released_ts FROM file_reservations"
    )
    assert {(r["path_pattern"], r["exclusive"], r["t"], r["released_ts"] is None) for r in reservations} == {
        ("src/**", 1, "integer", True),
        ("docs/*.md", 0, "integer", False),
    }
    # what the broker keeps only in Redis: the live window, the product and its link
    [window] = rows(db, "SELECT w.*, p.slug FROM window_identities w JOIN projects p ON p.id = w.project_id")
    assert (window["window_uuid"], window["display_name"], window["slug"]) == (WINDOW, ids["window_name"], OTHER_SLUG)
    assert all(REFERENCE_TIME.match(window[c]) for c in ("created_ts", "last_active_ts", "expires_ts"))
    [product] = rows(db, "SELECT * FROM products")
    assert product["name"] == "shop" and REFERENCE_TIME.match(product["created_at"])
    [product_link] = rows(db, "SELECT product_id, project_id, created_at FROM product_project_links")
    assert product_link == {
        "product_id": product["id"],
        "project_id": rows(db, "SELECT id FROM projects WHERE slug = ?", (slug,))[0]["id"],
        "created_at": product["created_at"],
    }
    assert (report.rows["window_identities"], report.rows["products"], report.rows["product_project_links"]) == (
        1,
        1,
        1,
    )
    # the reference's full-text search works on the exported rows (its triggers filled it)
    assert rows(db, "SELECT rowid FROM fts_messages WHERE fts_messages MATCH 'mailbox'") == [{"rowid": ids["plan"]}]

    # the archive: a normal repository, clean, on main, no remote into the broker's archive
    archive = out / "archive"
    assert git(archive, "rev-parse", "--is-bare-repository").strip() == "false"
    assert git(archive, "status", "--porcelain") == "" and git(archive, "remote") == ""
    assert git(archive, "branch", "--show-current").strip() == "main"
    assert git(archive, "rev-parse", "HEAD").strip() == report.commit
    files = tree_files(archive)
    assert files[".gitattributes"] == b"*.json text\n*.md text\n"
    base = f"projects/{slug}"
    profile = json.loads(files[f"{base}/agents/BlueLake/profile.json"])
    assert profile["name"] == "BlueLake" and not any("token" in key for key in profile)

    def copies(message_id: int) -> dict[str, bytes]:
        found = {}
        for path, content in files.items():
            match = MESSAGE_FILE.match(path.rsplit("/", 1)[-1])
            if match and int(match.group(1)) == message_id:
                found[path] = content
        return found

    plan_files = copies(ids["plan"])
    month = datetime.fromisoformat(
        index_rows(settings, "SELECT created_ts FROM messages WHERE id = :id", {"id": ids["plan"]})[0]["created_ts"]
    ).strftime("%Y/%m")
    name = next(p for p in plan_files if p.startswith(f"{base}/messages/")).rsplit("/", 1)[1]
    assert name.endswith(f"__plan-the-export__{ids['plan']}.md")
    assert set(plan_files) == {
        f"{base}/messages/{month}/{name}",
        f"{base}/agents/BlueLake/outbox/{month}/{name}",
        *(f"{base}/agents/{who}/inbox/{month}/{name}" for who in ("GreenCastle", "RedFox", "alpha-one")),
    }
    canonical = front(plan_files[f"{base}/messages/{month}/{name}"].decode())
    assert set(canonical) == FRONT_KEYS
    assert (canonical["from"], canonical["to"], canonical["cc"], canonical["project"]) == (
        "BlueLake", ["GreenCastle"], ["RedFox"], str(repo),
    )  # fmt: skip
    # BCC: named in the sender's copy and the BCC recipient's own copy only
    assert (
        canonical["bcc"] == []
        and front(plan_files[f"{base}/agents/GreenCastle/inbox/{month}/{name}"].decode())["bcc"] == []
    )
    assert front(plan_files[f"{base}/agents/BlueLake/outbox/{month}/{name}"].decode())["bcc"] == ["alpha-one"]
    assert front(plan_files[f"{base}/agents/alpha-one/inbox/{month}/{name}"].decode())["bcc"] == ["alpha-one"]
    assert (
        plan_files[f"{base}/messages/{month}/{name}"]
        .decode()
        .endswith("\n---\n\nWe export the mailbox.\n- first the rows\n")
    )

    digest = files[f"{base}/messages/threads/FEAT-1.md"].decode()
    assert digest.startswith("# Thread FEAT-1\n\n") and digest.count("[View canonical](") == 2
    away_files = copies(ids["away"])
    assert {p.split("/")[1] for p in away_files} == {OTHER_SLUG}
    assert any("/agents/OrangeOwl/inbox/" in p for p in away_files)
    assert front(next(iter(away_files.values())).decode())["from_project_slug"] == slug

    pattern = json.loads(files[f"{base}/file_reservations/{hashlib.sha1(b'src/**').hexdigest()}.json"])
    by_id = json.loads(files[f"{base}/file_reservations/id-{ids['held']}.json"])
    assert pattern == by_id and (by_id["agent"], by_id["path_pattern"], by_id["exclusive"]) == (
        "BlueLake",
        "src/**",
        True,
    )
    webp = next(p for p in files if p.startswith(f"{base}/attachments/") and p.endswith(".webp"))
    sha = webp.rsplit("/", 1)[1].removesuffix(".webp")
    assert webp == f"{base}/attachments/{sha[:2]}/{sha}.webp" and attachment["path"] == webp
    assert files[webp][:4] == b"RIFF" and files[webp][8:12] == b"WEBP"
    assert report.missing_files == []
    # drained: the archive's canonical messages are exactly the exported rows
    archived = {int(MESSAGE_FILE.match(p.rsplit("/", 1)[-1]).group(1)) for p in files if "/messages/2" in p}
    assert archived == {r["id"] for r in rows(db, "SELECT id FROM messages")}


async def test_two_exports_of_the_same_state_are_identical(
    broker: tuple[Tools, Settings, FastMCP, Path], tmp_path: Path
) -> None:
    tools, settings, server, repo = broker
    await persisted_state(tools, settings, server, repo)
    first, second = tmp_path / "one", tmp_path / "two"
    await export(settings, first)
    await export(settings, second)
    for table in TABLES:
        assert rows(first / "storage.sqlite3", f"SELECT * FROM {table}") == rows(
            second / "storage.sqlite3", f"SELECT * FROM {table}"
        ), table
    assert tree_files(first / "archive") == tree_files(second / "archive")
    assert git(first / "archive", "log", "--format=%H %s") == git(second / "archive", "log", "--format=%H %s")


async def test_new_tokens_are_minted_only_when_asked_and_listed_for_the_operator(
    broker: tuple[Tools, Settings, FastMCP, Path], tmp_path: Path
) -> None:
    tools, settings, server, repo = broker
    held = (await persisted_state(tools, settings, server, repo))["token"]
    out = tmp_path / "with-tokens"
    report = await asyncio.to_thread(
        export_agent_mail, settings.index_path, settings.archive_path, out, None, new_tokens=True
    )
    agents = rows(
        out / "storage.sqlite3",
        "SELECT p.slug, a.name, a.registration_token FROM agents a JOIN projects p ON p.id = a.project_id",
    )
    listed = json.loads((out / "registration-tokens.json").read_text())
    assert oct((out / "registration-tokens.json").stat().st_mode & 0o777) == "0o600"
    assert sorted((e["project_slug"], e["agent"], e["registration_token"]) for e in listed) == sorted(
        (a["slug"], a["name"], a["registration_token"]) for a in agents
    )
    tokens = [a["registration_token"] for a in agents]
    assert len(set(tokens)) == len(agents) == 6 and all(re.fullmatch(r"[A-Za-z0-9_-]{43}", t) for t in tokens)
    assert held and held not in tokens  # a new token, not the one the broker gave (which it never kept)
    assert "6 new one(s) minted" in "\n".join(report.lines())
    assert not (tmp_path / "plain").exists()
    await export(settings, tmp_path / "plain")
    assert not (tmp_path / "plain" / "registration-tokens.json").exists()


async def test_bad_targets_and_sources_are_refused_with_a_remedy(
    broker: tuple[Tools, Settings, FastMCP, Path], tmp_path: Path
) -> None:
    tools, settings, server, repo = broker
    await persisted_state(tools, settings, server, repo)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    with pytest.raises(BrokerError) as refused:
        export_agent_mail(settings.index_path, settings.archive_path, taken)
    assert refused.value.code == "EXPORT_TARGET_NOT_EMPTY" and "new or empty directory" in str(refused.value)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"] and (taken / "notes.txt").read_text() == "keep me"

    with pytest.raises(BrokerError) as refused:
        export_agent_mail(tmp_path / "nowhere.sqlite3", settings.archive_path, tmp_path / "a")
    assert refused.value.code == "INDEX_NOT_FOUND" and "STORAGE_ROOT" in str(refused.value)
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(BrokerError) as refused:
        export_agent_mail(garbage, settings.archive_path, tmp_path / "b")
    assert refused.value.code == "INDEX_UNREADABLE"
    with pytest.raises(BrokerError) as refused:
        export_agent_mail(settings.index_path, tmp_path / "no-archive", tmp_path / "c")
    assert refused.value.code == "ARCHIVE_NOT_FOUND"
    # the drain locks cannot be taken (here: a file where their directory goes)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / ".drain-locks").write_text("")
    with sqlite3.connect(settings.index_path) as live, sqlite3.connect(copy / "index.sqlite3") as backup:
        live.backup(backup)
    with pytest.raises(BrokerError) as refused:
        export_agent_mail(copy / "index.sqlite3", settings.archive_path, tmp_path / "e")
    assert refused.value.code == "EXPORT_LOCK_FAILED" and "as the user the broker runs as" in str(refused.value)
    dead = redis_rows_reader(settings, "redis://127.0.0.1:1/0")
    with pytest.raises(BrokerError) as refused:
        await asyncio.to_thread(export_agent_mail, settings.index_path, settings.archive_path, tmp_path / "d", dead)
    assert refused.value.code == "REDIS_UNREACHABLE" and "--skip-redis" in str(refused.value)
    # nothing half-written is left behind by a refused export
    assert (
        sorted(p.name for p in tmp_path.iterdir() if "export-" in p.name or p.name in ("a", "b", "c", "d", "e")) == []
    )


async def test_cli_exports_and_names_projects_whose_changes_are_not_persisted_yet(
    broker: tuple[Tools, Settings, FastMCP, Path], tmp_path: Path
) -> None:
    tools, settings, server, repo = broker
    await persisted_state(tools, settings, server, repo)
    late = await tools.send("BlueLake", ["GreenCastle"], project_key=str(repo), subject="Not drained yet")
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "STORAGE_ROOT": str(settings.storage_root),
    }
    out = tmp_path / "cli-out"
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", "export-agent-mail", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    slug = rows(out / "storage.sqlite3", "SELECT slug FROM projects WHERE human_key = ?", (str(repo),))[0]["slug"]
    assert f"changes not yet persisted in 1 project(s) ({slug})" in done.stderr
    assert "6 agent(s) exported without one" in done.stderr and "--new-tokens" in done.stderr
    late_id = late["deliveries"][0]["payload"]["id"]
    assert rows(out / "storage.sqlite3", "SELECT id FROM messages WHERE id = ?", (late_id,)) == []

    again = subprocess.run(
        [sys.executable, "-m", "broker.cli", "export-agent-mail", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 1 and "EXPORT_TARGET_NOT_EMPTY" in again.stderr

    bare = subprocess.run(
        [sys.executable, "-m", "broker.cli", "export-agent-mail", "--out", str(tmp_path / "bare"), "--skip-redis"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bare.returncode == 0 and "persistence backlog not checked (--skip-redis)" in bare.stderr
    assert rows(tmp_path / "bare" / "storage.sqlite3", "SELECT count(*) AS n FROM products") == [{"n": 0}]
    assert rows(out / "storage.sqlite3", "SELECT count(*) AS n FROM products") == [{"n": 1}]


async def test_an_export_started_during_a_batch_gets_all_of_it(
    broker: tuple[Tools, Settings, FastMCP, Path], tmp_path: Path
) -> None:
    """A batch commits to Git, then to SQLite, holding its project's drain lock: an export that
    starts in between waits, and shows the batch in both or (had it not waited) the file
    without its row."""
    tools, settings, server, repo = broker
    await persisted_state(tools, settings, server, repo)
    [project] = index_rows(
        settings, "SELECT id, slug, human_key FROM projects WHERE human_key = :key", {"key": str(repo)}
    )
    sender = index_rows(settings, "SELECT id FROM agents WHERE name = 'BlueLake'")[0]["id"]
    newest = index_rows(settings, "SELECT max(id) AS id FROM messages")[0]["id"]
    created = datetime.now(UTC).isoformat()
    message = ArchiveMessage(
        id=newest + 1, subject="Mid-batch", body_md="Written by a batch.", sender="BlueLake", created=created,
        to=["GreenCastle"],
    )  # fmt: skip
    row = {
        "id": message.id, "project_id": project["id"], "sender_id": sender, "thread_id": None, "topic": None,
        "subject": message.subject, "body_md": message.body_md, "importance": "normal", "ack_required": 0,
        "created_ts": created, "attachments": "[]",
    }  # fmt: skip
    holding = threading.Event()

    index = Index.from_settings(settings)

    def batch() -> None:
        with index.project_lock(project["slug"]):
            holding.set()
            Archive(settings.archive_path, project["slug"]).write_batch(
                messages=[(project["slug"], project["human_key"], message)]
            )
            time.sleep(0.5)  # between the Git commit and the SQLite transaction, as a worker may be
            index.write_batch(Batch(messages=[row]))

    writer = threading.Thread(target=batch)
    writer.start()
    await asyncio.to_thread(holding.wait, 10)
    out = tmp_path / "during"
    report = await export(settings, out)
    await asyncio.to_thread(writer.join, 10)
    index.close()

    exported = {r["id"] for r in rows(out / "storage.sqlite3", "SELECT id FROM messages")}
    files = tree_files(out / "archive")
    archived = {int(MESSAGE_FILE.match(p.rsplit("/", 1)[-1]).group(1)) for p in files if "/messages/2" in p}
    assert message.id in exported and archived == exported and report.missing_files == []
