"""Single messages the hot-window trimmer moved out of Redis (docs/data-model.md, "The hot
window"): reading one (get_message's callers: the message resource, reply_message), a thread's
cold part, and writes on one (mark read, acknowledge).

A read that Redis answers NO_MESSAGE asks the index: the message row, its recipient rows and its
sender, shown exactly as the hot record would be (broker/store/commands/rehydrate.py
message_record builds the same bytes). A write puts the message's hash back into Redis first
(restore_message.lua: no stream entry, no index entry, marked cold) and runs the write script
again, so its change reaches the index and the archive through the outbox like any other, once.
The persistence worker removes the restored hash again once the change is persisted
(cool_messages.lua). Who may see or mark a message is decided as in the scripts: its sender or a
recipient; a bcc recipient is shown only itself among the bcc (broker/mail/views.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from broker.persistence.index import Index, recipient_order, shared_index
from broker.store import luajson
from broker.store.commands import cold as store_cold
from broker.store.commands import mail as store_mail
from broker.store.commands.mail import Marked, VisibleMessage
from broker.store.commands.rehydrate import MessageRecord, message_record
from broker.store.refusals import Refusal
from broker.store.store import Store
from broker.store.times import micros

T = TypeVar("T")

# A write retries after restoring at most this many times (a cool-down or trim in between).
RESTORE_TRIES = 2


async def _query(store: Store, fn: Callable[..., T], *args: Any) -> T:
    """``fn(index, *args)`` on a worker thread (a slow query never stalls the event loop), on
    the process's index of the store's settings, the schema created on first use."""
    index = shared_index(store.settings)

    def call() -> T:
        index.ensure_schema()  # a no-op once done on this Index
        return fn(index, *args)

    return await asyncio.to_thread(call)


@dataclass(frozen=True)
class ColdMessage:
    """A message as the index has it: its Redis record (hash fields, head, body, recipients)."""

    record: MessageRecord

    def viewer_name(self, viewer: str) -> tuple[str, str | None] | None:
        """(the viewer's name as registered, its recipient kind or None) when it is the sender
        or a recipient, else None."""
        lower = viewer.lower()
        for name, row in self.record.receivers:
            if name.lower() == lower:
                return name, row["kind"]
        if self.record.ident == lower:
            return self.record.sender, None
        return None

    def visible_to(self, viewer: str) -> VisibleMessage | None:
        found = self.viewer_name(viewer)
        if found is None:
            return None
        return VisibleMessage(json.loads(self.record.head), self.record.lists, self.record.ident, found[0], found[1])


def _lookup(index: Index, slug: str, message_id: int) -> ColdMessage | None:
    found = index.query(
        "SELECT m.* FROM messages m JOIN projects p ON p.id = m.project_id WHERE m.id = :id AND p.slug = :slug",
        {"id": message_id, "slug": slug},
    )
    if not found:
        return None
    message = dict(found[0])
    rows = [
        dict(row)
        for row in index.query(
            "SELECT r.message_id, r.agent_id, r.kind, r.read_ts, r.ack_ts, a.name FROM message_recipients r "
            "JOIN agents a ON a.id = r.agent_id WHERE r.message_id = :id ORDER BY " + recipient_order(index),
            {"id": message_id},
        )
    ]
    agents: dict[int, dict[str, Any]] = {row["agent_id"]: {"name": row["name"]} for row in rows}
    foreign: dict[int, dict[str, Any]] = {}
    for sender in index.query(
        "SELECT a.id, a.name, a.project_id, p.slug, p.human_key FROM agents a "
        "JOIN projects p ON p.id = a.project_id WHERE a.id = :id",
        {"id": message["sender_id"]},
    ):
        if sender["project_id"] == message["project_id"]:
            agents[sender["id"]] = {"name": sender["name"]}
        else:
            foreign[sender["id"]] = dict(sender)
    return ColdMessage(message_record(message, agents, rows, foreign))


async def indexed_message(store: Store, slug: str, message_id: int) -> ColdMessage | None:
    """The message as the index has it (None when it has no such message in the project)."""
    return await _query(store, _lookup, slug, message_id)


async def get_message(
    store: Store, *, slug: str, viewer: str, credentials: tuple[str, str], message_id: int
) -> tuple[VisibleMessage, str | None]:
    """One message its viewer sent or received, from Redis or else from the index, and its body
    when it came from the index (None: read it from Redis). Refusals: as get_message.lua's."""
    try:
        visible = await store_mail.get_message(
            store, slug=slug, viewer=viewer, credentials=credentials, message_id=message_id
        )
        return visible, None
    except Refusal as refused:
        if refused.code != "NO_MESSAGE":
            raise
        missing = refused
    cold = await indexed_message(store, slug, message_id)
    shown = cold.visible_to(viewer) if cold else None
    if cold is None or shown is None:
        raise missing
    return shown, cold.record.body


async def mark_message(
    store: Store, *, slug: str, name: str, credentials: tuple[str, str], message_id: int, mode: str
) -> Marked:
    """mark_message on a message hot or cold: a cold one the agent received is put back into
    Redis (restore_message.lua) and marked there; its sender, not a recipient, gets the empty
    answer the script gives a sender. Refusals: as mark_message.lua's."""
    for _ in range(RESTORE_TRIES + 1):
        try:
            return await store_mail.mark_message(
                store, slug=slug, name=name, credentials=credentials, message_id=message_id, mode=mode
            )
        except Refusal as refused:
            if refused.code != "NO_MESSAGE":
                raise
            missing = refused
        cold = await indexed_message(store, slug, message_id)
        found = cold.viewer_name(name) if cold else None
        if cold is None or found is None:
            raise missing
        if found[1] is None:  # the sender: nothing to mark
            return Marked(None, None, False)
        await store_cold.restore_message(
            store, slug=slug, message_id=message_id, fields=cold.record.fields, body=cold.record.body
        )
    raise missing


async def ensure_thread_root(store: Store, slug: str, thread_id: str) -> None:
    """Put back the message whose id a numeric thread id is, when it is only in the index: the
    contact check of a send into the thread (lib/contacts.lua takes_part) reads its sender and
    recipients from its hash, so a reply into a thread started by a trimmed unthreaded message
    passes the contact rules as before."""
    if not (thread_id.isascii() and thread_id.isdigit()) or int(thread_id) >= 2**63:
        return
    message_id = int(thread_id)
    if await store_cold.message_in_redis(store, slug=slug, message_id=message_id):
        return
    cold = await indexed_message(store, slug, message_id)
    if cold is not None:
        with contextlib.suppress(Refusal):  # a project gone meanwhile: the send says so
            await store_cold.restore_message(
                store, slug=slug, message_id=message_id, fields=cold.record.fields, body=cold.record.body
            )


# -- purging old mail ---------------------------------------------------------------------------
# -- threads ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThreadItem:
    """A thread message as the index has it, shown as the hot record would be."""

    created_us: int
    id: int
    head: dict[str, Any]
    body: str
    recipients: dict[str, list[str]] | None  # {to, cc, bcc} when asked for


def _thread_items(
    index: Index, project_id: int, viewer_id: int | None, thread_id: str, newest: int, with_recipients: bool
) -> list[ThreadItem]:
    """The thread's newest ``newest`` messages (with this thread_id, or whose id it is), oldest
    first; only those the viewer sent or received unless ``viewer_id`` is None."""
    numeric = int(thread_id) if thread_id.isascii() and thread_id.isdigit() and int(thread_id) < 2**63 else -1
    visible = (
        "AND (m.sender_id = :viewer OR EXISTS (SELECT 1 FROM message_recipients r "
        "WHERE r.message_id = m.id AND r.agent_id = :viewer)) "
        if viewer_id is not None
        else ""
    )
    rows = index.query(
        "SELECT m.*, a.name AS sender_name, a.project_id AS sender_pid, p.slug AS sender_slug, "
        "p.human_key AS sender_hk FROM messages m JOIN agents a ON a.id = m.sender_id "
        "JOIN projects p ON p.id = a.project_id "
        f"WHERE m.project_id = :pid AND (m.thread_id = :tid OR m.id = :mid) {visible}"
        "ORDER BY m.created_ts DESC, m.id DESC LIMIT :newest",
        {"pid": project_id, "tid": thread_id, "mid": numeric, "viewer": viewer_id, "newest": newest},
    )
    lists: dict[int, dict[str, list[str]]] = {}
    if with_recipients and rows:
        names = {f"i{n}": row["id"] for n, row in enumerate(rows)}
        for row in index.query(
            "SELECT r.message_id, r.kind, a.name FROM message_recipients r JOIN agents a ON a.id = r.agent_id "
            f"WHERE r.message_id IN ({', '.join(':' + name for name in names)}) ORDER BY {recipient_order(index)}",
            names,
        ):
            lists.setdefault(row["message_id"], {"to": [], "cc": [], "bcc": []})[row["kind"]].append(row["name"])
    out = []
    for row in reversed(rows):
        message = dict(row)
        other = None
        if message["sender_pid"] != message["project_id"]:
            other = {"slug": message["sender_slug"], "human_key": message["sender_hk"]}
        attachments = json.loads(message["attachments"] or "[]")
        head = luajson.message_head(message, message["sender_name"], other, attachments)
        shown = lists.get(message["id"], {"to": [], "cc": [], "bcc": []}) if with_recipients else None
        out.append(
            ThreadItem(micros(message["created_ts"]), message["id"], json.loads(head), message["body_md"] or "", shown)
        )
    return out


async def thread_messages(
    store: Store,
    slug: str,
    project_id: int,
    viewer_id: int | None,
    thread_id: str,
    newest: int,
    with_recipients: bool = False,
) -> list[ThreadItem]:
    """The thread's newest ``newest`` messages the viewer sent or received (every one for
    ``viewer_id`` None: the overseers' web view) as the index has them, oldest first. No index
    read while nothing of the project was ever trimmed (no ``t`` in its cold hash): Redis holds
    all of it. Call it after the hot read, so a message trimmed meanwhile is found here."""
    if not await store_cold.trimmed_any(store, slug=slug):
        return []
    return await _query(store, _thread_items, project_id, viewer_id, thread_id, newest, with_recipients)
