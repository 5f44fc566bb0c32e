"""Access under AGENT_AUTH=required (docs/security.md): the summaries show only the viewer's own
mail, and the destructive project-wide tools need the operator credential, which joining a
project does not give."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, drop_prefix
from persist_helpers import committed_files, index_rows, run_worker

from broker.config import Settings
from broker.identity import operator
from broker.server import build_server

SLUG = "tmp-concurrent-test"


@pytest.fixture
async def required(settings: Settings) -> AsyncIterator[FastMCP]:
    mcp = build_server(settings, agent_auth="required")
    yield mcp
    await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def team(tools: Tools) -> dict[str, str]:
    """BlueLake, GreenCastle and alpha-one; returns their tokens."""
    await tools.project()
    return {name: (await tools.agent(name))["registration_token"] for name in ("BlueLake", "GreenCastle", "alpha-one")}


async def send(tools: Tools, tokens: dict[str, str], sender: str, body: str, **recipients: Any) -> None:
    await tools.call(
        "send_message",
        project_key=PROJECT,
        sender_name=sender,
        sender_token=tokens[sender],
        subject=f"from {sender}",
        body_md=body,
        **{"to": [], **recipients},
    )


def points(summary: dict[str, Any]) -> list[str]:
    return json.loads(summary["summary_text"])["key_points"]


# -- item 1: summaries ------------------------------------------------------------------------
async def test_summaries_show_only_the_viewers_mail(required: FastMCP, settings: Settings) -> None:
    """alpha-one writes privately to GreenCastle and BCC-only to BlueLake: no caller without a
    token learns anything, and each agent's summary holds only mail it sent or received."""
    async with Client(required) as client:  # modern protocol: no session binding between calls
        tools = Tools(client)
        tokens = await team(tools)
        await send(tools, tokens, "alpha-one", "- green secret\n- [ ] TODO rotate the keys", to=["GreenCastle"])
        await send(tools, tokens, "alpha-one", "- blue bcc secret", bcc=["BlueLake"])
        await send(tools, tokens, "BlueLake", "- shared plan", to=["GreenCastle"])
        await run_worker(required, settings)

        for tool in ("summarize_recent", "fetch_summary"):
            error = await tools.error(tool, project_key=PROJECT)
            assert error.startswith("AUTHENTICATION_REQUIRED:"), (tool, error)
            error = await tools.error(tool, project_key=PROJECT, agent_name="BlueLake")
            assert error.startswith("AUTHENTICATION_REQUIRED:"), (tool, error)
            error = await tools.error(tool, project_key=PROJECT, agent_name="BlueLake", registration_token="x" * 43)
            assert error.startswith("AUTHENTICATION_FAILED:"), (tool, error)

        def as_(name: str) -> dict[str, str]:
            return {"project_key": PROJECT, "agent_name": name, "registration_token": tokens[name]}

        green = await tools.call("summarize_recent", **as_("GreenCastle"))
        assert points(green) == ["green secret", "TODO rotate the keys", "shared plan"]
        assert green["source_message_count"] == 2
        blue = await tools.call("summarize_recent", **as_("BlueLake"))
        assert points(blue) == ["blue bcc secret", "shared plan"]  # a BCC recipient sees its copy
        assert json.loads(blue["summary_text"])["action_items"] == []
        # stored summaries are per viewer, and the cache never hands one viewer another's
        assert (await tools.call("summarize_recent", **as_("BlueLake")))["id"] == blue["id"]
        assert [s["id"] for s in await tools.call("fetch_summary", **as_("BlueLake"))] == [blue["id"]]
        assert [s["id"] for s in await tools.call("fetch_summary", **as_("GreenCastle"))] == [green["id"]]


