"""Cold pages: what list reads take from the index once the hot-window trimmer moved it out of Redis.

A list read (fetch_inbox, fetch_topic, the inbox/mailbox/outbox resources, the inbox views)
reads its hot page and the project's ``cold`` marks in one step (docs/data-model.md, "The hot
window"). Only when a mark exists and the page can reach at or below it does it ask the index
here for the newest rows at or below the mark with the same filters, then ``merge`` unites
both: deduplicated by message id (the hot copy wins), ordered as the hot read orders, limit
applied last. A trim between the two reads leaves no gap: the mark was read with the page, a
message leaves Redis only once it is in the index, and every message trimmed after the page
was read is on the page already.

Items are built to equal the hot ones key for key and in the same key order (the head that
send_message.lua writes, then ``kind``, then ``body_md``). Every query is one statement with
joins and named parameters (portable between SQLite and PostgreSQL), run on a worker thread.
Single messages (the message and thread resources, marks and acks on cold mail) are another
module's (broker/mail/cold.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from broker.persistence.index import Index, recipient_order, shared_index
from broker.store.store import Store
from broker.store.times import micros

URGENT = ("high", "urgent")

# The columns of a message's head, its sender's name and project, as every cold query reads them.
HEAD_COLUMNS = (
    "m.id, m.project_id, m.sender_id, m.thread_id, m.topic, m.subject, m.importance, m.ack_required, "
    "m.created_ts, m.attachments, s.name AS sender_name, sp.id AS sender_pid, sp.slug AS sender_slug, "
    "sp.human_key AS sender_hk"
)
SENDER_JOIN = "JOIN agents s ON s.id = m.sender_id JOIN projects sp ON sp.id = s.project_id"
# The viewing agent of the project (names are unique per project whatever their case).
ME = "(SELECT a.id FROM agents a JOIN projects p ON p.id = a.project_id WHERE p.slug = :slug AND lower(a.name) = :me)"
PROJECT = "(SELECT p.id FROM projects p WHERE p.slug = :slug)"
NEWEST = "ORDER BY m.created_ts DESC, m.id DESC"
KIND_RANK = {"to": 0, "cc": 1, "bcc": 2}


# -- marks ----------------------------------------------------------------------------------------
def entry_ms(entry_id: str) -> int:
    """The millisecond part of a stream entry id "<ms>-<seq>"."""
    return int(entry_id.split("-", 1)[0])


def mark_upper_us(entry_id: str | None) -> int | None:
    """The newest created_us a message trimmed at or below stream entry ``entry_id`` can have:
    an entry's id is its message's creation ms or later (held mail is delivered later)."""
    if not entry_id:
        return None
    return (entry_ms(entry_id) + 1) * 1000 - 1


def upper_of_t(created_us: str | None) -> int | None:
    """The project-wide mark ``t`` (created_us of the newest trimmed message) as a bound."""
    return int(created_us) if created_us else None


def iso(us: int) -> str:
    """ISO-8601 text of epoch microseconds, as the index stores created_ts."""
    seconds, rest = divmod(us, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest).isoformat()


def reaches(page_oldest_us: int | None, page_full: bool, upper_us: int | None, since_us: str) -> bool:
    """Whether a hot page (newest first; ``page_oldest_us`` the creation µs of its oldest item)
    can reach messages at or below a mark whose bound is ``upper_us``: no mark, no; a full page
    whose oldest item is newer than the bound, no; a ``since`` at or after the bound, no."""
    if upper_us is None:
        return False
    if since_us and int(since_us) >= upper_us:
        return False
    return not (page_full and page_oldest_us is not None and page_oldest_us > upper_us)


# -- merging --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Ranked:
    """An item with the key it is ordered by: (stream ms, created µs, id), newest first."""

    key: tuple[int, int, int]
    item: dict[str, Any]
    extra: Any = None  # what a read returns beside the item (a view's read_at)


def cold_key(created_us: int, message_id: int) -> tuple[int, int, int]:
    return (created_us // 1000, created_us, message_id)


def merge(hot: Sequence[Ranked], cold: Iterable[Ranked], limit: int, newest_first: bool = True) -> list[Ranked]:
    """Union of a hot page and cold rows, each already in read order: the hot order is kept as
    it is, cold rows go where their key falls, a cold row whose id is on the hot page is left
    out, and the first ``limit`` are kept."""
    seen = {int(r.item["id"]) for r in hot}
    rest = [r for r in cold if int(r.item["id"]) not in seen]
    out: list[Ranked] = []
    i = j = 0
    while len(out) < limit and (i < len(hot) or j < len(rest)):
        if j >= len(rest):
            out.append(hot[i])
            i += 1
        elif i >= len(hot):
            out.append(rest[j])
            j += 1
        elif (hot[i].key >= rest[j].key) == newest_first:
            out.append(hot[i])
            i += 1
        else:
            out.append(rest[j])
            j += 1
    return out


# -- items ----------------------------------------------------------------------------------------
def head_of(row: Any) -> dict[str, Any]:
    """A message's head as send_message.lua writes it (lib/contacts.lua message_head), from a
    row whose first columns are HEAD_COLUMNS (read by position: the hot loop of a cold page)."""
    (message_id, project_id, sender_id, thread_id, topic, subject, importance, ack, created, attachments,
     sender, sender_pid, sender_slug, sender_hk) = tuple(row[:14])  # fmt: skip
    head: dict[str, Any] = {
        "id": int(message_id),
        "project_id": int(project_id),
        "sender_id": int(sender_id),
        "thread_id": thread_id or None,
        "topic": topic or None,
        "subject": subject,
        "importance": importance,
        "ack_required": bool(ack),
        "created_ts": created,
        "attachments": json.loads(attachments) if attachments and attachments != "[]" else [],
        "from": sender,
    }
    if sender_pid != project_id:
        head["from_project"] = sender_hk
        head["from_project_slug"] = sender_slug
        head["from_address"] = f"project:{sender_slug}#{sender}"
    return head


def _received_item(row: Any, bodies: bool, with_kind: bool = True) -> dict[str, Any]:
    """A received item: the head, then kind (column 15) and body_md (column 16) as asked."""
    item = head_of(row)
    if with_kind:
        item["kind"] = row[14]
    if bodies:
        item["body_md"] = row[15] or ""
    return item


def _since_and_topic(where: list[str], params: dict[str, Any], since_us: str, topic: str) -> None:
    """Add the read's ``since_ts`` (µs, "" for none) and lower-cased ``topic`` ("" for any)."""
    if since_us:
        where.append("m.created_ts > :since")
        params["since"] = iso(int(since_us))
    if topic:
        where.append("lower(m.topic) = :topic")
        params["topic"] = topic


