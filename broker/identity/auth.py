"""Agent authentication: registration tokens and MCP-session binding (docs/architecture.md, decision 7).

Scripts compare SHA-256 digests of tokens (Lua cannot compare in constant time; comparing
digests of a secret leaks nothing an attacker can use). Under ``required`` auth a call
without a token passes only if this MCP session already authenticated as that agent.
Bindings live in this process, keyed by the MCP session id, as in the reference.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict

from fastmcp.server.dependencies import get_context

from broker.errors import BrokerError


def new_token() -> str:
    return secrets.token_urlsafe(32)


MAX_TOKEN_CHARS = 256  # issued tokens have 43; anything far longer is not one of ours


def token_hash(token: str | None) -> str:
    if not token:
        return ""
    if len(token) > MAX_TOKEN_CHARS:
        raise BrokerError(
            "AUTHENTICATION_FAILED",
            f"The token passed has {len(token)} characters; registration tokens have 43. Pass the "
            "registration_token that register_agent returned.",
        )
    return hashlib.sha256(token.encode()).hexdigest()


def check_token(agent: dict, digest: str, require: str) -> str | None:
    """The error code for a token check, or None. Mirrors auth_error() in scripts/lib/common.lua,
    used by read paths that run without a script."""
    if digest:
        return None if hmac.compare_digest(agent["token_hash"], digest) else "BAD_TOKEN"
    return "AUTH_REQUIRED" if require == "1" else None


def session_id() -> str | None:
    """The current MCP session's id if it outlives one request, else None.

    On 2026-07-28 connections every request is its own session, so binding to its id would
    only fill memory; such clients pass their token on each call instead."""
    try:
        ctx = get_context()
        is_modern = getattr(ctx, "_is_modern_protocol", None)
        if is_modern is not None and is_modern():
            return None
        return ctx.session_id
    except RuntimeError:
        return None


class SessionBindings:
    """Which (project, agent) pairs each MCP session has authenticated as, with a TTL.
    Bounded: past ``max_entries`` the least recently bound entries are forgotten."""

    def __init__(self, mode: str, ttl_seconds: int, max_entries: int = 50_000) -> None:
        self.mode = mode
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._bound: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._current: OrderedDict[tuple[str, str], str] = OrderedDict()

    def current_agent(self, slug: str) -> str | None:
        """The agent this session last authenticated as in the project, if any."""
        sid = session_id()
        return self._current.get((sid, slug)) if sid else None

    def is_bound(self, slug: str, name: str) -> bool:
        """Whether this MCP session proved it is the agent (a token check passed), whatever the mode."""
        sid = session_id()
        expiry = self._bound.get((sid, slug, name.lower())) if sid else None
        return bool(expiry and expiry > time.monotonic())

    def args(self, slug: str, name: str, token: str | None) -> tuple[str, str]:
        """Script arguments (token digest, "1" if a token is required) for one call."""
        digest = token_hash(token)
        if digest or self.mode == "open":
            return digest, "0"
        sid = session_id()
        expiry = self._bound.get((sid, slug, name.lower())) if sid else None
        return "", "0" if expiry and expiry > time.monotonic() else "1"

    def bind(self, slug: str, name: str) -> None:
        sid = session_id()
        if not sid:
            return
        key = (sid, slug, name.lower())
        self._bound[key] = time.monotonic() + self.ttl
        self._bound.move_to_end(key)
        self._current[(sid, slug)] = name
        self._current.move_to_end((sid, slug))
        for table in (self._bound, self._current):
            while len(table) > self.max_entries:
                table.popitem(last=False)
