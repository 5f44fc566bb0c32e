"""Typed commands on the projects' dead-letter sets (``deadletter`` ZSET and ``deadletter:info``
HASH, see broker/store/keys.py) and the project registry reads the CLI needs with them
(synchronous: the CLI and the persistence worker). ``client`` is a synchronous client of
broker.store.clients that decodes responses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from broker.store.keys import Keys
from broker.store.scripts import SyncClient, run_sync


def project_registry(client: SyncClient, keys: Keys) -> dict[str, str]:
    """Every project: slug -> human_key."""
    return dict(client.hgetall(keys.projects))


def project_slugs(client: SyncClient, keys: Keys) -> list[str]:
    """Every project's slug, in the registry's order."""
    return list(client.hkeys(keys.projects))


@dataclass(frozen=True)
class DeadLetterHead:
    """A project's dead-letter count and when its oldest was dead-lettered (ms; None: none)."""

    slug: str
    count: int
    oldest_ms: int | None


def dead_letter_heads(client: SyncClient, keys: Keys, *, slugs: Iterable[str] | None = None) -> list[DeadLetterHead]:
    """Count and oldest dead letter of each given project (every project when None), in two
    round trips at most."""
    chosen = list(slugs) if slugs is not None else project_slugs(client, keys)
    if not chosen:
        return []
    pipe = client.pipeline(transaction=False)
    for slug in chosen:
        pipe.zcard(keys.dead_letters(slug))
        pipe.zrange(keys.dead_letters(slug), 0, 0, withscores=True)
    replies = pipe.execute()
    heads = []
    for i, slug in enumerate(chosen):
        count, first = replies[2 * i], replies[2 * i + 1]
        heads.append(DeadLetterHead(slug, int(count), int(first[0][1]) if first else None))
    return heads


@dataclass(frozen=True)
class DeadLetterInfo:
    """One dead letter: the pending member, when it was dead-lettered (ISO, "" if unknown), its
    failed tries and the error of its last try (drain_fail.lua writes them)."""

    entry: str
    dead_at: str
    attempts: int
    error: str


def dead_letter_infos(client: SyncClient, keys: Keys, *, slug: str, limit: int) -> list[DeadLetterInfo]:
    """The project's oldest ``limit`` dead letters, oldest first."""
    members = client.zrange(keys.dead_letters(slug), 0, limit - 1)
    if not members:
        return []
    infos = client.hmget(keys.dead_letter_info(slug), members)
    found = []
    for member, raw in zip(members, infos, strict=True):
        info = json.loads(raw) if raw else {}
        found.append(
            DeadLetterInfo(member, info.get("dead_at", ""), int(info.get("attempts", 0)), info.get("error", ""))
        )
    return found


def dead_letter_retry(
    client: SyncClient, keys: Keys, *, slug: str, limit: int, entries: Sequence[str] = ()
) -> list[str]:
    """Put up to ``limit`` of the project's dead letters (the named ``entries``, or the oldest)
    back in pending with a fresh try count (dead_letter_retry.lua); returns the entries moved."""
    return list(
        run_sync(
            client,
            "dead_letter_retry",
            [keys.dead_letters(slug), keys.dead_letter_info(slug), keys.pending(slug), keys.attempts(slug)],
            [limit, *entries],
        )
    )
