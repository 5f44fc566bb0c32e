"""Tool profiles (TOOLS_FILTER_*) and the tool catalog they read."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, drop_prefix, make_settings

from broker.mcp.catalog import CLUSTERS
from broker.mcp.profiles import ProfileError
from broker.server import build_server

# The brief's map, written out again so a change to the catalog is a deliberate one.
EXPECTED_CLUSTERS = {
    "infrastructure": ["health_check", "ensure_project", "install_precommit_guard", "uninstall_precommit_guard",
                       "archive_project", "unarchive_project", "hard_delete_project"],
    "identity": ["register_agent", "create_agent_identity", "whois", "deregister_agent", "retire_agent",
                 "unretire_agent", "hard_delete_agent", "list_window_identities", "rename_window", "expire_window"],
    "messaging": ["send_message", "reply_message", "fetch_inbox", "fetch_topic", "mark_message_read",
                  "acknowledge_message", "purge_old_messages", "wait_for_mail"],
    "contact": ["request_contact", "respond_contact", "list_contacts", "set_contact_policy"],
    "search": ["search_messages", "summarize_thread", "summarize_recent", "fetch_summary"],
    "file_reservations": ["file_reservation_paths", "release_file_reservations", "renew_file_reservations",
                          "force_release_file_reservation"],
    "workflow_macros": ["macro_start_session", "macro_prepare_thread", "macro_file_reservation_cycle",
                        "macro_contact_handshake"],
    "build_slots": ["acquire_build_slot", "renew_build_slot", "release_build_slot"],
    "product_bus": ["ensure_product", "products_link", "search_messages_product", "fetch_inbox_product",
                    "summarize_thread_product"],
}  # fmt: skip
MINIMAL = {"health_check", "ensure_project", "register_agent", "send_message", "fetch_inbox", "acknowledge_message"}


def test_catalog_is_the_briefs_map() -> None:
    assert {cluster: list(tools) for cluster, tools in CLUSTERS.items()} == EXPECTED_CLUSTERS
    assert sum(len(tools) for tools in CLUSTERS.values()) == 49  # the reference's 40 + 8 gated + wait_for_mail


async def test_every_registered_tool_has_a_cluster(tools: Tools) -> None:
    registered = {tool.name for tool in await tools.client.list_tools()}
    catalogued = {tool for cluster in CLUSTERS.values() for tool in cluster}
    assert registered <= catalogued, registered - catalogued


async def profile_client(backend: str, root: Path, **overrides: Any) -> AsyncIterator[tuple[FastMCP, Client]]:
    mcp = build_server(make_settings(backend, root, TOOLS_FILTER_ENABLED="true", **overrides))
    try:
        async with Client(mcp) as client:
            yield mcp, client
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


@pytest.fixture
async def minimal(backend: str, tmp_path: Path) -> AsyncIterator[Client]:
    async for _mcp, client in profile_client(backend, tmp_path, TOOLS_FILTER_PROFILE="minimal"):
        yield client


async def test_minimal_profile_lists_exactly_the_minimal_tools(minimal: Client) -> None:
    assert {tool.name for tool in await minimal.list_tools()} == MINIMAL
    directory = json.loads((await minimal.read_resource("resource://tooling/directory"))[0].text)
    assert {t["name"] for c in directory["clusters"] for t in c["tools"]} == MINIMAL
    schemas = json.loads((await minimal.read_resource("resource://tooling/schemas"))[0].text)
    assert set(schemas["tools"]) == MINIMAL
    metrics = json.loads((await minimal.read_resource("resource://tooling/metrics"))[0].text)
    assert {row["name"] for row in metrics["tools"]} == MINIMAL


async def test_filtered_tool_is_refused_naming_the_setting(minimal: Client) -> None:
    tools = Tools(minimal)
    await tools.project()
    await tools.agent("BlueLake")
    error = await tools.error("whois", project_key=PROJECT, agent_name="BlueLake")
    assert error == (
        "TOOL_NOT_ENABLED: Tool 'whois' is not enabled on this server: the tool profile (TOOLS_FILTER_ENABLED=true, "
        "TOOLS_FILTER_PROFILE=minimal) leaves it out. Use the tools this server lists, or ask its operator to set "
        "TOOLS_FILTER_PROFILE=full (or TOOLS_FILTER_ENABLED=false) and restart it."
    )
    # the kept tools work
    assert (await tools.inbox("BlueLake")) == []
    # resources are not filtered
    agents = json.loads((await minimal.read_resource("resource://agents/tmp-concurrent-test"))[0].text)
    assert [a["name"] for a in agents["agents"]] == ["BlueLake"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"TOOLS_FILTER_PROFILE": "core"},
            {"health_check", "ensure_project"}
            | set(EXPECTED_CLUSTERS["identity"] + EXPECTED_CLUSTERS["messaging"])
            | set(EXPECTED_CLUSTERS["file_reservations"] + EXPECTED_CLUSTERS["workflow_macros"]),
        ),
        (
            {"TOOLS_FILTER_PROFILE": "messaging"},
            {"health_check", "ensure_project", "search_messages"}
            | set(EXPECTED_CLUSTERS["identity"] + EXPECTED_CLUSTERS["messaging"] + EXPECTED_CLUSTERS["contact"]),
        ),
        (
            {"TOOLS_FILTER_PROFILE": "custom", "TOOLS_FILTER_CLUSTERS": "search", "TOOLS_FILTER_TOOLS": "whois"},
            {"whois", *EXPECTED_CLUSTERS["search"]},
        ),
        (
            {"TOOLS_FILTER_PROFILE": "custom", "TOOLS_FILTER_MODE": "exclude",
             "TOOLS_FILTER_CLUSTERS": "file_reservations, search", "TOOLS_FILTER_TOOLS": "whois,wait_for_mail"},
            None,  # everything registered but those
        ),
        ({"TOOLS_FILTER_PROFILE": "full"}, None),
    ],
)  # fmt: skip
async def test_profiles_keep_the_named_tools(
    backend: str, tmp_path: Path, tools: Tools, overrides: dict[str, str], expected: set[str] | None
) -> None:
    everything = {tool.name for tool in await tools.client.list_tools()}
    if expected is None:
        dropped = set()
        if overrides.get("TOOLS_FILTER_MODE") == "exclude":
            dropped = {"whois", "wait_for_mail", *EXPECTED_CLUSTERS["file_reservations"]}
            dropped |= set(EXPECTED_CLUSTERS["search"])
        expected = everything - dropped
    async for _mcp, client in profile_client(backend, tmp_path, **overrides):
        # tools other helpers have not registered yet are simply absent
        assert {tool.name for tool in await client.list_tools()} == expected & everything


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"TOOLS_FILTER_PROFILE": "tiny"}, "TOOLS_FILTER_PROFILE names unknown profile 'tiny'; known profiles:"),
        (
            {"TOOLS_FILTER_PROFILE": "custom", "TOOLS_FILTER_MODE": "only"},
            "TOOLS_FILTER_MODE names unknown mode 'only'; known modes: include, exclude.",
        ),
        (
            {"TOOLS_FILTER_PROFILE": "custom", "TOOLS_FILTER_CLUSTERS": "messaging,mail"},
            "TOOLS_FILTER_CLUSTERS names unknown cluster 'mail'; known clusters: infrastructure,",
        ),
        (
            {"TOOLS_FILTER_PROFILE": "custom", "TOOLS_FILTER_TOOLS": "send_mesage"},
            "TOOLS_FILTER_TOOLS names unknown tool 'send_mesage'; known tools: health_check,",
        ),
    ],
)
def test_unknown_names_stop_the_server_at_startup(tmp_path: Path, overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ProfileError) as caught:
        build_server(make_settings("memory://profiles", tmp_path, TOOLS_FILTER_ENABLED="true", **overrides))
    assert str(caught.value).startswith(message)


def test_disabled_filter_ignores_the_other_settings(tmp_path: Path) -> None:
    mcp = build_server(make_settings("memory://profiles", tmp_path, TOOLS_FILTER_PROFILE="minimal"))
    assert mcp.filtered_tools == {}  # type: ignore[attr-defined]
