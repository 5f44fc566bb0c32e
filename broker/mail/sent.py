"""Sent mail, hot and cold: the newest messages an agent sent in its project with all their
recipients (its outbox), for the outbox resource and the web view's outbox."""

from __future__ import annotations

from typing import Any

from broker.mail import cold_pages
from broker.store.commands import views as store_views
from broker.store.store import Store


async def sent_page(
    store: Store, *, slug: str, name: str, since_us: str, limit: int, include_bodies: bool
) -> tuple[str | None, list[dict[str, Any]]]:
    """The project's human_key and the agent's (lower-cased ``name``) newest ``limit`` sent
    messages created after ``since_us`` ("" for all), newest first: head, to/cc/bcc in full (the
    reader is their sender or the overseer), body_md if asked. The outbox stream and its cold
    mark are read in one MULTI; the index is asked only when the page reaches the mark, or for
    a message that left Redis between the two reads."""
    sent_ids = await store_views.sent_ids(store, slug=slug, name=name, since_us=since_us, limit=limit)
    ids = sent_ids.ids
    page = await store_views.sent_messages(store, slug=slug, ids=ids, include_bodies=include_bodies)
    held = {int(sent.head["id"]): sent for sent in page.messages}
    found: dict[int, dict[str, Any]] = {}
    if len(held) < len(ids):  # left Redis after the ids were read (else purged): the index has them
        source = cold_pages.source(store)
        found = await source.run(source.heads, [int(i) for i in ids if int(i) not in held])
    hot: list[cold_pages.Ranked] = []
    for message_id, (entry_id, created_us) in zip(ids, sent_ids.entries, strict=True):
        sent = held.get(int(message_id))
        if sent is not None:
            item = {**sent.head, **sent.recipients}
            if include_bodies:
                item["body_md"] = sent.body or ""
        elif int(message_id) in found:
            item = dict(found[int(message_id)])
            if not include_bodies:
                item.pop("body_md")
        else:
            continue  # purged
        hot.append(cold_pages.Ranked((cold_pages.entry_ms(entry_id), created_us, int(message_id)), item))
    upper = cold_pages.mark_upper_us(sent_ids.mark)
    oldest = cold_pages.entry_ms(sent_ids.entries[-1][0]) * 1000 + 999 if sent_ids.entries else None
    if cold_pages.reaches(oldest, len(ids) >= limit, upper, since_us):
        assert upper is not None
        source = cold_pages.source(store)
        rows = await source.run(
            source.sent, slug=slug, name=name, upper_us=upper, limit=limit, since_us=since_us,
            include_bodies=include_bodies,
        )  # fmt: skip
        hot = cold_pages.merge(hot, rows, limit)
    return page.human_key, [ranked.item for ranked in hot]
