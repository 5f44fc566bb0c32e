"""The coded errors of a refused operation, with a remedy: what a script's error reply (or a
missing project, agent or message) means to the caller, in words that say what to do next."""

from __future__ import annotations

import difflib
from typing import Any, NoReturn

from broker.errors import BrokerError
from broker.identity.names import mistake_hint
from broker.store.commands import projects
from broker.store.store import Store


async def raise_for(
    store: Store, reply: list[Any], slug: str, project_key: str, token_param: str = "registration_token"
) -> NoReturn:
    """Turn a script's error reply into a BrokerError with a remedy. ``token_param`` names
    the argument that carries the agent's token in the failing tool. Raised ``from None``: the
    store's Refusal it is called for is an implementation detail, not a cause to show."""
    code = reply[0]
    if code == "NO_PROJECT":
        raise await project_not_found(store, project_key) from None
    if code == "NO_AGENT":
        raise await agent_not_found(store, slug, reply[1]) from None
    if code == "PROJECT_ARCHIVED":
        raise project_archived(reply[1] if len(reply) > 1 and reply[1] else project_key) from None
    if code == "BAD_TOKEN":
        raise BrokerError(
            "AUTHENTICATION_FAILED",
            f"Invalid {token_param} for agent '{reply[1]}'. Pass the registration_token that "
            "register_agent returned for this agent.",
        ) from None
    if code == "AUTH_REQUIRED":
        raise BrokerError(
            "AUTHENTICATION_REQUIRED",
            f"This call requires {token_param} for agent '{reply[1]}' (the registration_token "
            "register_agent returned), unless this MCP session has already authenticated as that agent.",
        ) from None
    raise BrokerError("INTERNAL_ERROR", f"Unexpected script reply {code!r}; please report it.") from None


def project_archived(human_key: str) -> BrokerError:
    """An archived project takes no new work (sends, reservations, agents) until unarchived."""
    return BrokerError(
        "PROJECT_ARCHIVED",
        f"Project '{human_key}' is archived; call unarchive_project(project_key='{human_key}') to reopen it.",
    )


async def message_not_found(store: Store, slug: str, message_id: int, viewer: str) -> BrokerError:
    human_key = await projects.human_key(store, slug=slug)
    return BrokerError(
        "NOT_FOUND",
        f"Message '{message_id}' not found or not visible to agent '{viewer}' "
        f"in project '{human_key}'. Check the id with fetch_inbox.",
    )


async def missing_agent_reply(store: Store, slug: str, name: str) -> list[str]:
    """The script-style error reply for an agent that is not there (or its project)."""
    return ["NO_AGENT", name] if await projects.exists(store, slug=slug) else ["NO_PROJECT"]


async def project_not_found(store: Store, project_key: str) -> BrokerError:
    names = await projects.known_keys(store)
    close = difflib.get_close_matches(project_key, names, n=3, cutoff=0.4)
    if close:
        hint = "Did you mean: " + ", ".join(f"'{c}'" for c in close) + "? "
        return BrokerError(
            "NOT_FOUND",
            f"Project '{project_key}' not found. {hint}Use ensure_project to create a new project, or check spelling.",
        )
    return BrokerError(
        "NOT_FOUND",
        f"Project '{project_key}' not found and no similar projects exist. Use ensure_project "
        "to create a new project first. Example: ensure_project(human_key='/path/to/your/project')",
    )


async def agent_not_found(store: Store, slug: str, name: str) -> BrokerError:
    human_key, names = await projects.agent_names(store, slug=slug)
    hint = mistake_hint(name)
    suffix = f"\n\nHINT: {hint[1]}" if hint else ""
    if not names:
        message = (
            f"Agent '{name}' not found. Project '{human_key}' has no registered agents yet. "
            "Use register_agent to create an agent identity."
        )
    else:
        close = difflib.get_close_matches(name.lower(), [n.lower() for n in names], n=3, cutoff=0.6)
        if close:
            matches = [n for n in names if n.lower() in close]
            message = (
                f"Agent '{name}' not found in project '{human_key}'. Did you mean: "
                + ", ".join(f"'{m}'" for m in matches)
                + "? Agent names are case-insensitive but must match exactly."
            )
        else:
            shown = ", ".join(f"'{n}'" for n in names[:10])
            more = f" and {len(names) - 10} more" if len(names) > 10 else ""
            message = (
                f"Agent '{name}' not found in project '{human_key}'. Available agents: "
                f"{shown}{more}. Use register_agent to create a new agent identity."
            )
    return BrokerError(hint[0] if hint else "NOT_FOUND", message + suffix)
