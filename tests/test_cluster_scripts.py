"""Every Lua script keeps its keys in one slot: on a real 3-master Redis Cluster, where the broker
sends each script with a ``#!lua`` shebang (so Redis itself refuses a key outside the slot of
the script's declared keys), the tools, the persistence worker and the operator's commands
between them run every script in broker/scripts/, and no call fails.

MONITOR on every master records which scripts ran (each EVALSHA's SHA-1, mapped back to its
script); INFO commandstats on every master shows that none of them failed. Mail, contacts and
link copies cross between two projects whose slots live on different masters: a cross-project
operation is one step per project, each in its own slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import redis
from fastmcp import Client, FastMCP
from helpers import PROJECT, SLUG, Tools, drop_prefix, make_settings
from persist_helpers import index_rows, run_worker
from realtime_helpers import http_broker
from redis.crc import key_slot

from broker.config import Settings
from broker.lifecycle import retention
from broker.lifecycle.hot_window import HotTrimmer
from broker.persistence.index import Index
from broker.server import build_server
from broker.store.clients import make_sync_client, plain_url
from broker.store.commands import reservations as reservation_store
from broker.store.keys import Keys, slug_candidates
from broker.store.scripts import SCRIPT_DIR, lua_source, script_names, script_source

WINDOW = str(uuid4())
# the scripts whose keys are global ones (<p>:slugs, <p>:ids:<kind>, the products' <p>:{#products}:*),
# or none at all
GLOBAL_SCRIPTS = {"assign_slug", "allocate_ids", "raise_counter", "ensure_product", "glob_overlap"}
POISON = "poison"  # the subject the index refuses until the cause is fixed (as in test_dead_letters)


# -- the cluster's masters, and what MONITOR saw on them --------------------------------------
def masters(seed_url: str) -> dict[str, list[tuple[int, int]]]:
    """address -> the slot ranges it serves (CLUSTER SLOTS asked of the seed)."""
    found: dict[str, list[tuple[int, int]]] = {}
    for start, end, master, *_ in redis.Redis.from_url(plain_url(seed_url), decode_responses=True).cluster("slots"):
        found.setdefault(f"{master[0]}:{master[1]}", []).append((start, end))
    return found


def master_of(seed_url: str, key: str) -> str:
    slot = key_slot(key.encode())
    return next(a for a, ranges in masters(seed_url).items() if any(lo <= slot <= hi for lo, hi in ranges))


def node(address: str, timeout: float | None = 10) -> redis.Redis:
    host, port = address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), decode_responses=True, socket_timeout=timeout)


def script_of_sha(cluster: bool) -> dict[str, str]:
    return {hashlib.sha1(script_source(name, cluster).encode()).hexdigest(): name for name in script_names()}


@dataclass
class ScriptWatch:
    """MONITOR on each master in a thread of its own, collecting the SHA-1 of every script a
    client called with EVALSHA; stopped by an ECHO of a token of its own."""

    addresses: list[str]
    shas: dict[str, set[str]] = field(default_factory=dict)  # address -> SHA-1s called there
    _token: str = field(default_factory=lambda: f"stop-watch-{uuid4().hex}")
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for address in self.addresses:
            ready = threading.Event()
            thread = threading.Thread(target=self._watch, args=(address, ready), daemon=True)
            thread.start()
            assert ready.wait(10), f"MONITOR did not start on {address}"
            self._threads.append(thread)

    def _watch(self, address: str, ready: threading.Event) -> None:
        seen = self.shas.setdefault(address, set())
        with node(address, timeout=None).monitor() as monitor:  # a quiet node is no error
            ready.set()
            for call in monitor.listen():
                if call.get("client_type") == "lua":  # a command a script ran, not a client's call
                    continue
                words = call["command"].split(" ", 2)
                verb = words[0].upper()
                if verb == "ECHO" and words[1:2] == [self._token]:
                    return
                if verb == "EVALSHA":
                    seen.add(words[1])
                elif verb.startswith(("EVAL", "FCALL")):  # the broker sends none: the check names it
                    seen.add(verb)

    def stop(self) -> None:
        for address in self.addresses:
            node(address).echo(self._token)
        for thread in self._threads:
            thread.join(10)
            assert not thread.is_alive(), "a MONITOR thread did not see its stop token"


SCRIPT_COMMANDS = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_evalsha_ro", "cmdstat_eval_ro")


def script_errors(address: str) -> tuple[int, int]:
    """(script calls that failed or were refused, of them NOSCRIPT) on one node so far.

    By command, not by error kind: the nodes also count an ERR for each connection whose
    client names itself with CLIENT SETINFO, a command Redis 7.0 does not have."""
    client = node(address)
    stats = client.info("commandstats")
    failed = sum(
        stats.get(c, {}).get("failed_calls", 0) + stats.get(c, {}).get("rejected_calls", 0) for c in SCRIPT_COMMANDS
    )
    return failed, client.info("errorstats").get("errorstat_NOSCRIPT", {}).get("count", 0)


def failed_script_calls(addresses: list[str], before: dict[str, tuple[int, int]]) -> dict[str, int]:
    """address -> script calls that failed there since ``before``, other than NOSCRIPT (which is
    how EVALSHA asks for a script the node has not loaded yet: redis-py then loads it)."""
    found = {}
    for address in addresses:
        failed, noscript = script_errors(address)
        extra = (failed - before[address][0]) - (noscript - before[address][1])
        if extra:
            found[address] = extra
    return found


# -- the broker on the cluster ----------------------------------------------------------------
@pytest.fixture
def cluster_settings(cluster_url: str, tmp_path: Path) -> Settings:
    """Windows for nameless registration, build slots and products (WORKTREES_ENABLED), holders
    stale at once (force release), one try before an entry is dead-lettered (drain_fail's last
    step), no back-off between tries."""
    return make_settings(
        cluster_url,
        tmp_path,
        MCP_AGENT_MAIL_WINDOW_ID=WINDOW,
        WORKTREES_ENABLED="true",
        FILE_RESERVATION_INACTIVITY_SECONDS=0,
        FILE_RESERVATION_ACTIVITY_GRACE_SECONDS=0,
        PERSIST_MAX_ATTEMPTS=1,
        PERSIST_RETRY_BASE_SECONDS=0,
        PERSIST_RETRY_MAX_SECONDS=0,
    )


@pytest.fixture
async def cluster_server(cluster_settings: Settings) -> AsyncIterator[FastMCP]:
    server = build_server(cluster_settings)
    yield server
    await drop_prefix(server.store)  # type: ignore[attr-defined]


def other_project(cluster_url: str, keys: Keys) -> tuple[str, str]:
    """A second project (human_key, slug) whose slot a different master serves than PROJECT's."""
    home = master_of(cluster_url, keys.project(SLUG))
    for i in range(100):
        human_key = f"/tmp/cluster-other-{i}"
        slug = slug_candidates(human_key)[0]
        if master_of(cluster_url, keys.project(slug)) != home:
            return human_key, slug
    raise AssertionError("no project path found on another master")


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """A ``broker`` command as an operator runs it beside the cluster (REDIS_CLUSTER=true)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "QUEUE_", "STORAGE_", "AGENT_"))}
    env.update(
        REDIS_URL=settings.redis_url,
        REDIS_CLUSTER="true",
        QUEUE_REDIS_URL=settings.queue_redis_url,
        REDIS_KEY_PREFIX=settings.redis_key_prefix,
        STORAGE_ROOT=str(settings.storage_root),
    )
    command = [sys.executable, "-m", "broker.cli", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


@contextmanager
def poisoned(settings: Settings) -> Iterator[None]:
    """The index refuses the message with subject POISON until the block is left (the fix)."""
    Index(settings.index_path).ensure_schema()
    with sqlite3.connect(settings.index_path) as db:
        db.execute(
            f"CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.subject = '{POISON}' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
        )
    try:
        yield
    finally:
        with sqlite3.connect(settings.index_path) as db:
            db.execute("DROP TRIGGER poison")


def first_id(sent: dict[str, Any]) -> int:
    return sent["deliveries"][0]["payload"]["id"]


async def read(tools: Tools, uri: str) -> Any:
    return json.loads((await tools.client.read_resource(uri))[0].text)


# -- what users do, area by area (each names the scripts it reaches) ---------------------------
async def mail_in_one_project(tools: Tools) -> None:
    """send_message, fetch_inbox_indexed (the urgent filter), fetch_topic, fetch_view,
    mark_message, get_message (a reply reads the original), get_agent (whois)."""
    mid = first_id(
        await tools.send(
            "BlueLake", ["GreenCastle"], subject="Plan", importance="urgent", topic="build", thread_id="T1",
            ack_required=True,
        )
    )  # fmt: skip
    assert [m["id"] for m in await tools.inbox("GreenCastle", urgent_only=True)] == [mid]
    topic = await tools.call("fetch_topic", project_key=PROJECT, topic_name="build", agent_name="GreenCastle")
    assert [m["id"] for m in topic] == [mid]
    view = await read(tools, f"resource://views/urgent-unread/GreenCastle?project={PROJECT}")
    assert [m["id"] for m in view["messages"]] == [mid]
    where = {"project_key": PROJECT, "agent_name": "GreenCastle", "message_id": mid}
    assert (await tools.call("mark_message_read", **where))["read"] is True
    assert (await tools.call("acknowledge_message", **where))["acknowledged"] is True
    reply = await tools.call(
        "reply_message", project_key=PROJECT, message_id=mid, sender_name="GreenCastle", body_md="ok"
    )
    assert reply["thread_id"] == "T1" and reply["to"] == ["BlueLake"]
    assert (await tools.call("whois", project_key=PROJECT, agent_name="BlueLake"))["name"] == "BlueLake"


async def mail_between_projects(tools: Tools, other: str, other_slug: str) -> None:
    """contact_request in RedFox's project, then sender_pass and link_put (the requester's copy)
    in BlueLake's; contact_respond and list_links; send_message into the other project and a
    reply back into this one: each a step in one project's slot."""
    await tools.call("set_contact_policy", project_key=other, agent_name="RedFox", policy="contacts_only")
    request = await tools.call(
        "request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="RedFox", to_project=other
    )
    assert (request["to"], request["to_project"], request["status"]) == ("RedFox", other, "pending")
    response = await tools.call(
        "respond_contact", project_key=other, to_agent="RedFox", from_agent="BlueLake", from_project=PROJECT,
        accept=True,
    )  # fmt: skip
    assert response["approved"] is True
    [link] = await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake")
    assert (link["to"], link["to_project"], link["status"]) == ("RedFox", other, "approved")

    sent = await tools.send("BlueLake", [f"RedFox@{other_slug}"], subject="Across")
    assert sent["deliveries"][0]["project"] == other
    [across, intro] = await tools.inbox("RedFox", project_key=other)
    assert (across["subject"], across["from_project"]) == ("Across", PROJECT)
    assert intro["subject"] == "Contact request from BlueLake"
    back = await tools.call(
        "reply_message", project_key=other, message_id=across["id"], sender_name="RedFox", body_md="got it"
    )
    assert back["deliveries"][0]["project"] == PROJECT
    assert (await tools.inbox("BlueLake"))[0]["id"] == back["id"]
    # and a request the other way: RedFox's own link to BlueLake (and its copy here)
    await tools.call("request_contact", project_key=other, from_agent="RedFox", to_agent="BlueLake", to_project=PROJECT)


