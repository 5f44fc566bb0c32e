"""hard_delete_agent and hard_delete_project: Redis, the SQLite index and the Git archive lose
exactly the deleted data, and a persistence drain afterwards brings none of it back."""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP
from helpers import PROJECT, Tools, snapshot
from persist_helpers import committed_files, front_matter, index_rows, run_worker

from broker.config import Settings

SLUG = "tmp-concurrent-test"
OTHER = "/tmp/other-project"
OTHER_SLUG = "tmp-other-project"


def mid(sent: dict[str, Any]) -> int:
    return sent["deliveries"][0]["payload"]["id"]


async def reserve(tools: Tools, agent: str, paths: list[str], project_key: str = PROJECT) -> int:
    result = await tools.call("file_reservation_paths", project_key=project_key, agent_name=agent, paths=paths)
    return result["granted"][0]["id"]


async def keys_of(server: FastMCP, slug: str) -> list[str]:
    store = server.store  # type: ignore[attr-defined]
    return sorted([k async for k in store.client().scan_iter(match=f"{store.keys.prefix}:{{{slug}}}:*", count=1000)])


async def mail(tools: Tools) -> dict[str, int]:
    """BlueLake sends two messages (one urgent with a topic and thread, one to itself too),
    GreenCastle writes to BlueLake and alpha-one, alpha-one writes to GreenCastle."""
    return {
        "blue1": mid(
            await tools.send(
                "BlueLake",
                ["GreenCastle"],
                cc=["alpha-one"],
                subject="Plan",
                topic="t",
                thread_id="T1",
                importance="high",
            )
        ),
        "green": mid(await tools.send("GreenCastle", ["BlueLake", "alpha-one"], subject="Re plan", thread_id="T1")),
        "alpha": mid(await tools.send("alpha-one", ["GreenCastle"], subject="Other", topic="t")),
        "blue2": mid(await tools.send("BlueLake", ["BlueLake", "GreenCastle"], subject="Note")),
    }


