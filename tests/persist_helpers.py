"""Helpers for the durability tests: run the persistence worker, read the archive and index."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

from fastmcp import FastMCP
from helpers import PROJECT, Tools

from broker.config import Settings
from broker.persistence.index import Index
from workers.runner import PersistenceWorker


async def run_worker(server: FastMCP, settings: Settings) -> PersistenceWorker:
    """Run the persistence worker until its queue is empty (start-up reconcile included)."""
    worker = PersistenceWorker(settings, server.store.redis_url)  # type: ignore[attr-defined]
    await asyncio.to_thread(worker.run, burst=True)
    return worker


def index_rows(settings: Settings, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows of one query on the index ``settings`` name (SQLite or PostgreSQL), as dicts."""
    index = Index.from_settings(settings)
    try:
        return [dict(row) for row in index.query(sql, params)]
    finally:
        index.close()


def persisted_count(settings: Settings) -> int:
    """Messages in the index; 0 while the worker has created the file but not its schema."""
    try:
        return index_rows(settings, "SELECT count(*) AS n FROM messages")[0]["n"]
    except Exception as exc:  # no such table yet (sqlite3 / psycopg say it each their way)
        if "messages" not in str(exc):
            raise
        return 0


def git(settings: Settings, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(settings.archive_path), *args], check=True, capture_output=True, text=True
    ).stdout


def committed_files(settings: Settings) -> list[str]:
    """Every path in the archive's HEAD commit."""
    return git(settings, "ls-tree", "-r", "--name-only", "HEAD").splitlines()


def show(settings: Settings, path: str) -> str:
    """A file's committed text."""
    return git(settings, "show", f"HEAD:{path}")


def front_matter(settings: Settings, path: str) -> dict[str, Any]:
    text = show(settings, path)
    assert text.startswith("---json\n"), text[:40]
    return json.loads(text[len("---json\n") : text.index("\n---\n")])


# -- file reservations (what rehydrate must bring back) -----------------------------------
SLUG = "tmp-concurrent-test"
CORE = ("id", "agent", "path_pattern", "exclusive", "reason", "created_ts", "expires_ts", "released_ts")


async def reserve(tools: Tools, agent: str, paths: list[str], **extra: Any) -> dict[str, Any]:
    return await tools.call("file_reservation_paths", project_key=PROJECT, agent_name=agent, paths=paths, **extra)


async def listing(tools: Tools, active_only: bool = True) -> list[dict[str, Any]]:
    query = "" if active_only else "?active_only=false"
    rows = json.loads((await tools.client.read_resource(f"resource://file_reservations/{SLUG}{query}"))[0].text)
    return [{k: r[k] for k in (*CORE, "last_agent_activity_ts", "last_mail_activity_ts")} for r in rows]


async def hold_some(tools: Tools) -> dict[str, int]:
    """BlueLake holds src/ exclusively (renewed), GreenCastle shares docs/**, alpha-one released one;
    GreenCastle has read mail (its latest mail activity) after BlueLake's last send."""
    sent = await tools.send("BlueLake", ["GreenCastle"])
    message_id = sent["deliveries"][0]["payload"]["id"]
    await tools.call("acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=message_id)
    held = await reserve(tools, "BlueLake", ["src/", "tool://build"], reason="FEAT-1")
    await tools.call("renew_file_reservations", project_key=PROJECT, agent_name="BlueLake", extend_seconds=600)
    shared = await reserve(tools, "GreenCastle", ["docs/**"], exclusive=False)
    gone = await reserve(tools, "alpha-one", ["lib/x.py"])
    await tools.call("release_file_reservations", project_key=PROJECT, agent_name="alpha-one")
    return {
        "src": held["granted"][0]["id"],
        "tool": held["granted"][1]["id"],
        "docs": shared["granted"][0]["id"],
        "released": gone["granted"][0]["id"],
    }


async def mailbox_state(tools: Tools) -> dict[str, Any]:
    """Everything a user reads back: inboxes (all filters), topics, profiles."""
    state: dict[str, Any] = {}
    for agent in AGENTS:
        state[f"inbox:{agent}"] = await tools.inbox(agent, include_bodies=True, limit=100)
        state[f"urgent:{agent}"] = await tools.inbox(agent, urgent_only=True, limit=100)
        state[f"topic:{agent}"] = await tools.inbox(agent, topic="build", limit=100)
        state[f"fetch_topic:{agent}"] = await tools.call(
            "fetch_topic", project_key=PROJECT, topic_name="build", agent_name=agent
        )
        state[f"whois:{agent}"] = await tools.call(
            "whois", project_key=PROJECT, agent_name=agent, include_recent_commits=False
        )
    newest = state["inbox:GreenCastle"][0]["created_ts"]
    state["since"] = await tools.inbox("GreenCastle", since_ts=state["inbox:GreenCastle"][3]["created_ts"])
    assert state["since"] and all(item["created_ts"] <= newest for item in state["since"])
    return state


async def write_mail(tools: Tools) -> dict[str, Any]:
    ids = []
    for i in range(6):
        sent = await tools.send(
            AGENTS[i % 3],
            [AGENTS[(i + 1) % 3]],
            cc=[AGENTS[(i + 2) % 3]] if i % 2 else None,
            subject=f"Note {i}",
            body_md=("long " * 600) if i == 4 else f"body {i}",
            importance="urgent" if i == 1 else "normal",
            topic="build" if i in (2, 3) else None,
            thread_id="FEAT-7" if i < 3 else None,
            ack_required=i == 0,
        )
        ids.append(sent["deliveries"][0]["payload"]["id"])
    await tools.send("BlueLake", ["GreenCastle"], bcc=["alpha-one"], subject="bcc")
    read = await tools.call("mark_message_read", project_key=PROJECT, agent_name="alpha-one", message_id=ids[1])
    acked = await tools.call("acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=ids[0])
    return {"ids": ids, "read": read, "acked": acked}


AGENTS = ("BlueLake", "GreenCastle", "alpha-one")
