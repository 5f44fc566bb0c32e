"""What the tool list costs a client, and that trimming it never changes the surface.

Every agent pays for the whole ``tools/list`` result in its context window. The figure is the
JSON of ``{"tools": [...]}`` as the server sends it (compact, no null fields), measured with
default settings (the gated tools off) for the full surface and for the ``core`` profile.

The budgets leave room for a few more arguments. tests/tool_input_schemas.json holds every
tool's input schema with descriptions and titles stripped (names, types, defaults, required,
closed objects): descriptions may change freely, the structure may not without rewriting that
file on purpose (``.venv/bin/python tests/test_tool_list_size.py``, then review the diff).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from fastmcp import Client
from helpers import drop_prefix, make_settings

from broker.server import build_server

FULL_BUDGET = 30_000
CORE_BUDGET = 21_000  # 12,000 is below what the core tools' arguments alone take: docs/tools.md
SNAPSHOT = Path(__file__).with_name("tool_input_schemas.json")


async def listed_tools(root: Path, **overrides: Any) -> list[dict[str, Any]]:
    """The tools/list entries a client receives, as JSON objects."""
    mcp = build_server(make_settings("memory://", root, **overrides))
    try:
        async with Client(mcp) as client:
            result = await client.list_tools_mcp()
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]
    return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in result.tools]


def wire_bytes(tools: list[dict[str, Any]]) -> int:
    return len(json.dumps({"tools": tools}, separators=(",", ":")).encode())


def structure(schema: Any) -> Any:
    """A schema without its prose: descriptions and titles go, everything else stays."""
    if isinstance(schema, list):
        return [structure(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    shaped = {}
    for key, value in schema.items():
        if key in ("description", "title"):
            continue
        if key == "properties":  # argument names are keys here, not schema keywords
            shaped[key] = {name: structure(sub) for name, sub in value.items()}
        else:
            shaped[key] = structure(value)
    return shaped


def arguments(schema: dict[str, Any]) -> list[str]:
    """The argument names in order (dict equality alone ignores the order)."""
    return list(schema.get("properties", {}))


def surface(tools: list[dict[str, Any]]) -> dict[str, Any]:
    return {tool["name"]: structure(tool["inputSchema"]) for tool in sorted(tools, key=lambda t: t["name"])}


async def test_the_tool_list_fits_its_budgets(tmp_path: Path) -> None:
    full = wire_bytes(await listed_tools(tmp_path / "full"))
    core = wire_bytes(await listed_tools(tmp_path / "core", TOOLS_FILTER_ENABLED="true", TOOLS_FILTER_PROFILE="core"))
    print(f"tools/list: full {full:,} bytes (budget {FULL_BUDGET:,}), core {core:,} bytes (budget {CORE_BUDGET:,})")
    assert full <= FULL_BUDGET, f"full tools/list is {full:,} bytes, over its {FULL_BUDGET:,} budget"
    assert core <= CORE_BUDGET, f"core tools/list is {core:,} bytes, over its {CORE_BUDGET:,} budget"


async def test_trimming_keeps_every_tool_argument_type_and_default(tmp_path: Path) -> None:
    listed = surface(await listed_tools(tmp_path))
    expected = json.loads(SNAPSHOT.read_text())
    assert sorted(listed) == sorted(expected), "the set of tools changed"
    changed = [
        name
        for name in expected
        if listed[name] != expected[name] or arguments(listed[name]) != arguments(expected[name])
    ]
    assert not changed, (
        f"input schemas changed for {changed}; if deliberate, rewrite {SNAPSHOT.name} with "
        "`.venv/bin/python tests/test_tool_list_size.py` and review its diff"
    )


def write_snapshot() -> None:
    with tempfile.TemporaryDirectory() as root:
        tools = asyncio.run(listed_tools(Path(root)))
    SNAPSHOT.write_text(json.dumps(surface(tools), indent=1) + "\n")
    print(f"wrote {SNAPSHOT} ({len(tools)} tools)")


if __name__ == "__main__":
    write_snapshot()
