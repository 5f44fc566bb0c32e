"""What a send carries into each target project: the message (Outgoing) and who sends it (Sender)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Outgoing:
    """What is sent, the same in every target project."""

    subject: str
    body_md: str
    importance: str
    ack_required: bool
    thread_id: str
    topic: str
    # metadata of its attachments (broker/mail/attachments.py); their files are staged on disk
    attachments: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Sender:
    slug: str
    project_key: str
    name: str
    auth: tuple[str, str]
    # the human overseer (broker/web/): its mail passes every contact policy, as in the reference
    overseer: bool = False
