"""The pages of the web view: each handler reads through the domain functions (mail, history,
identity, reservations) and names a template; broker/web/routes.py wraps them with the
security headers, the error page and the live-fragment rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from broker.errors import BrokerError
from broker.history.search import History
from broker.identity.agents import OVERSEER_NAME
from broker.identity.projects import project_slug
from broker.identity.views import list_projects, project_agents
from broker.mail import oversight
from broker.mail.views import flag, number
from broker.reservations import globs
from broker.reservations.service import list_reservations
from broker.store.commands.oversight import InboxRow
from broker.store.store import Store

PAGE_SIZE = 50
AGENT_PAGE_SIZE = 25
SEARCH_LIMIT = 50
# Pairs whose overlap test would cost more than this many matcher steps are not compared on the
# board (a reservation request pays the same bound in reserve.lua before it tests a pair).
MAX_PAIR_STEPS = 20_000


@dataclass
class Page:
    """A template and its values; ``live`` is the project whose events refresh the page."""

    template: str
    context: dict[str, Any] = field(default_factory=dict)
    live: str | None = None
    status: int = 200


async def _project(store: Store, slug_or_key: str) -> tuple[str, dict[str, Any]]:
    """The project's slug and its agents listing (project_agents), or a refusal naming it."""
    listing = await project_agents(store, slug_or_key)
    return listing["project"]["slug"], listing


def _filters(request: Request) -> dict[str, Any]:
    params = request.query_params
    return {
        "agent": params.get("agent", "").strip(),
        "importance": params.get("importance", "").strip(),
        "unread": flag(params.get("unread"), "unread", False),
        "topic": params.get("topic", "").strip(),
    }


def row_view(row: InboxRow) -> dict[str, Any]:
    """What a row shows: the item, and each recipient with its kind and whether it read and
    acknowledged the message (computed here, so the template only prints)."""
    people = []
    for kind in ("to", "cc", "bcc"):
        for name in row.recipients.get(kind, []):
            read_ts, ack_ts = row.receipts.get(name.lower(), ("", ""))
            people.append({"name": name, "kind": kind, "read": bool(read_ts), "acked": bool(ack_ts)})
    return {
        "item": row.item,
        "people": people,
        "total": len(people),
        "read": sum(p["read"] for p in people),
        "acked": [p["name"] for p in people if p["acked"]],
    }


# -- pages ----------------------------------------------------------------------------------
async def projects_page(store: Store, request: Request) -> Page:
    return Page("projects.html", {"projects": await list_projects(store)})


async def inbox_page(store: Store, request: Request) -> Page:
    slug, listing = await _project(store, request.path_params["slug"])
    filters = _filters(request)
    cursor = request.query_params.get("cursor", "").strip()
    limit = number(request.query_params.get("limit"), "limit", PAGE_SIZE, 1, oversight.MAX_PAGE)
    page = await oversight.inbox_page(
        store, slug, agent=filters["agent"], cursor=cursor, importance=filters["importance"],
        unread_only=filters["unread"], topic=filters["topic"], limit=limit,
    )  # fmt: skip
    rows = [row_view(row) for row in page.rows]
    context = {
        "listing": listing,
        "project": listing["project"],
        "filters": filters,
        "cursor": cursor,
        "rows": rows,
        "page": page,
        # after a filtered walk stopped at its bound, Older continues past what it looked at
        "next_cursor": page.rows[-1].cursor if page.rows and (page.more or not page.complete) else "",
        "sent": request.query_params.get("sent", ""),
        "importances": oversight.IMPORTANCES,
        "scan_bound": oversight.SCAN_ENTRIES_PER_AGENT,
    }
    return Page("inbox.html", context, live=slug)


async def agents_page(store: Store, request: Request) -> Page:
    slug, listing = await _project(store, request.path_params["slug"])
    return Page("agents.html", {"listing": listing, "project": listing["project"]}, live=slug)


