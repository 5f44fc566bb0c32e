"""The persistence worker's typed commands on a project's pending-persistence sets (synchronous:
the worker runs under rq): claiming a batch, forgetting or releasing it, counting failed tries,
re-queueing aged claims, the reconciler's reads and the broker-wide persisted totals.

What a batch reads of its entries is in broker/store/commands/drain_reads.py, the dead-letter reads and
retries in broker/store/commands/dead_letters.py. ``client`` is a synchronous client of
broker.store.clients (``make_sync_client``) that decodes responses; the keys are built from
``keys`` (broker/store/keys.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from broker.store.keys import Keys
from broker.store.scripts import SyncClient, run_sync

__all__ = [
    "DrainBacklog",
    "SyncClient",
    "add_persist_totals",
    "backlog_heads",
    "claim_drain_flags",
    "drain_claim",
    "drain_fail",
    "drain_forget",
    "drain_release",
    "drain_requeue",
]


# -- a drain's batch ----------------------------------------------------------------------
def drain_claim(client: SyncClient, keys: Keys, *, slug: str, limit: int, first: bool) -> dict[str, float]:
    """Claim up to ``limit`` due pending entries into in-flight (drain_claim.lua); ``first``: the
    drain's first claim, which deletes the "drain job scheduled" flag. Returns each claimed
    member, oldest first, with its pending score (ms)."""
    scored = run_sync(
        client,
        "drain_claim",
        [keys.pending(slug), keys.inflight(slug), keys.pending_flag(slug)],
        [limit, "1" if first else "0"],
    )
    return dict(zip(scored[0::2], map(float, scored[1::2]), strict=True))


def drain_forget(client: SyncClient, keys: Keys, *, slug: str, members: Sequence[str]) -> None:
    """Entries written: out of in-flight, their failed tries and any dead letter of theirs
    forgotten, in one transaction."""
    pipe = client.pipeline(transaction=True)
    pipe.zrem(keys.inflight(slug), *members)
    pipe.hdel(keys.attempts(slug), *members)
    pipe.zrem(keys.dead_letters(slug), *members)
    pipe.hdel(keys.dead_letter_info(slug), *members)
    pipe.execute()


def drain_release(client: SyncClient, keys: Keys, *, slug: str, scores: Mapping[str, float]) -> None:
    """Give claimed entries back to pending with the given scores (ms; an entry already pending,
    changed again meanwhile, keeps its own), and out of in-flight, in one transaction."""
    pipe = client.pipeline(transaction=True)
    pipe.zadd(keys.pending(slug), dict(scores), nx=True)
    pipe.zrem(keys.inflight(slug), *scores)
    pipe.execute()


def drain_fail(
    client: SyncClient,
    keys: Keys,
    *,
    slug: str,
    failures: Mapping[str, str],
    max_attempts: int,
    retry_base_ms: int,
    retry_max_ms: int,
) -> list[str]:
    """Count a failed try against each entry (member -> its error text; drain_fail.lua): back to
    pending after a back-off, or dead-lettered at the last try. Returns the entries dead-lettered."""
    pairs = [value for item in failures.items() for value in item]
    script_keys = [
        keys.inflight(slug),
        keys.pending(slug),
        keys.attempts(slug),
        keys.dead_letters(slug),
        keys.dead_letter_info(slug),
    ]
    return list(run_sync(client, "drain_fail", script_keys, [max_attempts, retry_base_ms, retry_max_ms, *pairs]))


# -- the reconciler -----------------------------------------------------------------------
@dataclass(frozen=True)
class DrainBacklog:
    """A project's oldest pending score and oldest in-flight claim time (ms), None when empty."""

    slug: str
    oldest_pending_ms: float | None
    oldest_inflight_ms: float | None


def backlog_heads(client: SyncClient, keys: Keys) -> list[DrainBacklog]:
    """Every project's oldest pending and in-flight entry (two round trips)."""
    slugs = list(client.hkeys(keys.projects))
    pipe = client.pipeline(transaction=False)
    for slug in slugs:
        pipe.zrange(keys.pending(slug), 0, 0, withscores=True)
        pipe.zrange(keys.inflight(slug), 0, 0, withscores=True)
    replies = pipe.execute()
    return [
        DrainBacklog(slug, _first_score(replies[2 * i]), _first_score(replies[2 * i + 1]))
        for i, slug in enumerate(slugs)
    ]


def _first_score(entries: list[tuple[str, float]]) -> float | None:
    return entries[0][1] if entries else None


def drain_requeue(client: SyncClient, keys: Keys, *, slug: str, cutoff_ms: int, limit: int) -> int:
    """Move up to ``limit`` in-flight entries claimed at or before ``cutoff_ms`` back to pending
    (drain_requeue.lua); returns how many moved."""
    return int(run_sync(client, "drain_requeue", [keys.inflight(slug), keys.pending(slug)], [cutoff_ms, limit]))


def claim_drain_flags(client: SyncClient, keys: Keys, *, slugs: Sequence[str], ttl_ms: int) -> list[str]:
    """Set the "drain job scheduled" flag of each project where none is set (SET NX, ``ttl_ms``);
    returns the projects whose flag this call set, in order."""
    pipe = client.pipeline(transaction=False)
    for slug in slugs:
        pipe.set(keys.pending_flag(slug), "1", nx=True, px=ttl_ms)
    return [slug for slug, claimed in zip(slugs, pipe.execute(), strict=True) if claimed]


def add_persist_totals(client: SyncClient, keys: Keys, *, messages: int, commits: int) -> None:
    """Add to the broker-wide totals of messages and commits written (every worker adds to them)."""
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(keys.persist_stats, "messages", messages)
    pipe.hincrby(keys.persist_stats, "commits", commits)
    pipe.execute()
