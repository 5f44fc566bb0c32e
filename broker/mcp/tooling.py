"""Reads behind resource://config/environment and resource://tooling/*: the tool directory and
schemas (generated from the tools registered on the server, after any tool profile), per-tool
call metrics, recent calls, and the reference's locks and capabilities shapes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastmcp import FastMCP
from fastmcp.tools import Tool

from broker.config import Settings
from broker.mcp.catalog import CLUSTERS, FREQUENCY, PLAYBOOKS, PURPOSES

OUTPUT_FORMATS = ["json", "toon"]
METRICS_URI = "resource://tooling/metrics"
ALIASES = {"macro_contact_handshake": {"agent_name": "requester", "to_agent": "target"}}


def registered_tools(mcp: FastMCP) -> dict[str, Tool]:
    """The tools registered on the server, by name. Read from the local provider's components
    because build_server is synchronous and FastMCP's listing is async."""
    components = mcp.local_provider._components.values()
    return {c.name: c for c in components if isinstance(c, Tool)}


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def environment(settings: Settings) -> dict[str, Any]:
    """Where the broker keeps its data and listens; never a secret (no bearer token, no Redis URL,
    which may carry a password)."""
    return {
        "environment": settings.environment,
        "database_url": settings.index_url_redacted,
        "http": {"host": settings.http_host, "port": settings.http_port, "path": settings.http_path},
    }


# -- derived from the registered tools ---------------------------------------------------------
def _arguments(tool: Tool) -> tuple[list[str], list[str]]:
    schema = tool.parameters or {}
    names = list((schema.get("properties") or {}).keys())
    required = [n for n in names if n in set(schema.get("required") or [])]
    return required, [n for n in names if n not in required]


def complexity(tool: Tool) -> str:
    required, optional = _arguments(tool)
    count = len(required) + len(optional)
    return "low" if count <= 3 else "medium" if count <= 8 else "high"


def _summary(description: str) -> str:
    text = " ".join(description.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def _shape(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return "|".join(_shape(option) for option in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array<{_shape(schema.get('items') or {})}>"
    return str(kind)


def _example(tool: Tool) -> str:
    required, _ = _arguments(tool)
    return f"{tool.name}(" + ", ".join(f"{name}=<{name}>" for name in required) + ")"


def directory(tools: dict[str, Tool]) -> dict[str, Any]:
    clusters = []
    for cluster, names in CLUSTERS.items():
        present = [name for name in names if name in tools]
        if not present:
            continue
        entries = []
        for name in present:
            tool = tools[name]
            description = tool.description or ""
            entries.append(
                {
                    "name": name,
                    "summary": _summary(description),
                    "use_when": " ".join(description.split()),
                    "related": [other for other in present if other != name],
                    "expected_frequency": FREQUENCY[cluster],
                    "required_capabilities": [],
                    "usage_examples": [_example(tool)],
                    "capabilities": [cluster],
                    "complexity": complexity(tool),
                }
            )
        clusters.append({"name": cluster, "purpose": PURPOSES[cluster], "tools": entries})
    playbooks = [
        {"workflow": workflow, "sequence": list(sequence)}
        for workflow, sequence in PLAYBOOKS
        if all(name in tools for name in sequence)
    ]
    return {
        "generated_at": now_iso(),
        "metrics_uri": METRICS_URI,
        "output_formats": OUTPUT_FORMATS,
        "clusters": clusters,
        "playbooks": playbooks,
    }


def schemas(tools: dict[str, Tool]) -> dict[str, Any]:
    described: dict[str, Any] = {}
    for name in sorted(tools):
        tool = tools[name]
        required, optional = _arguments(tool)
        properties = (tool.parameters or {}).get("properties") or {}
        entry: dict[str, Any] = {
            "required": required,
            "optional": [n for n in optional if n != "format"],
            "shapes": {arg: _shape(properties[arg]) for arg in required + optional},
            "input_schema": tool.parameters,
        }
        if name in ALIASES:
            entry["aliases"] = ALIASES[name]
        described[name] = entry
    return {
        "generated_at": now_iso(),
        "global_optional": ["format"],
        "output_formats": OUTPUT_FORMATS,
        "tools": described,
    }


def locks() -> dict[str, Any]:
    """The reference lists its archive lock files here. This broker keeps no lock files an agent
    could find stale (Redis scripts are atomic; the archive writer's flock is released by the OS
    when its process dies), so the list is always empty."""
    return {"locks": [], "summary": {"total": 0, "active": 0, "stale": 0, "metadata_missing": 0}}


def capabilities(agent: str, project: str | None) -> dict[str, Any]:
    """The reference reads per-agent capabilities from a deployment file and never enforces them;
    there is no such file here, so the list is empty."""
    return {"generated_at": now_iso(), "agent": agent, "project": project, "capabilities": []}