async def agent_page(store: Store, request: Request) -> Page:
    slug, listing = await _project(store, request.path_params["slug"])
    name = request.path_params["name"]
    everyone = listing["agents"] + listing["retired_agents"]
    agent = next((a for a in everyone if a["name"].lower() == name.lower()), None)
    if agent is None:
        raise BrokerError("NOT_FOUND", f"Project '{listing['project']['human_key']}' has no agent named '{name}'.")
    inbox = await oversight.inbox_page(store, slug, agent=agent["name"], limit=AGENT_PAGE_SIZE)
    rows = [row_view(row) for row in inbox.rows]
    sent = await oversight.outbox(store, slug, agent["name"], AGENT_PAGE_SIZE)
    context = {"listing": listing, "project": listing["project"], "agent": agent, "rows": rows, "sent": sent}
    return Page("agent.html", context, live=slug)


async def thread_page(store: Store, request: Request) -> Page:
    slug, listing = await _project(store, request.path_params["slug"])
    thread_id = request.path_params["thread_id"]
    messages = await oversight.thread(store, slug, thread_id)
    if not messages:
        raise BrokerError(
            "NOT_FOUND", f"No message of project '{listing['project']['human_key']}' is in thread '{thread_id}'."
        )
    context = {"project": listing["project"], "thread_id": thread_id, "messages": messages}
    return Page("thread.html", context, live=slug)


def mark_conflicts(entries: list[dict[str, Any]]) -> None:
    """Give each live reservation ``conflicts_with``: the other holders' live reservations whose
    patterns overlap it when either is exclusive ({id, agent, path_pattern} each)."""
    for entry in entries:
        entry["conflicts_with"] = []
    live = [e for e in entries if not e.get("released_ts")]
    for i, a in enumerate(live):
        for b in live[i + 1 :]:
            if a["agent"].lower() == b["agent"].lower() or not (a["exclusive"] or b["exclusive"]):
                continue
            pa, pb = a["path_pattern"], b["path_pattern"]
            try:
                if globs.pair_steps(pa, pb) > MAX_PAIR_STEPS or not globs.overlaps(pa, pb):
                    continue
            except globs.PatternError:
                continue
            a["conflicts_with"].append({k: b[k] for k in ("id", "agent", "path_pattern")})
            b["conflicts_with"].append({k: a[k] for k in ("id", "agent", "path_pattern")})


async def reservations_page(store: Store, request: Request) -> Page:
    slug, listing = await _project(store, request.path_params["slug"])
    entries = await list_reservations(store, slug, active_only=True)
    mark_conflicts(entries)
    entries.sort(key=lambda e: (e["path_pattern"], e["expires_ts"]))
    context = {"project": listing["project"], "reservations": entries}
    return Page("reservations.html", context, live=slug)


async def search_page(store: Store, history: History, request: Request) -> Page:
    slug, listing = await _project(store, request.path_params["slug"])
    text = request.query_params.get("q", "")
    limit = number(request.query_params.get("limit"), "limit", SEARCH_LIMIT, 1, 200)
    results = await history.search_project(slug, text, limit) if text.strip() else []
    return Page("search.html", {"project": listing["project"], "q": text, "results": results})


async def compose_page(store: Store, request: Request, problem: BrokerError | None = None) -> Page:
    _slug, listing = await _project(store, request.path_params["slug"])
    agents = [a for a in listing["agents"] if a["name"] != OVERSEER_NAME]
    context = {"project": listing["project"], "agents": agents, "problem": problem, "form": {}}
    return Page("compose.html", context, status=400 if problem else 200)


async def send_overseer_mail(store: Store, request: Request, form: dict[str, Any]) -> str:
    """Send the compose form's mail; returns the new message's id."""
    slug = await project_slug(store, request.path_params["slug"])
    result = await oversight.send_as_overseer(store, slug, form["to"], form["subject"], form["body_md"])
    deliveries = result.get("deliveries") or []
    if not deliveries:
        raise BrokerError("DELIVERY_FAILED", "The message reached no agent; check the recipients.")
    return str(deliveries[0]["payload"]["id"])
