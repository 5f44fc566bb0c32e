"""broker rehydrate: Redis rebuilt from the index shows every inbox, read/ack state, thread
and topic as before (on fakeredis and a real Redis; the FLUSHALL variant is in test_faults)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools
from persist_helpers import index_rows, mailbox_state, run_worker, write_mail

from broker.config import Settings
from broker.lifecycle.rehydrate import rehydrate_all
from broker.server import build_server


async def test_rehydrate_rebuilds_what_users_read(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    written = await write_mail(tools)
    before = await mailbox_state(tools)
    await run_worker(server, settings)

    store = server.store  # type: ignore[attr-defined]
    lost = [key async for key in store.client().scan_iter(match=f"{store.keys.prefix}:*")]
    await store.client().delete(*lost)  # Redis lost this tenant's data
    assert "NOT_FOUND" in await tools.error("fetch_inbox", project_key=PROJECT, agent_name="BlueLake")

    report = await rehydrate_all(settings, store.redis_url)
    assert report.projects == ["tmp-concurrent-test"] and report.messages == 7
    assert await mailbox_state(tools) == before

    ids = written["ids"]
    again = await tools.call("mark_message_read", project_key=PROJECT, agent_name="alpha-one", message_id=ids[1])
    assert again == written["read"]
    acked = await tools.call("acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=ids[0])
    assert acked == written["acked"]
    # unread stayed unread: its first read happens now
    fresh = await tools.call("mark_message_read", project_key=PROJECT, agent_name="BlueLake", message_id=ids[1])
    assert fresh["read_at"] > written["read"]["read_at"]
    # threads: a reply lands in the rebuilt thread
    reply = await tools.call(
        "reply_message", project_key=PROJECT, message_id=ids[1], sender_name="alpha-one", body_md="ok"
    )
    assert reply["thread_id"] == "FEAT-7"
    # counters were raised past every persisted id
    assert int(await store.client().get(store.keys.ids("message"))) >= max(ids)

    # running it again leaves live projects alone
    assert (await rehydrate_all(settings, store.redis_url)).skipped == ["tmp-concurrent-test"]


async def test_tokens_keep_working_after_rehydrate(tools: Tools, server: FastMCP, settings: Settings) -> None:
    await tools.project()
    token = (await tools.agent("BlueLake"))["registration_token"]
    await tools.agent("GreenCastle")
    await run_worker(server, settings)
    store = server.store  # type: ignore[attr-defined]
    await store.client().delete(*[key async for key in store.client().scan_iter(match=f"{store.keys.prefix}:*")])
    await rehydrate_all(settings, store.redis_url)
    assert await tools.send("BlueLake", ["GreenCastle"], sender_token=token)
    text = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
        sender_token="wrong-token",
    )  # fmt: skip
    assert text.startswith("AUTHENTICATION_FAILED:")


async def test_force_leaves_a_project_with_unpersisted_changes_alone(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    await tools.send("BlueLake", ["GreenCastle"], subject="persisted")
    await run_worker(server, settings)
    await tools.send("BlueLake", ["GreenCastle"], subject="not persisted yet")  # the worker has a backlog
    store = server.store  # type: ignore[attr-defined]

    report = await rehydrate_all(settings, store.redis_url, force=True)
    # Rebuilding it would delete its pending set: the newest message would vanish for good.
    assert report.projects == [] and report.unpersisted == ["tmp-concurrent-test"]
    assert "broker worker --burst" in " ".join(report.lines())
    assert [m["subject"] for m in await tools.inbox("GreenCastle")] == ["not persisted yet", "persisted"]
    await run_worker(server, settings)
    assert (await rehydrate_all(settings, store.redis_url, force=True)).projects == ["tmp-concurrent-test"]
    assert [m["subject"] for m in await tools.inbox("GreenCastle")] == ["not persisted yet", "persisted"]


async def test_a_persisted_project_lost_from_redis_is_not_recreated_before_rehydrate(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    await tools.send("BlueLake", ["GreenCastle"], subject="before the loss")
    await run_worker(server, settings)
    store = server.store  # type: ignore[attr-defined]
    await store.client().delete(*[key async for key in store.client().scan_iter(match=f"{store.keys.prefix}:*")])
    for allocator in store.ids.values():
        allocator.reset()  # as after a restart

    # Re-creating it would restart the id counters: the next message would reuse a persisted
    # message's id and never reach the index (INSERT OR IGNORE), new agents would take old
    # agents' ids (and see their mail in search).
    text = await tools.error("ensure_project", human_key=PROJECT)
    assert text.startswith("REHYDRATE_REQUIRED:") and "broker rehydrate" in text
    assert not await store.client().exists(store.keys.project("tmp-concurrent-test"))

    await rehydrate_all(settings, store.redis_url)
    assert (await tools.call("ensure_project", human_key=PROJECT))["slug"] == "tmp-concurrent-test"
    await tools.send("BlueLake", ["GreenCastle"], subject="after the loss")
    await run_worker(server, settings)
    rows = index_rows(settings, "SELECT subject FROM messages ORDER BY id")
    assert rows == [{"subject": "before the loss"}, {"subject": "after the loss"}]


async def test_ids_handed_out_after_rehydrate_never_repeat_ones_a_running_broker_holds(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    first = await tools.send("BlueLake", ["GreenCastle"], subject="persisted")
    await run_worker(server, settings)
    store = server.store  # type: ignore[attr-defined]
    # Redis loses its data while this broker keeps running: it still holds its block of ids.
    await store.client().delete(*[key async for key in store.client().scan_iter(match=f"{store.keys.prefix}:*")])
    await rehydrate_all(settings, store.redis_url)

    other = build_server(settings)  # a second broker (or this one, once its block runs out)
    async with Client(other) as client:
        theirs = await Tools(client).send("alpha-one", ["GreenCastle"], subject="from the other broker")
    mine = await tools.send("BlueLake", ["GreenCastle"], subject="from this broker")
    ids = [m["deliveries"][0]["payload"]["id"] for m in (first, theirs, mine)]
    assert len(set(ids)) == 3, ids
    subjects = {m["id"]: m["subject"] for m in await tools.inbox("GreenCastle")}
    assert subjects == {ids[0]: "persisted", ids[1]: "from the other broker", ids[2]: "from this broker"}


async def test_a_send_retried_with_its_key_after_rehydrate_force_is_not_delivered_again(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """The operator's recovery (`rehydrate --force` after Redis lost its tail) comes during an
    outage, when clients retry the sends that timed out: their idempotency records must stay."""
    args = {"subject": "deploy", "body_md": "at 5", "idempotency_key": "retry-me"}
    first = await tools.send("BlueLake", ["GreenCastle"], **args)
    await run_worker(server, settings)
    store = server.store  # type: ignore[attr-defined]
    assert (await rehydrate_all(settings, store.redis_url, force=True)).projects == ["tmp-concurrent-test"]

    again = await tools.send("BlueLake", ["GreenCastle"], **args)
    assert again["deliveries"][0]["payload"]["id"] == first["deliveries"][0]["payload"]["id"]
    assert [m["subject"] for m in await tools.inbox("GreenCastle")] == ["deploy"]


async def test_rehydrate_force_does_not_drop_mail_held_for_a_contact_approval(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """Held mail lives in Redis only (the index has no recipient rows for it until approval):
    rebuilding the project from the index deleted it, though its sender was told it is queued."""
    await tools.call("set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="contacts_only")
    sent = await tools.send("BlueLake", ["GreenCastle"], subject="held", auto_contact_if_blocked=True)
    assert [q["recipient"] for q in sent["queued"]] == ["GreenCastle"]
    await run_worker(server, settings)
    store = server.store  # type: ignore[attr-defined]
    report = await rehydrate_all(settings, store.redis_url, force=True)

    await tools.call("respond_contact", project_key=PROJECT, to_agent="GreenCastle", from_agent="BlueLake", accept=True)
    assert [m["subject"] for m in await tools.inbox("GreenCastle")].count("held") == 1
    assert "held" in " ".join(report.lines())


async def test_sends_during_a_rehydrate_wait_for_it_and_it_restores_every_message(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """Brokers keep serving while the operator rehydrates after a loss. A send accepted while the
    project was half rebuilt put a live entry in an inbox stream ahead of the older ones still
    to restore: the rebuild failed there (XADD of an older id), leaving inboxes without mail."""
    import threading

    for i in range(600):  # more than one pipeline chunk of messages
        await tools.send("BlueLake", ["GreenCastle"], subject=f"old {i}")
    await run_worker(server, settings)
    store = server.store  # type: ignore[attr-defined]
    await store.client().delete(*[key async for key in store.client().scan_iter(match=f"{store.keys.prefix}:*")])
    outcome: list[Any] = []

    def rebuild() -> None:
        try:
            outcome.append(asyncio.run(rehydrate_all(settings, store.redis_url)))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=rebuild)
    thread.start()
    refused = live = 0
    while thread.is_alive():
        try:
            await tools.send("BlueLake", ["GreenCastle"], subject=f"live {live}")
            live += 1
        except Exception:  # refused until the project is back
            refused += 1
            await asyncio.sleep(0.002)
    thread.join()
    assert not isinstance(outcome[0], Exception), outcome
    await tools.send("BlueLake", ["GreenCastle"], subject="after")
    subjects = [m["subject"] for m in await tools.inbox("GreenCastle", limit=1000)]
    assert sum(s.startswith("old ") for s in subjects) == 600
    assert sum(s.startswith("live ") for s in subjects) == live and "after" in subjects
