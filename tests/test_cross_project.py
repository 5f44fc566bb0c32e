"""Mail between projects: addressing, links, from_project fields, replies, persistence (§5.3)."""

from __future__ import annotations

from typing import Any

import pytest
from fastmcp import FastMCP
from helpers import PROJECT, Tools
from persist_helpers import committed_files, front_matter, index_rows, run_worker
from shapes import HEAD_KEYS, payload

from broker.config import Settings

OTHER = "/tmp/other-proj"
OTHER_SLUG = "tmp-other-proj"
SLUG = "tmp-concurrent-test"
FROM_KEYS = {"from_project", "from_project_slug", "from_address"}


@pytest.fixture
async def two(tools: Tools, trio: dict[str, Any]) -> dict[str, Any]:
    """The trio's project plus another project with RedFox and OrangeOwl."""
    other = await tools.project(OTHER)
    agents = {name: await tools.agent(name, project_key=OTHER) for name in ("RedFox", "OrangeOwl")}
    return {**trio, "other": other, "other_agents": agents}


async def link(tools: Tools, frm: str = "BlueLake", to: str = "RedFox") -> dict[str, Any]:
    """frm (of PROJECT) asks to write to `to` (of OTHER), which approves."""
    await tools.call("request_contact", project_key=PROJECT, from_agent=frm, to_agent=to, to_project=OTHER)
    return await tools.call(
        "respond_contact", project_key=OTHER, to_agent=to, from_agent=frm, from_project=PROJECT, accept=True
    )


async def test_cross_project_mail_needs_an_approved_link(tools: Tools, two: dict[str, Any]) -> None:
    text = await tools.error(
        "send_message",
        project_key=PROJECT,
        sender_name="BlueLake",
        to=[f"project:{OTHER_SLUG}#RedFox"],
        subject="s",
        body_md="b",
        auto_contact_if_blocked=False,
    )
    assert text.startswith("CONTACT_REQUIRED: Contact approval required for recipients: RedFox.")
    assert f"to_agent='project:{OTHER_SLUG}#RedFox'" in text
    assert f"from_project='{SLUG}'" in text
    assert await tools.inbox("RedFox", project_key=OTHER) == []


async def test_request_and_respond_across_projects(tools: Tools, two: dict[str, Any]) -> None:
    request = await tools.call(
        "request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent=f"project:{OTHER_SLUG}#redfox"
    )
    assert (request["from"], request["from_project"], request["to"], request["to_project"]) == (
        "BlueLake",
        PROJECT,
        "RedFox",
        OTHER,
    )
    assert request["status"] == "pending"
    [intro] = await tools.inbox("RedFox", project_key=OTHER)
    assert intro["subject"] == "Contact request from BlueLake" and intro["ack_required"] is True
    assert (intro["from"], intro["from_project"], intro["from_project_slug"], intro["from_address"]) == (
        "BlueLake",
        PROJECT,
        SLUG,
        f"project:{SLUG}#BlueLake",
    )
    # the requester's copy of the link lives in its own project
    [pending] = await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake")
    assert (pending["to"], pending["to_project"], pending["status"]) == ("RedFox", OTHER, "pending")

    response = await tools.call(
        "respond_contact", project_key=OTHER, to_agent="RedFox", from_agent=f"project:{SLUG}#BlueLake", accept=True
    )
    assert (response["from"], response["to"], response["approved"], response["updated"]) == (
        "BlueLake",
        "RedFox",
        True,
        1,
    )
    [approved] = await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake")
    assert (approved["status"], approved["allows_messaging"]) == ("approved", True)


@pytest.mark.parametrize("address", [f"project:{OTHER_SLUG}#RedFox", f"project:{OTHER}#redfox", "RedFox@" + OTHER,
                                     f"RedFox@{OTHER_SLUG}", "RedFox"])  # fmt: skip
async def test_address_forms_deliver_into_the_target_project(tools: Tools, two: dict[str, Any], address: str) -> None:
    await link(tools)
    result = await tools.send("BlueLake", [address], subject="Cross", body_md="hello there", topic="ops")
    assert set(result) == {"deliveries", "count", "verified_sender", "attachments"}
    assert result["count"] == 1 and result["deliveries"][0]["project"] == OTHER
    message = payload(result)
    assert set(message) == HEAD_KEYS | FROM_KEYS | {"body_md", "to", "cc", "bcc"}
    assert message["project_id"] == two["other"]["id"]
    assert message["sender_id"] == two["agents"]["BlueLake"]["id"]
    assert (message["from"], message["from_project"], message["from_project_slug"], message["from_address"]) == (
        "BlueLake",
        PROJECT,
        SLUG,
        f"project:{SLUG}#BlueLake",
    )
    assert message["to"] == ["RedFox"]
    item, intro = await tools.inbox("RedFox", project_key=OTHER, include_bodies=True)
    assert intro["subject"] == "Contact request from BlueLake"
    assert item == {**{k: message[k] for k in HEAD_KEYS | FROM_KEYS}, "kind": "to", "body_md": "hello there"}
    # the sender's project has no copy of it; the other agent there has nothing
    assert await tools.inbox("OrangeOwl", project_key=OTHER) == []
    assert await tools.inbox("GreenCastle") == []


