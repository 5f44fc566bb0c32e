"""File reservations in Redis: the typed commands of the reservation scripts (reserve, release,
renew, forced release, the agent check of the guard tools) and every read the reservation
tools, the staleness check and the git hook's guard do (records, listings, holder activity).

Each command builds its keys and ARGV here and decodes the reply into the dataclasses below, or
raises ``Refusal`` for a script's error reply (NO_PROJECT, NO_AGENT, BAD_TOKEN, AUTH_REQUIRED,
PROJECT_ARCHIVED, and reserve's RATE_LIMITED and TOO_COMPLEX). Conflicts are data, not refusals.
The layout is documented in ``broker/scripts/lib/reservations.lua``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis import Redis as SyncRedis

from broker.store.commands.agent_record import StoredAgent, decode_agent
from broker.store.commands.reservation_record import ReservationRecord
from broker.store.doorbell import RESERVATIONS, change_event
from broker.store.keys import Keys
from broker.store.refusals import accepted
from broker.store.times import iso_from_us

if TYPE_CHECKING:
    from broker.store.store import Store

GUARD_TIMEOUT_SECONDS = 3  # the git hook's connects and replies: a commit must not hang on Redis


@dataclass(frozen=True, slots=True)
class Granted:
    """A reservation reserve granted (new, or renewed in place when the agent held the pattern)."""

    id: int
    path_pattern: str
    exclusive: bool
    reason: str
    expires_ts: str | None


@dataclass(frozen=True, slots=True)
class Holder:
    """Another agent's live reservation that overlaps a requested pattern."""

    id: int
    agent: str
    path_pattern: str
    exclusive: bool
    expires_ts: str | None


@dataclass(frozen=True, slots=True)
class Conflict:
    """A requested pattern and the holders it meets (at most the listed number; more_holders if more)."""

    path: str
    holders: tuple[Holder, ...]
    more_holders: bool


@dataclass(frozen=True, slots=True)
class Reserved:
    """reserve's reply: what was granted, the conflicts, the matching steps the call cost (the
    HTTP client's bucket pays for them too) and whether a persistence drain must be scheduled."""

    granted: tuple[Granted, ...]
    conflicts: tuple[Conflict, ...]
    steps: int


@dataclass(frozen=True, slots=True)
class Released:
    count: int
    released_at: str


@dataclass(frozen=True, slots=True)
class RenewedReservation:
    id: int
    path_pattern: str
    old_expires_ts: str | None
    new_expires_ts: str | None


@dataclass(frozen=True, slots=True)
class Renewed:
    reservations: tuple[RenewedReservation, ...]


@dataclass(frozen=True, slots=True)
class ForceReleased:
    released_at: str
    released_us: int


@dataclass(frozen=True, slots=True)
class ForceReleaseView:
    """What a forced release checks first: the project's human_key (None: no project), the
    reservation's record (None: not found) and the caller's stored agent record (None: no agent)."""

    human_key: str | None
    record: ReservationRecord | None
    actor: StoredAgent | None


@dataclass(frozen=True, slots=True)
class Listing:
    """A project's human_key (None: no project) and the reservation records a listing shows."""

    human_key: str | None
    records: list[ReservationRecord]


@dataclass(frozen=True, slots=True)
class HolderActivity:
    """A holder's last registration or send (ISO), its last send's created time (us) and its last
    read or ack (ms), each None when there was none."""

    last_active_ts: str | None
    last_sent_us: int | None
    last_read_ms: int | None


def _json_list(text: str) -> list[Any]:
    value = json.loads(text)
    return value if isinstance(value, list) else []  # cjson writes an empty table as {}


async def _run_for_agent(
    store: Store, script: str, slug: str, agent: str, credentials: tuple[str, str], args: list[Any], items: list[Any]
) -> list[Any]:
    """Run a reservation script that acts for one agent; its reply when "ok", else Refusal. Its
    ARGV: the prefix, the agent and credentials, ``args``, the doorbell channel and the change
    event it publishes there, then the variable ``items``."""
    keys = store.keys
    reply = await store.run(
        script,
        [keys.project(slug), keys.agents(slug), keys.pending(slug)],
        [keys.project_prefix(slug), agent, *credentials, *args, *_announce(store, slug), *items],
    )
    return accepted(reply)


