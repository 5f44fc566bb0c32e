"""Contact tools and contact-policy enforcement on every send path (reference §3.4, §5.6)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from contact_helpers import policy, request, respond, retire
from fastmcp import FastMCP
from helpers import PROJECT, Tools, snapshot
from shapes import payload

LINK_KEYS = {"to", "to_project", "status", "is_expired", "allows_messaging", "reason", "updated_ts", "expires_ts"}


def assert_expires_in(value: str, seconds: int) -> None:
    """An expiry as the broker writes timestamps, ``seconds`` from now (give or take a minute)."""
    moment = datetime.fromisoformat(value)
    assert moment.isoformat() == value and value.endswith("+00:00"), value
    assert abs((moment - datetime.now(UTC)).total_seconds() - seconds) < 60, value


# -- the tools ------------------------------------------------------------------------------
async def test_set_contact_policy_result_and_bad_value(tools: Tools, trio: dict[str, Any]) -> None:
    assert await policy(tools, "greencastle", "contacts_only") == {"agent": "GreenCastle", "policy": "contacts_only"}
    assert await policy(tools, "GreenCastle", " Block_All ") == {"agent": "GreenCastle", "policy": "block_all"}
    text = await tools.error("set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="friends")
    assert text.startswith("INVALID_ARGUMENT: Contact policy 'friends' is not one of: open")
    for value in ("auto", "contacts_only", "block_all"):
        assert value in text
    text = await tools.error("set_contact_policy", project_key=PROJECT, agent_name="Nobody-x", policy="open")
    assert text.startswith("NOT_FOUND: Agent 'Nobody-x' not found")


async def test_request_contact_result_intro_mail_and_listing(tools: Tools, trio: dict[str, Any]) -> None:
    result = await request(tools, "BlueLake", "greencastle", reason="need the schema")
    assert set(result) == {"from", "from_project", "to", "to_project", "status", "expires_ts", "notification_message"}
    assert (result["from"], result["to"], result["status"]) == ("BlueLake", "GreenCastle", "pending")
    assert result["from_project"] == result["to_project"] == PROJECT
    assert_expires_in(result["expires_ts"], 7 * 86400)
    intro = result["notification_message"]
    assert (intro["subject"], intro["body_md"], intro["ack_required"]) == (
        "Contact request from BlueLake",
        "need the schema",
        True,
    )
    [item] = await tools.inbox("GreenCastle", include_bodies=True)
    assert (item["id"], item["subject"], item["body_md"], item["kind"]) == (
        intro["id"],
        "Contact request from BlueLake",
        "need the schema",
        "to",
    )
    # A second request while the first is pending sends no second intro.
    again = await request(tools, "BlueLake", "GreenCastle")
    assert again["status"] == "pending" and "notification_message" not in again
    assert again["expires_ts"] >= result["expires_ts"]
    assert len(await tools.inbox("GreenCastle")) == 1

    [link] = await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake")
    assert set(link) == LINK_KEYS
    assert (link["to"], link["to_project"], link["status"]) == ("GreenCastle", PROJECT, "pending")
    assert (link["is_expired"], link["allows_messaging"], link["reason"]) == (False, False, "need the schema")
    assert await tools.call("list_contacts", project_key=PROJECT, agent_name="GreenCastle") == []


async def test_request_contact_default_body_and_errors(tools: Tools, trio: dict[str, Any]) -> None:
    result = await request(tools, "BlueLake", "alpha-one")
    assert result["notification_message"]["body_md"] == "BlueLake requests permission to contact alpha-one."
    text = await tools.error("request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="bluelake")
    assert text.startswith("INVALID_ARGUMENT: request_contact does not allow self-contact")
    text = await tools.error("request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="RedFox")
    assert text.startswith("NOT_FOUND: Agent 'RedFox' not found in project")
    await policy(tools, "GreenCastle", "block_all")
    text = await tools.error("request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="GreenCastle")
    assert text.startswith("CONTACT_BLOCKED: Agent 'GreenCastle' is not accepting contact requests")
    text = await tools.error(
        "request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="alpha-one", ttl_seconds="x"
    )
    assert text.startswith("INVALID_ARGUMENT")


async def test_respond_contact_accept_refuse_and_list(tools: Tools, trio: dict[str, Any]) -> None:
    await request(tools, "BlueLake", "GreenCastle")
    result = await respond(tools, "GreenCastle", "BlueLake")
    assert set(result) == {"from", "to", "approved", "expires_ts", "updated", "delivered_message_ids"}
    assert (result["from"], result["to"], result["approved"], result["updated"]) == (
        "BlueLake",
        "GreenCastle",
        True,
        1,
    )
    assert_expires_in(result["expires_ts"], 30 * 86400)
    [link] = await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake")
    assert (link["status"], link["allows_messaging"], link["expires_ts"]) == ("approved", True, result["expires_ts"])

    refused = await respond(tools, "GreenCastle", "BlueLake", accept=False)
    assert (refused["approved"], refused["expires_ts"], refused["updated"]) == (False, None, 1)
    [link] = await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake")
    assert (link["status"], link["allows_messaging"], link["expires_ts"]) == ("blocked", False, None)
    # a refused requester cannot ask again; the target can still change its mind
    text = await tools.error("request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="GreenCastle")
    assert "it refused your earlier request" in text
    assert (await respond(tools, "GreenCastle", "BlueLake"))["approved"] is True

    # refusing a request that was never made changes nothing
    missing = await respond(tools, "alpha-one", "BlueLake", accept=False)
    assert missing == {
        "from": "BlueLake", "to": "alpha-one", "approved": False, "expires_ts": None, "updated": 0,
        "delivered_message_ids": [],
    }  # fmt: skip


async def test_contact_tools_check_tokens(tools: Tools, trio: dict[str, Any]) -> None:
    text = await tools.error(
        "request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="GreenCastle", registration_token="x"
    )
    assert text.startswith("AUTHENTICATION_FAILED: Invalid registration_token for agent 'BlueLake'")
    for tool, args in (
        ("respond_contact", {"to_agent": "GreenCastle", "from_agent": "BlueLake", "accept": True}),
        ("list_contacts", {"agent_name": "GreenCastle"}),
        ("set_contact_policy", {"agent_name": "GreenCastle", "policy": "open"}),
    ):
        text = await tools.error(tool, project_key=PROJECT, registration_token="wrong", **args)
        assert text.startswith("AUTHENTICATION_FAILED"), (tool, text)


async def test_short_ttl_is_raised_to_the_minimum(tools: Tools, trio: dict[str, Any]) -> None:
    result = await request(tools, "BlueLake", "GreenCastle", ttl_seconds=1)
    [item] = await tools.inbox("GreenCastle")
    created = datetime.fromisoformat(item["created_ts"])
    assert 59 <= (datetime.fromisoformat(result["expires_ts"]) - created).total_seconds() <= 61


# -- enforcement in one project ----------------------------------------------------------------
async def send_error(tools: Tools, sender: str, to: list[str], **extra: Any) -> str:
    return await tools.error(
        "send_message", project_key=PROJECT, sender_name=sender, to=to, subject="s", body_md="b", **extra
    )


async def test_auto_lets_agents_of_one_project_write(tools: Tools, trio: dict[str, Any]) -> None:
    assert payload(await tools.send("BlueLake", ["GreenCastle"]))["to"] == ["GreenCastle"]


async def test_block_all_refuses_every_path(tools: Tools, trio: dict[str, Any], server: FastMCP) -> None:
    first = payload(await tools.send("GreenCastle", ["BlueLake"], thread_id="T-1"))
    await policy(tools, "GreenCastle", "block_all")
    before = await snapshot(server.store)  # type: ignore[attr-defined]
    for extra in ({}, {"ack_required": True}, {"thread_id": "T-1"}, {"cc": ["alpha-one"]}):
        text = await send_error(tools, "BlueLake", ["GreenCastle"], **extra)
        assert text.startswith(
            "CONTACT_BLOCKED: Recipient is not accepting messages: GreenCastle refuse(s) mail from BlueLake"
        )
    text = await tools.error(
        "reply_message", project_key=PROJECT, message_id=first["id"], sender_name="BlueLake", body_md="x"
    )
    assert text.startswith("CONTACT_BLOCKED")
    assert await snapshot(server.store) == before  # type: ignore[attr-defined]
    # writing to oneself always works
    assert payload(await tools.send("GreenCastle", ["GreenCastle"]))["to"] == ["GreenCastle"]


async def test_retired_recipient_is_refused_even_in_its_thread(
    tools: Tools, trio: dict[str, Any], server: FastMCP
) -> None:
    first = payload(await tools.send("GreenCastle", ["BlueLake"], thread_id="T-2"))
    await retire(server, trio["project"]["slug"], "GreenCastle")
    text = await send_error(tools, "BlueLake", ["GreenCastle", "alpha-one"], thread_id="T-2")
    assert text.startswith("AGENT_RETIRED: Agent(s) GreenCastle are retired")
    text = await tools.error(
        "reply_message", project_key=PROJECT, message_id=first["id"], sender_name="BlueLake", body_md="x"
    )
    assert text.startswith("AGENT_RETIRED")
    assert await tools.inbox("alpha-one") == []


@pytest.mark.parametrize("extra", [{}, {"ack_required": True, "importance": "urgent"}])
async def test_contacts_only_needs_an_approved_link(tools: Tools, trio: dict[str, Any], extra: dict[str, Any]) -> None:
    await policy(tools, "GreenCastle", "contacts_only")
    text = await send_error(tools, "BlueLake", ["GreenCastle"], auto_contact_if_blocked=False, **extra)
    assert text.startswith("CONTACT_REQUIRED: Contact approval required for recipients: GreenCastle.")
    assert "request_contact(project_key='/tmp/concurrent-test', from_agent='BlueLake', to_agent='GreenCastle')" in text
    assert "respond_contact(project_key='/tmp/concurrent-test', to_agent='GreenCastle', from_agent='BlueLake'" in text
    assert await tools.inbox("GreenCastle") == []

    await request(tools, "BlueLake", "GreenCastle")
    await respond(tools, "GreenCastle", "BlueLake")
    sent = payload(await tools.send("BlueLake", ["GreenCastle"], auto_contact_if_blocked=False, **extra))
    assert sent["to"] == ["GreenCastle"]
    # the approved link works both ways: GreenCastle (contacts_only) answers, BlueLake (auto) too
    await policy(tools, "BlueLake", "contacts_only")
    reply = await tools.call(
        "reply_message", project_key=PROJECT, message_id=sent["id"], sender_name="GreenCastle", body_md="ok"
    )
    assert reply["to"] == ["BlueLake"]


async def test_contacts_only_admits_thread_participants(tools: Tools, trio: dict[str, Any]) -> None:
    first = payload(await tools.send("BlueLake", ["GreenCastle"], thread_id="FEAT-9"))
    await policy(tools, "GreenCastle", "contacts_only")
    await policy(tools, "BlueLake", "contacts_only")
    # both took part in FEAT-9: either may write in it
    assert payload(await tools.send("BlueLake", ["GreenCastle"], thread_id="FEAT-9"))["to"] == ["GreenCastle"]
    reply = await tools.call(
        "reply_message", project_key=PROJECT, message_id=first["id"], sender_name="GreenCastle", body_md="ok"
    )
    assert reply["to"] == ["BlueLake"]
    # but not outside it, and alpha-one (not in the thread) cannot use it
    text = await send_error(tools, "BlueLake", ["GreenCastle"], auto_contact_if_blocked=False)
    assert text.startswith("CONTACT_REQUIRED")
    text = await send_error(tools, "alpha-one", ["GreenCastle"], thread_id="FEAT-9", auto_contact_if_blocked=False)
    assert text.startswith("CONTACT_REQUIRED")


async def test_contacts_only_admits_participants_of_an_unthreaded_first_message(
    tools: Tools, trio: dict[str, Any]
) -> None:
    first = payload(await tools.send("GreenCastle", ["BlueLake"]))
    await policy(tools, "GreenCastle", "contacts_only")
    reply = await tools.call(
        "reply_message", project_key=PROJECT, message_id=first["id"], sender_name="BlueLake", body_md="re"
    )
    assert reply["to"] == ["GreenCastle"] and reply["thread_id"] == str(first["id"])


async def test_refused_link_blocks_unless_open(tools: Tools, trio: dict[str, Any]) -> None:
    await request(tools, "BlueLake", "GreenCastle")
    await respond(tools, "GreenCastle", "BlueLake", accept=False)
    text = await send_error(tools, "BlueLake", ["GreenCastle"])
    assert text.startswith("CONTACT_BLOCKED")
    assert payload(await tools.send("alpha-one", ["GreenCastle"]))["to"] == ["GreenCastle"]
    await policy(tools, "GreenCastle", "open")
    assert payload(await tools.send("BlueLake", ["GreenCastle"]))["to"] == ["GreenCastle"]


async def test_archived_project_refuses_sends(tools: Tools, trio: dict[str, Any], server: FastMCP) -> None:
    store = server.store  # type: ignore[attr-defined]
    await store.client().hset(store.keys.project(trio["project"]["slug"]), "archived_at", "2025-01-01T00:00:00+00:00")
    text = await send_error(tools, "BlueLake", ["GreenCastle"])
    assert text.startswith(f"PROJECT_ARCHIVED: Project '{PROJECT}' is archived; call unarchive_project(")


# -- macro_contact_handshake ---------------------------------------------------------------------
async def test_handshake_fast_path_approves_without_mail(tools: Tools, trio: dict[str, Any]) -> None:
    await policy(tools, "GreenCastle", "contacts_only")
    result = await tools.call(
        "macro_contact_handshake", project_key=PROJECT, agent_name="BlueLake", to_agent="GreenCastle", auto_accept=True,
        target_registration_token=trio["agents"]["GreenCastle"]["registration_token"],
    )  # fmt: skip
    assert set(result) == {"request", "response", "welcome_message"}
    assert result["request"] == result["response"]
    assert set(result["request"]) == {"from", "from_project", "to", "to_project", "status", "expires_ts"}
    assert (result["request"]["from"], result["request"]["to"], result["request"]["status"]) == (
        "BlueLake",
        "GreenCastle",
        "approved",
    )
    assert result["welcome_message"] is None
    assert await tools.inbox("GreenCastle") == []
    assert payload(await tools.send("BlueLake", ["GreenCastle"], auto_contact_if_blocked=False))["to"] == [
        "GreenCastle"
    ]


async def test_handshake_slow_path_with_welcome(tools: Tools, trio: dict[str, Any]) -> None:
    await policy(tools, "GreenCastle", "contacts_only")
    result = await tools.call(
        "macro_contact_handshake", project_key=PROJECT, requester="BlueLake", target="GreenCastle",
        reason="pairing", auto_accept=True, welcome_subject="Hello", welcome_body="Let's pair", thread_id="PAIR-1",
        target_registration_token=trio["agents"]["GreenCastle"]["registration_token"],
    )  # fmt: skip
    assert result["request"]["status"] == "pending"
    assert result["request"]["notification_message"]["body_md"] == "pairing"
    assert (result["response"]["approved"], result["response"]["from"]) == (True, "BlueLake")
    welcome = payload(result["welcome_message"])
    assert (welcome["subject"], welcome["thread_id"], welcome["to"]) == ("Hello", "PAIR-1", ["GreenCastle"])
    assert [m["subject"] for m in await tools.inbox("GreenCastle")] == ["Hello", "Contact request from BlueLake"]


async def test_handshake_without_accept_only_requests(tools: Tools, trio: dict[str, Any]) -> None:
    result = await tools.call("macro_contact_handshake", project_key=PROJECT, requester="BlueLake", target="alpha-one")
    assert (result["request"]["status"], result["response"], result["welcome_message"]) == ("pending", None, None)


async def test_handshake_argument_errors(tools: Tools, trio: dict[str, Any]) -> None:
    base = {"project_key": PROJECT, "requester": "BlueLake", "target": "GreenCastle"}
    cases = [
        ({"auto_accept": True, "welcome_subject": "Hi"}, "Pass both welcome_subject and welcome_body"),
        ({"auto_accept": True, "welcome_subject": " ", "welcome_body": "x"}, "must not be blank"),
        ({"welcome_subject": "Hi", "welcome_body": "x"}, "require auto_accept=True"),
    ]
    for extra, expected in cases:
        text = await tools.error("macro_contact_handshake", **base, **extra)
        assert text.startswith("INVALID_ARGUMENT") and expected in text, text
    text = await tools.error("macro_contact_handshake", project_key=PROJECT, target="GreenCastle")
    assert text.startswith("INVALID_ARGUMENT: macro_contact_handshake needs requester")


async def test_handshake_target_token_is_checked(tools: Tools, trio: dict[str, Any]) -> None:
    result = await tools.call(
        "macro_contact_handshake", project_key=PROJECT, requester="BlueLake", target="GreenCastle",
        auto_accept=True, welcome_subject="Hi", welcome_body="x", target_registration_token="wrong",
    )  # fmt: skip
    assert result["response"] is None and result["welcome_message"] is None
    assert result["response_error"]["type"] == "AUTHENTICATION_FAILED"
