"""Build slots: advisory, TTL-bound leases on a named resource of a project ("the build", "the
dev server"), so agents sharing one machine take turns at a step only one should run at a
time. Reservation-like: every acquire is granted and the reply lists the conflicting leases;
each of acquire, renew and release is one Lua script (broker/scripts/*_build_slot.lua), so
concurrent calls behave as some serial order of them.

A lease is held by (agent, branch): the same agent on another branch (another worktree) is
another holder. Leases live in Redis only (docs/build-slots-and-products.md says why).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.names import validate_name
from broker.identity.projects import check_project_key, project_slug
from broker.reservations.service import acted, check_caller
from broker.store.commands import build_slots as slot_store
from broker.store.commands import projects as project_store
from broker.store.commands.build_slots import Lease
from broker.store.refusals import Refusal
from broker.store.store import Store

MIN_TTL_SECONDS = 60  # the reference's floor: a shorter ttl or extension is raised to it
MAX_LEASES_PER_SLOT = 200  # live holders of one slot (bounds a script's work)
# Visible ASCII but space, at most 128 characters: slot and branch names are part of a key and
# of a lease's holder field ("<agent> <branch>"), and git branch names fit.
NAME_SHAPE = re.compile(r"^[!-~]{1,128}$")
UNKNOWN_BRANCH = "unknown"


def check_label(value: object, field: str, example: str) -> str:
    if not isinstance(value, str) or not NAME_SHAPE.match(value.strip()):
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"{field}={value!r} is not usable: pass 1 to 128 visible characters without spaces, e.g. '{example}'.",
        )
    return value.strip()


def check_ttl(store: Store, seconds: object, field: str) -> int:
    """Whole seconds, raised to MIN_TTL_SECONDS as the reference does, at most the setting."""
    high = store.settings.build_slot_max_ttl_seconds
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds > high:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"{field}={seconds!r} is out of range: pass whole seconds up to {high} (BUILD_SLOT_MAX_TTL_SECONDS); "
            f"values below {MIN_TTL_SECONDS} count as {MIN_TTL_SECONDS}. Renew a lease that needs longer.",
        )
    return max(seconds, MIN_TTL_SECONDS)


def current_branch(repo: str) -> str:
    """The branch checked out at ``repo`` (a work tree or a linked worktree), else "unknown"
    (no repository on this machine, a detached HEAD, or unreadable). Reads .git/HEAD directly:
    no git process per call."""
    try:
        git = Path(repo) / ".git"
        if git.is_file():  # a linked worktree: "gitdir: <path>"
            pointer = git.read_text(encoding="utf-8").strip()
            if not pointer.startswith("gitdir:"):
                return UNKNOWN_BRANCH
            git = (Path(repo) / pointer.removeprefix("gitdir:").strip()).resolve()
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError, ValueError):
        return UNKNOWN_BRANCH
    branch = head.removeprefix("ref: refs/heads/") if head.startswith("ref: refs/heads/") else ""
    return branch if NAME_SHAPE.match(branch) else UNKNOWN_BRANCH


async def _branch(store: Store, slug: str, branch: str | None) -> str:
    if branch is not None and branch.strip():
        return check_label(branch, "branch", "main")
    record = await project_store.project_record(store, slug=slug)
    if record is None:
        return UNKNOWN_BRANCH
    return await asyncio.to_thread(current_branch, record.human_key)  # a slow disk never stalls the loop


def lease_dict(lease: Lease) -> dict[str, Any]:
    return {
        "slot": lease.slot,
        "agent": lease.agent,
        "branch": lease.branch,
        "exclusive": lease.exclusive,
        "acquired_ts": lease.acquired_ts,
        "expires_ts": lease.expires_ts,
    }


async def _refused(store: Store, refusal: Refusal, slug: str, project_key: str, slot: str) -> BrokerError:
    if refusal.code == "SLOT_FULL":
        return BrokerError(
            "BUILD_SLOT_FULL",
            f"Build slot '{slot}' already has {refusal.details[0]} live leases (the limit is {MAX_LEASES_PER_SLOT}). "
            "Wait for some to expire or be released, or use another slot name.",
        )
    await refusals.raise_for(store, refusal.reply, slug, project_key)
    raise AssertionError("raise_for raises")  # pragma: no cover


async def acquire(
    store: Store,
    project_key: str,
    agent_name: str,
    slot: str,
    branch: str | None,
    ttl_seconds: int,
    exclusive: bool,
    token: str | None,
) -> dict[str, Any]:
    check_project_key(project_key)
    validate_name(agent_name)
    slot = check_label(slot, "slot", "build")
    ttl = check_ttl(store, ttl_seconds, "ttl_seconds")
    slug = await project_slug(store, project_key)
    name, digest, require = check_caller(store, slug, agent_name, token)
    held_branch = await _branch(store, slug, branch)
    try:
        acquired = await slot_store.acquire(
            store, slug=slug, agent=name, credentials=(digest, require), slot=slot, branch=held_branch,
            ttl_us=ttl * 1_000_000, exclusive=bool(exclusive), max_leases=MAX_LEASES_PER_SLOT,
        )  # fmt: skip
    except Refusal as refusal:
        raise await _refused(store, refusal, slug, project_key, slot) from None
    acted(store, slug, name, digest)
    return {"granted": lease_dict(acquired.lease), "conflicts": [lease_dict(c) for c in acquired.conflicts]}


async def renew(
    store: Store,
    project_key: str,
    agent_name: str,
    slot: str,
    branch: str | None,
    extend_seconds: int,
    token: str | None,
) -> dict[str, Any]:
    check_project_key(project_key)
    validate_name(agent_name)
    slot = check_label(slot, "slot", "build")
    extend = check_ttl(store, extend_seconds, "extend_seconds")
    slug = await project_slug(store, project_key)
    name, digest, require = check_caller(store, slug, agent_name, token)
    held_branch = await _branch(store, slug, branch)
    try:
        expires = await slot_store.renew(
            store, slug=slug, agent=name, credentials=(digest, require), slot=slot, branch=held_branch,
            extend_us=extend * 1_000_000,
        )  # fmt: skip
    except Refusal as refusal:
        raise await _refused(store, refusal, slug, project_key, slot) from None
    acted(store, slug, name, digest)
    return {"renewed": expires is not None, "expires_ts": expires}


async def release(
    store: Store, project_key: str, agent_name: str, slot: str, branch: str | None, token: str | None
) -> dict[str, Any]:
    check_project_key(project_key)
    validate_name(agent_name)
    slot = check_label(slot, "slot", "build")
    slug = await project_slug(store, project_key)
    name, digest, require = check_caller(store, slug, agent_name, token)
    held_branch = await _branch(store, slug, branch)
    try:
        released, released_at = await slot_store.release(
            store, slug=slug, agent=name, credentials=(digest, require), slot=slot, branch=held_branch
        )
    except Refusal as refusal:
        raise await _refused(store, refusal, slug, project_key, slot) from None
    acted(store, slug, name, digest)
    return {"released": released, "released_at": released_at}
