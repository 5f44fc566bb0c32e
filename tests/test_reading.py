"""fetch_inbox, fetch_topic, mark_message_read and acknowledge_message through an MCP client (§3.3, §5.4)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from fastmcp import FastMCP
from helpers import PROJECT, Tools, snapshot
from shapes import HEAD_KEYS, assert_iso_utc, payload


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
