"""Projects and agent identities: ensure_project, register_agent, create_agent_identity, whois."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from broker.errors import BrokerError
from broker.identity import refusals, windows
from broker.identity.auth import new_token, token_hash
from broker.identity.names import check_placeholder, generate_candidates, requested_name, validate_name
from broker.identity.projects import _check_key_length, project_dict, project_slug
from broker.identity.slugs import assign, remember, resolve
from broker.persistence.index import indexed_project_id
from broker.store.commands import identity as identity_store
from broker.store.commands import projects as project_store
from broker.store.commands.agent_record import AgentRecord
from broker.store.commands.identity import Profile
from broker.store.commands.projects import ProjectRecord
from broker.store.refusals import Refusal
from broker.store.store import Store

ATTACHMENT_POLICIES = ("auto", "inline", "file")
MAX_TASK_CHARS = 2048
MAX_PROGRAM_CHARS = 128


def agent_dict(record: AgentRecord) -> dict[str, Any]:
    """The reference's agent_dict; ``retired_at`` only while the agent is retired."""
    stored, last_active_ts = record.agent, record.last_active_ts
    agent = {
        "id": stored["id"],
        "name": stored["name"],
        "program": stored["program"],
        "model": stored["model"],
        "task_description": stored["task_description"],
        "inception_ts": stored["inception_ts"],
        "last_active_ts": last_active_ts or stored["inception_ts"],
        "project_id": stored["project_id"],
        "attachments_policy": stored["attachments_policy"],
    }
    if stored.get("retired_at"):
        agent["retired_at"] = stored["retired_at"]
    return agent


def project_view(project: ProjectRecord) -> dict[str, Any]:
    """project_dict of a stored project (archived_at only while the project is archived)."""
    return project_dict([project.id, project.slug, project.human_key, project.created_at], project.archived_at)


async def ensure_project(store: Store, human_key: object) -> dict[str, Any]:
    if not isinstance(human_key, str) or not human_key.strip():
        raise BrokerError(
            "INVALID_ARGUMENT", "human_key is empty. Pass the absolute path of the repository, e.g. '/home/me/repo'."
        )
    _check_key_length(human_key, "human_key")
    check_placeholder(human_key, "human_key")
    if not os.path.isabs(human_key.strip()):
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"human_key must be an absolute directory path, got: '{human_key}'. Use the repository's "
            "absolute path (e.g. from `pwd`).",
        )
    canonical = os.path.normpath(human_key.strip())
    # A project is its full path: the slug comes from <p>:slugs (broker/identity/slugs.py), never from
    # slugify alone, so paths that slugify alike are different projects.
    slug = await resolve(store, canonical)
    if not await project_store.exists(store, slug=slug):
        await _refuse_if_lost(store, slug, canonical)
        claimed = await assign(store, canonical)
        if claimed != slug:  # another path took that slug meanwhile
            await _refuse_if_lost(store, claimed, canonical)
            slug = claimed
    ensured = await identity_store.ensure_project(store, slug=slug, human_key=canonical)
    remember(store, canonical, slug)
    return project_view(ensured.project)


async def _refuse_if_lost(store: Store, slug: str, human_key: str) -> None:
    """A project the index holds but Redis does not: Redis lost its data. Creating it afresh
    would restart the id counters, so new messages would reuse persisted ids (and be dropped
    by the index) and new agents would take old agents' ids; `broker rehydrate` must run first."""
    if await asyncio.to_thread(indexed_project_id, store.settings, slug, human_key) is not None:
        raise BrokerError(
            "REHYDRATE_REQUIRED",
            f"Project '{human_key}' is in the persisted index but not in Redis (Redis lost its data). "
            "Run `broker rehydrate` on the server to restore it with its agents and mail, then call "
            "ensure_project again.",
        )


