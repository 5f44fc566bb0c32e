"""macro_contact_handshake: request contact, optionally approve it for the target and send a
welcome message, in one call (reference §3.7)."""

from __future__ import annotations

from typing import Any

from broker.errors import BrokerError
from broker.identity.names import validate_name
from broker.identity.projects import project_slug
from broker.mail import contacts
from broker.mail import send as mail
from broker.mail.outgoing import Sender
from broker.mail.routing import address_of
from broker.store.commands import projects
from broker.store.store import Store


async def _infer_names(store: Store, slug: str, requester: str | None, target: str | None) -> tuple[str, str]:
    """Requester defaults to the session's agent in the project; the target, in a project of
    exactly two agents, to the other one."""
    requester = requester or store.bindings.current_agent(slug)
    if requester and not target:
        _, names = await projects.agent_names(store, slug=slug)
        others = [n for n in names if n.lower() != requester.lower()]
        if len(names) == 2 and len(others) == 1:
            target = others[0]
    if not requester or not target:
        raise BrokerError(
            "INVALID_ARGUMENT",
            "macro_contact_handshake needs requester (or agent_name) and target (or to_agent): the agent "
            "asking for contact and the agent it wants to write to.",
        )
    return validate_name(requester, "requester"), target


def _check_welcome(subject: str | None, body: str | None, auto_accept: bool) -> bool:
    given = [value for value in (subject, body) if value is not None]
    if any(not value.strip() for value in given):
        raise BrokerError("INVALID_ARGUMENT", "welcome_subject and welcome_body must not be blank when given.")
    if len(given) == 1:
        raise BrokerError("INVALID_ARGUMENT", "Pass both welcome_subject and welcome_body, or neither.")
    if given and not auto_accept:
        raise BrokerError(
            "INVALID_ARGUMENT",
            "A welcome message needs auto_accept=True (the target must accept before it can be written to).",
        )
    return bool(given)


async def contact_handshake(
    store: Store,
    project_key: str,
    requester: str | None,
    target: str | None,
    reason: str,
    ttl_seconds: int,
    auto_accept: bool,
    welcome_subject: str | None,
    welcome_body: str | None,
    to_project: str | None,
    requester_token: str | None,
    target_token: str | None,
    thread_id: str | None,
) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    welcome = _check_welcome(welcome_subject, welcome_body, auto_accept)
    requester, target_given = await _infer_names(store, slug, requester, target)
    target_key, target_name = contacts.target_of(target_given, to_project, project_key)
    target_slug = await project_slug(store, target_key)
    ttl = contacts.check_ttl(store, ttl_seconds)

    if auto_accept and not welcome and target_slug == slug:
        # fast path: both agents authenticated here, the approved link written at once, no intro
        sender = Sender(slug, project_key, requester, store.bindings.args(slug, requester, requester_token))
        human_key = (await contacts.authenticated_sender(store, sender))["human_key"]
        response = await contacts.respond_contact(
            store, project_key, target_name, requester, True, ttl, None, target_token
        )
        approved = {
            "from": response["from"],
            "from_project": human_key,
            "to": response["to"],
            "to_project": human_key,
            "status": "approved",
            "expires_ts": response["expires_ts"],
        }
        return {"request": approved, "response": approved, "welcome_message": None}

    request = await contacts.request_contact(
        store, project_key, requester, target_name, target_key, reason, ttl, requester_token
    )
    result: dict[str, Any] = {"request": request, "response": None, "welcome_message": None}
    if not auto_accept:
        return result
    digest, require = store.bindings.args(target_slug, target_name, target_token)
    if not digest and require == "1":
        result["response_error"] = {
            "type": "AUTHENTICATION_REQUIRED",
            "message": f"Approving for '{target_name}' needs target_registration_token (its registration_token) "
            "unless this session authenticated as it; the request stays pending for it to answer.",
        }
        return result
    try:
        result["response"] = await contacts.respond_contact(
            store, target_key, target_name, requester, True, ttl, project_key if target_slug != slug else None,
            target_token,
        )  # fmt: skip
    except BrokerError as exc:
        result["response_error"] = {"type": exc.code, "message": exc.message}
        return result
    if welcome:
        address = address_of(target_slug, target_name, slug)
        try:
            result["welcome_message"] = await mail.send_message(
                store, project_key, requester, [address], welcome_subject or "", welcome_body or "", None, None,
                "normal", False, thread_id, False, None, requester_token, False,
            )  # fmt: skip
        except BrokerError as exc:
            result["welcome_error"] = {"type": exc.code, "message": exc.message}
    return result
