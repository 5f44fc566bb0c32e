"""Sending mail: send_message and reply_message.

A send into one project is one Lua script (a reply: two, the first reads the original), so a
message is stored and delivered to every recipient of that project atomically, or not at all.
Recipients of other projects (broker/mail/routing.py) get one delivery per project, each its own
script in that project, after the sender was authenticated in its own project.
"""

from __future__ import annotations

import difflib
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.limits import agent_limited, agent_spec
from broker.identity.names import mistake_hint, validate_name
from broker.identity.projects import project_slug
from broker.mail import attachments, cold, contacts, idempotency
from broker.mail.idempotency import Idempotency
from broker.mail.inputs import check_importance, check_recipient_count, check_text, check_thread_id, check_topic
from broker.mail.outgoing import Outgoing, Sender
from broker.mail.routing import (
    Address,
    Group,
    address_of,
    group_by_project,
    linked_agents,
    parse_address,
    parse_recipients,
)
from broker.store.commands import identity as identity_store
from broker.store.commands import mail as store_mail
from broker.store.commands import projects
from broker.store.commands.mail import IdempotencyRecord, NobodyLeft, Sent, VisibleMessage
from broker.store.refusals import Refusal
from broker.store.store import Store

BROADCAST_ACTIVE_DAYS = 30
# A broadcast reaches at most this many agents (it bounds the send script's work).
MAX_BROADCAST_RECIPIENTS = 1000
MAX_SUBJECT_PREFIX_CHARS = 32


class _Unknown(Exception):
    """Recipients the delivery's project does not have (lower-cased names)."""

    def __init__(self, lowered: list[str]) -> None:
        super().__init__(lowered)
        self.lowered = lowered


async def _deliver_one(
    store: Store,
    group: Group,
    sender: Sender,
    foreign: dict[str, Any] | None,
    msg: Outgoing,
    broadcast: bool,
    hold: bool,
    idem: Idempotency | None,
) -> dict[str, Any]:
    """One delivery into ``group``'s project: its project, payload (None when nobody was left
    to deliver to), the recipients it is held for, and the recipients a broadcast skipped."""
    slug = group.slug
    cutoff = ""
    if broadcast:
        cutoff = (datetime.now(UTC) - timedelta(days=BROADCAST_ACTIVE_DAYS)).isoformat()
    limit = MAX_BROADCAST_RECIPIENTS if broadcast else store.settings.max_recipients
    auth = ("", "0") if foreign else sender.auth
    sent: Sent | NobodyLeft | Refusal
    try:
        sent = await store_mail.send_message(
            store,
            slug=slug,
            sender_name=foreign["name"] if foreign else sender.name,
            credentials=auth,
            foreign_sender=foreign,
            subject=msg.subject,
            body_md=msg.body_md,
            importance=msg.importance,
            ack_required=msg.ack_required,
            thread_id=msg.thread_id,
            topic=msg.topic,
            broadcast_cutoff=cutoff,
            max_recipients=limit,
            to=group.to,
            cc=group.cc,
            bcc=group.bcc,
            hold=hold,
            rate_spec=agent_spec(store.settings),
            idempotency=IdempotencyRecord(sender.slug, sender.name, idem.key, idem.fingerprint) if idem else None,
            attachments=msg.attachments,
            past_contact_policy=sender.overseer,
        )
    except Refusal as refused:
        sent = refused
    if isinstance(sent, Refusal):  # raised outside the except clause: no chained Refusal
        raise await _send_refused(store, sent, group, sender, foreign, broadcast, idem)
    if isinstance(sent, NobodyLeft):
        return {"project": None, "payload": None, "held": [], "skipped": sent.skipped}
    if auth[0]:
        store.bindings.bind(slug, sender.name)
    payload = {**sent.head, "body_md": msg.body_md, **sent.recipients}
    return {"project": sent.human_key, "payload": payload, "held": sent.held, "skipped": sent.skipped}


