"""A broker needs no local files (issue 19, point 5): a ``broker serve`` process on its own empty
STORAGE_ROOT beside a ``broker worker`` with another STORAGE_ROOT, both on one real Redis and a
throwaway PostgreSQL index. Mail is sent (a thread, an acknowledgement, a reservation) and read
while it is all hot and unpersisted; then the worker persists it and trims it to a window of two
messages per inbox and outbox, and every read answers the same from the serve process (the
commit fields now filled, from the index, equal to what the worker's Git archive says), search
and summaries find the cold mail, the web view's pages show it, and the serve process's
STORAGE_ROOT holds no archive and no index."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from helpers import Tools
from index_helpers import throwaway_database
from process_helpers import BROKER, broker_env, serving, stop_process
from redis.asyncio import Redis

from broker.persistence.commits import message_commits
from broker.store.keys import Keys

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
WINDOW = 2
SETTLE_SECONDS = 90


@pytest.fixture
def database_url() -> Iterator[str]:
    with throwaway_database() as url:
        yield url


async def resource(client: Client, uri: str) -> Any:
    contents = await client.read_resource(uri)
    return json.loads(contents[0].text)


async def send_mail(tools: Tools, project: str) -> dict[str, int]:
    """Seven messages to GreenCastle (a thread, topics, one urgent, one to acknowledge), a reply."""
    ids: dict[str, int] = {}

    async def send(key: str, sender: str, to: list[str], **extra: Any) -> None:
        result = await tools.call("send_message", project_key=project, sender_name=sender, to=to, **extra)
        ids[key] = result["deliveries"][0]["payload"]["id"]

    await send("kickoff", "BlueLake", ["GreenCastle"], subject="Kickoff plan", body_md="alpha kickoff words",
               thread_id="T-1", topic="plans", ack_required=True)  # fmt: skip
    await send("reply", "GreenCastle", ["BlueLake"], subject="Re: Kickoff plan", body_md="agreed, kickoff",
               thread_id="T-1")  # fmt: skip
    for n in range(3, 9):
        extra: dict[str, Any] = {"topic": "plans"} if n % 2 else {}
        if n == 3:
            extra["ack_required"] = True  # left unacknowledged: the ack views list it
        await send(f"note{n}", "BlueLake", ["GreenCastle"], subject=f"Note {n}", body_md=f"note body {n}",
                   importance="urgent" if n == 4 else "normal", **extra)  # fmt: skip
    await tools.call("acknowledge_message", project_key=project, agent_name="GreenCastle", message_id=ids["kickoff"])
    await tools.call("file_reservation_paths", project_key=project, agent_name="BlueLake", paths=["src/**"])
    return ids


async def every_read(client: Client, tools: Tools, project: str, ids: dict[str, int]) -> dict[str, Any]:
    """What the serve process answers to every mail read, keyed by a name."""
    q = f"?project={project}"
    green = {"project_key": project, "agent_name": "GreenCastle"}
    since = (await tools.call("fetch_inbox", **green, limit=100))[-1]["created_ts"]
    return {
        "fetch_inbox": await tools.call("fetch_inbox", **green, limit=100, include_bodies=True),
        "fetch_inbox_urgent": await tools.call("fetch_inbox", **green, limit=100, urgent_only=True),
        "fetch_inbox_since": await tools.call("fetch_inbox", **green, limit=3, since_ts=since),
        "fetch_inbox_topic": await tools.call("fetch_inbox", **green, limit=100, topic="plans"),
        "fetch_topic": await tools.call("fetch_topic", **green, topic_name="plans", limit=100),
        "fetch_topic_sender": await tools.call(
            "fetch_topic", project_key=project, agent_name="BlueLake", topic_name="plans", limit=100
        ),
        "message": await resource(client, f"resource://message/{ids['kickoff']}{q}&agent=GreenCastle"),
        "thread": await resource(client, f"resource://thread/T-1{q}&agent=GreenCastle&include_bodies=true"),
        "inbox": await resource(client, f"resource://inbox/GreenCastle{q}&include_bodies=true&limit=100"),
        "mailbox": await resource(client, f"resource://mailbox/GreenCastle{q}&limit=100"),
        "mailbox_detailed": await resource(client, f"resource://mailbox-with-commits/GreenCastle{q}&limit=100"),
        "outbox": await resource(client, f"resource://outbox/BlueLake{q}&include_bodies=true&limit=100"),
        "ack_required": await resource(client, f"resource://views/ack-required/GreenCastle{q}&limit=100"),
        "urgent_unread": await resource(client, f"resource://views/urgent-unread/GreenCastle{q}&limit=100"),
        "acks_stale": await resource(client, f"resource://views/acks-stale/GreenCastle{q}&ttl_seconds=0&limit=100"),
        "ack_overdue": await resource(client, f"resource://views/ack-overdue/GreenCastle{q}&ttl_minutes=0&limit=100"),
    }


def without_commits(value: Any) -> Any:
    """The reads with every ``commit`` field left out (filled only once the worker persisted),
    and acks-stale's ``age_seconds`` (it grows while the test runs)."""
    if isinstance(value, dict):
        return {k: without_commits(v) for k, v in value.items() if k not in ("commit", "age_seconds")}
    if isinstance(value, list):
        return [without_commits(v) for v in value]
    return value


