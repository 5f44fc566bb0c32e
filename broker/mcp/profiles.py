"""Tool profiles: which registered tools a server keeps (TOOLS_FILTER_* settings, the
reference's §3.10), so an agent can load a short tool list and save context.

Applied once, after every tool module has registered its tools (``broker.mcp.server.assemble``). Names are
checked against broker/mcp/catalog.py: an unknown profile, mode, cluster or tool name stops
the server at startup (the reference ignores them silently).
"""

from __future__ import annotations

from collections.abc import Iterable

from broker.config import Settings
from broker.mcp.catalog import CLUSTERS, KNOWN_CLUSTERS, TOOL_CLUSTER

PROFILES = ("full", "core", "minimal", "messaging", "custom")
MODES = ("include", "exclude")
BASE_TOOLS = ("health_check", "ensure_project")
PRESETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # profile: (clusters, extra tools)
    "core": (("identity", "messaging", "file_reservations", "workflow_macros"), BASE_TOOLS),
    "minimal": ((), (*BASE_TOOLS, "register_agent", "send_message", "fetch_inbox", "acknowledge_message")),
    "messaging": (("identity", "messaging", "contact"), (*BASE_TOOLS, "search_messages")),
}


class ProfileError(ValueError):
    """A TOOLS_FILTER_* setting names something that does not exist."""


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _check(names: Iterable[str], known: Iterable[str], setting: str, what: str) -> None:
    known = list(known)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ProfileError(
            f"{setting} names unknown {what} {', '.join(repr(n) for n in unknown)}; known {what}s: {', '.join(known)}."
        )


def describe(settings: Settings) -> str:
    """The settings that decide the profile, as an operator would write them."""
    text = f"TOOLS_FILTER_ENABLED=true, TOOLS_FILTER_PROFILE={settings.tools_filter_profile}"
    if settings.tools_filter_profile == "custom":
        text += (
            f", TOOLS_FILTER_MODE={settings.tools_filter_mode}, TOOLS_FILTER_CLUSTERS="
            f"'{settings.tools_filter_clusters}', TOOLS_FILTER_TOOLS='{settings.tools_filter_tools}'"
        )
    return text


def enabled_tools(settings: Settings, registered: Iterable[str]) -> set[str]:
    """The registered tools the settings keep. Raises ProfileError for an unknown name."""
    registered = set(registered)
    if not settings.tools_filter_enabled:
        return registered
    profile = settings.tools_filter_profile.strip().lower()
    _check([profile], PROFILES, "TOOLS_FILTER_PROFILE", "profile")
    if profile == "full":
        return registered
    if profile == "custom":
        mode = settings.tools_filter_mode.strip().lower()
        _check([mode], MODES, "TOOLS_FILTER_MODE", "mode")
        clusters, tools = _csv(settings.tools_filter_clusters), _csv(settings.tools_filter_tools)
        _check(clusters, KNOWN_CLUSTERS, "TOOLS_FILTER_CLUSTERS", "cluster")
        _check(tools, TOOL_CLUSTER, "TOOLS_FILTER_TOOLS", "tool")
    else:
        mode = "include"
        clusters, tools = list(PRESETS[profile][0]), list(PRESETS[profile][1])
    named = {tool for cluster in clusters for tool in CLUSTERS.get(cluster, ())} | set(tools)
    return registered & named if mode == "include" else registered - named
