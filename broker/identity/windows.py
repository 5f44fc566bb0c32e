"""Window identities (§3.2, §5.2): a terminal window that sets MCP_AGENT_MAIL_WINDOW_ID (a UUID)
keeps one agent name across sessions. Stored per project in Redis (``windows`` hash, see
broker/store/keys.py); a window expires MCP_AGENT_MAIL_WINDOW_TTL_DAYS after its last registration.
Not persisted to the index or archive."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.names import is_generated_shape
from broker.identity.projects import project_slug
from broker.store.store import Store

PUBLIC = ("id", "window_uuid", "display_name", "created_ts", "last_active_ts", "expires_ts")


def check_uuid(value: object) -> str:
    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise BrokerError(
            "INVALID_WINDOW_UUID",
            f"window_uuid '{value}' is not a UUID; pass the window's id, e.g. '3f2b6c1e-8d4a-4f0e-9a51-2c7d0b9e4f11' "
            "(list_window_identities shows them).",
        ) from None


def configured_window(value: str) -> str | None:
    """The window uuid MCP_AGENT_MAIL_WINDOW_ID holds, or None (unset or not a UUID)."""
    try:
        return str(uuid.UUID(value.strip())) if value and value.strip() else None
    except ValueError:
        return None


async def _run(store: Store, slug: str, project_key: str, op: str, window: str = "", name: str = "") -> list[Any]:
    keys = store.keys
    ttl_us = store.settings.window_ttl_days * 86400 * 1_000_000
    reply = await store.run(
        "window", [keys.project(slug), keys.windows(slug), keys.window_seq(slug)], [op, window, ttl_us, name]
    )
    if reply[0] == "NOT_FOUND":
        raise BrokerError(
            "WINDOW_NOT_FOUND",
            f"No live window identity '{window}' in project '{project_key}'; list_window_identities shows them.",
        )
    if reply[0] != "ok":
        await refusals.raise_for(store, reply, slug, project_key)
    return reply


def _shown(raw: str) -> dict[str, Any]:
    window = json.loads(raw)
    return {key: window.get(key) for key in PUBLIC}


async def list_window_identities(store: Store, project_key: str) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    reply = await _run(store, slug, project_key, "list")
    now = datetime.now(UTC)
    identities = []
    for window in sorted(json.loads(reply[1]), key=lambda w: w["id"]):
        shown = {key: window.get(key) for key in PUBLIC}
        shown["age_days"] = (now - datetime.fromisoformat(window["created_ts"])).days
        identities.append(shown)
    return {"identities": identities, "count": len(identities)}


async def rename_window(store: Store, project_key: str, window_uuid: str, new_display_name: str) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    window = check_uuid(window_uuid)
    name = (new_display_name or "").strip()
    if not is_generated_shape(name):
        raise BrokerError(
            "INVALID_DISPLAY_NAME",
            f"'{new_display_name}' is not an adjective+noun name; pick one like 'BlueLake' or 'GreenCastle'.",
        )
    reply = await _run(store, slug, project_key, "rename", window, name)
    shown = _shown(reply[1])
    return {
        "id": shown["id"],
        "window_uuid": window,
        "display_name": shown["display_name"],
        "old_display_name": reply[2],
        "last_active_ts": shown["last_active_ts"],
    }


async def expire_window(store: Store, project_key: str, window_uuid: str) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    window = check_uuid(window_uuid)
    reply = await _run(store, slug, project_key, "expire", window)
    shown = _shown(reply[1])
    return {
        "window_uuid": window,
        "display_name": shown["display_name"],
        "expired": True,
        "expired_at": shown["expires_ts"],
    }


async def window_name(store: Store, slug: str, project_key: str, window: str) -> str | None:
    """The name a live window identity holds (its activity refreshed), or None."""
    try:
        reply = await _run(store, slug, project_key, "touch", window)
    except BrokerError as exc:
        if exc.code == "WINDOW_NOT_FOUND":
            return None
        raise
    return json.loads(reply[1])["display_name"]


async def bind_window(store: Store, slug: str, project_key: str, window: str, name: str) -> str:
    reply = await _run(store, slug, project_key, "bind", window, name)
    return json.loads(reply[1])["display_name"]
