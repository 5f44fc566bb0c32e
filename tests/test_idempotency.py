"""idempotency_key on send_message and reply_message: a retry of a send (for instance after a
client-side timeout that hid a delivery) returns the first result and delivers nothing twice."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastmcp import Client
from helpers import PROJECT, Tools, drop_prefix, make_settings
from shapes import payload

from broker.server import build_server
from broker.store.embedded import start_redis_server

OTHER = "/tmp/other-proj"
OTHER_SLUG = "tmp-other-proj"
SLUG = "tmp-concurrent-test"


async def test_same_key_twice_delivers_once_with_the_same_result(tools: Tools, trio: dict[str, Any]) -> None:
    args = {"cc": ["alpha-one"], "subject": "Deploy", "body_md": "at 5", "idempotency_key": "k-1"}
    first = await tools.send("BlueLake", ["GreenCastle"], **args)
    again = await tools.send("bluelake", ["greencastle"], **args)  # names are case-insensitive
    assert again == first
    assert [m["id"] for m in await tools.inbox("GreenCastle")] == [payload(first)["id"]]
    assert len(await tools.inbox("alpha-one")) == 1
    # Another key, or no key, is a new message.
    other = await tools.send("BlueLake", ["GreenCastle"], **{**args, "idempotency_key": "k-2"})
    plain = await tools.send("BlueLake", ["GreenCastle"], subject="Deploy", body_md="at 5", cc=["alpha-one"])
    assert len({payload(first)["id"], payload(other)["id"], payload(plain)["id"]}) == 3
    assert len(await tools.inbox("GreenCastle")) == 3


async def test_keys_belong_to_their_sender(tools: Tools, trio: dict[str, Any]) -> None:
    """Two senders using one key send two messages."""
    a = await tools.send("BlueLake", ["alpha-one"], idempotency_key="shared")
    b = await tools.send("GreenCastle", ["alpha-one"], idempotency_key="shared")
    assert payload(a)["id"] != payload(b)["id"]
    assert len(await tools.inbox("alpha-one")) == 2


async def test_same_key_with_other_content_is_refused(tools: Tools, trio: dict[str, Any]) -> None:
    await tools.send("BlueLake", ["GreenCastle"], body_md="first", idempotency_key="k")
    for change in ({"body_md": "second"}, {"subject": "other"}, {"cc": ["alpha-one"]}, {"importance": "high"}):
        text = await tools.error(
            "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"],
            **{"subject": "Hello", "body_md": "first", **change}, idempotency_key="k",
        )  # fmt: skip
        assert text.startswith("IDEMPOTENCY_CONFLICT: idempotency_key 'k' was already used by BlueLake"), text
    assert len(await tools.inbox("GreenCastle")) == 1
    assert await tools.inbox("alpha-one") == []


@pytest.mark.parametrize("key", ["", "x" * 129, "has space", "tab\t", "é"])
async def test_bad_keys_are_refused_before_any_work(tools: Tools, trio: dict[str, Any], key: str) -> None:
    text = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
        idempotency_key=key,
    )  # fmt: skip
    assert text.startswith("INVALID_IDEMPOTENCY_KEY: "), text
    assert await tools.inbox("GreenCastle") == []
    assert (await tools.send("BlueLake", ["GreenCastle"], idempotency_key="x" * 128))["count"] == 1


async def test_reply_with_a_key_is_sent_once(tools: Tools, trio: dict[str, Any]) -> None:
    original = payload(await tools.send("BlueLake", ["GreenCastle"], subject="Q"))
    args = {"project_key": PROJECT, "message_id": original["id"], "sender_name": "GreenCastle", "body_md": "A"}
    first = await tools.call("reply_message", **args, idempotency_key="r-1")
    assert await tools.call("reply_message", **args, idempotency_key="r-1") == first
    assert [m["subject"] for m in await tools.inbox("BlueLake")] == ["Re: Q"]
    text = await tools.error("reply_message", **{**args, "body_md": "B"}, idempotency_key="r-1")
    assert text.startswith("IDEMPOTENCY_CONFLICT: ")


async def test_held_mail_is_held_once(server: Any, tools: Tools, trio: dict[str, Any]) -> None:
    """A send held for a contacts_only recipient, retried: one held message, one contact request."""
    await tools.call("set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="contacts_only")
    args = {"subject": "Hi", "auto_contact_if_blocked": True, "idempotency_key": "h"}
    first = await tools.send("BlueLake", ["GreenCastle"], **args)
    again = await tools.send("BlueLake", ["GreenCastle"], **args)
    assert first["count"] == again["count"] == 1 and first["deliveries"] == again["deliveries"]
    assert [q["recipient"] for q in again["queued"]] == ["GreenCastle"]
    keys = server.store.keys
    assert await server.store.client().zcard(keys.held(SLUG, "GreenCastle", SLUG, "BlueLake")) == 1
    # the inbox holds one contact request (its intro mail) and no held message yet
    assert [m["subject"] for m in await tools.inbox("GreenCastle")] == ["Contact request from BlueLake"]
    await tools.call("respond_contact", project_key=PROJECT, to_agent="GreenCastle", from_agent="BlueLake", accept=True)
    assert [m["subject"] for m in await tools.inbox("GreenCastle")].count("Hi") == 1


async def test_cross_project_retry_delivers_only_where_the_first_try_did_not(
    tools: Tools, trio: dict[str, Any]
) -> None:
    """One delivery per target project, each recorded under the key in that project: a retry
    after the other project refused the first try delivers there only, once."""
    await tools.project(OTHER)
    await tools.agent("RedFox", project_key=OTHER)
    args = {"subject": "Both", "auto_contact_if_blocked": False, "idempotency_key": "x-1"}
    first = await tools.send("BlueLake", ["GreenCastle", f"project:{OTHER_SLUG}#RedFox"], **args)
    assert first["count"] == 1 and first["delivery_errors"][0]["type"] == "CONTACT_REQUIRED"
    await tools.call("request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="RedFox", to_project=OTHER)
    await tools.call(
        "respond_contact", project_key=OTHER, to_agent="RedFox", from_agent="BlueLake", from_project=PROJECT,
        accept=True,
    )  # fmt: skip
    second = await tools.send("BlueLake", ["GreenCastle", f"project:{OTHER_SLUG}#RedFox"], **args)
    assert second["count"] == 2 and "delivery_errors" not in second
    assert second["deliveries"][0] == first["deliveries"][0]  # the first project's delivery, replayed
    third = await tools.send("BlueLake", ["GreenCastle", f"project:{OTHER_SLUG}#RedFox"], **args)
    assert third == second
    assert [m["subject"] for m in await tools.inbox("GreenCastle")] == ["Both"]
    assert [m["subject"] for m in await tools.inbox("RedFox", project_key=OTHER) if m["subject"] == "Both"] == ["Both"]


async def test_the_key_is_forgotten_after_the_window(tmp_path: Path, redis_url: str) -> None:
    server = build_server(make_settings(redis_url, tmp_path, IDEMPOTENCY_WINDOW_SECONDS=1))
    try:
        async with Client(server) as client:
            tools = Tools(client)
            await tools.project()
            await tools.agent("BlueLake")
            await tools.agent("GreenCastle")
            first = await tools.send("BlueLake", ["GreenCastle"], idempotency_key="w")
            assert await tools.send("BlueLake", ["GreenCastle"], idempotency_key="w") == first
            await asyncio.sleep(1.1)
            later = await tools.send("BlueLake", ["GreenCastle"], idempotency_key="w")
            assert payload(later)["id"] != payload(first)["id"]
    finally:
        await drop_prefix(server.store)  # type: ignore[attr-defined]


# -- a send that timed out on the client side but was delivered -------------------------------
STALL = """
local t = redis.call('TIME')
local stop = t[1] * 1000000 + t[2] + tonumber(ARGV[1])
while true do
  local n = redis.call('TIME')
  if n[1] * 1000000 + n[2] > stop then return 1 end
