"""A file reservation's Redis record as the tools, the persistence worker and the index show it.

Kept apart from ``broker.reservations.service`` so the worker can read records without importing the
MCP side of the broker.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def iso_from_us(value: str | int | None) -> str | None:
    if value in (None, ""):
        return None
    seconds, micros = divmod(int(value), 1_000_000)  # integer maths: exact to the microsecond
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros).isoformat()


def record_dict(record: dict[str, str]) -> dict[str, Any]:
    expires = record["expires_us"]
    released = record.get("released_us") or None
    return {
        "id": int(record["id"]),
        "agent": record["agent"],
        "path_pattern": record["path_pattern"],
        "exclusive": record["exclusive"] == "1",
        "reason": record.get("reason", ""),
        "created_ts": iso_from_us(record["created_us"]),
        # an ended reservation shows when it really ended
        "expires_ts": iso_from_us(min(int(expires), int(released)) if released else expires),
        "released_ts": iso_from_us(released),
    }
