"""Reading mail: inbox pages, topics, read and acknowledgement state."""

from __future__ import annotations

from typing import Any, NoReturn

from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.auth import check_token
from broker.identity.names import validate_name
from broker.identity.projects import project_slug
from broker.mail import cold, cold_pages
from broker.mail.inputs import check_limit, check_topic, since_micros
from broker.store.commands import identity as identity_store
from broker.store.commands import mail as store_mail
from broker.store.commands.agent_record import StoredAgent
from broker.store.commands.mail import Marked
from broker.store.refusals import Refusal
from broker.store.store import Store


async def fetch_inbox(
    store: Store,
    project_key: str,
    agent_name: str,
    limit: int,
    urgent_only: bool,
    include_bodies: bool,
    since_ts: str | None,
    topic: str | None,
    registration_token: str | None,
) -> list[dict[str, Any]]:
    """The agent's inbox, newest first; read-only.

    Unfiltered (or since-only) pages skip Lua: copying stream entries into Lua tables costs
    more than the whole read, while one XREVRANGE of entries that carry their item JSON and
    small body is cheap. Stream ids are the server's millisecond clock, the same clock that
    stamps created_ts, so ``since_ts`` bounds the range and no page is ever scanned twice.
    The agent record is read in the same round trip only when a token must be checked;
    otherwise only an empty page needs it (to tell "no mail" from "no such agent").
    Urgent and topic filters read the per-agent indexes in one script instead. Either read
    carries the inbox's cold mark; only a page that reaches it asks the index (broker/mail/cold_pages.py)."""
    slug = await project_slug(store, project_key)
    name = validate_name(agent_name)
    check_limit(limit)
    since = since_micros(since_ts)
    topic = check_topic(topic).lower()
    digest, require = store.bindings.args(slug, name, registration_token)
    if urgent_only or topic:
        try:
            items, mark = await store_mail.fetch_inbox_indexed(
                store, slug=slug, name=name, credentials=(digest, require), limit=limit,
                since_us=since, urgent_only=urgent_only, topic=topic, include_bodies=include_bodies,
            )  # fmt: skip
        except Refusal as refused:
            await raise_refused(store, refused, slug, project_key)
        if digest:
            store.bindings.bind(slug, name)
        upper = cold_pages.mark_upper_us(mark)
        oldest = cold_pages.micros(items[-1]["created_ts"]) if items else None
        if not cold_pages.reaches(oldest, len(items) >= limit, upper, since):
            return items
        assert upper is not None
        return await _with_cold(
            store, items, [_by_created(item) for item in items],
            slug=slug, name=name, upper_us=upper, limit=limit, since_us=since, urgent_only=urgent_only, topic=topic,
            include_bodies=include_bodies,
        )  # fmt: skip

    checked = bool(digest) or require == "1"
    page = await store_mail.inbox_page(store, slug=slug, name=name, since_us=since, limit=limit, with_agent=checked)
    if checked:
        await check_reader(store, slug, project_key, name, page.agent, digest, require)
        store.bindings.bind(slug, name)
    elif not page.entries and not page.mark:
        await _check_exists(store, slug, project_key, name, digest, require)
    gone: list[dict[str, Any]] = []
    items = await store_mail.inbox_items(
        store, slug=slug, entries=page.entries, include_bodies=include_bodies, gone=gone
    )
    if gone:  # left Redis after the page was read: the index has them (persisted first)
        await _fill_bodies(store, gone)
    upper = cold_pages.mark_upper_us(page.mark)
    oldest = cold_pages.entry_ms(page.entry_ids[-1]) * 1000 + 999 if page.entry_ids else None
    if not cold_pages.reaches(oldest, len(items) >= limit, upper, since):
        if not items and page.mark and not checked:
            await _check_exists(store, slug, project_key, name, digest, require)
        return items
    assert upper is not None
    keys = [
        (cold_pages.entry_ms(entry_id), int(fields["f"].split("|", 1)[0]), int(fields["m"]))
        for entry_id, fields in zip(page.entry_ids, page.entries, strict=True)
    ]
    items = await _with_cold(
        store, items, keys, slug=slug, name=name, upper_us=upper, limit=limit, since_us=since,
        include_bodies=include_bodies,
    )  # fmt: skip
    if not items and not checked:  # "no mail" or "no such agent": the agent record tells
        await _check_exists(store, slug, project_key, name, digest, require)
    return items


async def _check_exists(store: Store, slug: str, project_key: str, name: str, digest: str, require: str) -> None:
    agent = await identity_store.stored_agent(store, slug=slug, name=name)
    await check_reader(store, slug, project_key, name, agent, digest, require)


def _by_created(item: dict[str, Any]) -> tuple[int, int, int]:
    """The merge key of an item ordered by creation (the urgent and topic indexes' score)."""
    return cold_pages.cold_key(cold_pages.micros(item["created_ts"]), int(item["id"]))


async def _with_cold(
    store: Store, items: list[dict[str, Any]], keys: list[tuple[int, int, int]], **query: Any
) -> list[dict[str, Any]]:
    """The hot page ``items`` (merge ``keys`` beside them) united with the index's received rows
    at or below the mark (cold_pages.ColdSource.received's ``query``), limit applied last."""
    source = cold_pages.source(store)
    rows = await source.run(source.received, **query)
    hot = [cold_pages.Ranked(key, item) for key, item in zip(keys, items, strict=True)]
    return [ranked.item for ranked in cold_pages.merge(hot, rows, query["limit"])]


