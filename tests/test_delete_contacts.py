"""Hard deletes and purges meet the contact data: links (both copies, in both projects), messages
held until approval, and thread participants. A deleted agent or project leaves none of it
behind, so a new agent of the same name inherits no approval, no thread membership and no held
mail, and a persistence drain afterwards writes no link back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastmcp import FastMCP
from helpers import PROJECT, Tools
from persist_helpers import index_rows, run_worker
from shapes import payload

from broker.config import Settings
from broker.lifecycle.retention import purge_old_messages
from broker.persistence.index import Batch, Index

OTHER = "/tmp/other-proj"
OTHER_SLUG = "tmp-other-proj"
SLUG = "tmp-concurrent-test"


@pytest.fixture
async def web(tools: Tools, trio: dict[str, Any]) -> dict[str, Any]:
    """BlueLake in contact with everyone, in both directions and both projects:
    - GreenCastle (contacts_only) holds mail from BlueLake (pending link BlueLake -> GreenCastle);
    - BlueLake (contacts_only) holds mail from alpha-one and from RedFox (of OTHER);
    - BlueLake and alpha-one share thread T9; BlueLake -> RedFox is approved (RedFox asked first);
    - OrangeOwl (OTHER) holds mail from BlueLake."""
    await tools.project(OTHER)
    for name in ("RedFox", "OrangeOwl"):
        await tools.agent(name, project_key=OTHER)
    await tools.call("set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="contacts_only")
    await tools.send("alpha-one", ["BlueLake"], subject="thread start", thread_id="T9")
    await tools.send("BlueLake", ["alpha-one"], subject="in T9", thread_id="T9")
    await tools.call("set_contact_policy", project_key=PROJECT, agent_name="BlueLake", policy="contacts_only")
    held = {
        "for_green": payload(await tools.send("BlueLake", ["GreenCastle"], subject="held for green"))["id"],
        "from_alpha": payload(await tools.send("alpha-one", ["BlueLake"], subject="held for blue"))["id"],
        "for_orange": payload(await tools.send("BlueLake", [f"OrangeOwl@{OTHER}"], subject="held for orange"))["id"],
    }
    await tools.call("request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent=f"RedFox@{OTHER}")
    await tools.call(
        "respond_contact", project_key=OTHER, to_agent="RedFox", from_agent=f"project:{SLUG}#BlueLake", accept=True
    )
    # RedFox writes to BlueLake: admitted by the approved link BlueLake -> RedFox (either direction)
    await tools.send("RedFox", [f"project:{SLUG}#BlueLake"], project_key=OTHER, subject="from afar")
    return {**trio, "held": held}


async def link_fields(server: FastMCP, slug: str, name: str) -> list[str]:
    store = server.store  # type: ignore[attr-defined]
    return sorted(await store.client().hkeys(store.keys.links(slug, name)))


async def test_hard_delete_agent_removes_its_links_holds_and_thread_membership(
    tools: Tools, web: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    store = server.store  # type: ignore[attr-defined]
    await run_worker(server, settings)
    blue_id = web["agents"]["BlueLake"]["id"]
    assert index_rows(settings, "SELECT count(*) AS n FROM agent_links")[0]["n"] == 4
    assert await link_fields(server, OTHER_SLUG, "RedFox") == [f"in:{SLUG}#bluelake"]
    # a change still pending when the delete runs: RedFox renews its approval
    await tools.call(
        "respond_contact", project_key=OTHER, to_agent="RedFox", from_agent=f"project:{SLUG}#BlueLake", accept=True
    )

    result = await tools.call(
        "hard_delete_agent", project_key=PROJECT, agent_name="BlueLake", confirmation="I UNDERSTAND"
    )
    assert result["deleted_counts"]["agent_links"] == 4

    # nothing in either project's Redis names BlueLake any more
    for slug in (SLUG, OTHER_SLUG):
        pattern = f"{store.keys.prefix}:{{{slug}}}:*"
        for key in [k async for k in store.client().scan_iter(match=pattern, count=1000)]:
            assert "bluelake" not in key.lower(), key
            kind = await store.client().type(key)
            if kind == "hash":
                fields = await store.client().hkeys(key)
                assert not [f for f in fields if "bluelake" in f.lower()], (key, fields)
            elif kind == "set":
                assert not [m for m in await store.client().smembers(key) if "bluelake" in m], key
            elif kind == "zset":
                assert not [m for m in await store.client().zrange(key, 0, -1) if "bluelake" in m], key
    assert await store.client().smembers(store.keys.thread_participants(SLUG, "T9")) == {"alpha-one"}
    assert await tools.call("list_contacts", project_key=OTHER, agent_name="RedFox") == []
    assert await tools.call("list_contacts", project_key=PROJECT, agent_name="GreenCastle") == []

    # a new BlueLake inherits nothing: no approval (in either project), no thread membership
    await tools.agent("BlueLake")
    await tools.call("set_contact_policy", project_key=PROJECT, agent_name="alpha-one", policy="contacts_only")
    for to, extra in (
        ("GreenCastle", {}),
        ("alpha-one", {"thread_id": "T9"}),
        (f"project:{OTHER_SLUG}#RedFox", {}),
    ):
        text = await tools.error(
            "send_message", project_key=PROJECT, sender_name="BlueLake", to=[to], subject="s", body_md="b",
            auto_contact_if_blocked=False, **extra,
        )  # fmt: skip
        assert text.startswith("CONTACT_REQUIRED:"), (to, text)
    text = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=["RedFox"], subject="s", body_md="b"
    )
    assert text.startswith("RECIPIENT_NOT_FOUND:"), text  # no approved link makes RedFox a contact
    # approving the old requester does not deliver the mail once held for the deleted agent
    await tools.call("set_contact_policy", project_key=PROJECT, agent_name="BlueLake", policy="contacts_only")
    response = await tools.call(
        "respond_contact", project_key=PROJECT, to_agent="BlueLake", from_agent="alpha-one", accept=True
    )
    assert response["delivered_message_ids"] == []

    # a drain afterwards writes no link of the deleted agent back
    await run_worker(server, settings)
    rows = index_rows(settings, "SELECT * FROM agent_links WHERE a_agent_id = :id OR b_agent_id = :id", {"id": blue_id})
    assert rows == []


async def test_a_link_row_whose_agent_is_gone_is_not_written(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """A batch that read a link before its agent was deleted, written after: no row."""
    await run_worker(server, settings)
    blue, green = trio["agents"]["BlueLake"], trio["agents"]["GreenCastle"]
    await tools.call("hard_delete_agent", project_key=PROJECT, agent_name="BlueLake", confirmation="I UNDERSTAND")
    now = datetime.now(UTC).isoformat()
    row = {
        "a_project_id": blue["project_id"], "a_agent_id": blue["id"], "b_project_id": green["project_id"],
        "b_agent_id": green["id"], "status": "approved", "reason": "", "created_ts": now, "updated_ts": now,
        "expires_ts": None,
    }  # fmt: skip
    index = Index.from_settings(settings)
    try:
        index.write_batch(Batch(links=[row]))
    finally:
        index.close()
    assert index_rows(settings, "SELECT * FROM agent_links") == []


async def test_hard_delete_project_removes_links_and_holds_in_other_projects(
    tools: Tools, web: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    store = server.store  # type: ignore[attr-defined]
    held = web["held"]["for_orange"]
    await tools.call("hard_delete_project", project_key=PROJECT, confirmation="I UNDERSTAND")
    assert await link_fields(server, OTHER_SLUG, "RedFox") == []
    assert await link_fields(server, OTHER_SLUG, "OrangeOwl") == []
    assert await tools.call("list_contacts", project_key=OTHER, agent_name="RedFox") == []
    pattern = f"{store.keys.prefix}:{{{OTHER_SLUG}}}:held:*"
    assert [k async for k in store.client().scan_iter(match=pattern, count=1000)] == []
    assert not [f for f in await store.client().hkeys(store.keys.message(OTHER_SLUG, held)) if f.startswith("hk:")]
    pending = await store.client().zrange(store.keys.pending(OTHER_SLUG), 0, -1)
    assert not [p for p in pending if p.startswith("link:")], pending
    # writing to the gone project names it
    text = await tools.error(
        "send_message", project_key=OTHER, sender_name="RedFox", to=[f"project:{SLUG}#BlueLake"], subject="s",
        body_md="b",
    )  # fmt: skip
    assert text.startswith("NOT_FOUND:") and SLUG in text, text
    await run_worker(server, settings)
    assert index_rows(settings, "SELECT * FROM agent_links") == []


async def test_dangling_link_to_a_deleted_project_gives_a_clear_error(
    tools: Tools, web: dict[str, Any], server: FastMCP
) -> None:
    """Even with a mirror left behind (written by a late retry), listing works and sending by
    the bare name fails with an error naming the missing project."""
    store = server.store  # type: ignore[attr-defined]
    stale = await store.client().hgetall(store.keys.links(OTHER_SLUG, "RedFox"))
    await tools.call("hard_delete_project", project_key=PROJECT, confirmation="I UNDERSTAND")
    await store.client().hset(store.keys.links(OTHER_SLUG, "RedFox"), mapping=stale)
    assert await tools.call("list_contacts", project_key=OTHER, agent_name="RedFox") == []  # inbound only
    text = await tools.error(
        "send_message", project_key=OTHER, sender_name="RedFox", to=["BlueLake"], subject="s", body_md="b"
    )
    assert text.startswith("NOT_FOUND:") and (SLUG in text or PROJECT in text), text


async def test_purge_leaves_no_held_entry_pointing_at_a_purged_message(
    tools: Tools, web: dict[str, Any], server: FastMCP
) -> None:
    store = server.store  # type: ignore[attr-defined]
    later = datetime.now(UTC) + timedelta(days=2)  # every message is old (the tool takes no clock)
    await purge_old_messages(store, PROJECT, 1, False, None, now=later)
    await purge_old_messages(store, OTHER, 1, False, None, now=later)
    for slug in (SLUG, OTHER_SLUG):
        pattern = f"{store.keys.prefix}:{{{slug}}}:held:*"
        for key in [k async for k in store.client().scan_iter(match=pattern, count=1000)]:
            members = await store.client().zrange(key, 0, -1)
            for member in members:
                assert await store.client().exists(store.keys.message(slug, int(member))), (key, member)
    # the message held in OTHER for OrangeOwl was old too: purged, not left waiting for approval
    assert not await store.client().exists(store.keys.message(OTHER_SLUG, web["held"]["for_orange"]))
    response = await tools.call(
        "respond_contact", project_key=OTHER, to_agent="OrangeOwl", from_agent=f"project:{SLUG}#BlueLake",
        accept=True,
    )  # fmt: skip
    assert response["delivered_message_ids"] == []