async def reservations(tools: Tools) -> None:
    """reserve, renew_reservations, release_reservations, force_release_reservation (the
    holder is stale at once here); GreenCastle's lib/ stays held, for rehydrate to restore."""
    at = {"project_key": PROJECT}
    held = await tools.call("file_reservation_paths", **at, agent_name="BlueLake", paths=["src/"], ttl_seconds=600)
    src = held["granted"][0]["id"]
    assert (await tools.call("renew_file_reservations", **at, agent_name="BlueLake", extend_seconds=60))["renewed"] == 1
    await tools.call("file_reservation_paths", **at, agent_name="GreenCastle", paths=["docs/"])
    released = await tools.call("release_file_reservations", **at, agent_name="GreenCastle", paths=["docs/"])
    assert released["released"] == 1
    forced = await tools.call(
        "force_release_file_reservation", **at, agent_name="GreenCastle", file_reservation_id=src, note="stale"
    )
    assert forced["released"] == 1
    await tools.call("file_reservation_paths", **at, agent_name="GreenCastle", paths=["lib/"], ttl_seconds=3600)


async def lifecycle(tools: Tools, other: str, other_token: str) -> None:
    """agent_state (retire, unretire), project_state (archive, unarchive), window (a nameless
    registration binds the process's window; list and rename it)."""
    at = {"project_key": PROJECT, "agent_name": "GreenCastle"}
    assert (await tools.call("retire_agent", **at))["status"] == "retired"
    assert (await tools.call("unretire_agent", **at))["status"] == "active"
    assert (await tools.call("archive_project", project_key=other, registration_token=other_token))[
        "status"
    ] == "archived"
    unarchived = await tools.call("unarchive_project", project_key=other, registration_token=other_token)
    assert unarchived["status"] == "active"
    windowed = await tools.agent()
    assert windowed["window_id"] == WINDOW
    listed = await tools.call("list_window_identities", project_key=PROJECT)
    assert [w["window_uuid"] for w in listed["identities"]] == [WINDOW]
    renamed = await tools.call("rename_window", project_key=PROJECT, window_uuid=WINDOW, new_display_name="RedStone")
    assert renamed["display_name"] == "RedStone"


