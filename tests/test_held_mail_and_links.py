"""Held mail and contact links at their edges: broadcasts stay in their project, held mail is bounded
and delivered in order, a bare name next to another project's address, waiting after held mail (§3.3, §3.4, §5.6)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from contact_helpers import policy, respond
from fastmcp import FastMCP
from helpers import PROJECT, Tools, make_settings
from shapes import payload

from broker.config import Settings

OTHER = "/tmp/other-proj"
OTHER_SLUG = "tmp-other-proj"
SLUG = "tmp-concurrent-test"
MAX_HELD = 3


@pytest.fixture
def settings(backend: str, tmp_path: Path) -> Settings:
    return make_settings(backend, tmp_path, CONTACT_MAX_HELD=MAX_HELD)


async def other_project(tools: Tools, *names: str, policy_value: str | None = None) -> None:
    await tools.project(OTHER)
    for name in names:
        await tools.agent(name, project_key=OTHER)
        if policy_value:
            await tools.call("set_contact_policy", project_key=OTHER, agent_name=name, policy=policy_value)


async def test_broadcast_does_not_reach_into_another_project(tools: Tools, trio: dict[str, Any]) -> None:
    """A broadcast's explicit cc of another project reaches that agent only: it neither broadcasts
    to the other project's agents nor lists them (their names are not the sender's to know)."""
    await other_project(tools, "RedFox", "OrangeOwl", "PinkBear", policy_value="open")
    await tools.call("set_contact_policy", project_key=OTHER, agent_name="PinkBear", policy="auto")
    result = await tools.send("BlueLake", [], broadcast=True, cc=[f"project:{OTHER_SLUG}#RedFox"])
    by_project = {d["project"]: d["payload"] for d in result["deliveries"]}
    assert (by_project[OTHER]["to"], by_project[OTHER]["cc"]) == ([], ["RedFox"])
    assert sorted(by_project[PROJECT]["to"]) == ["GreenCastle", "alpha-one"]
    assert "skipped" not in result
    assert await tools.inbox("OrangeOwl", project_key=OTHER) == []
    assert [m["kind"] for m in await tools.inbox("RedFox", project_key=OTHER)] == ["cc"]


async def test_held_messages_per_sender_and_recipient_are_bounded(tools: Tools, trio: dict[str, Any]) -> None:
    """Approving delivers every held message in one script, so a sender may not pile up an unbounded
    number of them for one recipient: past CONTACT_MAX_HELD the send is refused and stores nothing."""
    await policy(tools, "GreenCastle", "contacts_only")
    ids = [payload(await tools.send("BlueLake", ["GreenCastle"], subject=f"n{i}"))["id"] for i in range(MAX_HELD)]
    text = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle", "alpha-one"],
        subject="one too many", body_md="b",
    )  # fmt: skip
    assert text.startswith(
        f"CONTACT_REQUIRED: Recipient(s) GreenCastle already have {MAX_HELD} messages from BlueLake held"
    )
    assert "Nothing was sent" in text and "respond_contact(project_key='/tmp/concurrent-test', to_agent=" in text
    assert await tools.inbox("alpha-one") == []
    # another sender is not affected, and the held ones arrive once approved, oldest first
    assert payload(await tools.send("alpha-one", ["GreenCastle"]))["to"] == []
    assert (await respond(tools, "GreenCastle", "BlueLake"))["delivered_message_ids"] == ids
    assert payload(await tools.send("BlueLake", ["GreenCastle"], subject="now direct"))["to"] == ["GreenCastle"]


async def link_to(tools: Tools, frm: str, to: str) -> None:
    """frm (of PROJECT) asks to write to `to` (of OTHER), which approves."""
    await tools.call("request_contact", project_key=PROJECT, from_agent=frm, to_agent=to, to_project=OTHER)
    await tools.call(
        "respond_contact", project_key=OTHER, to_agent=to, from_agent=frm, from_project=PROJECT, accept=True
    )


async def test_linked_bare_name_next_to_an_explicit_other_project_address(tools: Tools, trio: dict[str, Any]) -> None:
    """A bare name reaches a linked agent of another project whether or not the same send also
    names an agent of another project explicitly."""
    await other_project(tools, "RedFox", "OrangeOwl")
    await tools.call("set_contact_policy", project_key=OTHER, agent_name="OrangeOwl", policy="open")
    await link_to(tools, "BlueLake", "RedFox")
    result = await tools.send("BlueLake", ["RedFox", "GreenCastle"], cc=[f"OrangeOwl@{OTHER}"], subject="both")
    assert "delivery_errors" not in result, result["delivery_errors"]
    by_project = {d["project"]: d["payload"] for d in result["deliveries"]}
    assert (by_project[OTHER]["to"], by_project[OTHER]["cc"]) == (["RedFox"], ["OrangeOwl"])
    assert by_project[PROJECT]["to"] == ["GreenCastle"]
    assert (await tools.inbox("RedFox", project_key=OTHER))[0]["subject"] == "both"


async def test_wait_for_mail_after_a_message_that_was_held(tools: Tools, trio: dict[str, Any]) -> None:
    """A held message enters the inbox when it is approved, not when it was sent; its id still
    works as wait_for_mail's after_id."""
    await policy(tools, "GreenCastle", "contacts_only")
    held = payload(await tools.send("BlueLake", ["GreenCastle"], subject="held"))["id"]
    await asyncio.sleep(1.2)
    assert (await respond(tools, "GreenCastle", "BlueLake"))["delivered_message_ids"] == [held]
    waited = await tools.call(
        "wait_for_mail", project_key=PROJECT, agent_name="GreenCastle", after_id=held, timeout_seconds=0
    )
    assert (waited["messages"], waited["timed_out"]) == ([], True)
    later = payload(await tools.send("BlueLake", ["GreenCastle"], subject="later"))["id"]
    waited = await tools.call(
        "wait_for_mail", project_key=PROJECT, agent_name="GreenCastle", after_id=held, timeout_seconds=0
    )
    assert [m["id"] for m in waited["messages"]] == [later]