async def test_one_send_to_both_projects_and_a_reply_back(tools: Tools, two: dict[str, Any]) -> None:
    await link(tools)
    result = await tools.send("BlueLake", ["GreenCastle", f"RedFox@{OTHER_SLUG}"], subject="Both")
    assert result["count"] == 2 and "attachments" not in result
    local, remote = (d["payload"] for d in result["deliveries"])
    assert [d["project"] for d in result["deliveries"]] == [PROJECT, OTHER]
    assert local["to"] == ["GreenCastle"] and remote["to"] == ["RedFox"]
    assert local["id"] != remote["id"] and not FROM_KEYS & set(local)

    reply = await tools.call(
        "reply_message", project_key=OTHER, message_id=remote["id"], sender_name="RedFox", body_md="got it"
    )
    assert reply["deliveries"][0]["project"] == PROJECT
    assert (reply["to"], reply["subject"], reply["thread_id"]) == (["BlueLake"], "Re: Both", str(remote["id"]))
    [item] = await tools.inbox("BlueLake")
    assert (item["id"], item["from"], item["from_project"], item["from_address"]) == (
        reply["id"],
        "RedFox",
        OTHER,
        f"project:{OTHER_SLUG}#RedFox",
    )
    # and BlueLake answers that reply, which routes back into RedFox's project
    again = await tools.call(
        "reply_message", project_key=PROJECT, message_id=reply["id"], sender_name="BlueLake", body_md="thanks"
    )
    assert again["deliveries"][0]["project"] == OTHER
    assert (await tools.inbox("RedFox", project_key=OTHER))[0]["id"] == again["id"]


async def test_partial_and_total_delivery_failures(tools: Tools, two: dict[str, Any]) -> None:
    await link(tools)
    result = await tools.send(
        "BlueLake", ["GreenCastle", f"project:{OTHER_SLUG}#OrangeOwl"], auto_contact_if_blocked=False
    )
    assert result["count"] == 1 and result["deliveries"][0]["project"] == PROJECT
    [error] = result["delivery_errors"]
    assert (error["project"], error["type"]) == (OTHER_SLUG, "CONTACT_REQUIRED")

    await tools.project("/tmp/third-proj")
    await tools.agent("GrayWolf", project_key="/tmp/third-proj")
    failed = await tools.send(
        "BlueLake", ["OrangeOwl@/tmp/other-proj", "GrayWolf@tmp-third-proj"], auto_contact_if_blocked=False
    )
    assert failed["error"]["type"] == "DELIVERY_FAILED"
    assert failed["error"]["message"] == "Message delivery failed for all target projects."
    assert [e["type"] for e in failed["error"]["errors"]] == ["CONTACT_REQUIRED", "CONTACT_REQUIRED"]


async def test_unknown_external_recipient_and_project(tools: Tools, two: dict[str, Any]) -> None:
    text = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=[f"project:{OTHER_SLUG}#RedFix"],
        subject="s", body_md="b",
    )  # fmt: skip
    assert text.startswith("RECIPIENT_NOT_FOUND") and "did you mean 'RedFox'" in text and OTHER in text
    text = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=["RedFox@/tmp/nowhere"], subject="s",
        body_md="b",
    )  # fmt: skip
    assert text.startswith("NOT_FOUND: Project '/tmp/nowhere' not found")
    # without a link a bare foreign name is simply unknown here
    text = await tools.error("send_message", project_key=PROJECT, sender_name="BlueLake", to=["RedFox"], subject="s",
                             body_md="b")  # fmt: skip
    assert text.startswith("RECIPIENT_NOT_FOUND")


async def test_open_policy_takes_mail_from_other_projects(tools: Tools, two: dict[str, Any]) -> None:
    await tools.call("set_contact_policy", project_key=OTHER, agent_name="OrangeOwl", policy="open")
    message = payload(await tools.send("BlueLake", [f"OrangeOwl@{OTHER}"]))
    assert message["to"] == ["OrangeOwl"] and message["from_project"] == PROJECT


