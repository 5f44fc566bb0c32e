"""Agent and project lifecycle: retire, unretire, deregister, archive, unarchive (on fakeredis and
a real Redis), their persistence, and their auth under AGENT_AUTH=required."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, drop_prefix, snapshot
from persist_helpers import committed_files, index_rows, run_worker, show
from shapes import payload

from broker.config import Settings
from broker.identity import operator
from broker.lifecycle import retention
from broker.server import build_server

SLUG = "tmp-concurrent-test"


async def whois(tools: Tools, name: str) -> dict[str, Any]:
    return await tools.call("whois", project_key=PROJECT, agent_name=name, include_recent_commits=False)


async def test_retire_and_unretire_round_trip(tools: Tools, trio: dict[str, Any]) -> None:
    assert "retired_at" not in await whois(tools, "GreenCastle")
    retired = await tools.call("retire_agent", project_key=PROJECT, agent_name="greencastle")
    assert retired == {"status": "retired", "agent_name": "GreenCastle", "project_key": PROJECT}
    shown = await whois(tools, "GreenCastle")
    first = shown["retired_at"]
    assert first.endswith("+00:00") and shown["name"] == "GreenCastle"
    # retiring again keeps the original time
    await tools.call("retire_agent", project_key=PROJECT, agent_name="GreenCastle")
    assert (await whois(tools, "GreenCastle"))["retired_at"] == first
    assert "retired_at" not in await whois(tools, "BlueLake")

    active = await tools.call("unretire_agent", project_key=PROJECT, agent_name="GreenCastle")
    assert active == {"status": "active", "agent_name": "GreenCastle", "project_key": PROJECT}
    assert "retired_at" not in await whois(tools, "GreenCastle")


async def test_registering_a_retired_agent_makes_it_active(tools: Tools, trio: dict[str, Any]) -> None:
    green = trio["agents"]["GreenCastle"]
    await tools.call("retire_agent", project_key=PROJECT, agent_name="GreenCastle")
    again = await tools.agent("GreenCastle", task_description="back")
    assert again["id"] == green["id"] and "retired_at" not in again
    assert "retired_at" not in await whois(tools, "GreenCastle")


async def test_deregister_blocks_mail_policy_and_marks_the_task(
    tools: Tools, trio: dict[str, Any], server: FastMCP
) -> None:
    await tools.agent("RedStone", task_description="refactor auth")
    result = await tools.call("deregister_agent", project_key=PROJECT, agent_name="RedStone")
    assert result == {"status": "deregistered", "agent_name": "RedStone", "project_key": PROJECT}
    task = (await whois(tools, "RedStone"))["task_description"]
    assert task.startswith("[DEREGISTERED at ") and task.endswith("] refactor auth")
    stored = await server.store.client().hget(server.store.keys.agents(SLUG), "redstone")  # type: ignore[attr-defined]
    assert '"contact_policy":"block_all"' in stored
    await tools.call("deregister_agent", project_key=PROJECT, agent_name="RedStone")
    assert (await whois(tools, "RedStone"))["task_description"] == task  # prefixed once


async def test_lifecycle_errors(tools: Tools, trio: dict[str, Any], server: FastMCP) -> None:
    before = await snapshot(server.store)  # type: ignore[attr-defined]
    for tool in ("retire_agent", "unretire_agent", "deregister_agent"):
        error = await tools.error(tool, project_key=PROJECT, agent_name="BlueLak")
        assert error.startswith("NOT_FOUND:") and "Did you mean: 'BlueLake'" in error, error
        error = await tools.error(tool, project_key="/tmp/nowhere", agent_name="BlueLake")
        assert error.startswith("NOT_FOUND:") and "Project '/tmp/nowhere' not found" in error
        wrong = trio["agents"]["GreenCastle"]["registration_token"]
        error = await tools.error(tool, project_key=PROJECT, agent_name="BlueLake", registration_token=wrong)
        assert error.startswith("AUTHENTICATION_FAILED:"), error
    for tool in ("archive_project", "unarchive_project"):
        error = await tools.error(tool, project_key=PROJECT, registration_token="not-a-token")
        assert error.startswith("AUTHENTICATION_FAILED:") and "no agent of project" in error
        error = await tools.error(tool, project_key="/tmp/nowhere")
        assert error.startswith("NOT_FOUND:")
    assert await snapshot(server.store) == before  # type: ignore[attr-defined]


async def test_archived_project_refuses_new_work_but_reads(tools: Tools, trio: dict[str, Any]) -> None:
    sent = await tools.send("BlueLake", ["GreenCastle"], subject="before")
    message_id = sent["deliveries"][0]["payload"]["id"]
    held = await tools.call("file_reservation_paths", project_key=PROJECT, agent_name="BlueLake", paths=["src/"])
    token = trio["agents"]["alpha-one"]["registration_token"]
    result = await tools.call("archive_project", project_key=PROJECT, registration_token=token)
    assert result == {"status": "archived", "project_key": PROJECT, "slug": SLUG}
    project = await tools.project()
    assert project["archived_at"].endswith("+00:00")

    refusals = [
        ("register_agent", {"name": "RedStone", "program": "codex", "model": "gpt-5"}),
        ("register_agent", {"name": "BlueLake", "program": "codex", "model": "gpt-5"}),
        ("register_agent", {"program": "codex", "model": "gpt-5"}),
        ("create_agent_identity", {"program": "codex", "model": "gpt-5"}),
        ("file_reservation_paths", {"agent_name": "GreenCastle", "paths": ["docs/"]}),
    ]
    for tool, args in refusals:
        error = await tools.error(tool, project_key=PROJECT, **args)
        assert error == (
            f"PROJECT_ARCHIVED: Project '{PROJECT}' is archived; call unarchive_project(project_key='{PROJECT}') "
            "to reopen it."
        ), (tool, error)
    # reads, read/ack and releases still work
    assert [m["id"] for m in await tools.inbox("GreenCastle")] == [message_id]
    await tools.call("acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=message_id)
    assert (await whois(tools, "BlueLake"))["name"] == "BlueLake"
    released = await tools.call("release_file_reservations", project_key=PROJECT, agent_name="BlueLake")
    assert released["released"] == 1 and held["granted"][0]["path_pattern"] == "src/**"

    assert await tools.call("unarchive_project", project_key=PROJECT) == {
        "status": "active",
        "project_key": PROJECT,
        "slug": SLUG,
    }
    assert "archived_at" not in await tools.project()
    assert (await tools.agent("RedStone"))["name"] == "RedStone"
    granted = await tools.call("file_reservation_paths", project_key=PROJECT, agent_name="GreenCastle", paths=["x"])
    assert granted["granted"][0]["path_pattern"] == "x"


async def test_lifecycle_state_is_persisted(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    await tools.call("retire_agent", project_key=PROJECT, agent_name="GreenCastle")
    await tools.call("deregister_agent", project_key=PROJECT, agent_name="alpha-one")
    await tools.call("archive_project", project_key=PROJECT)
    await run_worker(server, settings)
    rows = {r["name"]: r for r in index_rows(settings, "SELECT * FROM agents")}
    retired_at = (await whois(tools, "GreenCastle"))["retired_at"]
    assert rows["GreenCastle"]["retired_at"] == retired_at
    assert rows["BlueLake"]["retired_at"] is None
    assert rows["alpha-one"]["contact_policy"] == "block_all"
    assert rows["alpha-one"]["task_description"].startswith("[DEREGISTERED at ")
    project = index_rows(settings, "SELECT archived_at FROM projects")[0]
    assert project["archived_at"] == (await tools.project())["archived_at"]
    assert f'"retired_at": "{retired_at}"' in show(settings, f"projects/{SLUG}/agents/GreenCastle/profile.json")

    await tools.call("unarchive_project", project_key=PROJECT)
    await tools.agent("GreenCastle")  # registering again clears retired_at
    await run_worker(server, settings)
    assert index_rows(settings, "SELECT archived_at FROM projects")[0]["archived_at"] is None
    row = index_rows(settings, "SELECT retired_at FROM agents WHERE name = 'GreenCastle'")[0]
    assert row["retired_at"] is None
    assert "retired_at" not in show(settings, f"projects/{SLUG}/agents/GreenCastle/profile.json")


# -- required auth -----------------------------------------------------------------------------
@pytest.fixture
async def required_server(settings: Settings) -> AsyncIterator[FastMCP]:
    mcp = build_server(settings, agent_auth="required")
    yield mcp
    await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_required_auth_for_lifecycle_tools(required_server: FastMCP, settings: Settings) -> None:
    """Under `required` an agent acts on itself; another agent's session is not enough (the
    reference lets it retire or hard-delete others: here that is the operator's, see
    tests/test_access.py); archiving and deleting are the operator's only."""
    operator_token = operator.operator_token(settings)
    async with Client(required_server, mode="legacy") as first, Client(required_server, mode="legacy") as second:
        owner, stranger = Tools(first), Tools(second)
        await owner.project()
        blue = await owner.agent("BlueLake")
        green = await stranger.agent("GreenCastle")  # binds the second session to GreenCastle
        for tool in ("retire_agent", "unretire_agent", "deregister_agent"):
            error = await stranger.error(tool, project_key=PROJECT, agent_name="BlueLake")
            assert error.startswith("AUTHENTICATION_REQUIRED:"), (tool, error)
        await owner.call("retire_agent", project_key=PROJECT, agent_name="BlueLake")  # its own session
        await owner.call("unretire_agent", project_key=PROJECT, agent_name="BlueLake")
        async with Client(required_server) as third:
            nobody = Tools(third)
            error = await nobody.error("retire_agent", project_key=PROJECT, agent_name="BlueLake")
            assert error.startswith("AUTHENTICATION_REQUIRED:"), error
            error = await nobody.error("archive_project", project_key=PROJECT)
            assert error.startswith("AUTHENTICATION_REQUIRED:") and "operator token" in error
            await nobody.call(
                "retire_agent",
                project_key=PROJECT,
                agent_name="BlueLake",
                registration_token=blue["registration_token"],
            )
            # an agent's token is not the operator's
            error = await nobody.error(
                "archive_project", project_key=PROJECT, registration_token=green["registration_token"]
            )
            assert error.startswith("OPERATOR_REQUIRED:"), error
            await nobody.call("archive_project", project_key=PROJECT, operator_token=operator_token)
        error = await owner.error("unarchive_project", project_key=PROJECT)  # a session bound to an agent
        assert error.startswith("OPERATOR_REQUIRED:"), error
        await owner.call("unarchive_project", project_key=PROJECT, operator_token=operator_token)

        await owner.agent("alpha-one")
        async with Client(required_server) as fourth:
            nobody = Tools(fourth)
            for tool, extra in (("hard_delete_agent", {"agent_name": "alpha-one"}), ("hard_delete_project", {})):
                error = await nobody.error(tool, project_key=PROJECT, confirmation="I UNDERSTAND", **extra)
                assert error.startswith("AUTHENTICATION_REQUIRED:"), (tool, error)
        error = await stranger.error(
            "hard_delete_agent", project_key=PROJECT, agent_name="alpha-one", confirmation="I UNDERSTAND"
        )
        assert error.startswith("OPERATOR_REQUIRED:"), error
        deleted = await stranger.call(
            "hard_delete_agent",
            project_key=PROJECT,
            agent_name="alpha-one",
            confirmation="I UNDERSTAND",
            operator_token=operator_token,
        )
        assert deleted["deleted_counts"]["agent"] == 1


