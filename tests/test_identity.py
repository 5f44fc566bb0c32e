"""Infrastructure and identity tools through an MCP client, as in the reference (§3.1-3.2, §5.1-5.2)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastmcp import FastMCP
from helpers import PROJECT, Tools, snapshot
from shapes import AGENT_KEYS, PROJECT_KEYS, assert_iso_utc, payload

from broker.config import Settings
from broker.identity.names import is_generated_shape


# -- infrastructure ------------------------------------------------------------------------
async def test_health_check(tools: Tools, settings: Settings) -> None:
    health = await tools.call("health_check")
    assert {"status", "environment", "http_host", "http_port", "database_url"} <= set(health)
    assert health["status"] == "ok"
    assert health["environment"] == settings.environment
    assert health["http_host"] == settings.http_host
    assert health["http_port"] == settings.http_port
    assert isinstance(health["http_port"], int)
    assert health["database_url"] == f"sqlite:///{settings.index_path}"
    assert health["agent_auth"] == "open"
    assert settings.redis_url.split("@")[-1] in health["redis"]


async def test_ensure_project_creates_once_and_is_idempotent(tools: Tools) -> None:
    project = await tools.project("/data/projects/Backend_X")
    assert set(project) == PROJECT_KEYS
    assert project["slug"] == "data-projects-backend-x"
    assert project["human_key"] == "/data/projects/Backend_X"
    assert isinstance(project["id"], int)
    assert_iso_utc(project["created_at"])
    # normpath: trailing slash, doubled slashes and '..' name the same project
    for alias in ("/data/projects/Backend_X/", "/data//projects/Backend_X", "/data/projects/x/../Backend_X"):
        assert await tools.project(alias) == project
    assert await tools.call("ensure_project", human_key="/data/projects/Backend_X", identity_mode="dir") == project
    other = await tools.project("/data/projects/frontend")
    assert other["id"] != project["id"]


async def test_project_is_addressable_by_slug_or_human_key(tools: Tools) -> None:
    project = await tools.project("/srv/My Repo")
    assert project["slug"] == "srv-my-repo"
    by_slug = await tools.agent("BlueLake", project_key="srv-my-repo")
    by_key = await tools.agent("BlueLake", project_key="/srv/My Repo")
    assert by_slug["id"] == by_key["id"]
    assert by_slug["project_id"] == project["id"]


# -- identity ------------------------------------------------------------------------------
async def test_register_agent_result_and_generated_name(tools: Tools) -> None:
    project = await tools.project()
    agent = await tools.agent(task_description="refactor the parser")
    assert set(agent) == AGENT_KEYS | {"registration_token"}
    assert is_generated_shape(agent["name"]) and agent["name"][0].isupper()
    assert agent["project_id"] == project["id"]
    assert agent["program"] == "claude-code" and agent["model"] == "opus-4"
    assert agent["task_description"] == "refactor the parser"
    assert agent["attachments_policy"] == "auto"
    assert agent["last_active_ts"] == agent["inception_ts"]
    assert_iso_utc(agent["inception_ts"])
    token = agent["registration_token"]
    assert len(token) == 43 and all(c.isalnum() or c in "-_" for c in token)


async def test_register_agent_explicit_names_keep_their_casing(tools: Tools) -> None:
    await tools.project()
    for name in ("BlueLake", "bluefox", "alpha-one", "cc-0", "worker_42", "build.bot-1"):
        assert (await tools.agent(name))["name"] == name


async def test_register_existing_name_updates_profile_and_keeps_identity(tools: Tools) -> None:
    await tools.project()
    first = await tools.agent("BlueLake", task_description="first")
    again = await tools.call(
        "register_agent",
        project_key=PROJECT,
        program="codex-cli",
        model="gpt-5",
        name="bluelake",
        task_description="second",
        attachments_policy="inline",
    )
    assert again["id"] == first["id"]
    assert again["name"] == "BlueLake"  # stored casing wins
    # Only a digest of the token is stored: a re-registration that did not prove the token
    # cannot (and must not) reveal it; one that did gets the same token echoed.
    assert again["registration_token"] is None
    assert again["inception_ts"] == first["inception_ts"]
    assert (again["program"], again["model"], again["task_description"]) == ("codex-cli", "gpt-5", "second")
    assert again["attachments_policy"] == "inline"
    assert datetime.fromisoformat(again["last_active_ts"]) >= datetime.fromisoformat(first["last_active_ts"])
    profile = await tools.call("whois", project_key=PROJECT, agent_name="BLUELAKE")
    assert profile["program"] == "codex-cli" and profile["task_description"] == "second"
    proven = await tools.agent("BlueLake", registration_token=first["registration_token"])
    assert (proven["id"], proven["registration_token"]) == (first["id"], first["registration_token"])


async def test_tokens_are_not_stored_in_redis(tools: Tools, server: FastMCP) -> None:
    await tools.project()
    tokens = [(await tools.agent(name))["registration_token"] for name in ("BlueLake", "alpha-one")]
    tokens.append((await tools.agent())["registration_token"])
    dump = json.dumps(await snapshot(server.store))  # type: ignore[attr-defined]
    assert all(len(token) == 43 and token not in dump for token in tokens)


async def test_create_agent_identity_always_creates(tools: Tools) -> None:
    await tools.project()
    blue = await tools.agent("BlueLake")
    hinted = await tools.call(
        "create_agent_identity", project_key=PROJECT, program="codex", model="gpt-5", name_hint="GreenCastle"
    )
    assert set(hinted) == AGENT_KEYS | {"registration_token"}
    assert hinted["name"] == "GreenCastle"
    taken = await tools.call(
        "create_agent_identity", project_key=PROJECT, program="codex", model="gpt-5", name_hint="bluelake"
    )
    invalid = await tools.call(
        "create_agent_identity", project_key=PROJECT, program="codex", model="gpt-5", name_hint="not a name"
    )
    plain = await tools.call("create_agent_identity", project_key=PROJECT, program="codex", model="gpt-5")
    created = [hinted, taken, invalid, plain]
    for agent in (taken, invalid, plain):
        assert is_generated_shape(agent["name"])
    names = [a["name"].lower() for a in [blue, *created]]
    assert len(set(names)) == 5
    assert len({a["id"] for a in [blue, *created]}) == 5
    assert len({a["registration_token"] for a in [blue, *created]}) == 5


async def test_whois(tools: Tools, trio: dict[str, Any]) -> None:
    blue = trio["agents"]["BlueLake"]
    profile = await tools.call("whois", project_key=PROJECT, agent_name="bluelake")
    assert set(profile) == AGENT_KEYS | {"recent_commits"}
    assert profile["recent_commits"] == []
    assert {k: profile[k] for k in AGENT_KEYS} == {k: blue[k] for k in AGENT_KEYS}
    assert "registration_token" not in json.dumps(profile)
    assert blue["registration_token"] not in json.dumps(profile)
    bare = await tools.call("whois", project_key=PROJECT, agent_name="BlueLake", include_recent_commits=False)
    assert bare == {**profile, "recent_commits": []}  # the key stays, as in the reference
    # Sending bumps the sender's last_active_ts to the message time.
    sent = payload(await tools.send("BlueLake", ["GreenCastle"]))
    after = await tools.call("whois", project_key=PROJECT, agent_name="BlueLake")
    assert after["last_active_ts"] == sent["created_ts"]
    assert after["inception_ts"] == blue["inception_ts"]