async def settle(redis: Redis, keys: Keys, slug: str, gone: list[int]) -> None:
    """Wait until the worker persisted everything and trimmed ``gone`` out of Redis."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        left = [m for m in gone if await redis.exists(keys.message(slug, m))]
        if not left and not await redis.zcard(keys.pending(slug)):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the worker did not persist and trim in {SETTLE_SECONDS} s: {left} still in Redis")


async def test_a_broker_without_local_files_answers_every_read(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    serve_root, worker_root = tmp_path / "serve", tmp_path / "worker"
    serve_root.mkdir()
    env = broker_env(redis_url, serve_root, AGENT_AUTH="open", DATABASE_URL=database_url,
                     PERSISTENCE_WORKER="external", HOT_INBOX_MAX_MESSAGES=str(WINDOW),
                     HOT_TRIM_INTERVAL_SECONDS="0.3")  # fmt: skip
    worker_env = {**env, "STORAGE_ROOT": str(worker_root)}
    keys = Keys(env["REDIS_KEY_PREFIX"])
    project = f"/srv/nlf/{uuid4().hex[:10]}"
    redis = Redis.from_url(redis_url, decode_responses=True)
    worker = None
    try:
        with serving(env) as served:
            async with Client(StreamableHttpTransport(served.mcp_url)) as client:
                tools = Tools(client)
                slug = (await tools.call("ensure_project", human_key=project))["slug"]
                for name in ("BlueLake", "GreenCastle"):
                    await tools.call("register_agent", project_key=project, name=name, program="codex", model="x")
                ids = await send_mail(tools, project)
                before = await every_read(client, tools, project, ids)
                web_before = await web_pages(served.base, slug)

                with open(tmp_path / "worker.log", "w") as log:
                    worker = subprocess.Popen([BROKER, "worker"], env=worker_env, stdout=log, stderr=subprocess.STDOUT)
                gone = [ids["kickoff"], ids["note3"], ids["note4"], ids["note5"], ids["note6"]]
                await settle(redis, keys, slug, gone)
                after = await every_read(client, tools, project, ids)

                # every read answers as before, the commit fields now filled from the index
                assert without_commits(after) == without_commits(before)
                assert len(after["fetch_inbox"]) == 7 and len(after["outbox"]["messages"]) == 7
                for view in ("ack_required", "acks_stale", "ack_overdue"):
                    assert [m["id"] for m in after[view]["messages"]] == [ids["note3"]], view
                assert [m["id"] for m in after["urgent_unread"]["messages"]] == [ids["note4"]]
                archive = worker_root / "archive"
                items = after["mailbox_detailed"]["messages"]
                from_git = message_commits(archive, slug, items, detailed=True)
                assert {m["id"]: m["commit"] for m in items} == from_git and len(from_git) == 7
                basic = {m["id"]: m["commit"] for m in after["mailbox"]["messages"]}
                assert basic == {
                    i: {k: c[k] for k in ("hexsha", "summary", "authored_ts")} for i, c in from_git.items()
                }
                assert all(m["commit"] for m in after["outbox"]["messages"])

                # the history reads answer from the index, cold mail included
                found = await tools.call("search_messages", project_key=project, query="kickoff",
                                         agent_name="GreenCastle")  # fmt: skip
                assert sorted(m["id"] for m in found) == sorted([ids["kickoff"], ids["reply"]])
                summary = await tools.call("summarize_thread", project_key=project, thread_id="T-1",
                                           agent_name="GreenCastle", include_examples=True)  # fmt: skip
                assert summary["summary"]["total_messages"] == 2

                # whois lists the commits that carried mail, from the index
                whois = await tools.call("whois", project_key=project, agent_name="GreenCastle", commit_limit=50)
                assert {c["hexsha"] for c in whois["recent_commits"]} == {c["hexsha"] for c in from_git.values()}

                # the web view shows the cold mail as it showed it hot
                assert await web_pages(served.base, slug) == web_before

        for path in serve_root.rglob("*"):
            assert "archive" not in path.parts and not path.name.startswith("index.sqlite3"), path
        assert (worker_root / "archive" / "HEAD").exists()
    finally:
        if worker is not None:
            stop_process(worker)
        await redis.aclose()


async def web_pages(base: str, slug: str) -> dict[str, list[str]]:
    """The subjects each web view page lists, in its order (unified inbox, an agent's page with
    its outbox, a thread)."""
    pages = {"inbox": f"/mail/{slug}", "agent": f"/mail/{slug}/agents/BlueLake", "thread": f"/mail/{slug}/threads/T-1"}
    shown: dict[str, list[str]] = {}
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for key, path in pages.items():
            response = await http.get(path)
            assert response.status_code == 200, (path, response.text[:500])
            shown[key] = subjects_in(response.text)
    return shown


def subjects_in(html: str) -> list[str]:
    """The mail subjects a page names, in page order."""
    names = ["Re: Kickoff plan", "Kickoff plan"] + [f"Note {n}" for n in range(3, 9)]
    found: list[tuple[int, str]] = []
    for name in names:
        start = 0
        while (at := html.find(name, start)) >= 0:
            if not any(at >= f and at < f + len(n) for f, n in found if n != name):
                found.append((at, name))
            start = at + len(name)
    return [name for _, name in sorted(found)]