# -- purge_old_messages ------------------------------------------------------------------------
async def test_purge_old_messages_tool_defaults_and_errors(tools: Tools, trio: dict[str, Any], server: FastMCP) -> None:
    await tools.send("BlueLake", ["GreenCastle"])
    before = await snapshot(server.store)  # type: ignore[attr-defined]
    result = await tools.call("purge_old_messages", project_key=PROJECT)
    assert result.keys() == {"status", "messages_affected", "cutoff_date", "max_age_days"}
    assert result["status"] == "dry_run" and result["messages_affected"] == 0 and result["max_age_days"] == 180
    cutoff = datetime.fromisoformat(result["cutoff_date"])
    assert abs((datetime.now(UTC) - timedelta(days=180) - cutoff).total_seconds()) < 60
    # nothing is 1 day old yet: a real purge removes nothing
    purged = await tools.call("purge_old_messages", project_key=PROJECT, max_age_days=1, dry_run=False)
    assert purged["status"] == "purged" and purged["messages_affected"] == 0 and purged["max_age_days"] == 1
    assert len(await tools.inbox("GreenCastle")) == 1
    for bad in (0, -3):
        error = await tools.error("purge_old_messages", project_key=PROJECT, max_age_days=bad)
        assert error.startswith("INVALID_ARGUMENT:") and "at least 1" in error
    error = await tools.error("purge_old_messages", project_key="/tmp/nowhere")
    assert error.startswith("NOT_FOUND:")
    error = await tools.error("purge_old_messages", project_key=PROJECT, registration_token="nope")
    assert error.startswith("AUTHENTICATION_FAILED:")
    assert await snapshot(server.store) == before  # type: ignore[attr-defined]


