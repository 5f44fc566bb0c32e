"""The MCP facade: FastMCP tools with the reference's names, arguments and result keys.

Thin by design: each tool validates through its domain module and shapes the result.
``build_server()`` returns a new server each call; all state is in Redis, so servers built
in one process (or in many processes) share it.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions as redis
from fastmcp import FastMCP
from fastmcp.exceptions import ToolError, ValidationError

from broker.config import Settings, get_settings
from broker.embedded import resolve_redis_url
from broker.errors import BrokerError
from broker.store import Store
from broker.tools import contacts as contact_tools
from broker.tools import history as history_tools
from broker.tools import identity as identity_tools
from broker.tools import messaging as messaging_tools
from broker.tools import realtime as realtime_tools
from broker.tools import reservations as reservation_tools

TOOL_MODULES = (identity_tools, messaging_tools, reservation_tools, realtime_tools, history_tools, contact_tools)

INSTRUCTIONS = (
    "Coordination broker for coding agents sharing a repository: register an identity "
    "(register_agent), exchange threaded mail (send_message, reply_message, fetch_inbox), "
    "and acknowledge requests. Project keys are absolute repository paths."
)


class BrokerMCP(FastMCP):
    """FastMCP whose every failure reaches the client as ``CODE: what happened. remedy``:
    argument type errors become INVALID_ARGUMENT, and unexpected exceptions (which FastMCP
    wraps as "Error calling tool ...") get a code too. An override rather than a middleware,
    because the middleware chain costs every call."""

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        try:
            return await super().call_tool(name, arguments, **kwargs)
        except ValidationError as exc:
            cause = exc.__cause__
            detail = str(exc)
            if cause is not None and hasattr(cause, "errors"):
                detail = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in cause.errors())
            raise BrokerError(
                "INVALID_ARGUMENT",
                f"{detail}. Check the argument names and types in the tool's schema.",
            ) from exc
        except ToolError as exc:
            if isinstance(exc, BrokerError) or exc.__cause__ is None:
                raise
            raise unexpected_error(exc.__cause__) from exc


def unexpected_error(exc: BaseException) -> BrokerError:
    if isinstance(exc, UnicodeError):
        return BrokerError("INVALID_ARGUMENT", f"Text is not valid Unicode ({exc.reason}); send UTF-8 text.")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return BrokerError(
            "CONNECTION_ERROR", f"Redis is unreachable ({exc}). Check REDIS_URL and that the Redis server runs."
        )
    if isinstance(exc, redis.RedisError):
        return BrokerError("INTERNAL_ERROR", f"Redis refused an operation ({exc}). Please report this.")
    return BrokerError("UNHANDLED_EXCEPTION", f"Unexpected error ({type(exc).__name__}): {exc}. Please report this.")


def build_server(settings: Settings | None = None, *, agent_auth: str | None = None) -> FastMCP:
    settings = settings or get_settings()
    redis_url, backend = resolve_redis_url(settings.redis_url, settings.storage_root)
    store = Store(settings, redis_url, agent_auth)
    mcp = BrokerMCP("agent-broker", instructions=INSTRUCTIONS)
    mcp.store = store  # type: ignore[attr-defined]  # for the HTTP layer and tests
    mcp.backend_description = backend  # type: ignore[attr-defined]

    for module in TOOL_MODULES:
        module.register(mcp, store, settings, backend)
    return mcp
