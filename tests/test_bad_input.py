"""Bad input: each gets an error whose text starts with its code and says what to do, and
nothing stored changes (every key under the test's prefix is compared before and after)."""

from __future__ import annotations

from typing import Any

import pytest
from fastmcp import FastMCP
from helpers import PROJECT, Tools, snapshot

from broker.config import Settings

P = PROJECT
SEND = {"project_key": P, "sender_name": "BlueLake", "to": ["GreenCastle"], "subject": "s", "body_md": "b"}
INBOX = {"project_key": P, "agent_name": "GreenCastle"}
TOPIC = {"project_key": P, "topic_name": "ops", "agent_name": "GreenCastle"}
REGISTER = {"project_key": P, "program": "claude-code", "model": "opus-4"}


@pytest.fixture
async def world(tools: Tools) -> dict[str, Any]:
    """A project with BlueLake, GreenCastle and alpha-one, and one message BlueLake -> GreenCastle."""
    await tools.project()
    agents = {name: await tools.agent(name) for name in ("BlueLake", "GreenCastle", "alpha-one")}
    sent = await tools.send("BlueLake", ["GreenCastle"], topic="ops", ack_required=True)
    return {"agents": agents, "message_id": sent["deliveries"][0]["payload"]["id"]}


async def assert_rejected(tools: Tools, server: FastMCP, tool: str, args: dict[str, Any], code: str, *says: str) -> str:
    store = server.store  # type: ignore[attr-defined]
    before = await snapshot(store)
    error = await tools.error(tool, **args)
    assert error.startswith(f"{code}: "), error
    for words in says:
        assert words in error, f"{words!r} not in {error!r}"
    assert await snapshot(store) == before, f"{tool} changed stored state although it failed"
    return error


