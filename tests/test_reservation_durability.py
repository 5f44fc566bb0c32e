"""File reservations reach the SQLite index and the Git archive through the persistence worker,
and `broker rehydrate` puts the live ones back (on fakeredis and a real Redis)."""

from __future__ import annotations

import json
from typing import Any

from fastmcp import FastMCP
from helpers import PROJECT, Tools
from persist_helpers import SLUG, committed_files, hold_some, index_rows, listing, reserve, run_worker, show

from broker.config import Settings
from broker.lifecycle.rehydrate import rehydrate_all


async def test_reservations_reach_sqlite_and_git(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    ids = await hold_some(tools)
    shown = {r["id"]: r for r in await listing(tools, active_only=False)}
    await run_worker(server, settings)

    rows = index_rows(
        settings,
        "SELECT r.*, a.name AS agent FROM file_reservations r JOIN agents a ON a.id = r.agent_id ORDER BY r.id",
    )
    assert [r["id"] for r in rows] == sorted(ids.values())
    for row in rows:
        expected = shown[row["id"]]
        assert row["agent"] == expected["agent"] and row["path_pattern"] == expected["path_pattern"]
        assert bool(row["exclusive"]) == expected["exclusive"] and row["reason"] == expected["reason"]
        assert row["created_ts"] == expected["created_ts"] and row["expires_ts"] == expected["expires_ts"]
        assert row["released_ts"] == expected["released_ts"]
    assert next(r for r in rows if r["id"] == ids["released"])["released_ts"] is not None

    files = committed_files(settings)
    record = json.loads(show(settings, f"projects/{SLUG}/file_reservations/id-{ids['src']}.json"))
    assert record["project"] == PROJECT and record["agent"] == "BlueLake" and record["path_pattern"] == "src/**"
    assert record["expires_ts"] == shown[ids["src"]]["expires_ts"] and "released_ts" not in record
    released = json.loads(show(settings, f"projects/{SLUG}/file_reservations/id-{ids['released']}.json"))
    assert released["released_ts"] == shown[ids["released"]]["released_ts"]
    assert sum(f.startswith(f"projects/{SLUG}/file_reservations/id-") for f in files) == 4


async def test_rehydrate_restores_live_reservations(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    await hold_some(tools)
    before = await listing(tools)
    conflicts_before = (await reserve(tools, "alpha-one", ["src/app.py", "docs/a.md", "tool://build"]))["conflicts"]
    await tools.call("release_file_reservations", project_key=PROJECT, agent_name="alpha-one")
    await run_worker(server, settings)

    store = server.store  # type: ignore[attr-defined]
    await store.client().delete(*[key async for key in store.client().scan_iter(match=f"{store.keys.prefix}:*")])
    report = await rehydrate_all(settings, store.redis_url)
    assert report.reservations == 3

    after = await listing(tools)
    for a, b in zip(after, before, strict=True):
        assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    again = (await reserve(tools, "alpha-one", ["src/app.py", "docs/a.md", "tool://build"]))["conflicts"]
    assert again == conflicts_before
    # the holder can still renew and release what it held, and new ids do not collide
    renewed = await tools.call("renew_file_reservations", project_key=PROJECT, agent_name="BlueLake")
    assert renewed["renewed"] == 2
    fresh = await reserve(tools, "GreenCastle", ["new.py"])
    assert fresh["granted"][0]["id"] > max(r["id"] for r in before)
