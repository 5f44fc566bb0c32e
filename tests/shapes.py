"""Result shapes of the reference (§3.1-3.3) and small assertions shared by the tool tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

PROJECT_KEYS = {"id", "slug", "human_key", "created_at"}
AGENT_KEYS = {
    "id",
    "name",
    "program",
    "model",
    "task_description",
    "inception_ts",
    "last_active_ts",
    "project_id",
    "attachments_policy",
}
HEAD_KEYS = {
    "id",
    "project_id",
    "sender_id",
    "thread_id",
    "topic",
    "subject",
    "importance",
    "ack_required",
    "created_ts",
    "attachments",
    "from",
}


def assert_iso_utc(value: str) -> datetime:
    """A timestamp as the reference writes it: datetime.isoformat() of an aware UTC time."""
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == timedelta(0), value
    assert moment.isoformat() == value, value
    assert value.endswith("+00:00")
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=5), value
    return moment


def payload(result: dict[str, Any]) -> dict[str, Any]:
    assert result["count"] == 1 and len(result["deliveries"]) == 1, result
    return result["deliveries"][0]["payload"]
