"""Sending mail: send_message and reply_message.

A send is one Lua script (a reply: two, the first reads the original), so a message is
stored and delivered to every recipient atomically, or not at all.
"""

from __future__ import annotations

import difflib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.errors import BrokerError
from broker.identity import project_slug
from broker.inputs import (
    check_importance,
    check_recipient_count,
    check_text,
    check_thread_id,
    check_topic,
    recipient_names,
)
from broker.names import mistake_hint, validate_name
from broker.store import Store

BROADCAST_ACTIVE_DAYS = 30
# Bodies up to this size are copied into each inbox entry so a page with bodies is one read;
# larger ones are read from the project's bodies hash.
INLINE_BODY_BYTES = 2048
# A broadcast reaches at most this many agents (it bounds the send script's work).
MAX_BROADCAST_RECIPIENTS = 1000
MAX_SUBJECT_PREFIX_CHARS = 32


async def _deliver(
    store: Store,
    slug: str,
    project_key: str,
    sender: str,
    auth: tuple[str, str],
    to: list[str],
    cc: list[str],
    bcc: list[str],
    subject: str,
    body_md: str,
    importance: str,
    ack_required: bool,
    thread_id: str,
    topic: str,
    broadcast: bool,
) -> dict[str, Any]:
    keys = store.keys
    cutoff = ""
    if broadcast:
        cutoff = (datetime.now(UTC) - timedelta(days=BROADCAST_ACTIVE_DAYS)).isoformat()
    message_id = await store.next_id("message")
    reply = await store.run(
        "send_message",
        [keys.project(slug), keys.agents(slug), keys.active(slug), keys.pending(slug)],
        [
            keys.project_prefix(slug),
            keys.doorbell,
            slug,
            message_id,
            sender,
            auth[0],
            auth[1],
            subject,
            body_md,
            importance,
            "1" if ack_required else "0",
            thread_id,
            topic,
            cutoff,
            INLINE_BODY_BYTES,
            MAX_BROADCAST_RECIPIENTS if broadcast else store.settings.max_recipients,
            len(to),
            len(cc),
            *(n.lower() for n in to),
            *(n.lower() for n in cc),
            *(n.lower() for n in bcc),
        ],
    )
    status = reply[0]
    if status == "ok":
        store.schedule_persist(slug, reply[4])
        if auth[0]:
            store.bindings.bind(slug, sender)
        payload = json.loads(reply[1])
        payload["body_md"] = body_md
        payload.update(json.loads(reply[2]))
        return {
            "deliveries": [{"project": reply[3], "payload": payload}],
            "count": 1,
            "verified_sender": True,
            "attachments": payload["attachments"],  # the reference adds this when there is one delivery
        }
    if status == "TOO_MANY_RECIPIENTS":
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"This message would reach {reply[1]} agents; the limit is "
            f"{MAX_BROADCAST_RECIPIENTS if broadcast else store.settings.max_recipients}. Address fewer agents.",
        )
    if status == "NO_RECIPIENTS":
        return {"deliveries": [], "count": 0, "verified_sender": True}
    if status == "UNKNOWN_RECIPIENTS":
        raise await _unknown_recipients(store, slug, reply[1:], to + cc + bcc)
    await store.raise_for(reply, slug, project_key, "sender_token")
    raise AssertionError("unreachable")


async def _unknown_recipients(store: Store, slug: str, lowered: list[str], given: list[str]) -> BrokerError:
    by_lower = {name.lower(): name for name in given}
    names = [by_lower.get(n, n) for n in lowered]
    human_key, registered = await store.project_agents(slug)
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
        f"'{human_key}'. Nothing was sent. Registered agents: {listing}. Fix the names, or have the "
        "recipients call register_agent first.",
        {"unknown_local": names},
    )


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
) -> dict[str, Any]:
    slug = project_slug(project_key)
    topic = check_topic(topic)
    sender = validate_name(sender_name, "sender_name")
    to_names = recipient_names(to, "to")
    cc_names, bcc_names = recipient_names(cc, "cc"), recipient_names(bcc, "bcc")
    if broadcast and to_names:
        raise BrokerError("INVALID_ARGUMENT", "broadcast=True sends to every active agent; pass to=[] with it.")
    total = len(to_names) + len(cc_names) + len(bcc_names)
    if not broadcast and total == 0:
        raise BrokerError(
            "INVALID_ARGUMENT", "send_message needs at least one recipient in to, cc or bcc (or broadcast=True)."
        )
    check_recipient_count(store, total)
    check_text(store, subject, body_md)
    auth = store.bindings.args(slug, sender, sender_token)
    return await _deliver(
        store,
        slug,
        project_key,
        sender,
        auth,
        to_names,
        cc_names,
        bcc_names,
        subject,
        body_md,
        check_importance(importance),
        ack_required,
        check_thread_id(thread_id),
        topic,
        broadcast,
    )


async def _visible_message(
    store: Store, slug: str, project_key: str, viewer: str, auth: tuple[str, str], message_id: int, token_param: str
) -> list[Any]:
    keys = store.keys
    reply = await store.run(
        "get_message", [keys.project(slug), keys.agents(slug)], [keys.project_prefix(slug), viewer, *auth, message_id]
    )
    if reply[0] == "NO_MESSAGE":
        raise await store.message_not_found(slug, message_id, viewer)
    if reply[0] != "ok":
        await store.raise_for(reply, slug, project_key, token_param)
    return reply


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
) -> dict[str, Any]:
    slug = project_slug(project_key)
    sender = validate_name(sender_name, "sender_name")
    to_given = recipient_names(to, "to")
    cc_names, bcc_names = recipient_names(cc, "cc"), recipient_names(bcc, "bcc")
    check_recipient_count(store, len(to_given) + len(cc_names) + len(bcc_names))
    prefix = (subject_prefix or "").strip()
    if len(prefix) > MAX_SUBJECT_PREFIX_CHARS:
        raise BrokerError("INVALID_ARGUMENT", f"subject_prefix is longer than {MAX_SUBJECT_PREFIX_CHARS} characters.")
    check_text(store, "", body_md)
    auth = store.bindings.args(slug, sender, sender_token)
    reply = await _visible_message(store, slug, project_key, sender, auth, message_id, "sender_token")
    original, recipients, me = json.loads(reply[1]), json.loads(reply[2]), reply[4]
    thread_key = original["thread_id"] or str(original["id"])
    subject = original["subject"]
    if prefix and not subject.lower().startswith(prefix.lower()):
        subject = f"{prefix} {subject}".strip()
    # The subject is derived, not given: a prefix that pushes it past the limit is cut off.
    subject = subject[: store.settings.max_subject_chars]
    to_names = to_given or (recipients["to"] if reply[3] == me.lower() else [original["from"]])
    result = await _deliver(
        store,
        slug,
        project_key,
        me,
        auth,
        to_names,
        cc_names,
        bcc_names,
        subject,
        body_md,
        original["importance"],
        original["ack_required"],
        thread_key,
        original["topic"] or "",
        False,
    )
    first = result["deliveries"][0]["payload"] if result["deliveries"] else {}
    return {**first, "thread_id": thread_key, "reply_to": message_id, **result}


# -- reading ------------------------------------------------------------------------------
