"""Every tool through an MCP client: arguments, defaults and result keys as in the reference (§3.1-3.3, §5)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, drop_prefix, snapshot

from broker.config import Settings
from broker.names import is_generated_shape
from broker.server import build_server

PROJECT_KEYS = {"id", "slug", "human_key", "created_at"}
AGENT_KEYS = {
    "id",
    "name",
    "program",
    "model",
    "task_description",
    "inception_ts",
    "last_active_ts",
    "project_id",
    "attachments_policy",
}
HEAD_KEYS = {
    "id",
    "project_id",
    "sender_id",
    "thread_id",
    "topic",
    "subject",
    "importance",
    "ack_required",
    "created_ts",
    "attachments",
    "from",
}


def assert_iso_utc(value: str) -> datetime:
    """A timestamp as the reference writes it: datetime.isoformat() of an aware UTC time."""
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == timedelta(0), value
    assert moment.isoformat() == value, value
    assert value.endswith("+00:00")
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=5), value
    return moment


def payload(result: dict[str, Any]) -> dict[str, Any]:
    assert result["count"] == 1 and len(result["deliveries"]) == 1, result
    return result["deliveries"][0]["payload"]


@pytest.fixture
async def trio(tools: Tools) -> dict[str, Any]:
    """A project with three agents: BlueLake, GreenCastle and alpha-one."""
    project = await tools.project()
    agents = {name: await tools.agent(name) for name in ("BlueLake", "GreenCastle", "alpha-one")}
    return {"project": project, "agents": agents}


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
    assert set(bare) == AGENT_KEYS
    # Sending bumps the sender's last_active_ts to the message time.
    sent = payload(await tools.send("BlueLake", ["GreenCastle"]))
    after = await tools.call("whois", project_key=PROJECT, agent_name="BlueLake")
    assert after["last_active_ts"] == sent["created_ts"]
    assert after["inception_ts"] == blue["inception_ts"]


# -- sending -------------------------------------------------------------------------------
async def test_send_message_result_shape(tools: Tools, trio: dict[str, Any]) -> None:
    agents = trio["agents"]
    result = await tools.send("BlueLake", ["GreenCastle"], cc=["alpha-one"], subject="Plan", body_md="# Plan\n\n- step")
    assert set(result) == {"deliveries", "count", "verified_sender", "attachments"}
    assert result["attachments"] == []
    assert result["verified_sender"] is True
    assert result["deliveries"][0]["project"] == PROJECT
    message = payload(result)
    assert set(message) == HEAD_KEYS | {"body_md", "to", "cc", "bcc"}
    assert message["project_id"] == trio["project"]["id"]
    assert message["sender_id"] == agents["BlueLake"]["id"]
    assert message["from"] == "BlueLake"
    assert (message["to"], message["cc"], message["bcc"]) == (["GreenCastle"], ["alpha-one"], [])
    assert (message["subject"], message["body_md"]) == ("Plan", "# Plan\n\n- step")
    assert (message["importance"], message["ack_required"]) == ("normal", False)
    assert (message["thread_id"], message["topic"], message["attachments"]) == (None, None, [])
    assert isinstance(message["id"], int)
    assert_iso_utc(message["created_ts"])


async def test_send_message_options_reach_the_inbox(tools: Tools, trio: dict[str, Any]) -> None:
    message = payload(
        await tools.send(
            "BlueLake",
            ["GreenCastle"],
            importance="urgent",
            ack_required=True,
            thread_id="FEAT-123",
            topic="build-status",
        )
    )
    assert (message["importance"], message["ack_required"]) == ("urgent", True)
    assert (message["thread_id"], message["topic"]) == ("FEAT-123", "build-status")
    [item] = await tools.inbox("GreenCastle")
    assert item == {**{k: message[k] for k in HEAD_KEYS}, "kind": "to"}


async def test_send_resolves_names_case_insensitively_and_deduplicates(tools: Tools, trio: dict[str, Any]) -> None:
    message = payload(
        await tools.send("BLUELAKE", ["greencastle", "GreenCastle"], cc=["ALPHA-ONE", "greenCASTLE"], bcc=["Alpha-One"])
    )
    assert message["from"] == "BlueLake"
    assert (message["to"], message["cc"], message["bcc"]) == (["GreenCastle"], ["alpha-one"], [])
    assert [m["kind"] for m in await tools.inbox("greencastle")] == ["to"]
    assert [m["kind"] for m in await tools.inbox("alpha-one")] == ["cc"]
    assert await tools.inbox("bluelake") == []


async def test_send_to_self_is_delivered(tools: Tools, trio: dict[str, Any]) -> None:
    message = payload(await tools.send("BlueLake", ["BlueLake"], subject="note to self"))
    [item] = await tools.inbox("BlueLake")
    assert (item["id"], item["kind"], item["from"]) == (message["id"], "to", "BlueLake")


async def test_text_round_trips_exactly(tools: Tools, trio: dict[str, Any]) -> None:
    subject = 'Ünïcødé "quoted" \\ back/slash 🚀\ttab'
    body = "line1\nline2 — «guillemets» 漢字 \u0000 end \U0001f600"
    message = payload(await tools.send("BlueLake", ["GreenCastle"], subject=subject, body_md=body, topic="t"))
    assert (message["subject"], message["body_md"]) == (subject, body)
    [item] = await tools.inbox("GreenCastle", include_bodies=True)
    assert (item["subject"], item["body_md"]) == (subject, body)
    [item] = await tools.call("fetch_topic", project_key=PROJECT, topic_name="t", agent_name="GreenCastle")
    assert (item["subject"], item["body_md"]) == (subject, body)


async def test_large_bodies_are_returned_whole(tools: Tools, trio: dict[str, Any]) -> None:
    small = "s" * 8192
    large = "é" * 20_000 + "end"  # 40,003 bytes: kept out of the inbox entry, read from the bodies hash
    ids = {}
    for body in (small, large, ""):
        ids[body] = payload(await tools.send("BlueLake", ["GreenCastle"], body_md=body, topic="big"))["id"]
    inbox = await tools.inbox("GreenCastle", include_bodies=True)
    assert {m["id"]: m["body_md"] for m in inbox} == {v: k for k, v in ids.items()}
    topic = await tools.call("fetch_topic", project_key=PROJECT, topic_name="big", agent_name="BlueLake")
    assert {m["id"]: m["body_md"] for m in topic} == {v: k for k, v in ids.items()}


async def test_broadcast_reaches_every_other_active_agent(tools: Tools, trio: dict[str, Any], server: FastMCP) -> None:
    await tools.agent("dormant-one")
    store = server.store  # type: ignore[attr-defined]
    slug = trio["project"]["slug"]
    # An agent last active 31 days ago is left out of broadcasts (§3.3: active <= 30 days).
    stale = (datetime.now(UTC) - timedelta(days=31)).isoformat()
    await store.redis.hset(store.keys.active(slug), "dormant-one", stale)

    message = payload(await tools.send("BlueLake", [], broadcast=True, cc=["alpha-one"], subject="all hands"))
    assert message["to"] == ["GreenCastle"]
    assert message["cc"] == ["alpha-one"]
    assert [m["kind"] for m in await tools.inbox("GreenCastle")] == ["to"]
    assert [m["kind"] for m in await tools.inbox("alpha-one")] == ["cc"]
    assert await tools.inbox("dormant-one") == []
    assert await tools.inbox("BlueLake") == []

    everyone = payload(await tools.send("GreenCastle", [], broadcast=True))
    assert everyone["to"] == ["BlueLake", "alpha-one"]


async def test_broadcast_with_nobody_else_active_delivers_nothing(tools: Tools, server: FastMCP) -> None:
    await tools.project()
    await tools.agent("BlueLake")
    before = await snapshot(server.store)  # type: ignore[attr-defined]
    result = await tools.send("BlueLake", [], broadcast=True)
    assert result == {"deliveries": [], "count": 0, "verified_sender": True}
    assert await snapshot(server.store) == before  # type: ignore[attr-defined]


# -- replying ------------------------------------------------------------------------------
async def test_reply_message_threads_and_defaults(tools: Tools, trio: dict[str, Any]) -> None:
    original = payload(
        await tools.send(
            "BlueLake",
            ["GreenCastle"],
            cc=["alpha-one"],
            subject="Schema change",
            importance="high",
            ack_required=True,
            topic="db",
        )
    )
    reply = await tools.call(
        "reply_message", project_key=PROJECT, message_id=original["id"], sender_name="greencastle", body_md="ok"
    )
    assert {"thread_id", "reply_to", "deliveries", "count", "verified_sender"} <= set(reply)
    assert set(reply) == HEAD_KEYS | {
        "body_md",
        "to",
        "cc",
        "bcc",
        "reply_to",
        "deliveries",
        "count",
        "verified_sender",
    }
    assert reply["reply_to"] == original["id"]
    assert reply["thread_id"] == str(original["id"])  # unthreaded original: its id is the thread key
    assert reply["subject"] == "Re: Schema change"
    assert (reply["importance"], reply["ack_required"], reply["topic"]) == ("high", True, "db")
    assert (reply["from"], reply["to"], reply["cc"], reply["bcc"]) == ("GreenCastle", ["BlueLake"], [], [])
    assert reply["body_md"] == "ok"
    assert reply["deliveries"][0]["payload"]["id"] == reply["id"] != original["id"]

    [item] = await tools.inbox("BlueLake")
    assert (item["id"], item["thread_id"], item["kind"]) == (reply["id"], str(original["id"]), "to")
    assert [m["id"] for m in await tools.inbox("alpha-one")] == [original["id"]]  # cc not copied by default

    # Replying to the reply keeps the thread key and does not stack prefixes.
    again = await tools.call(
        "reply_message", project_key=PROJECT, message_id=reply["id"], sender_name="BlueLake", body_md="thanks"
    )
    assert again["thread_id"] == str(original["id"])
    assert again["subject"] == "Re: Schema change"
    assert again["to"] == ["GreenCastle"]


async def test_reply_prefix_is_case_insensitive_and_custom(tools: Tools, trio: dict[str, Any]) -> None:
    first = payload(await tools.send("BlueLake", ["GreenCastle"], subject="RE: status", thread_id="bd-42"))
    reply = await tools.call(
        "reply_message", project_key=PROJECT, message_id=first["id"], sender_name="GreenCastle", body_md="x"
    )
    assert (reply["subject"], reply["thread_id"]) == ("RE: status", "bd-42")
    fwd = await tools.call(
        "reply_message",
        project_key=PROJECT,
        message_id=first["id"],
        sender_name="GreenCastle",
        body_md="x",
        subject_prefix="Fwd:",
    )
    assert fwd["subject"] == "Fwd: RE: status"


async def test_reply_to_own_message_goes_to_original_to_list(tools: Tools, trio: dict[str, Any]) -> None:
    original = payload(await tools.send("BlueLake", ["GreenCastle", "alpha-one"], bcc=["BlueLake"], subject="Q"))
    reply = await tools.call(
        "reply_message", project_key=PROJECT, message_id=original["id"], sender_name="BlueLake", body_md="ping"
    )
    assert reply["to"] == ["GreenCastle", "alpha-one"]
    assert reply["bcc"] == []


async def test_reply_with_explicit_recipients(tools: Tools, trio: dict[str, Any]) -> None:
    original = payload(await tools.send("BlueLake", ["GreenCastle"], subject="Q"))
    reply = await tools.call(
        "reply_message",
        project_key=PROJECT,
        message_id=original["id"],
        sender_name="GreenCastle",
        body_md="looping in alpha",
        to=["alpha-one"],
        cc=["bluelake"],
    )
    assert (reply["to"], reply["cc"]) == (["alpha-one"], ["BlueLake"])
    assert [m["kind"] for m in await tools.inbox("alpha-one")] == ["to"]
    assert [m["kind"] for m in await tools.inbox("BlueLake")] == ["cc"]


async def test_bcc_recipient_can_reply_to_the_sender(tools: Tools, trio: dict[str, Any]) -> None:
    original = payload(await tools.send("BlueLake", ["GreenCastle"], bcc=["alpha-one"]))
    reply = await tools.call(
        "reply_message", project_key=PROJECT, message_id=original["id"], sender_name="alpha-one", body_md="seen"
    )
    assert reply["to"] == ["BlueLake"]


# -- inbox -----------------------------------------------------------------------------------
async def test_fetch_inbox_newest_first_limit_and_bodies(tools: Tools, trio: dict[str, Any]) -> None:
    ids = [
        payload(await tools.send("BlueLake", ["GreenCastle"], subject=f"m{i}", body_md=f"body {i}"))["id"]
        for i in range(5)
    ]
    inbox = await tools.inbox("GreenCastle")
    assert [m["id"] for m in inbox] == ids[::-1]
    assert all(set(m) == HEAD_KEYS | {"kind"} for m in inbox)
    stamps = [m["created_ts"] for m in inbox]
    assert stamps == sorted(stamps, reverse=True)

    assert [m["id"] for m in await tools.inbox("GreenCastle", limit=3)] == ids[:1:-1]
    assert [m["id"] for m in await tools.inbox("GreenCastle", limit=1)] == ids[-1:]
    with_bodies = await tools.inbox("GreenCastle", include_bodies=True, limit=2)
    assert [(m["id"], m["body_md"]) for m in with_bodies] == [(ids[4], "body 4"), (ids[3], "body 3")]
    assert all(set(m) == HEAD_KEYS | {"kind", "body_md"} for m in with_bodies)


async def test_fetch_inbox_urgent_only(tools: Tools, trio: dict[str, Any]) -> None:
    by_importance = {}
    for importance in ("low", "normal", "high", "urgent"):
        sent = await tools.send("BlueLake", ["GreenCastle"], importance=importance)
        by_importance[importance] = payload(sent)["id"]
    urgent = await tools.inbox("GreenCastle", urgent_only=True)
    assert [m["id"] for m in urgent] == [by_importance["urgent"], by_importance["high"]]
    assert [m["id"] for m in await tools.inbox("GreenCastle", urgent_only=True, limit=1)] == [by_importance["urgent"]]


async def test_fetch_inbox_filters_page_past_non_matching_entries(tools: Tools, trio: dict[str, Any]) -> None:
    """Matching messages older than a long run of non-matching ones are still found."""
    urgent = [payload(await tools.send("BlueLake", ["GreenCastle"], importance="urgent"))["id"] for _ in range(3)]
    tagged = [payload(await tools.send("BlueLake", ["GreenCastle"], topic="Deploy"))["id"] for _ in range(2)]
    for _ in range(25):
        await tools.send("BlueLake", ["GreenCastle"])
    assert [m["id"] for m in await tools.inbox("GreenCastle", urgent_only=True, limit=3)] == urgent[::-1]
    assert [m["id"] for m in await tools.inbox("GreenCastle", urgent_only=True, limit=2)] == urgent[:0:-1]
    assert [m["id"] for m in await tools.inbox("GreenCastle", topic="deploy", limit=5)] == tagged[::-1]


async def test_fetch_inbox_since_ts_is_strictly_after(tools: Tools, trio: dict[str, Any]) -> None:
    sent = [payload(await tools.send("BlueLake", ["GreenCastle"], subject=f"m{i}")) for i in range(4)]
    ids = [m["id"] for m in sent]
    pivot = sent[1]["created_ts"]
    assert [m["id"] for m in await tools.inbox("GreenCastle", since_ts=pivot)] == [ids[3], ids[2]]
    moment = datetime.fromisoformat(pivot)
    same_instant = [
        moment.replace(tzinfo=None).isoformat(),  # naive = UTC
        moment.replace(tzinfo=None).isoformat() + "Z",
        moment.astimezone(timezone(timedelta(hours=2))).isoformat(),
        moment.astimezone(timezone(timedelta(hours=-5, minutes=-30))).isoformat(),
    ]
    for since in same_instant:
        assert [m["id"] for m in await tools.inbox("GreenCastle", since_ts=since)] == [ids[3], ids[2]], since
    shifted = (moment - timedelta(microseconds=1)).isoformat()
    assert [m["id"] for m in await tools.inbox("GreenCastle", since_ts=shifted)] == [ids[3], ids[2], ids[1]]
    assert await tools.inbox("GreenCastle", since_ts=sent[3]["created_ts"]) == []
    assert len(await tools.inbox("GreenCastle", since_ts="2000-01-01T00:00:00Z")) == 4
    assert len(await tools.inbox("GreenCastle", since_ts="")) == 4


async def test_fetch_inbox_topic_is_case_insensitive(tools: Tools, trio: dict[str, Any]) -> None:
    build = payload(await tools.send("BlueLake", ["GreenCastle"], topic="Build-Status"))["id"]
    await tools.send("BlueLake", ["GreenCastle"], topic="deploy")
    await tools.send("BlueLake", ["GreenCastle"])
    items = await tools.inbox("GreenCastle", topic="build-status")
    assert [(m["id"], m["topic"]) for m in items] == [(build, "Build-Status")]
    assert [m["id"] for m in await tools.inbox("GreenCastle", topic="BUILD-STATUS")] == [build]
    assert await tools.inbox("GreenCastle", topic="nothing") == []


async def test_fetch_inbox_kind_and_bcc_privacy(tools: Tools, trio: dict[str, Any]) -> None:
    await tools.agent("secret-watcher")
    message = payload(
        await tools.send(
            "BlueLake", ["GreenCastle"], cc=["alpha-one"], bcc=["secret-watcher"], topic="ops", subject="deploy"
        )
    )
    assert message["bcc"] == ["secret-watcher"]  # the sender sees its own bcc list
    for name, kind in (("GreenCastle", "to"), ("alpha-one", "cc"), ("secret-watcher", "bcc")):
        [item] = await tools.inbox(name, include_bodies=True)
        assert (item["id"], item["kind"]) == (message["id"], kind)
    for name in ("GreenCastle", "alpha-one"):
        seen = await tools.inbox(name, include_bodies=True)
        topic = await tools.call("fetch_topic", project_key=PROJECT, topic_name="ops", agent_name=name)
        assert "secret-watcher" not in json.dumps(seen).lower()
        assert "secret-watcher" not in json.dumps(topic).lower()
        assert "bcc" not in json.dumps(seen)
        # A reply from a visible recipient does not reach the bcc recipient.
        await tools.call("reply_message", project_key=PROJECT, message_id=message["id"], sender_name=name, body_md="r")
    assert [m["id"] for m in await tools.inbox("secret-watcher")] == [message["id"]]


async def test_fetch_inbox_is_read_only(tools: Tools, trio: dict[str, Any], server: FastMCP) -> None:
    message = payload(await tools.send("BlueLake", ["GreenCastle"], ack_required=True))
    store = server.store  # type: ignore[attr-defined]
    before = await snapshot(store)
    for args in ({}, {"include_bodies": True}, {"urgent_only": True}, {"topic": "x"}, {"limit": 1000}):
        await tools.inbox("GreenCastle", **args)
    await tools.call("fetch_topic", project_key=PROJECT, topic_name="x", agent_name="GreenCastle")
    await tools.call("whois", project_key=PROJECT, agent_name="GreenCastle")
    assert await snapshot(store) == before
    # Nothing was marked read by the fetches: the first mark sets the read time now.
    now = datetime.now(UTC)
    marked = await tools.call(
        "mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=message["id"]
    )
    assert marked["read"] is True
    assert datetime.fromisoformat(marked["read_at"]) >= now - timedelta(milliseconds=1)


async def test_empty_inbox_of_a_registered_agent(tools: Tools, trio: dict[str, Any]) -> None:
    assert await tools.inbox("alpha-one") == []
    assert await tools.inbox("alpha-one", urgent_only=True, since_ts="2020-01-01T00:00:00Z", topic="t") == []


# -- topics ----------------------------------------------------------------------------------
async def test_fetch_topic(tools: Tools, trio: dict[str, Any]) -> None:
    await tools.agent("outsider-one")
    one = payload(await tools.send("BlueLake", ["GreenCastle"], topic="Build", body_md="b1"))
    two = payload(await tools.send("GreenCastle", ["alpha-one"], bcc=["BlueLake"], topic="build", body_md="b2"))
    three = payload(await tools.send("alpha-one", ["GreenCastle"], topic="BUILD", body_md="b3"))
    await tools.send("BlueLake", ["GreenCastle"], topic="other")
    await tools.send("BlueLake", ["GreenCastle"])

    def fetch(viewer: str, **args: Any) -> Any:
        return tools.call("fetch_topic", project_key=PROJECT, topic_name="build", agent_name=viewer, **args)

    green = await fetch("GreenCastle")
    assert [m["id"] for m in green] == [three["id"], two["id"], one["id"]]
    assert all(set(m) == HEAD_KEYS | {"body_md"} for m in green)
    assert [m["body_md"] for m in green] == ["b3", "b2", "b1"]
    assert [m["topic"] for m in green] == ["BUILD", "build", "Build"]
    # Visibility: senders and recipients (bcc included) only.
    assert [m["id"] for m in await fetch("BlueLake")] == [two["id"], one["id"]]
    assert [m["id"] for m in await fetch("alpha-one")] == [three["id"], two["id"]]
    assert await fetch("outsider-one") == []
    # limit, include_bodies, since_ts (strictly after)
    assert [m["id"] for m in await fetch("GreenCastle", limit=2)] == [three["id"], two["id"]]
    assert all(set(m) == HEAD_KEYS for m in await fetch("GreenCastle", include_bodies=False))
    assert [m["id"] for m in await fetch("GreenCastle", since_ts=one["created_ts"])] == [three["id"], two["id"]]
    assert await fetch("GreenCastle", since_ts=three["created_ts"]) == []


async def test_fetch_topic_without_viewer_needs_an_authenticated_session(tools: Tools, trio: dict[str, Any]) -> None:
    # The default client negotiates the 2026-07-28 protocol: each request is its own session,
    # so no earlier call can have authenticated it.
    error = await tools.error("fetch_topic", project_key=PROJECT, topic_name="build")
    assert error.startswith("AUTHENTICATION_REQUIRED:")
    assert "agent_name" in error and "registration_token" in error


# -- read and acknowledgement ----------------------------------------------------------------
async def test_mark_message_read_sets_once(tools: Tools, trio: dict[str, Any]) -> None:
    message = payload(await tools.send("BlueLake", ["GreenCastle"], bcc=["alpha-one"]))
    first = await tools.call(
        "mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=message["id"]
    )
    assert set(first) == {"message_id", "read", "read_at"}
    assert first["message_id"] == message["id"] and first["read"] is True
    assert assert_iso_utc(first["read_at"]) >= datetime.fromisoformat(message["created_ts"])
    again = await tools.call(
        "mark_message_read", project_key=PROJECT, agent_name="greencastle", message_id=message["id"]
    )
    assert again == first
    # Read state is per recipient.
    other = await tools.call("mark_message_read", project_key=PROJECT, agent_name="alpha-one", message_id=message["id"])
    assert other["read"] is True
    assert datetime.fromisoformat(other["read_at"]) >= datetime.fromisoformat(first["read_at"])
    ack = await tools.call(
        "acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=message["id"]
    )
    assert ack["read_at"] == first["read_at"]  # acknowledging keeps the first read time


async def test_acknowledge_message_sets_read_and_ack_once(tools: Tools, trio: dict[str, Any]) -> None:
    message = payload(await tools.send("BlueLake", ["GreenCastle"], ack_required=True))
    first = await tools.call(
        "acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=message["id"]
    )
    assert set(first) == {"message_id", "acknowledged", "acknowledged_at", "read_at"}
    assert (first["message_id"], first["acknowledged"]) == (message["id"], True)
    assert_iso_utc(first["acknowledged_at"])
    assert first["read_at"] == first["acknowledged_at"]
    again = await tools.call(
        "acknowledge_message", project_key=PROJECT, agent_name="GREENCASTLE", message_id=message["id"]
    )
    assert again == first
    read = await tools.call(
        "mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=message["id"]
    )
    assert read == {"message_id": message["id"], "read": True, "read_at": first["read_at"]}


async def test_sender_only_gets_false_and_none(tools: Tools, trio: dict[str, Any]) -> None:
    message = payload(await tools.send("BlueLake", ["GreenCastle"]))
    read = await tools.call("mark_message_read", project_key=PROJECT, agent_name="BlueLake", message_id=message["id"])
    assert read == {"message_id": message["id"], "read": False, "read_at": None}
    ack = await tools.call("acknowledge_message", project_key=PROJECT, agent_name="BlueLake", message_id=message["id"])
    assert ack == {"message_id": message["id"], "acknowledged": False, "acknowledged_at": None, "read_at": None}


async def test_mark_and_ack_by_non_recipient_is_not_found(tools: Tools, trio: dict[str, Any], server: FastMCP) -> None:
    message = payload(await tools.send("BlueLake", ["GreenCastle"]))
    before = await snapshot(server.store)  # type: ignore[attr-defined]
    for tool in ("mark_message_read", "acknowledge_message"):
        for message_id in (message["id"], 987_654):
            error = await tools.error(tool, project_key=PROJECT, agent_name="alpha-one", message_id=message_id)
            assert error.startswith("NOT_FOUND:")
            assert f"Message '{message_id}' not found or not visible to agent 'alpha-one'" in error
            assert "fetch_inbox" in error
    assert await snapshot(server.store) == before  # type: ignore[attr-defined]


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