# -- the source -----------------------------------------------------------------------------------
class ColdSource:
    """The index's answers to the list reads, for rows at or below a mark (µs bound)."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def _query(self, sql: str, params: dict[str, Any]) -> list[Any]:
        self.index.ensure_schema()  # a no-op once done on this Index
        return self.index.query(sql, params)

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # received mail ------------------------------------------------------------------------------
    def received(
        self,
        *,
        slug: str,
        name: str,
        upper_us: int,
        limit: int,
        since_us: str = "",
        urgent_only: bool = False,
        topic: str = "",
        include_bodies: bool = False,
        with_kind: bool = True,
    ) -> list[Ranked]:
        """The agent's newest received messages created at or before ``upper_us`` with the
        filters (``topic`` lower-cased, "" for any), newest first.

        The page's ids are picked first from the project's (project_id, created_ts) index and the
        recipients' primary key alone, newest first with no sort, so mail the agent did not
        receive costs an index step, not a row read; then only the page's rows are read."""
        where = ["m.project_id = " + PROJECT, "m.created_ts <= :upper"]
        params: dict[str, Any] = {"slug": slug, "me": name.lower(), "upper": iso(upper_us), "limit": limit}
        _since_and_topic(where, params, since_us, topic)
        if urgent_only:
            where.append("m.importance IN ('high', 'urgent')")
        body = ", m.body_md" if include_bodies else ""
        rows = self._query(
            f"SELECT {HEAD_COLUMNS}, page.kind{body} FROM (SELECT m.id AS id, m.created_ts AS created_ts, r.kind AS kind "
            f"FROM messages m JOIN message_recipients r ON r.message_id = m.id AND r.agent_id = {ME} "
            f"WHERE {' AND '.join(where)} {NEWEST} LIMIT :limit) page JOIN messages m ON m.id = page.id "
            f"{SENDER_JOIN} ORDER BY page.created_ts DESC, page.id DESC",
            params,
        )
        items = [_received_item(row, include_bodies, with_kind) for row in rows]
        return [Ranked(cold_key(micros(item["created_ts"]), item["id"]), item) for item in items]

    def view(
        self, *, slug: str, name: str, upper_us: int, window: int, mode: str, limit: int, newest_first: bool
    ) -> list[Ranked]:
        """A view's cold rows among the agent's newest ``window`` received messages created at or
        before ``upper_us``: "urgent-unread" (high/urgent, not read) or "ack" (ack-required, not
        acknowledged); each Ranked carries the read_ts. The ``limit`` newest (or oldest)."""
        urgent = " AND m.importance IN ('high', 'urgent')" if mode == "urgent-unread" else ""
        keep = "c.read_ts IS NULL" if mode == "urgent-unread" else "c.ack_required AND c.ack_ts IS NULL"
        order = "DESC" if newest_first else "ASC"
        rows = self._query(
            f"SELECT c.* FROM (SELECT {HEAD_COLUMNS}, r.kind, r.read_ts, r.ack_ts FROM message_recipients r "
            f"JOIN messages m ON m.id = r.message_id {SENDER_JOIN} WHERE r.agent_id = {ME} "
            f"AND m.project_id = {PROJECT} AND m.created_ts <= :upper{urgent} {NEWEST} LIMIT :window) c "
            f"WHERE {keep} ORDER BY c.created_ts {order}, c.id {order} LIMIT :limit",
            {"slug": slug, "me": name.lower(), "upper": iso(upper_us), "window": window, "limit": limit},
        )
        return [
            Ranked(cold_key(micros(row["created_ts"]), int(row["id"])), _received_item(row, False), row["read_ts"])
            for row in rows
        ]

    # sent mail ----------------------------------------------------------------------------------
    def sent(
        self,
        *,
        slug: str,
        name: str,
        upper_us: int,
        limit: int,
        since_us: str = "",
        topic: str = "",
        include_bodies: bool = False,
        with_recipients: bool = True,
    ) -> list[Ranked]:
        """The agent's newest sent messages (of its own project) created at or before
        ``upper_us``, newest first: heads with to/cc/bcc (as its sender sees them) when
        ``with_recipients``, then body_md if asked."""
        where = ["m.sender_id = " + ME, "m.project_id = " + PROJECT, "m.created_ts <= :upper"]
        params: dict[str, Any] = {"slug": slug, "me": name.lower(), "upper": iso(upper_us), "limit": limit}
        _since_and_topic(where, params, since_us, topic)
        body = ", m.body_md" if include_bodies else ""
        rows = self._query(
            f"SELECT {HEAD_COLUMNS}{body} FROM messages m {SENDER_JOIN} WHERE {' AND '.join(where)} {NEWEST} "
            "LIMIT :limit",
            params,
        )
        named = self.recipients([int(row["id"]) for row in rows]) if with_recipients and rows else {}
        ranked = []
        for row in rows:
            item = head_of(row)
            if with_recipients:
                item.update(named.get(int(row["id"]), {"to": [], "cc": [], "bcc": []}))
            if include_bodies:
                item["body_md"] = row["body_md"] or ""
            ranked.append(Ranked(cold_key(micros(row["created_ts"]), int(row["id"])), item))
        return ranked

    def recipients(self, ids: list[int]) -> dict[int, dict[str, list[str]]]:
        """message id -> {to, cc, bcc} names as registered, in the order they were named."""
        found: dict[int, dict[str, list[str]]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join(f":m{n}" for n in range(len(chunk)))
            rows = self._query(
                f"SELECT r.message_id, r.kind, a.name FROM message_recipients r JOIN agents a ON a.id = r.agent_id "
                f"WHERE r.message_id IN ({marks}) ORDER BY r.message_id, {recipient_order(self.index)}",
                {f"m{n}": message_id for n, message_id in enumerate(chunk)},
            )
            for row in rows:
                lists = found.setdefault(int(row["message_id"]), {"to": [], "cc": [], "bcc": []})
                lists.setdefault(row["kind"], []).append(row["name"])
        return found

    def overseen(
        self,
        *,
        slug: str,
        agent: str,
        upper_us: int,
        before: tuple[int, int] | None,
        importance: str,
        unread_only: bool,
        topic: str,
        limit: int,
    ) -> list[tuple[int, dict[str, Any], dict[str, list[str]], dict[str, tuple[str, str]]]]:
        """The unified inbox's rows (every agent's received mail, or ``agent``'s) created at or
        before ``upper_us`` and before the cursor ``before`` (created_us, id), newest first:
        (created_us, item with kind, {to, cc, bcc}, {lower name: (read_ts or "", ack_ts or "")})."""
        where = ["m.project_id = " + PROJECT, "m.created_ts <= :upper"]
        params: dict[str, Any] = {"slug": slug, "upper": iso(upper_us), "limit": limit}
        held = ["r.message_id = m.id"]
        if agent:
            held.append("r.agent_id = " + ME)
            params["me"] = agent.lower()
        else:
            held.append("r.agent_id IN (SELECT a.id FROM agents a WHERE a.project_id = " + PROJECT + ")")
        if unread_only:
            held.append("r.read_ts IS NULL")
        where.append(f"EXISTS (SELECT 1 FROM message_recipients r WHERE {' AND '.join(held)})")
        if before:
            where.append("(m.created_ts < :cts OR (m.created_ts = :cts AND m.id < :cid))")
            params.update(cts=iso(before[0]), cid=before[1])
        if importance:
            where.append("m.importance = :importance")
            params["importance"] = importance
        if topic:
            where.append("lower(m.topic) = :topic")
            params["topic"] = topic
        rows = self._query(
            f"SELECT {HEAD_COLUMNS} FROM messages m {SENDER_JOIN} WHERE {' AND '.join(where)} {NEWEST} LIMIT :limit",
            params,
        )
        states = self.receipts([int(row[0]) for row in rows]) if rows else {}
        found = []
        for row in rows:
            head = head_of(row)
            lists, receipts, kinds = states.get(head["id"], ({"to": [], "cc": [], "bcc": []}, {}, {}))
            # as project_inbox.lua lists it: the first of to, cc, bcc among the inboxes it is in
            kind = kinds.get(agent.lower()) if agent else min(kinds.values(), key=KIND_RANK.get, default=None)
            found.append((micros(head["created_ts"]), {**head, "kind": kind}, lists, receipts))
        return found

    def receipts(
        self, ids: list[int]
    ) -> dict[int, tuple[dict[str, list[str]], dict[str, tuple[str, str]], dict[str, str]]]:
        """message id -> ({to, cc, bcc} names, {lower name: (read_ts or "", ack_ts or "")},
        {lower name: kind}), recipients in the order they were named."""
        found: dict[int, tuple[dict[str, list[str]], dict[str, tuple[str, str]], dict[str, str]]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join(f":m{n}" for n in range(len(chunk)))
            rows = self._query(
                f"SELECT r.message_id, r.kind, a.name, r.read_ts, r.ack_ts FROM message_recipients r "
                f"JOIN agents a ON a.id = r.agent_id WHERE r.message_id IN ({marks}) "
                f"ORDER BY r.message_id, {recipient_order(self.index)}",
                {f"m{n}": message_id for n, message_id in enumerate(chunk)},
            )
            for message_id, kind, name, read_ts, ack_ts in rows:
                lists, receipts, kinds = found.setdefault(int(message_id), ({"to": [], "cc": [], "bcc": []}, {}, {}))
                lists.setdefault(kind, []).append(name)
                receipts[name.lower()] = (read_ts or "", ack_ts or "")
                kinds[name.lower()] = kind
        return found

    def bodies(self, ids: list[int]) -> dict[int, str]:
        """message id -> body_md, for messages whose body left Redis between two reads."""
        found: dict[int, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join(f":m{n}" for n in range(len(chunk)))
            rows = self._query(
                f"SELECT id, body_md FROM messages WHERE id IN ({marks})",
                {f"m{n}": message_id for n, message_id in enumerate(chunk)},
            )
            found.update({int(row["id"]): row["body_md"] or "" for row in rows})
        return found

    def heads(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        """message id -> head with to/cc/bcc, for sent messages that left Redis between two reads."""
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join(f":m{n}" for n in range(len(chunk)))
            rows = self._query(
                f"SELECT {HEAD_COLUMNS}, m.body_md FROM messages m {SENDER_JOIN} WHERE m.id IN ({marks})",
                {f"m{n}": message_id for n, message_id in enumerate(chunk)},
            )
            named = self.recipients([int(row["id"]) for row in rows]) if rows else {}
            for row in rows:
                item = head_of(row)
                item.update(named.get(int(row["id"]), {"to": [], "cc": [], "bcc": []}))
                item["body_md"] = row["body_md"] or ""
                found[int(row["id"])] = item
        return found


_sources: weakref.WeakKeyDictionary[Store, ColdSource] = weakref.WeakKeyDictionary()
_sources_lock = threading.Lock()


def source(store: Store) -> ColdSource:
    """The store's cold source, on the index of its settings (one per store, opened lazily)."""
    with _sources_lock:
        found = _sources.get(store)
        if found is None:
            found = _sources[store] = ColdSource(shared_index(store.settings))
        return found