async def test_cross_project_message_and_link_are_persisted(
    tools: Tools, two: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    await link(tools)
    message = payload(await tools.send("BlueLake", [f"project:{OTHER_SLUG}#RedFox"], subject="Persist me"))
    await tools.call("set_contact_policy", project_key=OTHER, agent_name="RedFox", policy="contacts_only")
    await run_worker(server, settings)

    [agent] = index_rows(settings, "SELECT contact_policy FROM agents WHERE name = 'RedFox'")
    assert agent["contact_policy"] == "contacts_only"

    [row] = index_rows(
        settings, "SELECT project_id, sender_id, subject FROM messages WHERE id = :id", {"id": message["id"]}
    )
    assert row == {
        "project_id": two["other"]["id"],
        "sender_id": two["agents"]["BlueLake"]["id"],
        "subject": "Persist me",
    }
    [rcpt] = index_rows(
        settings, "SELECT agent_id, kind FROM message_recipients WHERE message_id = ?", (message["id"],)
    )
    assert rcpt == {"agent_id": two["other_agents"]["RedFox"]["id"], "kind": "to"}
    [stored] = index_rows(settings, "SELECT * FROM agent_links")
    assert (stored["a_project_id"], stored["a_agent_id"]) == (two["project"]["id"], two["agents"]["BlueLake"]["id"])
    assert (stored["b_project_id"], stored["b_agent_id"]) == (two["other"]["id"], two["other_agents"]["RedFox"]["id"])
    assert stored["status"] == "approved" and stored["expires_ts"]

    files = committed_files(settings)
    [canonical] = [
        f for f in files if f.startswith(f"projects/{OTHER_SLUG}/messages/2") and f.endswith(f"__{message['id']}.md")
    ]
    front = front_matter(settings, canonical)
    assert (front["from"], front["from_project"], front["from_project_slug"], front["from_address"]) == (
        "BlueLake",
        PROJECT,
        SLUG,
        f"project:{SLUG}#BlueLake",
    )
    assert any(f.startswith(f"projects/{OTHER_SLUG}/agents/RedFox/inbox/") for f in files)
    assert not any(f.startswith(f"projects/{OTHER_SLUG}/agents/BlueLake/") for f in files)


async def test_rehydrate_restores_links_and_foreign_senders(
    tools: Tools, two: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    from broker.lifecycle.rehydrate import rehydrate_all

    await link(tools)
    message = payload(await tools.send("BlueLake", [f"project:{OTHER_SLUG}#RedFox"], thread_id="X-1"))
    before = {
        "contacts": await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake"),
        "inbox": await tools.inbox("RedFox", project_key=OTHER, include_bodies=True),
    }
    await run_worker(server, settings)
    store = server.store  # type: ignore[attr-defined]
    lost = [key async for key in store.client().scan_iter(match=f"{store.keys.prefix}:*")]
    await store.client().delete(*lost)

    report = await rehydrate_all(settings, store.redis_url)
    assert report.links == 2  # the one link, counted once in each endpoint's project
    after = {
        "contacts": await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake"),
        "inbox": await tools.inbox("RedFox", project_key=OTHER, include_bodies=True),
    }
    assert after == before
    # the restored link still admits mail both ways, and replies route back
    reply = await tools.call(
        "reply_message", project_key=OTHER, message_id=message["id"], sender_name="RedFox", body_md="back"
    )
    assert reply["deliveries"][0]["project"] == PROJECT and reply["to"] == ["BlueLake"]


async def test_handshake_across_projects_with_welcome(tools: Tools, two: dict[str, Any]) -> None:
    result = await tools.call(
        "macro_contact_handshake", project_key=PROJECT, requester="BlueLake", target="RedFox", to_project=OTHER,
        auto_accept=True, welcome_subject="Hello", welcome_body="from the other side",
        target_registration_token=two["other_agents"]["RedFox"]["registration_token"],
    )  # fmt: skip
    assert (result["request"]["to_project"], result["request"]["status"]) == (OTHER, "pending")
    assert result["response"]["approved"] is True
    welcome = result["welcome_message"]
    assert welcome["deliveries"][0]["project"] == OTHER
    item, intro = await tools.inbox("RedFox", project_key=OTHER)
    assert (item["subject"], item["from_project"], intro["subject"]) == (
        "Hello",
        PROJECT,
        "Contact request from BlueLake",
    )
    # the fast path is for one project only: across projects the request is made (with its intro)
    [link] = await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake")
    assert (link["to"], link["status"]) == ("RedFox", "approved")


async def test_mail_sent_only_elsewhere_is_the_senders_activity_at_home(
    tools: Tools, two: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """Redis and the index agree on the sender's last activity, also when none of the mail
    stayed in its project (the index takes every send as activity; so does Redis now)."""
    await link(tools)
    message = payload(await tools.send("BlueLake", [f"project:{OTHER_SLUG}#RedFox"], subject="Only elsewhere"))
    whois = await tools.call("whois", project_key=PROJECT, agent_name="BlueLake", include_recent_commits=False)
    assert whois["last_active_ts"] == message["created_ts"]
    await run_worker(server, settings)
    [row] = index_rows(settings, "SELECT last_active_ts FROM agents WHERE name = 'BlueLake'")
    assert row["last_active_ts"] == message["created_ts"]
