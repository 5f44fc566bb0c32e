"""The MCP facade: FastMCP tools with the reference's names, arguments and result keys.

Thin by design: each tool validates through its domain module and shapes the result.
``broker.server.build_server()`` builds a new server (through ``assemble``) each call; all state is in Redis, so servers built
in one process (or in many processes) share it.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any

from fastmcp import FastMCP
from fastmcp.exceptions import ResourceError, ToolError, ValidationError
from fastmcp.tools import FunctionTool

from broker import __version__
from broker.config import Settings
from broker.errors import BrokerError
from broker.mcp import resources as resource_tools
from broker.mcp.calllog import CallLog, call_log
from broker.mcp.limits import ClientLimiter
from broker.mcp.metrics import BrokerMetrics
from broker.mcp.output import Choice, OutputFormats, accept_envelope
from broker.mcp.profiles import describe, enabled_tools
from broker.mcp.tooling import registered_tools
from broker.mcp.tools import build_slots as build_slot_tools
from broker.mcp.tools import contacts as contact_tools
from broker.mcp.tools import history as history_tools
from broker.mcp.tools import identity as identity_tools
from broker.mcp.tools import lifecycle as lifecycle_tools
from broker.mcp.tools import macros as macro_tools
from broker.mcp.tools import messaging as messaging_tools
from broker.mcp.tools import products as product_tools
from broker.mcp.tools import realtime as realtime_tools
from broker.mcp.tools import reservations as reservation_tools
from broker.mcp.usage import ToolUsage
from broker.store.errors import unexpected_error
from broker.store.store import Store

TOOL_MODULES = (
    identity_tools,
    messaging_tools,
    reservation_tools,
    realtime_tools,
    history_tools,
    lifecycle_tools,
    macro_tools,
    resource_tools,
    contact_tools,
    build_slot_tools,  # these two register nothing unless WORKTREES_ENABLED or GIT_IDENTITY_ENABLED
    product_tools,
)

INSTRUCTIONS = (
    "Coordination broker for coding agents sharing a repository: register an identity "
    "(register_agent), exchange threaded mail (send_message, reply_message, fetch_inbox), "
    "and acknowledge requests. Project keys are absolute repository paths."
)


# Parsing a tool's signature into its JSON schemas is most of what building a server costs
# (about 0.3 s for the 41 tools). Every server's tools are closures of the same functions, so a
# process that builds many servers (the test suite builds one per test) parses each one once.
_PARSED_TOOLS: dict[tuple[Any, str, str | None], FunctionTool] = {}


# The output schema FastMCP derives from a ``-> dict[str, Any]`` result: it says no more than the
# protocol does (structuredContent is an object), and every client reads the same structured
# result without it (FastMCP sends a dict result as structuredContent either way). Listing it
# cost 60 bytes a tool in every agent's context (docs/tools.md#what-the-tool-list-costs).
OPEN_OBJECT = {"additionalProperties": True, "type": "object"}


class ListedTool(FunctionTool):
    """A FunctionTool listed without FastMCP's empty bookkeeping ``_meta: {"fastmcp": {"tags": []}}``
    (this broker tags no tool; the bytes were paid in every agent's context)."""

    def to_mcp_tool(self, **overrides: Any) -> Any:
        listed = super().to_mcp_tool(**overrides)
        if listed.meta == {"fastmcp": {"tags": []}}:
            listed.meta = None
        return listed


def parsed_tool(fn: Callable[..., Any]) -> FunctionTool:
    """``fn`` as a FastMCP tool, its schemas parsed once per signature in this process."""
    key = (fn.__code__, str(inspect.signature(fn)), fn.__doc__)  # type: ignore[attr-defined]
    template = _PARSED_TOOLS.get(key)
    if template is None:
        template = ListedTool.from_function(fn)
        if template.output_schema == OPEN_OBJECT:
            template = template.model_copy(update={"output_schema": None})
        _PARSED_TOOLS[key] = template
    # deep: no server shares a schema dict with another (fn itself is not copied)
    return template.model_copy(update={"fn": fn}, deep=True)


class BrokerMCP(FastMCP):
    """FastMCP whose every failure (tool or resource) reaches the client as ``CODE: what happened. remedy``:
    argument type errors become INVALID_ARGUMENT, and unexpected exceptions (which FastMCP
    wraps as "Error calling tool ...") get a code too. It also counts tool calls for the
    tooling metrics, refuses tools a profile removed, and gives every result in the format
    asked for (``format``, broker/mcp/output.py). An override rather than a middleware,
    because the middleware chain costs every call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.usage = ToolUsage()
        # tool -> the profile settings that removed it (for the error a client gets when calling it)
        self.filtered_tools: dict[str, str] = {}
        self.metrics: BrokerMetrics | None = None
        self.call_log: CallLog | None = None
        self.client_limiter = ClientLimiter(0, 0)  # assemble() sets it from the settings
        self.output = OutputFormats()  # assemble() sets the server default from the settings
        self.format_tools: set[str] = set()  # the tools taking a ``format`` argument

    def tool(self, name_or_fn: Any = None, **kwargs: Any) -> Any:
        """``@mcp.tool`` on a plain function, with its parsed schemas reused (see parsed_tool)."""
        if inspect.isroutine(name_or_fn) and not kwargs:
            tool = parsed_tool(name_or_fn)
            accept_envelope(tool.output_schema)
            if "format" in (tool.parameters.get("properties") or {}):
                self.format_tools.add(tool.name)
            self.add_tool(tool)
            return name_or_fn
        return super().tool(name_or_fn, **kwargs)

    def resource(self, uri: str, **kwargs: Any) -> Any:
        """``@mcp.resource``, its reads given in the format asked for (``?format=``, else the
        server default); a bad format is refused before the read."""
        register = super().resource(uri, **kwargs)

        def decorate(read: Callable[..., Any]) -> Any:
            @functools.wraps(read)
            async def formatted(**arguments: Any) -> Any:
                try:
                    choice = self.output.choose(arguments.get("format"))
                except BrokerError as exc:
                    raise resource_tools.ResourceFailure(exc) from exc
                return self.output.shape(await read(**arguments), choice)

            return register(formatted)

        return decorate

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        # FastMCP calls this twice per client call: from the protocol handler, then (with
        # run_middleware=False) from the end of the middleware chain. Count the outer one.
        if not kwargs.get("run_middleware", True):
            return await self._call_tool(name, arguments, **kwargs)
        if name in self.filtered_tools:
            raise BrokerError(
                "TOOL_NOT_ENABLED",
                f"Tool '{name}' is not enabled on this server: the tool profile ({self.filtered_tools[name]}) "
                "leaves it out. Use the tools this server lists, or ask its operator to set "
                "TOOLS_FILTER_PROFILE=full (or TOOLS_FILTER_ENABLED=false) and restart it.",
            )
        counts = self.usage.started(name)
        started = time.perf_counter()
        try:
            self.client_limiter.check()
            choice = self._output_choice(name, arguments)
            result = await self._call_tool(name, arguments, **kwargs)
            if choice.format != "json":
                result = self.output.tool_result(result, choice)
        except Exception as exc:
            if counts is not None:
                counts[1] += 1
                self._observe(name, arguments, started, exc)
            raise
        if counts is not None:
            self.usage.succeeded(name, arguments)
            self._observe(name, arguments, started, None)
        return result

    def _output_choice(self, name: str, arguments: dict[str, Any] | None) -> Choice:
        """The call's format, checked before the tool runs. A tool without a ``format`` argument
        (the reference's [nf] ones) follows the server default; passing it one is refused as an
        unknown argument."""
        value = (arguments or {}).get("format") if name in self.format_tools else None
        return self.output.choose(value if isinstance(value, str) else None)

    def _observe(self, name: str, arguments: dict[str, Any] | None, started: float, exc: BaseException | None) -> None:
        """Metrics and the call log (broker/mcp/metrics.py, broker/mcp/calllog.py); only for tools the
        server registered, so a stranger's made-up names cannot grow the label set."""
        seconds = time.perf_counter() - started
        code = None if exc is None else getattr(exc, "code", None) or "UNHANDLED_EXCEPTION"
        if self.metrics is not None:
            self.metrics.observe_call(name, code, seconds)
        if self.call_log is not None:
            cause = exc.__cause__ if exc is not None and exc.__cause__ is not None else exc
            self.call_log.call(name, arguments, code, seconds, cause)

    async def read_resource(self, uri: str, **kwargs: Any) -> Any:
        """Resource failures reach the client as ``CODE: message`` too: resources raise
        ResourceError with that text (broker/mcp/resources.py); anything unexpected (a bad
        argument type FastMCP could not coerce, Redis down) gets its code here. A read costs
        the broker work as a tool call does (resource://agents/... reads every agent of a
        project), so it draws on the same per-client bucket, once per client read."""
        if kwargs.get("run_middleware", True):
            try:
                self.client_limiter.check()
            except BrokerError as exc:
                raise resource_tools.ResourceFailure(exc) from exc
        try:
            return await super().read_resource(uri, **kwargs)
        except ResourceError as exc:
            cause = exc.__cause__
            if cause is None or getattr(exc, "code", None):
                raise
            if isinstance(cause, ValueError) and not isinstance(cause, UnicodeError):
                raise ResourceError(f"INVALID_ARGUMENT: {cause}. Check the resource's query parameters.") from cause
            raise ResourceError(str(unexpected_error(cause))) from cause

    async def _call_tool(self, name: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> Any:
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


def assemble(settings: Settings, store: Store, backend: str) -> FastMCP:
    """The FastMCP server over a wired store (broker.server.build_server wires it)."""
    # version: the package's own in the MCP server info (FastMCP would report its own)
    mcp = BrokerMCP("agent-broker", instructions=INSTRUCTIONS, version=__version__)
    mcp.store = store  # type: ignore[attr-defined]  # for the HTTP layer and tests
    mcp.backend_description = backend  # type: ignore[attr-defined]
    mcp.client_limiter = ClientLimiter(settings.client_rate_limit_per_second, settings.client_rate_limit_burst)
    mcp.output = OutputFormats(settings.output_format or settings.toon_default_format, settings.toon_stats)
    store.charge_client = mcp.client_limiter.pay

    for module in TOOL_MODULES:
        module.register(mcp, store, settings, backend)
    apply_profile(mcp, settings)
    mcp.usage.track(list(registered_tools(mcp)))
    if settings.metrics_enabled:
        mcp.metrics = BrokerMetrics()
        mcp.metrics.track_live(lambda: store.waiter_count, lambda: getattr(mcp, "push_subscriptions", lambda: 0)())
        store.on_doorbell = mcp.metrics.observe_doorbell
    mcp.call_log = call_log(settings.log_format, settings.log_calls)
    return mcp


def apply_profile(mcp: BrokerMCP, settings: Settings) -> None:
    """Remove the tools the TOOLS_FILTER_* settings leave out (raises ProfileError, a
    ValueError, naming an unknown profile, mode, cluster or tool)."""
    registered = registered_tools(mcp)
    keep = enabled_tools(settings, registered)
    for name in sorted(set(registered) - keep):
        mcp.local_provider.remove_tool(name)
        mcp.filtered_tools[name] = describe(settings)
