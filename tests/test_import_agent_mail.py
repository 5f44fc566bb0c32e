"""broker import-agent-mail: a mailbox in the reference's documented format (tests/import_scenario.py)
imported by the real command on a real redis-server, then read back through the tools: inboxes,
BCC, threads, search, reservations, contacts, read/ack state and tokens as the data says; a
second run changes nothing; a run killed with SIGKILL is finished by the next; --dry-run writes
nothing; a target holding other data under the mailbox's slugs is refused; refused rows listed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import import_scenario as scenario
import pytest
from fastmcp import Client
from helpers import Tools, drop_prefix, make_settings, snapshot
from process_helpers import BROKER, broker_env
from redis import Redis as SyncRedis
from reference_mailbox import build_many

from broker.config import Settings
from broker.server import build_server

BACKEND, FRONTEND = scenario.BACKEND, scenario.FRONTEND


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BROKER, "import-agent-mail", *args], env=_env(settings), capture_output=True, text=True, timeout=300
    )


def _env(settings: Settings) -> dict[str, str]:
    env = broker_env(settings.redis_url, settings.storage_root, AGENT_AUTH="open")
    env["REDIS_KEY_PREFIX"] = settings.redis_key_prefix
    if settings.database_url:  # the settings' index (PostgreSQL), not the SQLite file
        env["DATABASE_URL"] = settings.database_url
    return env


def source_args(box: Any) -> list[str]:
    return ["--database", str(box.database), "--archive", str(box.archive)]


def index_dump(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(settings.index_path)
    try:
        tables = ["projects", "agents", "messages", "message_recipients", "file_reservations", "agent_links"]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall() for t in tables}
    finally:
        conn.close()


def archive_tree(settings: Settings) -> str:
    """Every committed path with its blob id (content), at the archive's HEAD."""
    done = subprocess.run(
        ["git", "--git-dir", str(settings.archive_path), "ls-tree", "-r", "main"], capture_output=True, text=True
    )
    return done.stdout


async def redis_state(settings: Settings) -> dict[str, Any]:
    """The Redis keys under the settings' prefix, with the prefix taken out of each name."""
    server = build_server(settings)
    try:
        state = await snapshot(server.store)  # type: ignore[attr-defined]
    finally:
        await server.store.close()  # type: ignore[attr-defined]
    prefix = settings.redis_key_prefix
    return {key.replace(prefix, "<p>", 1): value for key, value in state.items()}


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(redis_url, tmp_path / "storage")


@pytest.fixture
async def tools(settings: Settings) -> AsyncIterator[Tools]:
    server = build_server(settings)
    async with Client(server) as client:
        yield Tools(client)
    await drop_prefix(server.store)  # type: ignore[attr-defined]


