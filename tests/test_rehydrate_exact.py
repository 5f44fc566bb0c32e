"""``broker rehydrate`` writes back, key for key and byte for byte, the state the live tools
wrote (issue 11 item 12): snapshot every key after real traffic, lose Redis, rehydrate,
snapshot again and compare every value. On a real redis-server (fakeredis's stream ids drift
further from the script's clock).

What is compared other than byte for byte, and why:
- agent records (``agents``) and contact links (``links:*``) are JSON that cjson writes in
  the order of Lua's table hash, which depends on the record's history (a policy change
  re-encodes it); every reader parses them, so they are compared parsed.
- a released reservation's record keeps the expiry it had; the index keeps when it ended,
  which is all any reader shows (reservation_record.record_dict shows the earlier of the
  two), so its ``expires_us`` is compared as that.
- stream entry ids: the send script's ``XADD *`` reads the clock again after its ``TIME``
  call, so a live id is now and then one millisecond past the message's creation time, from
  which rehydrate rebuilds it; entries are compared in order with their fields exact and ids
  to within that millisecond (``since_ts`` and ordering use the creation time in ``f``).
- held mail (waiting for a contact approval) is not restored: rehydrate has no index rows for
  it (it has no recipients until approved); the test holds none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cold_write_helpers import WINDOW, make_cold, window_mail
from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, drop_prefix, make_settings, snapshot
from persist_helpers import hold_some, listing, run_worker, write_mail

from broker.config import Settings
from broker.lifecycle.rehydrate import rehydrate_all
from broker.server import build_server

pytestmark = pytest.mark.integration
SLUG = "tmp-concurrent-test"


@pytest.fixture
def backend(redis_url: str) -> str:
    return redis_url


async def build_state(tools: Tools) -> None:
    """Agents, mail with cc/bcc, threads, topics, acks, reads, a contact link, reservations
    (live, shared, renewed and released), subjects cjson escapes."""
    await write_mail(tools)
    await tools.call("set_contact_policy", project_key=PROJECT, agent_name="alpha-one", policy="contacts_only")
    await tools.call("request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="alpha-one")
    await tools.call("respond_contact", project_key=PROJECT, to_agent="alpha-one", from_agent="BlueLake", accept=True)
    await tools.send(
        "BlueLake", ["alpha-one"], subject='src/a.py: "ünïcode" \\ ✓', ack_required=True, importance="high"
    )
    await hold_some(tools)


def same_stream(live: list[Any], rebuilt: list[Any]) -> bool:
    """Entries in the same order with the same fields; each rebuilt id at most 1 ms before the
    live one (see the module's doc)."""
    if [fields for _, fields in live] != [fields for _, fields in rebuilt]:
        return False
    ms = [(int(a.split("-")[0]), int(b.split("-")[0])) for (a, _), (b, _) in zip(live, rebuilt, strict=True)]
    return all(0 <= x - y <= 1 for x, y in ms)


def comparable(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    parsed = (f"{prefix}:{{{SLUG}}}:agents", f"{prefix}:{{{SLUG}}}:links:")
    out = {}
    for key, (kind, value) in state.items():
        if key.startswith(parsed):
            value = {field: json.loads(text) for field, text in value.items()}
        if key.startswith(f"{prefix}:{{{SLUG}}}:res:") and kind == "hash" and value.get("released_us"):
            value = {**value, "expires_us": str(min(int(value["expires_us"]), int(value["released_us"])))}
        out[key] = (kind, value)
    return out


async def views(tools: Tools) -> dict[str, Any]:
    """What users read that the stored bytes decide: the ack views and reservation listings."""
    shown: dict[str, Any] = {}
    for agent in ("alpha-one", "GreenCastle"):
        for uri in (
            f"views/ack-required/{agent}?",
            f"views/acks-stale/{agent}?ttl_seconds=0&",
            f"views/ack-overdue/{agent}?ttl_minutes=0&",
        ):
            text = (await tools.client.read_resource(f"resource://{uri}project={SLUG}"))[0].text
            shown[uri] = json.loads(text)
            for item in shown[uri]["messages"]:
                item.pop("age_seconds", None)  # grows while the test runs
    shown["reservations"] = await listing(tools, active_only=False)
    return shown


async def test_rehydrated_state_is_the_live_state(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    await build_state(tools)
    await run_worker(server, settings)
    store = server.store  # type: ignore[attr-defined]
    prefix = store.keys.prefix
    before = comparable(await snapshot(store), prefix)
    seen = await views(tools)
    for uri, shown in seen.items():  # every view of alpha-one has something to lose
        assert shown if uri == "reservations" else shown["messages"] or "alpha-one" not in uri, uri

    lost = [key async for key in store.client().scan_iter(match=f"{prefix}:*")]
    await store.client().delete(*lost)
    report = await rehydrate_all(settings, store.redis_url)
    assert report.projects == [SLUG]
    after = comparable(await snapshot(store), prefix)
    assert sorted(after) == sorted(before), (set(before) - set(after), set(after) - set(before))
    differ = {k: (before[k], v) for k, v in after.items() if before[k] != v}
    assert {k: v for k, v in differ.items() if not (v[1][0] == "stream" and same_stream(v[0][1], v[1][1]))} == {}
    assert await views(tools) == seen


def same_cold(live: dict[str, str], rebuilt: dict[str, str]) -> bool:
    """The cold hash: unread counts and ``t`` exact, stream marks to within the millisecond
    stream ids may differ by (see the module's doc)."""
    if set(live) != set(rebuilt):
        return False
    for name, value in live.items():
        if name.startswith(("in:", "out:")):
            if not 0 <= int(value.split("-")[0]) - int(rebuilt[name].split("-")[0]) <= 1:
                return False
        elif value != rebuilt[name]:
            return False
    return True


async def test_rehydrated_hot_window_is_the_live_state_after_trimming(redis_url: str, tmp_path: Path) -> None:
    """Under a window of 2 per inbox and outbox: the live state after the trimmer moved out what
    no holder's window needs (tests/cold_write_helpers.py make_cold) is what rehydrate writes."""
    settings = make_settings(redis_url, tmp_path, **WINDOW)
    server = build_server(settings)
    store = server.store  # type: ignore[attr-defined]
    try:
        async with Client(server) as client:
            tools = Tools(client)
            await tools.project()
            for name in ("BlueLake", "GreenCastle", "alpha-one"):
                await tools.agent(name)
            mail = await window_mail(tools, PROJECT)
            await run_worker(server, settings)
            await make_cold(store, SLUG, mail["cold"])
            prefix = store.keys.prefix
            before = comparable(await snapshot(store), prefix)
            await store.client().delete(*[key async for key in store.client().scan_iter(match=f"{prefix}:*")])
            report = await rehydrate_all(settings, store.redis_url)
            assert (report.messages, report.cold_messages) == (4, 2)
            after = comparable(await snapshot(store), prefix)
            assert sorted(after) == sorted(before), (set(before) - set(after), set(after) - set(before))
            cold = store.keys.cold(SLUG)
            assert same_cold(before[cold][1], after[cold][1]), (before[cold], after[cold])
            differ = {k: (before[k], v) for k, v in after.items() if before[k] != v and k != cold}
            assert {
                k: v for k, v in differ.items() if not (v[1][0] == "stream" and same_stream(v[0][1], v[1][1]))
            } == {}
    finally:
        await drop_prefix(store)
