"""The unified project inbox of the overseers' web view (broker/mail/oversight.py) past the hot
window: the messages the trimmer moved out of Redis, read back from the index and merged with the
hot page (issue 19; docs/data-model.md, "The hot window").

project_inbox.lua returns the project's cold mark ``t`` (created_us of the newest trimmed
message) with its page. Only when a mark exists and the page can reach at or below it (the page
is not full, or its oldest row is no newer than the mark) are the index's rows asked for: the
project's received messages created at or before the mark, older than the cursor, with the
page's filters, newest first. Both are united by message id (the hot row wins), ordered by
(created_us, id) descending like the hot page, and cut to the page's size; ``more`` says whether
a row is left after it. A trim after the page was read leaves no gap: the mark was read with it.
"""

from __future__ import annotations

from typing import Any

from broker.mail import cold
from broker.mail.cold_message import recipient_order
from broker.store.commands.oversight import InboxPage, InboxRow
from broker.store.times import micros

KIND_RANK = {"to": 0, "cc": 1, "bcc": 2}
# Received: a recipient of the message that is an agent of the project (as a hot inbox is).
RECEIVED = (
    "EXISTS (SELECT 1 FROM message_recipients r JOIN agents a ON a.id = r.agent_id "
    "WHERE r.message_id = m.id AND a.project_id = m.project_id{agent}{unread})"
)


def reaches(page: InboxPage, limit: int) -> int | None:
    """The mark's µs bound when the index must be asked: the page can reach at or below it (it
    is not full, or its oldest row is no newer than the mark), or it is full and Redis has
    nothing older (whether the index has is what ``more`` must say)."""
    upper = cold.upper_of_t(page.cold_t or None)
    if upper is None:
        return None
    full = len(page.rows) >= limit
    if full and page.more and int(page.rows[-1].cursor.split(":", 1)[0]) > upper:
        return None
    return upper


def cold_rows(
    source: cold.ColdSource,
    *,
    slug: str,
    agent: str,
    upper_us: int,
    cursor: str,
    importance: str,
    unread_only: bool,
    topic: str,
    limit: int,
) -> list[InboxRow]:
    """The index's received messages of the project (or of ``agent``) created at or before
    ``upper_us`` and older than ``cursor``, with the filters, newest first: at most ``limit``."""
    where = ["m.project_id = " + cold.PROJECT, "m.created_ts <= :upper"]
    params: dict[str, Any] = {"slug": slug, "upper": cold.iso(upper_us), "limit": limit}
    if cursor:
        us, ident = cursor.split(":", 1)
        where.append("(m.created_ts < :before OR (m.created_ts = :before AND m.id < :before_id))")
        params.update(before=cold.iso(int(us)), before_id=int(ident))
    if importance:
        where.append("m.importance = :importance")
        params["importance"] = importance
    if topic:
        where.append("lower(m.topic) = :topic")
        params["topic"] = topic.lower()
    received = RECEIVED.format(
        agent=" AND lower(a.name) = :agent" if agent else "", unread=" AND r.read_ts IS NULL" if unread_only else ""
    )
    if agent:
        params["agent"] = agent.lower()
    where.append(received)
    rows = source._query(
        f"SELECT {cold.HEAD_COLUMNS} FROM messages m {cold.SENDER_JOIN} WHERE {' AND '.join(where)} "
        f"{cold.NEWEST} LIMIT :limit",
        params,
    )
    ids = [int(row["id"]) for row in rows]
    receivers = _receivers(source, ids)
    out = []
    for row in rows:
        message_id = int(row["id"])
        lists: dict[str, list[str]] = {"to": [], "cc": [], "bcc": []}
        receipts: dict[str, tuple[str, str]] = {}
        kinds: list[str] = []
        for name, row_kind, read_ts, ack_ts, local in receivers.get(message_id, []):
            lists.setdefault(row_kind, []).append(name)
            receipts[name.lower()] = (read_ts or "", ack_ts or "")
            if local and (not agent or name.lower() == agent.lower()):
                kinds.append(row_kind)
        # as project_inbox.lua lists it: the first of to, cc, bcc among the inboxes it is in
        item = {**cold.head_of(row), "kind": min(kinds, key=KIND_RANK.get) if kinds else "to"}
        out.append(InboxRow(f"{micros(row['created_ts'])}:{message_id}", item, lists, receipts))
    return out


def _receivers(source: cold.ColdSource, ids: list[int]) -> dict[int, list[tuple[str, str, Any, Any, bool]]]:
    """message id -> (name, kind, read_ts, ack_ts, an agent of the message's project) per
    recipient, in the order they were named."""
    found: dict[int, list[tuple[str, str, Any, Any, bool]]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join(f":m{n}" for n in range(len(chunk)))
        for row in source._query(
            "SELECT r.message_id, r.kind, r.read_ts, r.ack_ts, a.name, "
            "CASE WHEN a.project_id = m.project_id THEN 1 ELSE 0 END AS local FROM message_recipients r "
            "JOIN agents a ON a.id = r.agent_id JOIN messages m ON m.id = r.message_id "
            f"WHERE r.message_id IN ({marks}) ORDER BY r.message_id, {recipient_order(source.index)}",
            {f"m{n}": message_id for n, message_id in enumerate(chunk)},
        ):
            found.setdefault(int(row["message_id"]), []).append(
                (row["name"], row["kind"], row["read_ts"], row["ack_ts"], bool(row["local"]))
            )
    return found


def merged(page: InboxPage, rows: list[InboxRow], limit: int) -> InboxPage:
    """The hot page united with the cold rows: no duplicate (the hot row wins), newest first by
    (created_us, id), at most ``limit``; ``more`` when a row is left after them."""
    seen = {int(row.item["id"]) for row in page.rows}
    union = list(page.rows) + [row for row in rows if int(row.item["id"]) not in seen]
    union.sort(key=lambda row: tuple(int(part) for part in row.cursor.split(":", 1)), reverse=True)
    more = page.more or len(union) > limit
    return InboxPage(page.human_key, union[:limit], more, page.complete, page.cold_t)