@pytest.fixture
def mailbox(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    return scenario.build(tmp_path / "reference")


async def test_import_shows_the_mailbox_through_the_tools(
    settings: Settings, tools: Tools, mailbox: tuple[Any, dict[str, Any]]
) -> None:
    box, ids = mailbox
    done = run_cli(settings, *source_args(box))
    assert done.returncode == 0, done.stderr
    assert "messages                  6 /      0 /        0" in done.stdout
    for (table, key), why in scenario.refused(ids).items():  # every refused row, with its reason
        assert any(line.startswith(f"  {table} {key}: ") and why in line for line in done.stdout.splitlines()), (
            table, key, done.stdout,
        )  # fmt: skip
    assert "not taken: 8 row(s):" in done.stdout

    # inboxes: newest first, ids kept, importance, ack, topic, attachments as stored
    green = await tools.inbox("GreenCastle", project_key=BACKEND, include_bodies=True)
    assert [m["id"] for m in green] == [ids["picture"], ids["kickoff"]]
    kickoff = green[1]
    assert (kickoff["subject"], kickoff["importance"], kickoff["ack_required"], kickoff["topic"]) == (
        "API kickoff", "high", True, "design",
    )  # fmt: skip
    assert kickoff["body_md"] == "Plan for the **orchid** endpoint." and kickoff["from"] == "BlueLake"
    assert green[0]["attachments"][0] == ids["picture_meta"] and green[0]["attachments"][1]["type"] == "inline"
    # BCC: worker_42 has it as bcc; nobody else's copy names worker_42
    assert [(m["id"], m["kind"]) for m in await tools.inbox("worker_42", project_key=BACKEND)] == [
        (ids["kickoff"], "bcc")
    ]
    # cross-project mail keeps its sender's project
    blue = await tools.inbox("BlueLake", project_key=BACKEND)
    assert [m["id"] for m in blue] == [ids["cross"], ids["reply"]]
    assert (blue[0]["from"], blue[0]["from_project"]) == ("PurpleBear", FRONTEND)
    assert await tools.inbox("BlueLake", project_key=BACKEND, topic="design") == [blue[1]]

    # read and ack state: first read/ack times stay the imported ones; unread stays unread
    at = ids["at"]
    read = await tools.call("mark_message_read", project_key=BACKEND, agent_name="alpha-one", message_id=ids["kickoff"])
    assert read["read_at"] == at[2].isoformat()
    acked = await tools.call("acknowledge_message", project_key=BACKEND, agent_name="GreenCastle",
                             message_id=ids["kickoff"])  # fmt: skip
    assert acked["acknowledged_at"] == at[1].isoformat()
    fresh = await tools.call(
        "mark_message_read", project_key=BACKEND, agent_name="worker_42", message_id=ids["kickoff"]
    )
    assert fresh["read_at"] > ids["now"].isoformat()

    # tokens: the reference's token authenticates its agent, another one does not
    found = await tools.call("search_messages", project_key=FRONTEND, query="zanzibar", agent_name="PurpleBear",
                             registration_token="purple-token")  # fmt: skip
    assert [(m["id"], m["subject"], m["from"], m["created_ts"]) for m in found] == [
        (ids["release"], "Release zanzibar", "OrangeFox", at[6].isoformat())
    ]
    text = await tools.error("search_messages", project_key=FRONTEND, query="zanzibar", agent_name="PurpleBear",
                             registration_token="orange-token")  # fmt: skip
    assert text.startswith("AUTHENTICATION_FAILED:")

    # threads: three messages, one from another project, and a reply joins the thread
    thread = await tools.call("summarize_thread", project_key=BACKEND, thread_id="FEAT-1", agent_name="BlueLake",
                              registration_token=scenario.TOKEN)  # fmt: skip
    assert thread["summary"]["total_messages"] == 3
    assert thread["summary"]["participants"] == ["BlueLake", "GreenCastle", "PurpleBear"]
    reply = await tools.call("reply_message", project_key=BACKEND, message_id=ids["kickoff"], sender_name="BlueLake",
                             body_md="shipped", sender_token=scenario.TOKEN)  # fmt: skip
    assert reply["thread_id"] == "FEAT-1" and reply["id"] > ids["bad_time"]  # counters start past the ids

    # reservations: only the held ones are live; released and expired ones are history
    live = json.loads((await tools.client.read_resource("resource://file_reservations/data-backend"))[0].text)
    assert [(r["id"], r["agent"], r["path_pattern"]) for r in live] == [(ids["held"], "BlueLake", "src/api/*.py")]
    conflict = await tools.call("file_reservation_paths", project_key=BACKEND, agent_name="GreenCastle",
                                paths=["src/api/users.py"])  # fmt: skip
    assert [c["holders"][0]["agent"] for c in conflict["conflicts"]] == ["BlueLake"]
    ended = await tools.client.read_resource("resource://file_reservations/data-backend?active_only=false")
    history = {r["id"]: r["released_ts"] for r in json.loads(ended[0].text)}
    assert history[ids["released"]] == at[9].isoformat() and ids["expired"] in history

    # contacts, in both directions and across projects
    contacts = await tools.call("list_contacts", project_key=BACKEND, agent_name="BlueLake")
    assert [(c["to"], c["to_project"], c["status"]) for c in contacts] == [("PurpleBear", FRONTEND, "approved")]
    pending = await tools.call("list_contacts", project_key=BACKEND, agent_name="GreenCastle")
    assert [(c["to"], c["status"]) for c in pending] == [("alpha-one", "pending")]

    # profiles: program, model, policies, retirement
    silver = await tools.call("whois", project_key=scenario.OPS, agent_name="SilverHawk", include_recent_commits=False)
    assert silver["retired_at"] == "2026-01-02T03:04:05+00:00"
    purple = await tools.call("whois", project_key=FRONTEND, agent_name="PurpleBear", include_recent_commits=False)
    assert (purple["program"], purple["model"]) == ("codex", "gpt-5")

    # the archive: the attachment file and the message copies, BCC only in its own copy
    meta = ids["picture_meta"]
    shown = subprocess.run(["git", "--git-dir", str(settings.archive_path), "show", f"main:{meta['path']}"],
                           capture_output=True, check=True)  # fmt: skip
    assert shown.stdout == scenario.PICTURE
    tree = archive_tree(settings)
    assert "projects/data-backend/agents/worker_42/inbox/" in tree and "messages/threads/FEAT-1.md" in tree


async def test_a_second_run_changes_nothing(settings: Settings, mailbox: tuple[Any, dict[str, Any]]) -> None:
    box, _ = mailbox
    assert run_cli(settings, *source_args(box)).returncode == 0
    before = (index_dump(settings), archive_tree(settings), await redis_state(settings))
    again = run_cli(settings, *source_args(box))
    assert again.returncode == 0, again.stderr
    assert "messages                  0 /      0 /        6" in again.stdout
    assert "archive: 0 commit(s)" in again.stdout and "redis: 0 project(s) rebuilt" in again.stdout
    assert (index_dump(settings), archive_tree(settings), await redis_state(settings)) == before


async def test_dry_run_writes_nothing(settings: Settings, mailbox: tuple[Any, dict[str, Any]]) -> None:
    box, _ = mailbox
    done = run_cli(settings, *source_args(box), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would import" in done.stdout and "messages                  6 /      0 /        0" in done.stdout
    assert "not taken: 8 row(s):" in done.stdout
    assert not settings.index_path.exists() and not settings.archive_path.exists()
    assert await redis_state(settings) == {}


def _started(step: str, settings: Settings, client: SyncRedis) -> bool:
    """Whether the import under ``settings`` has begun ``step``."""
    if step == "index":
        return settings.index_path.exists()
    if step == "archive":
        return (settings.archive_path / "HEAD").exists()
    return next(client.scan_iter(match=f"{settings.redis_key_prefix}:*", count=1000), None) is not None


async def test_a_killed_import_is_finished_by_the_next_run(redis_url: str, tmp_path: Path) -> None:
    box = build_many(tmp_path / "reference", messages=4000)
    whole = make_settings(redis_url, tmp_path / "whole")
    assert run_cli(whole, *source_args(box)).returncode == 0
    expected = (index_dump(whole), await redis_state(whole))
    client = SyncRedis.from_url(redis_url)
    for step in ("index", "archive", "redis"):  # SIGKILL as soon as the import reaches each step
        cut = make_settings(redis_url, tmp_path / f"cut-{step}")
        proc = subprocess.Popen(
            [BROKER, "import-agent-mail", *source_args(box)], env=_env(cut), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not _started(step, cut, client) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, f"the import ended before the {step} step began"
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its archive writer, at once
        proc.wait()
        done = run_cli(cut, *source_args(box))
        assert done.returncode == 0, done.stderr
        assert (index_dump(cut), await redis_state(cut)) == expected, step
        assert archive_files(cut) == archive_files(whole), step
    client.close()


def archive_files(settings: Settings) -> list[str]:
    """Committed paths with their content ids."""
    return sorted(archive_tree(settings).splitlines())


async def test_a_slug_the_target_holds_for_another_project_is_refused(
    settings: Settings, tools: Tools, mailbox: tuple[Any, dict[str, Any]]
) -> None:
    box, _ = mailbox
    await tools.project("/data/Backend")  # slug data-backend, another human key
    done = run_cli(settings, *source_args(box))
    assert done.returncode == 1
    assert "IMPORT_CONFLICT" in done.stderr and "'data-backend'" in done.stderr and "hard_delete_project" in done.stderr
    assert not settings.index_path.exists()  # nothing written
    assert "NOT_FOUND" in await tools.error("fetch_inbox", project_key=FRONTEND, agent_name="PurpleBear")


async def test_a_reimport_takes_what_changed_in_the_mailbox(
    settings: Settings, tools: Tools, mailbox: tuple[Any, dict[str, Any]]
) -> None:
    box, ids = mailbox
    assert run_cli(settings, *source_args(box)).returncode == 0
    assert await tools.inbox("worker_42", project_key=BACKEND)  # unread so far
    # meanwhile, in the reference: worker_42 read the kickoff and BlueLake released its reservation
    read_at = ids["now"].replace(microsecond=0)
    conn = sqlite3.connect(box.database)
    with conn:
        conn.execute(
            "UPDATE message_recipients SET read_ts = ? WHERE message_id = ? AND agent_id = ?",
            (read_at.strftime("%Y-%m-%d %H:%M:%S.%f"), ids["kickoff"], ids["worker"]),
        )
        conn.execute(
            "UPDATE file_reservations SET released_ts = ? WHERE id = ?",
            (read_at.strftime("%Y-%m-%d %H:%M:%S.%f"), ids["held"]),
        )
    conn.close()
    done = run_cli(settings, *source_args(box))
    assert done.returncode == 0, done.stderr
    assert "recipients                0 /      1 /        7" in done.stdout
    assert "reservations              0 /      1 /        3" in done.stdout
    assert "redis: 1 project(s) rebuilt" in done.stdout  # data-backend only
    again = await tools.call("mark_message_read", project_key=BACKEND, agent_name="worker_42",
                             message_id=ids["kickoff"])  # fmt: skip
    assert again["read_at"] == read_at.isoformat()
    live = json.loads((await tools.client.read_resource("resource://file_reservations/data-backend"))[0].text)
    assert live == []