CASES: list[tuple[str, str, dict[str, Any], str, tuple[str, ...]]] = [
    # -- projects ------------------------------------------------------------------------
    ("unknown-project-close", "fetch_inbox", {**INBOX, "project_key": "/tmp/concurrent-tst"}, "NOT_FOUND",
     ("Project '/tmp/concurrent-tst' not found", "Did you mean: '/tmp/concurrent-test'", "ensure_project")),
    ("unknown-project-far", "send_message", {**SEND, "project_key": "/srv/elsewhere/zzz"}, "NOT_FOUND",
     ("not found", "Use ensure_project to create")),
    ("unknown-project-register", "register_agent", {**REGISTER, "project_key": "/srv/elsewhere/zzz"}, "NOT_FOUND",
     ("ensure_project",)),
    ("relative-human-key", "ensure_project", {"human_key": "repo/sub"}, "INVALID_ARGUMENT",
     ("absolute", "'repo/sub'")),
    ("dot-human-key", "ensure_project", {"human_key": "./repo"}, "INVALID_ARGUMENT", ("absolute",)),
    ("empty-human-key", "ensure_project", {"human_key": "  "}, "INVALID_ARGUMENT", ("absolute path",)),
    ("placeholder-human-key", "ensure_project", {"human_key": "/home/YOUR_PROJECT"}, "CONFIGURATION_ERROR",
     ("placeholder", "real value")),
    ("relative-project-key", "whois", {"project_key": "repo/sub", "agent_name": "BlueLake"}, "INVALID_ARGUMENT",
     ("relative path", "absolute path")),
    ("home-project-key", "fetch_inbox", {**INBOX, "project_key": "~/repo"}, "INVALID_ARGUMENT", ("absolute",)),
    ("empty-project-key", "fetch_inbox", {**INBOX, "project_key": ""}, "INVALID_ARGUMENT", ("project_key is empty",)),
    ("placeholder-project-key", "send_message", {**SEND, "project_key": "YOUR_PROJECT"}, "CONFIGURATION_ERROR",
     ("placeholder",)),
    # -- agents ----------------------------------------------------------------------------
    ("unknown-agent-close", "whois", {"project_key": P, "agent_name": "BlueLak"}, "NOT_FOUND",
     ("Agent 'BlueLak' not found", "Did you mean: 'BlueLake'", "case-insensitive")),
    ("unknown-sender-close", "send_message", {**SEND, "sender_name": "GreenCastel"}, "NOT_FOUND",
     ("Did you mean: 'GreenCastle'",)),
    ("unknown-reader-close", "fetch_inbox", {**INBOX, "agent_name": "alpha-onee"}, "NOT_FOUND",
     ("Did you mean: 'alpha-one'",)),
    ("unknown-agent-far", "fetch_inbox", {**INBOX, "agent_name": "nobody-here"}, "NOT_FOUND",
     ("Available agents: 'BlueLake', 'GreenCastle', 'alpha-one'", "register_agent")),
    ("unknown-marker", "mark_message_read", {"project_key": P, "agent_name": "BlueLak", "message_id": 1}, "NOT_FOUND",
     ("Did you mean: 'BlueLake'",)),
    ("program-as-agent", "whois", {"project_key": P, "agent_name": "claude-code"}, "PROGRAM_NAME_AS_AGENT",
     ("HINT:", "program")),
    ("placeholder-agent", "fetch_inbox", {**INBOX, "agent_name": "YOUR_AGENT"}, "CONFIGURATION_ERROR",
     ("placeholder",)),
    ("empty-agent", "fetch_inbox", {**INBOX, "agent_name": " "}, "INVALID_ARGUMENT", ("empty", "BlueLake")),
    ("empty-sender", "send_message", {**SEND, "sender_name": ""}, "INVALID_ARGUMENT", ("empty",)),
    ("malformed-agent", "whois", {"project_key": P, "agent_name": "Blue Lake"}, "INVALID_AGENT_NAME",
     ("letters, digits", "'BlueLake'")),
    ("malformed-recipient", "send_message", {**SEND, "to": ["Green Castle"]}, "INVALID_AGENT_NAME",
     ("recipient in 'to'", "letters, digits")),
    ("placeholder-new-name", "register_agent", {**REGISTER, "name": "YOUR_AGENT_NAME"}, "CONFIGURATION_ERROR",
     ("placeholder",)),
    ("empty-program", "register_agent", {**REGISTER, "program": " "}, "EMPTY_PROGRAM", ("program='claude-code'",)),
    ("empty-model", "register_agent", {**REGISTER, "model": ""}, "EMPTY_MODEL", ("model='opus-4'",)),
    ("bad-policy", "register_agent", {**REGISTER, "attachments_policy": "sometimes"}, "INVALID_ARGUMENT",
     ("auto, inline, file",)),
    ("create-empty-program", "create_agent_identity", {**REGISTER, "program": ""}, "EMPTY_PROGRAM", ("program",)),
    # -- threads, topics, limits, timestamps -------------------------------------------------
    ("thread-space", "send_message", {**SEND, "thread_id": "has space"}, "INVALID_THREAD_ID", ("e.g. 'FEAT-123'",)),
    ("thread-leading-dash", "send_message", {**SEND, "thread_id": "-lead"}, "INVALID_THREAD_ID",
     ("start with a letter or digit",)),
    ("thread-too-long", "send_message", {**SEND, "thread_id": "t" * 129}, "INVALID_THREAD_ID",
     ("at most 128 characters",)),
    ("topic-space", "send_message", {**SEND, "topic": "build status"}, "INVALID_TOPIC", ("e.g. 'build-status'",)),
    ("topic-slash", "send_message", {**SEND, "topic": "build/status"}, "INVALID_TOPIC", ("1-64",)),
    ("topic-too-long", "send_message", {**SEND, "topic": "t" * 65}, "INVALID_TOPIC", ("1-64",)),
    ("inbox-topic", "fetch_inbox", {**INBOX, "topic": "bad topic"}, "INVALID_TOPIC", ("letters, digits",)),
    ("fetch-topic-invalid", "fetch_topic", {**TOPIC, "topic_name": "a.b"}, "INVALID_TOPIC", ("letters, digits",)),
    ("fetch-topic-empty", "fetch_topic", {**TOPIC, "topic_name": "  "}, "INVALID_ARGUMENT", ("topic_name is empty",)),
    ("inbox-limit-0", "fetch_inbox", {**INBOX, "limit": 0}, "INVALID_LIMIT", ("between 1 and 1000", "got 0")),
    ("inbox-limit-1001", "fetch_inbox", {**INBOX, "limit": 1001}, "INVALID_LIMIT", ("between 1 and 1000",)),
    ("inbox-limit-negative", "fetch_inbox", {**INBOX, "limit": -3}, "INVALID_LIMIT", ("between 1 and 1000",)),
    ("topic-limit-0", "fetch_topic", {**TOPIC, "limit": 0}, "INVALID_LIMIT", ("between 1 and 1000",)),
    ("topic-limit-1001", "fetch_topic", {**TOPIC, "limit": 1001}, "INVALID_LIMIT", ("between 1 and 1000",)),
    ("inbox-since-garbage", "fetch_inbox", {**INBOX, "since_ts": "yesterday"}, "INVALID_TIMESTAMP",
     ("ISO-8601", "e.g. '2025-01-01T00:00:00Z'")),
    ("topic-since-bad-month", "fetch_topic", {**TOPIC, "since_ts": "2025-13-01T00:00:00"}, "INVALID_TIMESTAMP",
     ("ISO-8601",)),
    # -- message content and addressing --------------------------------------------------------
    ("subject-201", "send_message", {**SEND, "subject": "s" * 201}, "INVALID_ARGUMENT",
     ("201 characters", "limit is 200", "body_md")),
    ("importance", "send_message", {**SEND, "importance": "critical"}, "INVALID_ARGUMENT",
     ("low, normal, high, urgent",)),
    ("no-recipients", "send_message", {**SEND, "to": []}, "INVALID_ARGUMENT", ("at least one recipient",)),
    ("broadcast-with-to", "send_message", {**SEND, "broadcast": True}, "INVALID_ARGUMENT", ("to=[]",)),
    ("too-many-recipients", "send_message", {**SEND, "to": [f"agent-{i}" for i in range(101)]}, "INVALID_ARGUMENT",
     ("101 recipients", "limit of 100")),
    ("one-of-three-unknown", "send_message", {**SEND, "to": ["GreenCastle", "ghost-agent", "alpha-one"]},
     "RECIPIENT_NOT_FOUND", ("'ghost-agent'", "Nothing was sent", "register_agent")),
    ("unknown-cc-and-bcc", "send_message", {**SEND, "cc": ["GreenCastel"], "bcc": ["claude-code"]},
     "RECIPIENT_NOT_FOUND", ("'GreenCastel'", "did you mean 'GreenCastle'", "'claude-code'", "program")),
    ("unknown-format", "send_message", {**SEND, "format": "yaml"}, "INVALID_ARGUMENT",
     ("format 'yaml'", "json, toon, application/json", "format='toon'")),
    ("attachment-missing", "send_message", {**SEND, "attachment_paths": ["no-such-diagram.png"]},
     "ATTACHMENT_NOT_FOUND", ("Nothing was sent", "Relative paths are resolved against the project's directory")),
    ("attachment-traversal", "send_message", {**SEND, "attachment_paths": ["../diagram.png"]},
     "ATTACHMENT_OUTSIDE_PROJECT", ("Nothing was sent", "pass its path relative to it")),
    ("attachment-absolute", "send_message", {**SEND, "attachment_paths": ["/etc/hostname"]},
     "ATTACHMENT_OUTSIDE_PROJECT", ("ALLOW_ABSOLUTE_ATTACHMENT_PATHS=true",)),
    ("attachments-not-a-list", "send_message", {**SEND, "attachment_paths": [3]}, "INVALID_ARGUMENT",
     ("attachment_paths",)),
    # -- wrong types -----------------------------------------------------------------------------
    ("limit-string", "fetch_inbox", {**INBOX, "limit": "abc"}, "INVALID_ARGUMENT", ("limit", "valid integer")),
    ("to-string", "send_message", {**SEND, "to": "GreenCastle"}, "INVALID_ARGUMENT", ("to", "valid list")),
    ("cc-string", "send_message", {**SEND, "cc": "alpha-one"}, "INVALID_ARGUMENT", ("cc",)),
    ("message-id-string", "mark_message_read", {**INBOX, "message_id": "abc"}, "INVALID_ARGUMENT",
     ("message_id", "integer")),
    ("missing-subject", "send_message", {k: v for k, v in SEND.items() if k != "subject"}, "INVALID_ARGUMENT",
     ("subject", "Missing required argument")),
    ("unknown-argument", "whois", {"project_key": P, "agent_name": "BlueLake", "agentname": "x"},
     "INVALID_ARGUMENT", ("agentname", "schema")),
]  # fmt: skip


