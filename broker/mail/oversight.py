"""Mail as the human overseer sees it in the web view (broker/web/): a project's unified inbox
across its agents, an agent's outbox, a whole thread, and mail written by the overseer.

These reads take no agent token: they answer whoever passed the broker's HTTP auth (the bearer
token, or the web view's login cookie), as an operator reads every agent's mail. Each read is
bounded by the page it shows, never by the size of the project.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.agents import ensure_overseer
from broker.identity.names import validate_name
from broker.identity.projects import project_slug
from broker.mail import cold, cold_pages
from broker.mail.inputs import check_recipient_count, check_text, check_thread_id, check_topic
from broker.mail.outgoing import Outgoing, Sender
from broker.mail.routing import parse_recipients
from broker.mail.send import deliver
from broker.mail.sent import sent_page
from broker.store.commands import oversight as oversight_store
from broker.store.commands import projects
from broker.store.commands import views as store_views
from broker.store.commands.oversight import InboxPage, InboxRow
from broker.store.refusals import Refusal
from broker.store.store import Store

IMPORTANCES = ("low", "normal", "high", "urgent")
MAX_PAGE = 200
# One page of the unified inbox looks at no more than this many entries of each agent's inbox
# (only filters make a walk go past the page): the bound that keeps a page fast at any size.
SCAN_ENTRIES_PER_AGENT = 2000
MAX_THREAD_MESSAGES = 500
CURSOR = re.compile(r"^[0-9]{1,20}:[0-9]{1,20}$")


async def inbox_page(
    store: Store,
    project_key: str,
    *,
    agent: str = "",
    cursor: str = "",
    importance: str = "",
    unread_only: bool = False,
    topic: str = "",
    limit: int = 50,
) -> InboxPage:
    """Received mail of every agent of the project (or of ``agent``), newest first, one page;
    ``cursor`` is the ``cursor`` of the previous page's last row."""
    if cursor and not CURSOR.match(cursor):
        raise BrokerError("INVALID_ARGUMENT", f"cursor '{cursor[:40]}' is not a page cursor; follow the 'Older' link.")
    if importance and importance not in IMPORTANCES:
        raise BrokerError("INVALID_ARGUMENT", f"importance '{importance[:20]}' is not one of {', '.join(IMPORTANCES)}.")
    if not 1 <= limit <= MAX_PAGE:
        raise BrokerError("INVALID_LIMIT", f"limit must be between 1 and {MAX_PAGE}, got {limit}.")
    name = validate_name(agent, "agent") if agent else ""
    slug = await project_slug(store, project_key)
    topic = check_topic(topic)
    try:
        page = await oversight_store.project_inbox(
            store, slug=slug, agent=name, cursor=cursor, importance=importance, unread_only=unread_only,
            topic=topic, limit=limit, scan_entries=SCAN_ENTRIES_PER_AGENT,
        )  # fmt: skip
    except Refusal:
        raise await refusals.project_not_found(store, project_key) from None
    upper = cold_pages.upper_of_t(page.mark)
    oldest = int(page.rows[-1].cursor.split(":")[0]) if page.rows else None
    # a full page with nothing older in Redis still asks the index, whose rows decide ``more``
    if not cold_pages.reaches(oldest, len(page.rows) >= limit and page.more, upper, ""):
        return page
    assert upper is not None
    before = tuple(int(part) for part in cursor.split(":")) if cursor else None
    source = cold_pages.source(store)
    found = await source.run(
        source.overseen, slug=slug, agent=name, upper_us=upper, before=before, importance=importance,
        unread_only=unread_only, topic=topic.lower(), limit=limit + 1,
    )  # fmt: skip
    listed = {int(row.item["id"]) for row in page.rows}
    rows = [*page.rows]
    for created_us, item, recipients, receipts in found:
        if int(item["id"]) not in listed:
            rows.append(InboxRow(f"{created_us}:{item['id']}", item, recipients, receipts))
    rows.sort(key=lambda row: tuple(int(part) for part in row.cursor.split(":")), reverse=True)
    return InboxPage(page.human_key, rows[:limit], page.more or len(rows) > limit, page.complete, page.mark)


async def outbox(store: Store, project_key: str, agent: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` messages ``agent`` sent in its project, newest first, with their
    recipients (broker/mail/sent.py)."""
    name = validate_name(agent, "agent")
    slug = await project_slug(store, project_key)
    _human_key, items = await sent_page(
        store, slug=slug, name=name.lower(), since_us="", limit=limit, include_bodies=False
    )
    return items


async def thread(store: Store, project_key: str, thread_id: str) -> list[dict[str, Any]]:
    """Every message of the thread (thread_id == T, or the message whose id is T), oldest first,
    with bodies and recipients; at most the newest MAX_THREAD_MESSAGES."""
    tid = check_thread_id(thread_id)
    if not tid:
        raise BrokerError("INVALID_THREAD_ID", "thread_id is empty; pass a thread id such as 'FEAT-123'.")
    slug = await project_slug(store, project_key)
    ids = list(dict.fromkeys(await store_views.thread_ids(store, slug=slug, thread_id=tid, newest=MAX_THREAD_MESSAGES)))
    if tid.isascii() and tid.isdigit() and tid not in ids and int(tid) < 2**63:
        ids.insert(0, tid)
    page = await store_views.sent_messages(store, slug=slug, ids=ids, include_bodies=True)
    if page.human_key is None:
        raise await refusals.project_not_found(store, project_key)
    found = [
        {**sent.head, **sent.recipients, "body_md": sent.body or ""}
        for sent in page.messages
        if sent.head["thread_id"] == tid or str(sent.head["id"]) == tid
    ]
    # the part the trimmer moved to the index (read after the hot part: nothing falls between)
    project_id = await projects.project_id(store, slug=slug)
    seen = {int(item["id"]) for item in found}
    for item in await cold.thread_messages(store, slug, project_id or 0, None, tid, MAX_THREAD_MESSAGES, True):
        if item.id not in seen:
            found.append({**item.head, **(item.recipients or {}), "body_md": item.body})
    found.sort(key=lambda item: (item["created_ts"], item["id"]))
    return found[-MAX_THREAD_MESSAGES:]


async def send_as_overseer(store: Store, project_key: str, to: list[str], subject: str, body_md: str) -> dict[str, Any]:
    """Mail from the human overseer (HumanOverseer, registered on first use) to agents of the
    project: high importance, delivered past every contact policy, ringing the recipients'
    doorbells like any mail (send_message's path)."""
    recipients = parse_recipients(to, "to")
    if not recipients:
        raise BrokerError("INVALID_ARGUMENT", "Choose at least one agent to write to.")
    check_recipient_count(store, len(recipients))
    check_text(store, subject, body_md)
    if not subject.strip():
        raise BrokerError("INVALID_ARGUMENT", "The subject is empty; write one.")
    slug = await project_slug(store, project_key)
    name = await ensure_overseer(store, project_key)
    sender = Sender(slug, project_key, name, ("", "0"), overseer=True)
    message = Outgoing(subject, body_md, "high", False, "", "")
    return await deliver(store, sender, {"to": recipients, "cc": [], "bcc": []}, message, False, False)


async def change_mark(store: Store, slug: str) -> str:
    """Changes when an agent reads or acknowledges mail, acts, or a reservation is granted,
    renewed, released or expires (broker/store/commands/oversight.py); expiry by this process's
    clock, as the reservation listings judge it (broker/reservations/service.py)."""
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    return await oversight_store.change_mark(store, slug=slug, now_us=now_us)