async def build_slots_and_products(tools: Tools, other: str) -> None:
    """acquire_build_slot, renew_build_slot, release_build_slot in a project's slot;
    ensure_product in the products' own slot ({#products}), then a plain link per project."""
    at = {"project_key": PROJECT, "agent_name": "BlueLake", "slot": "build"}
    assert (await tools.call("acquire_build_slot", **at, branch="main"))["granted"]["agent"] == "BlueLake"
    assert (await tools.call("renew_build_slot", **at, branch="main", extend_seconds=60))["renewed"]
    assert (await tools.call("release_build_slot", **at, branch="main"))["released"]
    product = await tools.call("ensure_product", name="shop")
    for key in (PROJECT, other):
        assert (await tools.call("products_link", product_key="shop", project_key=key))["linked"] is True
    view = await read(tools, "resource://product/shop")
    assert view["product_uid"] == product["product_uid"]
    assert sorted(p["human_key"] for p in view["projects"]) == sorted([PROJECT, other])


async def persistence(tools: Tools, server: FastMCP, settings: Settings) -> None:
    """drain_claim and drain_fail (an entry the index refuses is dead-lettered after its one
    try), dead_letter_retry (`broker dead-letters retry` once the cause is fixed), and
    drain_requeue (the start-up reconcile takes back a batch a dead worker had claimed)."""
    with poisoned(settings):
        bad = first_id(await tools.send("BlueLake", ["GreenCastle"], subject=POISON))
        await run_worker(server, settings)
        listed = cli(settings, "dead-letters", "list", "--project", PROJECT).stdout
        assert f"{SLUG}\tmsg:{bad}\t" in listed and "poisoned row" in listed
    assert "1 dead letter(s) back in pending" in cli(settings, "dead-letters", "retry", "--project", PROJECT).stderr

    lost = f"msg:{first_id(await tools.send('BlueLake', ['GreenCastle'], subject='claimed by a dead worker'))}"
    store = server.store  # type: ignore[attr-defined]
    await asyncio.to_thread(server.persist_queue.wait_idle)  # type: ignore[attr-defined]
    # what a worker killed mid-batch leaves: the entry in flight since long ago, not pending
    await store.client().zrem(store.keys.pending(SLUG), lost)
    await store.client().zadd(store.keys.inflight(SLUG), {lost: 1})
    await run_worker(server, settings)
    subjects = {r["subject"] for r in index_rows(settings, "SELECT subject FROM messages")}
    assert {POISON, "claimed by a dead worker", "Plan", "Across"} <= subjects
    assert await store.client().zcard(store.keys.inflight(SLUG)) == 0
    assert await store.client().zcard(store.keys.pending(SLUG)) == 0


