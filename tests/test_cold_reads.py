"""Every list read answers as before whatever is hot (issue 19, point 2): messages read hot, then
moved out of Redis (tests/cold_helpers.py make_cold: persisted by the real worker, then deleted
from Redis with the cold marks raised), read the same; pages that span hot and cold have no
duplicate and no gap, also while messages move out under a reader; BCC privacy holds."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from cold_helpers import make_cold, trim_to
from fastmcp import FastMCP
from helpers import PROJECT, SLUG, Tools, real_redis_only
from index_helpers import on_index_backend
from persist_helpers import run_worker
from shapes import payload

from broker.config import Settings
from broker.mail import cold_pages, oversight

OTHER = "/tmp/other-proj"
OTHER_SLUG = "tmp-other-proj"
Q = f"project={quote(PROJECT, safe='')}"


@pytest.fixture
def settings(settings: Settings, index_backend: str, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Every read here also on the PostgreSQL index (cold pages are SQL over the index)."""
    with on_index_backend(settings, index_backend, request) as on_backend:
        yield on_backend


async def resource(tools: Tools, uri: str) -> Any:
    return json.loads((await tools.client.read_resource(uri))[0].text)


async def send(tools: Tools, sender: str, to: list[str], **extra: Any) -> int:
    return int(payload(await tools.send(sender, to, **extra))["id"])


async def build(tools: Tools) -> list[int]:
    """Mail of every shape to BlueLake (and from it): importance, ack, topics, threads, cc, bcc,
    long bodies (kept out of the inbox entry), a sender of another project; some read and acked.
    Returns the ids, oldest first."""
    await tools.project()
    for name in ("BlueLake", "GreenCastle", "alpha-one"):
        await tools.agent(name)
    await tools.project(OTHER)
    await tools.agent("RedFox", project_key=OTHER)
    await tools.call("request_contact", project_key=OTHER, from_agent="RedFox", to_agent="BlueLake", to_project=PROJECT)
    await tools.call(
        "respond_contact", project_key=PROJECT, to_agent="BlueLake", from_agent="RedFox", from_project=OTHER,
        accept=True,
    )  # fmt: skip
    ids = []
    for i in range(24):
        importance = ("low", "normal", "high", "urgent")[i % 4]
        extra: dict[str, Any] = {"subject": f"m{i}", "body_md": f"body {i} " + ("x" * 3000 if i % 5 == 0 else "")}
        extra["importance"] = importance
        if i % 3 == 0:
            extra["ack_required"] = True
        if i % 2 == 0:
            extra["topic"] = "build" if i % 4 == 0 else "deploy"
        if i % 6 == 1:
            extra["thread_id"] = "FEAT-1"
        sender = ("GreenCastle", "alpha-one")[i % 2]
        to = ["BlueLake"]
        if i % 7 == 3:
            extra["cc"] = ["GreenCastle" if sender == "alpha-one" else "alpha-one"]
        if i % 5 == 2:
            extra["bcc"] = ["alpha-one" if sender == "GreenCastle" else "GreenCastle"]
        ids.append(await send(tools, sender, to, **extra))
        if i % 4 == 1:  # BlueLake writes too: its outbox, sent topics, a note to itself
            topic = {"topic": "build"} if i % 8 == 1 else {}
            ids.append(await send(tools, "BlueLake", ["GreenCastle", "BlueLake"], subject=f"s{i}", bcc=["alpha-one"],
                                  **topic))  # fmt: skip
        if i == 10:
            afar = await tools.call(
                "send_message", project_key=OTHER, sender_name="RedFox", to=[f"project:{SLUG}#BlueLake"],
                subject="from afar", body_md="hi", topic="build", importance="urgent", ack_required=True,
            )  # fmt: skip
            ids.append(int(payload(afar)["id"]))
    for message_id in ids[2:8]:
        await tools.call("mark_message_read", project_key=PROJECT, agent_name="BlueLake", message_id=message_id)
    for message_id in ids[:4]:
        await tools.call("acknowledge_message", project_key=PROJECT, agent_name="BlueLake", message_id=message_id)
    return ids


