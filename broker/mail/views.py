"""Reads behind the mail resources: inbox, mailbox, outbox, message, thread and the inbox views
(urgent-unread, ack-required, acks-stale, ack-overdue).

Every one of them names its project with ``?project=`` (required) and authenticates the
viewing agent with ``agent_token`` exactly as tools do with ``registration_token``. They read
Redis (the hot store), reusing the tools' reads where one exists (fetch_inbox, the get_message
script), and the index for what left Redis (broker/mail/cold_pages.py: only when the page reaches the
cold mark read with it); ``commit`` fields come from the index (broker/persistence/commit_rows.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.names import validate_name
from broker.identity.projects import project_slug
from broker.mail import cold, cold_pages, inbox
from broker.mail.inbox import raise_refused
from broker.mail.inputs import check_limit, check_thread_id, since_micros
from broker.mail.sent import sent_page
from broker.persistence.commit_rows import read_rows
from broker.persistence.commits import message_commits
from broker.persistence.index import shared_index
from broker.store.commands import identity as identity_store
from broker.store.commands import mail as store_mail
from broker.store.commands import projects
from broker.store.commands import views as store_views
from broker.store.commands.mail import VisibleMessage
from broker.store.refusals import Refusal
from broker.store.store import Store

TOKEN_PARAM = "agent_token"
# The inbox views look at no more than this many of the agent's newest inbox (or urgent index)
# entries, so a read stays bounded however large the inbox grows.
VIEW_SCAN_ENTRIES = 10_000
MAX_THREAD_MESSAGES = 1000
TRUE_WORDS = {"1", "true", "t", "yes", "y"}
FALSE_WORDS = {"0", "false", "f", "no", "n"}


# -- query parameters (they arrive as text) --------------------------------------------------
def flag(value: str | None, name: str, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise BrokerError("INVALID_ARGUMENT", f"{name}='{value}' is not a boolean; use true or false.")


def number(value: str | None, name: str, default: int, low: int = 0, high: int | None = None) -> int:
    if value is None or not value.strip():
        return default
    try:
        parsed = int(value.strip())
    except ValueError:
        raise BrokerError("INVALID_ARGUMENT", f"{name}='{value}' is not an integer.") from None
    if parsed < low or (high is not None and parsed > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BrokerError("INVALID_ARGUMENT", f"{name} must be {bounds}, got {parsed}.")
    return parsed


def limit_of(value: str | None, default: int) -> int:
    if value is None or not value.strip():
        return default
    try:
        parsed = int(value.strip())
    except ValueError:
        raise BrokerError("INVALID_LIMIT", f"limit='{value}' is not an integer between 1 and 1000.") from None
    return check_limit(parsed)


def require_project(project: str | None, resource: str) -> str:
    if project is None or not project.strip():
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"project parameter is required for {resource}: add ?project=<the project's absolute path "
            "or slug> to the URI.",
        )
    return project.strip()


# -- the viewer ---------------------------------------------------------------------------------
class Viewer:
    """An authenticated agent reading its own mail in one project."""

    def __init__(self, slug: str, project_key: str, name: str, record: dict[str, Any], token: str | None) -> None:
        self.slug = slug
        self.project_key = project_key
        self.name = name  # as registered
        self.lower = name.lower()
        self.record = record
        self.token = token


async def authenticate(
    store: Store, project: str | None, agent: str | None, token: str | None, resource: str
) -> Viewer:
    """Check project, agent and token (one script call) and bind the session like tools do.
    Without ``agent`` the agent this MCP session last authenticated as in the project is used."""
    project_key = require_project(project, resource)
    slug = await project_slug(store, project_key)
    name = agent.strip() if agent and agent.strip() else store.bindings.current_agent(slug)
    if not name:
        human_key = await projects.human_key(store, slug=slug)
        if human_key is None:
            raise await refusals.project_not_found(store, project_key)
        raise BrokerError(
            "AUTHENTICATION_REQUIRED",
            f"{resource} requires an authenticated agent for project '{human_key}'. Provide agent plus "
            "agent_token, or authenticate in this session first.",
        )
    name = validate_name(name, "agent")
    digest, require = store.bindings.args(slug, name, token)
    try:
        record = (await identity_store.get_agent(store, slug=slug, name=name, credentials=(digest, require))).agent
    except Refusal as refused:
        await raise_refused(store, refused, slug, project_key, TOKEN_PARAM)
    if digest:
        store.bindings.bind(slug, record["name"])
    return Viewer(slug, project_key, record["name"], record, token)


async def human_key_of(store: Store, slug: str) -> str:
    return await projects.human_key(store, slug=slug) or slug


def listing(human_key: str, viewer: Viewer, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"project": human_key, "agent": viewer.name, **extra, "count": len(messages), "messages": messages}


async def attach_commits(store: Store, slug: str, items: list[dict[str, Any]], detailed: bool) -> None:
    """Each item's archive ``commit``, from the index (one query per page): None while the
    message is not persisted yet."""
    commits = await asyncio.to_thread(page_commits, store.settings, slug, items, detailed)
    for item in items:
        item["commit"] = commits.get(int(item["id"]))


def page_commits(settings: Any, slug: str, items: list[dict[str, Any]], detailed: bool) -> dict[int, dict[str, Any]]:
    """Message id -> commit, read from the index's ``message_commits``. Messages indexed before
    that table existed have no row: the Git archive answers for them when it is on this host
    (else their commit is None: docs/operations.md, "Brokers without local files")."""
    if not items:
        return {}
    index = shared_index(settings)
    index.ensure_schema()  # a no-op once done in this process
    commits = read_rows(index, [int(item["id"]) for item in items], detailed)
    missing = [item for item in items if int(item["id"]) not in commits]
    if missing and (settings.archive_path / "HEAD").exists():
        commits.update(message_commits(settings.archive_path, slug, missing, detailed))
    return commits


# -- inbox, mailbox, outbox -------------------------------------------------------------------
async def inbox_view(
    store: Store,
    agent: str,
    project: str | None,
    since_ts: str | None,
    urgent_only: bool,
    include_bodies: bool,
    limit: int,
    token: str | None,
    resource: str,
    commits: str | None = "basic",
) -> dict[str, Any]:
    """The agent's received messages, newest first (fetch_inbox's read), each with its archive
    ``commit`` (None while not archived yet); ``commits="detailed"`` adds line counts and an excerpt."""
    since_micros(since_ts)  # a bad timestamp fails before any read
    viewer = await authenticate(store, project, agent, token, resource)
    items = await inbox.fetch_inbox(
        store, viewer.project_key, viewer.name, limit, urgent_only, include_bodies, since_ts, None, token
    )
    if commits:
        await attach_commits(store, viewer.slug, items, commits == "detailed")
    return listing(await human_key_of(store, viewer.slug), viewer, items)


async def outbox_view(
    store: Store,
    agent: str,
    project: str | None,
    limit: int,
    include_bodies: bool,
    since_ts: str | None,
    token: str | None,
    resource: str,
) -> dict[str, Any]:
    """Messages the agent sent, newest first, with all their recipients (bcc too: the viewer
    is their sender) and archive ``commit``."""
    since = since_micros(since_ts)
    viewer = await authenticate(store, project, agent, token, resource)
    slug = viewer.slug
    human_key, items = await sent_page(
        store, slug=slug, name=viewer.lower, since_us=since, limit=limit, include_bodies=include_bodies
    )
    await attach_commits(store, slug, items, False)
    return listing(human_key or slug, viewer, items)


# -- one message, one thread ------------------------------------------------------------------
def _visible_recipients(recipients: dict[str, list[str]], sender_lower: str, viewer: Viewer) -> dict[str, Any]:
    """to and cc as stored; bcc in full for the sender, else only the viewer if it is one."""
    bcc = (
        recipients["bcc"]
        if sender_lower == viewer.lower
        else [n for n in recipients["bcc"] if n.lower() == viewer.lower]
    )
    return {"to": recipients["to"], "cc": recipients["cc"], "bcc": bcc}


async def message_view(
    store: Store, message_id: str, project: str | None, agent: str | None, token: str | None, resource: str
) -> dict[str, Any]:
    """One message its viewer sent or received: head, body_md, to/cc/bcc (see _visible_recipients)."""
    ident = number(message_id, "message_id", 0, 1, 2**63 - 1)
    viewer = await authenticate(store, project, agent, token, resource)
    slug = viewer.slug
    found: tuple[VisibleMessage, str | None] | None = None
    with contextlib.suppress(Refusal):  # authenticated above: no token check again
        found = await cold.get_message(store, slug=slug, viewer=viewer.name, credentials=("", "0"), message_id=ident)
    if found is None:
        raise await refusals.message_not_found(store, slug, ident, viewer.name)
    visible, body = found
    item = visible.head
    item["body_md"] = body if body is not None else await store_views.message_body(store, slug=slug, message_id=ident)
    item.update(_visible_recipients(visible.recipients, visible.sender, viewer))
    if visible.viewer_kind:
        item["kind"] = visible.viewer_kind
    return item


async def thread_view(
    store: Store,
    thread_id: str,
    project: str | None,
    agent: str | None,
    include_bodies: bool,
    token: str | None,
    resource: str,
) -> dict[str, Any]:
    """The thread's messages the viewer sent or received, oldest first: those with this
    thread_id, and the message whose id it is (a thread started by an unthreaded message).
    At most the newest MAX_THREAD_MESSAGES."""
    tid = check_thread_id(thread_id)
    if not tid:
        raise BrokerError("INVALID_THREAD_ID", "thread_id is empty; pass a thread id such as 'FEAT-123'.")
    viewer = await authenticate(store, project, agent, token, resource)
    slug = viewer.slug
    members = await store_views.thread_ids(store, slug=slug, thread_id=tid, newest=MAX_THREAD_MESSAGES)
    ids = list(dict.fromkeys(members))
    if tid.isascii() and tid.isdigit() and tid not in ids and int(tid) < 2**63:
        ids.insert(0, tid)
    # only those the viewer sent or received
    page = await store_views.viewer_messages(
        store, slug=slug, viewer=viewer.lower, ids=ids, include_bodies=include_bodies
    )
    found = []
    for message in page.messages:
        item = message.head
        if item["thread_id"] != tid and str(item["id"]) != tid:
            continue
        if include_bodies:
            item["body_md"] = message.body or ""
        found.append((message.created_us, int(item["id"]), item))
    # the part the trimmer moved to the index (read after the hot part: nothing falls between)
    seen = {ident for _, ident, _ in found}
    project_id, viewer_id = int(viewer.record["project_id"]), int(viewer.record["id"])
    for cold_item in await cold.thread_messages(store, slug, project_id, viewer_id, tid, MAX_THREAD_MESSAGES):
        if cold_item.id not in seen:
            if include_bodies:
                cold_item.head["body_md"] = cold_item.body
            found.append((cold_item.created_us, cold_item.id, cold_item.head))
    found.sort(key=lambda entry: entry[:2])
    found = found[-MAX_THREAD_MESSAGES:]
    return {"project": page.human_key or slug, "thread_id": tid, "messages": [item for _, _, item in found]}


# -- views --------------------------------------------------------------------------------------
async def _view(
    store: Store, viewer: Viewer, mode: str, limit: int, cutoff_ms: str = "+", order: str = "newest"
) -> list[tuple[dict[str, Any], str | None]]:
    try:  # the viewer is authenticated already: no token check again
        page = await store_views.fetch_view(
            store, slug=viewer.slug, viewer=viewer.name, mode=mode, limit=limit, scan_entries=VIEW_SCAN_ENTRIES,
            cutoff_ms=cutoff_ms, order=order,
        )  # fmt: skip
    except Refusal as refused:
        await raise_refused(store, refused, viewer.slug, viewer.project_key, TOKEN_PARAM)
    found = [(view.item, view.read_at) for view in page.items]
    upper = cold_pages.mark_upper_us(page.mark)
    window = VIEW_SCAN_ENTRIES - page.seen
    if upper is None or window <= 0:
        return found
    if cutoff_ms != "+":
        upper = min(upper, int(cutoff_ms) * 1000 + 999)
    newest_first = order == "newest"
    if page.last and not page.ended and newest_first and len(found) >= limit:
        last_us = int(page.last) if mode == "urgent-unread" else cold_pages.entry_ms(page.last) * 1000
        if last_us > upper:
            return found  # the page stopped above the mark
    source = cold_pages.source(store)
    rows = await source.run(
        source.view, slug=viewer.slug, name=viewer.name, upper_us=upper, window=window, mode=mode, limit=limit,
        newest_first=newest_first,
    )  # fmt: skip
    # a message brought back into Redis after it left carries its newest read and ack state there
    state = await store_mail.receipts(store, slug=viewer.slug, name=viewer.name, ids=[int(r.item["id"]) for r in rows])
    kept = []
    for ranked in rows:
        read_ts, ack_ts = state.get(int(ranked.item["id"]), (ranked.extra, None))
        if (mode == "urgent-unread" and read_ts) or (mode == "ack" and ack_ts):
            continue
        kept.append(cold_pages.Ranked(ranked.key, ranked.item, read_ts or None))
    hot = [cold_pages.Ranked(_created_key(item), item, read_at) for item, read_at in found]
    if not newest_first:
        hot.reverse()
        kept.reverse()
    merged = cold_pages.merge(hot, kept, len(hot) + len(kept))
    if not newest_first:
        merged = merged[::-1][:limit]
    return [(ranked.item, ranked.extra) for ranked in merged[:limit]]


def _created_key(item: dict[str, Any]) -> tuple[int, int, int]:
    return cold_pages.cold_key(cold_pages.micros(item["created_ts"]), int(item["id"]))


async def unanswered_view(
    store: Store, mode: str, agent: str, project: str | None, limit: int, token: str | None, resource: str
) -> dict[str, Any]:
    """Received messages of one fetch_view ``mode``, newest first: "urgent-unread" (high/urgent
    not read yet) or "ack" (ack-required not acknowledged yet)."""
    viewer = await authenticate(store, project, agent, token, resource)
    found = await _view(store, viewer, mode, limit)
    return listing(await human_key_of(store, viewer.slug), viewer, [item for item, _ in found])


async def overdue_acks(
    store: Store, agent: str, project: str | None, age_seconds: int, limit: int, token: str | None, resource: str
) -> tuple[Viewer, str, list[dict[str, Any]]]:
    """Unacknowledged ack-required messages created at least ``age_seconds`` ago, oldest first,
    each with ``read_at`` and ``age_seconds`` (whole seconds since created_ts)."""
    viewer = await authenticate(store, project, agent, token, resource)
    now = datetime.now(UTC)
    cutoff_ms = str(int(now.timestamp() * 1000) - age_seconds * 1000)
    found = await _view(store, viewer, "ack", limit, cutoff_ms, "oldest")
    items = []
    for item, read_at in found:
        age = int((now - datetime.fromisoformat(item["created_ts"])).total_seconds())
        if age < age_seconds:
            continue  # created within the boundary millisecond's rounding
        items.append({**item, "read_at": read_at, "age_seconds": age})
    return viewer, await human_key_of(store, viewer.slug), items