def _checked_profile(program: str, model: str, task_description: str, attachments_policy: str) -> Profile:
    """The profile fields register_agent.lua takes, after checking each."""
    for value, code, what in ((program, "EMPTY_PROGRAM", "program"), (model, "EMPTY_MODEL", "model")):
        if not isinstance(value, str) or not value.strip():
            raise BrokerError(
                code, f"{what} is empty. Pass the agent's {what}, e.g. program='claude-code', model='opus-4'."
            )
        if len(value) > MAX_PROGRAM_CHARS:
            raise BrokerError("INVALID_ARGUMENT", f"{what} is longer than {MAX_PROGRAM_CHARS} characters; shorten it.")
    if not isinstance(task_description, str) or len(task_description) > MAX_TASK_CHARS:
        raise BrokerError("INVALID_ARGUMENT", f"task_description must be text of at most {MAX_TASK_CHARS} characters.")
    if attachments_policy not in ATTACHMENT_POLICIES:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"attachments_policy '{attachments_policy}' is not one of {', '.join(ATTACHMENT_POLICIES)}.",
        )
    return Profile(program.strip(), model.strip(), task_description, attachments_policy)


async def _claim(
    store: Store,
    slug: str,
    project_key: str,
    mode: str,
    names: list[str] | None,
    profile: Profile,
    token: str | None,
    exact: bool = False,
) -> dict[str, Any]:
    """Run register_agent.lua until a name is claimed; returns the agent dict and token.
    ``exact``: the one name given or nothing (create_agent_identity under strict naming)."""
    # Only an upsert can meet an existing agent, so only it carries the caller's credentials.
    digest, require = store.bindings.args(slug, names[0], token) if mode == "upsert" and names else ("", "0")
    for attempt in range(32):
        candidates = names if names and attempt == 0 else generate_candidates(8)
        fresh = new_token()
        try:
            registered = await identity_store.register_agent(
                store,
                slug=slug,
                mode=mode,
                profile=profile,
                minted_digest=token_hash(fresh),
                credentials=(digest, require),
                candidates=candidates,
            )
        except Refusal as refusal:
            await refusals.raise_for(store, refusal.reply, slug, project_key)
        if registered is None:  # only in create mode: every candidate was taken; draw again
            if exact and names:
                raise BrokerError(
                    "INVALID_ARGUMENT",
                    f"Agent name '{names[0]}' is already in use. Pass another name_hint, or omit it to have "
                    "a name generated (AGENT_NAME_ENFORCEMENT_MODE=strict does not pick one for you).",
                )
            continue
        agent = agent_dict(registered.record)
        store.bindings.bind(slug, agent["name"])
        # Only a digest is stored, so the token is returned when minted, or echoed when the
        # caller proved it; an unauthenticated re-registration (open auth) does not reveal it.
        return {**agent, "registration_token": fresh if registered.created else (token if digest else None)}
    raise BrokerError(
        "NAME_SPACE_EXHAUSTED", "No free generated agent name was found; pass an explicit name such as 'alpha-one'."
    )


async def register_agent(
    store: Store,
    project_key: str,
    program: str,
    model: str,
    name: str | None,
    task_description: str,
    attachments_policy: str,
    registration_token: str | None,
) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    profile = _checked_profile(program, model, task_description, attachments_policy)
    if name is not None and name.strip():
        # A name that is not one (coerce) registers a new agent under a generated name, as in the reference.
        wanted = requested_name(name, store.settings.agent_name_enforcement_mode)
        if wanted is not None:
            return await _claim(store, slug, project_key, "upsert", [wanted], profile, registration_token)
        if store.settings.agent_name_enforcement_mode == "coerce":
            return await _claim(store, slug, project_key, "create", None, profile, None)
    window = windows.configured_window(store.settings.window_id)
    if window is None:
        return await _claim(store, slug, project_key, "create", None, profile, None)
    # MCP_AGENT_MAIL_WINDOW_ID: this window registers under the name it had before (§5.2).
    held = await windows.window_name(store, slug, project_key, window)
    if held is not None:
        agent = await _claim(store, slug, project_key, "upsert", [held], profile, registration_token)
    else:
        agent = await _claim(store, slug, project_key, "create", None, profile, None)
        held = await windows.bind_window(store, slug, project_key, window, agent["name"])
    return {**agent, "window_id": window, "window_display_name": held}