async def reads(tools: Tools, since_ts: str) -> dict[str, Any]:
    """Every list read over that mail, as a user sees it."""
    out: dict[str, Any] = {}
    for name in ("BlueLake", "GreenCastle", "alpha-one"):
        for bodies in (False, True):
            out[f"inbox {name} {bodies}"] = await tools.inbox(name, limit=1000, include_bodies=bodies)
        out[f"outbox {name}"] = await resource(tools, f"resource://outbox/{name}?{Q}&include_bodies=true&limit=1000")
        out[f"topic {name}"] = await tools.call(
            "fetch_topic", project_key=PROJECT, topic_name="build", agent_name=name, include_bodies=True, limit=1000
        )
    for limit in (1, 3, 7, 20):
        out[f"inbox limit {limit}"] = await tools.inbox("BlueLake", limit=limit)
        out[f"urgent limit {limit}"] = await tools.inbox("BlueLake", limit=limit, urgent_only=True, include_bodies=True)
        out[f"topic filter {limit}"] = await tools.inbox("BlueLake", limit=limit, topic="Build", include_bodies=True)
        out[f"both filters {limit}"] = await tools.inbox("BlueLake", limit=limit, urgent_only=True, topic="deploy")
        out[f"fetch_topic {limit}"] = await tools.call(
            "fetch_topic", project_key=PROJECT, topic_name="build", agent_name="BlueLake", limit=limit
        )
        out[f"outbox limit {limit}"] = await resource(tools, f"resource://outbox/BlueLake?{Q}&limit={limit}")
        for view in ("urgent-unread", "ack-required", "acks-stale", "ack-overdue"):
            extra = "&ttl_seconds=0" if view == "acks-stale" else ("&ttl_minutes=0" if view == "ack-overdue" else "")
            found = await resource(tools, f"resource://views/{view}/BlueLake?{Q}&limit={limit}{extra}")
            for item in found["messages"]:
                item.pop("age_seconds", None)  # the time of the read
            out[f"{view} {limit}"] = found
    out["since"] = await tools.inbox("BlueLake", limit=1000, since_ts=since_ts, include_bodies=True)
    out["since urgent"] = await tools.inbox("BlueLake", limit=1000, since_ts=since_ts, urgent_only=True)
    out["since topic"] = await tools.call(
        "fetch_topic", project_key=PROJECT, topic_name="build", agent_name="BlueLake", since_ts=since_ts
    )
    out["since outbox"] = await resource(tools, f"resource://outbox/BlueLake?{Q}&since_ts={quote(since_ts)}")
    out["inbox resource"] = await resource(tools, f"resource://inbox/BlueLake?{Q}&limit=1000&include_bodies=true")
    out["mailbox"] = await resource(tools, f"resource://mailbox/BlueLake?{Q}&limit=1000")
    return out


async def created_ts(tools: Tools, message_id: int) -> str:
    found = await resource(tools, f"resource://message/{message_id}?{Q}&agent=BlueLake")
    return str(found["created_ts"])


async def still_in_redis(server: FastMCP, ids: list[int]) -> list[int]:
    store = server.store  # type: ignore[attr-defined]
    pipe = store.client().pipeline(transaction=False)
    for message_id in ids:
        pipe.exists(store.keys.message(SLUG, message_id))
    return [i for i, there in zip(ids, await pipe.execute(), strict=True) if there]