@pytest.mark.parametrize(("tool", "args", "code", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_input_is_rejected_and_changes_nothing(
    tools: Tools, server: FastMCP, world: dict[str, Any], tool: str, args: dict[str, Any], code: str, says: tuple
) -> None:
    await assert_rejected(tools, server, tool, args, code, *says)


async def test_rejected_sends_reach_no_inbox(tools: Tools, server: FastMCP, world: dict[str, Any]) -> None:
    """All-or-none from the user's side: after rejected sends every inbox holds what it held."""
    before = {name: await tools.inbox(name, limit=1000) for name in world["agents"]}
    await tools.error("send_message", **{**SEND, "to": ["GreenCastle", "ghost-agent", "alpha-one"]})
    await tools.error("send_message", **{**SEND, "to": ["alpha-one"], "bcc": ["ghost-agent"]})
    await tools.error("send_message", **{**SEND, "to": ["alpha-one"], "topic": "no good"})
    await tools.error("send_message", **{**SEND, "to": ["alpha-one"], "sender_token": "wrong"})
    after = {name: await tools.inbox(name, limit=1000) for name in world["agents"]}
    assert after == before
    assert [m["id"] for m in after["GreenCastle"]] == [world["message_id"]]
    assert after["alpha-one"] == [] and after["BlueLake"] == []


async def test_oversized_body(tools: Tools, server: FastMCP, settings: Settings, world: dict[str, Any]) -> None:
    limit = settings.max_body_bytes
    # The limit is in UTF-8 bytes: this body has about half as many characters as bytes.
    body = "é" * (limit // 2) + "x"
    assert len(body) < limit < len(body.encode())
    await assert_rejected(
        tools, server, "send_message", {**SEND, "body_md": body}, "INVALID_ARGUMENT", f"limit is {limit}", "Split it"
    )
    reply = {"project_key": P, "message_id": world["message_id"], "sender_name": "GreenCastle", "body_md": body}
    await assert_rejected(tools, server, "reply_message", reply, "INVALID_ARGUMENT", f"limit is {limit}")
    # Exactly at the limit is accepted, and stored whole.
    exact = "y" * limit
    sent = await tools.send("BlueLake", ["alpha-one"], body_md=exact)
    [item] = await tools.inbox("alpha-one", include_bodies=True)
    assert (item["id"], item["body_md"]) == (sent["deliveries"][0]["payload"]["id"], exact)


async def test_subject_at_the_limit_is_accepted(tools: Tools, settings: Settings, world: dict[str, Any]) -> None:
    subject = "s" * settings.max_subject_chars
    sent = await tools.send("BlueLake", ["alpha-one"], subject=subject)
    assert sent["deliveries"][0]["payload"]["subject"] == subject


async def test_wrong_tokens(tools: Tools, server: FastMCP, world: dict[str, Any]) -> None:
    other = world["agents"]["alpha-one"]["registration_token"]
    await assert_rejected(
        tools, server, "send_message", {**SEND, "sender_token": other}, "AUTHENTICATION_FAILED", "'BlueLake'"
    )
    await assert_rejected(
        tools,
        server,
        "fetch_inbox",
        {**INBOX, "registration_token": "x" * 43},
        "AUTHENTICATION_FAILED",
        "register_agent",
    )
    mark = {**INBOX, "message_id": world["message_id"], "registration_token": other}
    await assert_rejected(tools, server, "acknowledge_message", mark, "AUTHENTICATION_FAILED", "registration_token")


async def test_reply_to_invisible_or_missing_message(tools: Tools, server: FastMCP, world: dict[str, Any]) -> None:
    base = {"project_key": P, "body_md": "b"}
    for sender, message_id in (("alpha-one", world["message_id"]), ("GreenCastle", 99_999_999)):
        error = await assert_rejected(
            tools, server, "reply_message", {**base, "sender_name": sender, "message_id": message_id}, "NOT_FOUND"
        )
        assert f"Message '{message_id}' not found or not visible to agent '{sender}'" in error
        assert "fetch_inbox" in error


async def test_unknown_project_with_no_projects_at_all(tools: Tools, server: FastMCP) -> None:
    error = await assert_rejected(
        tools, server, "whois", {"project_key": "/srv/repo", "agent_name": "BlueLake"}, "NOT_FOUND"
    )
    assert "no similar projects exist" in error
    assert "ensure_project(human_key='/path/to/your/project')" in error


async def test_project_with_no_agents(tools: Tools, server: FastMCP) -> None:
    await tools.project()
    error = await assert_rejected(tools, server, "fetch_inbox", INBOX, "NOT_FOUND")
    assert "has no registered agents yet" in error and "register_agent" in error
