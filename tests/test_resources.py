"""MCP resources read through a fastmcp Client: exact shapes and contents after real sends, reads
and acknowledgements, the errors for a missing project, agent or parameter, and agent_token auth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from fastmcp.exceptions import McpError
from helpers import PROJECT, Tools, drop_prefix, make_settings
from persist_helpers import git, run_worker

from broker.config import Settings
from broker.server import build_server

SLUG = "tmp-concurrent-test"
Q = f"?project={PROJECT}"


async def read(tools: Tools, uri: str) -> Any:
    contents = await tools.client.read_resource(uri)
    assert contents[0].mime_type == "application/json"
    return json.loads(contents[0].text)


async def read_error(client: Client, uri: str) -> str:
    with pytest.raises(McpError) as caught:
        await client.read_resource(uri)
    return str(caught.value)


def sent_id(result: dict[str, Any]) -> int:
    return result["deliveries"][0]["payload"]["id"]


# -- configuration, projects and agents ----------------------------------------------------------
async def test_environment_locks_and_format(tools: Tools, settings: Settings) -> None:
    expected = {
        "environment": "development",
        "database_url": f"sqlite:///{settings.index_path}",
        "http": {"host": "127.0.0.1", "port": 8765, "path": "/mcp/"},
    }
    assert await read(tools, "resource://config/environment") == expected
    assert await read(tools, "resource://config/environment?format=json") == expected
    assert await read(tools, "resource://tooling/locks") == {
        "locks": [],
        "summary": {"total": 0, "active": 0, "stale": 0, "metadata_missing": 0},
    }
    error = await read_error(tools.client, "resource://tooling/locks?format=yaml")
    assert error.startswith("INVALID_ARGUMENT: format 'yaml' is not one of json, toon")


async def test_bearer_token_is_never_echoed(backend: str, tmp_path: Path) -> None:
    mcp = build_server(make_settings(backend, tmp_path, HTTP_BEARER_TOKEN="s3cret-bearer"))
    try:
        async with Client(mcp) as client:
            text = (await client.read_resource("resource://config/environment"))[0].text
            assert "s3cret-bearer" not in text
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_projects_listed_oldest_first_test_projects_included(tools: Tools) -> None:
    first = await tools.project("/tmp/test-alpha")
    second = await tools.project("/srv/demo")
    third = await tools.project("/srv/app")
    listed = await read(tools, "resource://tooling/projects")
    assert listed == [first, second, third]
    project = await read(tools, f"resource://project/{third['slug']}")
    assert project == {**third, "agents": []}


async def test_project_and_agents_resources(tools: Tools, trio: dict[str, Any]) -> None:
    await tools.send("BlueLake", ["GreenCastle", "alpha-one"])
    await tools.send("alpha-one", ["GreenCastle"])
    agents = trio["agents"]
    profile_keys = ("id", "name", "program", "model", "task_description", "inception_ts", "project_id")

    detail = await read(tools, f"resource://project/{SLUG}")
    assert {k: detail[k] for k in ("id", "slug", "human_key", "created_at")} == trio["project"]
    assert [a["name"] for a in detail["agents"]] == ["BlueLake", "GreenCastle", "alpha-one"]
    assert detail["agents"][0] == {**{k: agents["BlueLake"][k] for k in profile_keys},
                                   "last_active_ts": detail["agents"][0]["last_active_ts"],
                                   "attachments_policy": "auto"}  # fmt: skip

    listed = await read(tools, f"resource://agents/{SLUG}")
    assert listed["project"] == {"slug": SLUG, "human_key": PROJECT}
    assert listed["retired_agents"] == []
    # most recently active first: alpha-one sent last, then BlueLake; GreenCastle only registered
    assert [(a["name"], a["unread_count"]) for a in listed["agents"]] == [
        ("alpha-one", 1),
        ("BlueLake", 0),
        ("GreenCastle", 2),
    ]
    # the project may be named by its URL-encoded absolute path too
    assert await read(tools, "resource://agents/%2Ftmp%2Fconcurrent-test") == listed

    error = await read_error(tools.client, "resource://agents/tmp-concurent-test")
    assert error.startswith("NOT_FOUND: Project 'tmp-concurent-test' not found. Did you mean:")


# -- inbox, mailbox, outbox ---------------------------------------------------------------------
async def test_inbox_resource_is_fetch_inbox_plus_commit(tools: Tools, trio: dict[str, Any]) -> None:
    first = await tools.send("BlueLake", ["GreenCastle"], subject="One", importance="high")
    await tools.send("alpha-one", ["GreenCastle"], subject="Two", body_md="Second body")
    expected = await tools.inbox("GreenCastle", include_bodies=True)

    listed = await read(tools, f"resource://inbox/GreenCastle{Q}&include_bodies=true")
    assert listed == {
        "project": PROJECT,
        "agent": "GreenCastle",
        "count": 2,
        "messages": [{**item, "commit": None} for item in expected],
    }
    urgent = await read(tools, f"resource://inbox/greencastle{Q}&urgent_only=yes&limit=5")
    assert urgent["agent"] == "GreenCastle"
    assert [m["id"] for m in urgent["messages"]] == [sent_id(first)]
    assert "body_md" not in urgent["messages"][0]
    since = expected[1]["created_ts"]
    newer = await read(tools, f"resource://inbox/GreenCastle{Q}&since_ts={since.replace('+', '%2B')}")
    assert [m["subject"] for m in newer["messages"]] == ["Two"]


async def test_mailbox_commits_after_the_archive_has_the_message(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    sent = await tools.send("BlueLake", ["GreenCastle"], subject="Archived plan", body_md="line one\nline two")
    plain = await read(tools, f"resource://mailbox/GreenCastle{Q}")
    assert plain["messages"][0]["commit"] is None  # not archived yet

    await run_worker(server, settings)
    later = await tools.send("BlueLake", ["GreenCastle"], subject="Not archived")
    sha, summary, authored = git(settings, "log", "-1", "--format=%H%x1f%s%x1f%aI").strip().split("\x1f")

    basic = await read(tools, f"resource://mailbox/GreenCastle{Q}")
    assert [m["id"] for m in basic["messages"]] == [sent_id(later), sent_id(sent)]
    assert basic["messages"][0]["commit"] is None
    assert basic["messages"][1]["commit"] == {"hexsha": sha[:12], "summary": summary, "authored_ts": authored}

    detailed = await read(tools, f"resource://mailbox-with-commits/GreenCastle{Q}&limit=1000")
    commit = detailed["messages"][1]["commit"]
    path = git(settings, "show", "--name-only", "--format=", sha).splitlines()
    canonical = next(p for p in path if p.startswith(f"projects/{SLUG}/messages/2"))
    lines = git(settings, "show", f"{sha}:{canonical}").splitlines()
    assert commit == {
        "hexsha": sha[:12],
        "summary": summary,
        "authored_ts": authored,
        "insertions": len(lines),
        "deletions": 0,
        "diff_summary": {"hunks": 1, "excerpt": ["+" + line for line in lines[:12]]},
    }
    assert commit["diff_summary"]["excerpt"][0] == "+---json"

    outbox = await read(tools, f"resource://outbox/BlueLake{Q}")
    assert [m["commit"] for m in outbox["messages"]] == [None, basic["messages"][1]["commit"]]


async def test_outbox_lists_sent_mail_with_every_recipient(tools: Tools, trio: dict[str, Any]) -> None:
    first = await tools.send("BlueLake", ["GreenCastle"], cc=["alpha-one"], subject="A", body_md="body A")
    second = await tools.send("BlueLake", ["alpha-one"], bcc=["GreenCastle"], subject="B", thread_id="T-9")
    await tools.send("GreenCastle", ["BlueLake"], subject="not BlueLake's")

    listed = await read(tools, f"resource://outbox/BlueLake{Q}&include_bodies=true")
    payload = second["deliveries"][0]["payload"]
    head_keys = ("id", "project_id", "sender_id", "thread_id", "topic", "subject", "importance", "ack_required",
                 "created_ts", "attachments", "from")  # fmt: skip
    assert listed["count"] == 2
    assert listed["messages"][0] == {
        **{k: payload[k] for k in head_keys},
        "to": ["alpha-one"],
        "cc": [],
        "bcc": ["GreenCastle"],
        "body_md": "Body",
        "commit": None,
    }
    assert listed["messages"][1]["id"] == sent_id(first) and listed["messages"][1]["cc"] == ["alpha-one"]
    limited = await read(tools, f"resource://outbox/BlueLake{Q}&limit=1")
    assert [m["id"] for m in limited["messages"]] == [sent_id(second)]
    assert "body_md" not in limited["messages"][0]


# -- message and thread ------------------------------------------------------------------------
async def test_message_resource_shows_bcc_only_to_whom_it_concerns(tools: Tools, trio: dict[str, Any]) -> None:
    sent = await tools.send("BlueLake", ["GreenCastle"], bcc=["alpha-one"], subject="Secret cc", body_md="Hi")
    mid = sent_id(sent)
    as_sender = await read(tools, f"resource://message/{mid}{Q}&agent=BlueLake")
    payload = sent["deliveries"][0]["payload"]
    assert as_sender == {**{k: v for k, v in payload.items() if k != "body_md"}, "body_md": "Hi"}
    as_to = await read(tools, f"resource://message/{mid}{Q}&agent=GreenCastle")
    assert (as_to["to"], as_to["bcc"], as_to["kind"]) == (["GreenCastle"], [], "to")
    as_bcc = await read(tools, f"resource://message/{mid}{Q}&agent=alpha-one")
    assert (as_bcc["bcc"], as_bcc["kind"]) == (["alpha-one"], "bcc")

    await tools.agent("RedFox")
    error = await read_error(tools.client, f"resource://message/{mid}{Q}&agent=RedFox")
    assert error == (
        f"NOT_FOUND: Message '{mid}' not found or not visible to agent 'RedFox' in project '{PROJECT}'. "
        "Check the id with fetch_inbox."
    )
    # without agent, and no session (the 2026-07-28 protocol has none): the viewer is unknown
    error = await read_error(tools.client, f"resource://message/{mid}{Q}")
    assert error == (
        f"AUTHENTICATION_REQUIRED: resource://message requires an authenticated agent for project '{PROJECT}'. "
        "Provide agent plus agent_token, or authenticate in this session first."
    )


async def test_thread_resource_oldest_first_and_visible_only(tools: Tools, trio: dict[str, Any]) -> None:
    root = await tools.send("BlueLake", ["GreenCastle"], subject="Root", body_md="root body")
    reply = await tools.call(
        "reply_message", project_key=PROJECT, message_id=sent_id(root), sender_name="GreenCastle", body_md="re"
    )
    again = await tools.send("BlueLake", ["GreenCastle"], thread_id=str(sent_id(root)), subject="Third")
    await tools.send("BlueLake", ["alpha-one"], thread_id=str(sent_id(root)), subject="Side")
    tid = str(sent_id(root))

    thread = await read(tools, f"resource://thread/{tid}{Q}&agent=GreenCastle&include_bodies=1")
    assert thread["project"] == PROJECT and thread["thread_id"] == tid
    assert [m["id"] for m in thread["messages"]] == [sent_id(root), reply["id"], sent_id(again)]
    assert thread["messages"][0]["body_md"] == "root body"
    assert thread["messages"][1]["thread_id"] == tid
    for_sender = await read(tools, f"resource://thread/{tid}{Q}&agent=BlueLake")
    assert len(for_sender["messages"]) == 4 and "body_md" not in for_sender["messages"][0]
    empty = await read(tools, f"resource://thread/NOPE-1{Q}&agent=BlueLake")
    assert empty == {"project": PROJECT, "thread_id": "NOPE-1", "messages": []}
    error = await read_error(tools.client, f"resource://thread/bad%20id{Q}&agent=BlueLake")
    assert error.startswith("INVALID_THREAD_ID:")


# -- views --------------------------------------------------------------------------------------
async def test_urgent_unread_and_ack_required_follow_read_and_ack(tools: Tools, trio: dict[str, Any]) -> None:
    urgent = await tools.send("BlueLake", ["GreenCastle"], importance="urgent", subject="U1")
    await tools.send("BlueLake", ["GreenCastle"], importance="normal", subject="N")
    high_ack = await tools.send("alpha-one", ["GreenCastle"], importance="high", ack_required=True, subject="H")
    plain_ack = await tools.send("BlueLake", ["GreenCastle"], ack_required=True, subject="A")

    view = await read(tools, f"resource://views/urgent-unread/GreenCastle{Q}")
    assert (view["project"], view["agent"], view["count"]) == (PROJECT, "GreenCastle", 2)
    assert [m["id"] for m in view["messages"]] == [sent_id(high_ack), sent_id(urgent)]
    assert view["messages"][0]["kind"] == "to" and "body_md" not in view["messages"][0]
    mark = {"project_key": PROJECT, "agent_name": "GreenCastle"}
    await tools.call("mark_message_read", **mark, message_id=sent_id(urgent))
    view = await read(tools, f"resource://views/urgent-unread/GreenCastle{Q}")
    assert [m["id"] for m in view["messages"]] == [sent_id(high_ack)]

    acks = await read(tools, f"resource://views/ack-required/GreenCastle{Q}")
    assert [m["id"] for m in acks["messages"]] == [sent_id(plain_ack), sent_id(high_ack)]
    await tools.call("acknowledge_message", **mark, message_id=sent_id(plain_ack))
    acks = await read(tools, f"resource://views/ack-required/GreenCastle{Q}&limit=1")
    assert [m["id"] for m in acks["messages"]] == [sent_id(high_ack)]
    # the sender has nothing to acknowledge
    assert (await read(tools, f"resource://views/ack-required/alpha-one{Q}"))["messages"] == []


async def test_acks_stale_and_overdue_oldest_first(tools: Tools, trio: dict[str, Any], settings: Settings) -> None:
    first = await tools.send("BlueLake", ["GreenCastle"], ack_required=True, subject="first")
    second = await tools.send("alpha-one", ["GreenCastle"], ack_required=True, subject="second")
    await tools.send("BlueLake", ["GreenCastle"], subject="no ack needed")
    await tools.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=sent_id(second))

    stale = await read(tools, f"resource://views/acks-stale/GreenCastle{Q}&ttl_seconds=0")
    assert (stale["ttl_seconds"], stale["count"]) == (0, 2)
    assert [m["id"] for m in stale["messages"]] == [sent_id(first), sent_id(second)]
    assert stale["messages"][0]["read_at"] is None
    assert stale["messages"][1]["read_at"] is not None and stale["messages"][1]["age_seconds"] >= 0
    default = await read(tools, f"resource://views/acks-stale/GreenCastle{Q}")
    assert (default["ttl_seconds"], default["messages"]) == (settings.ack_ttl_seconds, [])

    overdue = await read(tools, f"resource://views/ack-overdue/GreenCastle{Q}&ttl_minutes=0&limit=1")
    assert [m["id"] for m in overdue["messages"]] == [sent_id(first)]
    assert "age_seconds" not in overdue["messages"][0] and "ttl_seconds" not in overdue
    assert (await read(tools, f"resource://views/ack-overdue/GreenCastle{Q}"))["messages"] == []


# -- errors and auth ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "uri",
    [
        "resource://inbox/GreenCastle",
        "resource://outbox/GreenCastle",
        "resource://mailbox/GreenCastle",
        "resource://mailbox-with-commits/GreenCastle",
        "resource://message/1",
        "resource://thread/T-1",
        "resource://views/urgent-unread/GreenCastle",
        "resource://views/ack-required/GreenCastle",
        "resource://views/acks-stale/GreenCastle",
        "resource://views/ack-overdue/GreenCastle",
    ],
)
async def test_project_is_required(tools: Tools, trio: dict[str, Any], uri: str) -> None:
    error = await read_error(tools.client, uri)
    resource = uri.rsplit("/", 1)[0]
    assert error == (
        f"INVALID_ARGUMENT: project parameter is required for {resource}: add ?project=<the project's "
        "absolute path or slug> to the URI."
    )


async def test_missing_project_agent_and_bad_parameters(tools: Tools, trio: dict[str, Any]) -> None:
    tool_error = await tools.error("fetch_inbox", project_key="/tmp/nowhere", agent_name="GreenCastle")
    error = await read_error(tools.client, "resource://inbox/GreenCastle?project=/tmp/nowhere")
    assert error == tool_error
    tool_error = await tools.error("fetch_inbox", project_key=PROJECT, agent_name="GreenCastel")
    error = await read_error(tools.client, f"resource://views/ack-required/GreenCastel{Q}")
    assert error == tool_error and "Did you mean: 'GreenCastle'?" in error

    cases = {
        f"resource://inbox/GreenCastle{Q}&limit=0": "INVALID_LIMIT: limit must be between 1 and 1000, got 0.",
        f"resource://outbox/GreenCastle{Q}&limit=1001": "INVALID_LIMIT: limit must be between 1 and 1000, got 1001.",
        f"resource://inbox/GreenCastle{Q}&urgent_only=maybe": "INVALID_ARGUMENT: urgent_only='maybe' is not a "
        "boolean; use true or false.",
        f"resource://inbox/GreenCastle{Q}&since_ts=yesterday": "INVALID_TIMESTAMP: since_ts 'yesterday' is not",
        f"resource://views/acks-stale/GreenCastle{Q}&ttl_seconds=-1": "INVALID_ARGUMENT: ttl_seconds must be",
        f"resource://message/abc{Q}&agent=BlueLake": "INVALID_ARGUMENT: message_id='abc' is not an integer.",
        "resource://tooling/recent/soon": "INVALID_ARGUMENT: window_seconds='soon' is not an integer.",
    }
    for uri, expected in cases.items():
        assert (await read_error(tools.client, uri)).startswith(expected), uri


async def test_agent_token_under_required_auth(backend: str, tmp_path: Path) -> None:
    settings = make_settings(backend, tmp_path, AGENT_AUTH="required")
    mcp = build_server(settings)
    try:
        async with Client(mcp) as owner:
            await Tools(owner).project()
            blue = await Tools(owner).agent("BlueLake")
            green = await Tools(owner).agent("GreenCastle")
            sent = await Tools(owner).send("BlueLake", ["GreenCastle"], sender_token=blue["registration_token"])
        message_id = sent["deliveries"][0]["payload"]["id"]
        token = green["registration_token"]
        # the handshake-era protocol keeps a session, which a successful token check binds
        async with Client(mcp, mode="legacy") as stranger:
            uri = f"resource://inbox/GreenCastle{Q}"
            error = await read_error(stranger, uri)
            assert error.startswith("AUTHENTICATION_REQUIRED: This call requires agent_token for agent 'GreenCastle'")
            error = await read_error(stranger, f"{uri}&agent_token=wrong")
            assert error.startswith("AUTHENTICATION_FAILED: Invalid agent_token for agent 'GreenCastle'")
            error = await read_error(stranger, f"resource://views/ack-required/GreenCastle{Q}")
            assert error.startswith("AUTHENTICATION_REQUIRED:")
            listed = json.loads((await stranger.read_resource(f"{uri}&agent_token={token}"))[0].text)
            assert listed["count"] == 1
            # the session is now bound to GreenCastle: no token needed, and it is the default viewer
            listed = json.loads((await stranger.read_resource(f"resource://views/ack-required/GreenCastle{Q}"))[0].text)
            assert listed["count"] == 0
            message = json.loads((await stranger.read_resource(f"resource://message/{message_id}{Q}"))[0].text)
            assert (message["id"], message["kind"]) == (message_id, "to")
            # another agent's mail still needs that agent's token
            error = await read_error(stranger, f"resource://outbox/BlueLake{Q}")
            assert error.startswith("AUTHENTICATION_REQUIRED:")
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


# -- tooling ----------------------------------------------------------------------------------
async def test_directory_and_schemas_describe_the_registered_tools(tools: Tools) -> None:
    listed = {tool.name: tool for tool in await tools.client.list_tools()}
    directory = await read(tools, "resource://tooling/directory")
    assert directory["metrics_uri"] == "resource://tooling/metrics"
    assert directory["output_formats"] == ["json", "toon"]
    in_directory = [t["name"] for cluster in directory["clusters"] for t in cluster["tools"]]
    assert sorted(in_directory) == sorted(listed)
    messaging = next(c for c in directory["clusters"] if c["name"] == "messaging")
    send = next(t for t in messaging["tools"] if t["name"] == "send_message")
    assert send["summary"] == listed["send_message"].description.split(". ")[0].strip()
    assert send["usage_examples"] == [
        "send_message(project_key=<project_key>, sender_name=<sender_name>, to=<to>, subject=<subject>, "
        "body_md=<body_md>)"
    ]
    assert "fetch_inbox" in send["related"] and send["capabilities"] == ["messaging"]
    assert {"workflow": "Answer mail", "sequence": ["fetch_inbox", "reply_message", "acknowledge_message"]} in (
        directory["playbooks"]
    )

    schemas = await read(tools, "resource://tooling/schemas")
    assert schemas["global_optional"] == ["format"]
    assert sorted(schemas["tools"]) == sorted(listed)
    send_schema = schemas["tools"]["send_message"]
    assert send_schema["required"] == ["project_key", "sender_name", "to", "subject", "body_md"]
    assert "format" not in send_schema["optional"] and "sender_token" in send_schema["optional"]
    assert send_schema["shapes"]["to"] == "array<string>"
    assert send_schema["input_schema"] == listed["send_message"].input_schema


async def test_metrics_and_recent_count_this_process_calls(tools: Tools, trio: dict[str, Any]) -> None:
    await tools.send("BlueLake", ["GreenCastle"])
    await tools.error("send_message", project_key=PROJECT, sender_name="Nobody", to=["GreenCastle"],
                      subject="x", body_md="y")  # fmt: skip
    await tools.inbox("GreenCastle")
    metrics = await read(tools, "resource://tooling/metrics")
    rows = {row["name"]: row for row in metrics["tools"]}
    assert rows["send_message"] == {
        "name": "send_message", "calls": 2, "errors": 1, "cluster": "messaging", "capabilities": [],
        "complexity": "high",
    }  # fmt: skip
    assert (rows["register_agent"]["calls"], rows["register_agent"]["errors"]) == (3, 0)
    assert rows["whois"]["calls"] == 0

    recent = await read(tools, "resource://tooling/recent/3600")
    assert recent["window_seconds"] == 3600
    # successful calls only, newest first
    assert [e["tool"] for e in recent["entries"]] == ["fetch_inbox", "send_message", *["register_agent"] * 3,
                                                      "ensure_project"]  # fmt: skip
    assert recent["entries"][0] == {
        "timestamp": recent["entries"][0]["timestamp"], "tool": "fetch_inbox", "project": PROJECT,
        "agent": "GreenCastle", "cluster": "messaging",
    }  # fmt: skip
    by_agent = await read(tools, f"resource://tooling/recent/3600?agent=bluelake&project={SLUG}")
    assert [(e["tool"], e["agent"]) for e in by_agent["entries"]] == [("send_message", "BlueLake"),
                                                                       ("register_agent", "BlueLake")]  # fmt: skip
    assert (await read(tools, "resource://tooling/recent/3600?project=/elsewhere"))["count"] == 0
    assert (await read(tools, "resource://tooling/recent/0"))["entries"] == []

    capabilities = await read(tools, f"resource://tooling/capabilities/BlueLake{Q}")
    assert {k: capabilities[k] for k in ("agent", "project", "capabilities")} == {
        "agent": "BlueLake", "project": PROJECT, "capabilities": [],
    }  # fmt: skip


async def test_file_reservations_resource_takes_format(tools: Tools, trio: dict[str, Any]) -> None:
    await tools.call("file_reservation_paths", project_key=PROJECT, agent_name="BlueLake", paths=["src/"])
    rows = await read(tools, f"resource://file_reservations/{SLUG}?format=json&active_only=t")
    assert [r["path_pattern"] for r in rows] == ["src/**"]
    error = await read_error(tools.client, f"resource://file_reservations/{SLUG}?format=xml")
    assert error.startswith("INVALID_ARGUMENT: format 'xml' is not one of json, toon")


async def test_unreachable_redis_is_a_connection_error(tmp_path: Path) -> None:
    async with Client(build_server(make_settings("redis://127.0.0.1:1/0", tmp_path))) as client:
        error = await read_error(client, "resource://agents/some-project")
        assert error.startswith("CONNECTION_ERROR: Redis is unreachable")
        error = await read_error(client, f"resource://inbox/BlueLake{Q}")
        assert error.startswith("CONNECTION_ERROR: Redis is unreachable")
