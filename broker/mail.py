"""Messaging: send, reply, inbox, topics, read and acknowledgement state.

Each call is one Lua script (reply: two), so a send is stored and delivered to every
recipient atomically, and an inbox page is built inside Redis as ready JSON.
"""

from __future__ import annotations

import difflib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.auth import check_token
from broker.errors import BrokerError
from broker.identity import project_slug
from broker.names import mistake_hint, validate_name
from broker.store import Store

THREAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
IMPORTANCE = ("low", "normal", "high", "urgent")
MAX_LIMIT = 1000
BROADCAST_ACTIVE_DAYS = 30
# Bodies up to this size are copied into each inbox entry so a page with bodies is one read;
# larger ones are read from the project's bodies hash.
INLINE_BODY_BYTES = 2048
# A broadcast reaches at most this many agents (it bounds the send script's work).
MAX_BROADCAST_RECIPIENTS = 1000
MAX_SUBJECT_PREFIX_CHARS = 32


# -- validation ---------------------------------------------------------------------------
def check_thread_id(thread_id: str | None) -> str:
    if thread_id is None or not thread_id.strip():
        return ""
    thread_id = thread_id.strip()
    if not THREAD_ID.match(thread_id):
        raise BrokerError(
            "INVALID_THREAD_ID",
            f"thread_id '{thread_id}' is invalid: start with a letter or digit, then letters, digits "
            "or '._-', at most 128 characters (e.g. 'FEAT-123' or 'bd-42').",
        )
    return thread_id


def check_topic(topic: str | None) -> str:
    if topic is None or not topic.strip():
        return ""
    topic = topic.strip()
    if not TOPIC.match(topic):
        raise BrokerError(
            "INVALID_TOPIC",
            f"topic '{topic}' is invalid: use 1-64 letters, digits, '_' or '-' (e.g. 'build-status').",
        )
    return topic


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise BrokerError("INVALID_LIMIT", f"limit must be between 1 and {MAX_LIMIT}, got {limit}.")
    return limit


def since_micros(since_ts: str | None) -> str:
    """Epoch microseconds of an ISO-8601 timestamp (Z allowed, naive = UTC), "" for none."""
    if since_ts is None or not since_ts.strip():
        return ""
    try:
        moment = datetime.fromisoformat(since_ts.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BrokerError(
            "INVALID_TIMESTAMP",
            f"since_ts '{since_ts}' is not an ISO-8601 timestamp; use e.g. '2025-01-01T00:00:00Z'.",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return str((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)


def _recipient_names(value: list[str] | None, field: str) -> list[str]:
    if value is None:
        return []
    return [validate_name(name, f"recipient in '{field}'") for name in value]


def _check_text(store: Store, subject: str, body_md: str) -> None:
    limit = store.settings.max_subject_chars
    if len(subject) > limit:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"subject has {len(subject)} characters; the limit is {limit}. Shorten it and put details in body_md.",
        )
    size = len(body_md.encode())
    if size > store.settings.max_body_bytes:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"body_md is {size} bytes; the limit is "
            f"{store.settings.max_body_bytes}. Split it or link to a file in the repository.",
        )


def _check_recipient_count(store: Store, total: int) -> None:
    if total > store.settings.max_recipients:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"{total} recipients exceed the limit of {store.settings.max_recipients}; "
            "use broadcast=True or split the send.",
        )


def _check_importance(importance: str) -> str:
    if importance not in IMPORTANCE:
        raise BrokerError("INVALID_ARGUMENT", f"importance '{importance}' is not one of {', '.join(IMPORTANCE)}.")
    return importance


# -- sending ------------------------------------------------------------------------------
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
    to_names = _recipient_names(to, "to")
    cc_names, bcc_names = _recipient_names(cc, "cc"), _recipient_names(bcc, "bcc")
    if broadcast and to_names:
        raise BrokerError("INVALID_ARGUMENT", "broadcast=True sends to every active agent; pass to=[] with it.")
    total = len(to_names) + len(cc_names) + len(bcc_names)
    if not broadcast and total == 0:
        raise BrokerError(
            "INVALID_ARGUMENT", "send_message needs at least one recipient in to, cc or bcc (or broadcast=True)."
        )
    _check_recipient_count(store, total)
    _check_text(store, subject, body_md)
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
        _check_importance(importance),
        ack_required,
        check_thread_id(thread_id),
        topic,
        broadcast,
    )


