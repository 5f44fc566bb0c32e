"""The typed commands of the lifecycle tools: an agent's state (agent_state.lua), a project's
state and admin auth (project_state.lua), and purge_old_messages' search for old mail (stream
and held-set reads), its deletion in batches (purge_messages.lua) and the cold unread counts it
lowers (cold_forget.lua).

Hard deletes are in ``broker/store/commands/erase.py``, the rebuild from the index in
``broker/store/commands/rehydrate.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.store import keys as layout
from broker.store.commands.agent_record import StoredAgent, decode_agent
from broker.store.doorbell import AGENTS, change_event
from broker.store.refusals import accepted
from broker.store.store import Store

PAGE = 1000  # stream entries per XRANGE while looking for old mail


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks, as the scripts check it: the SHA-256 hex of the token passed ("" for none),
    whether a token is required (False also for the operator), and, for project admin auth, the
    agent this MCP session is bound to in the project ("" for none)."""

    token_digest: str = ""
    token_required: bool = False
    session_agent: str = ""


@dataclass(frozen=True, slots=True)
class ProjectState:
    """A project after project_state.lua: when it was archived ("" when it is not)."""

    archived_at: str


@dataclass(frozen=True, slots=True)
class OldMail:
    """Messages created before a cutoff: their ids (oldest stream first, each once) and the
    stream entries that point at them, as (stream key suffix, entry id)."""

    message_ids: tuple[int, ...]
    stream_entries: tuple[tuple[str, str], ...]


def _flag(value: bool) -> str:
    return "1" if value else "0"


async def agent_state(store: Store, *, slug: str, name: str, caller: Caller, op: str) -> StoredAgent:
    """Retire, unretire or deregister ``name`` (``op``); its record afterwards. Enqueues the
    persistence drain the change needs. Raises Refusal (NO_PROJECT, NO_AGENT, BAD_TOKEN, ...)."""
    keys = store.keys
    reply = await store.run(
        "agent_state",
        [keys.project(slug), keys.agents(slug), keys.pending(slug)],
        [name, caller.token_digest, _flag(caller.token_required), op, keys.doorbell(slug), change_event(slug, AGENTS)],
    )
    accepted(reply)
    store.schedule_persist(slug, reply[2])
    return decode_agent(reply[1])


async def project_state(store: Store, *, slug: str, caller: Caller, op: str) -> ProjectState:
    """Archive, unarchive, or only check admin auth ("check"); enqueues the drain a change needs.
    Raises Refusal: NO_PROJECT, BAD_ADMIN_TOKEN, ADMIN_AUTH_REQUIRED or TOO_MANY_AGENTS."""
    keys = store.keys
    reply = await store.run(
        "project_state",
        [keys.project(slug), keys.agents(slug), keys.pending(slug)],
        [op, caller.token_digest, _flag(caller.token_required), caller.session_agent],
    )
    accepted(reply)
    store.schedule_persist(slug, reply[2])
    return ProjectState(archived_at=reply[1] or "")


async def purge_messages(
    store: Store, *, slug: str, message_ids: list[int], stream_entries: list[tuple[str, str]]
) -> int:
    """Delete a batch of messages everywhere in the project, and the stream entries named (stream
    key suffix, entry id); how many messages were still there. Raises Refusal (NO_PROJECT)."""
    keys = store.keys
    reply = await store.run(
        "purge_messages",
        [keys.project(slug), keys.pending(slug)],
        [keys.project_prefix(slug), len(message_ids), *message_ids, *(x for entry in stream_entries for x in entry)],
    )
    accepted(reply)
    return int(reply[1])


async def forget_cold_unread(store: Store, *, slug: str, counts: dict[str, int]) -> int:
    """Lower the project's cold unread counts by the purged messages each agent had not read
    (cold_forget.lua; agent name -> count); returns how many counts changed."""
    if not counts:
        return 0
    pairs = [value for name, count in sorted(counts.items()) for value in (name.lower(), count)]
    return int(await store.run("cold_forget", [store.keys.cold(slug)], ["", *pairs]))


async def old_mail(store: Store, *, slug: str, cutoff_us: int) -> OldMail:
    """The project's messages created before ``cutoff_us`` (microseconds since the epoch, > 0).

    Found through each agent's outbox and inbox, read from their oldest entry up to the cutoff
    (stream ids are the creation ms or later, so the read is bounded by what is old plus one
    page); the entries' creation time (``c`` in the outbox, ``f`` in the inbox) decides. Then the
    old messages held for an agent of this project from a sender of another project."""
    keys = store.keys
    client = store.client()
    end = str(cutoff_us // 1000)  # an entry's id is never below its message's creation ms
    ids: dict[str, None] = {}
    entries: list[tuple[str, str]] = []
    for lower in await client.hkeys(keys.agents(slug)):
        for suffix, created in ((layout.outbox_suffix(lower), "c"), (layout.inbox_suffix(lower), "f")):
            start = "-"
            while True:
                page = await client.xrange(keys.project_prefix(slug) + suffix, start, end, count=PAGE)
                for entry_id, fields in page:
                    if int(fields[created].split("|", 1)[0]) < cutoff_us:
                        ids.setdefault(fields["m"], None)
                        entries.append((suffix, entry_id))
                if len(page) < PAGE:
                    break
                start = "(" + page[-1][0]
    await _old_held(store, slug, cutoff_us, ids)
    return OldMail(message_ids=tuple(int(i) for i in ids), stream_entries=tuple(entries))


async def _old_held(store: Store, slug: str, cutoff_us: int, ids: dict[str, None]) -> None:
    """Old messages held for an agent until it approves a sender of ANOTHER project: they are in
    no stream of this project (a held message is in no inbox yet, and a sender of another project
    has no outbox here). Found through the agent's inbound links (the contact request made for
    the hold); delete_message then takes them out of their held sets."""
    keys = store.keys
    client = store.client()
    agents = await client.hkeys(keys.agents(slug))
    pipe = client.pipeline(transaction=False)
    for lower in agents:
        pipe.hkeys(keys.links(slug, lower))
    held_keys = []
    for lower, fields in zip(agents, await pipe.execute(), strict=True):
        for field_name in fields:
            direction, sender_slug, sender = layout.parse_link_field(field_name)
            if direction == "in" and sender_slug != slug:
                held_keys.append(keys.held(slug, lower, sender_slug, sender))
    for key in held_keys:
        members = await client.zrange(key, 0, -1)
        if not members:
            continue
        pipe = client.pipeline(transaction=False)
        for member in members:
            pipe.hget(keys.message(slug, int(member)), "created_us")
        for member, created in zip(members, await pipe.execute(), strict=True):
            if created is not None and int(created) < cutoff_us:
                ids.setdefault(member, None)