async def test_summaries_under_open_auth(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """Under `open` an agent_name narrows the summary to that agent's mail; without one the
    whole project is summarised (the reference's behaviour), stored apart from agents' ones."""
    await tools.send("alpha-one", ["GreenCastle"], body_md="- private point")
    await tools.send("BlueLake", ["GreenCastle"], body_md="- blue point")
    await run_worker(server, settings)
    whole = await tools.call("summarize_recent", project_key=PROJECT)
    assert points(whole) == ["private point", "blue point"]
    blue = await tools.call("summarize_recent", project_key=PROJECT, agent_name="BlueLake")
    assert points(blue) == ["blue point"] and blue["id"] != whole["id"]
    assert [s["id"] for s in await tools.call("fetch_summary", project_key=PROJECT)] == [whole["id"]]
    listed = await tools.call("fetch_summary", project_key=PROJECT, agent_name="BlueLake")
    assert [s["id"] for s in listed] == [blue["id"]]
    error = await tools.error("fetch_summary", project_key=PROJECT, agent_name="BlueLake", registration_token="nope")
    assert error.startswith("AUTHENTICATION_FAILED:")


async def test_summaries_made_for_a_deleted_agent_go_with_it(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    await tools.send("alpha-one", ["BlueLake"], body_md="- for blue")
    await run_worker(server, settings)
    await tools.call("summarize_recent", project_key=PROJECT, agent_name="BlueLake")
    await tools.call("summarize_recent", project_key=PROJECT, agent_name="alpha-one")
    await tools.call("hard_delete_agent", project_key=PROJECT, agent_name="BlueLake", confirmation="I UNDERSTAND")
    rows = index_rows(settings, "SELECT a.name FROM message_summaries s JOIN agents a ON a.id = s.agent_id")
    assert [r["name"] for r in rows] == ["alpha-one"]


def test_an_index_made_before_viewers_gets_the_column(settings: Settings) -> None:
    """Older index files have message_summaries without agent_id; their rows become project-wide
    summaries, which no agent sees under `required`."""
    import sqlite3

    path = settings.index_path
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE message_summaries (id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, summary_text TEXT "
        "NOT NULL, start_ts TEXT NOT NULL, end_ts TEXT NOT NULL, source_message_count INTEGER NOT NULL DEFAULT 0, "
        "source_thread_ids TEXT NOT NULL DEFAULT '[]', llm_model VARCHAR(128), cost_usd REAL, created_ts TEXT NOT NULL)"
    )
    conn.execute("INSERT INTO message_summaries VALUES (1, 1, '{}', 'a', 'b', 0, '[]', NULL, NULL, 'c')")
    conn.commit()
    conn.close()
    from broker.persistence.index import Index

    index = Index(path)
    index.ensure_schema()
    index.ensure_schema()  # twice: idempotent
    index.close()
    assert index_rows(settings, "SELECT id, agent_id FROM message_summaries") == [{"id": 1, "agent_id": None}]


async def test_whois_commits_name_only_the_agents_own_mail(required: FastMCP, settings: Settings) -> None:
    """An archive commit's summary names a message's sender, recipients and subject; under
    `required` whois lists only the commits of the agent's own folder."""
    async with Client(required) as client:
        tools = Tools(client)
        tokens = await team(tools)
        await run_worker(required, settings)
        await tools.call(
            "send_message", project_key=PROJECT, sender_name="alpha-one", sender_token=tokens["alpha-one"],
            to=["GreenCastle"], subject="secret subject", body_md="x",
        )  # fmt: skip
        await run_worker(required, settings)

        async def summaries(name: str) -> list[str]:
            found = await tools.call(
                "whois", project_key=PROJECT, agent_name=name, registration_token=tokens[name], commit_limit=50
            )
            return [c["summary"] for c in found["recent_commits"]]

        assert any("secret subject" in line for line in await summaries("GreenCastle"))
        blue = await summaries("BlueLake")
        assert blue and not any("secret subject" in line for line in blue)  # its profile's commit only


# -- item 2: the operator credential -------------------------------------------------------------
async def test_an_agents_token_cannot_delete_the_project_the_operators_can(
    required: FastMCP, settings: Settings
) -> None:
    """The issue's stranger: joins with create_agent_identity (no auth needed) and uses its fresh
    token as "project admin". Refused for every destructive project-wide call; nothing changes.
    The operator token (what `broker admin-token` prints) is accepted, as operator_token or,
    for reference clients, as registration_token."""
    async with Client(required) as client:
        tools = Tools(client)
        tokens = await team(tools)
        await send(tools, tokens, "BlueLake", "keep me", to=["GreenCastle"])
        await run_worker(required, settings)
        stranger = await tools.call("create_agent_identity", project_key=PROJECT, program="x", model="y")
        theirs = stranger["registration_token"]
        confirm = {"confirmation": "I UNDERSTAND"}
        refused: list[tuple[str, dict[str, Any]]] = [
            ("hard_delete_project", confirm),
            ("hard_delete_agent", {"agent_name": "GreenCastle", **confirm}),
            ("archive_project", {}),
            ("unarchive_project", {}),
            ("purge_old_messages", {"max_age_days": 1, "dry_run": False}),
            ("retire_agent", {"agent_name": "GreenCastle"}),
            ("deregister_agent", {"agent_name": "GreenCastle"}),
        ]
        for tool, extra in refused:
            error = await tools.error(tool, project_key=PROJECT, registration_token=theirs, **extra)
            assert error.split(":")[0] in ("OPERATOR_REQUIRED", "AUTHENTICATION_FAILED"), (tool, error)
        # even an agent of long standing deleting itself: it would take its mail out of others' inboxes
        error = await tools.error(
            "hard_delete_agent",
            project_key=PROJECT,
            agent_name="BlueLake",
            registration_token=tokens["BlueLake"],
            **confirm,
        )
        assert error.startswith("OPERATOR_REQUIRED:")
        error = await tools.error("hard_delete_project", project_key=PROJECT, operator_token=theirs, **confirm)
        assert error.startswith("AUTHENTICATION_FAILED:")
        assert len(await tools.inbox("GreenCastle", registration_token=tokens["GreenCastle"])) == 1
        assert len(index_rows(settings, "SELECT id FROM messages")) == 1
        green = await tools.call(
            "whois", project_key=PROJECT, agent_name="GreenCastle", registration_token=tokens["GreenCastle"]
        )
        assert "retired_at" not in green and not green["task_description"].startswith("[DEREGISTERED")
        # what joining does give: counting (a dry run) and acting on oneself
        counted = await tools.call("purge_old_messages", project_key=PROJECT, registration_token=theirs)
        assert counted["status"] == "dry_run"
        await tools.call("retire_agent", project_key=PROJECT, agent_name=stranger["name"], registration_token=theirs)

        token = admin_token_cli(settings)
        assert token == operator.operator_token(settings)
        await tools.call("retire_agent", project_key=PROJECT, agent_name="GreenCastle", operator_token=token)
        await tools.call("unretire_agent", project_key=PROJECT, agent_name="GreenCastle", registration_token=token)
        deleted = await tools.call("hard_delete_project", project_key=PROJECT, registration_token=token, **confirm)
        assert deleted["status"] == "hard_deleted" and deleted["deleted_counts"]["messages"] == 1
        assert index_rows(settings, "SELECT id FROM messages") == []
        assert not [f for f in committed_files(settings) if f.startswith(f"projects/{SLUG}/")]


async def test_open_auth_keeps_single_user_setups_working(
    tools: Tools, trio: dict[str, Any], settings: Settings
) -> None:
    """Under `open` (stdio, loopback on a single-user machine) no credential is needed, the
    operator token also works, and a wrong one is refused."""
    await tools.call("archive_project", project_key=PROJECT)
    await tools.call("unarchive_project", project_key=PROJECT, operator_token=operator.operator_token(settings))
    error = await tools.error("unarchive_project", project_key=PROJECT, operator_token="w" * 43)
    assert error.startswith("AUTHENTICATION_FAILED:")
    error = await tools.error("archive_project", project_key=PROJECT, registration_token="w" * 43)
    assert error.startswith("AUTHENTICATION_FAILED:")
    await tools.call("hard_delete_project", project_key=PROJECT, confirmation="I UNDERSTAND")


def admin_token_cli(settings: Settings, *args: str, env: dict[str, str] | None = None) -> str:
    """``broker admin-token`` as an operator runs it on the broker's host."""
    base = {k: v for k, v in os.environ.items() if k not in ("BROKER_ADMIN_TOKEN", "STORAGE_ROOT")}
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", "admin-token", *args],
        env={**base, "STORAGE_ROOT": str(settings.storage_root), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_admin_token_file_is_owner_only_and_rotates(tmp_path: Path) -> None:
    settings = Settings(STORAGE_ROOT=tmp_path / "root")
    assert not operator.is_operator(settings, "x" * 43)
    assert not operator.token_path(settings).exists()  # a check never creates the file
    first = admin_token_cli(settings)
    assert len(first) >= 43 and admin_token_cli(settings) == first
    path = operator.token_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert operator.is_operator(settings, first) and not operator.is_operator(settings, first[:-1] + "x")
    rotated = admin_token_cli(settings, "--rotate")
    assert rotated != first and admin_token_cli(settings) == rotated
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and not operator.is_operator(settings, first)
    configured = "c" * 40
    assert admin_token_cli(settings, env={"BROKER_ADMIN_TOKEN": configured}) == configured
    assert operator.is_operator(Settings(STORAGE_ROOT=tmp_path / "root", BROKER_ADMIN_TOKEN=configured), configured)
    with pytest.raises(ValueError, match="at least 32"):
        Settings(BROKER_ADMIN_TOKEN="short")