async def _message_not_found(store: Store, slug: str, message_id: int, viewer: str) -> BrokerError:
    human_key = await store.redis.hget(store.keys.project(slug), "human_key")
    return BrokerError(
        "NOT_FOUND",
        f"Message '{message_id}' not found or not visible to agent '{viewer}' "
        f"in project '{human_key}'. Check the id with fetch_inbox.",
    )


async def _visible_message(
    store: Store, slug: str, project_key: str, viewer: str, auth: tuple[str, str], message_id: int, token_param: str
) -> list[Any]:
    keys = store.keys
    reply = await store.run(
        "get_message", [keys.project(slug), keys.agents(slug)], [keys.project_prefix(slug), viewer, *auth, message_id]
    )
    if reply[0] == "NO_MESSAGE":
        raise await _message_not_found(store, slug, message_id, viewer)
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
    to_given = _recipient_names(to, "to")
    cc_names, bcc_names = _recipient_names(cc, "cc"), _recipient_names(bcc, "bcc")
    _check_recipient_count(store, len(to_given) + len(cc_names) + len(bcc_names))
    prefix = (subject_prefix or "").strip()
    if len(prefix) > MAX_SUBJECT_PREFIX_CHARS:
        raise BrokerError("INVALID_ARGUMENT", f"subject_prefix is longer than {MAX_SUBJECT_PREFIX_CHARS} characters.")
    _check_text(store, "", body_md)
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
async def fetch_inbox(
    store: Store,
    project_key: str,
    agent_name: str,
    limit: int,
    urgent_only: bool,
    include_bodies: bool,
    since_ts: str | None,
    topic: str | None,
    registration_token: str | None,
) -> list[dict[str, Any]]:
    """The agent's inbox, newest first; read-only.

    Unfiltered (or since-only) pages skip Lua: copying stream entries into Lua tables costs
    more than the whole read, while one XREVRANGE of entries that carry their item JSON and
    small body is cheap. Stream ids are the server's millisecond clock, the same clock that
    stamps created_ts, so ``since_ts`` bounds the range and no page is ever scanned twice.
    The agent record is read in the same round trip only when a token must be checked;
    otherwise only an empty page needs it (to tell "no mail" from "no such agent").
    Urgent and topic filters read the per-agent indexes in one script instead."""
    slug = project_slug(project_key)
    name = validate_name(agent_name)
    check_limit(limit)
    since = since_micros(since_ts)
    topic = check_topic(topic).lower()
    keys = store.keys
    digest, require = store.bindings.args(slug, name, registration_token)
    if urgent_only or topic:
        reply = await store.run(
            "fetch_inbox_indexed",
            [keys.project(slug), keys.agents(slug)],
            [keys.project_prefix(slug), name, digest, require, limit, since, "1" if urgent_only else "0", topic,
             "1" if include_bodies else "0"],
        )  # fmt: skip
        if reply[0] != "ok":
            await store.raise_for(reply, slug, project_key)
        if digest:
            store.bindings.bind(slug, name)
        return json.loads(reply[1])

    lower = name.lower()
    inbox = keys.inbox(slug, lower)
    oldest = str(int(since) // 1000) if since else "-"
    if digest or require == "1":
        pipe = store.redis.pipeline(transaction=False)
        pipe.hget(keys.agents(slug), lower)
        pipe.xrevrange(inbox, min=oldest, count=limit)
        record, entries = await pipe.execute()
        await _check_reader(store, slug, project_key, name, record, digest, require)
        store.bindings.bind(slug, name)
    else:
        entries = await store.redis.xrevrange(inbox, min=oldest, count=limit)
        if not entries:
            record = await store.redis.hget(keys.agents(slug), lower)
            await _check_reader(store, slug, project_key, name, record, digest, require)
    selected = [fields for _entry_id, fields in entries]
    if since:
        # Only entries of the boundary millisecond can be too old; they are the last ones.
        cutoff = int(since)
        while selected and int(selected[-1]["f"].split("|", 1)[0]) <= cutoff:
            selected.pop()

    # One parse of the joined items is about twice as fast as a parse per item.
    items = json.loads("[" + ",".join([fields["j"] for fields in selected]) + "]")
    if include_bodies:
        large = [fields["m"] for fields in selected if "b" not in fields]
        stored = dict(zip(large, await store.redis.hmget(keys.bodies(slug), large), strict=True)) if large else {}
        for item, fields in zip(items, selected, strict=True):
            body = fields.get("b")
            item["body_md"] = body if body is not None else (stored.get(fields["m"]) or "")
    return items


async def _check_reader(
    store: Store, slug: str, project_key: str, name: str, record: str | None, digest: str, require: str
) -> None:
    if record is None:
        await store.raise_for(await store.missing_agent_reply(slug, name), slug, project_key)
    failure = check_token(json.loads(record), digest, require)
    if failure:
        await store.raise_for([failure, name], slug, project_key)


def _viewer(store: Store, slug: str, agent_name: str | None, action: str, project_key: str) -> str:
    if agent_name:
        return validate_name(agent_name)
    current = store.bindings.current_agent(slug)
    if current:
        return current
    raise BrokerError(
        "AUTHENTICATION_REQUIRED",
        f"{action} requires an authenticated agent for project '{project_key}'. Provide agent_name plus "
        "registration_token, or authenticate in this session first.",
    )


async def fetch_topic(
    store: Store,
    project_key: str,
    topic_name: str,
    limit: int,
    include_bodies: bool,
    since_ts: str | None,
    agent_name: str | None,
    registration_token: str | None,
) -> list[dict[str, Any]]:
    slug = project_slug(project_key)
    if not topic_name or not topic_name.strip():
        raise BrokerError("INVALID_ARGUMENT", "topic_name is empty. Pass the topic to read, e.g. 'build-status'.")
    topic = check_topic(topic_name)
    check_limit(limit)
    since = since_micros(since_ts)
    viewer = _viewer(store, slug, agent_name, "fetch_topic", project_key)
    keys = store.keys
    auth = store.bindings.args(slug, viewer, registration_token)
    reply = await store.run(
        "fetch_topic",
        [keys.project(slug), keys.agents(slug)],
        [
            keys.project_prefix(slug),
            viewer,
            *auth,
            topic.lower(),
            limit,
            since,
            "1" if include_bodies else "0",
        ],
    )
    if reply[0] != "ok":
        await store.raise_for(reply, slug, project_key)
    if auth[0]:
        store.bindings.bind(slug, viewer)
    return json.loads(reply[1])


async def mark_message(
    store: Store,
    project_key: str,
    agent_name: str,
    message_id: int,
    registration_token: str | None,
    mode: str,
) -> dict[str, Any]:
    slug = project_slug(project_key)
    name = validate_name(agent_name)
    keys = store.keys
    auth = store.bindings.args(slug, name, registration_token)
    reply = await store.run(
        "mark_message",
        [keys.project(slug), keys.agents(slug), keys.pending(slug)],
        [keys.project_prefix(slug), name, *auth, message_id, mode],
    )
    if reply[0] == "NO_MESSAGE":
        raise await _message_not_found(store, slug, message_id, name)
    if reply[0] != "ok":
        await store.raise_for(reply, slug, project_key)
    if auth[0]:
        store.bindings.bind(slug, name)
    read_at, ack_at = reply[1] or None, reply[2] or None
    if mode == "read":
        return {"message_id": message_id, "read": read_at is not None, "read_at": read_at}
    return {"message_id": message_id, "acknowledged": ack_at is not None, "acknowledged_at": ack_at, "read_at": read_at}
