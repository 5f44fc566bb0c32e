"""Bounds and failure modes: every limit is enforced before any write, indexed reads stay
correct however much other mail there is, and unexpected failures still carry a code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, make_settings, real_redis_only, snapshot

from broker.mail import send as mail
from broker.server import build_server
from broker.store.luajson import INLINE_BODY_BYTES


@pytest.fixture
async def pair(tools: Tools) -> dict[str, Any]:
    await tools.project()
    return {name: await tools.agent(name) for name in ("BlueLake", "GreenCastle", "RedFox")}


async def test_broadcast_beyond_its_cap_stores_nothing(
    tools: Tools, server: FastMCP, pair: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mail, "MAX_BROADCAST_RECIPIENTS", 1)
    before = await snapshot(server.store)  # type: ignore[attr-defined]
    error = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=[], subject="s", body_md="b", broadcast=True
    )
    assert error.startswith("INVALID_ARGUMENT: This message would reach 2 agents; the limit is 1.")
    assert await snapshot(server.store) == before  # type: ignore[attr-defined]


async def test_reply_checks_its_own_limits_before_reading(
    tools: Tools, server: FastMCP, settings: Any, pair: dict[str, Any]
) -> None:
    sent = await tools.send("BlueLake", ["GreenCastle"])
    message_id = sent["deliveries"][0]["payload"]["id"]
    before = await snapshot(server.store)  # type: ignore[attr-defined]
    huge = "x" * (settings.max_body_bytes + 1)
    # A too-large body is reported as such even for a message that does not exist.
    error = await tools.error(
        "reply_message", project_key=PROJECT, message_id=999_999, sender_name="GreenCastle", body_md=huge
    )
    assert error.startswith("INVALID_ARGUMENT: body_md is")
    many = [f"agent-{i}" for i in range(settings.max_recipients + 1)]
    error = await tools.error(
        "reply_message", project_key=PROJECT, message_id=message_id, sender_name="GreenCastle", body_md="b", to=many
    )
    assert error.startswith(f"INVALID_ARGUMENT: {len(many)} recipients exceed the limit")
    error = await tools.error(
        "reply_message", project_key=PROJECT, message_id=message_id, sender_name="GreenCastle", body_md="b",
        subject_prefix="R" * 33,
    )  # fmt: skip
    assert error.startswith("INVALID_ARGUMENT: subject_prefix is longer than 32")
    assert await snapshot(server.store) == before  # type: ignore[attr-defined]


@real_redis_only
async def test_fetch_topic_finds_old_messages_behind_busy_topics(tools: Tools, pair: dict[str, Any]) -> None:
    """A viewer's older topic message stays reachable however many messages of that topic other
    agents exchange later (the read walks the viewer's own topic index)."""
    await tools.send("BlueLake", ["GreenCastle"], topic="build", subject="for green")
    for i in range(300):
        await tools.send("BlueLake", ["RedFox"], topic="build", subject=f"noise {i}")
    got = await tools.call("fetch_topic", project_key=PROJECT, topic_name="build", agent_name="GreenCastle")
    assert [m["subject"] for m in got] == ["for green"]
    red = await tools.call("fetch_topic", project_key=PROJECT, topic_name="BUILD", agent_name="RedFox", limit=5)
    assert [m["subject"] for m in red] == [f"noise {i}" for i in range(299, 294, -1)]
    # The sender sees what it sent, newest first, bodies included by default.
    blue = await tools.call("fetch_topic", project_key=PROJECT, topic_name="build", agent_name="BlueLake", limit=301)
    assert len(blue) == 301 and blue[-1]["subject"] == "for green" and blue[-1]["body_md"] == "Body"


async def test_urgent_and_topic_filters_skip_other_mail(tools: Tools, pair: dict[str, Any]) -> None:
    await tools.send("BlueLake", ["GreenCastle"], importance="urgent", topic="db", subject="old urgent db")
    await tools.send("BlueLake", ["GreenCastle"], importance="high", subject="high no topic")
    for i in range(250):
        await tools.send("RedFox", ["GreenCastle"], subject=f"normal {i}", topic="db" if i % 2 else None)
    urgent = await tools.inbox("GreenCastle", urgent_only=True, include_bodies=True)
    assert [(m["subject"], m["kind"], m["body_md"]) for m in urgent] == [
        ("high no topic", "to", "Body"),
        ("old urgent db", "to", "Body"),
    ]
    both = await tools.inbox("GreenCastle", urgent_only=True, topic="DB")
    assert [m["subject"] for m in both] == ["old urgent db"]
    db = await tools.inbox("GreenCastle", topic="db", limit=1000)
    assert len(db) == 126 and db[-1]["subject"] == "old urgent db"
    since = urgent[1]["created_ts"]
    newer_urgent = await tools.inbox("GreenCastle", urgent_only=True, since_ts=since)
    assert [m["subject"] for m in newer_urgent] == ["high no topic"]


async def test_large_bodies_are_read_from_the_bodies_hash(tools: Tools, pair: dict[str, Any]) -> None:
    big = "y" * (INLINE_BODY_BYTES + 1)
    await tools.send("BlueLake", ["GreenCastle"], body_md=big, subject="big")
    await tools.send("BlueLake", ["GreenCastle"], body_md="small", subject="small")
    inbox = await tools.inbox("GreenCastle", include_bodies=True)
    assert [(m["subject"], m["body_md"]) for m in inbox] == [("small", "small"), ("big", big)]
    assert all("body_md" not in m for m in await tools.inbox("GreenCastle"))


async def test_text_that_is_not_unicode_is_an_invalid_argument(
    tools: Tools, server: FastMCP, pair: dict[str, Any]
) -> None:
    before = await snapshot(server.store)  # type: ignore[attr-defined]
    error = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="\ud800", body_md="b"
    )
    assert error.startswith("INVALID_ARGUMENT: Text is not valid Unicode")
    assert await snapshot(server.store) == before  # type: ignore[attr-defined]


async def test_oversized_keys_and_tokens_are_refused(tools: Tools, server: FastMCP, pair: dict[str, Any]) -> None:
    before = await snapshot(server.store)  # type: ignore[attr-defined]
    long_path = "/" + "a" * 5000
    assert (await tools.error("ensure_project", human_key=long_path)).startswith("INVALID_ARGUMENT: human_key has")
    error = await tools.error("fetch_inbox", project_key=long_path, agent_name="BlueLake")
    assert error.startswith("INVALID_ARGUMENT: project_key has 5001 characters; the limit is 4096.")
    error = await tools.error("fetch_inbox", project_key=PROJECT, agent_name="BlueLake", registration_token="t" * 300)
    assert error.startswith("AUTHENTICATION_FAILED: The token passed has 300 characters")
    assert await snapshot(server.store) == before  # type: ignore[attr-defined]


async def test_unreachable_redis_is_a_connection_error(tmp_path: Path) -> None:
    settings = make_settings("redis://127.0.0.1:1/0", tmp_path)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("ensure_project", {"human_key": "/tmp/x"}, raise_on_error=False)
    assert result.is_error
    assert result.content[0].text.startswith("CONNECTION_ERROR: Redis is unreachable")


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z"])
async def test_since_before_the_epoch_means_everything(tools: Tools, pair: dict[str, Any], since: str) -> None:
    await tools.send("BlueLake", ["GreenCastle"], importance="high", subject="one")
    assert [m["subject"] for m in await tools.inbox("GreenCastle", since_ts=since)] == ["one"]
    assert [m["subject"] for m in await tools.inbox("GreenCastle", since_ts=since, urgent_only=True)] == ["one"]