async def _fill_bodies(store: Store, items: list[dict[str, Any]]) -> None:
    source = cold_pages.source(store)
    bodies = await source.run(source.bodies, [int(item["id"]) for item in items])
    for item in items:
        item["body_md"] = bodies.get(int(item["id"]), "")


async def items_from_entries(
    store: Store, slug: str, selected: list[dict[str, str]], include_bodies: bool
) -> list[dict[str, Any]]:
    """Inbox items from inbox stream entries' fields, in the order given (broker/store/commands/mail.py's
    inbox_items: bodies too large for the entry come from one HMGET)."""
    return await store_mail.inbox_items(store, slug=slug, entries=selected, include_bodies=include_bodies)


async def raise_refused(
    store: Store, refused: Refusal, slug: str, project_key: str, token_param: str = "registration_token"
) -> NoReturn:
    """Raise the BrokerError of a script's refusal (broker/identity/refusals.py's remedies), not
    chained to the Refusal it replaces."""
    try:
        await refusals.raise_for(store, refused.reply, slug, project_key, token_param)
    except BrokerError as error:
        raise error from None
    raise AssertionError("unreachable")


async def check_reader(
    store: Store, slug: str, project_key: str, name: str, agent: StoredAgent | None, digest: str, require: str
) -> None:
    """Raise what the scripts' token check would for the agent's stored record (None: no such agent)."""
    if agent is None:
        await refusals.raise_for(store, await refusals.missing_agent_reply(store, slug, name), slug, project_key)
    failure = check_token(agent, digest, require)
    if failure:
        await refusals.raise_for(store, [failure, name], slug, project_key)


def _viewer(store: Store, slug: str, agent_name: str | None, action: str, project_key: str) -> str:
    if agent_name:
        return validate_name(agent_name)
    current = store.bindings.current_agent(slug)
    if current:
        return current
    raise BrokerError(
        "AUTHENTICATION_REQUIRED",
        f"{action} requires an authenticated agent for project '{project_key}'. Provide agent_name plus "
        "registration_token, or authenticate in this session first.",
    )


async def fetch_topic(
    store: Store,
    project_key: str,
    topic_name: str,
    limit: int,
    include_bodies: bool,
    since_ts: str | None,
    agent_name: str | None,
    registration_token: str | None,
) -> list[dict[str, Any]]:
    slug = await project_slug(store, project_key)
    if not topic_name or not topic_name.strip():
        raise BrokerError("INVALID_ARGUMENT", "topic_name is empty. Pass the topic to read, e.g. 'build-status'.")
    topic = check_topic(topic_name)
    check_limit(limit)
    since = since_micros(since_ts)
    viewer = _viewer(store, slug, agent_name, "fetch_topic", project_key)
    auth = store.bindings.args(slug, viewer, registration_token)
    try:
        items, in_mark, t_mark = await store_mail.fetch_topic(
            store, slug=slug, viewer=viewer, credentials=auth, topic=topic.lower(),
            limit=limit, since_us=since, include_bodies=include_bodies,
        )  # fmt: skip
    except Refusal as refused:
        await raise_refused(store, refused, slug, project_key)
    if auth[0]:
        store.bindings.bind(slug, viewer)
    received_upper, sent_upper = cold_pages.mark_upper_us(in_mark), cold_pages.upper_of_t(t_mark)
    oldest = cold_pages.micros(items[-1]["created_ts"]) if items else None
    full = len(items) >= limit
    ask_received = cold_pages.reaches(oldest, full, received_upper, since)
    ask_sent = cold_pages.reaches(oldest, full, sent_upper, since)
    if not (ask_received or ask_sent):
        return items
    source = cold_pages.source(store)
    query = {"slug": slug, "name": viewer, "limit": limit, "since_us": since, "topic": topic.lower(),
             "include_bodies": include_bodies}  # fmt: skip
    rows: list[cold_pages.Ranked] = []
    if ask_received:
        rows += await source.run(source.received, upper_us=received_upper, with_kind=False, **query)
    if ask_sent:
        rows += await source.run(source.sent, upper_us=sent_upper, with_recipients=False, **query)
    rows.sort(key=lambda ranked: ranked.key, reverse=True)
    hot = [cold_pages.Ranked(_by_created(item), item) for item in items]
    return [ranked.item for ranked in cold_pages.merge(hot, _unique(rows), limit)]


def _unique(rows: list[cold_pages.Ranked]) -> list[cold_pages.Ranked]:
    """Rows without a second copy of the same message (a note to self is sent and received)."""
    seen: set[int] = set()
    kept = []
    for ranked in rows:
        if int(ranked.item["id"]) not in seen:
            seen.add(int(ranked.item["id"]))
            kept.append(ranked)
    return kept


async def mark_message(
    store: Store,
    project_key: str,
    agent_name: str,
    message_id: int,
    registration_token: str | None,
    mode: str,
) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    name = validate_name(agent_name)
    auth = store.bindings.args(slug, name, registration_token)
    marked: Marked | Refusal
    try:
        marked = await cold.mark_message(
            store, slug=slug, name=name, credentials=auth, message_id=message_id, mode=mode
        )
    except Refusal as refused:
        marked = refused
    if isinstance(marked, Refusal):
        if marked.code == "NO_MESSAGE":
            raise await refusals.message_not_found(store, slug, message_id, name)
        await raise_refused(store, marked, slug, project_key)
    if auth[0]:
        store.bindings.bind(slug, name)
    read_at, ack_at = marked.read_at, marked.ack_at
    if mode == "read":
        return {"message_id": message_id, "read": read_at is not None, "read_at": read_at}
    return {"message_id": message_id, "acknowledged": ack_at is not None, "acknowledged_at": ack_at, "read_at": read_at}
