"""A script's refusal: its error code and what it named, raised by the typed commands of broker/store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Refusal(Exception):
    """An error reply of a Lua script (NO_PROJECT, NO_AGENT, PROJECT_ARCHIVED, BAD_TOKEN, AUTH_REQUIRED, ...)."""

    def __init__(self, code: str, *details: str) -> None:
        super().__init__(code, *details)
        self.code = code
        self.details = details

    @property
    def reply(self) -> list[str]:
        """The script's reply as it was (for broker.identity.refusals.raise_for)."""
        return [self.code, *self.details]


def refusal(reply: Sequence[Any]) -> Refusal:
    """The Refusal of a script's error reply, its parts as text."""
    return Refusal(*(str(part) for part in reply))


def accepted(reply: list[Any]) -> list[Any]:
    """The reply of a script that answered "ok"; raises its Refusal otherwise."""
    if reply[0] != "ok":
        raise refusal(reply)
    return reply
