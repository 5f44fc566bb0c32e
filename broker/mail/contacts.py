"""Contacts: links between agents, contact policies, and what a send does when they refuse it.

A link A->B (A asked to write to B) is kept in both endpoints' projects (layout in
broker/scripts/lib/contacts.lua): B's copy is written first (the send script, which runs in
the recipient's project, enforces from it), then A's; in one project both at once. Each write
is idempotent and never replaces a newer version, so a retry converges.
"""

from __future__ import annotations

from typing import Any

from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.limits import agent_limited, agent_spec
from broker.identity.names import validate_name
from broker.identity.projects import project_slug
from broker.mail.outgoing import Outgoing, Sender
from broker.mail.routing import Group, address_of, parse_address
from broker.store.commands import contacts as contact_store
from broker.store.refusals import Refusal
from broker.store.store import Store

POLICIES = ("open", "auto", "contacts_only", "block_all")
REQUEST_TTL_SECONDS = 7 * 86400
APPROVAL_TTL_SECONDS = 30 * 86400
MAX_TTL_SECONDS = 10 * 365 * 86400
REFUSALS = ("AGENT_RETIRED", "CONTACT_BLOCKED", "CONTACT_REQUIRED")


def check_ttl(store: Store, ttl_seconds: int, what: str = "ttl_seconds") -> int:
    """A link lifetime: below the minimum it is raised to it (as the reference does)."""
    if not isinstance(ttl_seconds, int) or isinstance(ttl_seconds, bool) or ttl_seconds > MAX_TTL_SECONDS:
        raise BrokerError("INVALID_ARGUMENT", f"{what} must be a whole number of seconds up to {MAX_TTL_SECONDS}.")
    return max(ttl_seconds, store.settings.contact_min_ttl_seconds)


def check_policy(policy: object) -> str:
    value = policy.strip().lower() if isinstance(policy, str) else ""
    if value not in POLICIES:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"Contact policy '{policy}' is not one of: open (anyone may write), auto (agents of this "
            "project may write; others need an approved contact), contacts_only (only approved contacts "
            "and agents already in the thread), block_all (nobody).",
        )
    return value


def refusal(code: str, names: list[str], sender: Sender, sender_address: str, group: Group) -> BrokerError:
    """The error for recipients whose contact policy refused a send (nothing was sent)."""
    listed = ", ".join(names)
    data: dict[str, Any] = {"recipients_blocked": names}
    if code == "AGENT_RETIRED":
        return BrokerError(
            code,
            f"Agent(s) {listed} are retired and no longer accept new messages. Nothing was sent. "
            "Use unretire_agent to restore them first, or leave them out.",
            data,
        )
    if code == "CONTACT_BLOCKED":
        return BrokerError(
            code,
            f"Recipient is not accepting messages: {listed} refuse(s) mail from {sender_address} (contact "
            "policy block_all, or they refused your contact request). Nothing was sent. Leave them out; only "
            "they can change it (set_contact_policy, or respond_contact with accept=True).",
            data,
        )
    cross = group.slug != sender.slug
    calls = []
    for name in names:
        to_agent = address_of(group.slug, name, sender.slug)
        from_project = f", from_project='{sender.slug}'" if cross else ""
        calls.append(
            f"request_contact(project_key='{sender.project_key}', from_agent='{sender.name}', to_agent='{to_agent}'), "
            f"then respond_contact(project_key='{group.project_key}', to_agent='{name}', "
            f"from_agent='{sender.name}'{from_project}, accept=True)"
        )
    data["remedies"] = calls
    data["auto_contact_requested"] = []
    return BrokerError(
        code,
        f"Contact approval required for recipients: {listed}. Nothing was sent. Before retrying, create "
        f"a pending request and have the recipient approve it: {'; '.join(calls)}. Alternatively send "
        "with auto_contact_if_blocked=True (the message is then held until they approve), or, for "
        "contacts_only recipients of this project, reuse the thread_id of a thread that already includes them.",
        data,
    )


def hold_full(
    store: Store, names: list[str], sender: Sender, foreign: dict[str, Any] | None, group: Group
) -> BrokerError:
    """The error for recipients that already hold as many messages from the sender as allowed."""
    requester = foreign["name"] if foreign else sender.name
    from_project = f", from_project='{sender.slug}'" if foreign else ""
    calls = "; ".join(
        f"respond_contact(project_key='{group.project_key}', to_agent='{name}', from_agent='{requester}'"
        f"{from_project}, accept=True)"
        for name in names
    )
    return BrokerError(
        "CONTACT_REQUIRED",
        f"Recipient(s) {', '.join(names)} already have {store.settings.contact_max_held} messages from "
        f"{requester} held until they approve your contact request (the most one sender may have held for "
        f"one recipient). Nothing was sent. Wait until they approve ({calls}), or leave them out.",
        {"recipients_blocked": names},
    )


