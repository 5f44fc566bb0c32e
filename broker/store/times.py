"""Stored times: the scripts keep microseconds since the epoch (``*_us``) beside ISO-8601 text;
these convert one into the other, exactly (integer maths, UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_from_us(value: str | int | None) -> str | None:
    """ISO-8601 text of a stored ``*_us`` value; None for none ("" or None)."""
    if value in (None, ""):
        return None
    seconds, micros = divmod(int(value), 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros).isoformat()


def micros(iso: str) -> int:
    """Microseconds since the epoch of an ISO-8601 time (a naive one is UTC): what ``*_us`` holds."""
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond
