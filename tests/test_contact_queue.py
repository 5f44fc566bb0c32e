"""A send blocked only for lack of contact is held until approval; broadcasts skip and report."""

from __future__ import annotations

from typing import Any

from contact_helpers import policy, respond, retire
from fastmcp import FastMCP
from helpers import PROJECT, Tools, snapshot
from shapes import payload

OTHER = "/tmp/other-proj"


async def test_held_message_is_delivered_on_approval(tools: Tools, trio: dict[str, Any]) -> None:
    await policy(tools, "GreenCastle", "contacts_only")
    result = await tools.send("BlueLake", ["GreenCastle", "alpha-one"], subject="Schema", thread_id="DB-1")
    assert result["queued"] == [
        {"recipient": "GreenCastle", "project": PROJECT, "reason": "CONTACT_REQUIRED", "contact_status": "pending"}
    ]
    message = payload(result)
    assert (message["to"], message["cc"]) == (["alpha-one"], [])
    assert [m["id"] for m in await tools.inbox("alpha-one")] == [message["id"]]
    [intro] = await tools.inbox("GreenCastle", include_bodies=True)
    assert (intro["subject"], intro["ack_required"]) == ("Contact request from BlueLake", True)
    assert "('Schema') is held for you" in intro["body_md"]
    assert "respond_contact(project_key='/tmp/concurrent-test', to_agent='GreenCastle'" in intro["body_md"]
    # not visible to GreenCastle until it approves
    text = await tools.error(
        "mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=message["id"]
    )
    assert text.startswith("NOT_FOUND")

    response = await respond(tools, "GreenCastle", "BlueLake")
    assert response["delivered_message_ids"] == [message["id"]]
    held, _ = await tools.inbox("GreenCastle")
    assert (held["id"], held["kind"], held["subject"], held["thread_id"]) == (message["id"], "to", "Schema", "DB-1")
    read = await tools.call(
        "mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=message["id"]
    )
    assert read["read"] is True
    # delivered once: approving again delivers nothing more
    assert (await respond(tools, "GreenCastle", "BlueLake"))["delivered_message_ids"] == []
    assert len(await tools.inbox("GreenCastle")) == 2
    # GreenCastle now takes part in DB-1 and replies there
    reply = await tools.call(
        "reply_message", project_key=PROJECT, message_id=message["id"], sender_name="GreenCastle", body_md="ok"
    )
    assert reply["to"] == ["BlueLake"]


async def test_held_message_is_dropped_on_refusal(tools: Tools, trio: dict[str, Any]) -> None:
    await policy(tools, "GreenCastle", "contacts_only")
    result = await tools.send("BlueLake", ["GreenCastle"], ack_required=True)
    assert result["count"] == 1 and payload(result)["to"] == []
    assert (await respond(tools, "GreenCastle", "BlueLake", accept=False))["delivered_message_ids"] == []
    # a later change of mind does not bring the dropped message back
    assert (await respond(tools, "GreenCastle", "BlueLake"))["delivered_message_ids"] == []
    [intro] = await tools.inbox("GreenCastle")
    assert intro["subject"] == "Contact request from BlueLake"


async def test_without_auto_contact_a_blocked_send_stores_nothing(
    tools: Tools, trio: dict[str, Any], server: FastMCP
) -> None:
    await policy(tools, "GreenCastle", "contacts_only")
    before = await snapshot(server.store)  # type: ignore[attr-defined]
    text = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle", "alpha-one"],
        subject="s", body_md="b", auto_contact_if_blocked=False,
    )  # fmt: skip
    assert text.startswith("CONTACT_REQUIRED")
    assert await snapshot(server.store) == before  # type: ignore[attr-defined]


async def test_block_all_and_retired_are_not_held(tools: Tools, trio: dict[str, Any], server: FastMCP) -> None:
    await policy(tools, "GreenCastle", "block_all")
    text = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
        auto_contact_if_blocked=True,
    )  # fmt: skip
    assert text.startswith("CONTACT_BLOCKED")
    await retire(server, trio["project"]["slug"], "alpha-one")
    text = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=["alpha-one"], subject="s", body_md="b"
    )
    assert text.startswith("AGENT_RETIRED")


async def test_held_across_projects_then_approved(tools: Tools, trio: dict[str, Any]) -> None:
    await tools.project(OTHER)
    await tools.agent("RedFox", project_key=OTHER)
    result = await tools.send("BlueLake", [f"RedFox@{OTHER}"], subject="Hi from afar")
    assert result["queued"] == [
        {"recipient": "RedFox", "project": OTHER, "reason": "CONTACT_REQUIRED", "contact_status": "pending"}
    ]
    assert result["deliveries"][0]["project"] == OTHER
    message = payload(result)
    [intro] = await tools.inbox("RedFox", project_key=OTHER)
    assert intro["from_address"] == "project:tmp-concurrent-test#BlueLake"
    [link] = await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake")
    assert (link["to"], link["to_project"], link["status"]) == ("RedFox", OTHER, "pending")

    response = await tools.call(
        "respond_contact", project_key=OTHER, to_agent="RedFox", from_agent="BlueLake",
        from_project="tmp-concurrent-test", accept=True,
    )  # fmt: skip
    assert response["delivered_message_ids"] == [message["id"]]
    item, _ = await tools.inbox("RedFox", project_key=OTHER)
    assert (item["id"], item["subject"], item["from_project"]) == (message["id"], "Hi from afar", PROJECT)
    [link] = await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake")
    assert link["status"] == "approved"


# -- broadcast ---------------------------------------------------------------------------------
async def test_broadcast_skips_and_reports_recipients_that_refuse(
    tools: Tools, trio: dict[str, Any], server: FastMCP
) -> None:
    for name in ("RedFox", "OrangeOwl"):
        await tools.agent(name)
    await policy(tools, "GreenCastle", "block_all")
    await policy(tools, "RedFox", "contacts_only")
    await retire(server, trio["project"]["slug"], "alpha-one")
    result = await tools.send("BlueLake", [], broadcast=True, subject="all hands")
    assert payload(result)["to"] == ["OrangeOwl"]
    assert result["skipped"] == [
        {"recipient": "GreenCastle", "reason": "CONTACT_BLOCKED"},
        {"recipient": "RedFox", "reason": "CONTACT_REQUIRED"},
        {"recipient": "alpha-one", "reason": "AGENT_RETIRED"},
    ]
    assert "queued" not in result
    for name in ("GreenCastle", "RedFox", "alpha-one"):
        assert await tools.inbox(name) == []

    await policy(tools, "OrangeOwl", "block_all")
    nobody = await tools.send("BlueLake", [], broadcast=True)
    assert (nobody["deliveries"], nobody["count"]) == ([], 0)
    assert [s["recipient"] for s in nobody["skipped"]] == ["GreenCastle", "OrangeOwl", "RedFox", "alpha-one"]
