"""File reservations: advisory, TTL-bound claims on path patterns, granted atomically in Lua.

Every decision (conflicts, renew in place, release, expiry) happens inside one script per call
(``broker/scripts/reserve.lua`` and friends), so concurrent requests behave as some serial
order of them. The Redis layout is documented in ``broker/scripts/lib/reservations.lua``;
pattern semantics in ``broker/reservations/globs.py``.
"""

from __future__ import annotations

from dataclasses import replace
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
from broker.store.commands import reservations as reservation_store
from broker.store.refusals import Refusal
from broker.store.store import Store
from broker.store.times import iso_from_us

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


def check_ttl(store: Store, seconds: int, field: str) -> tuple[int, list[str]]:
    """(the seconds to use, warnings): below FILE_RESERVATION_MIN_TTL_SECONDS the value is raised
    to it with a warning, as the reference's renew does; above the maximum it is refused."""
    low, high = store.settings.file_reservation_min_ttl_seconds, store.settings.file_reservation_max_ttl_seconds
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds > high:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"{field}={seconds!r} is out of range: pass whole seconds up to {high} "
            "(renew_file_reservations extends a reservation that needs longer).",
        )
    if seconds < low:
        return low, [f"{field}={seconds} is below the minimum of {low} seconds; {low} seconds were used."]
    return seconds, []


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


def check_caller(store: Store, slug: str, agent_name: str, token: str | None) -> tuple[str, str, str]:
    """(name, token digest, "1" if a token is required) of the agent a script acts for."""
    name = validate_name(agent_name)
    digest, require = store.bindings.args(slug, name, token)
    return name, digest, require


