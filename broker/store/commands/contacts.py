"""Contact links in Redis: the typed commands of broker/mail/contacts.py and the contact macros.

Holds the contact scripts (contact_request, contact_respond, link_put, list_links,
set_contact_policy; link_forget runs with the hard deletes in broker/store/commands/erase.py)
and the identity a sender proves in its own project before it writes into another one
(identity's get_agent / sender_pass with the project's human_key, as ``authenticated_identity``;
the plain agent read ``known_agent``).

A link A->B (A asked to write to B) is kept in both endpoints' projects (layout in
broker/scripts/lib/contacts.lua); ``Link`` is one copy, decoded, with the JSON it was stored as
(``raw``) so the other project's copy is written from the very same record. A script's error
reply is raised as ``Refusal``; a command that wrote something schedules the project's
persistence drain itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from broker.store.commands.agent_record import decode_agent
from broker.store.commands.identity import get_agent, sender_pass
from broker.store.keys import is_outgoing_link
from broker.store.luajson import INLINE_BODY_BYTES
from broker.store.refusals import Refusal, accepted
from broker.store.store import Store

# The requester identity the scripts take from another project (``foreign`` in
# lib/contacts.lua's resolve_sender): {name, id, project_id, slug, human_key}.
ForeignAgent = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """An agent with its project's identity: what a script of another project takes as ``foreign``."""

    name: str
    id: int
    project_id: int
    slug: str
    human_key: str | None

    def as_dict(self) -> dict[str, Any]:
        """The identity as the scripts' ``foreign`` JSON object (and as the mail code passes it on)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Link:
    """One copy of the contact link requester -> target (lib/contacts.lua's link JSON)."""

    requester: str  # a: the agent that asked to write
    requester_project: str  # a_hk: its project's human_key
    requester_slug: str
    target: str  # b: the agent it asked to write to
    target_project: str  # b_hk
    target_slug: str
    status: str  # pending | approved | blocked
    reason: str
    updated_ts: str
    updated_us: int
    expires_ts: str | None
    expires_us: int | None  # None when the link does not expire (exp_us "")
    raw: str  # the link JSON as stored

    @classmethod
    def decode(cls, raw: str) -> Link:
        link = json.loads(raw)
        expires_us = link.get("exp_us", "")
        return cls(
            requester=link["a"],
            requester_project=link["a_hk"],
            requester_slug=link["a_slug"],
            target=link["b"],
            target_project=link["b_hk"],
            target_slug=link["b_slug"],
            status=link["status"],
            reason=link.get("reason", ""),
            updated_ts=link["updated_ts"],
            updated_us=int(link["upd_us"]),
            expires_ts=link.get("expires_ts"),
            expires_us=int(expires_us) if expires_us not in ("", None) else None,
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class ContactRequested:
    """What contact_request wrote in the target's project."""

    link: Link
    intro: dict[str, Any] | None  # the intro mail's head, None when none was sent


@dataclass(frozen=True, slots=True)
class ContactResponse:
    """What contact_respond did in the responder's project."""

    link: Link | None  # None: a refusal where there was no link
    updated: int  # 1 when the link was written
    delivered_ids: tuple[int, ...]  # held messages delivered by the approval


@dataclass(frozen=True, slots=True)
class AgentLinks:
    """An agent's links as list_links read them (after checking its token)."""

    agent: str
    now_us: int  # the server's clock, for expiry
    outgoing: tuple[Link, ...]  # the links it asked for (its "out:" copies), in hash order


@dataclass(frozen=True, slots=True)
class PolicySet:
    agent: str
    policy: str


# -- identities ---------------------------------------------------------------------------


async def known_agent(store: Store, *, slug: str, name: str) -> AgentIdentity:
    """An agent of ``slug`` with its project's identity, without a token check (one round trip).
    Refusal NO_PROJECT, or NO_AGENT naming ``name``."""
    keys = store.keys
    pipe = store.client().pipeline(transaction=False)
    pipe.hmget(keys.project(slug), "id", "human_key")
    pipe.hget(keys.agents(slug), name.lower())
    (project_id, human_key), raw = await pipe.execute()
    if project_id is None:
        raise Refusal("NO_PROJECT")
    if raw is None:
        raise Refusal("NO_AGENT", name)
    agent = decode_agent(raw)
    return AgentIdentity(agent["name"], agent["id"], int(project_id), slug, human_key)


async def authenticated_identity(
    store: Store, *, slug: str, name: str, credentials: tuple[str, str], rate_spec: str = "", cost: int = 0
) -> AgentIdentity:
    """The agent, authenticated in its own project (get_agent.lua), as the identity other
    projects' scripts take. ``credentials`` is Bindings.args' (token digest, "1" if required). With
    ``cost`` the agent's own rate bucket (``rate_spec``, lib/ratelimit.lua) admits it and is
    charged that many tokens first (sender_pass.lua). Refusal NO_PROJECT, NO_AGENT, BAD_TOKEN,
    AUTH_REQUIRED, ..., or RATE_LIMITED with the milliseconds to wait (nothing charged)."""
    if cost:
        found = await sender_pass(store, slug=slug, name=name, credentials=credentials, rate_spec=rate_spec, cost=cost)
    else:
        found = await get_agent(store, slug=slug, name=name, credentials=credentials)
    agent = found.agent
    human_key = await store.client().hget(store.keys.project(slug), "human_key")
    return AgentIdentity(agent["name"], agent["id"], agent["project_id"], slug, human_key)


# -- links --------------------------------------------------------------------------------


async def contact_request(
    store: Store,
    *,
    slug: str,
    requester: str,
    credentials: tuple[str, str],
    foreign: ForeignAgent | None,
    target: str,
    reason: str,
    ttl_seconds: int,
    intro_body: str,
) -> ContactRequested:
    """Create or renew the link requester -> target in the target's project ``slug`` and send the
    intro mail when the request is new (contact_request.lua). A requester of another project comes
    as ``foreign`` (authenticated there; ``credentials`` are then not used). Refusal NO_PROJECT, NO_AGENT,
    BAD_TOKEN, AUTH_REQUIRED, PROJECT_ARCHIVED, NO_TARGET, SELF, AGENT_RETIRED or CONTACT_BLOCKED
    (name, "block_all" | "refused")."""
    keys = store.keys
    reply = await store.run(
        "contact_request",
        [keys.project(slug), keys.agents(slug), keys.active(slug), keys.pending(slug)],
        [
            keys.project_prefix(slug), keys.doorbell(slug), slug, requester, *(("", "0") if foreign else credentials),
            json.dumps(foreign) if foreign else "", target, reason, ttl_seconds, await store.next_id("message"),
            intro_body, INLINE_BODY_BYTES,
        ],
    )  # fmt: skip
    accepted(reply)
    store.schedule_persist(slug, reply[3])
    return ContactRequested(Link.decode(reply[1]), json.loads(reply[2]) if reply[2] else None)


async def contact_respond(
    store: Store,
    *,
    slug: str,
    responder: str,
    credentials: tuple[str, str],
    foreign: ForeignAgent | None,
    requester: str,
    accept: bool,
    ttl_seconds: int,
) -> ContactResponse:
    """The target ``responder`` approves or refuses the link from ``requester`` (of this project,
    or ``foreign``) in its project ``slug`` (contact_respond.lua). Refusal NO_PROJECT, NO_AGENT,
    BAD_TOKEN, AUTH_REQUIRED, PROJECT_ARCHIVED or NO_REQUESTER (name)."""
    keys = store.keys
    reply = await store.run(
        "contact_respond",
        [keys.project(slug), keys.agents(slug), keys.pending(slug)],
        [keys.project_prefix(slug), keys.doorbell(slug), slug, responder, *credentials, json.dumps(foreign) if foreign else "",
         requester, "1" if accept else "0", ttl_seconds, INLINE_BODY_BYTES],
    )  # fmt: skip
    accepted(reply)
    store.schedule_persist(slug, reply[4])
    link = Link.decode(reply[1]) if reply[1] else None
    return ContactResponse(link, int(reply[2]), tuple(json.loads(reply[3])))


async def link_put(store: Store, *, slug: str, link: Link) -> bool:
    """Write the copy of ``link`` that lives in project ``slug`` (link_put.lua); False when a newer
    version is already there (nothing written)."""
    keys = store.keys
    reply = await store.run("link_put", [keys.pending(slug)], [keys.project_prefix(slug), slug, link.raw])
    if reply[0] != "ok":
        return False
    store.schedule_persist(slug, reply[1])
    return True


async def list_links(store: Store, *, slug: str, name: str, credentials: tuple[str, str]) -> AgentLinks:
    """The links the agent asked for, read after checking its token (list_links.lua). Refusal
    NO_PROJECT, NO_AGENT, BAD_TOKEN or AUTH_REQUIRED."""
    keys = store.keys
    reply = await store.run(
        "list_links", [keys.project(slug), keys.agents(slug)], [keys.project_prefix(slug), name, *credentials]
    )
    accepted(reply)
    outgoing = tuple(
        Link.decode(raw) for field, raw in zip(reply[3::2], reply[4::2], strict=True) if is_outgoing_link(field)
    )
    return AgentLinks(reply[1], int(reply[2]), outgoing)


async def set_contact_policy(
    store: Store, *, slug: str, name: str, credentials: tuple[str, str], policy: str
) -> PolicySet:
    """Set the agent's contact policy (already checked) after checking its token
    (set_contact_policy.lua). Refusal NO_PROJECT, NO_AGENT, BAD_TOKEN or AUTH_REQUIRED."""
    keys = store.keys
    reply = await store.run(
        "set_contact_policy", [keys.project(slug), keys.agents(slug), keys.pending(slug)], [name, *credentials, policy]
    )
    accepted(reply)
    store.schedule_persist(slug, reply[3])
    return PolicySet(reply[1], reply[2])
