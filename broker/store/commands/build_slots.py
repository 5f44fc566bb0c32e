"""Build slot leases in Redis: the typed commands of acquire_build_slot.lua,
renew_build_slot.lua and release_build_slot.lua (layout in broker/scripts/lib/build_slots.lua).

Each raises ``Refusal`` for a script's error reply (NO_PROJECT, NO_AGENT, BAD_TOKEN,
AUTH_REQUIRED; acquire also PROJECT_ARCHIVED and SLOT_FULL). Conflicts are data, not refusals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from broker.store.refusals import accepted
from broker.store.store import Store
from broker.store.times import iso_from_us


@dataclass(frozen=True, slots=True)
class Lease:
    """An agent's lease on a build slot (times ISO, as the tools show them)."""

    slot: str
    agent: str
    branch: str
    exclusive: bool
    acquired_ts: str | None
    expires_ts: str | None

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Lease:
        return cls(
            value["slot"],
            value["agent"],
            value["branch"],
            bool(value["exclusive"]),
            iso_from_us(value["acquired_us"]),
            iso_from_us(value["expires_us"]),
        )


@dataclass(frozen=True, slots=True)
class Acquired:
    lease: Lease
    conflicts: tuple[Lease, ...]


def _keys(store: Store, slug: str, slot: str) -> list[str]:
    keys = store.keys
    return [keys.project(slug), keys.agents(slug), keys.build_slot(slug, slot)]


async def acquire(
    store: Store,
    *,
    slug: str,
    agent: str,
    credentials: tuple[str, str],
    slot: str,
    branch: str,
    ttl_us: int,
    exclusive: bool,
    max_leases: int,
) -> Acquired:
    """Take or extend the agent's lease (always granted) and list the conflicting live leases."""
    reply = accepted(
        await store.run(
            "acquire_build_slot",
            _keys(store, slug, slot),
            [agent, *credentials, slot, branch, ttl_us, "1" if exclusive else "0", max_leases],
        )
    )
    conflicts = json.loads(reply[2])
    return Acquired(
        Lease.from_json(json.loads(reply[1])),
        tuple(Lease.from_json(c) for c in (conflicts if isinstance(conflicts, list) else [])),
    )


async def renew(
    store: Store, *, slug: str, agent: str, credentials: tuple[str, str], slot: str, branch: str, extend_us: int
) -> str | None:
    """The lease's new expiry (ISO), or None when the agent holds no live lease on the slot."""
    reply = accepted(
        await store.run("renew_build_slot", _keys(store, slug, slot), [agent, *credentials, branch, extend_us])
    )
    return iso_from_us(reply[1]) if reply[1] else None


async def release(
    store: Store, *, slug: str, agent: str, credentials: tuple[str, str], slot: str, branch: str
) -> tuple[bool, str]:
    """(whether a live lease was released, the release time as ISO)."""
    reply = accepted(await store.run("release_build_slot", _keys(store, slug, slot), [agent, *credentials, branch]))
    return bool(int(reply[1])), reply[2]


async def drop_agent_leases(store: Store, *, slug: str, name: str) -> int:
    """Delete every lease the agent holds in the project, on any slot and branch (hard_delete_agent):
    one HDEL per slot hash, each a step that stands alone. How many leases went."""
    client = store.client()
    holder_prefix = name.lower() + " "
    dropped = 0
    async for key in client.scan_iter(match=store.keys.build_slot(slug, "*"), count=1000):
        mine = [field for field in await client.hkeys(key) if field.startswith(holder_prefix)]
        if mine:
            dropped += int(await client.hdel(key, *mine))
    return dropped
