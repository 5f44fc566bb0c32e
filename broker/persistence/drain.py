"""Draining a project's pending-persistence set into the Git archive and the SQLite index.

The write scripts add what they changed to ``pending`` (members ``project:<id>``,
``agent:<id>``, ``msg:<id>``, ``rcpt:<id>:<lower name>``, ``res:<id>``,
``link:<lower name>|<links field>``). A drain claims a batch into
``pending:inflight`` (drain_claim.lua), reads the current state of each entry from Redis in
one round trip (broker/store/commands/drain_reads.py), writes the batch to Git (one commit) and then to SQLite (one transaction), and
only then forgets the claimed entries. Git goes first so that a row in SQLite implies its
commit exists. Both writes are idempotent, so a retried, duplicated or re-claimed batch
(after a worker died mid-batch) writes nothing twice.

What each kind of entry reads and writes is in broker/persistence/entries.py.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.persistence.archive import Archive
from broker.persistence.commit_rows import batch_rows
from broker.persistence.dead_letters import is_transient, write_isolated
from broker.persistence.entries import HANDLERS, ProjectState, Work
from broker.persistence.guards import drop_clashes, guard_counters
from broker.persistence.index import Index
from broker.persistence.ratelog import RateLimitedLog
from broker.store.commands.drain import (
    SyncClient,
    add_persist_totals,
    backlog_heads,
    drain_claim,
    drain_forget,
    drain_release,
    drain_requeue,
)
from broker.store.commands.drain_reads import EntryRecord, read_batch
from broker.store.errors import StoreFailure
from broker.store.keys import Keys

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)

# A drain stops claiming after this long and re-enqueues itself, so one busy project cannot
# hold a worker forever while others wait.
DRAIN_BUDGET_SECONDS = 60.0
INFLIGHT_REQUEUE_CHUNK = 5000


@contextmanager
def project_lock(index: Index | Path | str, slug: str) -> Iterator[None]:
    """The project's drain lock (``Index.project_lock``): one batch of a project at a time,
    across threads, worker processes and, on PostgreSQL, hosts. Without it a second drain claims
    a change made while the first batch is being written, and the first batch, holding the older
    state it read, can commit after it (a renewal's expiry or a profile overwritten by the one
    before), and its ack drops the second's claim from in-flight. The hard deletes, the purge and
    the export hold it too, so no batch that read data before it was deleted writes it back after.
    Takes the Index, or its path / URL."""
    if isinstance(index, Index):
        with index.project_lock(slug):
            yield
        return
    own = Index(index)
    try:
        with own.project_lock(slug):
            yield
    finally:
        own.close()


@dataclass
class DrainStats:
    batches: int = 0
    entries: int = 0
    messages: int = 0
    commits: int = 0
    claims: int = 0
    failed: int = 0  # entries that failed alone: back in pending for a later try
    dead_lettered: int = 0
    requeued: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Persister:
    """Writes projects' pending changes to the archive and index. Synchronous (runs in the
    rq worker); ``connection`` is a synchronous client of broker.store.clients that decodes
    responses (``make_sync_client``), used only through broker/store's typed commands."""

    def __init__(self, settings: Settings, connection: SyncClient, index: Index | None = None) -> None:
        self.settings = settings
        self.connection = connection
        self.keys = Keys(settings.redis_key_prefix)
        self.index = index or Index.from_settings(settings)
        self.index.ensure_schema()
        self.archive = Archive(settings.archive_path, "", staging=settings.attachments_staging_path)
        # claims a Redis outage kept us from releasing, per project (see _release)
        self._leftovers: dict[str, set[str]] = {}
        self._leftovers_lock = threading.Lock()  # the reconciler's thread releases them too
        # pending scores of the batch being written, per project (one drain per project at a
        # time: project_lock), so a batch given back keeps its age (see _release)
        self._scores: dict[str, dict[str, float]] = {}
        # A worker starting after Redis came back from a loss raises the id counters before
        # its first batch (each batch checks again: docs/durability-ids.md).
        try:
            guard_counters(connection, self.keys, self.index, {})
        except StoreFailure as exc:  # Redis not up yet: the first batch checks
            log.warning("could not check the id counters against the index: %s", exc)

    # -- draining -----------------------------------------------------------------------
    def drain(self, slug: str, budget_seconds: float = DRAIN_BUDGET_SECONDS) -> DrainStats:
        """Persist everything pending (and due) for the project, batch by batch; a failed batch
        is written in parts around the entries that fail alone (broker/persistence/dead_letters.py)."""
        stats = DrainStats()
        deadline = time.monotonic() + budget_seconds
        failed: set[str] = set()
        self.release_leftovers()
        while True:
            with self._project_lock(slug):
                claimed = drain_claim(
                    self.connection,
                    self.keys,
                    slug=slug,
                    limit=self.settings.persist_batch_size,
                    first=not stats.claims,
                )
                members = list(claimed)
                self._scores[slug] = claimed
                stats.claims += 1
                # (with no back-off) an entry that failed in this drain is tried by a later one
                again = [m for m in members if m in failed]
                if again:
                    self._release(slug, again)
                    members = [m for m in members if m not in failed]
                if not members:
                    return stats
                try:
                    done, commit, messages = self.persist_batch(slug, members)
                    self._forget(slug, done)
                    commits = commit is not None
                except Exception as exc:
                    if is_transient(exc):
                        self._release(slug, members)
                        raise
                    done, commits, messages, now_failed = write_isolated(self, slug, members, exc, stats)
                    failed.update(now_failed)
            stats.batches += 1
            stats.entries += len(done)
            stats.messages += messages
            stats.commits += commits
            if time.monotonic() > deadline:
                stats.requeued = True
                return stats

    def _project_lock(self, slug: str) -> contextlib.AbstractContextManager[None]:
        return self.index.project_lock(slug)

    def _forget(self, slug: str, done: list[str]) -> None:
        """Entries written: out of in-flight, their failed tries and any dead letter of theirs
        (an entry changed again after it was dead-lettered, and now written) forgotten."""
        if not done:
            return
        try:
            drain_forget(self.connection, self.keys, slug=slug, members=done)
        except Exception:  # written, still claimed: released once Redis answers (idempotent)
            self._keep(slug, done)
            raise

    def _release(self, slug: str, members: list[str]) -> None:
        """Give a batch's entries back to pending, due at once, so the next drain (rather than the
        reconciler, minutes later) writes them; kept for ``release_leftovers`` if Redis is away.
        Each keeps the score it was claimed with: scored now, a batch that fails on every try
        (a full disk) looked fresh after each one, and the oldest-pending age (readiness, the
        lag alert) never showed that nothing persisted."""
        now_ms = int(time.time() * 1000)
        claimed = self._scores.get(slug, {})
        try:
            scores = {m: min(claimed.get(m, now_ms), now_ms) for m in members}
            drain_release(self.connection, self.keys, slug=slug, scores=scores)
        except Exception as exc:
            self._keep(slug, members)
            _ratelog.warning("release", "could not return a batch of %s to pending (kept to retry): %s", slug, exc)

    def _keep(self, slug: str, members: list[str]) -> None:
        with self._leftovers_lock:
            self._leftovers.setdefault(slug, set()).update(members)

    def release_leftovers(self) -> None:
        """Return to pending the claims a Redis outage kept this process from releasing."""
        while self._leftovers:
            with self._leftovers_lock:
                if not self._leftovers:
                    return
                slug, members = self._leftovers.popitem()
            self._release(slug, sorted(members))
            if slug in self._leftovers:  # Redis is still away: try again later
                return

    def persist_batch(self, slug: str, members: list[str]) -> tuple[list[str], str | None, int]:
        """Write one claimed batch; returns the members written, the commit sha (None if the
        archive had it all) and the number of messages."""
        state, records = self._fetch(slug, members)
        work = Work()
        work.batch.projects.append(
            {
                "id": int(state.project["id"]),
                "slug": slug,
                "human_key": state.project["human_key"],
                "created_at": state.project["created_at"],
                "archived_at": state.project.get("archived_at"),
            }
        )
        done: list[str] = []
        for member in members:
            kind = member.split(":", 1)[0]
            handler = HANDLERS.get(kind)
            if handler is None:
                log.warning("no persistence handler for %r in project %s; left in flight", member, slug)
                continue
            handler.load(state, member, records.get(member), work)
            done.append(member)
        drop_clashes(self.index, slug, work)
        done_commit = self.archive.write_batch_detailed(
            profiles=work.profiles, messages=work.messages, reservations=work.reservations
        )
        commit = done_commit.sha
        # each message's commit goes to the index too, so brokers show it without the archive
        work.batch.commits = batch_rows(self.archive.root, slug, done_commit, [m for _, _, m in work.messages])
        self.index.write_batch(work.batch)
        guard_counters(self.connection, self.keys, self.index, state.counters)
        return done, commit, len(work.messages)

    def _fetch(self, slug: str, members: list[str]) -> tuple[ProjectState, dict[str, EntryRecord]]:
        """The project's records and every entry's Redis state, in one round trip."""
        read = read_batch(self.connection, self.keys, slug=slug, members=members)
        state = ProjectState(slug, read.project, read.agents, read.active, read.counters)
        if not read.project:
            raise RuntimeError(f"project {slug!r} is gone from Redis; run `broker rehydrate` before draining it")
        return state, read.entries

    # -- the reconciler -----------------------------------------------------------------
    def stale_projects(self, min_age_seconds: float, inflight_age_seconds: float) -> list[str]:
        """Projects that need a drain: their oldest pending entry is older than
        ``min_age_seconds``, or in-flight entries were claimed more than
        ``inflight_age_seconds`` ago (these are moved back to pending first)."""
        now_ms = int(time.time() * 1000)
        stale = []
        for backlog in backlog_heads(self.connection, self.keys):
            slug, oldest_pending, oldest_inflight = backlog.slug, backlog.oldest_pending_ms, backlog.oldest_inflight_ms
            if oldest_inflight is not None and oldest_inflight <= now_ms - inflight_age_seconds * 1000:
                cutoff = now_ms - int(inflight_age_seconds * 1000)
                while drain_requeue(
                    self.connection, self.keys, slug=slug, cutoff_ms=cutoff, limit=INFLIGHT_REQUEUE_CHUNK
                ):
                    pass
                stale.append(slug)
            elif oldest_pending is not None and oldest_pending <= now_ms - min_age_seconds * 1000:
                stale.append(slug)
        return stale

    def add_totals(self, stats: DrainStats) -> None:
        """Add a drain's messages and commits to the broker-wide totals (for /metrics)."""
        if stats.messages or stats.commits:
            add_persist_totals(self.connection, self.keys, messages=stats.messages, commits=stats.commits)