async def _send_refused(
    store: Store,
    refused: Refusal,
    group: Group,
    sender: Sender,
    foreign: dict[str, Any] | None,
    broadcast: bool,
    idem: Idempotency | None,
) -> Exception:
    """The error a refused delivery raises (_Unknown for recipients the project lacks)."""
    code, details = refused.code, list(refused.details)
    if code == "TOO_MANY_RECIPIENTS":
        return BrokerError(
            "INVALID_ARGUMENT",
            f"This message would reach {details[0]} agents; the limit is "
            f"{MAX_BROADCAST_RECIPIENTS if broadcast else store.settings.max_recipients}. Address fewer agents.",
        )
    if code == "BROADCAST_TOO_LARGE":
        return BrokerError(
            "INVALID_ARGUMENT",
            f"This project has {details[0]} registered agents; a broadcast looks through at most "
            f"{2 * MAX_BROADCAST_RECIPIENTS + 1} (it would hold Redis for everyone meanwhile). Nothing was sent. "
            "Address the agents by name (to, cc, bcc), or ask the operator to hard_delete_agent agents no longer used.",
        )
    if code == "UNKNOWN_RECIPIENTS":
        return _Unknown(details)
    if code == "IDEMPOTENCY_CONFLICT" and idem:
        return idempotency.conflict(idem.key, sender.name)
    if code == "RATE_LIMITED":
        return agent_limited(store.settings, sender.name, int(details[0]))
    if code == "HOLD_FULL":
        return contacts.hold_full(store, details, sender, foreign, group)
    if code in contacts.REFUSALS:
        sender_address = sender.name if not foreign else address_of(sender.slug, foreign["name"], here="")
        return contacts.refusal(code, details, sender, sender_address, group)
    # group.project_key: the sender's own for a delivery into its project
    await refusals.raise_for(store, refused.reply, group.slug, group.project_key, "sender_token")
    raise AssertionError("unreachable")


async def _unknown_recipients(store: Store, slug: str, lowered: list[str], given: list[str]) -> BrokerError:
    by_lower = {name.lower(): name for name in given}
    names = [by_lower.get(n, n) for n in lowered]
    human_key, registered = await projects.agent_names(store, slug=slug)
    described = []
    for name in names:
        close = difflib.get_close_matches(name.lower(), [r.lower() for r in registered], n=1, cutoff=0.6)
        hint = mistake_hint(name)
        if close:
            described.append(f"'{name}' (did you mean '{next(r for r in registered if r.lower() == close[0])}'?)")
        elif hint:
            described.append(f"'{name}' ({hint[1]})")
        else:
            described.append(f"'{name}'")
    listing = ", ".join(f"'{r}'" for r in registered[:20]) or "none yet"
    return BrokerError(
        "RECIPIENT_NOT_FOUND",
        f"Unable to send message: recipients {', '.join(described)} are not registered in project "
        f"'{human_key}'. Nothing was sent. Registered agents: {listing}. Fix the names, have the "
        "recipients call register_agent first, or address an agent of another project as "
        "'project:<slug>#Name' (an approved contact link is needed unless its policy is open).",
        {"unknown_local": names},
    )


async def _reroute(
    store: Store, sender: Sender, kinds: dict[str, list[Address]], lowered: list[str]
) -> dict[str, list[Address]]:
    """``kinds`` with the bare names the sender's project does not have addressed to the agent of
    another project the sender has an approved link with; RECIPIENT_NOT_FOUND for the rest."""
    linked = await linked_agents(store, sender.slug, sender.name)
    missing = [n for n in lowered if n not in linked]
    if missing:
        given = [a.name for addresses in kinds.values() for a in addresses]
        raise await _unknown_recipients(store, sender.slug, missing, given)
    return {
        kind: [
            Address(a.name, linked[a.name.lower()][0]) if a.project_key is None and a.name.lower() in lowered else a
            for a in addresses
        ]
        for kind, addresses in kinds.items()
    }


