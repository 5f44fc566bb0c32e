"""Behaviours matched to the reference (issue 16): what its clients see where the broker used to
differ. Agent names are coerced by default (AGENT_NAME_ENFORCEMENT_MODE) and refused under
strict; error texts carry the reference's phrases; a handshake's approval needs the target's
credential; resource://identity/{project}; since_ts paging; short reservation TTLs are raised
with a warning; macro_start_session refuses an empty file_reservation_paths."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from contact_helpers import policy, request, respond
from fastmcp import Client, FastMCP
from fastmcp.client.logging import LogMessage
from helpers import PROFILE, PROJECT, SLUG, Tools, drop_prefix, git, make_repo, make_settings, snapshot

from broker.identity.names import is_generated_shape
from broker.server import build_server

Serve = Callable[..., Any]


@pytest.fixture
async def serve(backend: str, tmp_path: Path) -> AsyncIterator[Serve]:
    """``serve(**settings)``: a server with those settings and a client that keeps the MCP log
    messages it receives (``client.messages``); closed after the test."""
    opened: list[tuple[FastMCP, Client]] = []

    async def start(**overrides: Any) -> tuple[Tools, FastMCP, list[str]]:
        mcp = build_server(make_settings(backend, tmp_path, **overrides))
        messages: list[str] = []

        async def keep(message: LogMessage) -> None:
            data = message.data
            messages.append(data.get("msg", str(data)) if isinstance(data, dict) else str(data))

        client = Client(mcp, log_handler=keep)
        await client.__aenter__()
        opened.append((mcp, client))
        return Tools(client), mcp, messages

    yield start
    for mcp, client in opened:
        await client.__aexit__(None, None, None)
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def setup_trio(tools: Tools) -> dict[str, dict[str, Any]]:
    await tools.project()
    return {name: await tools.agent(name) for name in ("BlueLake", "GreenCastle", "alpha-one")}


# -- 1, 2: agent names ----------------------------------------------------------------------------
async def test_register_agent_coerces_a_name_that_is_not_one(serve: Serve) -> None:
    tools, _, messages = await serve()
    await setup_trio(tools)
    for given in ("BackendHarmonizer", "claude-code", "BackendHarmonizer"):
        agent = await tools.agent(given)
        assert is_generated_shape(agent["name"]), agent["name"]
        assert len(agent["registration_token"]) == 43  # a new agent each time, as in the reference
        assert f"The name '{given}' was not used" in messages[-1] and agent["name"] in messages[-1]
    listed = json.loads((await tools.client.read_resource(f"resource://agents/{SLUG}"))[0].text)
    assert len(listed["agents"]) == 6  # the trio and three generated agents
    # punctuation around an adjective+noun name is dropped, the casing kept
    assert (await tools.agent("Red Fox!"))["name"] == "RedFox"
    # explicit ids are taken as given
    assert (await tools.agent("db-migrator"))["name"] == "db-migrator"
    # a placeholder is a setup mistake in every mode
    assert (await tools.error("register_agent", project_key=PROJECT, name="YOUR_AGENT_NAME", **PROFILE)).startswith(
        "CONFIGURATION_ERROR: "
    )


@pytest.mark.parametrize(
    ("name", "code", "says"),
    [
        ("BackendHarmonizer", "DESCRIPTIVE_NAME", "describes a role"),
        ("claude-code", "PROGRAM_NAME_AS_AGENT", "program name"),
        ("gpt-4o", "MODEL_NAME_AS_AGENT", "`model`"),
        ("bob@example.com", "EMAIL_AS_AGENT", "email address"),
        ("all", "BROADCAST_ATTEMPT", "broadcast=True"),
        ("alice", "UNIX_USERNAME_AS_AGENT", "login name"),
        ("Alice", "INVALID_AGENT_NAME", "Invalid agent name format: 'Alice'"),
        ("a-" + "x" * 127, "INVALID_AGENT_NAME", "128 characters"),
    ],
)
async def test_strict_naming_refuses_and_changes_nothing(serve: Serve, name: str, code: str, says: str) -> None:
    tools, server, _ = await serve(AGENT_NAME_ENFORCEMENT_MODE="strict")
    await setup_trio(tools)
    before = await snapshot(server.store)  # type: ignore[attr-defined]
    for tool, argument in (("register_agent", "name"), ("create_agent_identity", "name_hint")):
        error = await tools.error(tool, project_key=PROJECT, **{argument: name}, **PROFILE)
        assert error.startswith(f"{code}: ") and says in error, error
    error = await tools.error("macro_start_session", human_key=PROJECT, agent_name=name, **PROFILE)
    assert error.startswith(f"{code}: "), error
    assert await snapshot(server.store) == before  # type: ignore[attr-defined]
    assert (await tools.agent("Blue Lake"))["name"] == "BlueLake"  # still the same agent, re-registered


async def test_always_auto_ignores_every_name(serve: Serve) -> None:
    tools, _, messages = await serve(AGENT_NAME_ENFORCEMENT_MODE="always_auto")
    await tools.project()
    agent = await tools.agent("alpha-one")
    assert is_generated_shape(agent["name"]) and "'alpha-one' was not used" in messages[-1]
    created = await tools.call("create_agent_identity", project_key=PROJECT, name_hint="beta-two", **PROFILE)
    assert is_generated_shape(created["name"])


async def test_create_agent_identity_hints_by_mode(serve: Serve) -> None:
    coerce, _, _ = await serve()
    await setup_trio(coerce)
    for hint in ("BackendHarmonizer", "BlueLake"):  # invalid, then taken: a generated name instead
        created = await coerce.call("create_agent_identity", project_key=PROJECT, name_hint=hint, **PROFILE)
        assert is_generated_shape(created["name"]) and created["name"] != hint

    strict, server, _ = await serve(AGENT_NAME_ENFORCEMENT_MODE="strict")
    await setup_trio(strict)
    before = await snapshot(server.store)  # type: ignore[attr-defined]
    taken = await strict.error("create_agent_identity", project_key=PROJECT, name_hint="bluelake", **PROFILE)
    assert taken.startswith("INVALID_ARGUMENT: Agent name 'bluelake' is already in use."), taken
    assert await snapshot(server.store) == before  # type: ignore[attr-defined]
    free = await strict.call("create_agent_identity", project_key=PROJECT, name_hint="RedFox", **PROFILE)
    assert free["name"] == "RedFox" and len(free["registration_token"]) == 43


# -- 3: error texts clients match on --------------------------------------------------------------------
async def test_errors_carry_the_references_phrases(tools: Tools, trio: dict[str, Any]) -> None:
    broadcast = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
        broadcast=True,
    )  # fmt: skip
    assert broadcast.startswith("INVALID_ARGUMENT: ") and "mutually exclusive" in broadcast and "to=[]" in broadcast
    await policy(tools, "GreenCastle", "block_all")
    blocked = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b"
    )
    assert blocked.startswith("CONTACT_BLOCKED: Recipient is not accepting messages"), blocked
    early = await tools.error(
        "macro_contact_handshake", project_key=PROJECT, requester="BlueLake", target="alpha-one",
        welcome_subject="Hi", welcome_body="x",
    )  # fmt: skip
    assert early.startswith("INVALID_ARGUMENT: ") and "require auto_accept=True" in early


# -- 4: macro_contact_handshake ------------------------------------------------------------------------
async def test_auto_accept_needs_the_targets_credential(tools: Tools, trio: dict[str, Any]) -> None:
    args = {"project_key": PROJECT, "requester": "BlueLake", "target": "GreenCastle", "auto_accept": True}
    result = await tools.call("macro_contact_handshake", **args, welcome_subject="Hi", welcome_body="early")
    assert (result["request"]["status"], result["response"], result["welcome_message"]) == ("pending", None, None)
    assert result["response_error"]["type"] == "AUTHENTICATION_REQUIRED"
    assert "target_registration_token" in result["response_error"]["message"]
    assert result["welcome_error"]["type"] == "CONTACT_REQUIRED"
    [link] = await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake")
    assert (link["status"], link["allows_messaging"]) == ("pending", False)
    assert [m["subject"] for m in await tools.inbox("GreenCastle")] == ["Contact request from BlueLake"]

    # the same call without a welcome (the reference's shortcut) also leaves the request pending
    alone = await tools.call("macro_contact_handshake", **{**args, "target": "alpha-one"})
    assert (alone["request"]["status"], alone["response"]) == ("pending", None)
    assert alone["response_error"]["type"] == "AUTHENTICATION_REQUIRED"

    # with the target's token it is approved, and the welcome goes out
    token = trio["agents"]["GreenCastle"]["registration_token"]
    approved = await tools.call(
        "macro_contact_handshake", **args, welcome_subject="Hi", welcome_body="now", target_registration_token=token
    )
    assert approved["response"]["approved"] is True and "response_error" not in approved
    assert approved["welcome_message"]["deliveries"][0]["payload"]["subject"] == "Hi"


async def test_auto_accept_reuses_a_standing_approval(tools: Tools, trio: dict[str, Any]) -> None:
    await request(tools, "BlueLake", "GreenCastle")
    await respond(tools, "GreenCastle", "BlueLake")
    result = await tools.call(
        "macro_contact_handshake", project_key=PROJECT, requester="BlueLake", target="GreenCastle", auto_accept=True,
        welcome_subject="Again", welcome_body="still approved",
    )  # fmt: skip
    assert result["request"]["status"] == result["response"]["status"] == "approved"
    assert "response_error" not in result and "welcome_error" not in result
    assert result["welcome_message"]["deliveries"][0]["payload"]["to"] == ["GreenCastle"]
    assert "Again" in [m["subject"] for m in await tools.inbox("GreenCastle")]


async def test_a_session_that_registered_the_target_may_approve_for_it(backend: str, tmp_path: Path) -> None:
    """With a lasting MCP session (legacy protocol) registering an agent authenticates the
    session as it, as in the reference: the handshake then approves without a token."""
    mcp = build_server(make_settings(backend, tmp_path))
    try:
        async with Client(mcp, mode="legacy") as client:
            tools = Tools(client)
            await setup_trio(tools)
            result = await tools.call(
                "macro_contact_handshake", project_key=PROJECT, requester="BlueLake", target="GreenCastle",
                auto_accept=True,
            )  # fmt: skip
            assert result["request"] == result["response"] and result["response"]["status"] == "approved"
            assert await tools.inbox("GreenCastle") == []  # the shortcut sends no intro
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_a_failed_welcome_does_not_fail_the_handshake(tools: Tools, trio: dict[str, Any]) -> None:
    result = await tools.call(
        "macro_contact_handshake", project_key=PROJECT, requester="BlueLake", target="GreenCastle", auto_accept=True,
        welcome_subject="s" * 300, welcome_body="too long a subject",
        target_registration_token=trio["agents"]["GreenCastle"]["registration_token"],
    )  # fmt: skip
    assert result["response"]["approved"] is True and result["welcome_message"] is None
    assert (
        result["welcome_error"]["type"] == "INVALID_ARGUMENT" and "300 characters" in result["welcome_error"]["message"]
    )
    [link] = await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake")
    assert link["allows_messaging"] is True


async def test_a_missing_target_may_be_registered(tools: Tools, trio: dict[str, Any], server: FastMCP) -> None:
    result = await tools.call(
        "macro_contact_handshake", project_key=PROJECT, requester="BlueLake", target="SilverOtter",
        program="codex", model="gpt-5",
    )  # fmt: skip
    assert (result["request"]["to"], result["request"]["status"]) == ("SilverOtter", "pending")
    created = await tools.call("whois", project_key=PROJECT, agent_name="SilverOtter", include_recent_commits=False)
    assert (created["program"], created["model"]) == ("codex", "gpt-5")
    defaulted = await tools.call("macro_contact_handshake", project_key=PROJECT, requester="BlueLake", target="RedFox")
    assert defaulted["request"]["status"] == "pending"
    fox = await tools.call("whois", project_key=PROJECT, agent_name="RedFox", include_recent_commits=False)
    assert (fox["program"], fox["model"]) == ("unknown", "unknown")

    store = server.store  # type: ignore[attr-defined]
    before = await snapshot(store)
    refused: list[tuple[str, dict[str, Any], str]] = [
        ("GoldHawk", {"register_if_missing": False}, "NOT_FOUND: Agent 'GoldHawk'"),
        ("ghost-agent", {}, "NOT_FOUND: Agent 'ghost-agent'"),  # only adjective+noun names are registered
        ("GoldHawk", {"requester_registration_token": "wrong"}, "AUTHENTICATION_FAILED: "),
    ]
    for target, extra, expected in refused:
        error = await tools.error(
            "macro_contact_handshake", project_key=PROJECT, requester="BlueLake", target=target, **extra
        )
        assert error.startswith(expected), error
    assert await snapshot(store) == before
    # request_contact still refuses: a typo there should not create a mailbox nobody reads
    assert (await tools.error("request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="TealCove")
            ).startswith("NOT_FOUND: ")  # fmt: skip


async def test_required_auth_registers_no_target_for_someone_else(serve: Serve) -> None:
    tools, _, _ = await serve(AGENT_AUTH="required")
    agents = await setup_trio(tools)
    error = await tools.error(
        "macro_contact_handshake", project_key=PROJECT, requester="BlueLake", target="SilverOtter",
        requester_registration_token=agents["BlueLake"]["registration_token"],
    )  # fmt: skip
    assert error.startswith("NOT_FOUND: Agent 'SilverOtter' is not registered") and "register_agent" in error


# -- 5: resource://identity/{project} --------------------------------------------------------------------
async def read(tools: Tools, uri: str) -> Any:
    return json.loads((await tools.client.read_resource(uri))[0].text)


async def test_identity_of_an_encoded_absolute_path(tools: Tools, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "remote", "add", "origin", "git@github.com:Owner/Repo.git")
    identity = await read(tools, f"resource://identity/{quote(str(repo), safe='')}")
    assert identity["human_key"] == identity["canonical_path"] == str(repo)
    assert (identity["identity_mode_used"], identity["repo_root"], identity["worktree_name"]) == (
        "dir",
        str(repo),
        "repo",
    )
    assert identity["normalized_remote"] == "github.com/owner/repo"
    assert identity["project_uid"] == hashlib.sha1(b"github.com/owner/repo@main").hexdigest()[:20]
    assert identity["git_common_dir"] == str(repo / ".git") and identity["core_ignorecase"] is False
    assert identity["discovery"] is None and identity["branch"]
    # the slug is the one ensure_project gives the path; nothing was written into the repository
    assert identity["slug"] == (await tools.project(str(repo)))["slug"]
    assert not (repo / ".git" / "agent-mail").exists()
    assert git(repo, "status", "--porcelain").stdout == ""


async def test_identity_of_a_plain_directory_and_of_a_slug(tools: Tools, trio: dict[str, Any], tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / ".agent-mail.yaml").write_text("project_uid: abc123  # pinned\nother: ignored\n")
    identity = await read(tools, f"resource://identity/{quote(str(plain), safe='')}")
    assert (identity["repo_root"], identity["branch"], identity["core_ignorecase"]) == (None, None, None)
    assert identity["discovery"] == {"project_uid": "abc123"} and identity["project_uid"] == "abc123"
    by_slug = await read(tools, f"resource://identity/{SLUG}?format=json")
    assert (by_slug["slug"], by_slug["human_key"]) == (SLUG, PROJECT)
    assert by_slug["project_uid"] == hashlib.sha1(PROJECT.encode()).hexdigest()[:20]
    with pytest.raises(Exception, match="NOT_FOUND: Project 'no-such-project' not found"):
        await tools.client.read_resource("resource://identity/no-such-project")


async def test_identity_under_required_auth_only_for_projects(serve: Serve, tmp_path: Path) -> None:
    tools, _, _ = await serve(AGENT_AUTH="required")
    await tools.project()
    assert (await read(tools, f"resource://identity/{quote(PROJECT, safe='')}"))["human_key"] == PROJECT
    with pytest.raises(Exception, match="NOT_FOUND: Project"):
        await tools.client.read_resource(f"resource://identity/{quote(str(tmp_path), safe='')}")


# -- 6: since_ts paging ---------------------------------------------------------------------------------
async def test_since_ts_pages_strictly_after(tools: Tools, trio: dict[str, Any]) -> None:
    """The reference's paging test: 25 messages, a first page of 10, then since_ts of its last
    (oldest) item. Its filter is strict (created_ts > since_ts, reference §3.3), so that page holds
    the 9 newer ones; the reference's test only saw 10 because its client read no created_ts from
    the items and sent since_ts=None, which is no filter (below)."""
    for i in range(25):
        await tools.send("BlueLake", ["BlueLake"], subject=f"S{i}")
    first = await tools.inbox("BlueLake", limit=10)
    assert [m["subject"] for m in first] == [f"S{i}" for i in range(24, 14, -1)]
    after = await tools.inbox("BlueLake", limit=10, since_ts=first[-1]["created_ts"])
    assert [m["subject"] for m in after] == [f"S{i}" for i in range(24, 15, -1)]
    assert len(await tools.inbox("BlueLake", limit=10, since_ts=None)) == 10


# -- 7: short reservation TTLs --------------------------------------------------------------------------
def seconds_from_now(timestamp: str) -> float:
    return (datetime.fromisoformat(timestamp) - datetime.now(UTC)).total_seconds()


async def test_short_ttls_are_raised_with_a_warning(serve: Serve) -> None:
    tools, _, messages = await serve()
    await setup_trio(tools)
    args = {"project_key": PROJECT, "agent_name": "BlueLake"}
    granted = await tools.call("file_reservation_paths", **args, paths=["src/a.py"], ttl_seconds=5)
    assert 50 < seconds_from_now(granted["granted"][0]["expires_ts"]) <= 60
    assert granted["warnings"] == ["ttl_seconds=5 is below the minimum of 60 seconds; 60 seconds were used."]
    assert messages[-1] == granted["warnings"][0]
    renewed = await tools.call("renew_file_reservations", **args, extend_seconds=5)
    [row] = renewed["file_reservations"]
    old = datetime.fromisoformat(row["old_expires_ts"])
    assert (datetime.fromisoformat(row["new_expires_ts"]) - old).total_seconds() == 60
    assert renewed["warnings"] == ["extend_seconds=5 is below the minimum of 60 seconds; 60 seconds were used."]
    assert messages[-1] == renewed["warnings"][0]
    plain = await tools.call("renew_file_reservations", **args, extend_seconds=600)
    assert "warnings" not in plain  # results keep the reference's keys unless something was adjusted
    cycle = await tools.call("macro_file_reservation_cycle", **args, paths=["b.py"], ttl_seconds=0)
    assert cycle["file_reservations"]["warnings"] == [
        "ttl_seconds=0 is below the minimum of 60 seconds; 60 seconds were used."
    ]


# -- 8: macro_start_session with file_reservation_paths=[] --------------------------------------------------
async def test_start_session_refuses_an_empty_path_list(tools: Tools, server: FastMCP) -> None:
    store = server.store  # type: ignore[attr-defined]
    error = await tools.error(
        "macro_start_session", human_key=PROJECT, agent_name="BlueLake", file_reservation_paths=[], **PROFILE
    )
    assert error.startswith("EMPTY_PATHS: file_reservation_paths is an empty list") and "omit it" in error
    assert await store.client().exists(store.keys.project(SLUG)) == 0  # nothing was created
    started = await tools.call("macro_start_session", human_key=PROJECT, agent_name="BlueLake", **PROFILE)
    assert started["file_reservations"] == {"granted": [], "conflicts": []}
