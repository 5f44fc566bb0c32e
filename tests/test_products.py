"""The product bus (§3.9): products, links, and mail reads merged across linked projects with
per-(project, agent) authorization."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from helpers import Tools, drop_prefix, make_settings
from persist_helpers import run_worker
from shapes import payload

from broker.config import Settings
from broker.server import build_server

FRONT, BACK = "/tmp/shop-frontend", "/tmp/shop-backend"


@pytest.fixture
def gated_settings(backend: str, tmp_path: Path) -> Settings:
    return make_settings(backend, tmp_path, GIT_IDENTITY_ENABLED="true")


async def served(settings: Settings, auth: str | None = None) -> AsyncIterator[tuple[FastMCP, Tools]]:
    mcp = build_server(settings, agent_auth=auth)
    try:
        async with Client(mcp) as client:
            yield mcp, Tools(client)
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


@pytest.fixture
async def bus(gated_settings: Settings) -> AsyncIterator[tuple[FastMCP, Tools]]:
    async for pair in served(gated_settings):
        yield pair


async def shop(calls: Tools) -> dict[str, dict[str, Any]]:
    """Product "shop" linking two projects, each with its own BlueLake and GreenCastle; returns
    the agents by "<project>/<name>" (each registration has its own token)."""
    agents = {}
    for key in (FRONT, BACK):
        await calls.project(key)
        for name in ("BlueLake", "GreenCastle"):
            agents[f"{key}/{name}"] = await calls.agent(name, project_key=key)
    await calls.call("ensure_product", name="shop")
    for key in (FRONT, BACK):
        await calls.call("products_link", product_key="shop", project_key=key)
    return agents


# -- products and links ----------------------------------------------------------------------
async def test_ensure_product_by_uid_or_name(bus: tuple[FastMCP, Tools]) -> None:
    _, calls = bus
    made = await calls.call("ensure_product", product_key="ABCDEF0123", name="Shop")
    assert set(made) == {"id", "product_uid", "name", "created_at"}
    assert (made["product_uid"], made["name"]) == ("abcdef0123", "Shop")
    assert await calls.call("ensure_product", product_key="abcdef0123") == made
    assert await calls.call("ensure_product", product_key="Shop") == made
    assert await calls.call("ensure_product", name="Shop") == made
    named = await calls.call("ensure_product", name="Tools")
    assert len(named["product_uid"]) == 20 and named["id"] != made["id"] and named["name"] == "Tools"
    error = await calls.error("ensure_product")
    assert error.startswith("INVALID_ARGUMENT: Pass product_key or name")
    error = await calls.error("ensure_product", product_key="0123456789", name="Shop")
    assert error.startswith("PRODUCT_NAME_TAKEN: A product named 'Shop' already exists (product_uid 'abcdef0123')")


async def test_concurrent_ensures_create_one_product(bus: tuple[FastMCP, Tools]) -> None:
    _, calls = bus
    made = await asyncio.gather(*(calls.call("ensure_product", name="race") for _ in range(12)))
    assert len({json.dumps(product, sort_keys=True) for product in made}) == 1


async def test_products_link_and_the_product_resource(bus: tuple[FastMCP, Tools]) -> None:
    _, calls = bus
    project = await calls.project(FRONT)
    product = await calls.call("ensure_product", name="shop")
    linked = await calls.call("products_link", product_key="shop", project_key=FRONT)
    assert linked == {
        "product": {"id": product["id"], "product_uid": product["product_uid"], "name": "shop"},
        "project": {"id": project["id"], "slug": project["slug"], "human_key": FRONT},
        "linked": True,
    }
    assert await calls.call("products_link", product_key=product["product_uid"], project_key=FRONT) == linked
    view = json.loads((await calls.client.read_resource("resource://product/shop"))[0].text)
    assert view == {**product, "projects": [{k: project[k] for k in ("id", "slug", "human_key", "created_at")}]}
    error = await calls.error("products_link", product_key="nope", project_key=FRONT)
    assert error.startswith("NOT_FOUND: Product 'nope' not found. Create it with ensure_product")
    error = await calls.error("products_link", product_key="shop", project_key="/tmp/nowhere")
    assert error.startswith("NOT_FOUND: Project '/tmp/nowhere' not found")


async def test_hard_deleting_a_project_removes_its_links(bus: tuple[FastMCP, Tools]) -> None:
    _, calls = bus
    await shop(calls)
    deleted = await calls.call("hard_delete_project", project_key=BACK, confirmation="I UNDERSTAND")
    assert deleted["deleted_counts"]["product_links"] == 1
    view = json.loads((await calls.client.read_resource("resource://product/shop"))[0].text)
    assert [p["human_key"] for p in view["projects"]] == [FRONT]
    await calls.project(BACK)  # the same path again is a new project, not linked
    view = json.loads((await calls.client.read_resource("resource://product/shop"))[0].text)
    assert [p["human_key"] for p in view["projects"]] == [FRONT]


# -- merged reads ---------------------------------------------------------------------------
async def test_fetch_inbox_product_merges_the_linked_inboxes(bus: tuple[FastMCP, Tools]) -> None:
    _, calls = bus
    await shop(calls)
    await calls.project("/tmp/elsewhere")
    await calls.agent("BlueLake", project_key="/tmp/elsewhere")
    await calls.agent("GreenCastle", project_key="/tmp/elsewhere")
    ids = []
    for key in (FRONT, BACK, FRONT, "/tmp/elsewhere"):
        sent = await calls.send("GreenCastle", ["BlueLake"], project_key=key, subject=f"to {key}")
        ids.append(payload(sent)["id"])
    merged = await calls.call("fetch_inbox_product", product_key="shop", agent_name="BlueLake")
    assert [item["id"] for item in merged] == ids[2::-1]  # newest first; the unlinked project is not read
    assert [item["id"] for item in await calls.inbox("BlueLake", project_key=FRONT)] == [ids[2], ids[0]]
    limited = await calls.call("fetch_inbox_product", product_key="shop", agent_name="BlueLake", limit=2)
    assert [item["id"] for item in limited] == ids[2:0:-1]
    error = await calls.error("fetch_inbox_product", product_key="shop", agent_name="RedStone")
    assert error.startswith("NOT_FOUND: fetch_inbox_product: Agent 'RedStone' is not registered in any project")


async def test_required_auth_reads_only_the_projects_the_token_opens(gated_settings: Settings) -> None:
    async for _mcp, calls in served(gated_settings, "required"):
        agents = await shop(calls)
        for key in (FRONT, BACK):
            green = agents[f"{key}/GreenCastle"]["registration_token"]
            await calls.send("GreenCastle", ["BlueLake"], project_key=key, subject=f"to {key}", sender_token=green)
        args = {"product_key": "shop", "agent_name": "BlueLake"}
        error = await calls.error("fetch_inbox_product", **args)
        assert error.startswith("AUTHENTICATION_REQUIRED:")
        wrong = agents[f"{FRONT}/GreenCastle"]["registration_token"]
        error = await calls.error("fetch_inbox_product", **args, registration_token=wrong)
        assert error.startswith("AUTHENTICATION_FAILED: Invalid registration_token for agent 'BlueLake'")
        front = agents[f"{FRONT}/BlueLake"]["registration_token"]
        seen = await calls.call("fetch_inbox_product", **args, registration_token=front)
        assert [item["subject"] for item in seen] == [f"to {FRONT}"]  # the back-end BlueLake has its own token
        error = await calls.error("search_messages_product", product_key="shop", query="to")
        assert error.startswith("AUTHENTICATION_REQUIRED:")


async def test_search_and_summary_across_the_product(bus: tuple[FastMCP, Tools], gated_settings: Settings) -> None:
    mcp, calls = bus
    await shop(calls)
    await calls.agent("alpha-one", project_key=BACK)
    plan = payload(
        await calls.send(
            "GreenCastle", ["BlueLake"], project_key=FRONT, subject="Deploy plan",
            body_md="- build the UI\n@BlueLake review", thread_id="SHIP-1",
        )
    )  # fmt: skip
    api = payload(
        await calls.send(
            "BlueLake", ["GreenCastle"], project_key=BACK, subject="Deploy API",
            body_md="- [ ] TODO migrate the schema", thread_id="SHIP-1",
        )
    )  # fmt: skip
    await calls.send("alpha-one", ["GreenCastle"], project_key=BACK, subject="Deploy secret", body_md="private")
    await run_worker(mcp, gated_settings)

    found = await calls.call("search_messages_product", product_key="shop", query="deploy", agent_name="BlueLake")
    assert sorted(item["id"] for item in found) == sorted([plan["id"], api["id"]])  # not the private one
    by_id = {item["id"]: item for item in found}
    assert by_id[plan["id"]]["project_id"] != by_id[api["id"]]["project_id"]
    assert set(by_id[plan["id"]]) == {
        "id", "subject", "importance", "ack_required", "created_ts", "thread_id", "from", "project_id"
    }  # fmt: skip

    summary = await calls.call(
        "summarize_thread_product", product_key="shop", thread_id="SHIP-1", include_examples=True,
        agent_name="BlueLake",
    )  # fmt: skip
    assert set(summary) == {"thread_id", "summary", "examples"}
    assert summary["summary"]["total_messages"] == 2
    assert summary["summary"]["participants"] == ["BlueLake", "GreenCastle"]
    assert [e["id"] for e in summary["examples"]] == [plan["id"], api["id"]]
    assert "- [ ] TODO migrate the schema" in summary["summary"]["action_items"]
    newest = await calls.call(
        "summarize_thread_product", product_key="shop", thread_id="SHIP-1", per_thread_limit=1, agent_name="BlueLake"
    )
    assert newest["summary"]["total_messages"] == 1
    error = await calls.error("summarize_thread_product", product_key="shop", thread_id="A,B", agent_name="BlueLake")
    assert error.startswith("INVALID_THREAD_ID:")
    error = await calls.error("fetch_inbox_product", product_key="shop", agent_name="BlueLake", since_ts="soon")
    assert error.startswith("INVALID_TIMESTAMP:")
