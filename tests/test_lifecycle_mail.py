"""The lifecycle tools meet mail, contacts, resources and macros, all through the tools: a
retired, re-registered or deregistered agent, an archived project, and what the resources show
of them and of mail from another project."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastmcp import FastMCP
from helpers import PROJECT, Tools, snapshot
from shapes import payload

OTHER = "/tmp/other-proj"
OTHER_SLUG = "tmp-other-proj"
SLUG = "tmp-concurrent-test"


async def read(tools: Tools, uri: str) -> Any:
    return json.loads((await tools.client.read_resource(uri))[0].text)


async def send_error(tools: Tools, sender: str, to: list[str], project_key: str = PROJECT) -> str:
    return await tools.error(
        "send_message", project_key=project_key, sender_name=sender, to=to, subject="s", body_md="b"
    )


async def test_retired_agent_gets_no_mail_until_it_registers_again(tools: Tools, trio: dict[str, Any]) -> None:
    retired = await tools.call("retire_agent", project_key=PROJECT, agent_name="alpha-one")
    assert retired["status"] == "retired"
    text = await send_error(tools, "BlueLake", ["alpha-one"])
    assert text.startswith("AGENT_RETIRED: Agent(s) alpha-one are retired"), text
    text = await send_error(tools, "BlueLake", ["GreenCastle", "alpha-one"])
    assert text.startswith("AGENT_RETIRED:")
    assert await tools.inbox("GreenCastle") == []  # all or nothing

    broadcast = await tools.send("BlueLake", [], broadcast=True, subject="all hands")
    assert payload(broadcast)["to"] == ["GreenCastle"]
    assert broadcast["skipped"] == [{"recipient": "alpha-one", "reason": "AGENT_RETIRED"}]
    # the resource lists it apart, as retired
    listed = await read(tools, f"resource://agents/{SLUG}")
    assert [a["name"] for a in listed["agents"]] == ["BlueLake", "GreenCastle"]
    [shown] = listed["retired_agents"]
    assert shown["name"] == "alpha-one" and shown["retired_at"] == (await tools.call(
        "whois", project_key=PROJECT, agent_name="alpha-one"
    ))["retired_at"]  # fmt: skip

    await tools.agent("alpha-one")
    sent = payload(await tools.send("BlueLake", ["alpha-one"], subject="welcome back"))
    assert [m["id"] for m in await tools.inbox("alpha-one")] == [sent["id"]]
    assert "retired_at" not in await tools.call("whois", project_key=PROJECT, agent_name="alpha-one")
    assert (await read(tools, f"resource://agents/{SLUG}"))["retired_agents"] == []


async def test_deregistered_agent_refuses_mail(tools: Tools, trio: dict[str, Any]) -> None:
    await tools.call("deregister_agent", project_key=PROJECT, agent_name="GreenCastle")
    text = await send_error(tools, "BlueLake", ["GreenCastle"])
    assert text.startswith("CONTACT_BLOCKED: Recipient is not accepting messages: GreenCastle refuse"), text
    broadcast = await tools.send("BlueLake", [], broadcast=True)
    assert broadcast["skipped"] == [{"recipient": "GreenCastle", "reason": "CONTACT_BLOCKED"}]
    assert await tools.inbox("GreenCastle") == []


async def test_archived_project_takes_no_mail_but_reads_until_unarchived(tools: Tools, trio: dict[str, Any]) -> None:
    await tools.project(OTHER)
    await tools.agent("RedFox", project_key=OTHER)
    await tools.call("set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="open")
    before = payload(await tools.send("BlueLake", ["GreenCastle"], subject="before"))
    await tools.call("archive_project", project_key=PROJECT)

    archived = f"PROJECT_ARCHIVED: Project '{PROJECT}' is archived; call unarchive_project(project_key="
    assert (await send_error(tools, "BlueLake", ["GreenCastle"])).startswith(archived)
    text = await send_error(tools, "RedFox", [f"project:{SLUG}#GreenCastle"], project_key=OTHER)
    assert text.startswith(archived), text
    # reads, read and ack still work
    [item] = await tools.inbox("GreenCastle")
    assert item["id"] == before["id"]
    read = await tools.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=item["id"])
    assert read["read"] is True

    await tools.call("unarchive_project", project_key=PROJECT)
    local = payload(await tools.send("BlueLake", ["GreenCastle"], subject="after"))
    remote = payload(await tools.send("RedFox", [f"project:{SLUG}#GreenCastle"], project_key=OTHER, subject="far"))
    assert [m["id"] for m in await tools.inbox("GreenCastle")] == [remote["id"], local["id"], before["id"]]


async def test_resources_show_where_a_message_from_another_project_came_from(
    tools: Tools, trio: dict[str, Any]
) -> None:
    await tools.project(OTHER)
    await tools.agent("RedFox", project_key=OTHER)
    await tools.call("set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="open")
    sent = payload(await tools.send("RedFox", [f"project:{SLUG}#GreenCastle"], project_key=OTHER, subject="far"))
    origin = {"from_project": OTHER, "from_project_slug": OTHER_SLUG, "from_address": f"project:{OTHER_SLUG}#RedFox"}

    inbox = await read(tools, f"resource://inbox/GreenCastle?project={quote(PROJECT, safe='')}")
    [item] = inbox["messages"]
    assert item["id"] == sent["id"] and item["from"] == "RedFox"
    assert {k: item.get(k) for k in origin} == origin
    message = await read(tools, f"resource://message/{sent['id']}?project={SLUG}&agent=GreenCastle")
    assert message["from"] == "RedFox" and message["to"] == ["GreenCastle"]
    assert {k: message.get(k) for k in origin} == origin
    # local mail carries none of them
    local = payload(await tools.send("BlueLake", ["GreenCastle"], subject="near"))
    message = await read(tools, f"resource://message/{local['id']}?project={SLUG}&agent=GreenCastle")
    assert not set(origin) & set(message)


async def test_start_session_in_an_archived_project_writes_nothing(
    tools: Tools, trio: dict[str, Any], server: FastMCP
) -> None:
    await tools.call("archive_project", project_key=PROJECT)
    store = server.store  # type: ignore[attr-defined]
    before = await snapshot(store)
    for extra in ({}, {"agent_name": "BlueLake"}):
        text = await tools.error(
            "macro_start_session", human_key=PROJECT, program="claude-code", model="opus-4",
            file_reservation_paths=["src/"], **extra,
        )  # fmt: skip
        assert text.startswith(f"PROJECT_ARCHIVED: Project '{PROJECT}' is archived"), text
    assert await snapshot(store) == before


async def test_an_archived_project_approves_no_contact_and_delivers_no_held_mail(
    tools: Tools, trio: dict[str, Any]
) -> None:
    """Approving a contact delivers the mail held for it: new mail, which an archived project
    takes none of. A refusal only drops mail, so it still works."""
    await tools.call("set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="contacts_only")
    held = await tools.send("BlueLake", ["GreenCastle"], subject="held", auto_contact_if_blocked=True)
    assert [q["recipient"] for q in held["queued"]] == ["GreenCastle"]
    await tools.call("archive_project", project_key=PROJECT)

    text = await tools.error(
        "respond_contact", project_key=PROJECT, to_agent="GreenCastle", from_agent="BlueLake", accept=True
    )
    assert text.startswith(f"PROJECT_ARCHIVED: Project '{PROJECT}' is archived"), text
    assert [m["subject"] for m in await tools.inbox("GreenCastle")] == ["Contact request from BlueLake"]

    await tools.call("unarchive_project", project_key=PROJECT)
    approved = await tools.call(
        "respond_contact", project_key=PROJECT, to_agent="GreenCastle", from_agent="BlueLake", accept=True
    )
    assert approved["approved"] is True and len(approved["delivered_message_ids"]) == 1
    assert "held" in [m["subject"] for m in await tools.inbox("GreenCastle")]