async def test_every_list_read_answers_the_same_once_all_mail_is_cold(
    tools: Tools, server: FastMCP, settings: Settings
) -> None:
    ids = await build(tools)
    since = await created_ts(tools, ids[len(ids) // 2])
    await run_worker(server, settings)  # persisted first, so the archive commits are the same
    hot = await reads(tools, since)
    assert len(hot["inbox BlueLake False"]) >= 31 and hot["urgent-unread 20"]["count"] > 0
    assert not cold_pages._sources.get(server.store)  # type: ignore[attr-defined]  # nothing cold: no index read

    await make_cold(server, settings, ids, persist=False)
    assert await still_in_redis(server, ids) == []
    assert await tools.inbox("BlueLake", limit=1) == hot["inbox limit 1"]
    assert await reads(tools, since) == hot


@pytest.mark.parametrize("pattern", ["oldest", "scattered", "newest"])
async def test_pages_across_the_boundary_have_no_duplicate_and_no_gap(
    tools: Tools, server: FastMCP, settings: Settings, pattern: str
) -> None:
    """Part cold: the oldest half (the trimmer's usual cut), every third message (a message that
    another inbox keeps hot stays below the mark), or the newest half."""
    ids = await build(tools)
    since = await created_ts(tools, ids[len(ids) // 3])
    await run_worker(server, settings)
    hot = await reads(tools, since)
    chosen = {
        "oldest": ids[: len(ids) // 2],
        "scattered": ids[::3],
        "newest": ids[len(ids) // 2 :],
    }[pattern]
    await make_cold(server, settings, chosen, persist=False)
    assert await still_in_redis(server, chosen) == []
    now = await reads(tools, since)
    for name in hot:
        assert now[name] == hot[name], name
    for limit in range(1, 27):
        page = [item["id"] for item in await tools.inbox("BlueLake", limit=limit)]
        assert page == [item["id"] for item in hot["inbox BlueLake False"][:limit]]


async def test_bcc_stays_private_and_only_sender_and_recipients_see_cold_mail(
    tools: Tools, server: FastMCP, settings: Settings
) -> None:
    ids = await build(tools)
    outsider = (await tools.agent())["name"]
    secret = await send(tools, "GreenCastle", ["BlueLake"], subject="secret", topic="build", bcc=["alpha-one"])
    await make_cold(server, settings, [*ids, secret])
    [seen_by_bcc] = [i for i in await tools.inbox("alpha-one", limit=1000) if i["id"] == secret]
    assert seen_by_bcc["kind"] == "bcc"
    [seen_by_to] = [i for i in await tools.inbox("BlueLake", limit=1000) if i["id"] == secret]
    assert seen_by_to["kind"] == "to" and "alpha-one" not in json.dumps(seen_by_to)
    [sent] = [i for i in (await resource(tools, f"resource://outbox/GreenCastle?{Q}&limit=1000"))["messages"]
              if i["id"] == secret]  # fmt: skip
    assert (sent["to"], sent["cc"], sent["bcc"]) == (["BlueLake"], [], ["alpha-one"])
    # an agent that neither sent nor received it never sees it
    assert await tools.inbox(outsider, limit=1000) == []
    assert await tools.call("fetch_topic", project_key=PROJECT, topic_name="build", agent_name=outsider) == []


async def test_the_other_projects_sender_reads_the_same_cold(tools: Tools, server: FastMCP, settings: Settings) -> None:
    ids = await build(tools)
    await run_worker(server, settings)
    hot = [i for i in await tools.inbox("BlueLake", limit=1000, include_bodies=True) if i.get("from_project")]
    assert hot and hot[0]["from_address"] == f"project:{OTHER_SLUG}#RedFox"
    await make_cold(server, settings, ids, persist=False)
    assert [i for i in await tools.inbox("BlueLake", limit=1000, include_bodies=True) if i.get("from_project")] == hot


@real_redis_only
async def test_a_page_of_a_thousand_across_hot_and_cold(tools: Tools, server: FastMCP, settings: Settings) -> None:
    await tools.project()
    for name in ("BlueLake", "GreenCastle"):
        await tools.agent(name)
    ids = []
    for i in range(1020):
        ids.append(await send(tools, "GreenCastle", ["BlueLake"], subject=f"n{i}", topic="t" if i % 2 else "",
                              importance="urgent" if i % 3 == 0 else "normal"))  # fmt: skip
    await run_worker(server, settings)
    hot = await tools.inbox("BlueLake", limit=1000, include_bodies=True)
    urgent = await tools.inbox("BlueLake", limit=1000, urgent_only=True)
    topic = await tools.inbox("BlueLake", limit=1000, topic="t")
    assert [i["id"] for i in hot] == ids[::-1][:1000]
    await make_cold(server, settings, ids[:600], persist=False)
    assert await tools.inbox("BlueLake", limit=1000, include_bodies=True) == hot
    assert await tools.inbox("BlueLake", limit=1000, urgent_only=True) == urgent
    assert await tools.inbox("BlueLake", limit=1000, topic="t") == topic


async def test_a_reader_paging_while_messages_go_cold_sees_each_once(
    tools: Tools, server: FastMCP, settings: Settings
) -> None:
    """Messages move out of Redis oldest first, a few at a time, while a reader reads pages that
    reach across the boundary: every page is exactly the newest messages, each once."""
    await tools.project()
    for name in ("BlueLake", "GreenCastle"):
        await tools.agent(name)
    ids = [await send(tools, "GreenCastle", ["BlueLake"], subject=f"n{i}", body_md="b" * (i * 97 % 3000))
           for i in range(60)]  # fmt: skip
    await run_worker(server, settings)
    expected = await tools.inbox("BlueLake", limit=60, include_bodies=True)
    done = asyncio.Event()
    pages = 0

    async def trim() -> None:
        for start in range(0, 55, 5):
            await make_cold(server, settings, ids[start : start + 5], persist=False)
            await asyncio.sleep(0)
        done.set()

    async def read() -> None:
        nonlocal pages
        while not done.is_set():
            for limit in (10, 40, 60):
                page = await tools.inbox("BlueLake", limit=limit, include_bodies=True)
                assert page == expected[:limit]
                pages += 1

    await asyncio.gather(trim(), read())
    assert pages > 0
    assert await still_in_redis(server, ids[:55]) == []
    assert await tools.inbox("BlueLake", limit=60, include_bodies=True) == expected


async def test_a_reader_paging_while_the_trimmer_runs_sees_each_once(
    tools: Tools, server: FastMCP, settings: Settings
) -> None:
    """The real trimmer (one pass per window, the window shrinking from 59 to 1 message per
    stream) runs in a thread while a reader reads pages of every filter, one after the other:
    each page equals the page read before anything was cold."""
    await tools.project()
    for name in ("BlueLake", "GreenCastle"):
        await tools.agent(name)
    ids = []
    for i in range(60):
        extra = {"topic": "t"} if i % 2 else {}
        ids.append(await send(tools, "GreenCastle", ["BlueLake"], subject=f"n{i}", body_md="b" * (i * 97 % 3000),
                              importance="urgent" if i % 3 else "normal", ack_required=i % 4 == 0, **extra))  # fmt: skip
    await run_worker(server, settings)

    calls: list[Callable[[], Awaitable[Any]]] = []
    for limit in (10, 60):
        calls += [
            functools.partial(tools.inbox, "BlueLake", limit=limit, include_bodies=True),
            functools.partial(tools.inbox, "BlueLake", limit=limit, urgent_only=True),
            functools.partial(
                tools.call, "fetch_topic", project_key=PROJECT, topic_name="t", agent_name="BlueLake", limit=limit
            ),
            functools.partial(resource, tools, f"resource://outbox/GreenCastle?{Q}&limit={limit}"),
            functools.partial(resource, tools, f"resource://views/ack-required/BlueLake?{Q}&limit={limit}"),
        ]
    expected = [await call() for call in calls]
    done = asyncio.Event()
    reads_made = 0

    async def trim() -> None:
        for cap in range(59, 0, -2):  # 30 passes, each moving out a message or two per stream
            await trim_to(server, settings, cap)
            await asyncio.sleep(0.005)
        done.set()

    async def read() -> None:
        nonlocal reads_made
        while not done.is_set():
            for call, answer in zip(calls, expected, strict=True):
                assert await call() == answer
                reads_made += 1

    await asyncio.gather(trim(), read())
    assert reads_made >= 30
    assert len(await still_in_redis(server, ids)) == 1
    assert [await call() for call in calls] == expected


async def overseen(server: FastMCP) -> dict[str, Any]:
    """The web view's unified inbox (followed page by page, every filter) and outboxes."""
    store = server.store  # type: ignore[attr-defined]
    out: dict[str, Any] = {}
    for agent in ("", "BlueLake", "GreenCastle"):
        for query in ({}, {"importance": "high"}, {"unread_only": True}, {"topic": "build"}):
            rows, cursor = [], ""
            while True:
                page = await oversight.inbox_page(store, PROJECT, agent=agent, cursor=cursor, limit=4, **query)
                for row in page.rows:
                    item = {k: v for k, v in row.item.items() if agent or k != "kind"}  # kind: the first inbox met
                    rows.append((row.cursor, item, row.recipients, row.receipts))
                if not page.rows or not (page.more or not page.complete):
                    break
                cursor = page.rows[-1].cursor
            out[f"inbox {agent} {query}"] = rows
        if agent:
            out[f"outbox {agent}"] = await oversight.outbox(store, PROJECT, agent, limit=50)
    return out


@pytest.mark.parametrize("pattern", ["scattered", "all"])
async def test_the_web_views_unified_inbox_and_outbox_read_the_same_cold(
    tools: Tools, server: FastMCP, settings: Settings, pattern: str
) -> None:
    ids = await build(tools)
    await run_worker(server, settings)
    hot = await overseen(server)
    assert len(hot["inbox  {}"]) >= 31
    await make_cold(server, settings, ids[::3] if pattern == "scattered" else ids, persist=False)
    now = await overseen(server)
    for name in hot:
        assert now[name] == hot[name], name


def test_a_page_above_the_mark_asks_no_index_and_the_merge_keeps_hot_order() -> None:
    """The decision and the merge alone: a full page whose oldest item is newer than the mark's
    bound (or a since_ts past it, or no mark) is the whole answer; a merge keeps the hot order,
    places cold rows by key, keeps a message on both sides once, and applies the limit last."""
    bound = cold_pages.mark_upper_us("1700000000123-4")
    assert bound == 1_700_000_000_123_999
    assert not cold_pages.reaches(1_700_000_000_124_000, True, bound, "")
    assert cold_pages.reaches(1_700_000_000_124_000, False, bound, "")  # a short page reaches past it
    assert cold_pages.reaches(bound, True, bound, "")
    assert not cold_pages.reaches(None, False, bound, str(bound))  # since_ts at the bound
    assert not cold_pages.reaches(None, False, None, "")  # nothing cold

    def ranked(key: int, message_id: int) -> cold_pages.Ranked:
        return cold_pages.Ranked((key, key, message_id), {"id": message_id})

    hot = [ranked(9, 1), ranked(7, 2), ranked(8, 3)]  # a held message delivered late (id 3)
    cold = [ranked(8, 3), ranked(6, 4), ranked(5, 5)]
    merged = cold_pages.merge(hot, cold, 4)
    assert [r.item["id"] for r in merged] == [1, 2, 3, 4]
    assert [r.item["id"] for r in cold_pages.merge(hot, cold, 10)] == [1, 2, 3, 4, 5]
    assert [r.item["id"] for r in cold_pages.merge([], cold, 2)] == [3, 4]