async def purge(tools: Tools, server: FastMCP, other: str) -> None:
    """purge_messages: the other project's mail, aged by moving the purge's clock two days on
    (as tests/test_lifecycle.py does: no tool takes a clock)."""
    store = server.store  # type: ignore[attr-defined]
    later = datetime.now(UTC) + timedelta(days=2)
    purged = await retention.purge_old_messages(store, other, 1, False, None, now=later)
    assert purged["status"] == "purged" and purged["messages_affected"] >= 2
    assert await tools.inbox("RedFox", project_key=other) == []


async def lose_redis_and_rehydrate(tools: Tools, server: FastMCP, settings: Settings) -> None:
    """raise_counter and restore_reservation: every key of the tenant lost, then `broker
    rehydrate` rebuilds the projects from the index."""
    await run_worker(server, settings)  # what the purge and the rest changed is in the index
    store = server.store  # type: ignore[attr-defined]
    inbox = [m["id"] for m in await tools.inbox("BlueLake")]
    live = await read(tools, f"resource://file_reservations/{SLUG}")
    assert [r["agent"] for r in live] == ["GreenCastle"]
    lost = [key async for key in store.client().scan_iter(match=f"{store.keys.prefix}:*", count=1000)]
    await store.client().delete(*lost)
    assert "NOT_FOUND" in await tools.error("fetch_inbox", project_key=PROJECT, agent_name="BlueLake")

    cli(settings, "rehydrate")
    assert [m["id"] for m in await tools.inbox("BlueLake")] == inbox
    again = await read(tools, f"resource://file_reservations/{SLUG}")
    assert [(r["id"], r["path_pattern"]) for r in again] == [(r["id"], r["path_pattern"]) for r in live]
    assert int(await store.client().get(store.keys.ids("message"))) >= max(inbox)


