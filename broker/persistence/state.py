"""How persistence is doing, for health_check, /health/readiness, the start-up lines and metrics.

Bounded: two or three round trips whatever the keyspace holds. The projects come from the
projects directory HASH (HSCAN, at most HEALTH_MAX_PROJECTS of them, never a keyspace SCAN);
the workers from rq's registry set of the drain queue. Per project it reads the pending and
in-flight sets' sizes and oldest scores, and the dead letters (``Keys.dead_letters``, a ZSET
written by broker/persistence/dead_letters.py).

A worker counts as alive when its rq hash has no ``death`` field and, if it says how often it
beats (``beat_interval``, written by ``workers.runner``), its last heartbeat is younger than
ALIVE_BEATS of those; a worker that does not say (a plain ``rq worker``) is alive while rq's
hash exists (rq's own rule, which takes minutes to notice a killed worker).
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis
from rq.utils import utcparse
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from broker.config import Settings
from broker.store.keys import Keys

# A worker that missed this many heartbeats in a row counts as gone.
ALIVE_BEATS = 3
# Field of rq's worker hash where workers.runner states its heartbeat interval in seconds.
BEAT_FIELD = "beat_interval"
# Most workers listed by name (the count covers all of them).
LISTED_WORKERS = 20
_WORKER_FIELDS = ("last_heartbeat", "death", "pid", "hostname", "state", BEAT_FIELD)


def workers_key(keys: Keys) -> str:
    """rq's registry SET of the worker keys serving our drain queue (rq builds the name)."""
    return WORKERS_BY_QUEUE_KEY % keys.persist_queue


async def persistence_state(
    redis: Redis, keys: Keys, settings: Settings, mode: str | None = None, per_project: bool = False
) -> dict[str, Any]:
    """The persistence summary; ``redis`` decodes responses. ``mode`` overrides the setting
    (``serve`` runs the worker in-process when the Redis cannot be shared). ``per_project`` adds
    each examined project's backlog (for /metrics)."""
    cap = settings.health_max_projects
    pipe = redis.pipeline(transaction=False)
    pipe.hlen(keys.projects)
    pipe.hscan(keys.projects, 0, count=cap)
    pipe.smembers(workers_key(keys))
    pipe.hgetall(keys.persist_stats)
    total, (cursor, first), worker_keys, totals = await pipe.execute()
    slugs = list(first)[:cap]
    while cursor and len(slugs) < cap:  # big hashes come in slices; stop at the cap
        cursor, more = await redis.hscan(keys.projects, cursor, count=cap - len(slugs))
        slugs += [slug for slug in more if slug not in first][: cap - len(slugs)]
        first.update(more)
    worker_keys = sorted(worker_keys)

    pipe = redis.pipeline(transaction=False)
    for slug in slugs:
        pipe.zcard(keys.pending(slug))
        pipe.zrange(keys.pending(slug), 0, 0, withscores=True)
        pipe.zcard(keys.inflight(slug))
        pipe.zrange(keys.inflight(slug), 0, 0, withscores=True)
        pipe.zcard(keys.dead_letters(slug))
        pipe.zrange(keys.dead_letters(slug), 0, 0, withscores=True)
    for key in worker_keys:
        pipe.hmget(key, list(_WORKER_FIELDS))
    replies = await pipe.execute() if slugs or worker_keys else []

    now_ms = time.time() * 1000

    pending = in_flight = dead = 0
    oldest_ms: float | None = None
    oldest_dead_ms: float | None = None
    lagging: str | None = None
    projects = []
    for i, slug in enumerate(slugs):
        n_pending, first_pending, n_inflight, first_inflight, n_dead, first_dead = replies[6 * i : 6 * i + 6]
        pending, in_flight, dead = pending + n_pending, in_flight + n_inflight, dead + n_dead
        project_oldest: float | None = None
        for entries in (first_pending, first_inflight):
            if entries and (project_oldest is None or entries[0][1] < project_oldest):
                project_oldest = entries[0][1]
        if project_oldest is not None and (oldest_ms is None or project_oldest < oldest_ms):
            oldest_ms, lagging = project_oldest, slug
        if first_dead and (oldest_dead_ms is None or first_dead[0][1] < oldest_dead_ms):
            oldest_dead_ms = first_dead[0][1]
        if per_project:
            age = 0.0 if project_oldest is None else round(max(0.0, now_ms - project_oldest) / 1000, 3)
            projects.append({"project": slug, "pending": n_pending + n_inflight, "oldest_pending_seconds": age})
    workers = [_worker(key, fields) for key, fields in zip(worker_keys, replies[6 * len(slugs) :], strict=True)]
    alive = [w for w in workers if w["alive"]]
    return {
        "mode": mode or settings.persistence_worker,
        "queue": keys.persist_queue,
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
        "persisted_messages": int(totals.get("messages", 0)),
        "commits": int(totals.get("commits", 0)),
        "projects_examined": len(slugs),
        "projects_total": total,
        "projects_cap": cap,
        **({"projects": projects} if per_project else {}),
    }


def _worker(key: str, fields: list[str | None]) -> dict[str, Any]:
    last_beat, death, pid, hostname, state, beat = fields
    age = None
    if last_beat:
        age = round(max(0.0, time.time() - utcparse(last_beat).timestamp()), 3)
    if death or last_beat is None:  # registered death, or the hash expired (a killed worker)
        alive = False
    elif beat:
        alive = age is not None and age <= ALIVE_BEATS * float(beat)
    else:
        alive = True
    name = key.rsplit(":", 1)[-1]
    return {
        "name": name,
        "hostname": hostname,
        "pid": int(pid) if pid else None,
        "state": state,
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
