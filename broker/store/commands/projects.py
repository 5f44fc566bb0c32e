"""Reads of a project's registry entries that error messages and lookups need."""

from __future__ import annotations

import json
from dataclasses import dataclass

from broker.store.store import Store


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    """The fields of a project hash (what project_dict shows)."""

    id: int
    slug: str
    human_key: str
    created_at: str
    archived_at: str | None  # only while the project is archived


async def human_key(store: Store, slug: str) -> str | None:
    """The project's human_key (its absolute path), or None when the project is not there."""
    return await store.client().hget(store.keys.project(slug), "human_key")


async def exists(store: Store, slug: str) -> bool:
    return bool(await store.client().exists(store.keys.project(slug)))


async def known_keys(store: Store) -> list[str]:
    """Every project's slug and human_key (the registry of projects)."""
    known = await store.client().hgetall(store.keys.projects)
    return list(known) + list(known.values())


async def agent_names(store: Store, slug: str) -> tuple[str | None, list[str]]:
    """The project's human_key and its agents' names, sorted."""
    pipe = store.client().pipeline(transaction=False)
    pipe.hget(store.keys.project(slug), "human_key")
    pipe.hvals(store.keys.agents(slug))
    key, records = await pipe.execute()
    return key, sorted(json.loads(r)["name"] for r in records)
