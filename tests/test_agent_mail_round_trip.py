"""Export, then import the export: the broker a team would come back to shows the same mail,
threads, search results, reservations and contacts, and exporting it again gives the same
reference mailbox (docs/migration.md). The state is built through the tools and persisted by the
real worker (tests/test_export_agent_mail.py); the import runs as ``broker import-agent-mail`` does."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from helpers import Tools, drop_prefix, make_settings
from test_export_agent_mail import OTHER, broker, export, persisted_state

from broker.config import Settings
from broker.migration.importer import run_import
from broker.migration.reference import TABLES
from broker.server import build_server

pytestmark = pytest.mark.integration
__all__ = ["broker"]  # the fixture, shared with the export tests

# What the import does not take, because the broker has no table for it (docs/migration.md,
# "Import"): window identities register again, products are linked again, and summaries are
# computed again. Everything else must come back row for row.
NOT_IMPORTED = {"window_identities", "products", "product_project_links", "message_summaries"}
AGENTS = {"here": ("BlueLake", "GreenCastle", "alpha-one", "RedFox"), "other": ("OrangeOwl",)}


def database_rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in TABLES if t not in NOT_IMPORTED}
    finally:
        conn.close()


def archive_files(repo: Path) -> dict[str, Any]:
    """Every file of the exported archive's working tree: its content, or for a profile its JSON
    without ``last_active_ts``. A profile file is rewritten when the profile changes, not on every
    call, so its activity is as of then; the import writes each profile from the index's row,
    which holds the latest activity."""
    files: dict[str, Any] = {}
    listed = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True, check=True)
    for rel in listed.stdout.splitlines():
        content = (repo / rel).read_bytes()
        if rel.endswith("/profile.json"):
            profile = json.loads(content)
            profile.pop("last_active_ts")
            files[rel] = profile
        else:
            files[rel] = content
    return files


async def views(tools: Tools, here: str) -> dict[str, Any]:
    """What agents see: every inbox with bodies and read/ack state, a search, the thread, the
    reservations and the contacts."""
    seen: dict[str, Any] = {}
    for project, names in (("here", AGENTS["here"]), ("other", AGENTS["other"])):
        key = here if project == "here" else OTHER
        for name in names:
            seen[f"inbox {name}"] = await tools.call(
                "fetch_inbox", project_key=key, agent_name=name, include_bodies=True, limit=100
            )
            seen[f"contacts {name}"] = await tools.call("list_contacts", project_key=key, agent_name=name)
    seen["search"] = await tools.call("search_messages", project_key=here, query="export", agent_name="BlueLake")
    seen["thread"] = await tools.call(
        "summarize_thread", project_key=here, thread_id="FEAT-1", agent_name="BlueLake", include_examples=True
    )
    slug = (await tools.call("ensure_project", human_key=here))["slug"]
    listed = await tools.client.read_resource(f"resource://file_reservations/{slug}?active_only=true")
    seen["reservations"] = json.loads(listed[0].text)
    return seen


async def imported_broker(settings: Settings, out: Path) -> FastMCP:
    """A fresh broker (own storage, own key prefix) with the export imported into it."""
    report = await asyncio.to_thread(run_import, settings, settings.redis_url, out / "storage.sqlite3", out / "archive")
    assert [problem.line() for problem in report.problems if problem.table not in NOT_IMPORTED] == []
    return build_server(settings)


async def test_an_exported_mailbox_imports_back_to_the_same_broker(
    broker: tuple[Tools, Settings, FastMCP, Path], redis_url: str, tmp_path: Path
) -> None:
    tools, settings, _server, repo = broker
    await persisted_state(tools, settings, _server, repo)
    first = tmp_path / "first-export"
    await export(settings, first)
    before = await views(tools, str(repo))

    target = make_settings(redis_url, tmp_path / "target")
    server = await imported_broker(target, first)
    try:
        async with Client(server) as client:
            after = await views(Tools(client), str(repo))
        second = tmp_path / "second-export"
        await export(target, second)
    finally:
        await drop_prefix(server.store)  # type: ignore[attr-defined]

    assert after == before
    assert database_rows(second / "storage.sqlite3") == database_rows(first / "storage.sqlite3")
    assert archive_files(second / "archive") == archive_files(first / "archive")
