"""Prometheus metrics of one broker server, served at METRICS_PATH (default ``/metrics``).

Two kinds of figures:
- counted in this process on the hot path (tool calls, errors by code, latency, doorbell lag):
  a labelled child is looked up once per tool and kept, so a call costs two increments and one
  histogram observation, no lock beyond prometheus_client's own and no Redis round trip;
- read when scraped (Redis round-trip time, persistence backlog per project, persisted
  messages and commits, dead letters, live waiters and subscriptions): one pipelined pass
  over at most METRICS_MAX_PROJECTS projects, the rest summed under ``project="_other"`` so
  the series count stays bounded whatever the number of projects.

Each server has its own registry (tests build many servers in one process; the global
registry would refuse the second).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

OTHER_PROJECTS = "_other"
# Tool latency: most calls take 1–20 ms; wait_for_mail may block up to its 120 s cap.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class BrokerMetrics:
    """The server's metric families. ``observe_call`` is the only hot-path entry point."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls = Counter("broker_tool_calls", "Tool calls served by this process", ["tool"], registry=r)
        self.errors = Counter(
            "broker_tool_errors", "Tool calls that failed, by error code", ["tool", "code"], registry=r
        )
        self.latency = Histogram(
            "broker_tool_duration_seconds", "Tool call latency", ["tool"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.doorbell_lag = Histogram(
            "broker_doorbell_lag_seconds",
            "From a delivery's inbox entry (Redis time) to this process hearing its doorbell",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.redis_rtt = Gauge("broker_redis_rtt_seconds", "Round trip of a PING to Redis, at scrape", registry=r)
        self.redis_up = Gauge("broker_redis_up", "1 if Redis answered the scrape's PING", registry=r)
        self.pending = Gauge(
            "broker_persist_pending", "Changes waiting for the persistence worker", ["project"], registry=r
        )
        self.pending_age = Gauge(
            "broker_persist_oldest_pending_seconds",
            "Age of the oldest change waiting for the persistence worker",
            ["project"],
            registry=r,
        )
        self.persisted_messages = Gauge(
            "broker_persisted_messages_total", "Messages written to the archive and index (all workers)", registry=r
        )
        self.persist_commits = Gauge(
            "broker_persist_commits_total", "Archive commits made by the persistence workers", registry=r
        )
        self.dead_letters = Gauge(
            "broker_dead_letters", "Changes the persistence worker gave up on (see `broker dead-letters`)", registry=r
        )
        self.dead_letter_age = Gauge(
            "broker_dead_letter_oldest_seconds", "Age of the oldest dead letter (0 when none)", registry=r
        )
        self.workers_alive = Gauge("broker_persist_workers", "Persistence workers alive (rq registry)", registry=r)
        self.waiters = Gauge(
            "broker_waiters", "wait_for_mail calls and SSE streams waiting in this process", registry=r
        )
        self.subscriptions = Gauge(
            "broker_push_subscriptions", "MCP push subscriptions held by this process", registry=r
        )
        self._children: dict[str, tuple[Any, Any, Any]] = {}
        self._error_children: dict[tuple[str, str], Any] = {}

    # -- hot path -------------------------------------------------------------------------
    def observe_call(self, tool: str, code: str | None, seconds: float) -> None:
        """Count one call (``code`` None when it succeeded)."""
        children = self._children.get(tool)
        if children is None:
            children = self._children[tool] = (self.calls.labels(tool), self.latency.labels(tool), None)
        children[0].inc()
        children[1].observe(seconds)
        if code is not None:
            key = (tool, code)
            error = self._error_children.get(key)
            if error is None:
                error = self._error_children[key] = self.errors.labels(tool, code)
            error.inc()

    def observe_doorbell(self, cursor: str) -> None:
        """A doorbell's cursor is its inbox entry id, ``<ms>-<seq>`` in Redis time."""
        try:
            sent_ms = int(cursor.split("-", 1)[0])
        except (ValueError, AttributeError):
            return
        self.doorbell_lag.observe(max(0.0, time.time() - sent_ms / 1000))

    def track_live(self, waiters: Callable[[], float], subscriptions: Callable[[], float]) -> None:
        self.waiters.set_function(waiters)
        self.subscriptions.set_function(subscriptions)

    # -- scrape ---------------------------------------------------------------------------
    def set_persistence(self, state: dict[str, Any], max_projects: int) -> None:
        """Set the backlog gauges from a persistence state (broker.persistence.state)."""
        self.pending.clear()
        self.pending_age.clear()
        projects = sorted(state.get("projects", []), key=lambda p: (-p["pending"], p["project"]))
        shown, rest = projects[:max_projects], projects[max_projects:]
        for project in shown:
            self.pending.labels(project["project"]).set(project["pending"])
            self.pending_age.labels(project["project"]).set(project["oldest_pending_seconds"])
        if rest:
            self.pending.labels(OTHER_PROJECTS).set(sum(p["pending"] for p in rest))
            self.pending_age.labels(OTHER_PROJECTS).set(max(p["oldest_pending_seconds"] for p in rest))
        self.persisted_messages.set(state.get("persisted_messages", 0))
        self.persist_commits.set(state.get("commits", 0))
        self.dead_letters.set(state.get("dead_letters", 0))
        self.dead_letter_age.set(state.get("oldest_dead_letter_age_seconds") or 0)
        self.workers_alive.set(state.get("workers_alive", 0))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
