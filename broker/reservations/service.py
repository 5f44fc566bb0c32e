"""File reservations: advisory, TTL-bound claims on path patterns, granted atomically in Lua.

Every decision (conflicts, renew in place, release, expiry) happens inside one script per call
(``broker/scripts/reserve.lua`` and friends), so concurrent requests behave as some serial
order of them. The Redis layout is documented in ``broker/scripts/lib/reservations.lua``;
pattern semantics in ``broker/reservations/globs.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.limits import agent_limited, agent_spec
from broker.identity.names import validate_name
from broker.identity.projects import check_project_key, project_slug
from broker.mail import send as mail
from broker.mail.inbox import check_reader
from broker.reservations import globs
from broker.reservations.staleness import Activity, full_verdict, holder_activity
from broker.store.reservation_record import iso_from_us, record_dict
from broker.store.store import Store

# Bounds on one call's work (docs/architecture.md, decision 2); pattern caps live in broker/reservations/globs.py.
MAX_PATHS_PER_CALL = 100
MAX_IDS_PER_CALL = 1000
MAX_REASON_CHARS = 512
MAX_HOLDERS_LISTED = 50  # per conflicting path; more_holders says when there were more
ENDED_LISTED = 100  # ended reservations a listing shows by default (limit, at most MAX_LIMIT)
STEPS_PER_TOKEN = 1000  # as in reserve.lua: a rate token per this many steps of work
# Work of one reserve call, in matcher steps (one table cell, about 0.15 us of Redis; an index
# entry read counts 8, a pair compared 32 besides its cells): about 3-4 ms at most. reserve.lua
# prices a call before matching and refuses it past this (docs/limits.md).
STEP_BUDGET = 24_000


def check_paths(paths: list[str] | None, field: str = "paths") -> list[str]:
    if paths is None:
        return []
    if not isinstance(paths, list):
        raise BrokerError("INVALID_ARGUMENT", f"{field} must be a list of path patterns, e.g. ['src/app.py'].")
    if len(paths) > MAX_PATHS_PER_CALL:
        raise BrokerError(
            "TOO_MANY_PATHS",
            f"{len(paths)} paths in one call; the limit is {MAX_PATHS_PER_CALL}. "
            "Reserve a directory with 'dir/' or split the call.",
        )
    normal: list[str] = []
    for raw in paths:
        try:
            pattern = globs.normalize(raw)
        except globs.PatternError as exc:
            raise BrokerError("INVALID_PATH_PATTERN", str(exc)) from exc
        if pattern not in normal:
            normal.append(pattern)
    return normal


def check_ttl(store: Store, seconds: int, field: str) -> int:
    low, high = store.settings.file_reservation_min_ttl_seconds, store.settings.file_reservation_max_ttl_seconds
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not low <= seconds <= high:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"{field}={seconds!r} is out of range: pass whole seconds from {low} to {high} "
            "(renew_file_reservations extends a reservation that needs longer).",
        )
    return seconds


def check_reason(reason: str | None, field: str = "reason") -> str:
    reason = reason or ""
    if len(reason) > MAX_REASON_CHARS:
        raise BrokerError("INVALID_ARGUMENT", f"{field} is {len(reason)} characters; keep it to {MAX_REASON_CHARS}.")
    return reason


def check_ids(ids: list[int] | None) -> list[str]:
    if ids is None:
        return []
    if len(ids) > MAX_IDS_PER_CALL:
        raise BrokerError("TOO_MANY_IDS", f"{len(ids)} ids in one call; the limit is {MAX_IDS_PER_CALL}.")
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in ids):
        raise BrokerError(
            "INVALID_ARGUMENT", "file_reservation_ids must be positive integers from file_reservation_paths."
        )
    return [str(i) for i in ids]


def selection(paths: list[str] | None, ids: list[int] | None) -> tuple[str, list[str]]:
    """The (mode, items) a release or renew acts on; empty lists are mistakes, not 'all'."""
    if paths is not None and not paths:
        raise BrokerError("EMPTY_PATHS", "paths is an empty list; omit it to act on all your reservations.")
    if ids is not None and not ids:
        raise BrokerError(
            "EMPTY_IDS", "file_reservation_ids is an empty list; omit it to act on all your reservations."
        )
    if paths and ids:
        raise BrokerError("INVALID_ARGUMENT", "Pass paths or file_reservation_ids, not both.")
    if paths:
        return "paths", check_paths(paths)
    if ids:
        return "ids", check_ids(ids)
    return "all", []


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []  # cjson writes an empty table as {}


async def run_for_agent(
    store: Store, project_key: str, agent_name: str, token: str | None, script: str, args: list[Any]
) -> list[Any]:
    """Run a reservation script that acts for one agent (reserve, release, renew): it returns
    {"ok", ..., schedule flag last}; errors are raised, a drain is scheduled, the session bound."""
    slug = await project_slug(store, project_key)
    name = validate_name(agent_name)
    keys = store.keys
    auth = store.bindings.args(slug, name, token)
    reply = await store.run(
        script,
        [keys.project(slug), keys.agents(slug), keys.pending(slug)],
        [keys.project_prefix(slug), name, *auth, *args],
    )
    if reply[0] == "TOO_COMPLEX":  # only reserve.lua, before it writes anything
        store.charge_client(int(reply[3]) // STEPS_PER_TOKEN)
        raise too_complex(reply[1], int(reply[2]), int(reply[3]))
    if reply[0] == "RATE_LIMITED":
        raise agent_limited(store.settings, name, int(reply[1]))
    if reply[0] != "ok":
        await refusals.raise_for(store, reply, slug, project_key)
    if script == "reserve":  # the agent's bucket paid for the work in the script; the client's here
        store.charge_client(int(reply[3]) // STEPS_PER_TOKEN)
    store.schedule_persist(slug, reply[-1])
    if auth[0]:
        store.bindings.bind(slug, name)
    return reply


def too_complex(what: str, count: int, steps: int) -> BrokerError:
    found = {
        "entries": f"would read {count:,} index entries of live reservations",
        "pairs": f"would compare {count:,} pairs of patterns with other agents' live reservations",
        "matching": f"compared {count:,} pairs of patterns",
    }[what]
    return BrokerError(
        "RESERVATION_TOO_COMPLEX",
        f"This call {found}, about {steps:,} matching steps; the limit per call is {STEP_BUDGET:,} "
        "(a few milliseconds of Redis, which serves no one else meanwhile). Nothing was reserved. "
        "Reserve narrower patterns that start with a directory (e.g. 'src/api/**' rather than '**/*.py'), "
        "shorter wildcard segments, or fewer paths per call.",
        {"steps": steps, "limit": STEP_BUDGET},
    )


async def reserve(
    store: Store,
    project_key: str,
    agent_name: str,
    paths: list[str],
    ttl_seconds: int,
    exclusive: bool,
    reason: str,
    token: str | None,
) -> dict[str, Any]:
    check_project_key(project_key)  # argument errors first, in the order the other tools report them
    validate_name(agent_name)
    if not paths:
        raise BrokerError("EMPTY_PATHS", "paths is empty: name at least one file, directory ('src/') or glob.")
    patterns = check_paths(paths)
    ttl = check_ttl(store, ttl_seconds, "ttl_seconds")
    reason = check_reason(reason)
    triples: list[Any] = []
    for pattern in patterns:
        triples += [await store.next_id("reservation"), pattern, globs.index_bucket(pattern)]
    retention = store.settings.file_reservation_retention_seconds
    exclusive_flag = "1" if exclusive else "0"
    args = [
        ttl * 1_000_000, exclusive_flag, reason, retention, MAX_HOLDERS_LISTED, STEP_BUDGET,
        agent_spec(store.settings), *triples,
    ]  # fmt: skip
    reply = await run_for_agent(store, project_key, agent_name, token, "reserve", args)
    granted = as_list(json.loads(reply[1]))
    for entry in granted:
        entry["expires_ts"] = iso_from_us(entry.pop("expires_us"))
    conflicts = as_list(json.loads(reply[2]))
    for conflict in conflicts:
        conflict["holders"] = as_list(conflict["holders"])
        for holder in conflict["holders"]:
            holder["expires_ts"] = iso_from_us(holder.pop("expires_us"))
    return {"granted": granted, "conflicts": conflicts}


async def release(
    store: Store,
    project_key: str,
    agent_name: str,
    paths: list[str] | None,
    ids: list[int] | None,
    token: str | None,
) -> dict[str, Any]:
    mode, items = selection(paths, ids)
    retention = store.settings.file_reservation_retention_seconds
    reply = await run_for_agent(
        store, project_key, agent_name, token, "release_reservations", [mode, retention, *items]
    )
    return {"released": int(reply[1]), "released_at": reply[2]}


async def renew(
    store: Store,
    project_key: str,
    agent_name: str,
    extend_seconds: int,
    paths: list[str] | None,
    ids: list[int] | None,
    token: str | None,
) -> dict[str, Any]:
    mode, items = selection(paths, ids)
    extend = check_ttl(store, extend_seconds, "extend_seconds")
    reply = await run_for_agent(
        store, project_key, agent_name, token, "renew_reservations", [mode, extend * 1_000_000, *items]
    )
    renewed = as_list(json.loads(reply[1]))
    return {"renewed": len(renewed), "file_reservations": renewed}


def _is_live(record: dict[str, str], now_us: int) -> bool:
    return not record.get("released_us") and int(record["expires_us"]) > now_us


def _ended_us(record: dict[str, str]) -> int:
    return int(record.get("released_us") or record["expires_us"])


async def load_records(store: Store, slug: str, ids: list[str]) -> list[dict[str, str]]:
    pipe = store.redis.pipeline(transaction=False)
    for reservation_id in ids:
        pipe.hgetall(store.keys.reservation(slug, reservation_id))
    return [r for r in await pipe.execute() if r.get("id")]


async def list_reservations(
    store: Store, project: str, active_only: bool = True, limit: int = ENDED_LISTED
) -> list[dict[str, Any]]:
    """Reservations of a project (by slug or human key), oldest first, with staleness evidence:
    the live ones and, unless ``active_only``, the ``limit`` most recently ended ones that are
    still retained (their number grows with the retention, so it is bounded here)."""
    slug = await project_slug(store, project)
    keys = store.keys
    human_key = await store.redis.hget(keys.project(slug), "human_key")
    if human_key is None:
        raise await refusals.project_not_found(store, project)
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    if active_only:
        ids = await store.redis.zrangebyscore(keys.reservation_expiry(slug), f"({now_us}", "+inf")
        records = await load_records(store, slug, ids)
    else:
        pipe = store.redis.pipeline(transaction=False)
        pipe.zrangebyscore(keys.reservation_expiry(slug), f"({now_us}", "+inf")
        # ended: expired ones not yet retired (still in res:expiry) and retired ones (res:ended)
        pipe.zrevrangebyscore(keys.reservation_expiry(slug), now_us, "-inf", start=0, num=limit)
        pipe.zrevrange(keys.reservation_ended(slug), 0, limit - 1)
        live, expired, ended = await pipe.execute()
        records = await load_records(store, slug, list(dict.fromkeys([*live, *expired, *ended])))
        gone = sorted((r for r in records if not _is_live(r, now_us)), key=_ended_us, reverse=True)
        kept = {r["id"] for r in gone[:limit]}
        records = [r for r in records if _is_live(r, now_us) or r["id"] in kept]
    records.sort(key=lambda r: (int(r["created_us"]), int(r["id"])))
    activity: dict[str, Activity] = {}
    result = []
    for record in records:
        entry = record_dict(record)
        holder = record["agent"]
        if holder not in activity:
            activity[holder] = await holder_activity(store, slug, holder)
        live = _is_live(record, now_us)
        verdict = activity[holder].verdict(store.settings)
        entry["stale"] = live and verdict.stale
        entry["stale_reasons"] = verdict.reasons if live else []
        entry.update(activity[holder].fields())
        entry["last_filesystem_activity_ts"] = None  # checked by force release, not by listings
        entry["last_git_activity_ts"] = None
        result.append(entry)
    return result


async def force_release(
    store: Store,
    project_key: str,
    agent_name: str,
    reservation_id: int,
    notify_previous: bool,
    note: str,
    token: str | None,
) -> dict[str, Any]:
    """Release another agent's reservation when its holder looks stale (see broker/reservations/staleness.py)."""
    slug = await project_slug(store, project_key)
    name = validate_name(agent_name)
    if isinstance(reservation_id, bool) or not isinstance(reservation_id, int) or reservation_id < 1:
        raise BrokerError(
            "INVALID_ARGUMENT", "file_reservation_id must be a positive integer from file_reservation_paths."
        )
    if len(note or "") > MAX_REASON_CHARS:
        raise BrokerError("INVALID_ARGUMENT", f"note is {len(note)} characters; keep it to {MAX_REASON_CHARS}.")
    keys, settings = store.keys, store.settings
    human_key = await store.redis.hget(keys.project(slug), "human_key")
    if human_key is None:
        raise await refusals.project_not_found(store, project_key)
    record = await store.redis.hgetall(keys.reservation(slug, reservation_id))
    if not record.get("id"):
        raise BrokerError(
            "NOT_FOUND",
            f"File reservation {reservation_id} not found in project '{human_key}' (ended reservations are "
            f"kept {settings.file_reservation_retention_seconds}s). "
            f"List live ones with resource://file_reservations/{slug}.",
        )
    auth = store.bindings.args(slug, name, token)
    # The caller first (the script checks again): no scan of the holder's files and git
    # history, and no word on its activity, for an unknown agent or a missing or wrong token.
    await check_reader(store, slug, project_key, name, await store.redis.hget(keys.agents(slug), name.lower()), *auth)
    script_keys = [keys.project(slug), keys.agents(slug), keys.pending(slug)]
    script_args = [keys.project_prefix(slug), name, *auth, reservation_id]
    retention = settings.file_reservation_retention_seconds
    if record.get("released_us"):
        return {"released": 0, "released_at": iso_from_us(record["released_us"]), "already_released": True}
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    if int(record["expires_us"]) <= now_us:
        reply = await store.run(
            "force_release_reservation", script_keys, [*script_args, record["expires_us"], retention]
        )
        if reply[0] not in ("ok", "CHANGED"):
            await refusals.raise_for(store, reply, slug, project_key)
        if reply[0] == "ok":
            store.schedule_persist(slug, reply[3])
        released_at = reply[1] if reply[0] == "ok" else iso_from_us(now_us)
        return {"released": 0, "released_at": released_at, "already_released": True, "expired": True}
    verdict, evidence = await full_verdict(store, slug, human_key, record["agent"], record["path_pattern"])
    if not verdict.stale:
        raise BrokerError(
            "RESERVATION_ACTIVE",
            f"Reservation still shows recent activity; refusing forced release of '{record['path_pattern']}' "
            f"held by {record['agent']} ({', '.join(verdict.reasons)}). Ask {record['agent']} by mail to release "
            f"it, or wait until it expires at {iso_from_us(record['expires_us'])}.",
            {"stale_reasons": verdict.reasons},
        )
    reply = await store.run("force_release_reservation", script_keys, [*script_args, record["expires_us"], retention])
    if reply[0] == "CHANGED":
        raise BrokerError(
            "RESERVATION_ACTIVE",
            f"{record['agent']} renewed or released reservation {reservation_id} while it was being checked; "
            "it is not stale. Ask them by mail instead.",
        )
    if reply[0] != "ok":
        await refusals.raise_for(store, reply, slug, project_key)
    store.schedule_persist(slug, reply[3])
    if auth[0]:
        store.bindings.bind(slug, name)
    record["released_us"] = reply[2]
    released = {**record_dict(record), "stale_reasons": verdict.reasons, **evidence, "notified": False}
    if notify_previous and record["agent"].lower() != name.lower():
        body = (
            f"{name} force-released your file reservation {reservation_id} on `{record['path_pattern']}` "
            f"because it looked stale ({', '.join(verdict.reasons)})."
            + (f"\n\nNote: {note}" if note else "")
            + "\n\nReserve it again with file_reservation_paths if you are still working on it."
        )
        try:
            await mail.send_message(
                store, project_key, name, [record["agent"]],
                f"[file-reservations] Released stale lock on {record['path_pattern']}"[:200],
                body, None, None, "normal", False, None, False, None, token,
            )  # fmt: skip
            released["notified"] = True
        except BrokerError as exc:
            released["notification_error"] = str(exc)
    return {"released": 1, "released_at": reply[1], "reservation": released}
