"""The hot-window trimmer: Redis keeps what agents read now, the index serves the rest.

Each pass walks every project's inbox and outbox streams in small script calls
(``trim_hot.lua`` through ``broker/store/commands/hot_window.py``); each call reads at most
WORK_BUDGET stream entries and messages and deletes at most DELETE_MAX messages, so it holds
Redis for a few milliseconds and sends run between calls. A message goes only when it is
persisted (no pending, in-flight or dead-lettered entry of it), held for no one, and outside
the hot window (the newest HOT_INBOX_MAX_MESSAGES entries younger than HOT_RETENTION_SECONDS)
of every stream that holds it; what it leaves behind is the project's cold marks
(docs/data-model.md, "The hot window"). Anything the script cannot decide within its budget
stays for a later call or pass: trimming late is safe, trimming early never happens.

The persistence worker runs a pass every HOT_TRIM_INTERVAL_SECONDS (workers/runner.py);
``broker trim`` runs one by hand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from broker.config import Settings
from broker.persistence.index import Index
from broker.store.commands import hot_window as commands
from broker.store.commands.cold import COOL_AFTER_SECONDS, cool_messages
from broker.store.keys import Keys
from broker.store.scripts import SyncClient

WORK_BUDGET = 500  # stream entries read plus messages looked at, per script call
DELETE_MAX = 50  # messages deleted per script call (about 40 us of Redis each)
STREAMS_PER_CALL = 64  # stream suffixes named in one call
PASS_SECONDS = 10.0  # a pass stops after this long; the next one goes on from where it stopped


@dataclass(slots=True)
class TrimReport:
    """What a pass (or one project's part of it) did."""

    deleted: int = 0
    calls: int = 0
    projects: int = 0
    complete: bool = True  # every project was walked to the end (not cut by the time budget)
    by_project: dict[str, int] = field(default_factory=dict)
    call_seconds: float = 0.0  # the script calls' wall time, as the trimmer waited for them
    longest_call: float = 0.0

    def add(self, other: TrimReport, slug: str) -> None:
        self.deleted += other.deleted
        self.calls += other.calls
        self.call_seconds += other.call_seconds
        self.longest_call = max(self.longest_call, other.longest_call)
        self.projects += 1
        self.complete = self.complete and other.complete
        if other.deleted:
            self.by_project[slug] = other.deleted


class HotTrimmer:
    """Trims the hot window of every project on one Redis (a synchronous client)."""

    def __init__(self, settings: Settings, client: SyncClient, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.retention_ms = settings.hot_retention_seconds * 1000
        self.cap = settings.hot_inbox_max_messages
        self._next_project = ""  # where a pass cut short by its time budget goes on

    def trim_project(self, slug: str, *, now_ms: int | None = None, deadline: float | None = None) -> TrimReport:
        """Walk every stream of the project once (until ``deadline``, a time.monotonic() value)."""
        report = TrimReport()
        streams = commands.project_streams(self.client, self.keys, slug)
        start = 0
        while start < len(streams):
            if deadline is not None and time.monotonic() > deadline:
                report.complete = False
                break
            chunk = streams[start : start + STREAMS_PER_CALL]
            began = time.perf_counter()
            batch = commands.trim_hot(
                self.client,
                self.keys,
                slug=slug,
                streams=chunk,
                retention_ms=self.retention_ms,
                cap=self.cap,
                budget=WORK_BUDGET,
                delete_max=DELETE_MAX,
                now_ms=now_ms,
            )
            took = time.perf_counter() - began
            report.calls += 1
            report.call_seconds += took
            report.longest_call = max(report.longest_call, took)
            if batch is None:  # the project is gone
                break
            report.deleted += batch.deleted
            if batch.resume is None:
                start += len(chunk)
            elif batch.resume == 0 and batch.deleted == 0:
                # one stream's entries outside its window, all kept (another holder's window,
                # pending state, a hold) and more than one call's budget: the next pass tries again
                start += 1
            else:
                start += batch.resume
        return report

    def run_pass(self, *, now_ms: int | None = None, seconds: float = PASS_SECONDS) -> TrimReport:
        """One pass over every project, for at most ``seconds``; a pass cut short starts the
        next one at the project it did not finish."""
        deadline = time.monotonic() + seconds
        slugs = commands.project_slugs(self.client, self.keys)
        first = next((i for i, slug in enumerate(slugs) if slug >= self._next_project), 0)
        report = TrimReport()
        for slug in slugs[first:] + slugs[:first]:
            # messages put back for a write (broker/mail/cold.py) leave again once persisted
            cool_messages(self.client, self.keys, slug=slug, cutoff_us=int((time.time() - COOL_AFTER_SECONDS) * 1e6))
            done = self.trim_project(slug, now_ms=now_ms, deadline=deadline)
            report.add(done, slug)
            if not done.complete:
                self._next_project = slug
                report.complete = False
                return report
        self._next_project = ""
        return report


def cold_unread_counts(url: str, sql: str, params: dict[str, Any], hot: set[int]) -> dict[str, int]:
    """Per agent (lower name), how many rows ``(id, name)`` of ``sql`` name a message not in
    ``hot``: unread messages the trimmer had moved out of Redis and counts in the project's cold
    hash, which a deletion from the index must lower (docs/data-model.md, "The hot window").
    Nothing for an SQLite index that does not exist yet."""
    index = Index(url)
    if index.path is not None and not index.path.exists():
        return {}
    try:
        index.ensure_schema()
        rows = index.query(sql, params)
    finally:
        index.close()
    counts: dict[str, int] = {}
    for row in rows:
        if row["id"] not in hot:
            name = row["name"].lower()
            counts[name] = counts.get(name, 0) + 1
    return counts
