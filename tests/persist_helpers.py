"""Helpers for the durability tests: run the persistence worker, read the archive and index."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from typing import Any

from fastmcp import FastMCP

from broker.config import Settings
from broker.index import Index
from workers.runner import PersistenceWorker


async def run_worker(server: FastMCP, settings: Settings) -> PersistenceWorker:
    """Run the persistence worker until its queue is empty (start-up reconcile included)."""
    worker = PersistenceWorker(settings, server.store.redis_url)  # type: ignore[attr-defined]
    await asyncio.to_thread(worker.run, burst=True)
    return worker


def index_rows(settings: Settings, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    index = Index(settings.index_path)
    try:
        return [dict(row) for row in index.query(sql, params)]
    finally:
        index.close()


def persisted_count(settings: Settings) -> int:
    """Messages in the index; 0 while the worker has created the file but not its schema."""
    try:
        return index_rows(settings, "SELECT count(*) AS n FROM messages")[0]["n"]
    except sqlite3.OperationalError:
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
