"""Reads behind the project resources: resource://tooling/projects, resource://project/{slug}
and resource://agents/{project_key}. Unauthenticated, as in the reference: they show
profiles, never tokens or mail."""

from __future__ import annotations

from typing import Any

from broker.identity import refusals
from broker.identity.agents import agent_dict, project_view
from broker.identity.projects import project_slug
from broker.store.commands import identity as identity_store
from broker.store.store import Store


async def list_projects(store: Store) -> list[dict[str, Any]]:
    """Every project, oldest first. Test and demo projects are listed too (the reference hides
    them by default, which makes a project named 'test-...' look missing)."""
    projects = [project_view(project) for project in await identity_store.all_projects(store)]
    projects.sort(key=lambda p: (p["created_at"], p["id"]))
    return projects


async def _project_and_agents(store: Store, project_key: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """project_dict and the agent_dict of every agent (retired ones too)."""
    slug = await project_slug(store, project_key)
    found = await identity_store.project_with_agents(store, slug=slug)
    if found is None:
        raise await refusals.project_not_found(store, project_key)
    return project_view(found.project), [agent_dict(record) for record in found.agents]


async def project_detail(store: Store, project_key: str) -> dict[str, Any]:
    """project_dict plus its agents (retired ones too), in registration order."""
    project, agents = await _project_and_agents(store, project_key)
    return {**project, "agents": sorted(agents, key=lambda a: a["id"])}


async def project_agents(store: Store, project_key: str) -> dict[str, Any]:
    """The project's agents with their unread_count, most recently active first; retired
    agents are listed apart in retired_agents."""
    project, shown = await _project_and_agents(store, project_key)
    unread = await identity_store.unread_counts(store, slug=project["slug"], names=[a["name"] for a in shown])
    for agent, count in zip(shown, unread, strict=True):
        agent["unread_count"] = count
    shown.sort(key=lambda a: (a["last_active_ts"], a["id"]), reverse=True)
    return {
        "project": {"slug": project["slug"], "human_key": project["human_key"]},
        "agents": [a for a in shown if not a.get("retired_at")],
        "retired_agents": [a for a in shown if a.get("retired_at")],
    }
