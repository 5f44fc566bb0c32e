"""Tool call counters and the ring of recent calls behind resource://tooling/metrics and
resource://tooling/recent.

Kept in this process's memory (no Redis round trip on the hot path): each broker process
counts the calls it served, and the figures restart with the process. Recording is a dict
lookup, two integer increments and a deque append.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from broker.mcp.catalog import cluster_of

RING_SIZE = 4096
MAX_FIELD_CHARS = 256  # a project key or name kept in the ring is cut to this


def argument_field(arguments: dict[str, Any] | None, *names: str) -> str | None:
    if not arguments:
        return None
    for name in names:
        value = arguments.get(name)
        if isinstance(value, str) and value:
            return value[:MAX_FIELD_CHARS]
    return None


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


class ToolUsage:
    """Calls and errors per tool, and the last RING_SIZE successful calls."""

    def __init__(self) -> None:
        # name -> [calls, errors]; only tools the server registered are counted
        self.counts: dict[str, list[int]] = {}
        self.recent: deque[tuple[float, str, str | None, str | None]] = deque(maxlen=RING_SIZE)

    def track(self, names: list[str]) -> None:
        for name in names:
            self.counts.setdefault(name, [0, 0])

    def started(self, name: str) -> list[int] | None:
        counts = self.counts.get(name)
        if counts is not None:
            counts[0] += 1
        return counts

    def succeeded(self, name: str, arguments: dict[str, Any] | None) -> None:
        self.recent.append(
            (
                time.time(),
                name,
                argument_field(arguments, "project_key", "human_key"),
                argument_field(arguments, "agent_name", "sender_name", "from_agent", "requester", "name"),
            )
        )

    # -- reading ------------------------------------------------------------------------
    def metrics(self, complexity: dict[str, str]) -> list[dict[str, Any]]:
        """One row per tool of ``complexity`` (registered tool -> its complexity), by name."""
        rows = []
        for name in sorted(complexity):
            calls, errors = self.counts.get(name, (0, 0))
            rows.append(
                {
                    "name": name,
                    "calls": calls,
                    "errors": errors,
                    "cluster": cluster_of(name),
                    "capabilities": [],
                    "complexity": complexity[name],
                }
            )
        return rows

    def recent_entries(
        self,
        window_seconds: float,
        agent: str | None,
        want_project: str | None,
        slug_of: Callable[[str], str | None],
    ) -> list[dict[str, Any]]:
        """Calls within the window, newest first; ``agent`` matches case-insensitively and
        ``want_project`` is a slug that each entry's project key (a path or a slug) is mapped
        to by ``slug_of`` (paths that slugify alike are different projects)."""
        cutoff = time.time() - window_seconds
        want_agent = agent.lower() if agent else None
        entries = []
        for timestamp, tool, entry_project, entry_agent in reversed(self.recent):
            if timestamp < cutoff:
                break
            if want_agent and (entry_agent or "").lower() != want_agent:
                continue
            if want_project and (not entry_project or slug_of(entry_project) != want_project):
                continue
            entries.append(
                {
                    "timestamp": iso(timestamp),
                    "tool": tool,
                    "project": entry_project,
                    "agent": entry_agent,
                    "cluster": cluster_of(tool),
                }
            )
        return entries
