"""Recipient addresses and which project each recipient lives in.

A recipient is a bare agent name (an agent of the sender's project, or one of another project
the sender has an approved, unexpired contact link with), ``project:<slug-or-human_key>#Name``
or ``Name@<slug-or-human_key>``. A send becomes one delivery per target project.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.errors import BrokerError
from broker.identity.names import validate_name
from broker.identity.projects import project_slug
from broker.store.commands import mail as store_mail
from broker.store.store import Store


@dataclass(frozen=True)
class Address:
    name: str
    project_key: str | None = None  # None: the sender's project


@dataclass
class Group:
    """The recipients of one target project, by kind."""

    slug: str
    project_key: str
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)

    def add(self, kind: str, name: str) -> None:
        getattr(self, kind).append(name)


def address_of(slug: str, name: str, here: str) -> str:
    """How an agent of project ``slug`` is addressed from project ``here``: its bare name at home,
    ``project:<slug>#<name>`` (the reference's cross-project form, what parse_address reads) elsewhere."""
    return name if slug == here else f"project:{slug}#{name}"


def parse_address(raw: object, where: str) -> Address:
    """A recipient as given: bare name, ``project:<key>#Name`` or ``Name@<key>``."""
    if not isinstance(raw, str):
        validate_name(raw, f"recipient in '{where}'")
    text = str(raw).strip()
    project = None
    if text.lower().startswith("project:") and "#" in text:
        project, _, text = text[len("project:") :].rpartition("#")
    elif "@" in text:
        text, _, project = text.partition("@")
    if project is not None and not project.strip():
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"Recipient '{raw}' in '{where}' names no project; write 'project:<slug>#Name' or 'Name@<slug>'.",
        )
    name = validate_name(text, f"recipient in '{where}'")
    return Address(name, project.strip() if project else None)


def parse_recipients(value: list[str] | None, where: str) -> list[Address]:
    return [parse_address(raw, where) for raw in value or []]


async def group_by_project(
    store: Store, sender_slug: str, project_key: str, kinds: dict[str, list[Address]]
) -> dict[str, Group]:
    """Recipients grouped by target project; the sender's project first."""
    groups: dict[str, Group] = {sender_slug: Group(sender_slug, project_key)}
    for kind, addresses in kinds.items():
        for address in addresses:
            slug = sender_slug if address.project_key is None else await project_slug(store, address.project_key)
            group = groups.setdefault(slug, Group(slug, address.project_key or project_key))
            group.add(kind, address.name)
    return groups


async def linked_agents(store: Store, slug: str, name: str) -> dict[str, tuple[str, str]]:
    """Agents of other projects that ``name`` has an approved, unexpired link with (either
    direction): lower name -> (slug, name), the most recently updated link winning."""
    snapshot = await store_mail.contact_links(store, slug=slug, name=name)
    now_us = snapshot.now_us
    found: dict[str, tuple[str, str, int]] = {}
    for link in snapshot.links:
        if link.status != "approved" or link.expires_us is None or link.expires_us <= now_us:
            continue
        if link.requester_slug == slug and link.requester.lower() == name.lower():
            other_slug, other_name = link.target_slug, link.target
        else:
            other_slug, other_name = link.requester_slug, link.requester
        if other_slug == slug:
            continue
        lower = other_name.lower()
        if lower not in found or found[lower][2] < link.updated_us:
            found[lower] = (other_slug, other_name, link.updated_us)
    return {lower: (s, n) for lower, (s, n, _) in found.items()}