async def test_held_messages_are_delivered_in_the_order_they_were_sent(
    tools: Tools, trio: dict[str, Any], server: FastMCP
) -> None:
    """Holds are scored by deadline; with CONTACT_HOLD_TTL_SECONDS lowered between two sends (a
    restart with new settings) the later message has the earlier deadline, yet arrives second."""
    await policy(tools, "GreenCastle", "contacts_only")
    first = payload(await tools.send("BlueLake", ["GreenCastle"], subject="first"))["id"]
    server.store.settings.contact_hold_ttl_seconds = 3600  # type: ignore[attr-defined]
    second = payload(await tools.send("BlueLake", ["GreenCastle"], subject="second"))["id"]
    assert (await respond(tools, "GreenCastle", "BlueLake"))["delivered_message_ids"] == [first, second]
    waited = await tools.call("wait_for_mail", project_key=PROJECT, agent_name="GreenCastle", after_id=first)
    assert [m["id"] for m in waited["messages"]] == [second]


async def test_respond_contact_result_keys_and_self(tools: Tools, trio: dict[str, Any]) -> None:
    """Refusing a request that does not exist answers with the same keys as every other response,
    and an agent cannot approve a link to itself (request_contact refuses self-contact too)."""
    refused = await respond(tools, "GreenCastle", "BlueLake", accept=False)
    assert refused == {
        "from": "BlueLake", "to": "GreenCastle", "approved": False, "expires_ts": None, "updated": 0,
        "delivered_message_ids": [],
    }  # fmt: skip
    text = await tools.error(
        "respond_contact", project_key=PROJECT, to_agent="GreenCastle", from_agent="greencastle", accept=True
    )
    assert text.startswith("INVALID_ARGUMENT: respond_contact does not allow self-contact")
    assert await tools.call("list_contacts", project_key=PROJECT, agent_name="GreenCastle") == []
