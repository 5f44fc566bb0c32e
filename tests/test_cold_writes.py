"""Writes and single reads on messages the hot window no longer holds (issue 19, point 2): mark
read and acknowledge reach the index once, through the outbox; reply, the message and thread
resources answer; unread counts stay exact through trim, read and trim again. The messages are
made cold as the trimmer would (tests/cold_write_helpers.py make_cold), on fakeredis and real
Redis, with the SQLite index."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cold_write_helpers import cool_now, make_cold
from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, drop_prefix, make_settings
from index_helpers import on_index_backend
from persist_helpers import committed_files, git, index_rows, run_worker

from broker.config import Settings
from broker.lifecycle.retention import purge_old_messages
from broker.server import build_http_app

SLUG = "tmp-concurrent-test"


@pytest.fixture
def settings(settings: Settings, index_backend: str, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Every write and read here also on the PostgreSQL index (the warm-up reads it)."""
    with on_index_backend(settings, index_backend, request) as on_backend:
        yield on_backend


def message_id(sent: dict[str, Any]) -> int:
    return int(sent["deliveries"][0]["payload"]["id"])


async def resource(tools: Tools, uri: str) -> Any:
    return json.loads((await tools.client.read_resource(uri))[0].text)


async def unread_counts(tools: Tools) -> dict[str, int]:
    shown = await resource(tools, f"resource://agents/{SLUG}")
    return {agent["name"]: agent["unread_count"] for agent in shown["agents"]}


def receipts(settings: Settings, ident: int) -> dict[str, tuple[str | None, str | None]]:
    rows = index_rows(
        settings,
        "SELECT a.name, r.read_ts, r.ack_ts FROM message_recipients r JOIN agents a ON a.id = r.agent_id "
        "WHERE r.message_id = :id",
        {"id": ident},  # type: ignore[arg-type]
    )
    return {row["name"]: (row["read_ts"], row["ack_ts"]) for row in rows}


async def cold_mail(tools: Tools, server: FastMCP, settings: Settings, count: int = 2, **extra: Any) -> list[int]:
    """``count`` messages BlueLake -> GreenCastle (cc alpha-one), persisted, then made cold."""
    ids = [
        message_id(await tools.send("BlueLake", ["GreenCastle"], cc=["alpha-one"], subject=f"old {n}", **extra))
        for n in range(count)
    ]
    await run_worker(server, settings)
    await make_cold(server.store, SLUG, ids)  # type: ignore[attr-defined]
    return ids