async def refused(store: Store, refusal: Refusal, slug: str, project_key: str, name: str) -> BrokerError:
    """The coded error for a reservation script's refusal (raise_for raises the common ones)."""
    if refusal.code == "TOO_COMPLEX":  # only reserve.lua, before it writes anything
        what, count, steps = refusal.details
        store.charge_client(int(steps) // STEPS_PER_TOKEN)
        return too_complex(what, int(count), int(steps))
    if refusal.code == "RATE_LIMITED":
        return agent_limited(store.settings, name, int(refusal.details[0]))
    await refusals.raise_for(store, refusal.reply, slug, project_key)
    raise AssertionError("raise_for raises")  # pragma: no cover


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


def acted(store: Store, slug: str, name: str, digest: str) -> None:
    """After a script acted for an agent with its token: the session is bound to it."""
    if digest:
        store.bindings.bind(slug, name)


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
    ttl, warnings = check_ttl(store, ttl_seconds, "ttl_seconds")
    reason = check_reason(reason)
    requests = [(await store.next_id("reservation"), p, globs.index_bucket(p)) for p in patterns]
    slug = await project_slug(store, project_key)
    name, digest, require = check_caller(store, slug, agent_name, token)
    try:
        reserved = await reservation_store.reserve(
            store, slug=slug, agent=name, credentials=(digest, require),
            ttl_us=ttl * 1_000_000, exclusive=exclusive, reason=reason,
            retention_seconds=store.settings.file_reservation_retention_seconds,
            max_holders=MAX_HOLDERS_LISTED, step_budget=STEP_BUDGET, rate_spec=agent_spec(store.settings),
            requests=requests,
        )  # fmt: skip
    except Refusal as refusal:
        raise await refused(store, refusal, slug, project_key, name) from None
    # the agent's bucket paid for the work in the script; the client's here
    store.charge_client(reserved.steps // STEPS_PER_TOKEN)
    acted(store, slug, name, digest)
    result: dict[str, Any] = {
        "granted": [
            {"id": g.id, "path_pattern": g.path_pattern, "exclusive": g.exclusive, "reason": g.reason,
             "expires_ts": g.expires_ts}
            for g in reserved.granted
        ],
        "conflicts": [
            {"path": c.path, "holders": [
                {"id": h.id, "agent": h.agent, "path_pattern": h.path_pattern, "exclusive": h.exclusive,
                 "expires_ts": h.expires_ts}
                for h in c.holders
            ], "more_holders": c.more_holders}
            for c in reserved.conflicts
        ],
    }  # fmt: skip
    if warnings:
        result["warnings"] = warnings
    return result


async def release(
    store: Store,
    project_key: str,
    agent_name: str,
    paths: list[str] | None,
    ids: list[int] | None,
    token: str | None,
) -> dict[str, Any]:
    mode, items = selection(paths, ids)
    slug = await project_slug(store, project_key)
    name, digest, require = check_caller(store, slug, agent_name, token)
    try:
        released = await reservation_store.release_reservations(
            store, slug=slug, agent=name, credentials=(digest, require), mode=mode, items=items,
            retention_seconds=store.settings.file_reservation_retention_seconds,
        )  # fmt: skip
    except Refusal as refusal:
        raise await refused(store, refusal, slug, project_key, name) from None
    acted(store, slug, name, digest)
    return {"released": released.count, "released_at": released.released_at}


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
    extend, warnings = check_ttl(store, extend_seconds, "extend_seconds")
    slug = await project_slug(store, project_key)
    name, digest, require = check_caller(store, slug, agent_name, token)
    try:
        renewed = await reservation_store.renew_reservations(
            store, slug=slug, agent=name, credentials=(digest, require), mode=mode, items=items,
            extend_us=extend * 1_000_000,
        )  # fmt: skip
    except Refusal as refusal:
        raise await refused(store, refusal, slug, project_key, name) from None
    acted(store, slug, name, digest)
    shown = [
        {"id": r.id, "path_pattern": r.path_pattern, "old_expires_ts": r.old_expires_ts,
         "new_expires_ts": r.new_expires_ts}
        for r in renewed.reservations
    ]  # fmt: skip
    result: dict[str, Any] = {"renewed": len(shown), "file_reservations": shown}
    if warnings:
        result["warnings"] = warnings
    return result


async def list_reservations(
    store: Store, project: str, active_only: bool = True, limit: int = ENDED_LISTED
) -> list[dict[str, Any]]:
    """Reservations of a project (by slug or human key), oldest first, with staleness evidence:
    the live ones and, unless ``active_only``, the ``limit`` most recently ended ones that are
    still retained (their number grows with the retention, so it is bounded here)."""
    slug = await project_slug(store, project)
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    found = await reservation_store.listing(store, slug=slug, now_us=now_us, ended_limit=None if active_only else limit)
    if found.human_key is None:
        raise await refusals.project_not_found(store, project)
    records = found.records
    if not active_only:
        gone = sorted((r for r in records if not r.is_live(now_us)), key=lambda r: r.ended_us, reverse=True)
        kept = {r.id for r in gone[:limit]}
        records = [r for r in records if r.is_live(now_us) or r.id in kept]
    records.sort(key=lambda r: (r.created_us, r.id))
    activity: dict[str, Activity] = {}
    result = []
    for record in records:
        entry = record.shown()
        holder = record.agent
        if holder not in activity:
            activity[holder] = await holder_activity(store, slug, holder)
        live = record.is_live(now_us)
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
    settings = store.settings
    view = await reservation_store.force_release_view(store, slug=slug, reservation_id=reservation_id, actor=name)
    if view.human_key is None:
        raise await refusals.project_not_found(store, project_key)
    human_key, record = view.human_key, view.record
    if record is None:
        raise BrokerError(
            "NOT_FOUND",
            f"File reservation {reservation_id} not found in project '{human_key}' (ended reservations are "
            f"kept {settings.file_reservation_retention_seconds}s). "
            f"List live ones with resource://file_reservations/{slug}.",
        )
    digest, require = store.bindings.args(slug, name, token)
    # The caller first (the script checks again): no scan of the holder's files and git
    # history, and no word on its activity, for an unknown agent or a missing or wrong token.
    await check_reader(store, slug, project_key, name, view.actor, digest, require)
    if record.released_us is not None:
        return {"released": 0, "released_at": iso_from_us(record.released_us), "already_released": True}

    async def release_as_checked() -> reservation_store.ForceReleased | None:
        try:
            return await reservation_store.force_release_reservation(
                store, slug=slug, actor=name, credentials=(digest, require),
                reservation_id=reservation_id, checked_expires_us=record.expires_us,
                retention_seconds=settings.file_reservation_retention_seconds,
            )  # fmt: skip
        except Refusal as refusal:
            await refusals.raise_for(store, refusal.reply, slug, project_key)
            raise AssertionError("raise_for raises") from None  # pragma: no cover

    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    if record.expires_us <= now_us:
        ended = await release_as_checked()
        released_at = ended.released_at if ended is not None else iso_from_us(now_us)
        return {"released": 0, "released_at": released_at, "already_released": True, "expired": True}
    verdict, evidence = await full_verdict(store, slug, human_key, record.agent, record.path_pattern)
    if not verdict.stale:
        raise BrokerError(
            "RESERVATION_ACTIVE",
            f"Reservation still shows recent activity; refusing forced release of '{record.path_pattern}' "
            f"held by {record.agent} ({', '.join(verdict.reasons)}). Ask {record.agent} by mail to release "
            f"it, or wait until it expires at {iso_from_us(record.expires_us)}.",
            {"stale_reasons": verdict.reasons},
        )
    ended = await release_as_checked()
    if ended is None:
        raise BrokerError(
            "RESERVATION_ACTIVE",
            f"{record.agent} renewed or released reservation {reservation_id} while it was being checked; "
            "it is not stale. Ask them by mail instead.",
        )
    acted(store, slug, name, digest)
    record = replace(record, released_us=ended.released_us)
    released = {**record.shown(), "stale_reasons": verdict.reasons, **evidence, "notified": False}
    if notify_previous and record.agent.lower() != name.lower():
        body = (
            f"{name} force-released your file reservation {reservation_id} on `{record.path_pattern}` "
            f"because it looked stale ({', '.join(verdict.reasons)})."
            + (f"\n\nNote: {note}" if note else "")
            + "\n\nReserve it again with file_reservation_paths if you are still working on it."
        )
        try:
            await mail.send_message(
                store, project_key, name, [record.agent],
                f"[file-reservations] Released stale lock on {record.path_pattern}"[:200],
                body, None, None, "normal", False, None, False, None, token,
            )  # fmt: skip
            released["notified"] = True
        except BrokerError as exc:
            released["notification_error"] = str(exc)
    return {"released": 1, "released_at": ended.released_at, "reservation": released}
