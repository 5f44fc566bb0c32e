"""Workflow macros: macro_start_session, macro_prepare_thread, macro_file_reservation_cycle.

Each macro is one tool call for the agent that composes the domain functions the single tools
use (identity, reservations, inbox, history), never the MCP tool registry: a tool profile that
hides file_reservation_paths or fetch_inbox does not break a macro. Every argument is checked
before the first write, with the errors the underlying tools give, so a rejected macro changes
nothing. Reads that do not depend on each other run concurrently.

Authentication: the first step authenticates the agent (registering it, or whois). Later steps
pass on the token that step returned (minted for a new agent, or the one the caller proved), so
under AGENT_AUTH=required a client without session binding (every request its own session)
needs the token once, not per step.
"""

from __future__ import annotations

import asyncio
from typing import Any

from broker.errors import BrokerError
from broker.history.search import History
from broker.identity import agents as identity
from broker.identity import refusals
from broker.identity.auth import token_hash
from broker.identity.names import requested_name, validate_name
from broker.identity.projects import project_slug
from broker.mail import inbox
from broker.mail.inputs import check_limit
from broker.reservations import service as reservations
from broker.store.commands import projects as project_store
from broker.store.store import Store

MAX_THREAD_ID_CHARS = 128  # as summarize_thread


def _split_agent(registered: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """register_agent's result as (agent_dict, registration_token)."""
    agent = dict(registered)
    return agent, agent.pop("registration_token")


async def start_session(
    store: Store,
    human_key: str,
    program: str,
    model: str,
    task_description: str,
    agent_name: str | None,
    registration_token: str | None,
    file_reservation_paths: list[str] | None,
    file_reservation_reason: str,
    file_reservation_ttl_seconds: int,
    inbox_limit: int,
) -> dict[str, Any]:
    """ensure_project, register_agent, file_reservation_paths (exclusive) and fetch_inbox."""
    identity._checked_profile(program, model, task_description, "auto")
    if agent_name is not None and agent_name.strip():
        requested_name(agent_name, store.settings.agent_name_enforcement_mode)  # refuses only under strict
    token_hash(registration_token)  # an overlong token fails here, before the project is created
    if file_reservation_paths is not None and not file_reservation_paths:
        # As the reference (its file_reservation_paths refuses []): omit the argument to reserve nothing.
        raise BrokerError(
            "EMPTY_PATHS",
            "file_reservation_paths is an empty list: name at least one file, directory ('src/') or glob, "
            "or omit it to reserve nothing.",
        )
    paths = reservations.check_paths(file_reservation_paths, "file_reservation_paths")
    reason = reservations.check_reason(file_reservation_reason, "file_reservation_reason")
    if paths:  # the TTL matters only when something is reserved
        reservations.check_ttl(store, file_reservation_ttl_seconds, "file_reservation_ttl_seconds")
    check_limit(inbox_limit)

    project = await identity.ensure_project(store, human_key)
    key = project["human_key"]
    registered = await identity.register_agent(
        store, key, program, model, agent_name, task_description, "auto", registration_token
    )
    agent, token = _split_agent(registered)
    name = agent["name"]
    if paths:
        granted, items = await asyncio.gather(
            reservations.reserve(store, key, name, paths, file_reservation_ttl_seconds, True, reason, token),
            inbox.fetch_inbox(store, key, name, inbox_limit, False, False, None, None, token),
        )
    else:
        granted = {"granted": [], "conflicts": []}
        items = await inbox.fetch_inbox(store, key, name, inbox_limit, False, False, None, None, token)
    return {
        "project": project,
        "agent": agent,
        "registration_token": token,
        "file_reservations": granted,
        "inbox": items,
    }


async def project_record(store: Store, slug: str, project_key: str) -> dict[str, Any]:
    """An existing project's project_dict (with archived_at when set); NOT_FOUND names it."""
    record = await project_store.project_record(store, slug=slug)
    if record is None:
        raise await refusals.project_not_found(store, project_key)
    return identity.project_view(record)


def check_one_thread_id(thread_id: object) -> str:
    """One thread id, checked as summarize_thread checks each of its ids."""
    if not isinstance(thread_id, str) or not thread_id.strip():
        raise BrokerError("INVALID_ARGUMENT", "thread_id is empty. Pass the id of the thread to prepare.")
    value = thread_id.strip()
    if "," in value:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"thread_id '{value}' names several threads; macro_prepare_thread prepares one. "
            "Pass a single id, or use summarize_thread for several.",
        )
    if len(value) > MAX_THREAD_ID_CHARS:
        raise BrokerError("INVALID_THREAD_ID", "A thread id is longer than 128 characters; check the value.")
    return value


async def prepare_thread(
    store: Store,
    history: History,
    project_key: str,
    thread_id: str,
    program: str,
    model: str,
    agent_name: str | None,
    registration_token: str | None,
    task_description: str,
    register_if_missing: bool,
    include_examples: bool,
    inbox_limit: int,
    include_inbox_bodies: bool,
) -> dict[str, Any]:
    """register_agent (or whois when register_if_missing=False), the thread's summary as that
    agent may see it (summarize_thread's visibility rule), and fetch_inbox."""
    slug = await project_slug(store, project_key)
    thread = check_one_thread_id(thread_id)
    named = agent_name is not None and bool(agent_name.strip())
    if register_if_missing:
        identity._checked_profile(program, model, task_description, "auto")
        if named:
            requested_name(agent_name, store.settings.agent_name_enforcement_mode)  # type: ignore[arg-type]
    elif not named:
        raise BrokerError(
            "INVALID_ARGUMENT",
            "agent_name is required when register_if_missing=False: pass the name of an existing agent, "
            "or set register_if_missing=True to register one.",
        )
    else:
        validate_name(agent_name)  # type: ignore[arg-type]
    token_hash(registration_token)
    check_limit(inbox_limit)

    if register_if_missing:
        registering = identity.register_agent(
            store, project_key, program, model, agent_name, task_description, "auto", registration_token
        )
        project, registered = await asyncio.gather(project_record(store, slug, project_key), registering)
        agent, token = _split_agent(registered)
    else:
        # whois authenticates as the agent; a proven token is echoed, as register_agent does.
        looking_up = identity.whois(store, project_key, agent_name, registration_token)  # type: ignore[arg-type]
        project, agent = await asyncio.gather(project_record(store, slug, project_key), looking_up)
        token = registration_token or None
    name = agent["name"]
    summary, items = await asyncio.gather(
        history.one_thread(agent, thread, include_examples),
        inbox.fetch_inbox(store, project_key, name, inbox_limit, False, include_inbox_bodies, None, None, token),
    )
    return {
        "project": project,
        "agent": agent,
        "registration_token": token,
        "thread": {**summary, "total_messages": summary["summary"]["total_messages"]},
        "inbox": items,
    }


async def file_reservation_cycle(
    store: Store,
    project_key: str,
    agent_name: str,
    paths: list[str],
    ttl_seconds: int,
    exclusive: bool,
    reason: str,
    auto_release: bool,
    registration_token: str | None,
) -> dict[str, Any]:
    """file_reservation_paths, then (auto_release) release_file_reservations of the ids just granted."""
    granted = await reservations.reserve(
        store, project_key, agent_name, paths, ttl_seconds, exclusive, reason, registration_token
    )
    released = None
    if auto_release:
        ids = [entry["id"] for entry in granted["granted"]]
        released = await reservations.release(store, project_key, agent_name, None, ids, registration_token)
    return {"file_reservations": granted, "released": released}
