"""Window identities (§3.2, §5.2): a terminal window that sets MCP_AGENT_MAIL_WINDOW_ID (a UUID)
keeps one agent name across sessions. Stored per project in Redis (``windows`` hash, see
broker/store/keys.py); a window expires MCP_AGENT_MAIL_WINDOW_TTL_DAYS after its last registration.
Not persisted to the index or archive."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.names import is_generated_shape
from broker.identity.projects import project_slug
from broker.store.commands import identity as identity_store
from broker.store.refusals import Refusal
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


def _ttl_us(store: Store) -> int:
    return store.settings.window_ttl_days * 86400 * 1_000_000


async def _refused(store: Store, refusal: Refusal, slug: str, project_key: str, window: str = "") -> BrokerError:
    """The coded error of window.lua's refusal (a missing project raises its own)."""
    if refusal.code == "NOT_FOUND":
        return BrokerError(
            "WINDOW_NOT_FOUND",
            f"No live window identity '{window}' in project '{project_key}'; list_window_identities shows them.",
        )
    await refusals.raise_for(store, refusal.reply, slug, project_key)


def _shown(window: dict[str, Any]) -> dict[str, Any]:
    return {key: window.get(key) for key in PUBLIC}


async def list_window_identities(store: Store, project_key: str) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    try:
        live = await identity_store.live_windows(store, slug=slug)
    except Refusal as refusal:
        raise await _refused(store, refusal, slug, project_key) from None
    now = datetime.now(UTC)
    identities = []
    for window in sorted(live, key=lambda w: w["id"]):
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
    try:
        change = await identity_store.rename_window(store, slug=slug, window_uuid=window, display_name=name)
    except Refusal as refusal:
        raise await _refused(store, refusal, slug, project_key, window) from None
    shown = _shown(change.window)
    return {
        "id": shown["id"],
        "window_uuid": window,
        "display_name": shown["display_name"],
        "old_display_name": change.old_display_name,
        "last_active_ts": shown["last_active_ts"],
    }


async def expire_window(store: Store, project_key: str, window_uuid: str) -> dict[str, Any]:
    slug = await project_slug(store, project_key)
    window = check_uuid(window_uuid)
    try:
        change = await identity_store.expire_window(store, slug=slug, window_uuid=window)
    except Refusal as refusal:
        raise await _refused(store, refusal, slug, project_key, window) from None
    shown = _shown(change.window)
    return {
        "window_uuid": window,
        "display_name": shown["display_name"],
        "expired": True,
        "expired_at": shown["expires_ts"],
    }


async def window_name(store: Store, slug: str, project_key: str, window: str) -> str | None:
    """The name a live window identity holds (its activity refreshed), or None."""
    try:
        change = await identity_store.touch_window(store, slug=slug, window_uuid=window, ttl_us=_ttl_us(store))
    except Refusal as refusal:
        if refusal.code == "NOT_FOUND":
            return None
        raise await _refused(store, refusal, slug, project_key, window) from None
    return change.window["display_name"]


async def bind_window(store: Store, slug: str, project_key: str, window: str, name: str) -> str:
    try:
        change = await identity_store.bind_window(
            store, slug=slug, window_uuid=window, display_name=name, ttl_us=_ttl_us(store)
        )
    except Refusal as refusal:
        raise await _refused(store, refusal, slug, project_key, window) from None
    return change.window["display_name"]