async def deliver(
    store: Store,
    sender: Sender,
    kinds: dict[str, list[Address]],
    msg: Outgoing,
    broadcast: bool,
    hold: bool,
    idem: Idempotency | None = None,
    rerouted: bool = False,
) -> dict[str, Any]:
    """Send ``msg`` to every recipient: one delivery per target project, each all or none (and,
    with ``idem``, each at most once per key: see broker/mail/idempotency.py)."""
    groups = await group_by_project(store, sender.slug, sender.project_key, kinds)
    if len(groups) == 1:
        try:
            done = await _deliver_one(store, groups[sender.slug], sender, None, msg, broadcast, hold, idem)
            return await _result(store, sender, [(groups[sender.slug], done)], [], msg)
        except _Unknown as unknown:
            if rerouted:
                raise await _unknown_recipients(store, sender.slug, unknown.lowered, []) from None
            kinds = await _reroute(store, sender, kinds, unknown.lowered)
            return await deliver(store, sender, kinds, msg, broadcast, hold, idem, True)
    # Deliveries elsewhere are paid here, in the sender's own bucket, as send_message.lua pays
    # for those of its project: 1 token plus 1 per 10 recipients.
    elsewhere = sum(len(g.to) + len(g.cc) + len(g.bcc) for s, g in groups.items() if s != sender.slug)
    foreign = await contacts.authenticated_sender(store, sender, cost=1 + elsewhere // 10)
    if idem:
        await _check_key_everywhere(store, sender, list(groups), idem)
    done_list: list[tuple[Group, dict[str, Any]]] = []
    errors: list[dict[str, Any]] = []
    for slug, group in groups.items():
        if slug == sender.slug and not (group.to or group.cc or group.bcc or broadcast):
            continue
        try:
            home = slug == sender.slug  # a broadcast covers the sender's project only
            try:
                result = await _deliver_one(
                    store, group, sender, None if home else foreign, msg, broadcast and home, hold, idem
                )
            except _Unknown as unknown:
                if home and not rerouted:  # the sender's project goes first: nothing was delivered yet
                    kinds = await _reroute(store, sender, kinds, unknown.lowered)
                    return await deliver(store, sender, kinds, msg, broadcast, hold, idem, True)
                given = group.to + group.cc + group.bcc
                raise await _unknown_recipients(store, slug, unknown.lowered, given) from None
            done_list.append((group, result))
        except BrokerError as exc:
            # a reused key stops the send: the projects after this one must not get the new
            # content; when earlier ones got it (the key was taken meanwhile), say so
            conflict = exc.code == "IDEMPOTENCY_CONFLICT"
            if len(groups) == 1 or (conflict and not done_list):
                raise
            errors.append({"project": group.project_key, "type": exc.code, "message": exc.message, **exc.data})
            if conflict:
                break
    delivered = [d["payload"] for _, d in done_list if d["payload"]]
    if delivered and not any(group.slug == sender.slug and d["payload"] for group, d in done_list):
        # all of it went elsewhere: the sender's own project records the send as its activity
        await identity_store.record_activity(
            store, slug=sender.slug, name=sender.name, at=max(p["created_ts"] for p in delivered)
        )
    if errors and not any(d["payload"] for _, d in done_list):
        if len(errors) == 1 and not done_list:
            raise BrokerError(errors[0]["type"], errors[0]["message"])
        return {
            "error": {
                "type": "DELIVERY_FAILED",
                "message": "Message delivery failed for all target projects.",
                "errors": errors,
            }
        }
    return await _result(store, sender, done_list, errors, msg, foreign)


async def _check_key_everywhere(store: Store, sender: Sender, slugs: list[str], idem: Idempotency) -> None:
    """IDEMPOTENCY_CONFLICT before any delivery when a target project holds the key for other
    content: each send script checks only its own project, so a conflict found in the second
    project came after the first had delivered. One pipelined read, only for keyed sends to
    several projects."""
    held = await store_mail.idempotency_fingerprints(
        store, slugs=slugs, sender_slug=sender.slug, sender=sender.name, key=idem.key
    )
    for first in held:
        if first and first != idem.fingerprint:
            raise idempotency.conflict(idem.key, sender.name)


async def _result(
    store: Store,
    sender: Sender,
    done: list[tuple[Group, dict[str, Any]]],
    errors: list[dict[str, Any]],
    msg: Outgoing,
    foreign: dict[str, Any] | None = None,
) -> dict[str, Any]:
    deliveries = [{"project": d["project"], "payload": d["payload"]} for _, d in done if d["payload"]]
    result: dict[str, Any] = {"deliveries": deliveries, "count": len(deliveries), "verified_sender": True}
    if errors:
        result["delivery_errors"] = errors
    if len(deliveries) == 1:
        result["attachments"] = deliveries[0]["payload"]["attachments"]  # the reference adds this for one delivery
    queued: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for group, d in done:
        skipped.extend(d["skipped"])
        for held in d["held"]:
            queued.append(
                await contacts.request_for_held(store, sender, foreign, group, d["project"], held["name"], msg)
            )
    if queued:
        result["queued"] = queued
    if skipped:
        result["skipped"] = skipped
    return result


def _hold_default(store: Store, auto_contact_if_blocked: bool | None) -> bool:
    if auto_contact_if_blocked is None:
        return store.settings.messaging_auto_handshake_on_block
    return bool(auto_contact_if_blocked)


async def send_message(
    store: Store,
    project_key: str,
    sender_name: str,
    to: list[str],
    subject: str,
    body_md: str,
    cc: list[str] | None,
    bcc: list[str] | None,
    importance: str,
    ack_required: bool,
    thread_id: str | None,
    broadcast: bool,
    topic: str | None,
    sender_token: str | None,
    auto_contact_if_blocked: bool | None = None,
    idempotency_key: str | None = None,
    attachment_paths: list[str] | None = None,
    convert_images: bool | None = None,
) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    key = idempotency.check_key(idempotency_key)
    topic = check_topic(topic)
    name = validate_name(sender_name, "sender_name")
    kinds = {"to": parse_recipients(to, "to"), "cc": parse_recipients(cc, "cc"), "bcc": parse_recipients(bcc, "bcc")}
    if broadcast and kinds["to"]:
        raise BrokerError(
            "INVALID_ARGUMENT",
            "broadcast and to are mutually exclusive: broadcast=True sends to every active agent; pass to=[] with it.",
        )
    total = sum(len(v) for v in kinds.values())
    if not broadcast and total == 0:
        raise BrokerError(
            "INVALID_ARGUMENT", "send_message needs at least one recipient in to, cc or bcc (or broadcast=True)."
        )
    check_recipient_count(store, total)
    check_text(store, subject, body_md)
    importance, thread_id = check_importance(importance), check_thread_id(thread_id)
    paths = attachments.check_paths(attachment_paths)
    sender = Sender(slug, project_key, name, store.bindings.args(slug, name, sender_token))
    attached = await attachments.prepare(
        store, slug, project_key, name, sender.auth, body_md, paths, convert_images, broadcast
    )
    msg = Outgoing(subject, attached.body_md, importance, ack_required, thread_id, topic, attached.attachments)
    idem = idempotency.make(key, "send", msg, broadcast, _fingerprint_kinds(kinds))
    return await deliver(store, sender, kinds, msg, broadcast, _hold_default(store, auto_contact_if_blocked), idem)


def _fingerprint_kinds(kinds: dict[str, list[Address]]) -> dict[str, list[tuple[str, str | None]]]:
    """Recipients as given (names are case-insensitive), for an idempotency fingerprint."""
    return {kind: [(a.name.lower(), a.project_key) for a in addresses] for kind, addresses in kinds.items()}


async def _visible_message(
    store: Store, slug: str, project_key: str, viewer: str, auth: tuple[str, str], message_id: int, token_param: str
) -> VisibleMessage:
    refused: Refusal
    try:
        visible, _body = await cold.get_message(
            store, slug=slug, viewer=viewer, credentials=auth, message_id=message_id
        )
        return visible
    except Refusal as exc:
        refused = exc
    if refused.code == "NO_MESSAGE":
        raise await refusals.message_not_found(store, slug, message_id, viewer)
    await refusals.raise_for(store, refused.reply, slug, project_key, token_param)
    raise AssertionError("unreachable")


async def reply_message(
    store: Store,
    project_key: str,
    message_id: int,
    sender_name: str,
    body_md: str,
    to: list[str] | None,
    cc: list[str] | None,
    bcc: list[str] | None,
    subject_prefix: str,
    sender_token: str | None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    key = idempotency.check_key(idempotency_key)
    name = validate_name(sender_name, "sender_name")
    to_given = parse_recipients(to, "to")
    kinds = {"cc": parse_recipients(cc, "cc"), "bcc": parse_recipients(bcc, "bcc")}
    check_recipient_count(store, len(to_given) + len(kinds["cc"]) + len(kinds["bcc"]))
    prefix = (subject_prefix or "").strip()
    if len(prefix) > MAX_SUBJECT_PREFIX_CHARS:
        raise BrokerError("INVALID_ARGUMENT", f"subject_prefix is longer than {MAX_SUBJECT_PREFIX_CHARS} characters.")
    check_text(store, "", body_md)
    auth = store.bindings.args(slug, name, sender_token)
    visible = await _visible_message(store, slug, project_key, name, auth, message_id, "sender_token")
    original, recipients, me = visible.head, visible.recipients, visible.viewer
    thread_key = original["thread_id"] or str(original["id"])
    subject = original["subject"]
    if prefix and not subject.lower().startswith(prefix.lower()):
        subject = f"{prefix} {subject}".strip()
    # The subject is derived, not given: a prefix that pushes it past the limit is cut off.
    subject = subject[: store.settings.max_subject_chars]
    if to_given:
        kinds["to"] = to_given
    elif visible.sender == me.lower():
        kinds["to"] = [Address(n) for n in recipients["to"]]
    else:  # a sender of another project is answered in its project
        kinds["to"] = [parse_address(original.get("from_address") or original["from"], "to")]
    sender = Sender(slug, project_key, me, auth)
    # the reference's reply takes no attachment_paths; local images in body_md are converted
    attached = await attachments.prepare(store, slug, project_key, me, auth, body_md, [], None)
    msg = Outgoing(
        subject,
        attached.body_md,
        original["importance"],
        original["ack_required"],
        thread_key,
        original["topic"] or "",
        attached.attachments,
    )
    idem = idempotency.make(
        key,
        "reply",
        message_id,
        body_md,
        prefix,
        _fingerprint_kinds({"to": to_given, "cc": kinds["cc"], "bcc": kinds["bcc"]}),
    )
    result = await deliver(store, sender, kinds, msg, False, False, idem)
    if "error" in result:
        return result
    first = result["deliveries"][0]["payload"] if result["deliveries"] else {}
    # The reference's reply result: the first payload + thread_id, reply_to, deliveries, count
    # (+ delivery_errors, attachments); send_message's verified_sender is not part of it.
    result.pop("verified_sender", None)
    return {**first, "thread_id": thread_key, "reply_to": message_id, **result}


# -- reading ------------------------------------------------------------------------------
