"""``broker rehydrate``: rebuild Redis from the SQLite index after Redis lost its data.

For each project in the index it writes back what the send and mark scripts would have
written: the project and agent records (with token digests, so tokens keep working), the
messages of the hot window (per inbox and per outbox the newest HOT_INBOX_MAX_MESSAGES created
within HOT_RETENTION_SECONDS; a message inside any holder's window comes back whole) with their
bodies, each recipient's inbox stream entry, unread set, urgent and topic indexes, read/ack
times, the senders' outboxes and topic indexes, the thread indexes, and the live file
reservations. The older messages stay in the index only: the project's ``cold`` hash gets the
marks and unread counts the trimmer would have left for them (docs/data-model.md, "The hot
window"), so reads still answer for them.
Inbox stream ids are rebuilt from each message's creation time, so ``since_ts`` paging and
newest-first order behave as before. Id counters are raised past the largest id in the index
so new ids never collide. Nothing is added to the pending set: it is all persisted already.

A project that still exists in Redis is left alone unless ``force`` is given (then its keys
are deleted and rebuilt, but for the few only Redis holds: ``KEPT_BY_REBUILD`` in broker/store/keys.py). Even with
``force``, a project with pending, in-flight or dead-lettered entries is left alone: they are
not in the index yet, and rebuilding would delete them; so is one with mail held for a
contact approval (in Redis only).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from broker.config import Settings
from broker.mail.cold import recipient_order
from broker.persistence.index import Index
from broker.reservations import globs
from broker.store.commands.rehydrate import ColdMarks, Rebuild
from broker.store.ids import largest_indexed_ids
from broker.store.keys import Keys
from broker.store.times import micros

# The messages columns but the body (rehydrate reads bodies of the hot window only).
HEAD_COLUMNS = "id, project_id, sender_id, thread_id, topic, subject, importance, ack_required, created_ts, attachments"
BODY_CHUNK = 500


@dataclass(frozen=True)
class Window:
    """The hot window (docs/data-model.md, "The hot window"): per inbox and per outbox the
    newest ``max_messages`` messages created at or after ``since_us``."""

    max_messages: int
    since_us: int

    @classmethod
    def of(cls, settings: Settings, now: datetime | None = None) -> Window:
        now_us = micros((now or datetime.now(UTC)).isoformat())
        return cls(settings.hot_inbox_max_messages, now_us - settings.hot_retention_seconds * 1_000_000)


def hot_window(
    messages: list[dict[str, Any]],
    agents: dict[int, dict[str, Any]],
    recipients: dict[int, list[dict[str, Any]]],
    window: Window,
) -> set[int]:
    """Ids of the messages (oldest first) inside the window of any holder: the inbox of each
    recipient and the outbox of a sender of this project. A message is hot or cold whole, as
    the trimmer leaves it: inside one holder's window, it keeps every holder's entry."""
    held: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        if message["sender_id"] in agents:
            held[("out", message["sender_id"])].append(message)
        for row in recipients.get(message["id"], []):
            if row["agent_id"] in agents:
                held[("in", row["agent_id"])].append(message)
    hot: set[int] = set()
    for stream in held.values():
        newest = stream[-window.max_messages :] if window.max_messages > 0 else []
        hot.update(m["id"] for m in newest if micros(m["created_ts"]) >= window.since_us)
    return hot


def _bodies(index: Index, ids: list[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for start in range(0, len(ids), BODY_CHUNK):
        chunk = ids[start : start + BODY_CHUNK]
        names = {f"i{n}": value for n, value in enumerate(chunk)}
        marks = ", ".join(f":{name}" for name in names)
        for row in index.query(f"SELECT id, body_md FROM messages WHERE id IN ({marks})", names):
            out[row["id"]] = row["body_md"] or ""
    return out


@dataclass
class Report:
    projects: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unpersisted: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    agents: int = 0
    messages: int = 0
    cold_messages: int = 0
    deliveries: int = 0
    reservations: int = 0
    links: int = 0

    def lines(self) -> list[str]:
        out = [
            f"rehydrated {len(self.projects)} project(s): {self.agents} agents, {self.messages} messages "
            f"(and {self.cold_messages} older ones left to the index), "
            f"{self.deliveries} inbox entries, {self.reservations} live file reservations, "
            f"{self.links} contact links"
        ]
        if self.skipped:
            out.append(f"left alone (still in Redis; use --force to rebuild): {', '.join(self.skipped)}")
        if self.unpersisted:
            out.append(
                f"left alone (changes not persisted yet; run `broker worker --burst`, and for dead letters "
                "`broker dead-letters retry`, then again): "
                f"{', '.join(self.unpersisted)}"
            )
        if self.held:
            out.append(
                "left alone (mail held for a contact approval, which the index cannot restore; "
                f"rebuild once it is approved, refused or expired): {', '.join(self.held)}"
            )
        return out


async def rehydrate_all(settings: Settings, redis_url: str, force: bool = False, now: datetime | None = None) -> Report:
    rebuild = Rebuild(redis_url, Keys(settings.redis_key_prefix))
    index = Index.from_settings(settings)
    index.ensure_schema()
    report = Report()
    window = Window.of(settings, now)
    try:
        for project in index.query("SELECT * FROM projects ORDER BY id"):
            await rehydrate_project(
                rebuild, index, dict(project), report, force, settings.file_reservation_retention_seconds, window
            )
        await rebuild.raise_counters(largest=largest_indexed_ids(index))
    finally:
        await rebuild.close()
        index.close()
    return report


async def rehydrate_project(
    rebuild: Rebuild,
    index: Index,
    project: dict[str, Any],
    report: Report,
    force: bool,
    retention: int,
    window: Window | None = None,
) -> None:
    slug = project["slug"]
    exists = await rebuild.project_exists(slug=slug)
    if exists and not force:
        report.skipped.append(slug)
        return
    # Rebuilding deletes the pending and in-flight sets: changes not in the index yet would
    # be lost from Redis and never persisted.
    if exists and await rebuild.has_unpersisted(slug=slug):
        report.unpersisted.append(slug)
        return
    # Keys the index cannot rebuild stay: a retry's idempotency record (deleting it delivered
    # the retried send twice), hook cursors, window identities, rate buckets. Without the
    # project hash, what is left is a rebuild cut short (every write script needs the hash):
    # cleared, but the pending sets, which a drain writes once the project is back.
    # Mail held for a contact approval has no recipient rows in the index: rebuilding would
    # drop it while its sender was told it is queued.
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    if not await rebuild.clear(
        slug=slug, keep_pending=not exists, unless_live_held_after_us=now_us if exists else None
    ):
        report.held.append(slug)
        return
    # The project hash (deleted above) is written last: until then every call into the
    # project is refused (NO_PROJECT, ensure_project's REHYDRATE_REQUIRED), so a send during the
    # rebuild cannot append a live stream entry ahead of the older ones restored after it
    # (which failed the rebuild half-way, leaving inboxes without their older mail).
    pid = project["id"]
    agents = {row["id"]: dict(row) for row in index.query("SELECT * FROM agents WHERE project_id = :pid", {"pid": pid})}
    await rebuild.write_agents(slug=slug, project_id=pid, agents=list(agents.values()))
    report.agents += len(agents)

    recipients: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in index.query(
        "SELECT r.* FROM message_recipients r JOIN messages m ON m.id = r.message_id "
        f"WHERE m.project_id = :pid ORDER BY {recipient_order(index)}",
        {"pid": pid},
    ):
        recipients[row["message_id"]].append(dict(row))
    foreign = {
        row["id"]: dict(row)
        for row in index.query(
            "SELECT a.id, a.name, p.slug, p.human_key FROM agents a JOIN projects p ON p.id = a.project_id "
            "WHERE a.project_id <> :pid",
            {"pid": pid},
        )
    }
    # every message but its body; the bodies of the hot window's only
    messages = [
        {**dict(row), "body_md": ""}
        for row in index.query(
            f"SELECT {HEAD_COLUMNS} FROM messages WHERE project_id = :pid ORDER BY created_ts, id", {"pid": pid}
        )
    ]
    hot = hot_window(messages, agents, recipients, window) if window else {m["id"] for m in messages}
    bodies = _bodies(index, sorted(hot))
    for message in messages:
        if message["id"] in hot:
            message["body_md"] = bodies.get(message["id"], "")
    report.deliveries += await rebuild.write_messages(
        slug=slug, messages=messages, agents=agents, recipients=recipients, foreign=foreign, marks=ColdMarks(hot)
    )
    report.messages += len(hot)
    report.cold_messages += len(messages) - len(hot)
    report.reservations += await _restore_reservations(rebuild, index, slug, pid, agents, retention)
    await _restore_mail_activity(rebuild, index, slug, pid, agents)
    report.links += await _restore_links(rebuild, index, pid)
    await rebuild.write_project(slug=slug, project=project)
    report.projects.append(slug)


async def _restore_links(rebuild: Rebuild, index: Index, pid: int) -> int:
    """The contact links with an endpoint in this project. Messages held for approval are not
    restored."""
    rows = index.query(
        "SELECT l.*, a.name AS a_name, b.name AS b_name, pa.slug AS a_slug, pa.human_key AS a_hk, "
        "pb.slug AS b_slug, pb.human_key AS b_hk FROM agent_links l "
        "JOIN agents a ON a.id = l.a_agent_id JOIN agents b ON b.id = l.b_agent_id "
        "JOIN projects pa ON pa.id = l.a_project_id JOIN projects pb ON pb.id = l.b_project_id "
        "WHERE l.a_project_id = :pid OR l.b_project_id = :pid",
        {"pid": pid},
    )
    await rebuild.write_links(project_id=pid, links=rows)
    return len(rows)


async def _restore_reservations(
    rebuild: Rebuild,
    index: Index,
    slug: str,
    pid: int,
    agents: dict[int, dict[str, Any]],
    retention: int,
) -> int:
    """Put back the project's reservations: live ones (unreleased, unexpired) with their index
    entries, ended ones whose record is still within its retention (released, or expired,
    ``retention`` seconds after the end) as the record that release and pruning leave, so
    listings of ended reservations read as before. Returns how many live ones."""
    now = datetime.now(UTC)
    rows = index.query("SELECT * FROM file_reservations WHERE project_id = :pid ORDER BY id", {"pid": pid})
    restored = 0
    for row in rows:
        agent = agents.get(row["agent_id"], {}).get("name")
        if agent is None:
            continue
        ended = row["released_ts"] or (row["expires_ts"] if row["expires_ts"] <= now.isoformat() else None)
        forget_us = None
        if ended:
            if (datetime.fromisoformat(ended) - now).total_seconds() + retention <= 0:
                continue  # gone from Redis after its retention, as it would have been
            forget_us = micros(ended) + retention * 1_000_000
        pattern = row["path_pattern"]
        added = await rebuild.restore_reservation(
            slug=slug,
            reservation_id=row["id"],
            agent=agent,
            pattern=pattern,
            exclusive=bool(row["exclusive"]),
            reason=row["reason"] or "",
            created_us=micros(row["created_ts"]),
            expires_us=micros(row["expires_ts"]),
            bucket=globs.index_bucket(pattern),
            forget_after_us=forget_us,
            released_us=micros(row["released_ts"]) if row["released_ts"] else None,
        )
        restored += int(added) if not ended else 0
    return restored


async def _restore_mail_activity(
    rebuild: Rebuild, index: Index, slug: str, pid: int, agents: dict[int, dict[str, Any]]
) -> None:
    """Each agent's last read or ack, which keeps its reservations from looking stale."""
    rows = index.query(
        "SELECT agent_id, max(t) AS last FROM ("
        "SELECT r.agent_id, r.read_ts AS t FROM message_recipients r JOIN messages m ON m.id = r.message_id "
        "WHERE m.project_id = :pid UNION ALL "
        "SELECT r.agent_id, r.ack_ts AS t FROM message_recipients r JOIN messages m ON m.id = r.message_id "
        "WHERE m.project_id = :pid) times WHERE t IS NOT NULL GROUP BY agent_id",
        {"pid": pid},
    )
    latest = {
        agents[row["agent_id"]]["name"].lower(): micros(row["last"]) // 1000
        for row in rows
        if row["last"] and row["agent_id"] in agents
    }
    await rebuild.write_mail_activity(slug=slug, last_ms=latest)
