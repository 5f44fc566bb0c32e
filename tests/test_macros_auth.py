"""Workflow macros under tool profiles and AGENT_AUTH=required (the rest is in test_macros.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from helpers import PROFILE, PROJECT, Tools, drop_prefix, live_reservations, make_settings, snapshot

from broker.server import build_server


# -- tool profiles --------------------------------------------------------------------------
@pytest.fixture
async def macros_only(backend: str, tmp_path: Path) -> AsyncIterator[Tools]:
    """A server whose profile lists the workflow macros and nothing else."""
    settings = make_settings(
        backend,
        tmp_path,
        TOOLS_FILTER_ENABLED="true",
        TOOLS_FILTER_PROFILE="custom",
        TOOLS_FILTER_MODE="include",
        TOOLS_FILTER_CLUSTERS="workflow_macros",
    )
    mcp = build_server(settings)
    try:
        async with Client(mcp) as client:
            yield Tools(client)
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_macros_work_with_the_single_tools_hidden(macros_only: Tools) -> None:
    """A tool profile may hide the tools a macro does the work of; the macros do not call them."""
    tools = macros_only
    listed = {tool.name for tool in await tools.client.list_tools()}
    assert listed == {
        "macro_start_session",
        "macro_prepare_thread",
        "macro_file_reservation_cycle",
        "macro_contact_handshake",
    }
    assert "TOOL_NOT_ENABLED" in await tools.error("ensure_project", human_key=PROJECT)

    started = await tools.call(
        "macro_start_session", human_key=PROJECT, agent_name="BlueLake", file_reservation_paths=["a.py"], **PROFILE
    )
    assert [g["path_pattern"] for g in started["file_reservations"]["granted"]] == ["a.py"]
    prepared = await tools.call(
        "macro_prepare_thread",
        project_key=PROJECT,
        thread_id="T-1",
        agent_name="BlueLake",
        register_if_missing=False,
        **PROFILE,
    )
    assert prepared["agent"]["id"] == started["agent"]["id"] and prepared["thread"]["total_messages"] == 0
    cycle = await tools.call(
        "macro_file_reservation_cycle", project_key=PROJECT, agent_name="BlueLake", paths=["b.py"], auto_release=True
    )
    assert cycle["released"]["released"] == 1
    assert await live_reservations(tools) == [("BlueLake", "a.py")]


# -- required auth ----------------------------------------------------------------------------
@pytest.fixture
async def required_server(backend: str, tmp_path: Path) -> AsyncIterator[FastMCP]:
    mcp = build_server(make_settings(backend, tmp_path, AGENT_AUTH="required"))
    yield mcp
    await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_macros_under_required_auth(required_server: FastMCP) -> None:
    """Without session binding (every request its own session) an existing agent needs its token
    for each macro, once: the macro passes it on to its later steps."""
    store = required_server.store  # type: ignore[attr-defined]
    async with Client(required_server) as client:
        calls = Tools(client)
        assert (await calls.call("health_check"))["agent_auth"] == "required"
        await calls.project()
        blue = await calls.agent("BlueLake")
        green = await calls.agent("GreenCastle")
        await calls.send("GreenCastle", ["BlueLake"], subject="hi", sender_token=green["registration_token"])
        token = blue["registration_token"]

        refused: list[tuple[str, dict[str, Any]]] = [
            ("macro_start_session", {"human_key": PROJECT, "agent_name": "BlueLake", **PROFILE}),
            (
                "macro_prepare_thread",
                {"project_key": PROJECT, "thread_id": "T-1", "agent_name": "BlueLake", **PROFILE},
            ),
            (
                "macro_prepare_thread",
                {
                    "project_key": PROJECT,
                    "thread_id": "T-1",
                    "agent_name": "BlueLake",
                    "register_if_missing": False,
                    **PROFILE,
                },
            ),
            ("macro_file_reservation_cycle", {"project_key": PROJECT, "agent_name": "BlueLake", "paths": ["src/"]}),
        ]
        for tool, args in refused:
            before = await snapshot(store)
            error = await calls.error(tool, **args)
            assert error.startswith("AUTHENTICATION_REQUIRED:") and "'BlueLake'" in error, (tool, error)
            assert await snapshot(store) == before, tool
            wrong = await calls.error(tool, **args, registration_token=green["registration_token"])
            assert wrong.startswith("AUTHENTICATION_FAILED:"), (tool, wrong)

        started = await calls.call(
            "macro_start_session",
            human_key=PROJECT,
            agent_name="BlueLake",
            registration_token=token,
            file_reservation_paths=["src/"],
            **PROFILE,
        )
        assert started["registration_token"] == token
        assert [item["subject"] for item in started["inbox"]] == ["hi"]
        assert [g["path_pattern"] for g in started["file_reservations"]["granted"]] == ["src/**"]

        for register_if_missing in (True, False):
            prepared = await calls.call(
                "macro_prepare_thread",
                project_key=PROJECT,
                thread_id="T-1",
                agent_name="BlueLake",
                registration_token=token,
                register_if_missing=register_if_missing,
                **PROFILE,
            )
            assert prepared["registration_token"] == token
            assert [item["subject"] for item in prepared["inbox"]] == ["hi"]

        cycle = await calls.call(
            "macro_file_reservation_cycle",
            project_key=PROJECT,
            agent_name="BlueLake",
            paths=["lib/"],
            auto_release=True,
            registration_token=token,
        )
        assert cycle["released"]["released"] == 1

        # a new agent needs no token: the one minted for it carries the later steps
        fresh = await calls.call("macro_start_session", human_key=PROJECT, file_reservation_paths=["new/"], **PROFILE)
        assert len(fresh["registration_token"]) == 43 and fresh["inbox"] == []
        assert [g["path_pattern"] for g in fresh["file_reservations"]["granted"]] == ["new/**"]


async def test_start_session_binds_the_mcp_session(required_server: FastMCP) -> None:
    """With a lasting session id (legacy protocol) the macro authenticates the session as the agent,
    as register_agent does: later calls need no token."""
    async with Client(required_server, mode="legacy") as client:
        calls = Tools(client)
        started = await calls.call("macro_start_session", human_key=PROJECT, agent_name="BlueLake", **PROFILE)
        assert len(started["registration_token"]) == 43
        assert await calls.inbox("BlueLake") == []
        cycle = await calls.call(
            "macro_file_reservation_cycle", project_key=PROJECT, agent_name="BlueLake", paths=["a.py"]
        )
        assert len(cycle["file_reservations"]["granted"]) == 1
        prepared = await calls.call(
            "macro_prepare_thread",
            project_key=PROJECT,
            thread_id="T-1",
            agent_name="BlueLake",
            register_if_missing=False,
            **PROFILE,
        )
        assert prepared["agent"]["name"] == "BlueLake" and prepared["registration_token"] is None
