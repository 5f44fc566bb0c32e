"""Notices to the calling client: an MCP log message (level warning) for a call that succeeded
with an adjustment, such as a name replaced by a generated one or a TTL raised to the minimum.
The reference sends these as log messages too (``ctx.info("[warn] ...")``); results keep their
shape, and the tools that adjust a value also say so in the result (``warnings``)."""

from __future__ import annotations

import warnings

from fastmcp.server.dependencies import get_context

# MCP 2026-07-28 deprecates the logging capability; FastMCP still delivers log messages, and these
# notices are sent on purpose (the reference's clients read them), so the SDK's reminder is noise.
warnings.filterwarnings("ignore", message="The logging capability is deprecated", module=r"fastmcp\.server\.context")


async def warn(message: str) -> None:
    """Send ``message`` to the client of the current call (nothing outside a call)."""
    try:
        ctx = get_context()
    except RuntimeError:
        return
    await ctx.warning(message, logger_name="agent-broker")


async def warn_all(result: object) -> None:
    """Send each of a result's ``warnings`` (and those of a nested ``file_reservations``)."""
    if not isinstance(result, dict):
        return
    nested = result.get("file_reservations")
    for message in [*result.get("warnings", []), *(nested.get("warnings", []) if isinstance(nested, dict) else [])]:
        await warn(message)


async def warn_renamed(requested: str | None, registered: str) -> None:
    """Say so when a requested name was not used (AGENT_NAME_ENFORCEMENT_MODE=coerce or
    always_auto, or a taken name_hint): the result carries the registered name only, as the
    reference's does."""
    if requested and requested.strip() and requested.strip().lower() != registered.lower():
        await warn(
            f"The name '{requested.strip()}' was not used (not a valid agent name, or taken); the agent is "
            f"registered as '{registered}'. Use that name from now on."
        )
