"""The persistence summary behind health_check and readiness: pending depth and oldest age,
dead letters, and a bounded number of projects examined (never the whole keyspace)."""

from __future__ import annotations

import time
from typing import Any

from fastmcp import FastMCP
from helpers import Tools

from broker.config import Settings
from broker.persistence.state import persistence_state, readiness_problems


async def test_pending_age_dead_letters_and_the_project_cap(tools: Tools, server: FastMCP, settings: Settings) -> None:
    store = server.store  # type: ignore[attr-defined]
    for path in ("/srv/a", "/srv/b", "/srv/c"):
        await tools.project(path)
    await tools.agent("BlueLake", project_key="/srv/b")
    await tools.agent("GreenCastle", project_key="/srv/b")
    await tools.send("BlueLake", ["GreenCastle"], project_key="/srv/b")
    # No worker runs here: the send waits in srv-b's pending set. Age it by a minute, and
    # dead-letter two entries of srv-c (the dead-letter code's ZSET, read as a count).
    minute_ago = int(time.time() * 1000) - 60_000
    pending = await store.client().zrange(store.keys.pending("srv-b"), 0, -1)
    await store.client().zadd(store.keys.pending("srv-b"), dict.fromkeys(pending, minute_ago))
    await store.client().zadd(store.keys.dead_letters("srv-c"), {"msg:1": minute_ago, "msg:2": minute_ago})

    state: dict[str, Any] = await persistence_state(store, settings)
    assert state["projects_total"] == state["projects_examined"] == 3
    assert state["pending"] >= len(pending) >= 1
    assert state["oldest_pending_project"] == "srv-b"
    assert 59 < state["oldest_pending_age_seconds"] < 120
    assert state["dead_letters"] == 2
    assert (state["workers_alive"], state["workers"], state["mode"]) == (0, [], "inprocess")

    # Readiness: off by default; each setting fails it for its own reason.
    assert readiness_problems(state, settings) == []
    strict = settings.model_copy(
        update={"readiness_max_persist_lag_seconds": 30.0, "readiness_require_persist_worker": True}
    )
    problems = readiness_problems(state, strict)
    assert len(problems) == 2
    assert problems[0].startswith(f"no persistence worker is alive for queue {store.keys.persist_queue}")
    assert problems[1].startswith("persistence lags: the oldest pending change (srv-b) is 6")

    # A cap below the number of projects: only that many are read, and the total says so.
    capped = await persistence_state(store, settings.model_copy(update={"health_max_projects": 2}))
    assert (capped["projects_examined"], capped["projects_total"], capped["projects_cap"]) == (2, 3, 2)

    # A directory too big for one HSCAN reply (a hashtable, not a listpack) is read in slices
    # up to the cap, each project once.
    await store.client().hset(store.keys.projects, mapping={f"extra-{i}": f"/srv/extra-{i}" for i in range(300)})
    sliced = await persistence_state(store, settings.model_copy(update={"health_max_projects": 250}))
    assert (sliced["projects_examined"], sliced["projects_total"]) == (250, 303)
