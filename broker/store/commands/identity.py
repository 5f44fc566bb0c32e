"""Typed commands of identity: projects (ensure_project, the slug registry with its sync twin for
the git guard), agents (register_agent; get_agent and sender_pass, the token check every area
runs; stored_agent, the record without one), window identities (window.lua), and the reads
behind the project resources (projects, their agents, unread counts). Script error replies are
raised as ``Refusal``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis import Redis as SyncRedis

from broker.store.commands.agent_record import AgentRecord, StoredAgent, decode_agent
from broker.store.commands.projects import ProjectRecord
from broker.store.doorbell import AGENTS, change_event
from broker.store.keys import Keys
from broker.store.refusals import accepted, refusal
from broker.store.store import Store

# The blocking client the git guard and the CLI hold (broker.store.clients.make_sync_client).
SyncClient = SyncRedis


# -- projects -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EnsuredProject:
    project: ProjectRecord
    created: bool  # this call created it


async def ensure_project(store: Store, *, slug: str, human_key: str) -> EnsuredProject:
    """The project ``slug`` of ``human_key``, created (with a new id, and listed in the projects
    directory) unless it exists; concurrent callers all get the same record."""
    keys = store.keys
    new_id = await store.next_id("project")
    reply = await store.run("ensure_project", [keys.project(slug), keys.pending(slug)], [new_id, slug, human_key])
    created = reply[4] == 1
    if created:
        await store.client().hset(keys.projects, slug, human_key)
    archived_at = reply[6] if len(reply) > 6 else None
    project = ProjectRecord(int(reply[0]), reply[1], reply[2], reply[3], archived_at or None)
    store.schedule_persist(slug, reply[5])
    return EnsuredProject(project, created)


async def all_projects(store: Store) -> list[ProjectRecord]:
    """Every project of the directory, in slug order (entries whose hash is gone are left out)."""
    slugs = sorted(await store.client().hkeys(store.keys.projects))
    if not slugs:
        return []
    pipe = store.client().pipeline(transaction=False)
    for slug in slugs:
        pipe.hgetall(store.keys.project(slug))
    return [ProjectRecord.from_hash(fields) for fields in await pipe.execute() if fields]


# -- slugs --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SlugHolders:
    """Per candidate slug: its owner in ``<p>:slugs`` and the human_key the legacy directory
    ``<p>:projects`` holds for it (None where there is none)."""

    owners: list[str | None]
    legacy: list[str | None]


async def slug_holders(store: Store, *, candidates: list[str]) -> SlugHolders:
    pipe = store.client().pipeline(transaction=False)
    pipe.hmget(store.keys.slug_owners, candidates)
    pipe.hmget(store.keys.projects, candidates)
    owners, legacy = await pipe.execute()
    return SlugHolders(owners, legacy)


def slug_holders_sync(client: SyncClient, keys: Keys, *, candidates: list[str]) -> SlugHolders:
    """``slug_holders`` with a blocking client (the git guard, the CLI)."""
    pipe = client.pipeline(transaction=False)
    pipe.hmget(keys.slug_owners, candidates)
    pipe.hmget(keys.projects, candidates)
    owners, legacy = pipe.execute()
    return SlugHolders(owners, legacy)


async def assign_slug(store: Store, *, human_key: str, candidates: list[str], legacy: list[str | None]) -> str | None:
    """The slug ``human_key`` owns, or the first free candidate, claimed for good (assign_slug.lua);
    None when every candidate belongs to another key. ``legacy``: SlugHolders.legacy."""
    args: list[str] = [human_key]
    for slug, old in zip(candidates, legacy, strict=True):
        args += [slug, old or ""]
    slug, _assigned = await store.run("assign_slug", [store.keys.slug_owners], args)
    return slug or None


# -- agents -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Profile:
    program: str
    model: str
    task_description: str
    attachments_policy: str


@dataclass(frozen=True, slots=True)
class Registered:
    record: AgentRecord
    created: bool  # a new agent (its token is the one minted), not an update


async def register_agent(
    store: Store,
    *,
    slug: str,
    mode: str,
    profile: Profile,
    minted_digest: str,
    credentials: tuple[str, str],
    candidates: list[str],
) -> Registered | None:
    """register_agent.lua: in ``mode`` "upsert" update the agent named ``candidates[0]`` (checking
    ``credentials``, store.bindings.args' (token digest, "1" if required)) or create it; in
    "create" claim the first free candidate. A new agent gets a new id and ``minted_digest``.
    None when every candidate is taken (create mode); Refusal for NO_PROJECT, PROJECT_ARCHIVED,
    BAD_TOKEN, AUTH_REQUIRED."""
    keys = store.keys
    reply = await store.run(
        "register_agent",
        [keys.project(slug), keys.agents(slug), keys.active(slug), keys.pending(slug)],
        [
            mode,
            await store.next_id("agent"),
            profile.program,
            profile.model,
            profile.task_description,
            profile.attachments_policy,
            minted_digest,
            *credentials,
            keys.doorbell(slug),
            change_event(slug, AGENTS),
            *candidates,
        ],
    )
    if reply[0] == "ok":
        store.schedule_persist(slug, reply[4])
        return Registered(AgentRecord(decode_agent(reply[1]), reply[2]), reply[3] == 1)
    if reply[0] == "TAKEN":
        return None
    raise refusal(reply)


def _checked_agent(reply: list[Any]) -> AgentRecord:
    """get_agent.lua's and sender_pass.lua's reply: {"ok", record JSON, last_active_ts}."""
    accepted(reply)
    return AgentRecord(decode_agent(reply[1]), reply[2])


async def get_agent(store: Store, *, slug: str, name: str, credentials: tuple[str, str]) -> AgentRecord:
    """One agent's record once ``credentials`` (store.bindings.args' (token digest, "1" if
    required)) pass (get_agent.lua, read-only); Refusal for NO_PROJECT, NO_AGENT, BAD_TOKEN,
    AUTH_REQUIRED."""
    keys = store.keys
    reply = await store.run(
        "get_agent", [keys.project(slug), keys.agents(slug), keys.active(slug)], [name, *credentials]
    )
    return _checked_agent(reply)


async def sender_pass(
    store: Store, *, slug: str, name: str, credentials: tuple[str, str], rate_spec: str, cost: int
) -> AgentRecord:
    """``get_agent`` for a sender: once ``credentials`` pass, the agent's own rate bucket
    (``rate_spec``, lib/ratelimit.lua) admits it and is charged ``cost`` tokens (sender_pass.lua).
    Refusal as get_agent's, or RATE_LIMITED with the milliseconds to wait (nothing charged)."""
    keys = store.keys
    reply = await store.run(
        "sender_pass",
        [keys.project(slug), keys.agents(slug), keys.active(slug)],
        [name, *credentials, keys.project_prefix(slug), rate_spec, cost],
    )
    return _checked_agent(reply)