async def _agent_record(store: Store, slug: str, project_key: str, name: str) -> dict[str, Any]:
    """An agent of ``slug`` with its project's identity (no token check), or NOT_FOUND."""
    try:
        agent = await contact_store.known_agent(store, slug=slug, name=name)
    except Refusal as refused:  # NO_PROJECT or NO_AGENT
        await refusals.raise_for(store, refused.reply, slug, project_key)
        raise
    return agent.as_dict()


async def authenticated_sender(store: Store, sender: Sender, cost: int = 0) -> dict[str, Any]:
    """The sender, authenticated in its own project, as the identity other projects' scripts take.
    With ``cost`` the sender's own rate bucket admits it and is charged that many tokens first
    (the other projects' scripts cannot reach that bucket)."""
    slug = sender.slug
    spec = agent_spec(store.settings) if cost else ""
    try:
        agent = await contact_store.authenticated_identity(
            store, slug=slug, name=sender.name, credentials=sender.auth, rate_spec=spec, cost=cost
        )
    except Refusal as refused:
        if refused.code == "RATE_LIMITED":
            raise agent_limited(store.settings, sender.name, int(refused.details[0])) from None
        await refusals.raise_for(store, refused.reply, slug, sender.project_key, "sender_token")
        raise
    if sender.auth[0]:
        store.bindings.bind(slug, sender.name)
    return agent.as_dict()


async def _request(
    store: Store,
    target_slug: str,
    target_project_key: str,
    requester: str,
    auth: tuple[str, str],
    foreign: dict[str, Any] | None,
    target: str,
    reason: str,
    ttl: int,
    intro_body: str,
    requester_project_key: str,
) -> contact_store.ContactRequested:
    """Create or renew the link in the target's project (with its intro mail), then the
    requester's copy; returns the link and the intro head (None when none was sent)."""
    slug = target_slug
    try:
        requested = await contact_store.contact_request(
            store, slug=slug, requester=requester, credentials=auth, foreign=foreign, target=target, reason=reason,
            ttl_seconds=ttl, intro_body=intro_body,
        )  # fmt: skip
    except Refusal as refused:
        await _request_refused(store, refused, slug, target_project_key, requester, requester_project_key)
        raise
    if foreign:
        await mirror_link(store, foreign["slug"], requested.link)
    elif auth[0]:
        store.bindings.bind(slug, requester)
    return requested


async def _request_refused(
    store: Store, refused: Refusal, slug: str, target_project_key: str, requester: str, requester_project_key: str
) -> None:
    """Raise the error for contact_request's refusal."""
    code, details = refused.code, refused.details
    if code == "NO_TARGET":
        raise await refusals.agent_not_found(store, slug, details[0])
    if code == "SELF":
        raise BrokerError(
            "INVALID_ARGUMENT",
            "request_contact does not allow self-contact within the same project; an agent may always write to itself.",
        )
    if code == "AGENT_RETIRED":
        raise BrokerError(
            code, f"Agent '{details[0]}' is retired and no longer accepts new messages or contact requests."
        )
    if code == "CONTACT_BLOCKED":
        why = "its contact policy is block_all" if details[1] == "block_all" else "it refused your earlier request"
        raise BrokerError(
            code,
            f"Agent '{details[0]}' is not accepting contact requests from '{requester}' ({why}); only it can change that.",
        )
    if code == "NO_PROJECT":
        raise await refusals.project_not_found(store, target_project_key)
    await refusals.raise_for(store, refused.reply, slug, requester_project_key, "registration_token")


async def mirror_link(store: Store, slug: str, link: contact_store.Link) -> None:
    """Write the copy of ``link`` that lives in project ``slug`` (after the other project's)."""
    await contact_store.link_put(store, slug=slug, link=link)


def _link_view(link: contact_store.Link) -> dict[str, Any]:
    return {
        "from": link.requester,
        "from_project": link.requester_project,
        "to": link.target,
        "to_project": link.target_project,
        "status": link.status,
        "expires_ts": link.expires_ts,
    }


async def request_for_held(
    store: Store,
    sender: Sender,
    foreign: dict[str, Any] | None,
    group: Group,
    human_key: str,
    recipient: str,
    msg: Outgoing,
) -> dict[str, Any]:
    """Ask ``recipient`` for contact on behalf of a send held for it; the queued entry."""
    cross = group.slug != sender.slug
    from_project = f", from_project='{sender.slug}'" if cross else ""
    body = (
        f"{foreign['name'] if foreign else sender.name} wants to write to you; a message "
        f"('{msg.subject}') is held for you until you accept with respond_contact(project_key='{human_key}', "
        f"to_agent='{recipient}', from_agent='{foreign['name'] if foreign else sender.name}'{from_project}, "
        "accept=True). Refusing (accept=False) drops it."
    )
    entry: dict[str, Any] = {"recipient": recipient, "project": human_key, "reason": "CONTACT_REQUIRED"}
    try:
        requested = await _request(
            store, group.slug, group.project_key, sender.name, sender.auth, foreign, recipient,
            "held message", store.settings.contact_hold_ttl_seconds, body, sender.project_key,
        )  # fmt: skip
        entry["contact_status"] = requested.link.status
    except BrokerError as exc:
        entry["contact_status"] = "none"
        entry["contact_error"] = f"{exc.code}: {exc.message}"
    return entry


