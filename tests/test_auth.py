"""Registration tokens and session binding under open and required agent auth (§2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, drop_prefix, snapshot
from shapes import payload

from broker.config import Settings
from broker.identity.names import is_generated_shape
from broker.server import build_server


# -- registration tokens -----------------------------------------------------------------------
async def test_open_auth_tokens_are_optional_but_checked(tools: Tools, trio: dict[str, Any], server: FastMCP) -> None:
    blue, green = trio["agents"]["BlueLake"], trio["agents"]["GreenCastle"]
    store = server.store  # type: ignore[attr-defined]
    message = payload(await tools.send("BlueLake", ["GreenCastle"], sender_token=blue["registration_token"]))
    assert payload(await tools.send("BlueLake", ["GreenCastle"]))["id"] != message["id"]

    wrong = green["registration_token"]  # a real token, of another agent
    calls: list[tuple[str, dict[str, Any]]] = [
        ("send_message", {"sender_name": "BlueLake", "to": ["GreenCastle"], "subject": "s", "body_md": "b"}),
        ("reply_message", {"message_id": message["id"], "sender_name": "BlueLake", "body_md": "b"}),
        ("fetch_inbox", {"agent_name": "BlueLake"}),
        ("fetch_topic", {"topic_name": "t", "agent_name": "BlueLake"}),
        ("whois", {"agent_name": "BlueLake"}),
        ("mark_message_read", {"agent_name": "GreenCastle", "message_id": message["id"]}),
        ("acknowledge_message", {"agent_name": "GreenCastle", "message_id": message["id"]}),
        ("register_agent", {"name": "BlueLake", "program": "evil", "model": "m"}),
    ]
    for tool, args in calls:
        token_arg = "sender_token" if tool in ("send_message", "reply_message") else "registration_token"
        token = blue["registration_token"] if args.get("agent_name") == "GreenCastle" else wrong
        before = await snapshot(store)
        error = await tools.error(tool, project_key=PROJECT, **args, **{token_arg: token})
        assert error.startswith("AUTHENTICATION_FAILED:"), (tool, error)
        assert "registration_token" in error and "register_agent returned" in error
        assert await snapshot(store) == before, tool

    profile = await tools.call(
        "whois", project_key=PROJECT, agent_name="BlueLake", registration_token=blue["registration_token"]
    )
    assert profile["program"] == "claude-code"  # the rejected re-registration changed nothing
    again = await tools.call(
        "register_agent",
        project_key=PROJECT,
        name="BlueLake",
        program="codex",
        model="gpt-5",
        registration_token=blue["registration_token"],
    )
    assert again["id"] == blue["id"] and again["program"] == "codex"


# -- required auth -------------------------------------------------------------------------------
@pytest.fixture
async def required_server(settings: Settings) -> AsyncIterator[FastMCP]:
    mcp = build_server(settings, agent_auth="required")
    yield mcp
    await drop_prefix(mcp.store)  # type: ignore[attr-defined]


def agent_calls(message_id: int) -> list[tuple[str, dict[str, Any], str]]:
    """Agent-scoped calls made as BlueLake (tool, arguments, token argument name)."""
    return [
        ("whois", {"agent_name": "BlueLake"}, "registration_token"),
        ("fetch_inbox", {"agent_name": "BlueLake"}, "registration_token"),
        ("fetch_topic", {"topic_name": "t", "agent_name": "BlueLake"}, "registration_token"),
        ("mark_message_read", {"agent_name": "BlueLake", "message_id": message_id}, "registration_token"),
        ("acknowledge_message", {"agent_name": "BlueLake", "message_id": message_id}, "registration_token"),
        (
            "send_message",
            {"sender_name": "BlueLake", "to": ["GreenCastle"], "subject": "s", "body_md": "b"},
            "sender_token",
        ),
        ("reply_message", {"message_id": message_id, "sender_name": "BlueLake", "body_md": "b"}, "sender_token"),
        ("register_agent", {"name": "BlueLake", "program": "codex", "model": "gpt-5"}, "registration_token"),
    ]


async def _required_setup(calls: Tools) -> tuple[dict[str, Any], dict[str, Any], int]:
    await calls.project()
    blue = await calls.agent("BlueLake")
    green = await calls.agent("GreenCastle")
    sent = await calls.send(
        "GreenCastle", ["BlueLake"], topic="t", sender_token=green["registration_token"], ack_required=True
    )
    return blue, green, payload(sent)["id"]


async def test_required_auth_without_session_binding(required_server: FastMCP) -> None:
    """fastmcp 4's Client negotiates the 2026-07-28 protocol by default: every request is its own
    connection with a new session id, so a session is never already authenticated and every
    agent-scoped call needs its token, even right after register_agent on the same Client."""
    async with Client(required_server) as client:
        calls = Tools(client)
        assert (await calls.call("health_check"))["agent_auth"] == "required"
        blue, _green, message_id = await _required_setup(calls)
        created = await calls.call("create_agent_identity", project_key=PROJECT, program="codex", model="gpt-5")
        assert is_generated_shape(created["name"])

        store = required_server.store  # type: ignore[attr-defined]
        for tool, args, token_arg in agent_calls(message_id):
            before = await snapshot(store)
            error = await calls.error(tool, project_key=PROJECT, **args)
            assert error.startswith("AUTHENTICATION_REQUIRED:"), (tool, error)
            assert f"requires {token_arg} for agent 'BlueLake'" in error, (tool, error)
            assert "unless this MCP session has already authenticated" in error
            assert await snapshot(store) == before, tool

        for tool, args, token_arg in agent_calls(message_id):
            await calls.call(tool, project_key=PROJECT, **args, **{token_arg: blue["registration_token"]})

        wrong = await calls.error(
            "fetch_inbox", project_key=PROJECT, agent_name="BlueLake", registration_token="not-the-token"
        )
        assert wrong.startswith("AUTHENTICATION_FAILED:")


async def test_required_auth_with_session_binding(required_server: FastMCP) -> None:
    """With the handshake-era protocol (mode="legacy") a Client keeps one session id, and a session
    that registered an agent may act as it without the token; other agents and sessions may not."""
    async with Client(required_server, mode="legacy") as first:
        calls = Tools(first)
        blue, green, message_id = await _required_setup(calls)  # this session registered both
        async with Client(required_server, mode="legacy") as second:
            stranger = Tools(second)
            for tool, args, _ in agent_calls(message_id):
                error = await stranger.error(tool, project_key=PROJECT, **args)
                assert error.startswith("AUTHENTICATION_REQUIRED:"), (tool, error)
            # fetch_topic without agent_name: no current agent in this session
            error = await stranger.error("fetch_topic", project_key=PROJECT, topic_name="t")
            assert error.startswith("AUTHENTICATION_REQUIRED:")

            for tool, args, _ in agent_calls(message_id):
                await calls.call(tool, project_key=PROJECT, **args)
            # A wrong token is rejected even in a bound session.
            error = await calls.error("whois", project_key=PROJECT, agent_name="BlueLake", registration_token="nope")
            assert error.startswith("AUTHENTICATION_FAILED:")
            # A successful token check binds the second session too, for that agent only.
            await stranger.call(
                "whois", project_key=PROJECT, agent_name="BlueLake", registration_token=blue["registration_token"]
            )
            assert [m["id"] for m in await stranger.inbox("BlueLake")] == [message_id]
            error = await stranger.error("fetch_inbox", project_key=PROJECT, agent_name="GreenCastle")
            assert error.startswith("AUTHENTICATION_REQUIRED:")

        # Without agent_name, fetch_topic reads as the session's current agent: the one it
        # authenticated as last (BlueLake, re-registered at the end of agent_calls).
        async with Client(required_server) as other_client:
            other = Tools(other_client)
            await other.agent("alpha-one")
            await other.send("GreenCastle", ["alpha-one"], topic="t", sender_token=green["registration_token"])
            views = {
                agent["name"]: await other.call(
                    "fetch_topic",
                    project_key=PROJECT,
                    topic_name="t",
                    agent_name=agent["name"],
                    registration_token=agent["registration_token"],
                )
                for agent in (blue, green)
            }
        assert views["BlueLake"] != views["GreenCastle"]
        assert await calls.call("fetch_topic", project_key=PROJECT, topic_name="t") == views["BlueLake"]


@pytest.mark.parametrize(
    "tool",
    ["fetch_inbox", "whois", "send_message", "mark_message_read", "acknowledge_message", "fetch_topic"],
)
async def test_required_auth_successful_token_check_binds_the_session(required_server: FastMCP, tool: str) -> None:
    """Reference §2: a session is bound on register "and every successful token check"."""
    async with Client(required_server) as setup_client:
        blue, _green, message_id = await _required_setup(Tools(setup_client))
    token = blue["registration_token"]
    args: dict[str, Any] = {
        "fetch_inbox": {"agent_name": "BlueLake", "registration_token": token},
        "whois": {"agent_name": "BlueLake", "registration_token": token},
        "send_message": {
            "sender_name": "BlueLake",
            "to": ["GreenCastle"],
            "subject": "s",
            "body_md": "b",
            "sender_token": token,
        },
        "mark_message_read": {"agent_name": "BlueLake", "message_id": message_id, "registration_token": token},
        "acknowledge_message": {"agent_name": "BlueLake", "message_id": message_id, "registration_token": token},
        "fetch_topic": {"topic_name": "t", "agent_name": "BlueLake", "registration_token": token},
    }[tool]
    async with Client(required_server, mode="legacy") as client:
        calls = Tools(client)
        await calls.call(tool, project_key=PROJECT, **args)
        # The session has now authenticated as BlueLake: the token is no longer needed.
        assert [m["id"] for m in await calls.inbox("BlueLake")] == [message_id]


async def test_required_auth_is_checked_before_force_release_weighs_activity(required_server: FastMCP) -> None:
    """Under required auth a caller without a token learns nothing about the holder's activity
    and sets off no filesystem or git scan: the token is checked first, as in every other tool."""
    async with Client(required_server) as client:
        calls = Tools(client)
        blue, green, _ = await _required_setup(calls)
        held = await calls.call(
            "file_reservation_paths", project_key=PROJECT, agent_name="GreenCastle", paths=["src/"],
            registration_token=green["registration_token"],
        )  # fmt: skip
        reservation_id = held["granted"][0]["id"]
        error = await calls.error(
            "force_release_file_reservation", project_key=PROJECT, agent_name="BlueLake",
            file_reservation_id=reservation_id,
        )  # fmt: skip
        assert error.startswith("AUTHENTICATION_REQUIRED:"), error
        wrong = await calls.error(
            "force_release_file_reservation", project_key=PROJECT, agent_name="BlueLake",
            file_reservation_id=reservation_id, registration_token="not-the-token",
        )  # fmt: skip
        assert wrong.startswith("AUTHENTICATION_FAILED:"), wrong
        active = await calls.error(
            "force_release_file_reservation", project_key=PROJECT, agent_name="BlueLake",
            file_reservation_id=reservation_id, registration_token=blue["registration_token"],
        )  # fmt: skip
        assert active.startswith("RESERVATION_ACTIVE:"), active
