"""What health, readiness and metrics read about persistence (async, on the broker's Store): a
ping, and a bounded pass over the projects' pending, in-flight and dead-letter sets, the drain
queue's registered rq workers and the persisted totals (broker/persistence/state.py sums it up).

Bounded: two or three round trips whatever the keyspace holds. The projects come from the
projects directory HASH (HSCAN, at most ``cap`` of them, never a keyspace SCAN); the workers
from rq's registry set of the drain queue (``Keys.persist_workers``).
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.store.keys import Keys
from broker.store.store import Store

# The fields of rq's worker hash that health reads (rq writes them; workers.runner adds the beat).
_WORKER_FIELDS = ("last_heartbeat", "death", "pid", "hostname", "state", Keys.WORKER_BEAT_FIELD)


async def ping(store: Store) -> None:
    """One round trip to Redis (raises when it does not answer)."""
    await store.client().ping()


@dataclass(frozen=True)
class ProjectBacklog:
    """One project's pending, in-flight and dead-letter sets: sizes and oldest scores (ms since
    the epoch; None when the set is empty)."""

    slug: str
    pending: int
    oldest_pending_ms: float | None
    in_flight: int
    oldest_inflight_ms: float | None
    dead: int
    oldest_dead_ms: float | None


@dataclass(frozen=True)
class WorkerEntry:
    """A registered rq worker of the drain queue, as its hash says (None: field absent, or the
    hash expired). ``beat_interval`` is what workers.runner states; plain rq workers lack it."""

    key: str
    last_heartbeat: str | None
    death: str | None
    pid: str | None
    hostname: str | None
    state: str | None
    beat_interval: str | None

    @property
    def name(self) -> str:
        """The worker's name (its hash key is rq:worker:<name>)."""
        return self.key.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class PersistenceReads:
    """The projects examined (at most the cap, registry order), how many there are in all, the
    registered workers (sorted by key) and the persisted totals of every worker."""

    projects_total: int
    backlogs: tuple[ProjectBacklog, ...]
    workers: tuple[WorkerEntry, ...]
    persisted_messages: int
    commits: int


def _oldest(entries: list[tuple[str, float]]) -> float | None:
    return entries[0][1] if entries else None


async def persistence_reads(store: Store, *, cap: int) -> PersistenceReads:
    """The backlogs of at most ``cap`` projects, the workers and the totals."""
    redis, keys = store.client(), store.keys
    queue = store.queue_client()
    pipe = redis.pipeline(transaction=False)
    pipe.hlen(keys.projects)
    pipe.hscan(keys.projects, 0, count=cap)
    pipe.hgetall(keys.persist_stats)
    total, (cursor, first), totals = await pipe.execute()
    worker_keys = sorted(await queue.smembers(keys.persist_workers))
    slugs = list(first)[:cap]
    while cursor and len(slugs) < cap:  # big hashes come in slices; stop at the cap
        cursor, more = await redis.hscan(keys.projects, cursor, count=cap - len(slugs))
        slugs += [slug for slug in more if slug not in first][: cap - len(slugs)]
        first.update(more)

    pipe = redis.pipeline(transaction=False)
    for slug in slugs:
        pipe.zcard(keys.pending(slug))
        pipe.zrange(keys.pending(slug), 0, 0, withscores=True)
        pipe.zcard(keys.inflight(slug))
        pipe.zrange(keys.inflight(slug), 0, 0, withscores=True)
        pipe.zcard(keys.dead_letters(slug))
        pipe.zrange(keys.dead_letters(slug), 0, 0, withscores=True)
    replies = await pipe.execute() if slugs else []
    worker_fields = []
    if worker_keys:
        queue_pipe = queue.pipeline(transaction=False)
        for key in worker_keys:
            queue_pipe.hmget(key, list(_WORKER_FIELDS))
        worker_fields = await queue_pipe.execute()

    backlogs = []
    for i, slug in enumerate(slugs):
        n_pending, first_pending, n_inflight, first_inflight, n_dead, first_dead = replies[6 * i : 6 * i + 6]
        backlogs.append(
            ProjectBacklog(
                slug,
                n_pending,
                _oldest(first_pending),
                n_inflight,
                _oldest(first_inflight),
                n_dead,
                _oldest(first_dead),
            )
        )
    workers = tuple(WorkerEntry(key, *fields) for key, fields in zip(worker_keys, worker_fields, strict=True))
    return PersistenceReads(
        projects_total=total,
        backlogs=tuple(backlogs),
        workers=workers,
        persisted_messages=int(totals.get("messages", 0)),
        commits=int(totals.get("commits", 0)),
    )