async def record_activity(store: Store, *, slug: str, name: str, at: str) -> None:
    """The agent's last activity moved forward to ``at`` (record_activity.lua)."""
    keys = store.keys
    await store.run("record_activity", [keys.active(slug), keys.agents(slug)], [name, at])


async def stored_agent(store: Store, *, slug: str, name: str) -> StoredAgent | None:
    """The agent's record without a token check (one HGET), None when there is no such agent."""
    raw: str | None = await store.client().hget(store.keys.agents(slug), name.lower())
    return None if raw is None else decode_agent(raw)


@dataclass(frozen=True, slots=True)
class ProjectAgents:
    project: ProjectRecord
    agents: list[AgentRecord]  # retired ones too, in no particular order


async def project_with_agents(store: Store, *, slug: str) -> ProjectAgents | None:
    """The project and every agent of it with its last activity (one round trip), or None."""
    keys = store.keys
    pipe = store.client().pipeline(transaction=False)
    pipe.hgetall(keys.project(slug))
    pipe.hgetall(keys.agents(slug))
    pipe.hgetall(keys.active(slug))
    fields, agents, active = await pipe.execute()
    if not fields:
        return None
    records = []
    for raw in agents.values():
        agent = decode_agent(raw)
        records.append(AgentRecord(agent, active.get(agent["name"])))
    return ProjectAgents(ProjectRecord.from_hash(fields), records)


async def unread_counts(store: Store, *, slug: str, names: list[str]) -> list[int]:
    """How many unread messages each agent has, in the order of ``names``: its unread set (the
    hot window's) plus the cold hash's unread:<name> (those the trimmer moved to the index),
    read in one transaction, so a trim between them counts nothing twice or not at all."""
    if not names:
        return []
    keys = store.keys
    pipe = store.client().pipeline(transaction=True)
    for name in names:
        pipe.scard(keys.unread(slug, name))
    pipe.hmget(keys.cold(slug), [f"unread:{name.lower()}" for name in names])
    replies = await pipe.execute()
    return [int(hot) + int(cold or 0) for hot, cold in zip(replies[:-1], replies[-1], strict=True)]


# -- window identities --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WindowChange:
    window: dict[str, Any]  # id, window_uuid, display_name, created_ts, last_active_ts, expires_ts, expires_us
    old_display_name: str


async def _window(store: Store, slug: str, op: str, window_uuid: str = "", ttl_us: int = 0, name: str = "") -> Any:
    keys = store.keys
    reply = await store.run(
        "window", [keys.project(slug), keys.windows(slug), keys.window_seq(slug)], [op, window_uuid, ttl_us, name]
    )
    return accepted(reply)  # Refusal NO_PROJECT, or NOT_FOUND for a window that is not live


async def _change(store: Store, slug: str, op: str, window_uuid: str, ttl_us: int = 0, name: str = "") -> WindowChange:
    reply = await _window(store, slug, op, window_uuid, ttl_us, name)
    return WindowChange(json.loads(reply[1]), reply[2])


async def live_windows(store: Store, *, slug: str) -> list[dict[str, Any]]:
    """The project's live window identities (expired ones are removed on the way)."""
    return json.loads((await _window(store, slug, "list"))[1])


async def rename_window(store: Store, *, slug: str, window_uuid: str, display_name: str) -> WindowChange:
    return await _change(store, slug, "rename", window_uuid, name=display_name)


async def expire_window(store: Store, *, slug: str, window_uuid: str) -> WindowChange:
    return await _change(store, slug, "expire", window_uuid)


async def touch_window(store: Store, *, slug: str, window_uuid: str, ttl_us: int) -> WindowChange:
    """The live window with its activity refreshed (it expires ``ttl_us`` from now)."""
    return await _change(store, slug, "touch", window_uuid, ttl_us)


async def bind_window(store: Store, *, slug: str, window_uuid: str, display_name: str, ttl_us: int) -> WindowChange:
    """The window, created or pointed at ``display_name``, expiring ``ttl_us`` from now."""
    return await _change(store, slug, "bind", window_uuid, ttl_us, display_name)
