"""The reference's ``format`` argument: a result as JSON (as is) or as TOON, in an envelope.

TOON (Token-Oriented Object Notation) writes the JSON data model line by line, uniform lists of
objects as tables, to save tokens (how many depends on the shape: docs/tools.md). With
``format="toon"`` (or a server default of toon) a result is replaced by
``{"format": "toon", "data": "<TOON text>", "meta": {requested, source, encoder, [toon_stats]}}``;
if the encoder fails, by ``{"format": "json", "data": <the result>, "meta": {requested, source,
toon_error}}``. The encoder is the ``toon-format`` library, in process (the reference runs an
external ``tru`` binary). broker/mcp/server.py applies this to every tool call and resource read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pydantic_core
import toon_format
from fastmcp.tools import ToolResult
from mcp.types import TextContent

from broker.mail.inputs import check_format

ENCODER = f"toon-format {toon_format.__version__}"
CHARS_PER_TOKEN = 4  # the usual rough estimate for English text and JSON; good enough to compare

# What a list tool's ``result`` may also be: its output schema must let a TOON envelope through,
# or a client validating structured content against it (the MCP SDK does) rejects the call.
ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"format": {"type": "string"}, "data": {}, "meta": {"type": "object"}},
    "required": ["format", "data", "meta"],
}


@dataclass(frozen=True, slots=True)
class Choice:
    """The format a result is given in, and why (the envelope's ``meta``)."""

    format: str  # "json" or "toon"
    requested: str | None  # the format the call or the settings named; None when neither did
    source: str  # "param" (the call's format), "default" (the settings), "implicit" (neither)


class OutputFormats:
    """Chooses each result's format and shapes the result; one per server, from its settings."""

    def __init__(self, default: str = "", stats: bool = False) -> None:
        # default: MCP_AGENT_MAIL_OUTPUT_FORMAT or TOON_DEFAULT_FORMAT, already "json", "toon" or ""
        self.default = Choice(default, default, "default") if default else Choice("json", None, "implicit")
        self.stats = stats

    def choose(self, value: str | None) -> Choice:
        """The format for a call passing ``format=value``; raises INVALID_ARGUMENT (naming the
        accepted values) for a value that is neither a format, an alias nor a default marker."""
        name = check_format(value)
        return Choice(name, name, "param") if name else self.default

    def shape(self, payload: Any, choice: Choice) -> Any:
        """The payload itself for JSON, its TOON envelope for TOON."""
        if choice.format != "toon":
            return payload
        meta: dict[str, Any] = {"requested": choice.requested or "toon", "source": choice.source}
        try:
            text = toon_format.encode(payload)
        except Exception as exc:  # the encoder is not ours: any failure gives the JSON result back
            meta["toon_error"] = f"TOON encoder failed ({type(exc).__name__}): {exc}"
            return {"format": "json", "data": payload, "meta": meta}
        meta["encoder"] = ENCODER
        if self.stats:
            meta["toon_stats"] = token_stats(payload, text)
        return {"format": "toon", "data": text, "meta": meta}

    def tool_result(self, result: ToolResult, choice: Choice) -> ToolResult:
        """A tool's result with its payload shaped, as FastMCP would have built it had the tool
        returned the envelope: compact JSON text, and structured content (``{"result": ...}``
        for a list tool, which FastMCP marks in ``meta``)."""
        payload = result.structured_content
        if payload is None:
            return result
        wrapped = bool((result.meta or {}).get("fastmcp", {}).get("wrap_result"))
        shaped = self.shape(payload["result"] if wrapped else payload, choice)
        return ToolResult(
            content=[TextContent(type="text", text=pydantic_core.to_json(shaped).decode())],
            structured_content={"result": shaped} if wrapped else shaped,
            meta=result.meta,
        )


def token_stats(payload: Any, toon_text: str) -> dict[str, Any]:
    """Estimated tokens of the compact JSON the call would have returned and of the TOON text."""
    json_tokens = estimated_tokens(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
    toon_tokens = estimated_tokens(toon_text)
    saved = json_tokens - toon_tokens
    return {
        "json_tokens": json_tokens,
        "toon_tokens": toon_tokens,
        "saved_tokens": saved,
        "saved_percent": round(100 * saved / json_tokens, 1) if json_tokens else 0.0,
    }


def estimated_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def accept_envelope(output_schema: dict[str, Any] | None) -> None:
    """Widen a list tool's output schema (``{"result": [...]}``, FastMCP's wrapping) so the
    ``result`` may be a TOON envelope too; an object tool's schema already admits one."""
    if not output_schema or not output_schema.get("x-fastmcp-wrap-result"):
        return
    properties = output_schema.get("properties") or {}
    if "result" in properties:
        properties["result"] = {"anyOf": [properties["result"], ENVELOPE_SCHEMA]}