end
"""


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own: it is stalled on purpose."""
    proc, url = start_redis_server(tmp_path / "redis", appendonly=False)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def stall_redis(url: str, seconds: float) -> threading.Thread:
    """Keep Redis busy (one long script, as a slow caller does) for ``seconds``, from now."""
    admin = redis.Redis.from_url(url)
    thread = threading.Thread(target=admin.eval, args=(STALL, 0, int(seconds * 1_000_000)))
    thread.start()
    time.sleep(0.05)  # the stall has begun
    return thread


async def test_a_retry_after_a_client_timeout_does_not_double_the_send(tmp_path: Path, private_redis: str) -> None:
    """Redis stalls past the broker's socket timeout: the send fails for the caller, yet Redis
    runs it once the stall ends. A plain retry then doubles the message; with the key it does not."""
    server = build_server(make_settings(f"{private_redis}?socket_timeout=0.3", tmp_path))
    try:
        async with Client(server) as client:
            tools = Tools(client)
            await tools.project()
            await tools.agent("BlueLake")
            await tools.agent("GreenCastle")
            await tools.send("BlueLake", ["BlueLake"])  # message ids are reserved in blocks: take one now

            async def attempt(subject: str, **key: str) -> str:
                stall = stall_redis(private_redis, 0.8)
                text = await tools.error(
                    "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"],
                    subject=subject, body_md="b", **key,
                )  # fmt: skip
                await asyncio.to_thread(stall.join)
                return text

            # Without a key: the timed-out send was delivered, and its retry delivers it again.
            assert (await attempt("plain")).startswith("CONNECTION_ERROR: ")
            assert [m["subject"] for m in await tools.inbox("GreenCastle")] == ["plain"]
            await tools.send("BlueLake", ["GreenCastle"], subject="plain", body_md="b")
            assert [m["subject"] for m in await tools.inbox("GreenCastle")] == ["plain", "plain"]

            # With a key: the retry returns the delivered message and sends nothing more.
            assert (await attempt("keyed", idempotency_key="t-1")).startswith("CONNECTION_ERROR: ")
            delivered = [m for m in await tools.inbox("GreenCastle") if m["subject"] == "keyed"]
            assert len(delivered) == 1
            retry = await tools.send("BlueLake", ["GreenCastle"], subject="keyed", body_md="b", idempotency_key="t-1")
            assert payload(retry)["id"] == delivered[0]["id"]
            assert [m["subject"] for m in await tools.inbox("GreenCastle")].count("keyed") == 1
    finally:
        await drop_prefix(server.store)  # type: ignore[attr-defined]


async def test_a_key_reused_for_other_content_across_projects_delivers_nowhere(
    tools: Tools, trio: dict[str, Any]
) -> None:
    """The refusal says "Nothing was sent": it must be true for every target project, not only
    the one holding the key, or the caller resends (with a new key) what was already delivered."""
    await tools.project(OTHER)
    await tools.agent("RedFox", project_key=OTHER)
    await tools.call("request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="RedFox", to_project=OTHER)
    await tools.call(
        "respond_contact", project_key=OTHER, to_agent="RedFox", from_agent="BlueLake", from_project=PROJECT,
        accept=True,
    )  # fmt: skip
    red = f"project:{OTHER_SLUG}#RedFox"
    await tools.send("BlueLake", [red], subject="first", idempotency_key="k-9")
    text = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle", red], subject="second",
        body_md="b", idempotency_key="k-9",
    )  # fmt: skip
    assert text.startswith("IDEMPOTENCY_CONFLICT: ") and "Nothing was sent" in text
    assert await tools.inbox("GreenCastle") == []
    assert "second" not in [m["subject"] for m in await tools.inbox("RedFox", project_key=OTHER)]
