"""What a send carries into each target project: the message (Outgoing) and who sends it (Sender)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outgoing:
    """What is sent, the same in every target project."""

    subject: str
    body_md: str
    importance: str
    ack_required: bool
    thread_id: str
    topic: str


@dataclass(frozen=True)
class Sender:
    slug: str
    project_key: str
    name: str
    auth: tuple[str, str]
