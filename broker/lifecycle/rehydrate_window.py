"""What ``broker rehydrate`` puts back into Redis, decided in the index: the hot window
(docs/data-model.md, "The hot window") and, for what it leaves in the index, the cold hash the
trimmer would have left. Everything here is SQL over the index (window functions, portable
between SQLite 3.25+ and PostgreSQL), so rehydrate reads the window's messages, never the
whole history: memory and time follow the window, plus one ranked pass over the history.

A holder is a stream: each recipient's inbox, and the outbox of a sender of the project. A
message is hot when it is among its holder's newest ``max_messages`` created at or after
``since`` for any of its holders; it then comes back whole (every holder's entry), as the
trimmer leaves it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from broker.config import Settings
from broker.persistence.index import Index, recipient_order
from broker.store.keys import foreign_participant
from broker.store.times import micros

CHUNK = 500
# Rows read back from a stream's newest left-out message to number its entry id (entries of
# one millisecond are numbered in order: broker/store/commands/rehydrate.py _StreamIds).
SAME_MS_ROWS = 64

# Every (stream, holder, message) of the project.
HELD = (
    "SELECT 'out' AS stream, m.sender_id AS holder, m.id, m.created_ts FROM messages m "
    "JOIN agents a ON a.id = m.sender_id WHERE m.project_id = :pid AND a.project_id = :pid "
    "UNION ALL "
    "SELECT 'in' AS stream, r.agent_id AS holder, m.id, m.created_ts FROM message_recipients r "
    "JOIN messages m ON m.id = r.message_id JOIN agents a ON a.id = r.agent_id "
    "WHERE m.project_id = :pid AND a.project_id = :pid"
)
# Ids of the messages inside some holder's window.
HOT = (
    "SELECT DISTINCT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY stream, holder "
    f"ORDER BY created_ts DESC, id DESC) AS n FROM ({HELD}) held WHERE created_ts >= :since) ranked "
    "WHERE n <= :cap"
)


@dataclass(frozen=True)
class Window:
    """Per inbox and per outbox the newest ``max_messages`` messages created at or after
    ``since_us``; None as a window: every message (the importer's rebuild)."""

    max_messages: int
    since_us: int

    @classmethod
    def of(cls, settings: Settings, now: datetime | None = None) -> Window:
        now_us = micros((now or datetime.now(UTC)).isoformat())
        return cls(settings.hot_inbox_max_messages, now_us - settings.hot_retention_seconds * 1_000_000)

    def params(self, pid: int) -> dict[str, Any]:
        # created_ts is ISO text in UTC, which sorts as time (no fraction sorts before any)
        since = datetime.fromtimestamp(self.since_us // 1_000_000, UTC).replace(microsecond=self.since_us % 1_000_000)
        return {"pid": pid, "since": since.isoformat(), "cap": max(self.max_messages, 0)}


def hot_ids(index: Index, pid: int, window: Window | None) -> set[int]:
    """Ids of the project's messages that come back into Redis."""
    if window is None:
        return {row["id"] for row in index.query("SELECT id FROM messages WHERE project_id = :pid", {"pid": pid})}
    return {row["id"] for row in index.query(HOT, window.params(pid))}


def _in_list(ids: list[int]) -> tuple[str, dict[str, int]]:
    names = {f"i{n}": value for n, value in enumerate(ids)}
    return ", ".join(f":{name}" for name in names), names


def messages_of(index: Index, ids: set[int]) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """The messages ``ids`` (whole rows, oldest first) and their recipient rows (in the order
    they were written, per message)."""
    messages: list[dict[str, Any]] = []
    recipients: dict[int, list[dict[str, Any]]] = defaultdict(list)
    ordered = sorted(ids)
    for start in range(0, len(ordered), CHUNK):
        marks, names = _in_list(ordered[start : start + CHUNK])
        messages.extend(dict(row) for row in index.query(f"SELECT * FROM messages WHERE id IN ({marks})", names))
        for row in index.query(
            f"SELECT r.message_id, r.agent_id, r.kind, r.read_ts, r.ack_ts FROM message_recipients r "
            f"WHERE r.message_id IN ({marks}) ORDER BY {recipient_order(index)}",
            names,
        ):
            recipients[row["message_id"]].append(dict(row))
    messages.sort(key=lambda m: (m["created_ts"], m["id"]))
    return messages, recipients


def cold_fields(index: Index, pid: int, agents: Mapping[int, Mapping[str, Any]], window: Window) -> dict[str, str]:
    """The cold hash for what stays in the index: per inbox and outbox the newest entry id left
    out (``in:`` / ``out:<name>``), per agent how many left-out messages it had not read
    (``unread:<name>``), and ``t``, the created_us of the newest one."""
    params = window.params(pid)
    fields: dict[str, str] = {}
    newest = index.query(
        "SELECT stream, holder, id, created_ts FROM (SELECT stream, holder, id, created_ts, ROW_NUMBER() OVER "
        f"(PARTITION BY stream, holder ORDER BY created_ts DESC, id DESC) AS c FROM ({HELD}) held "
        f"WHERE id NOT IN ({HOT})) cold WHERE c = 1",
        params,
    )
    for row in newest:
        name = agents.get(row["holder"], {}).get("name")
        if name:
            seq = _entry_seq(index, pid, row["stream"], row["holder"], row["id"], row["created_ts"])
            fields[f"{row['stream']}:{name.lower()}"] = f"{micros(row['created_ts']) // 1000}-{seq}"
    for row in index.query(
        "SELECT r.agent_id, count(*) AS n FROM message_recipients r JOIN messages m ON m.id = r.message_id "
        f"WHERE m.project_id = :pid AND r.read_ts IS NULL AND r.message_id NOT IN ({HOT}) GROUP BY r.agent_id",
        params,
    ):
        name = agents.get(row["agent_id"], {}).get("name")
        if name and row["n"]:
            fields[f"unread:{name.lower()}"] = str(row["n"])
    last = index.query(
        f"SELECT created_ts FROM messages WHERE project_id = :pid AND id NOT IN ({HOT}) "
        "ORDER BY created_ts DESC, id DESC LIMIT 1",
        params,
    )
    if last:
        fields["t"] = str(micros(last[0]["created_ts"]))
    return fields


def _entry_seq(index: Index, pid: int, stream: str, holder: int, message_id: int, created_ts: str) -> int:
    """The sequence part of the message's entry id in the stream: how many of the stream's
    entries before it fall in its millisecond."""
    if stream == "out":
        sql = (
            "SELECT id, created_ts FROM messages WHERE project_id = :pid AND sender_id = :holder "
            "AND created_ts <= :ts ORDER BY created_ts DESC, id DESC LIMIT :rows"
        )
    else:
        sql = (
            "SELECT m.id, m.created_ts FROM message_recipients r JOIN messages m ON m.id = r.message_id "
            "WHERE m.project_id = :pid AND r.agent_id = :holder AND m.created_ts <= :ts "
            "ORDER BY m.created_ts DESC, m.id DESC LIMIT :rows"
        )
    ms = micros(created_ts) // 1000
    rows = index.query(sql, {"pid": pid, "holder": holder, "ts": created_ts, "rows": SAME_MS_ROWS})
    earlier = [r for r in rows if (r["created_ts"], r["id"]) < (created_ts, message_id)]
    return sum(1 for r in earlier if micros(r["created_ts"]) // 1000 == ms)


def thread_participants(index: Index, pid: int, agents: Mapping[int, Mapping[str, Any]]) -> dict[str, set[str]]:
    """Every thread of the project -> its participants as tpart: holds them (the sender, or
    project:<slug>#<name> for one of another project, and the recipients), for all its
    messages, hot or not (the trimmer leaves tpart: alone)."""
    out: dict[str, set[str]] = defaultdict(set)
    for row in index.query(
        "SELECT DISTINCT m.thread_id, a.name, a.project_id, p.slug FROM messages m "
        "JOIN agents a ON a.id = m.sender_id JOIN projects p ON p.id = a.project_id "
        "WHERE m.project_id = :pid AND m.thread_id IS NOT NULL AND m.thread_id <> ''",
        {"pid": pid},
    ):
        name = row["name"]
        out[row["thread_id"]].add(name.lower() if row["project_id"] == pid else foreign_participant(row["slug"], name))
    for row in index.query(
        "SELECT DISTINCT m.thread_id, r.agent_id FROM message_recipients r JOIN messages m ON m.id = r.message_id "
        "WHERE m.project_id = :pid AND m.thread_id IS NOT NULL AND m.thread_id <> ''",
        {"pid": pid},
    ):
        name = agents.get(row["agent_id"], {}).get("name")
        if name:
            out[row["thread_id"]].add(name.lower())
    return out
