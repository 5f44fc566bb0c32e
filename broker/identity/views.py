"""Reads behind the project resources: resource://tooling/projects, resource://project/{slug}
and resource://agents/{project_key}. Unauthenticated, as in the reference: they show
profiles, never tokens or mail."""

from __future__ import annotations

import json
from typing import Any

from broker.identity import refusals
from broker.identity.agents import agent_dict
from broker.identity.projects import project_dict, project_slug
from broker.store.store import Store


def project_fields(fields: dict[str, str]) -> dict[str, Any]:
    """project_dict from the project hash (archived_at only while the project is archived)."""
    return project_dict(
        [fields["id"], fields["slug"], fields["human_key"], fields["created_at"]], fields.get("archived_at")
    )


async def list_projects(store: Store) -> list[dict[str, Any]]:
    """Every project, oldest first. Test and demo projects are listed too (the reference hides
    them by default, which makes a project named 'test-...' look missing)."""
    slugs = sorted(await store.redis.hkeys(store.keys.projects))
    if not slugs:
        return []
    pipe = store.redis.pipeline(transaction=False)
    for slug in slugs:
        pipe.hgetall(store.keys.project(slug))
    projects = [project_fields(fields) for fields in await pipe.execute() if fields]
    projects.sort(key=lambda p: (p["created_at"], p["id"]))
    return projects


async def _project_and_agents(store: Store, project_key: str) -> tuple[dict[str, Any], list[tuple[str, str | None]]]:
    slug = await project_slug(store, project_key)
    keys = store.keys
    pipe = store.redis.pipeline(transaction=False)
    pipe.hgetall(keys.project(slug))
    pipe.hgetall(keys.agents(slug))
    pipe.hgetall(keys.active(slug))
    fields, agents, active = await pipe.execute()
    if not fields:
        raise await refusals.project_not_found(store, project_key)
    rows = []
    for raw in agents.values():
        rows.append((raw, active.get(json.loads(raw)["name"])))
    return project_fields(fields), rows


async def project_detail(store: Store, project_key: str) -> dict[str, Any]:
    """project_dict plus its agents (retired ones too), in registration order."""
    project, rows = await _project_and_agents(store, project_key)
    agents = sorted((agent_dict(raw, last) for raw, last in rows), key=lambda a: a["id"])
    return {**project, "agents": agents}


async def project_agents(store: Store, project_key: str) -> dict[str, Any]:
    """The project's agents with their unread_count, most recently active first; retired
    agents are listed apart in retired_agents."""
    project, rows = await _project_and_agents(store, project_key)
    shown = [agent_dict(raw, last) for raw, last in rows]
    pipe = store.redis.pipeline(transaction=False)
    for agent in shown:
        pipe.scard(store.keys.unread(project["slug"], agent["name"]))
    for agent, unread in zip(shown, await pipe.execute() if shown else [], strict=True):
        agent["unread_count"] = unread
    shown.sort(key=lambda a: (a["last_active_ts"], a["id"]), reverse=True)
    return {
        "project": {"slug": project["slug"], "human_key": project["human_key"]},
        "agents": [a for a in shown if not a.get("retired_at")],
        "retired_agents": [a for a in shown if a.get("retired_at")],
    }
