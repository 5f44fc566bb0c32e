"""A file reservation's Redis record as the tools, the persistence worker and the index show it.

Kept apart from ``broker.reservations.service`` so the worker can read records without importing the
MCP side of the broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.store.times import iso_from_us


def record_dict(record: dict[str, str]) -> dict[str, Any]:
    """A ``res:<id>`` hash as the tools show it."""
    return ReservationRecord.from_hash(record).shown()


@dataclass(frozen=True, slots=True)
class ReservationRecord:
    """A record (``res:<id>`` hash) decoded; times in microseconds, ``released_us`` None while
    it was not released (it may still have expired)."""

    id: int
    agent: str
    path_pattern: str
    exclusive: bool
    reason: str
    created_us: int
    expires_us: int
    released_us: int | None

    @classmethod
    def from_hash(cls, record: dict[str, str]) -> ReservationRecord:
        released = record.get("released_us")
        return cls(
            int(record["id"]),
            record["agent"],
            record["path_pattern"],
            record["exclusive"] == "1",
            record.get("reason", ""),
            int(record["created_us"]),
            int(record["expires_us"]),
            int(released) if released else None,
        )

    def is_live(self, now_us: int) -> bool:
        return self.released_us is None and self.expires_us > now_us

    @property
    def ended_us(self) -> int:
        """When it ended (or will end, if live): its release, else its expiry."""
        return self.expires_us if self.released_us is None else self.released_us

    def shown(self) -> dict[str, Any]:
        """The record as the tools show it (the shape of ``record_dict``)."""
        released = self.released_us
        return {
            "id": self.id,
            "agent": self.agent,
            "path_pattern": self.path_pattern,
            "exclusive": self.exclusive,
            "reason": self.reason,
            "created_ts": iso_from_us(self.created_us),
            # an ended reservation shows when it really ended
            "expires_ts": iso_from_us(self.expires_us if released is None else min(self.expires_us, released)),
            "released_ts": iso_from_us(released),
        }
