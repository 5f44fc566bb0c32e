"""Typed reads behind the overseers' web view (broker/web/): a page of a project's unified
inbox (project_inbox.lua) and the mark of its acknowledgement, read and reservation state,
which the web view compares to notice the changes no script announces (an expiry, activity)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from broker.store.refusals import accepted
from broker.store.store import Store


@dataclass(frozen=True, slots=True)
class InboxRow:
    cursor: str  # "<created_us>:<message id>": the next page starts after it
    item: dict[str, Any]  # the inbox item (head with kind, no body)
    recipients: dict[str, list[str]]  # {to, cc, bcc}
    receipts: dict[str, tuple[str, str]]  # lower name -> (read_ts or "", ack_ts or "")


@dataclass(frozen=True, slots=True)
class InboxPage:
    human_key: str
    rows: list[InboxRow]
    more: bool  # rows after this page exist
    complete: bool  # no agent's walk stopped at the scan budget (with filters, older matches may exist)
    mark: str = ""  # the project's cold mark "t" read with the page ("" for none)


async def project_inbox(
    store: Store,
    *,
    slug: str,
    agent: str,
    cursor: str,
    importance: str,
    unread_only: bool,
    topic: str,
    limit: int,
    scan_entries: int,
) -> InboxPage:
    """One page of the unified inbox of project ``slug`` (every agent's, or ``agent``'s only),
    newest first. Refusals: NO_PROJECT."""
    keys = store.keys
    reply = accepted(
        await store.run(
            "project_inbox",
            [keys.project(slug), keys.agents(slug), keys.cold(slug)],
            [
                keys.project_prefix(slug),
                agent.lower(),
                cursor,
                importance,
                "1" if unread_only else "0",
                topic.lower(),
                limit,
                scan_entries,
            ],
        )
    )
    rows = []
    for i in range(5, len(reply), 4):
        item = json.loads(reply[i + 1])
        receipts = {name: (times[0], times[1]) for name, times in json.loads(reply[i + 3]).items()}
        rows.append(InboxRow(f"{reply[i]}:{item['id']}", item, json.loads(reply[i + 2]), receipts))
    return InboxPage(reply[1], rows, reply[3] == "1", reply[2] == "1", reply[4])


async def change_mark(store: Store, *, slug: str, now_us: int) -> str:
    """A digest of what the web view shows besides mail: each agent's last read or acknowledgement
    (``mailact``), last activity (``active``) and the reservations live at ``now_us`` with their
    expiry (``res:expiry``: a grant adds, a renewal moves, a release removes; one that expires
    leaves the digest at its expiry, although it stays in the zset until pruned). Three small
    reads in one pipeline, bounded by the project's agents and live reservations."""
    keys = store.keys
    pipe = store.client().pipeline(transaction=False)
    pipe.hgetall(keys.mail_activity(slug))
    pipe.hgetall(keys.active(slug))
    pipe.zrange(keys.reservation_expiry(slug), 0, -1, withscores=True)
    mail_activity, active, expiry = await pipe.execute()
    live = [(rid, expires) for rid, expires in expiry if expires > now_us]
    state = json.dumps([sorted(mail_activity.items()), sorted(active.items()), live], default=str)
    return hashlib.sha256(state.encode()).hexdigest()
