"""send_message and reply_message through an MCP client, as in the reference (§3.3, §5.3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastmcp import FastMCP
from helpers import PROJECT, Tools, snapshot
from shapes import HEAD_KEYS, assert_iso_utc, payload


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
    await store.client().hset(store.keys.active(slug), "dormant-one", stale)

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
    assert {"thread_id", "reply_to", "deliveries", "count"} <= set(reply)
    assert set(reply) == HEAD_KEYS | {
        "body_md",
        "to",
        "cc",
        "bcc",
        "reply_to",
        "deliveries",
        "count",
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