async def create_agent_identity(
    store: Store,
    project_key: str,
    program: str,
    model: str,
    name_hint: str | None,
    task_description: str,
    attachments_policy: str,
) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    profile = _checked_profile(program, model, task_description, attachments_policy)
    mode = store.settings.agent_name_enforcement_mode
    names = None
    if name_hint and name_hint.strip():
        # A hint is used when it is a valid name and free; otherwise a name is generated, except
        # under strict naming, which refuses an invalid or taken hint (as the reference does).
        hint = requested_name(name_hint, mode)
        if hint is not None:
            names = [hint] if mode == "strict" else [hint, *generate_candidates(8)]
    return await _claim(store, slug, project_key, "create", names, profile, None, exact=mode == "strict")


async def register_absent(
    store: Store, project_key: str, name: str, program: str | None, model: str | None, task_description: str | None
) -> dict[str, Any] | None:
    """Register an agent nobody has registered yet under ``name`` (an adjective+noun name), for a
    contact handshake addressed to it (as the reference's register_if_missing does). Returns its
    agent dict, or None when the name is taken meanwhile. The session is not bound to it and its
    token is not returned: the caller is not that agent. Refused under AGENT_AUTH=required, where
    nobody could ever prove to be the agent afterwards (the token minted here is never shown)."""
    slug = await project_slug(store, project_key)
    if store.bindings.mode == "required":
        raise BrokerError(
            "NOT_FOUND",
            f"Agent '{name}' is not registered in project '{project_key}', and under AGENT_AUTH=required a "
            "handshake does not register it for someone else. Ask that agent to call register_agent first.",
        )
    profile = _checked_profile(program or "unknown", model or "unknown", task_description or "", "auto")
    try:
        registered = await identity_store.register_agent(
            store, slug=slug, mode="create", profile=profile, minted_digest=token_hash(new_token()),
            credentials=("", "0"), candidates=[name],
        )  # fmt: skip
    except Refusal as refusal:
        await refusals.raise_for(store, refusal.reply, slug, project_key)
    return None if registered is None else agent_dict(registered.record)


async def whois(store: Store, project_key: str, agent_name: str, registration_token: str | None) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    name = validate_name(agent_name)
    credentials = store.bindings.args(slug, name, registration_token)
    try:
        record = await identity_store.get_agent(store, slug=slug, name=name, credentials=credentials)
    except Refusal as refusal:
        await refusals.raise_for(store, refusal.reply, slug, project_key)
    if credentials[0]:
        store.bindings.bind(slug, name)
    return agent_dict(record)


# -- the human overseer ---------------------------------------------------------------------------
# The name the web view's mail is sent under, as in the reference. It is neither adjective+noun
# nor an explicit id (no separator), so register_agent never gives it to an agent (a generated
# name instead, or a refusal under strict): no agent can speak as the overseer.
OVERSEER_NAME = "HumanOverseer"


async def ensure_overseer(store: Store, project_key: str) -> str:
    """The overseer's agent in the project, registered on first use (its token is never handed
    out: only the web view, behind the HTTP auth, sends as it)."""
    slug = await project_slug(store, project_key)
    if await identity_store.stored_agent(store, slug=slug, name=OVERSEER_NAME) is not None:
        return OVERSEER_NAME
    profile = _checked_profile("web-view", "human", "The human overseer, writing from the web view at /mail.", "auto")
    try:
        # create mode: when another request registered it meanwhile, nothing is claimed (None)
        await identity_store.register_agent(
            store,
            slug=slug,
            mode="create",
            profile=profile,
            minted_digest=token_hash(new_token()),
            credentials=("", "0"),
            candidates=[OVERSEER_NAME],
        )
    except Refusal as refusal:
        await refusals.raise_for(store, refusal.reply, slug, project_key)
    return OVERSEER_NAME
