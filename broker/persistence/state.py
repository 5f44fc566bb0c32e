"""How persistence is doing, for health_check, /health/readiness, the start-up lines and metrics.

Bounded: broker/store/commands/persist_state.py reads at most HEALTH_MAX_PROJECTS projects (from the
projects directory HASH, never a keyspace SCAN) and the workers of rq's registry set of the drain
queue, in two or three round trips. Per project it reads the pending and in-flight sets' sizes
and oldest scores, and the dead letters (``Keys.dead_letters``, a ZSET written by
broker/persistence/dead_letters.py).

A worker counts as alive when its rq hash has no ``death`` field and, if it says how often it
beats (``beat_interval``, written by ``workers.runner``), its last heartbeat is younger than
ALIVE_BEATS of those; a worker that does not say (a plain ``rq worker``) is alive while rq's
hash exists (rq's own rule, which takes minutes to notice a killed worker).
"""

from __future__ import annotations

import time
from typing import Any

from rq.utils import utcparse

from broker.config import Settings
from broker.store.commands.persist_state import WorkerEntry, persistence_reads
from broker.store.keys import Keys
from broker.store.store import Store

# A worker that missed this many heartbeats in a row counts as gone.
ALIVE_BEATS = 3
# Field of rq's worker hash where workers.runner states its heartbeat interval in seconds.
BEAT_FIELD = Keys.WORKER_BEAT_FIELD
# Most workers listed by name (the count covers all of them).
LISTED_WORKERS = 20


async def persistence_state(
    store: Store, settings: Settings, mode: str | None = None, per_project: bool = False
) -> dict[str, Any]:
    """The persistence summary. ``mode`` overrides the setting (``serve`` runs the worker
    in-process when the Redis cannot be shared). ``per_project`` adds each examined project's
    backlog (for /metrics)."""
    cap = settings.health_max_projects
    reads = await persistence_reads(store, cap=cap)
    now_ms = time.time() * 1000

    pending = in_flight = dead = 0
    oldest_ms: float | None = None
    oldest_dead_ms: float | None = None
    lagging: str | None = None
    projects = []
    for backlog in reads.backlogs:
        pending, in_flight, dead = pending + backlog.pending, in_flight + backlog.in_flight, dead + backlog.dead
        project_oldest: float | None = None
        for first in (backlog.oldest_pending_ms, backlog.oldest_inflight_ms):
            if first is not None and (project_oldest is None or first < project_oldest):
                project_oldest = first
        if project_oldest is not None and (oldest_ms is None or project_oldest < oldest_ms):
            oldest_ms, lagging = project_oldest, backlog.slug
        first_dead = backlog.oldest_dead_ms
        if first_dead is not None and (oldest_dead_ms is None or first_dead < oldest_dead_ms):
            oldest_dead_ms = first_dead
        if per_project:
            age = 0.0 if project_oldest is None else round(max(0.0, now_ms - project_oldest) / 1000, 3)
            projects.append(
                {"project": backlog.slug, "pending": backlog.pending + backlog.in_flight, "oldest_pending_seconds": age}
            )
    workers = [_worker(entry) for entry in reads.workers]
    alive = [w for w in workers if w["alive"]]
    return {
        "mode": mode or settings.persistence_worker,
        "queue": store.keys.persist_queue,
        "workers_alive": len(alive),
        "workers": (alive + [w for w in workers if not w["alive"]])[:LISTED_WORKERS],
        "stale_worker_entries": len(workers) - len(alive),
        "pending": pending,
        "in_flight": in_flight,
        "oldest_pending_age_seconds": None if oldest_ms is None else round(max(0.0, now_ms - oldest_ms) / 1000, 3),
        "oldest_pending_project": lagging,
        "dead_letters": dead,
        "oldest_dead_letter_age_seconds": None
        if oldest_dead_ms is None
        else round(max(0.0, now_ms - oldest_dead_ms) / 1000, 3),
        "persisted_messages": reads.persisted_messages,
        "commits": reads.commits,
        "projects_examined": len(reads.backlogs),
        "projects_total": reads.projects_total,
        "projects_cap": cap,
        **({"projects": projects} if per_project else {}),
    }


def _worker(entry: WorkerEntry) -> dict[str, Any]:
    last_beat, beat = entry.last_heartbeat, entry.beat_interval
    age = None
    if last_beat:
        age = round(max(0.0, time.time() - utcparse(last_beat).timestamp()), 3)
    if entry.death or last_beat is None:  # registered death, or the hash expired (a killed worker)
        alive = False
    elif beat:
        alive = age is not None and age <= ALIVE_BEATS * float(beat)
    else:
        alive = True
    return {
        "name": entry.name,
        "hostname": entry.hostname,
        "pid": int(entry.pid) if entry.pid else None,
        "state": entry.state,
        "last_heartbeat_age_seconds": age,
        "alive": alive,
    }


def readiness_problems(state: dict[str, Any], settings: Settings) -> list[str]:
    """Why /health/readiness should answer 503, by the READINESS_* settings (empty: ready)."""
    problems = []
    if settings.readiness_require_persist_worker and not state["workers_alive"]:
        problems.append(
            f"no persistence worker is alive for queue {state['queue']} "
            "(PERSISTENCE_WORKER=external needs a running `broker worker`)"
        )
    limit = settings.readiness_max_persist_lag_seconds
    age = state["oldest_pending_age_seconds"]
    if limit and age is not None and age > limit:
        problems.append(
            f"persistence lags: the oldest pending change ({state['oldest_pending_project']}) is {age:.1f} s old, "
            f"over READINESS_MAX_PERSIST_LAG_SECONDS={limit:g}"
        )
    return problems


def summary_line(state: dict[str, Any], workers: bool = True) -> str:
    """One line for the start-up output and logs (``workers``: include the live-worker count)."""
    age = state["oldest_pending_age_seconds"]
    oldest = "none" if age is None else f"{age:.1f} s ({state['oldest_pending_project']})"
    capped = "" if state["projects_examined"] >= state["projects_total"] else f" (first {state['projects_examined']})"
    alive = f"{state['workers_alive']} worker(s) alive on queue {state['queue']}; " if workers else ""
    return (
        f"{alive}pending {state['pending']} + in flight {state['in_flight']}{capped}, oldest {oldest}; "
        f"dead letters {state['dead_letters']}"
    )