def target_of(to_agent: str, to_project: str | None, here_key: str) -> tuple[str, str]:
    """(project key, name) of a contact target given as name, project:<key>#Name or Name@<key>."""
    address = parse_address(to_agent, "to_agent")
    return (to_project or address.project_key or here_key), address.name


async def request_contact(
    store: Store,
    project_key: str,
    from_agent: str,
    to_agent: str,
    to_project: str | None,
    reason: str,
    ttl_seconds: int,
    registration_token: str | None,
) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    requester = validate_name(from_agent, "from_agent")
    target_key, target = target_of(to_agent, to_project, project_key)
    target_slug = await project_slug(store, target_key)
    if not isinstance(reason, str) or len(reason) > 512:
        raise BrokerError("INVALID_ARGUMENT", "reason must be text of at most 512 characters.")
    ttl = check_ttl(store, ttl_seconds)
    auth = store.bindings.args(slug, requester, registration_token)
    foreign = None
    if target_slug != slug:
        foreign = await authenticated_sender(store, Sender(slug, project_key, requester, auth), cost=1)
    requested = await _request(
        store, target_slug, target_key, requester, auth, foreign, target, reason, ttl, reason, project_key
    )
    link = requested.link
    result = _link_view(link)
    if requested.intro:
        body = reason or f"{link.requester} requests permission to contact {link.target}."
        result["notification_message"] = {**requested.intro, "body_md": body, "to": [link.target], "cc": [], "bcc": []}
    return result


async def respond_contact(
    store: Store,
    project_key: str,
    to_agent: str,
    from_agent: str,
    accept: bool,
    ttl_seconds: int,
    from_project: str | None,
    registration_token: str | None,
) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    me = validate_name(to_agent, "to_agent")
    from_key, requester = target_of(from_agent, from_project, project_key)
    requester_slug = await project_slug(store, from_key)
    if requester_slug == slug and requester.lower() == me.lower():
        raise BrokerError(
            "INVALID_ARGUMENT",
            "respond_contact does not allow self-contact within the same project; an agent may always write to itself.",
        )
    ttl = check_ttl(store, ttl_seconds)
    foreign = await _agent_record(store, requester_slug, from_key, requester) if requester_slug != slug else None
    auth = store.bindings.args(slug, me, registration_token)
    try:
        response = await contact_store.contact_respond(
            store, slug=slug, responder=me, credentials=auth, foreign=foreign, requester=requester, accept=accept,
            ttl_seconds=ttl,
        )  # fmt: skip
    except Refusal as refused:
        if refused.code == "NO_REQUESTER":
            raise await refusals.agent_not_found(store, slug, refused.details[0]) from None
        await refusals.raise_for(store, refused.reply, slug, project_key)
        raise
    if auth[0]:
        store.bindings.bind(slug, me)
    link = response.link
    if link is None:
        return {
            "from": requester, "to": me, "approved": False, "expires_ts": None, "updated": 0,
            "delivered_message_ids": [],
        }  # fmt: skip
    if foreign:
        await mirror_link(store, requester_slug, link)
    return {
        "from": link.requester,
        "to": link.target,
        "approved": link.status == "approved",
        "expires_ts": link.expires_ts,
        "updated": response.updated,
        "delivered_message_ids": list(response.delivered_ids),
    }


async def list_contacts(
    store: Store, project_key: str, agent_name: str, registration_token: str | None
) -> list[dict[str, Any]]:
    slug = await project_slug(store, project_key)
    name = validate_name(agent_name)
    auth = store.bindings.args(slug, name, registration_token)
    try:
        found = await contact_store.list_links(store, slug=slug, name=name, credentials=auth)
    except Refusal as refused:
        await refusals.raise_for(store, refused.reply, slug, project_key)
        raise
    if auth[0]:
        store.bindings.bind(slug, name)
    rows = []
    for link in sorted(found.outgoing, key=lambda link: link.updated_us, reverse=True):
        expired = link.expires_us is not None and link.expires_us <= found.now_us
        rows.append(
            {
                "to": link.target,
                "to_project": link.target_project,
                "status": link.status,
                "is_expired": expired,
                "allows_messaging": link.status == "approved" and not expired,
                "reason": link.reason,
                "updated_ts": link.updated_ts,
                "expires_ts": link.expires_ts,
            }
        )
    return rows


async def set_contact_policy(
    store: Store, project_key: str, agent_name: str, policy: str, registration_token: str | None
) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    name = validate_name(agent_name)
    value = check_policy(policy)
    auth = store.bindings.args(slug, name, registration_token)
    try:
        changed = await contact_store.set_contact_policy(store, slug=slug, name=name, credentials=auth, policy=value)
    except Refusal as refused:
        await refusals.raise_for(store, refused.reply, slug, project_key)
        raise
    if auth[0]:
        store.bindings.bind(slug, name)
    return {"agent": changed.agent, "policy": changed.policy}