async def test_mark_read_and_ack_on_a_cold_message_reach_the_index_once(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    first, second = await cold_mail(tools, server, settings, ack_required=True)
    store = server.store  # type: ignore[attr-defined]
    archived = git(settings, "rev-parse", "HEAD"), committed_files(settings)
    assert not await store.client().exists(store.keys.message(SLUG, first))

    read = await tools.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=first)
    assert read["read"] and read["read_at"]
    acked = await tools.call("acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=first)
    assert acked["acknowledged"] and acked["read_at"] == read["read_at"]
    again = await tools.call("acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=first)
    assert again["acknowledged_at"] == acked["acknowledged_at"]  # the first time is kept
    # acknowledging reads too, in one step, on the other cold message
    only_ack = await tools.call("acknowledge_message", project_key=PROJECT, agent_name="alpha-one", message_id=second)
    assert only_ack["read_at"] == only_ack["acknowledged_at"]

    await run_worker(server, settings)
    assert receipts(settings, first) == {
        "GreenCastle": (read["read_at"], acked["acknowledged_at"]),
        "alpha-one": (None, None),
    }
    assert receipts(settings, second)["alpha-one"] == (only_ack["read_at"], only_ack["acknowledged_at"])
    assert index_rows(settings, "SELECT count(*) AS n FROM messages")[0]["n"] == 2  # no copy written
    # the archive holds messages, not receipts: restoring one rewrote nothing there
    assert (git(settings, "rev-parse", "HEAD"), committed_files(settings)) == archived
    pending = await store.client().zcard(store.keys.pending(SLUG))
    assert pending == 0

    # once persisted the restored hash goes again; acking again still keeps the first time
    assert cool_now(store, SLUG) == 2
    assert not await store.client().exists(store.keys.message(SLUG, first))
    later = await tools.call("acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=first)
    assert (later["read_at"], later["acknowledged_at"]) == (read["read_at"], acked["acknowledged_at"])
    assert await store.client().zcard(store.keys.pending(SLUG)) == 0  # nothing changed: nothing to write


async def test_unknown_and_unseen_cold_messages_give_the_same_error(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    await tools.agent("RedStone")
    (ident,) = await cold_mail(tools, server, settings, count=1)
    unknown = await tools.error("mark_message_read", project_key=PROJECT, agent_name="RedStone", message_id=999999)
    unseen = await tools.error("mark_message_read", project_key=PROJECT, agent_name="RedStone", message_id=ident)
    assert unseen.replace(str(ident), "N") == unknown.replace("999999", "N")
    assert "NOT_FOUND" in unseen
    unseen = await tools.error("acknowledge_message", project_key=PROJECT, agent_name="RedStone", message_id=ident)
    assert "NOT_FOUND" in unseen
    # its sender marks nothing (as for a hot message) and restores nothing
    sender = await tools.call("mark_message_read", project_key=PROJECT, agent_name="BlueLake", message_id=ident)
    assert sender == {"message_id": ident, "read": False, "read_at": None}
    store = server.store  # type: ignore[attr-defined]
    assert not await store.client().exists(store.keys.message(SLUG, ident))
    with_token = await tools.error(
        "mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=ident,
        registration_token="wrong",
    )  # fmt: skip
    assert "NOT_FOUND" not in with_token  # the token is checked before the message is looked for


async def test_message_resource_and_reply_answer_for_a_cold_message(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    await tools.agent("RedStone")
    hot = await tools.send(
        "BlueLake", ["GreenCastle"], bcc=["alpha-one", "RedStone"], subject="secret", body_md="x" * 3000,
        topic="plans", importance="high",
    )  # fmt: skip
    ident = message_id(hot)
    views = {}
    for agent in ("BlueLake", "GreenCastle", "alpha-one"):
        views[agent] = await resource(tools, f"resource://message/{ident}?project={SLUG}&agent={agent}")
    await run_worker(server, settings)
    await make_cold(server.store, SLUG, [ident])  # type: ignore[attr-defined]
    for agent, shown in views.items():  # byte for byte what the hot message showed, bcc privacy kept
        assert await resource(tools, f"resource://message/{ident}?project={SLUG}&agent={agent}") == shown
    assert views["alpha-one"]["bcc"] == ["alpha-one"] and views["GreenCastle"]["bcc"] == []
    assert views["BlueLake"]["bcc"] == ["alpha-one", "RedStone"]

    reply = await tools.call(
        "reply_message", project_key=PROJECT, message_id=ident, sender_name="GreenCastle", body_md="ok"
    )
    assert reply["reply_to"] == ident and reply["thread_id"] == str(ident)
    assert reply["subject"] == "Re: secret" and reply["to"] == ["BlueLake"]
    got = await tools.inbox("BlueLake", include_bodies=True)
    assert [(m["subject"], m["thread_id"], m["body_md"]) for m in got] == [("Re: secret", str(ident), "ok")]
    # the sender replies to its recipients (the to list; bcc stays private)
    mine = await tools.call("reply_message", project_key=PROJECT, message_id=ident, sender_name="BlueLake", body_md="b")
    assert mine["to"] == ["GreenCastle"]
    error = await tools.error("reply_message", project_key=PROJECT, message_id=ident, sender_name="Nobody", body_md="b")
    assert "not found" in error.lower() or "NOT_FOUND" in error


async def test_thread_resource_merges_hot_and_cold_without_duplicates(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    store = server.store  # type: ignore[attr-defined]
    root = message_id(await tools.send("BlueLake", ["GreenCastle"], subject="root"))
    ids = [root]
    for n in range(4):
        sent = await tools.call(
            "reply_message", project_key=PROJECT, message_id=ids[-1],
            sender_name="GreenCastle" if n % 2 == 0 else "BlueLake", body_md=f"r{n}",
        )  # fmt: skip
        ids.append(message_id(sent))
    uri = f"resource://thread/{root}?project={SLUG}&agent=BlueLake&include_bodies=true"
    before = await resource(tools, uri)
    assert [m["id"] for m in before["messages"]] == ids
    await run_worker(server, settings)
    await make_cold(store, SLUG, ids[:3])  # the oldest three leave Redis
    assert await resource(tools, uri) == before
    # a read restores one, which is then both in Redis and in the index: still listed once
    await tools.call("mark_message_read", project_key=PROJECT, agent_name="BlueLake", message_id=ids[1])
    assert [m["id"] for m in (await resource(tools, uri))["messages"]] == ids
    # the rest leaves too
    await run_worker(server, settings)
    await make_cold(store, SLUG, ids[3:])
    assert [m["id"] for m in (await resource(tools, uri))["messages"]] == ids
    outsider = await tools.agent("RedStone")
    alone = await resource(tools, f"resource://thread/{root}?project={SLUG}&agent={outsider['name']}")
    assert alone["messages"] == []
    summary = await tools.call(
        "summarize_thread", project_key=PROJECT, thread_id=str(root), agent_name="BlueLake", llm_mode=False
    )
    assert summary


async def test_unread_counts_stay_exact_through_trim_read_and_trim_again(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    store = server.store  # type: ignore[attr-defined]
    ids = await cold_mail(tools, server, settings, count=3)
    await tools.send("BlueLake", ["GreenCastle"], subject="hot one")  # still hot, unread
    assert (await unread_counts(tools))["GreenCastle"] == 4
    assert (await unread_counts(tools))["alpha-one"] == 3

    await tools.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=ids[0])
    await tools.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=ids[0])
    assert (await unread_counts(tools))["GreenCastle"] == 3  # once, however often it is read
    await tools.call("acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=ids[0])
    assert (await unread_counts(tools))["GreenCastle"] == 3

    # alpha-one reads another one; then both restored messages are trimmed again
    await tools.call("mark_message_read", project_key=PROJECT, agent_name="alpha-one", message_id=ids[1])
    counts = await unread_counts(tools)
    await run_worker(server, settings)
    assert cool_now(store, SLUG) == 2
    assert await unread_counts(tools) == counts == {"BlueLake": 0, "GreenCastle": 3, "alpha-one": 2}
    # ids[1] came back restored (still unread by GreenCastle), made cold again by the trimmer's
    # rule: a restored message counts nothing again
    await tools.call("mark_message_read", project_key=PROJECT, agent_name="alpha-one", message_id=ids[0])
    await run_worker(server, settings)
    await make_cold(store, SLUG, [ids[0]])
    assert await unread_counts(tools) == {"BlueLake": 0, "GreenCastle": 3, "alpha-one": 1}
    for ident in ids:
        await tools.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=ident)
        await tools.call("mark_message_read", project_key=PROJECT, agent_name="alpha-one", message_id=ident)
    assert await unread_counts(tools) == {"BlueLake": 0, "GreenCastle": 1, "alpha-one": 0}
    await run_worker(server, settings)
    assert {k: v[0] is not None for k, v in receipts(settings, ids[2]).items()} == {
        "GreenCastle": True,
        "alpha-one": True,
    }


async def test_web_view_shows_cold_threads_and_unread_counts(backend: str, tmp_path: Path) -> None:
    """The overseers' thread page lists every message of a partly cold thread once, with its
    recipients; the agents page counts cold unread mail."""
    settings = make_settings(backend, tmp_path)
    app, mcp = build_http_app(settings, "127.0.0.1")
    store = mcp.store  # type: ignore[attr-defined]
    try:
        async with (
            Client(mcp) as client,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://broker") as http,
        ):
            tools = Tools(client)
            await tools.project()
            for name in ("BlueLake", "GreenCastle", "alpha-one"):
                await tools.agent(name)
            ids = [message_id(await tools.send("BlueLake", ["GreenCastle"], thread_id="T-1", subject=f"s{n}"))
                   for n in range(3)]  # fmt: skip
            before = await http.get(f"/mail/{SLUG}/threads/T-1")
            assert re.findall(r'data-message-id="(\d+)"', before.text) == [str(i) for i in ids]
            await run_worker(mcp, settings)
            await make_cold(store, SLUG, ids[:2])
            after = await http.get(f"/mail/{SLUG}/threads/T-1")
            assert re.findall(r'data-message-id="(\d+)"', after.text) == [str(i) for i in ids]
            assert after.text.count("GreenCastle") == before.text.count("GreenCastle")
            agents = (await http.get(f"/mail/{SLUG}/agents")).text
            row = re.search(r"GreenCastle</a></td>\s*<td><time[^>]*>[^<]*</time></td>\s*<td>(\d+)</td>", agents)
            assert row is not None and row.group(1) == "3", agents
    finally:
        await drop_prefix(store)


async def test_a_hard_deleted_agent_takes_its_cold_unread_count_along(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    await cold_mail(tools, server, settings, count=2)
    assert (await unread_counts(tools))["GreenCastle"] == 2
    await tools.call("hard_delete_agent", project_key=PROJECT, agent_name="GreenCastle", confirmation="I UNDERSTAND")
    await tools.agent("GreenCastle")  # the name again: a new agent with no mail
    assert (await unread_counts(tools))["GreenCastle"] == 0
    assert (await unread_counts(tools))["alpha-one"] == 2


async def test_concurrent_marks_on_cold_messages_count_once(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """Both recipients mark and acknowledge every cold message at once, three times over: each
    read is counted once, each first time is kept, and the index gets each once."""
    ids = await cold_mail(tools, server, settings, count=6)
    calls = [
        tools.call(tool, project_key=PROJECT, agent_name=agent, message_id=ident)
        for _ in range(3)
        for ident in ids
        for agent in ("GreenCastle", "alpha-one")
        for tool in ("mark_message_read", "acknowledge_message")
    ]
    results = await asyncio.gather(*calls)
    assert await unread_counts(tools) == {"BlueLake": 0, "GreenCastle": 0, "alpha-one": 0}
    acked: dict[tuple[int, str], set[str]] = {}
    for call, result in zip(
        [(i, a, t) for _ in range(3) for i in ids for a in ("GreenCastle", "alpha-one")
         for t in ("mark_message_read", "acknowledge_message")],
        results,
        strict=True,
    ):  # fmt: skip
        if call[2] == "acknowledge_message":
            acked.setdefault((call[0], call[1]), set()).add(result["acknowledged_at"])
    assert all(len(times) == 1 for times in acked.values())
    await run_worker(server, settings)
    for ident in ids:
        shown = receipts(settings, ident)
        assert {name: ack for name, (_, ack) in shown.items()} == {
            name: next(iter(acked[(ident, name)])) for name in ("GreenCastle", "alpha-one")
        }


async def test_a_cold_message_from_another_project_reads_and_answers_as_before(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    other, other_slug = "/tmp/other-proj", "tmp-other-proj"
    await tools.project(other)
    await tools.agent("RedFox", project_key=other)
    await tools.call("request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="RedFox", to_project=other)
    await tools.call(
        "respond_contact", project_key=other, to_agent="RedFox", from_agent="BlueLake", from_project=PROJECT,
        accept=True,
    )  # fmt: skip
    ident = message_id(await tools.send("BlueLake", [f"project:{other_slug}#RedFox"], subject="cross", topic="ops"))
    uri = f"resource://message/{ident}?project={other_slug}&agent=RedFox"
    before = await resource(tools, uri)
    await run_worker(server, settings)
    await make_cold(server.store, other_slug, [ident])  # type: ignore[attr-defined]
    assert await resource(tools, uri) == before
    assert before["from_address"] == f"project:{SLUG}#BlueLake"
    read = await tools.call("mark_message_read", project_key=other, agent_name="RedFox", message_id=ident)
    assert read["read"]
    reply = await tools.call("reply_message", project_key=other, message_id=ident, sender_name="RedFox", body_md="ok")
    assert reply["deliveries"][0]["project"] == PROJECT  # answered in the sender's project
    await run_worker(server, settings)
    rows = index_rows(settings, "SELECT read_ts FROM message_recipients WHERE message_id = :id", {"id": ident})  # type: ignore[arg-type]
    assert rows == [{"read_ts": read["read_at"]}]


async def test_purging_old_mail_takes_cold_unread_counts_along(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """purge_old_messages deletes trimmed messages from the index: their unread counts go too,
    the hot ones' from the unread sets as before."""
    ids = await cold_mail(tools, server, settings, count=3)
    await tools.call("mark_message_read", project_key=PROJECT, agent_name="alpha-one", message_id=ids[0])
    await tools.send("BlueLake", ["GreenCastle"], subject="hot one")
    await run_worker(server, settings)
    assert await unread_counts(tools) == {"BlueLake": 0, "GreenCastle": 4, "alpha-one": 2}
    later = datetime.now(UTC) + timedelta(days=2)
    store = server.store  # type: ignore[attr-defined]
    purged = await purge_old_messages(store, PROJECT, 1, False, None, now=later)
    assert purged["messages_affected"] == 4
    assert await unread_counts(tools) == {"BlueLake": 0, "GreenCastle": 0, "alpha-one": 0}
    assert index_rows(settings, "SELECT count(*) AS n FROM messages")[0]["n"] == 0


async def test_hard_deleting_a_sender_takes_its_cold_unread_mail_off_the_counts(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    await cold_mail(tools, server, settings, count=2)  # from BlueLake, unread by both
    await tools.send("GreenCastle", ["alpha-one"], subject="stays")
    assert await unread_counts(tools) == {"BlueLake": 0, "GreenCastle": 2, "alpha-one": 3}
    await tools.call("hard_delete_agent", project_key=PROJECT, agent_name="BlueLake", confirmation="I UNDERSTAND")
    assert await unread_counts(tools) == {"GreenCastle": 0, "alpha-one": 1}


async def test_contact_rules_hold_for_a_reply_into_a_cold_unthreaded_message(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """GreenCastle (contacts_only) wrote to BlueLake without a thread: BlueLake may answer in
    that thread without a contact link, also once the message left Redis."""
    await tools.call("set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="contacts_only")
    ident = message_id(await tools.send("GreenCastle", ["BlueLake"], subject="unthreaded"))
    await run_worker(server, settings)
    await make_cold(server.store, SLUG, [ident])  # type: ignore[attr-defined]
    reply = await tools.call(
        "reply_message", project_key=PROJECT, message_id=ident, sender_name="BlueLake", body_md="sure"
    )
    assert reply["to"] == ["GreenCastle"] and reply["thread_id"] == str(ident)
    assert [m["subject"] for m in await tools.inbox("GreenCastle")] == ["Re: unthreaded"]
    # and alpha-one, who took no part, still may not
    error = await tools.error(
        "send_message", project_key=PROJECT, sender_name="alpha-one", to=["GreenCastle"], subject="x",
        body_md="y", thread_id=str(ident), auto_contact_if_blocked=False,
    )  # fmt: skip
    assert "CONTACT" in error