def _announce(store: Store, slug: str) -> tuple[str, str]:
    """The doorbell channel and the change event a reservation script publishes when it changes one."""
    return store.keys.doorbell(slug), change_event(slug, RESERVATIONS)


async def reserve(
    store: Store,
    *,
    slug: str,
    agent: str,
    credentials: tuple[str, str],
    ttl_us: int,
    exclusive: bool,
    reason: str,
    retention_seconds: int,
    max_holders: int,
    step_budget: int,
    rate_spec: str,
    requests: list[tuple[int, str, str]],
) -> Reserved:
    """Grant ``requests`` (new id, normalized pattern, index bucket) and report their conflicts.
    Refusal("TOO_COMPLEX", what, count, steps) or Refusal("RATE_LIMITED", wait_ms) write nothing."""
    args: list[Any] = [
        ttl_us,
        "1" if exclusive else "0",
        reason,
        retention_seconds,
        max_holders,
        step_budget,
        rate_spec,
    ]
    triples: list[Any] = []
    for triple in requests:
        triples += triple
    reply = await _run_for_agent(store, "reserve", slug, agent, credentials, args, triples)
    granted = tuple(
        Granted(int(g["id"]), g["path_pattern"], bool(g["exclusive"]), g["reason"], iso_from_us(g["expires_us"]))
        for g in _json_list(reply[1])
    )
    conflicts = tuple(
        Conflict(
            c["path"],
            tuple(
                Holder(int(h["id"]), h["agent"], h["path_pattern"], bool(h["exclusive"]), iso_from_us(h["expires_us"]))
                for h in (c["holders"] if isinstance(c["holders"], list) else [])
            ),
            bool(c["more_holders"]),
        )
        for c in _json_list(reply[2])
    )
    store.schedule_persist(slug, reply[4])
    return Reserved(granted, conflicts, int(reply[3]))


async def release_reservations(
    store: Store,
    *,
    slug: str,
    agent: str,
    credentials: tuple[str, str],
    mode: str,
    items: list[str],
    retention_seconds: int,
) -> Released:
    """End the agent's live reservations: mode "all", or "paths"/"ids" with ``items``."""
    reply = await _run_for_agent(
        store, "release_reservations", slug, agent, credentials, [mode, retention_seconds], items
    )
    store.schedule_persist(slug, reply[3])
    return Released(int(reply[1]), reply[2])


async def renew_reservations(
    store: Store,
    *,
    slug: str,
    agent: str,
    credentials: tuple[str, str],
    mode: str,
    items: list[str],
    extend_us: int,
) -> Renewed:
    """Extend the agent's live reservations: mode "all", or "paths"/"ids" with ``items``."""
    reply = await _run_for_agent(store, "renew_reservations", slug, agent, credentials, [mode, extend_us], items)
    renewed = tuple(
        RenewedReservation(int(r["id"]), r["path_pattern"], r.get("old_expires_ts"), r.get("new_expires_ts"))
        for r in _json_list(reply[1])
    )
    store.schedule_persist(slug, reply[2])
    return Renewed(renewed)


async def force_release_reservation(
    store: Store,
    *,
    slug: str,
    actor: str,
    credentials: tuple[str, str],
    reservation_id: int,
    checked_expires_us: int,
    retention_seconds: int,
) -> ForceReleased | None:
    """End another agent's reservation if it is still live with the expiry the caller checked;
    None when it was renewed or ended meanwhile."""
    keys = store.keys
    reply = await store.run(
        "force_release_reservation",
        [keys.project(slug), keys.agents(slug), keys.pending(slug)],
        [
            keys.project_prefix(slug), actor, *credentials, reservation_id,
            checked_expires_us, retention_seconds, *_announce(store, slug),
        ],
    )  # fmt: skip
    if reply[0] == "CHANGED":
        return None
    accepted(reply)
    store.schedule_persist(slug, reply[3])
    return ForceReleased(reply[1], int(reply[2]))


@dataclass(frozen=True, slots=True)
class PairOverlap:
    """glob_overlap's answer for one pair: whether some path matches both patterns, the matcher
    cells the test filled, and the price reserve.lua puts on the pair beforehand (pair_steps)."""

    overlaps: bool
    steps: int
    bound: int


