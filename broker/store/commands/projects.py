"""Reads of a project's hash and registry entries: its record (ProjectRecord, the one type of a
project hash for every area), its id, its human_key, whether it exists, the registry of projects,
and its agents' names, which lookups and error messages need."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.store.commands.agent_record import decode_agent
from broker.store.store import Store

_FIELDS = ("id", "slug", "human_key", "created_at", "archived_at")


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    """The fields of a project hash (what project_dict shows)."""

    id: int
    slug: str
    human_key: str
    created_at: str
    archived_at: str | None  # only while the project is archived

    @classmethod
    def from_hash(cls, fields: Mapping[str, Any]) -> ProjectRecord:
        """The record of a project hash's fields (as HGETALL reads them)."""
        return cls(
            int(fields["id"]),
            fields["slug"],
            fields["human_key"],
            fields["created_at"],
            fields.get("archived_at") or None,
        )


async def project_record(store: Store, *, slug: str) -> ProjectRecord | None:
    """The project's record (one HMGET), None when the project is not there."""
    values = await store.client().hmget(store.keys.project(slug), *_FIELDS)
    if values[0] is None:
        return None
    return ProjectRecord.from_hash(dict(zip(_FIELDS, values, strict=True)))


async def project_id(store: Store, *, slug: str) -> int | None:
    """The project's id, or None when the project is not there."""
    found = await store.client().hget(store.keys.project(slug), "id")
    return None if found is None else int(found)


async def human_key(store: Store, *, slug: str) -> str | None:
    """The project's human_key (its absolute path), or None when the project is not there."""
    return await store.client().hget(store.keys.project(slug), "human_key")


async def exists(store: Store, *, slug: str) -> bool:
    return bool(await store.client().exists(store.keys.project(slug)))


async def known_keys(store: Store) -> list[str]:
    """Every project's slug and human_key (the registry of projects)."""
    known = await store.client().hgetall(store.keys.projects)
    return list(known) + list(known.values())


async def agent_names(store: Store, *, slug: str) -> tuple[str | None, list[str]]:
    """The project's human_key and its agents' names, sorted."""
    pipe = store.client().pipeline(transaction=False)
    pipe.hget(store.keys.project(slug), "human_key")
    pipe.hvals(store.keys.agents(slug))
    key, records = await pipe.execute()
    return key, sorted(decode_agent(r)["name"] for r in records)