async def trim_hot_window(server: FastMCP, settings: Settings) -> None:
    """trim_hot: with a window of one message per stream, a pass of the worker's trimmer moves the
    persisted mail past it out of Redis (each project's batches in its own slot)."""
    store = server.store  # type: ignore[attr-defined]
    tight = settings.model_copy(update={"hot_inbox_max_messages": 1})
    trimmer = HotTrimmer(tight, make_sync_client(store.redis_url), store.keys)
    report = await asyncio.to_thread(trimmer.run_pass)
    assert report.deleted >= 1 and report.complete
    assert len(await hot_inbox_ids(server, "BlueLake")) == 1


async def hot_inbox_ids(server: FastMCP, name: str) -> list[str]:
    store = server.store  # type: ignore[attr-defined]
    return [fields["m"] for _, fields in await store.client().xrange(store.keys.inbox(SLUG, name))]


async def hard_delete(tools: Tools, other: str) -> None:
    """hard_delete_agent in BlueLake's project, then link_forget in RedFox's: RedFox's link to
    BlueLake, kept there, goes too (a step in the other project's slot)."""
    links = await tools.call("list_contacts", project_key=other, agent_name="RedFox")
    assert [link["to"] for link in links] == ["BlueLake"]
    deleted = await tools.call(
        "hard_delete_agent", project_key=PROJECT, agent_name="BlueLake", confirmation="I UNDERSTAND"
    )
    assert deleted["status"] == "hard_deleted"
    assert await tools.call("list_contacts", project_key=other, agent_name="RedFox") == []