async def test_hard_delete_agent_removes_its_mail_everywhere(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    ids = await mail(tools)
    blue_res = await reserve(tools, "BlueLake", ["src/"])
    green_res = await reserve(tools, "GreenCastle", ["docs/"])
    await run_worker(server, settings)  # everything is in the index and archive
    # changes still pending when the delete runs: the drain afterwards must not bring them back
    late = mid(await tools.send("BlueLake", ["GreenCastle"], subject="Late"))
    await tools.call("acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=ids["blue1"])
    await tools.call("mark_message_read", project_key=PROJECT, agent_name="BlueLake", message_id=ids["green"])
    blue_id = trio["agents"]["BlueLake"]["id"]

    store = server.store  # type: ignore[attr-defined]
    before = await snapshot(store)
    error = await tools.error("hard_delete_agent", project_key=PROJECT, agent_name="BlueLake", confirmation="yes")
    assert error.startswith("INVALID_ARGUMENT:") and "confirmation='I UNDERSTAND'" in error
    error = await tools.error(
        "hard_delete_agent", project_key=PROJECT, agent_name="BlueLak", confirmation="I UNDERSTAND"
    )
    assert error.startswith("NOT_FOUND:") and "Did you mean: 'BlueLake'" in error
    assert await snapshot(store) == before

    result = await tools.call(
        "hard_delete_agent", project_key=PROJECT, agent_name="bluelake", confirmation="I UNDERSTAND"
    )
    counts = result.pop("deleted_counts")
    assert result == {
        "status": "hard_deleted",
        "agent_name": "BlueLake",
        "project_key": PROJECT,
        "filesystem_errors": [],
    }
    # files: profile, 2 outbox copies, 2 inbox copies (green's and its own note), 2 canonical copies,
    # GreenCastle's 2 inbox copies and alpha-one's 1 of BlueLake's persisted messages
    assert counts == {
        "message_recipients": 2,  # green's message and its own note
        "sent_message_recipients": 2 + 2 + 1,  # blue1 (2), blue2 (2), late (1)
        "messages_sent": 3,
        "file_reservations": 1,
        "agent_links": 0,
        "window_identities": 0,
        "agent": 1,
        "archive_files_removed": 10,
        "archive_dirs_removed": 7,  # agents/BlueLake, its inbox and outbox, and their year and month folders
    }

    # Redis: other agents' mail without BlueLake's messages, nothing of BlueLake left
    assert [m["id"] for m in await tools.inbox("GreenCastle")] == [ids["alpha"]]
    assert [m["id"] for m in await tools.inbox("alpha-one")] == [ids["green"]]
    assert await tools.inbox("GreenCastle", urgent_only=True) == []
    assert [m["id"] for m in await tools.inbox("GreenCastle", topic="t")] == [ids["alpha"]]
    topic = await tools.call("fetch_topic", project_key=PROJECT, topic_name="t", agent_name="GreenCastle")
    assert [m["id"] for m in topic] == [ids["alpha"]]
    error = await tools.error("whois", project_key=PROJECT, agent_name="BlueLake")
    assert error.startswith("NOT_FOUND:")
    left = await keys_of(server, SLUG)
    assert not [k for k in left if "bluelake" in k.lower()], left
    for message_id in (ids["blue1"], ids["blue2"], late):
        assert f"{store.keys.prefix}:{{{SLUG}}}:msg:{message_id}" not in left
        assert await store.client().hget(store.keys.bodies(SLUG), str(message_id)) is None
    assert await store.client().zrange(store.keys.thread(SLUG, "T1"), 0, -1) == [str(ids["green"])]
    green_msg = await store.client().hgetall(store.keys.message(SLUG, ids["green"]))
    assert green_msg["recipients"] == '{"to":["alpha-one"],"cc":[],"bcc":[]}'
    assert not [f for f in green_msg if f.endswith(":bluelake")]
    pending = await store.client().zrange(store.keys.pending(SLUG), 0, -1)
    assert not [p for p in pending if "bluelake" in p or p.startswith(("msg:", "agent:"))], pending
    listing = await tools.client.read_resource(f"resource://file_reservations/{SLUG}?active_only=false")
    assert f'"id":{green_res}' in listing[0].text.replace(" ", "") and f'"id":{blue_res}' not in listing[0].text
    # the others carry on: a reply to GreenCastle's message goes to alpha-one only
    reply = await tools.call(
        "reply_message", project_key=PROJECT, message_id=ids["green"], sender_name="GreenCastle", body_md="ok"
    )
    assert reply["deliveries"][0]["payload"]["to"] == ["alpha-one"]

    # a drain afterwards writes the pending changes of the others, and nothing of BlueLake
    await run_worker(server, settings)
    assert [a["name"] for a in index_rows(settings, "SELECT name FROM agents ORDER BY name")] == [
        "GreenCastle",
        "alpha-one",
    ]
    messages = [r["id"] for r in index_rows(settings, "SELECT id FROM messages ORDER BY id")]
    assert messages == sorted([ids["green"], ids["alpha"], reply["id"]])
    assert index_rows(settings, "SELECT * FROM message_recipients WHERE agent_id = :id", {"id": blue_id}) == []
    assert index_rows(settings, "SELECT * FROM messages WHERE sender_id = :id", {"id": blue_id}) == []
    held = index_rows(settings, "SELECT id FROM file_reservations")
    assert [r["id"] for r in held] == [green_res]
    files = committed_files(settings)
    assert not [f for f in files if "/BlueLake/" in f]
    for message_id in (ids["blue1"], ids["blue2"], late):
        assert not [f for f in files if f.endswith(f"__{message_id}.md")], message_id
    assert [f for f in files if f.endswith(f"__{ids['green']}.md")]  # GreenCastle's message stays

    error = await tools.error(
        "hard_delete_agent", project_key=PROJECT, agent_name="BlueLake", confirmation="I UNDERSTAND"
    )
    assert error.startswith("NOT_FOUND:")


async def test_hard_delete_agent_before_anything_is_persisted(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    ids = await mail(tools)
    result = await tools.call(
        "hard_delete_agent", project_key=PROJECT, agent_name="alpha-one", confirmation="I UNDERSTAND"
    )
    assert result["deleted_counts"]["messages_sent"] == 1
    assert result["deleted_counts"]["message_recipients"] == 2
    assert result["deleted_counts"]["archive_files_removed"] == 0
    await run_worker(server, settings)
    assert [a["name"] for a in index_rows(settings, "SELECT name FROM agents ORDER BY name")] == [
        "BlueLake",
        "GreenCastle",
    ]
    assert sorted(r["id"] for r in index_rows(settings, "SELECT id FROM messages")) == sorted(
        [ids["blue1"], ids["green"], ids["blue2"]]
    )
    assert not [f for f in committed_files(settings) if "/alpha-one/" in f]
    rows = index_rows(
        settings,
        "SELECT r.message_id, a.name FROM message_recipients r JOIN agents a ON a.id = r.agent_id "
        "ORDER BY r.message_id, a.name",
    )
    assert [(r["message_id"], r["name"]) for r in rows] == [
        (ids["blue1"], "GreenCastle"),
        (ids["green"], "BlueLake"),
        (ids["blue2"], "BlueLake"),
        (ids["blue2"], "GreenCastle"),
    ]
    # written after the delete, the message's archived copy no longer names alpha-one
    canonical = next(
        f
        for f in committed_files(settings)
        if f.startswith(f"projects/{SLUG}/messages/2") and f.endswith(f"__{ids['blue1']}.md")
    )
    assert front_matter(settings, canonical)["cc"] == []


async def test_hard_delete_project(tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings) -> None:
    await mail(tools)
    await reserve(tools, "BlueLake", ["src/"])
    await tools.project(OTHER)
    await tools.agent("RedStone", project_key=OTHER)
    await tools.agent("GoldFox", project_key=OTHER)
    other_mail = mid(await tools.send("RedStone", ["GoldFox"], project_key=OTHER))
    await reserve(tools, "GoldFox", ["lib/"], project_key=OTHER)
    await run_worker(server, settings)
    store = server.store  # type: ignore[attr-defined]
    other_before = {k: v for k, v in (await snapshot(store)).items() if f"{{{OTHER_SLUG}}}" in k}

    error = await tools.error("hard_delete_project", project_key=PROJECT, confirmation="i understand")
    assert error.startswith("INVALID_ARGUMENT:") and "'I UNDERSTAND'" in error
    error = await tools.error(
        "hard_delete_project", project_key=PROJECT, confirmation="I UNDERSTAND", registration_token="nope"
    )
    assert error.startswith("AUTHENTICATION_FAILED:")
    token = trio["agents"]["alpha-one"]["registration_token"]
    result = await tools.call(
        "hard_delete_project", project_key=PROJECT, confirmation="I UNDERSTAND", registration_token=token
    )
    counts = result.pop("deleted_counts")
    assert result == {"status": "hard_deleted", "project_key": PROJECT, "slug": SLUG, "filesystem_errors": []}
    assert counts["archive_files_removed"] > 20 and counts["archive_dirs_removed"] > 5
    del counts["archive_files_removed"], counts["archive_dirs_removed"]
    assert counts == {
        "agents": 3,
        "messages": 4,
        "message_recipients": 2 + 2 + 1 + 2,
        "file_reservations": 1,
        "agent_links": 0,
        "window_identities": 0,
        "message_summaries": 0,
        "sibling_suggestions": 0,
        "product_links": 0,
        "project": 1,
    }
    assert await keys_of(server, SLUG) == []
    assert await store.client().hexists(store.keys.projects, SLUG) is False
    after = {k: v for k, v in (await snapshot(store)).items() if f"{{{OTHER_SLUG}}}" in k}
    assert after == other_before
    assert [m["id"] for m in await tools.inbox("GoldFox", project_key=OTHER)] == [other_mail]

    await run_worker(server, settings)
    assert index_rows(settings, "SELECT slug FROM projects") == [{"slug": OTHER_SLUG}]
    assert {r["name"] for r in index_rows(settings, "SELECT name FROM agents")} == {"RedStone", "GoldFox"}
    assert [r["id"] for r in index_rows(settings, "SELECT id FROM messages")] == [other_mail]
    files = committed_files(settings)
    assert not [f for f in files if f.startswith(f"projects/{SLUG}/")]
    assert [f for f in files if f.startswith(f"projects/{OTHER_SLUG}/")]

    # the project can be created afresh (the index no longer holds it: no REHYDRATE_REQUIRED)
    again = await tools.project()
    assert again["slug"] == SLUG and again["id"] != trio["project"]["id"]
    error = await tools.error("hard_delete_project", project_key="/tmp/nowhere", confirmation="I UNDERSTAND")
    assert error.startswith("NOT_FOUND:")