async def glob_overlap(store: Store, *, pairs: list[tuple[str, str]]) -> list[PairOverlap]:
    """The Lua matcher on pairs of normalized patterns (the test suite holds it equal to the
    Python twin, broker/reservations/globs.py)."""
    answers, steps, bounds = await store.run("glob_overlap", [], [p for pair in pairs for p in pair])
    return [PairOverlap(bool(a), int(s), int(b)) for a, s, b in zip(answers, steps, bounds, strict=True)]


# -- reads ---------------------------------------------------------------------------------
def _records(hashes: list[dict[str, str]]) -> list[ReservationRecord]:
    return [ReservationRecord.from_hash(h) for h in hashes if h.get("id")]  # a forgotten one reads as {}


async def force_release_view(store: Store, *, slug: str, reservation_id: int, actor: str) -> ForceReleaseView:
    keys = store.keys
    pipe = store.client().pipeline(transaction=False)
    pipe.hget(keys.project(slug), "human_key")
    pipe.hgetall(keys.reservation(slug, reservation_id))
    pipe.hget(keys.agents(slug), actor.lower())
    human_key, record, actor = await pipe.execute()
    found = _records([record])
    return ForceReleaseView(human_key, found[0] if found else None, None if actor is None else decode_agent(actor))


async def listing(store: Store, *, slug: str, now_us: int, ended_limit: int | None) -> Listing:
    """The records of the project's live reservations and, with ``ended_limit``, of up to that
    many most recently ended ones of each kind (expired and not yet retired, retired), deduplicated."""
    keys = store.keys
    client = store.client()
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys.project(slug), "human_key")
    pipe.zrangebyscore(keys.reservation_expiry(slug), f"({now_us}", "+inf")
    if ended_limit is not None:
        # ended: expired ones not yet retired (still in res:expiry) and retired ones (res:ended)
        pipe.zrevrangebyscore(keys.reservation_expiry(slug), now_us, "-inf", start=0, num=ended_limit)
        pipe.zrevrange(keys.reservation_ended(slug), 0, ended_limit - 1)
    human_key, *id_lists = await pipe.execute()
    if human_key is None:
        return Listing(None, [])
    ids = list(dict.fromkeys(i for found in id_lists for i in found))
    return Listing(human_key, await _load(store, slug, ids))


async def _load(store: Store, slug: str, ids: list[str]) -> list[ReservationRecord]:
    if not ids:
        return []
    pipe = store.client().pipeline(transaction=False)
    for reservation_id in ids:
        pipe.hgetall(store.keys.reservation(slug, reservation_id))
    return _records(await pipe.execute())


async def holder_activity(store: Store, *, slug: str, holder: str) -> HolderActivity:
    keys = store.keys
    pipe = store.client().pipeline(transaction=False)
    pipe.hget(keys.active(slug), holder)
    pipe.xrevrange(keys.outbox(slug, holder), count=1)
    pipe.hget(keys.mail_activity(slug), holder.lower())
    last_active, last_sent, last_read = await pipe.execute()
    sent_us = int(last_sent[0][1]["c"]) if last_sent else None  # the send's created time
    return HolderActivity(last_active or None, sent_us, int(last_read) if last_read else None)


# -- the git hook (a blocking client of its own, short timeouts) ---------------------------
@contextmanager
def guard_connection(url: str) -> Iterator[SyncRedis]:
    """A blocking connection for the pre-commit check, closed on leaving."""
    client = SyncRedis.from_url(
        url, decode_responses=True, socket_timeout=GUARD_TIMEOUT_SECONDS, socket_connect_timeout=GUARD_TIMEOUT_SECONDS
    )
    try:
        yield client
    finally:
        client.close()


def live_records_sync(client: SyncRedis, *, keys: Keys, slug: str, now_us: int) -> list[ReservationRecord]:
    """The records of the project's live reservations (read-only)."""
    ids = client.zrangebyscore(keys.reservation_expiry(slug), f"({now_us}", "+inf")
    pipe = client.pipeline(transaction=False)
    for reservation_id in ids:
        pipe.hgetall(keys.reservation(slug, reservation_id))
    return _records(pipe.execute())