async def web_view(settings: Settings) -> None:
    """project_inbox: the overseers' web view lists the project's unified inbox (served over HTTP,
    by `broker serve`'s app; it drops the test's keys when it stops, so it comes last)."""
    async with http_broker(settings) as (base, _store), httpx.AsyncClient(base_url=base) as http:
        page = await http.get(f"/mail/{SLUG}", headers={"accept": "text/html"})
        assert page.status_code == 200, page.text[:300]


# -- the tests ---------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.cluster
async def test_every_script_runs_in_one_slot_on_a_cluster(
    cluster_url: str, cluster_server: FastMCP, cluster_settings: Settings
) -> None:
    server, settings = cluster_server, cluster_settings
    store = server.store  # type: ignore[attr-defined]
    other, other_slug = other_project(cluster_url, store.keys)
    homes = {master_of(cluster_url, store.keys.project(s)) for s in (SLUG, other_slug)}
    assert len(homes) == 2  # the two projects' slots are served by different masters

    addresses = sorted(masters(cluster_url))
    assert len(addresses) == 3
    errors_before = {address: script_errors(address) for address in addresses}
    watch = ScriptWatch(addresses)
    watch.start()
    try:
        async with Client(server) as client:
            tools = Tools(client)
            await tools.project()
            await tools.project(other)
            for name in ("BlueLake", "GreenCastle"):
                await tools.agent(name)
            other_token = (await tools.agent("RedFox", project_key=other))["registration_token"]

            await mail_in_one_project(tools)
            await mail_between_projects(tools, other, other_slug)
            await reservations(tools)
            await lifecycle(tools, other, other_token)
            await build_slots_and_products(tools, other)
            # the Lua twin of the reservation glob matcher: called by the test suite only (no
            # user path reaches it), through its typed function
            [overlap] = await reservation_store.glob_overlap(store, pairs=[("src/**", "src/a.py")])
            assert overlap.overlaps
            await persistence(tools, server, settings)
            await purge(tools, server, other)
            await lose_redis_and_rehydrate(tools, server, settings)
            await trim_hot_window(server, settings)
            await hard_delete(tools, other)
            await web_view(settings)
    finally:
        watch.stop()

    shebang, plain = script_of_sha(cluster=True), script_of_sha(cluster=False)
    called = {sha for shas in watch.shas.values() for sha in shas}
    assert not {plain[sha] for sha in called if sha in plain}, "scripts sent without #!lua on a cluster"
    assert {shebang[sha] for sha in called if sha in shebang} == set(script_names())
    assert called <= shebang.keys(), f"not a script of the broker's, or not by EVALSHA: {called - shebang.keys()}"
    # a script that left its slot fails with an error ("... do not hash to the same slot" or
    # "... a non local key"), and so would one whose declared keys span slots (CROSSSLOT)
    assert failed_script_calls(addresses, errors_before) == {}
    # project scripts ran only where the two projects live, each master its own project's
    # steps of the cross-project work; the third master saw only scripts of global keys
    ran = {address: {shebang[sha] for sha in shas if sha in shebang} for address, shas in watch.shas.items()}
    for address in addresses:
        if address in homes:
            assert ran[address] - GLOBAL_SCRIPTS, f"no project script ran on {address}"
        else:
            assert ran[address] <= GLOBAL_SCRIPTS, ran[address] - GLOBAL_SCRIPTS


def test_a_script_without_keys_touches_no_key() -> None:
    """A cluster client sends a script to the node of its declared keys' slot, one without keys
    to any node: such a script may compute only (glob_overlap), never reach a key through a
    prefix in ARGV (restore_reservation did, and failed on two masters of three)."""
    keyless = [n for n in script_names() if re.search(r"^-- KEYS\s+none", (SCRIPT_DIR / f"{n}.lua").read_text(), re.M)]
    assert keyless == ["glob_overlap"]
    for name in keyless:
        assert "redis.call" not in lua_source(f"{name}.lua") and "redis.pcall" not in lua_source(f"{name}.lua")
