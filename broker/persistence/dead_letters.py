"""Pending entries that keep failing to persist: isolating them, counting their tries, and the
per-project dead-letter set they end in (docs/durability.md, "Poison entries").

When a drain batch fails, ``isolate`` splits it in halves until the entries that fail on their
own are found; every other entry of the batch is written. Each isolated entry gets a failed try
counted (drain_fail.lua): it waits in pending with an exponential back-off, and after
PERSIST_MAX_ATTEMPTS tries it moves to the project's dead-letter set (``deadletter`` ZSET plus
``deadletter:info`` HASH, see broker/store/keys.py). Nothing there is retried by itself:
``broker dead-letters list`` shows them and ``broker dead-letters retry`` (once the cause is
fixed) puts them back in pending.

``dead_letter_summary`` gives the count and the oldest dead letter, overall and per project
(health and metrics read them in broker.persistence.state's pass over every project).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from broker.config import Settings
from broker.errors import BrokerError
from broker.persistence.ratelog import RateLimitedLog
from broker.store.commands.dead_letters import (
    dead_letter_heads,
    dead_letter_infos,
    dead_letter_retry,
    project_registry,
    project_slugs,
)
from broker.store.commands.drain import SyncClient, drain_fail
from broker.store.errors import StoreFailure
from broker.store.keys import Keys, looks_like_path

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)

# Most failing entries isolated per failed batch: each costs a few writes to find, so a batch
# with many bounds its cost; the entries not reached go back to pending uncounted and are taken
# apart by a later drain.
ISOLATE_MAX_FAILURES = 16
ERROR_TEXT_CHARS = 500
RETRY_CHUNK = 1000


# -- what health and metrics read ---------------------------------------------------------
@dataclass(frozen=True)
class DeadLetterSummary:
    """Dead letters across the projects asked about. ``oldest_ms`` is when the oldest of them
    was dead-lettered (ms since the epoch), None when there are none; ``projects`` maps each
    project slug that has dead letters to their count."""

    count: int = 0
    oldest_ms: int | None = None
    projects: dict[str, int] = field(default_factory=dict)

    @property
    def oldest_age_seconds(self) -> float | None:
        return None if self.oldest_ms is None else max(0.0, time.time() - self.oldest_ms / 1000)

    def as_dict(self) -> dict[str, Any]:
        oldest = None if self.oldest_ms is None else datetime.fromtimestamp(self.oldest_ms / 1000, UTC).isoformat()
        return {
            "count": self.count,
            "oldest_ts": oldest,
            "oldest_age_seconds": self.oldest_age_seconds,
            "projects": dict(self.projects),
        }


def dead_letter_summary(client: SyncClient, keys: Keys, slugs: Iterable[str] | None = None) -> DeadLetterSummary:
    """Count and oldest dead letter of the given projects (all projects when None), read in
    two round trips (a synchronous client of broker.store.clients: the CLI; health and metrics
    read the same keys within broker.persistence.state's one pass)."""
    count, oldest, projects = 0, None, {}
    for head in dead_letter_heads(client, keys, slugs=slugs):
        if not head.count:
            continue
        count += head.count
        projects[head.slug] = head.count
        if head.oldest_ms is not None and (oldest is None or head.oldest_ms < oldest):
            oldest = head.oldest_ms
    return DeadLetterSummary(count, oldest, projects)


# -- listing and retrying (the CLI) -------------------------------------------------------
@dataclass(frozen=True)
class DeadLetter:
    slug: str
    entry: str  # the pending member, e.g. "msg:123"
    dead_at: str
    attempts: int
    error: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def resolve_slug(client: SyncClient, keys: Keys, project: str) -> str:
    """The slug of a project given by its human_key (path) or slug; NOT_FOUND if unknown."""
    known = project_registry(client, keys)
    wanted = project.strip()
    # a path spelled differently (trailing slash, "..") is still the same human_key
    normal = os.path.normpath(wanted) if looks_like_path(wanted) else wanted
    for slug, human_key in known.items():
        if normal in (slug, human_key):
            return slug
    raise BrokerError("NOT_FOUND", f"project '{project}' not found. Give its absolute path or slug")


def list_dead_letters(client: SyncClient, keys: Keys, slug: str | None = None, limit: int = 1000) -> list[DeadLetter]:
    """Dead letters, oldest first, of one project or of all (at most ``limit`` per project)."""
    slugs = [slug] if slug else sorted(project_slugs(client, keys))
    return [
        DeadLetter(project, info.entry, info.dead_at, info.attempts, info.error)
        for project in slugs
        for info in dead_letter_infos(client, keys, slug=project, limit=limit)
    ]


def retry_dead_letters(client: SyncClient, keys: Keys, slug: str, entries: Sequence[str] = ()) -> list[str]:
    """Put a project's dead letters (all, or the named entries) back in pending with a fresh
    try count; returns the entries moved. The caller enqueues a drain of the project."""
    moved: list[str] = []
    if entries:
        for start in range(0, len(entries), RETRY_CHUNK):
            chunk = entries[start : start + RETRY_CHUNK]
            moved += dead_letter_retry(client, keys, slug=slug, limit=RETRY_CHUNK, entries=chunk)
        return moved
    while chunk := dead_letter_retry(client, keys, slug=slug, limit=RETRY_CHUNK):
        moved += chunk
    return moved


# -- isolating the entries that fail ------------------------------------------------------
def isolate(
    members: list[str], write: Callable[[list[str]], list[str]], first_error: Exception
) -> tuple[list[str], dict[str, str], list[str]]:
    """Take a failed batch apart: write its halves, and the halves of the halves that fail,
    until the entries that fail alone are known. ``write`` persists a sub-batch and returns the
    entries it wrote (or raises). Returns (written, failed entry -> error text, untried): after
    ISOLATE_MAX_FAILURES failures the rest is left untried. Errors ``transient`` (see
    ``is_transient``) end the isolation at once: they are re-raised. So is ``first_error`` when
    two entries failed alone and nothing was written: every part failed, so the environment
    did, and no try is counted. (A lone failing entry cannot be told apart: it is counted.)"""
    written: list[str] = []
    failed: dict[str, str] = {}
    stack: list[tuple[list[str], Exception]] = [(members, first_error)]  # groups known to fail
    while stack:
        group, error = stack.pop()
        if len(group) == 1:
            failed[group[0]] = _error_text(error)
            if not written and len(failed) >= 2:
                # every part tried failed, singles included: the cause is not these entries
                # (the archive or index is broken), so count nothing against them
                raise first_error
            if len(failed) >= ISOLATE_MAX_FAILURES:
                untried = [m for g, _ in stack for m in g]
                return written, failed, untried
            continue
        half = len(group) // 2
        # pushed in reverse so the first half is taken apart first (oldest entries first)
        results: list[tuple[list[str], Exception]] = []
        for part in (group[:half], group[half:]):
            try:
                written += write(part)
            except Exception as exc:
                if is_transient(exc):
                    raise
                results.append((part, exc))
        stack.extend(reversed(results))
    return written, failed, []


def write_isolated(
    persister: Any, slug: str, members: list[str], error: Exception, stats: Any
) -> tuple[list[str], int, int, list[str]]:
    """Write a failed batch of ``persister`` (a broker.persistence.drain.Persister) in parts and count a
    try against each entry that fails alone. Returns the entries written, commits, messages
    and the entries that failed."""
    commits = messages = 0

    def write(part: list[str]) -> list[str]:
        nonlocal commits, messages
        done, commit, count = persister.persist_batch(slug, part)
        persister._forget(slug, done)
        commits += commit is not None
        messages += count
        return done

    try:
        written, failed, untried = isolate(members, write, error)
    except Exception:
        persister._release(slug, members)  # transient, midway; the ones written are harmless
        raise
    if untried:
        persister._release(slug, untried)
    dead = record_failures(persister.connection, persister.keys, slug, failed, persister.settings)
    stats.failed += len(failed)
    stats.dead_lettered += len(dead)
    return written, commits, messages, list(failed)


def record_failures(client: SyncClient, keys: Keys, slug: str, failed: dict[str, str], settings: Settings) -> list[str]:
    """Count a failed try against each isolated entry (drain_fail.lua, on the drain's client)
    and log it, rate-limited; returns the entries dead-lettered now."""
    if not failed:
        return []
    dead = drain_fail(
        client,
        keys,
        slug=slug,
        failures=failed,
        max_attempts=settings.persist_max_attempts,
        retry_base_ms=int(settings.persist_retry_base_seconds * 1000),
        retry_max_ms=int(settings.persist_retry_max_seconds * 1000),
    )
    entry, text = next(iter(failed.items()))
    _ratelog.warning(
        f"failed:{slug}",
        "project %s: %d entries failed to persist and wait to be tried again (the rest of their batch "
        "was written); first: %s (%s)",
        slug, len(failed), entry, text,
    )  # fmt: skip
    if dead:
        _ratelog.warning(
            f"dead:{slug}",
            "project %s: %d entries dead-lettered after %d tries (`broker dead-letters list`): %s",
            slug, len(dead), settings.persist_max_attempts, ", ".join(dead[:5]),
        )  # fmt: skip
    return dead


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:ERROR_TEXT_CHARS]


def is_transient(error: BaseException) -> bool:
    """Failures of the environment rather than of the entries: Redis unreachable, the index locked,
    unreachable or out of disk, a full or read-only disk, the job's time limit. A batch failing so is
    retried whole later and counts no try against its entries."""
    import errno

    from broker.persistence.index import TRANSIENT_ERRORS

    if isinstance(error, (*StoreFailure, *TRANSIENT_ERRORS)):
        return True
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
        return True
    return type(error).__name__ == "JobTimeoutException"  # rq's, raised into the job
