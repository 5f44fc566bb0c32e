"""Checks of tool arguments, done before any Redis work so a rejected call changes nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from broker.config import output_format_name
from broker.errors import BrokerError
from broker.store.store import Store

THREAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
IMPORTANCE = ("low", "normal", "high", "urgent")
MAX_LIMIT = 1000


def check_thread_id(thread_id: str | None) -> str:
    if thread_id is None or not thread_id.strip():
        return ""
    thread_id = thread_id.strip()
    if not THREAD_ID.match(thread_id):
        raise BrokerError(
            "INVALID_THREAD_ID",
            f"thread_id '{thread_id}' is invalid: start with a letter or digit, then letters, digits "
            "or '._-', at most 128 characters (e.g. 'FEAT-123' or 'bd-42').",
        )
    return thread_id


def check_topic(topic: str | None) -> str:
    if topic is None or not topic.strip():
        return ""
    topic = topic.strip()
    if not TOPIC.match(topic):
        raise BrokerError(
            "INVALID_TOPIC",
            f"topic '{topic}' is invalid: use 1-64 letters, digits, '_' or '-' (e.g. 'build-status').",
        )
    return topic


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise BrokerError("INVALID_LIMIT", f"limit must be between 1 and {MAX_LIMIT}, got {limit}.")
    return limit


def since_micros(since_ts: str | None) -> str:
    """Epoch microseconds of an ISO-8601 timestamp (Z allowed, naive = UTC), "" for none."""
    if since_ts is None or not since_ts.strip():
        return ""
    try:
        moment = datetime.fromisoformat(since_ts.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BrokerError(
            "INVALID_TIMESTAMP",
            f"since_ts '{since_ts}' is not an ISO-8601 timestamp; use e.g. '2025-01-01T00:00:00Z'.",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    # Every message is newer than the epoch, and stream ids cannot be negative.
    return str(micros) if micros > 0 else ""


def check_text(store: Store, subject: str, body_md: str) -> None:
    limit = store.settings.max_subject_chars
    if len(subject) > limit:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"subject has {len(subject)} characters; the limit is {limit}. Shorten it and put details in body_md.",
        )
    size = len(body_md.encode())
    if size > store.settings.max_body_bytes:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"body_md is {size} bytes; the limit is "
            f"{store.settings.max_body_bytes}. Split it or link to a file in the repository.",
        )


def check_recipient_count(store: Store, total: int) -> None:
    if total > store.settings.max_recipients:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"{total} recipients exceed the limit of {store.settings.max_recipients}; "
            "use broadcast=True or split the send.",
        )


def check_importance(importance: str) -> str:
    if importance not in IMPORTANCE:
        raise BrokerError("INVALID_ARGUMENT", f"importance '{importance}' is not one of {', '.join(IMPORTANCE)}.")
    return importance


def check_format(value: str | None) -> str | None:
    """The reference's ``format`` argument: ``json`` or ``toon`` (any alias named), None when it
    asks for the server default. broker/mcp/server.py checks it before a tool or resource runs and
    shapes the result (broker/mcp/output.py)."""
    if value is None:
        return None
    try:
        return output_format_name(value) or None
    except ValueError as exc:
        raise BrokerError(
            "INVALID_ARGUMENT", f"{exc}. Pass format='json' or format='toon', or omit it for the server default."
        ) from None
