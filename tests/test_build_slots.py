"""Build slots (§3.8): gating, lease semantics and conflicts, concurrency, authentication."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from helpers import PROJECT, SLUG, Tools, drop_prefix, git, make_repo, make_settings
from redis.asyncio import Redis

from broker.server import build_server

GATED = {
    "acquire_build_slot", "renew_build_slot", "release_build_slot", "ensure_product", "products_link",
    "search_messages_product", "fetch_inbox_product", "summarize_thread_product",
}  # fmt: skip
LEASE_KEYS = {"slot", "agent", "branch", "exclusive", "acquired_ts", "expires_ts"}


async def gated_server(backend: str, root: Path, **overrides: Any) -> AsyncIterator[FastMCP]:
    mcp = build_server(make_settings(backend, root, WORKTREES_ENABLED="true", **overrides))
    try:
        yield mcp
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


@pytest.fixture
async def slots(backend: str, tmp_path: Path) -> AsyncIterator[Tools]:
    async for mcp in gated_server(backend, tmp_path):
        async with Client(mcp) as client:
            calls = Tools(client)
            await calls.project()
            for name in ("BlueLake", "GreenCastle"):
                await calls.agent(name)
            yield calls


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def acquire(calls: Tools, agent: str, slot: str = "build", **extra: Any) -> dict[str, Any]:
    return await calls.call("acquire_build_slot", project_key=PROJECT, agent_name=agent, slot=slot, **extra)


# -- gating ----------------------------------------------------------------------------------
async def test_gated_tools_are_absent_by_default(tools: Tools) -> None:
    listed = {tool.name for tool in await tools.client.list_tools()}
    assert listed & GATED == set()
    error = await tools.error("acquire_build_slot", project_key=PROJECT, agent_name="BlueLake", slot="build")
    assert "acquire_build_slot" in error  # an unknown tool: not registered at all
    templates = {t.uri_template for t in await tools.client.list_resource_templates()}
    assert not any(uri.startswith("resource://product/") for uri in templates)


@pytest.mark.parametrize("setting", ["WORKTREES_ENABLED", "GIT_IDENTITY_ENABLED"])
async def test_either_gate_setting_registers_the_eight_tools(backend: str, tmp_path: Path, setting: str) -> None:
    mcp = build_server(make_settings(backend, tmp_path, **{setting: "true"}))
    try:
        async with Client(mcp) as client:
            listed = {tool.name for tool in await client.list_tools()}
            templates = {t.uri_template for t in await client.list_resource_templates()}
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]
    assert listed >= GATED
    assert "resource://product/{key}{?format}" in templates


async def test_profiles_and_the_directory_know_the_gated_clusters(backend: str, tmp_path: Path) -> None:
    custom = {"TOOLS_FILTER_ENABLED": "true", "TOOLS_FILTER_PROFILE": "custom", "TOOLS_FILTER_CLUSTERS": "build_slots"}
    async for mcp in gated_server(backend, tmp_path, **custom):
        async with Client(mcp) as client:
            assert {tool.name for tool in await client.list_tools()} == {
                "acquire_build_slot", "renew_build_slot", "release_build_slot"
            }  # fmt: skip
    async for mcp in gated_server(backend, tmp_path):
        async with Client(mcp) as client:
            directory = json.loads((await client.read_resource("resource://tooling/directory"))[0].text)
    clusters = {c["name"]: [t["name"] for t in c["tools"]] for c in directory["clusters"]}
    assert clusters["build_slots"] == ["acquire_build_slot", "renew_build_slot", "release_build_slot"]
    assert len(clusters["product_bus"]) == 5


async def test_the_gated_tools_have_the_references_parameters(slots: Tools) -> None:
    tools = {tool.name: tool for tool in await slots.client.list_tools()}
    params = {name: list(tools[name].input_schema["properties"]) for name in GATED}
    assert params == {
        "acquire_build_slot": ["project_key", "agent_name", "slot", "branch", "ttl_seconds", "exclusive",
                               "registration_token", "format"],
        "renew_build_slot": ["project_key", "agent_name", "slot", "branch", "extend_seconds", "registration_token",
                             "format"],
        "release_build_slot": ["project_key", "agent_name", "slot", "branch", "registration_token", "format"],
        "ensure_product": ["product_key", "name", "format"],
        "products_link": ["product_key", "project_key", "format"],
        "search_messages_product": ["product_key", "query", "limit", "agent_name", "registration_token", "format"],
        "fetch_inbox_product": ["product_key", "agent_name", "limit", "urgent_only", "include_bodies", "since_ts",
                                "registration_token", "format"],
        "summarize_thread_product": ["product_key", "thread_id", "include_examples", "llm_mode", "llm_model",
                                     "per_thread_limit", "agent_name", "registration_token", "format"],
    }  # fmt: skip
    defaults = tools["acquire_build_slot"].input_schema["properties"]
    assert (defaults["ttl_seconds"]["default"], defaults["exclusive"]["default"]) == (3600, True)
    assert tools["renew_build_slot"].input_schema["properties"]["extend_seconds"]["default"] == 1800


# -- acquire, renew, release -------------------------------------------------------------------
async def test_acquire_is_always_granted_and_lists_conflicts(slots: Tools) -> None:
    first = await acquire(slots, "BlueLake", branch="main")
    assert set(first) == {"granted", "conflicts"} and set(first["granted"]) == LEASE_KEYS
    assert first["conflicts"] == []
    granted = first["granted"]
    assert (granted["slot"], granted["agent"], granted["branch"], granted["exclusive"]) == (
        "build", "BlueLake", "main", True
    )  # fmt: skip
    assert seconds(granted["expires_ts"]) - seconds(granted["acquired_ts"]) == pytest.approx(3600, abs=1)

    second = await acquire(slots, "GreenCastle", branch="main", exclusive=False)
    assert second["granted"]["agent"] == "GreenCastle"
    assert second["conflicts"] == [granted]  # a shared request meets an exclusive holder
    # another slot is another resource
    assert (await acquire(slots, "GreenCastle", slot="dev-server", branch="main"))["conflicts"] == []


async def test_shared_leases_do_not_conflict_with_each_other(slots: Tools) -> None:
    await acquire(slots, "BlueLake", branch="main", exclusive=False)
    assert (await acquire(slots, "GreenCastle", branch="main", exclusive=False))["conflicts"] == []
    exclusive = await acquire(slots, "GreenCastle", slot="build", branch="dev")
    # the same agent on another branch is another holder; both shared leases are listed
    assert sorted((c["agent"], c["branch"]) for c in exclusive["conflicts"]) == [
        ("BlueLake", "main"), ("GreenCastle", "main")
    ]  # fmt: skip


async def test_reacquire_keeps_acquired_ts_and_the_later_expiry(slots: Tools) -> None:
    first = (await acquire(slots, "BlueLake", branch="main", ttl_seconds=3600))["granted"]
    shorter = (await acquire(slots, "bluelake", branch="main", ttl_seconds=600, exclusive=False))["granted"]
    assert shorter["acquired_ts"] == first["acquired_ts"] and shorter["expires_ts"] == first["expires_ts"]
    assert shorter["exclusive"] is False
    longer = (await acquire(slots, "BlueLake", branch="main", ttl_seconds=7200))["granted"]
    assert longer["acquired_ts"] == first["acquired_ts"]
    assert seconds(longer["expires_ts"]) - seconds(first["acquired_ts"]) == pytest.approx(7200, abs=2)
    # the agent's own lease is never its conflict
    assert (await acquire(slots, "BlueLake", branch="main"))["conflicts"] == []


async def test_ttl_below_sixty_counts_as_sixty_and_out_of_range_is_refused(slots: Tools) -> None:
    granted = (await acquire(slots, "BlueLake", branch="main", ttl_seconds=5))["granted"]
    assert seconds(granted["expires_ts"]) - seconds(granted["acquired_ts"]) == pytest.approx(60, abs=1)
    error = await slots.error(
        "acquire_build_slot", project_key=PROJECT, agent_name="BlueLake", slot="build", ttl_seconds=10**9
    )
    assert error.startswith("INVALID_ARGUMENT: ttl_seconds=1000000000 is out of range")
    for bad in ("", "two words", "x" * 129):
        error = await slots.error("acquire_build_slot", project_key=PROJECT, agent_name="BlueLake", slot=bad)
        assert error.startswith("INVALID_ARGUMENT: slot=")


async def test_renew_extends_a_live_lease_only(slots: Tools) -> None:
    granted = (await acquire(slots, "BlueLake", branch="main", ttl_seconds=600))["granted"]
    renewed = await slots.call(
        "renew_build_slot", project_key=PROJECT, agent_name="BlueLake", slot="build", branch="main"
    )
    assert renewed["renewed"] is True
    assert seconds(renewed["expires_ts"]) == pytest.approx(seconds(granted["expires_ts"]) + 1800, abs=0.01)
    missing = await slots.call(
        "renew_build_slot", project_key=PROJECT, agent_name="GreenCastle", slot="build", branch="main"
    )
    assert missing == {"renewed": False, "expires_ts": None}


async def test_release_ends_the_lease_and_is_idempotent(slots: Tools) -> None:
    await acquire(slots, "BlueLake", branch="main")
    args = {"project_key": PROJECT, "agent_name": "BlueLake", "slot": "build", "branch": "main"}
    released = await slots.call("release_build_slot", **args)
    assert released["released"] is True and seconds(released["released_at"]) > 0
    assert (await slots.call("release_build_slot", **args))["released"] is False
    assert (await acquire(slots, "GreenCastle", branch="main"))["conflicts"] == []
    assert (await slots.call("renew_build_slot", **args))["renewed"] is False


async def test_an_expired_lease_is_no_conflict_and_is_dropped(slots: Tools, redis_client: Redis) -> None:
    await acquire(slots, "BlueLake", branch="main")
    store_prefix = (await redis_client.keys("*:{" + SLUG + "}:slot:build"))[0]
    # let the lease's time pass: its stored expiry moves into the past
    holder, value = next(iter((await redis_client.hgetall(store_prefix)).items()))
    lease = json.loads(value)
    lease["expires_us"] = str(int(lease["acquired_us"]) - 1)
    await redis_client.hset(store_prefix, holder, json.dumps(lease))
    assert (await acquire(slots, "GreenCastle", branch="main"))["conflicts"] == []
    assert list(await redis_client.hkeys(store_prefix)) == ["greencastle main"]
    assert 0 < await redis_client.pttl(store_prefix) <= 3601_000  # the hash goes with its last lease


async def test_branch_defaults_to_the_projects_checked_out_branch(backend: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "commit", "-q", "--allow-empty", "-m", "start")
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "wt/other", str(linked))
    git(repo, "checkout", "-q", "-b", "feature/slots")
    async for mcp in gated_server(backend, tmp_path / "root"):
        async with Client(mcp) as client:
            calls = Tools(client)
            await calls.project(str(repo))
            await calls.agent("BlueLake", project_key=str(repo))
            await calls.project()
            await calls.agent("BlueLake")
            in_repo = await calls.call("acquire_build_slot", project_key=str(repo), agent_name="BlueLake", slot="b")
            elsewhere = await acquire(calls, "BlueLake")
            await calls.project(str(linked))
            await calls.agent("BlueLake", project_key=str(linked))
            worktree = await calls.call("acquire_build_slot", project_key=str(linked), agent_name="BlueLake", slot="b")
    assert in_repo["granted"]["branch"] == "feature/slots"
    assert worktree["granted"]["branch"] == "wt/other"  # a linked worktree's own HEAD
    assert elsewhere["granted"]["branch"] == "unknown"  # /tmp/concurrent-test is no repository here


async def test_unknown_agent_project_and_archived_project(slots: Tools) -> None:
    error = await slots.error("acquire_build_slot", project_key=PROJECT, agent_name="RedStone", slot="build")
    assert error.startswith("NOT_FOUND: Agent 'RedStone' not found")
    error = await slots.error("acquire_build_slot", project_key="/tmp/nowhere", agent_name="BlueLake", slot="b")
    assert error.startswith("NOT_FOUND: Project '/tmp/nowhere' not found")
    await slots.call("archive_project", project_key=PROJECT)
    error = await slots.error("acquire_build_slot", project_key=PROJECT, agent_name="BlueLake", slot="build")
    assert error.startswith("PROJECT_ARCHIVED:")


async def test_hard_deleting_an_agent_drops_its_leases(slots: Tools) -> None:
    await acquire(slots, "BlueLake", branch="main")
    await acquire(slots, "BlueLake", slot="dev-server", branch="feature")
    await slots.call("hard_delete_agent", project_key=PROJECT, agent_name="BlueLake", confirmation="I UNDERSTAND")
    assert (await acquire(slots, "GreenCastle", branch="main"))["conflicts"] == []
    assert (await acquire(slots, "GreenCastle", slot="dev-server", branch="main"))["conflicts"] == []


# -- concurrency ---------------------------------------------------------------------------------
async def test_concurrent_acquires_of_one_exclusive_slot_see_a_serial_order(slots: Tools) -> None:
    names = [f"agent-{i}" for i in range(16)]
    for name in names:
        await slots.agent(name)
    results = await asyncio.gather(*(acquire(slots, name, branch="main") for name in names))
    # every call was granted; the k-th to run met the k earlier holders, and only them
    assert sorted(len(r["conflicts"]) for r in results) == list(range(len(names)))
    by_agent = {r["granted"]["agent"]: r for r in results}
    order = sorted(names, key=lambda name: len(by_agent[name]["conflicts"]))
    for position, name in enumerate(order):
        assert {c["agent"] for c in by_agent[name]["conflicts"]} == set(order[:position])


# -- authentication ------------------------------------------------------------------------------
async def test_required_auth_refuses_calls_without_the_agents_token(backend: str, tmp_path: Path) -> None:
    mcp = build_server(make_settings(backend, tmp_path, WORKTREES_ENABLED="true"), agent_auth="required")
    try:
        async with Client(mcp) as client:
            calls = Tools(client)
            await calls.project()
            blue = await calls.agent("BlueLake")
            green = await calls.agent("GreenCastle")
            args = {"project_key": PROJECT, "agent_name": "BlueLake", "slot": "build", "branch": "main"}
            for tool in ("acquire_build_slot", "renew_build_slot", "release_build_slot"):
                assert (await calls.error(tool, **args)).startswith("AUTHENTICATION_REQUIRED:")
                wrong = await calls.error(tool, **args, registration_token=green["registration_token"])
                assert wrong.startswith("AUTHENTICATION_FAILED: Invalid registration_token for agent 'BlueLake'")
            token = blue["registration_token"]
            assert (await calls.call("acquire_build_slot", **args, registration_token=token))["conflicts"] == []
            assert (await calls.call("renew_build_slot", **args, registration_token=token))["renewed"] is True
            assert (await calls.call("release_build_slot", **args, registration_token=token))["released"] is True
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]
