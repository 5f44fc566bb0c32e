"""Agent and project lifecycle: retire, unretire, deregister, archive, unarchive, and the
auth the project-wide tools share (the operator credential: broker/identity/operator.py). Hard deletes are in ``broker/lifecycle/erase.py``,
purge in ``broker/lifecycle/retention.py``, window identities in ``broker/identity/windows.py``.

Every state change is one Lua script (``agent_state.lua``, ``project_state.lua``) that also
records the change for the persistence worker, so ``retired_at``, ``contact_policy``,
``task_description`` and ``archived_at`` reach the SQLite index and the archive's profile.
"""

from __future__ import annotations

from typing import Any

from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.auth import token_hash
from broker.identity.names import validate_name
from broker.identity.operator import presented, refusal
from broker.identity.projects import project_slug
from broker.store.commands import lifecycle as commands
from broker.store.commands import projects
from broker.store.commands.lifecycle import Caller, ProjectState
from broker.store.refusals import Refusal
from broker.store.store import Store

CONFIRMATION_PHRASE = "I UNDERSTAND"


def check_confirmation(confirmation: object, tool: str) -> None:
    if confirmation != CONFIRMATION_PHRASE:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"{tool} deletes data for good: pass confirmation='{CONFIRMATION_PHRASE}' exactly (got {confirmation!r}).",
        )


def agent_auth(store: Store, slug: str, name: str, token: str | None) -> Caller:
    """Who acts as an agent: its token digest, and whether a token is required."""
    digest, require = store.bindings.args(slug, name, token)
    return Caller(token_digest=digest, token_required=require == "1")


# A caller that presented the operator credential: nothing for the scripts to check.
OPERATOR = Caller()


def bound_agent(store: Store, slug: str) -> str | None:
    """The agent this MCP session authenticated as in the project, if the binding is still live."""
    current = store.bindings.current_agent(slug)
    if current and store.bindings.args(slug, current, None)[1] == "0":
        return current
    return None


def admin_auth(store: Store, slug: str, token: str | None) -> Caller:
    """Project member auth (lib/lifecycle.lua admin_error): a token of any agent of the project,
    or, under AGENT_AUTH=required, a session bound to one of them. Under ``open`` no token is
    needed, but a wrong one is still refused. Destructive operations ask for the operator
    credential instead (``operator_or_member``)."""
    digest = token_hash(token)
    required = not (digest or store.bindings.mode == "open")
    actor = (bound_agent(store, slug) or "") if required else ""
    return Caller(token_digest=digest, token_required=required, session_agent=actor)


def operator_or_member(
    store: Store, slug: str, token: str | None, operator_token: str | None, action: str, operator_only: bool
) -> Caller:
    """Project auth for project_state.lua. The operator credential always passes. Without it:
    under ``required`` an operator-only action is refused here (before any Redis work);
    otherwise any agent of the project (``admin_auth``) is enough."""
    if presented(store.settings, operator_token, token):
        return OPERATOR
    if operator_only and store.bindings.mode == "required":
        raise refusal(action, bool(token) or bound_agent(store, slug) is not None)
    return admin_auth(store, slug, token)


def agent_or_operator(
    store: Store, slug: str, name: str, token: str | None, operator_token: str | None, action: str, operator_only: bool
) -> Caller:
    """Auth for acting on one agent: the operator credential, or (unless the action is
    operator-only under ``required``) the agent's own token or session."""
    if presented(store.settings, operator_token, token):
        return OPERATOR
    if operator_only and store.bindings.mode == "required":
        raise refusal(action, bool(token) or bound_agent(store, slug) is not None)
    return agent_auth(store, slug, name, token)


async def raise_admin(store: Store, refused: Refusal, slug: str, project_key: str, action: str) -> None:
    code = refused.code
    if code == "TOO_MANY_AGENTS":
        raise BrokerError(
            "OPERATOR_REQUIRED",
            f"{action}: project '{project_key}' has more than 2000 agents, too many to search for the agent a "
            "registration_token belongs to. Pass the broker's operator token as operator_token instead.",
        )
    if code in ("BAD_ADMIN_TOKEN", "ADMIN_AUTH_REQUIRED"):
        human_key = await projects.human_key(store, slug=slug) or project_key
        if code == "BAD_ADMIN_TOKEN":
            raise BrokerError(
                "AUTHENTICATION_FAILED",
                f"Invalid registration_token: it belongs to no agent of project '{human_key}' and is "
                "not the operator token. Pass the registration_token of an agent of the project, or the "
                "operator token.",
            )
        raise BrokerError(
            "AUTHENTICATION_REQUIRED",
            f"{action} requires the registration_token of an agent of project '{human_key}', unless this "
            "MCP session has already authenticated as one of its agents.",
        )
    await refusals.raise_for(store, refused.reply, slug, project_key)


async def _agent_state(
    store: Store, project_key: str, agent_name: str, token: str | None, operator_token: str | None, op: str
) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    name = validate_name(agent_name)
    # the agent itself (token or session), or the operator: another agent's session is not enough
    caller = agent_or_operator(store, slug, name, token, operator_token, f"{op}_agent", operator_only=False)
    try:
        agent = await commands.agent_state(store, slug=slug, name=name, caller=caller, op=op)
    except Refusal as refused:
        await refusals.raise_for(store, refused.reply, slug, project_key)
        raise
    if caller.token_digest:
        store.bindings.bind(slug, agent["name"])
    return agent


async def retire_agent(
    store: Store, project_key: str, agent_name: str, token: str | None, operator_token: str | None = None
) -> dict[str, Any]:
    agent = await _agent_state(store, project_key, agent_name, token, operator_token, "retire")
    return {"status": "retired", "agent_name": agent["name"], "project_key": project_key}


async def unretire_agent(
    store: Store, project_key: str, agent_name: str, token: str | None, operator_token: str | None = None
) -> dict[str, Any]:
    agent = await _agent_state(store, project_key, agent_name, token, operator_token, "unretire")
    return {"status": "active", "agent_name": agent["name"], "project_key": project_key}


async def deregister_agent(
    store: Store, project_key: str, agent_name: str, token: str | None, operator_token: str | None = None
) -> dict[str, Any]:
    agent = await _agent_state(store, project_key, agent_name, token, operator_token, "deregister")
    return {"status": "deregistered", "agent_name": agent["name"], "project_key": project_key}


async def project_state(
    store: Store,
    project_key: str,
    token: str | None,
    operator_token: str | None,
    op: str,
    action: str,
    operator_only: bool = True,
) -> ProjectState:
    """Run project_state.lua (archive, unarchive, or "check": auth only)."""
    slug = await project_slug(store, project_key)
    caller = operator_or_member(store, slug, token, operator_token, action, operator_only)
    try:
        return await commands.project_state(store, slug=slug, caller=caller, op=op)
    except Refusal as refused:
        await raise_admin(store, refused, slug, project_key, action)
        raise


async def archive_project(
    store: Store, project_key: str, token: str | None, operator_token: str | None = None
) -> dict[str, Any]:
    await project_state(store, project_key, token, operator_token, "archive", "archive_project")
    return {"status": "archived", "project_key": project_key, "slug": await project_slug(store, project_key)}


async def unarchive_project(
    store: Store, project_key: str, token: str | None, operator_token: str | None = None
) -> dict[str, Any]:
    await project_state(store, project_key, token, operator_token, "unarchive", "unarchive_project")
    return {"status": "active", "project_key": project_key, "slug": await project_slug(store, project_key)}
