"""A script's refusal: its error code and what it named, raised by the typed commands of broker/store."""

from __future__ import annotations


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
