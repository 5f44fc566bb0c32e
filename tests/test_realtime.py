"""wait_for_mail through an MCP client, and the doorbell waiters behind it, on fakeredis and real Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from fastmcp import FastMCP
from helpers import PROJECT, Tools
from realtime_helpers import store_of, until, waiting
from shapes import HEAD_KEYS, payload

from broker.identity.projects import project_slug
from broker.realtime import arrivals
from broker.store.store import Store


async def test_waiter_wakes_on_arrival(server: FastMCP, tools: Tools, trio: dict[str, Any]) -> None:
    task = await waiting(server, tools, agent_name="GreenCastle", timeout_seconds=30, include_bodies=True)
    assert not task.done()  # no unread mail: it waits
    started = time.monotonic()
    sent = payload(await tools.send("BlueLake", ["GreenCastle"], subject="ping", body_md="wake up"))
    result = await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 5  # woken by the arrival, not by the 30 s timeout
    assert result["timed_out"] is False
    [item] = result["messages"]
    assert (item["id"], item["subject"], item["body_md"], item["kind"]) == (sent["id"], "ping", "wake up", "to")
    assert set(item) == HEAD_KEYS | {"kind", "body_md"}
    assert store_of(server).doorbell.waiter_count == 0
    # The cursor returned picks up exactly after that message.
    assert (await tools.call("wait_for_mail", project_key=PROJECT, agent_name="GreenCastle", after_id=result["cursor"],
                             timeout_seconds=0))["messages"] == []  # fmt: skip


async def test_unread_mail_returns_at_once_oldest_first(tools: Tools, trio: dict[str, Any]) -> None:
    ids = [payload(await tools.send("BlueLake", ["GreenCastle"], subject=f"m{i}"))["id"] for i in range(3)]
    await tools.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=ids[0])
    result = await tools.call("wait_for_mail", project_key=PROJECT, agent_name="GreenCastle", timeout_seconds=30)
    assert [m["id"] for m in result["messages"]] == ids[1:]
    assert result["timed_out"] is False
    assert "body_md" not in result["messages"][0]
    # The cursor covers everything in the inbox: waiting after it sees only newer mail.
    after = await tools.call(
        "wait_for_mail", project_key=PROJECT, agent_name="GreenCastle", after_id=result["cursor"], timeout_seconds=0
    )
    assert after == {"messages": [], "cursor": result["cursor"], "timed_out": True}
    limited = await tools.call("wait_for_mail", project_key=PROJECT, agent_name="GreenCastle", limit=1)
    assert [m["id"] for m in limited["messages"]] == ids[2:]  # the newest unread ones


async def test_no_unread_mail_times_out(tools: Tools, trio: dict[str, Any]) -> None:
    sent = payload(await tools.send("BlueLake", ["GreenCastle"]))
    await tools.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=sent["id"])
    started = time.monotonic()
    result = await tools.call("wait_for_mail", project_key=PROJECT, agent_name="GreenCastle", timeout_seconds=0.2)
    assert 0.15 < time.monotonic() - started < 5
    assert result["messages"] == [] and result["timed_out"] is True
    # The cursor is the inbox's newest entry, so the read message is not returned again after it.
    again = await tools.call(
        "wait_for_mail", project_key=PROJECT, agent_name="GreenCastle", after_id=result["cursor"], timeout_seconds=0
    )
    assert again["messages"] == []
    empty = await tools.call("wait_for_mail", project_key=PROJECT, agent_name="alpha-one", timeout_seconds=0)
    assert empty == {"messages": [], "cursor": "0-0", "timed_out": True}


async def test_cursor_pages_without_gaps_or_repeats(tools: Tools, trio: dict[str, Any]) -> None:
    ids = [payload(await tools.send("BlueLake", ["GreenCastle"], subject=f"m{i}"))["id"] for i in range(7)]
    seen, cursor = [], "0-0"
    while True:
        page = await tools.call(
            "wait_for_mail", project_key=PROJECT, agent_name="GreenCastle", after_id=cursor, limit=3, timeout_seconds=0
        )
        if page["timed_out"]:
            break
        assert 1 <= len(page["messages"]) <= 3
        seen += [m["id"] for m in page["messages"]]
        cursor = page["cursor"]
    assert seen == ids
    # A message id works as after_id too (an int, or a string of digits).
    for after in (ids[4], str(ids[4])):
        page = await tools.call(
            "wait_for_mail", project_key=PROJECT, agent_name="GreenCastle", after_id=after, timeout_seconds=0
        )
        assert [m["id"] for m in page["messages"]] == ids[5:]


async def test_waiters_hear_only_their_own_mail(server: FastMCP, tools: Tools, trio: dict[str, Any]) -> None:
    """Doorbells go out on one channel for every agent (bcc included); a waiter sees only its inbox."""
    green = await waiting(server, tools, agent_name="GreenCastle", timeout_seconds=30)
    alpha = await waiting(server, tools, agent_name="alpha-one", timeout_seconds=0.5)
    sent = payload(await tools.send("BlueLake", ["GreenCastle"], bcc=["BlueLake"], subject="secret"))
    assert [m["id"] for m in (await asyncio.wait_for(green, 5))["messages"]] == [sent["id"]]
    assert await asyncio.wait_for(alpha, 5) == {"messages": [], "cursor": "0-0", "timed_out": True}


async def test_cancelled_wait_leaves_no_waiter(server: FastMCP, tools: Tools, trio: dict[str, Any]) -> None:
    task = await waiting(server, tools, agent_name="GreenCastle", timeout_seconds=30)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await until(lambda: store_of(server).doorbell.waiter_count == 0)
    # The next call works normally and sees the mail sent since.
    sent = payload(await tools.send("BlueLake", ["GreenCastle"]))
    result = await tools.call("wait_for_mail", project_key=PROJECT, agent_name="GreenCastle", timeout_seconds=5)
    assert [m["id"] for m in result["messages"]] == [sent["id"]]


async def test_many_waiters_on_one_process(server: FastMCP, tools: Tools, trio: dict[str, Any]) -> None:
    """A thousand waiters share one subscriber connection; each wakes with its own agent's mail.
    (100 agents with 10 each: an agent may have at most 16 waits open, docs/limits.md.)"""
    store = store_of(server)
    names = [(await tools.agent())["name"] for _ in range(100)]
    slug = await project_slug(store, PROJECT)
    connections_before = await client_count(store)
    waiters = [
        asyncio.create_task(arrivals.wait_for_mail(store, PROJECT, names[i % 100], 30, "0-0", False, 20, None))
        for i in range(1000)
    ]
    await until(lambda: store.doorbell.waiter_count == 1000, timeout=20)
    assert len(store.doorbell._waiters) == 100 and all(key[0] == slug for key in store.doorbell._waiters)
    # Waiting costs no connection per waiter (at most the subscriber's one plus the pool's).
    assert await client_count(store) <= connections_before + 1 + store.settings.redis_max_connections
    sent = {name: payload(await tools.send("BlueLake", [name], subject=name))["id"] for name in names}
    results = await asyncio.wait_for(asyncio.gather(*waiters), 20)
    for i, result in enumerate(results):
        assert [m["id"] for m in result["messages"]] == [sent[names[i % 100]]]
    assert store.doorbell.waiter_count == 0


async def client_count(store: Store) -> int:
    if store.redis_url.startswith("memory://"):
        return 0  # fakeredis has no connections to count
    return len(await store.client().client_list())


async def test_bad_input_is_rejected_with_a_remedy(tools: Tools, trio: dict[str, Any]) -> None:
    base = {"project_key": PROJECT, "agent_name": "GreenCastle"}
    cases = {
        "INVALID_ARGUMENT: timeout_seconds must be between 0 and 120": {"timeout_seconds": -1},
        "INVALID_ARGUMENT: timeout_seconds must be between 0 and 120, got 121": {"timeout_seconds": 121},
        "INVALID_ARGUMENT: after_id 'yesterday' is not a cursor": {"after_id": "yesterday"},
        "INVALID_ARGUMENT: after_id -3 is negative": {"after_id": -3},
        # digits Python accepts but a Redis stream id does not
        "INVALID_ARGUMENT: after_id '\u00b2' is not a cursor": {"after_id": "\u00b2"},
        "INVALID_ARGUMENT: after_id '\u0661-\u0660' is not a cursor": {"after_id": "\u0661-\u0660"},
        "INVALID_ARGUMENT: after_id '99999999999999999999-0' is not a cursor": {"after_id": "99999999999999999999-0"},
        "INVALID_LIMIT: limit must be between 1 and 1000": {"limit": 0},
        "NOT_FOUND: Message '999999' is not in the inbox of agent 'GreenCastle'": {"after_id": 999999},
        "AUTHENTICATION_FAILED: Invalid registration_token": {"registration_token": "wrong"},
    }
    for expected, extra in cases.items():
        text = await tools.error("wait_for_mail", **{**base, "timeout_seconds": 0, **extra})
        assert text.startswith(expected), text
    assert (await tools.error("wait_for_mail", project_key=PROJECT, agent_name="GreenCastel")).startswith(
        "NOT_FOUND: Agent 'GreenCastel' not found"
    )
    assert (await tools.error("wait_for_mail", project_key="/no/such", agent_name="GreenCastle")).startswith(
        "NOT_FOUND: Project '/no/such' not found"
    )


async def test_mail_arriving_while_unread_mail_is_read_is_not_skipped(
    server: FastMCP, tools: Tools, trio: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without after_id, the unread count and the newest entry must come from one snapshot: a
    send that lands between the two (which Redis allows between the commands of a
    non-transactional pipeline, and not inside MULTI) would make the new entry the cursor
    while it was not counted as unread, so it was neither returned nor waited for."""
    store = store_of(server)
    client = store.client()
    original = client.pipeline
    sent: list[int] = []

    async def send_once() -> None:
        if not sent:
            sent.append(0)
            sent[0] = payload(await tools.send("BlueLake", ["GreenCastle"], subject="mid-read"))["id"]

    def pipeline(transaction: bool = True, shard_hint: str | None = None) -> Any:
        pipe = original(transaction=transaction, shard_hint=shard_hint)
        execute = pipe.execute

        async def interleaved(raise_on_error: bool = True) -> list[Any]:
            if transaction:  # atomic: another client's command can only come after it
                results = await execute(raise_on_error)
                await send_once()
                return results
            stack = pipe.command_stack
            pipe.command_stack = stack[:1]
            first = await execute(raise_on_error)
            await send_once()  # Redis may run another client's script here
            pipe.command_stack = stack[1:]
            return first + await execute(raise_on_error)

        pipe.execute = interleaved
        return pipe

    monkeypatch.setattr(client, "pipeline", pipeline)
    result = await arrivals.wait_for_mail(store, PROJECT, "GreenCastle", 1, None, False, 20, None)
    monkeypatch.undo()
    assert [m["id"] for m in result["messages"]] == sent