async def test_purge_removes_exactly_the_old_messages(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """Messages are aged honestly by moving the purge's clock (its ``now``), not the messages:
    the cutoff falls between the second and the third message's creation times."""
    store = server.store  # type: ignore[attr-defined]
    sent = []
    for i in range(3):
        extra = {"topic": "t", "thread_id": "T1", "importance": "urgent"}
        sent.append(payload(await tools.send("BlueLake", ["GreenCastle"], cc=["alpha-one"], subject=f"m{i}", **extra)))
    await tools.send("GreenCastle", ["BlueLake"], subject="reply")  # newer than the cutoff
    await run_worker(server, settings)
    now = datetime.fromisoformat(sent[2]["created_ts"]) + timedelta(days=1) - timedelta(microseconds=1)
    old = {sent[0]["id"], sent[1]["id"]}
    assert datetime.fromisoformat(sent[1]["created_ts"]) < now - timedelta(days=1)

    before = await snapshot(store)
    counted = await retention.purge_old_messages(store, PROJECT, 1, True, None, now=now)
    assert counted == {
        "status": "dry_run",
        "messages_affected": 2,
        "cutoff_date": (now - timedelta(days=1)).isoformat(),
        "max_age_days": 1,
    }
    assert await snapshot(store) == before

    purged = await retention.purge_old_messages(store, PROJECT, 1, False, None, now=now)
    assert purged["status"] == "purged" and purged["messages_affected"] == 2
    newest = sent[2]["id"]
    for agent in ("GreenCastle", "alpha-one"):
        assert [m["id"] for m in await tools.inbox(agent)] == [newest]
        assert [m["id"] for m in await tools.inbox(agent, urgent_only=True)] == [newest]
        assert [m["id"] for m in await tools.inbox(agent, topic="t")] == [newest]
    topic = await tools.call("fetch_topic", project_key=PROJECT, topic_name="t", agent_name="BlueLake")
    assert [m["id"] for m in topic] == [newest]
    keys = store.keys
    assert await store.client().zrange(keys.thread(SLUG, "T1"), 0, -1) == [str(newest)]
    assert [f["m"] for _, f in await store.client().xrange(keys.outbox(SLUG, "BlueLake"))] == [str(newest)]
    assert sorted(await store.client().smembers(keys.unread(SLUG, "GreenCastle"))) == [str(newest)]
    for message_id in old:
        assert not await store.client().exists(keys.message(SLUG, message_id))
        assert await store.client().hget(keys.bodies(SLUG), str(message_id)) is None
    rows = index_rows(settings, "SELECT id FROM messages ORDER BY id")
    assert old.isdisjoint(r["id"] for r in rows) and len(rows) == 2
    assert not [r for r in index_rows(settings, "SELECT message_id FROM message_recipients") if r["message_id"] in old]
    # the Git archive keeps history
    assert [f for f in committed_files(settings) if f.endswith(f"__{sent[0]['id']}.md")]
    again = await retention.purge_old_messages(store, PROJECT, 1, False, None, now=now)
    assert again["messages_affected"] == 0
    await run_worker(server, settings)  # a drain afterwards brings nothing back
    assert len(index_rows(settings, "SELECT id FROM messages")) == 2
