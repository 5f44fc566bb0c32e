"""macro_contact_handshake: request contact, optionally approve it for the target and send a
welcome message, in one call (reference §3.7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.errors import BrokerError
from broker.identity import agents as identity
from broker.identity import refusals
from broker.identity.auth import token_hash
from broker.identity.names import is_generated_shape, validate_name
from broker.identity.projects import project_slug
from broker.mail import contacts
from broker.mail import send as mail
from broker.mail.outgoing import Sender
from broker.mail.routing import address_of
from broker.store.commands import contacts as contact_store
from broker.store.commands import projects
from broker.store.refusals import Refusal
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
            "welcome_subject and welcome_body require auto_accept=True: the target must accept the contact "
            "before it can be written to. Pass auto_accept=True (with target_registration_token), or send the "
            "welcome once the target has approved.",
        )
    return bool(given)


@dataclass(frozen=True, slots=True)
class MissingTarget:
    """register_if_missing, and the profile a missing target is registered with."""

    register: bool = True
    program: str | None = None
    model: str | None = None
    task_description: str | None = None


async def _ensure_target(
    store: Store, requester: Sender, slug: str, key: str, name: str, missing: MissingTarget
) -> None:
    """Register the target if nobody has (register_if_missing and an adjective+noun name, as the
    reference's request_contact does); otherwise a missing target stays NOT_FOUND. The requester
    is authenticated first: a refused call registers nobody."""
    try:
        await contact_store.known_agent(store, slug=slug, name=name)
        return
    except Refusal as refused:
        if refused.code != "NO_AGENT" or not missing.register or not is_generated_shape(name):
            await refusals.raise_for(store, refused.reply, slug, key)
    await contacts.authenticated_sender(store, requester)
    await identity.register_absent(store, key, name, missing.program, missing.model, missing.task_description)


def _approved_view(link: dict[str, Any]) -> dict[str, Any]:
    return {k: link[k] for k in ("from", "from_project", "to", "to_project", "status", "expires_ts")}


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
    missing: MissingTarget | None = None,
) -> dict[str, Any]:
    """request_contact, then (auto_accept) approval for the target and an optional welcome.

    Approving is the target's decision, so auto_accept needs the target's credential (its token,
    or a session that proved it) in every auth mode, as in the reference; a link the target
    already approved is reused without it. Without it the request stays pending and the result
    carries response_error (and welcome_error: no welcome is sent before approval)."""
    slug = await project_slug(store, project_key)
    welcome = _check_welcome(welcome_subject, welcome_body, auto_accept)
    requester, target_given = await _infer_names(store, slug, requester, target)
    target_key, target_name = contacts.target_of(target_given, to_project, project_key)
    target_slug = await project_slug(store, target_key)
    ttl = contacts.check_ttl(store, ttl_seconds)
    target_proven = bool(token_hash(target_token)) or store.bindings.is_bound(target_slug, target_name)

    if auto_accept and not welcome and target_slug == slug and target_proven:
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

    asking = Sender(slug, project_key, requester, store.bindings.args(slug, requester, requester_token))
    await _ensure_target(store, asking, target_slug, target_key, target_name, missing or MissingTarget())
    request = await contacts.request_contact(
        store, project_key, requester, target_name, target_key, reason, ttl, requester_token
    )
    result: dict[str, Any] = {"request": request, "response": None, "welcome_message": None}
    if not auto_accept:
        return result
    if request["status"] == "approved":  # the target approved earlier: nothing to approve again
        result["response"] = _approved_view(request)
    elif not target_proven:
        result["response_error"] = {
            "type": "AUTHENTICATION_REQUIRED",
            "message": f"Approving for '{target_name}' needs target_registration_token (its registration_token) "
            "unless this session authenticated as it; the request stays pending for it to answer.",
        }
    else:
        try:
            result["response"] = await contacts.respond_contact(
                store, target_key, target_name, requester, True, ttl, project_key if target_slug != slug else None,
                target_token,
            )  # fmt: skip
        except BrokerError as exc:
            result["response_error"] = {"type": exc.code, "message": exc.message}
    if welcome:
        await _send_welcome(store, result, project_key, slug, requester, requester_token, target_slug, target_name,
                            welcome_subject or "", welcome_body or "", thread_id)  # fmt: skip
    return result


async def _send_welcome(
    store: Store,
    result: dict[str, Any],
    project_key: str,
    slug: str,
    requester: str,
    requester_token: str | None,
    target_slug: str,
    target_name: str,
    subject: str,
    body: str,
    thread_id: str | None,
) -> None:
    """Send the welcome into ``result``; a failure is reported in welcome_error, not raised (the
    request and approval stand). Without an approval nothing is sent: the target has not agreed."""
    if result["response"] is None:
        result["welcome_error"] = {
            "type": "CONTACT_REQUIRED",
            "message": f"The welcome message was not sent: '{target_name}' has not approved the contact yet.",
        }
        return
    address = address_of(target_slug, target_name, slug)
    try:
        result["welcome_message"] = await mail.send_message(
            store, project_key, requester, [address], subject, body, None, None,
            "normal", False, thread_id, False, None, requester_token, False,
        )  # fmt: skip
    except BrokerError as exc:
        result["welcome_error"] = {"type": exc.code, "message": exc.message}
