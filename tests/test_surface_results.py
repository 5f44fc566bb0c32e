"""Every tool's top-level result keys, one realistic call each, against the reference (§3.1-§3.7).

``keys(result, required, optional, ours)``: the result has every required key, may have the
optional ones (the reference's ``[...]``), and nothing else except ``ours``: keys we add, each
named with the docs/compatibility.md bullet that documents it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, drop_prefix, make_settings
from persist_helpers import run_worker
from shapes import AGENT_KEYS, HEAD_KEYS, PROJECT_KEYS

from broker.config import Settings
from broker.server import build_server

OTHER = "/tmp/surface-other"
PROJECT_OPT = {"archived_at"}
AGENT_OPT = {"retired_at"}
WINDOW_OPT = {"window_id", "window_display_name"}
FOREIGN = {"from_project", "from_project_slug", "from_address"}
# P of §3.3 send_message (the delivered payload)
PAYLOAD = HEAD_KEYS | {"body_md", "to", "cc", "bcc"}
INBOX_ITEM = HEAD_KEYS | {"kind"}
SUMMARY = {"participants", "key_points", "action_items", "total_messages", "open_actions", "done_actions", "mentions"}
SUMMARY_OPT = {"code_references"}
RESERVATION = {"id", "path_pattern", "exclusive", "reason", "expires_ts"}
HOLDER = {"agent", "path_pattern", "exclusive", "expires_ts"}
# docs/compatibility.md > General > Reservations: "Conflicts also carry the holder's
# reservation `id`, and `more_holders`."
HOLDER_OURS = {"id"}
CONFLICT_OURS = {"more_holders"}
LINK = {"from", "from_project", "to", "to_project", "status", "expires_ts"}
LINK_OPT = {"notification_message", "notification_error"}
SUMMARY_ROW = {
    "summary_text",
    "start_ts",
    "end_ts",
    "source_message_count",
    "source_thread_ids",
    "llm_model",
    "cost_usd",
    "created_ts",
}
# docs/compatibility.md > Contacts and cross-project mail: "`send_message` adds `queued` and
# `skipped` when there are any."
SEND_OURS = {"queued", "skipped"}


def keys(
    result: dict[str, Any], required: Iterable[str], optional: Iterable[str] = (), ours: Iterable[str] = ()
) -> None:
    required, allowed = set(required), set(required) | set(optional) | set(ours)
    assert isinstance(result, dict), result
    missing, extra = required - result.keys(), result.keys() - allowed
    assert not missing and not extra, f"missing {sorted(missing)}, unexpected {sorted(extra)}: {result}"


def each(items: list[dict[str, Any]], required: Iterable[str], optional: Iterable[str] = (), ours=()) -> None:
    assert items, "expected at least one item"
    for item in items:
        keys(item, required, optional, ours)


def first(result: dict[str, Any]) -> dict[str, Any]:
    return result["deliveries"][0]["payload"]


async def call(tools: Tools, tool: str, **args: Any) -> Any:
    project = {} if tool in ("health_check", "uninstall_precommit_guard") else {"project_key": PROJECT}
    return await tools.call(tool, **{**project, **args})


# -- §3.1 infrastructure -------------------------------------------------------------------------
async def test_infrastructure_results(tools: Tools, trio: dict[str, Any], tmp_path: Path) -> None:
    # docs/compatibility.md > General > "Extra keys": health_check adds `redis`, `agent_auth`
    # and `persistence`.
    keys(await call(tools, "health_check"), {"status", "environment", "http_host", "http_port", "database_url"},
         ours={"redis", "agent_auth", "persistence"})  # fmt: skip
    keys(await tools.project(), PROJECT_KEYS, PROJECT_OPT)
    repo = tmp_path / "code"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    await tools.project(str(repo))  # the guard writes only into its project's repository
    guarded = {"project_key": str(repo), "code_repo_path": str(repo)}
    keys(await call(tools, "install_precommit_guard", **guarded), {"hook"})
    keys(await call(tools, "uninstall_precommit_guard", code_repo_path=str(repo)), {"removed"})
    archived = await call(tools, "archive_project")
    keys(archived, {"status", "project_key", "slug"})
    keys(await tools.project(), PROJECT_KEYS | PROJECT_OPT)
    keys(await call(tools, "unarchive_project"), {"status", "project_key", "slug"})
    await tools.project(OTHER)
    await tools.agent("RedFox", project_key=OTHER)
    deleted = await tools.call("hard_delete_project", project_key=OTHER, confirmation="I UNDERSTAND")
    keys(deleted, {"status", "project_key", "slug", "deleted_counts", "filesystem_errors"})
    keys(deleted["deleted_counts"], {"agents", "messages", "message_recipients", "file_reservations", "agent_links",
                                     "window_identities", "message_summaries", "sibling_suggestions", "product_links",
                                     "project", "archive_files_removed", "archive_dirs_removed"})  # fmt: skip


# -- §3.2 identity -------------------------------------------------------------------------------
async def test_identity_results(tools: Tools, trio: dict[str, Any]) -> None:
    keys(trio["agents"]["BlueLake"], AGENT_KEYS | {"registration_token"}, AGENT_OPT | WINDOW_OPT)
    again = await tools.agent("BlueLake", registration_token=trio["agents"]["BlueLake"]["registration_token"])
    keys(again, AGENT_KEYS | {"registration_token"}, AGENT_OPT | WINDOW_OPT)
    created = await call(tools, "create_agent_identity", program="codex", model="gpt-5", name_hint="RedStone")
    keys(created, AGENT_KEYS | {"registration_token"}, AGENT_OPT | WINDOW_OPT)
    keys(await call(tools, "whois", agent_name="BlueLake"), AGENT_KEYS | {"recent_commits"}, AGENT_OPT)
    unasked = await call(tools, "whois", agent_name="BlueLake", include_recent_commits=False)
    keys(unasked, AGENT_KEYS | {"recent_commits"}, AGENT_OPT)
    status = {"status", "agent_name", "project_key"}
    keys(await call(tools, "retire_agent", agent_name="RedStone"), status)
    keys(await call(tools, "whois", agent_name="RedStone"), AGENT_KEYS | {"recent_commits", "retired_at"})
    keys(await call(tools, "unretire_agent", agent_name="RedStone"), status)
    keys(await call(tools, "deregister_agent", agent_name="RedStone"), status)
    deleted = await call(tools, "hard_delete_agent", agent_name="RedStone", confirmation="I UNDERSTAND")
    keys(deleted, status | {"deleted_counts", "filesystem_errors"})
    keys(deleted["deleted_counts"], {"message_recipients", "sent_message_recipients", "messages_sent",
                                     "file_reservations", "agent_links", "window_identities", "agent",
                                     "archive_files_removed", "archive_dirs_removed"})  # fmt: skip


@pytest.fixture
async def window_tools(backend: str, tmp_path: Path) -> AsyncIterator[Tools]:
    window = "3f2b8c1e-0a4d-4e6f-9b7a-1c2d3e4f5a6b"
    server: FastMCP = build_server(make_settings(backend, tmp_path, MCP_AGENT_MAIL_WINDOW_ID=window))
    try:
        async with Client(server) as client:
            yield Tools(client)
    finally:
        await drop_prefix(server.store)  # type: ignore[attr-defined]


async def test_window_results(window_tools: Tools) -> None:
    tools = window_tools
    await tools.project()
    keys(await tools.agent(), AGENT_KEYS | {"registration_token"} | WINDOW_OPT, AGENT_OPT)
    listing = await call(tools, "list_window_identities")
    keys(listing, {"identities", "count"})
    each(listing["identities"], {"id", "window_uuid", "display_name", "created_ts", "last_active_ts", "expires_ts",
                                 "age_days"})  # fmt: skip
    uuid = listing["identities"][0]["window_uuid"]
    renamed = await call(tools, "rename_window", window_uuid=uuid, new_display_name="CalmRiver")
    keys(renamed, {"id", "window_uuid", "display_name", "old_display_name", "last_active_ts"})
    keys(await call(tools, "expire_window", window_uuid=uuid), {"window_uuid", "display_name", "expired", "expired_at"})


# -- §3.3 messaging ------------------------------------------------------------------------------
async def test_messaging_results(tools: Tools, trio: dict[str, Any]) -> None:
    sent = await tools.send("BlueLake", ["GreenCastle"], cc=["alpha-one"], topic="release", ack_required=True)
    keys(sent, {"deliveries", "count", "verified_sender"}, {"delivery_errors", "attachments"}, SEND_OURS)
    each(sent["deliveries"], {"project", "payload"})
    keys(first(sent), PAYLOAD, FOREIGN | WINDOW_OPT)
    mid = first(sent)["id"]
    broadcast = await tools.call("send_message", project_key=PROJECT, sender_name="GreenCastle", to=[], subject="All",
                                 body_md="hi", broadcast=True)  # fmt: skip
    keys(broadcast, {"deliveries", "count", "verified_sender"}, {"delivery_errors", "attachments"}, SEND_OURS)
    reply = await call(tools, "reply_message", message_id=mid, sender_name="GreenCastle", body_md="ok")
    keys(reply, PAYLOAD | {"thread_id", "reply_to", "deliveries", "count"},
         FOREIGN | WINDOW_OPT | {"delivery_errors", "attachments"})  # fmt: skip
    each(await tools.inbox("GreenCastle"), INBOX_ITEM, FOREIGN)
    each(await tools.inbox("GreenCastle", include_bodies=True), INBOX_ITEM | {"body_md"}, FOREIGN)
    each(await call(tools, "fetch_topic", topic_name="release", agent_name="GreenCastle"), HEAD_KEYS | {"body_md"},
         FOREIGN)  # fmt: skip
    each(await call(tools, "fetch_topic", topic_name="release", agent_name="GreenCastle", include_bodies=False),
         HEAD_KEYS, FOREIGN)  # fmt: skip
    read = await call(tools, "mark_message_read", agent_name="GreenCastle", message_id=mid)
    keys(read, {"message_id", "read", "read_at"})
    acked = await call(tools, "acknowledge_message", agent_name="alpha-one", message_id=mid)
    keys(acked, {"message_id", "acknowledged", "acknowledged_at", "read_at"})
    purge = await call(tools, "purge_old_messages", max_age_days=30)
    keys(purge, {"status", "messages_affected", "cutoff_date", "max_age_days"})
    # wait_for_mail is ours (docs/realtime.md): {messages, cursor, timed_out}
    waited = await call(tools, "wait_for_mail", agent_name="GreenCastle", timeout_seconds=0)
    keys(waited, {"messages", "cursor", "timed_out"})


# -- §3.4 contact --------------------------------------------------------------------------------
async def test_contact_results(tools: Tools, trio: dict[str, Any]) -> None:
    await tools.project(OTHER)
    await tools.agent("RedFox", project_key=OTHER)
    requested = await call(tools, "request_contact", from_agent="BlueLake", to_agent="RedFox", to_project=OTHER)
    keys(requested, LINK, LINK_OPT)
    assert "notification_message" in requested
    keys(requested["notification_message"], PAYLOAD, FOREIGN | WINDOW_OPT)
    responded = await tools.call("respond_contact", project_key=OTHER, to_agent="RedFox",
                                 from_agent=f"project:{trio['project']['slug']}#BlueLake", accept=True)  # fmt: skip
    # docs/compatibility.md > Contacts and cross-project mail: "`respond_contact` adds `delivered_message_ids`"
    keys(responded, {"from", "to", "approved", "expires_ts", "updated"}, ours={"delivered_message_ids"})
    listed = await call(tools, "list_contacts", agent_name="BlueLake")
    each(listed, {"to", "to_project", "status", "is_expired", "allows_messaging", "reason", "updated_ts", "expires_ts"})
    keys(await call(tools, "set_contact_policy", agent_name="alpha-one", policy="contacts_only"), {"agent", "policy"})
    # a message from another project carries the from_* keys
    await tools.send("BlueLake", [f"RedFox@{OTHER}"])
    each(await tools.inbox("RedFox", project_key=OTHER), INBOX_ITEM | FOREIGN)
    fast = await call(tools, "macro_contact_handshake", requester="BlueLake", target="GreenCastle", auto_accept=True,
                      target_registration_token=trio["agents"]["GreenCastle"]["registration_token"])  # fmt: skip
    keys(fast, {"request", "response", "welcome_message"})
    keys(fast["request"], LINK)
    keys(fast["response"], LINK)
    full = await call(tools, "macro_contact_handshake", requester="BlueLake", target="alpha-one", auto_accept=True,
                      welcome_subject="Hi", welcome_body="Welcome",
                      target_registration_token=trio["agents"]["alpha-one"]["registration_token"])  # fmt: skip
    keys(full, {"request", "response", "welcome_message"}, {"response_error", "welcome_error"})
    keys(full["request"], LINK, LINK_OPT)
    keys(full["welcome_message"], {"deliveries", "count", "verified_sender"}, {"delivery_errors", "attachments"},
         SEND_OURS)  # fmt: skip


# -- §3.5 search ---------------------------------------------------------------------------------
async def test_search_results(tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings) -> None:
    await tools.send("BlueLake", ["GreenCastle"], subject="Deploy plan", thread_id="T-1",
                     body_md="- step one\n- [ ] TODO write `src/app.py`\n@GreenCastle please review")  # fmt: skip
    await tools.send("GreenCastle", ["BlueLake"], subject="Re: Deploy", body_md="- [x] done", thread_id="T-1")
    await tools.send("GreenCastle", ["BlueLake"], subject="Other", body_md="NEXT: ship", thread_id="T-2")
    await run_worker(server, settings)
    found = await call(tools, "search_messages", query="deploy", agent_name="BlueLake")
    each(found, {"id", "subject", "importance", "ack_required", "created_ts", "thread_id", "from"}, FOREIGN)
    one = await call(tools, "summarize_thread", thread_id="T-1", include_examples=True, agent_name="BlueLake")
    keys(one, {"thread_id", "summary", "examples"})
    keys(one["summary"], SUMMARY, SUMMARY_OPT)
    each(one["examples"], {"id", "subject", "from", "created_ts"})
    many = await call(tools, "summarize_thread", thread_id="T-1,T-2", agent_name="BlueLake")
    keys(many, {"threads", "aggregate"})
    each(many["threads"], {"thread_id", "summary"})
    keys(many["aggregate"], {"top_mentions", "action_items", "key_points"})
    recent = await call(tools, "summarize_recent", since_hours=1.0)
    keys(recent, SUMMARY_ROW | {"id", "cached"})
    keys(json.loads(recent["summary_text"]), {"participants", "key_points", "action_items", "total_messages",
                                              "total_threads", "open_actions", "done_actions"},
         {"truncated", "truncation_note"})  # fmt: skip
    each(await call(tools, "fetch_summary"), SUMMARY_ROW | {"id"})


# -- §3.6 file_reservations ----------------------------------------------------------------------
@pytest.fixture
async def quick(backend: str, tmp_path: Path) -> AsyncIterator[Tools]:
    """Holders go stale at once, reservations may live one second."""
    settings = make_settings(backend, tmp_path, FILE_RESERVATION_MIN_TTL_SECONDS=1,
                             FILE_RESERVATION_INACTIVITY_SECONDS=0, FILE_RESERVATION_ACTIVITY_GRACE_SECONDS=0)  # fmt: skip
    server = build_server(settings)
    try:
        async with Client(server) as client:
            tools = Tools(client)
            await tools.project()
            for name in ("BlueLake", "GreenCastle"):
                await tools.agent(name)
            yield tools
    finally:
        await drop_prefix(server.store)  # type: ignore[attr-defined]


async def test_reservation_results(quick: Tools) -> None:
    tools = quick
    held = await call(tools, "file_reservation_paths", agent_name="BlueLake", paths=["src/app.py", "x.py"])
    keys(held, {"granted", "conflicts"})
    each(held["granted"], RESERVATION)
    clash = await call(tools, "file_reservation_paths", agent_name="GreenCastle", paths=["src/**"])
    each(clash["conflicts"], {"path", "holders"}, ours=CONFLICT_OURS)
    each(clash["conflicts"][0]["holders"], HOLDER, ours=HOLDER_OURS)
    renewed = await call(tools, "renew_file_reservations", agent_name="BlueLake", paths=["x.py"])
    keys(renewed, {"renewed", "file_reservations"})
    each(renewed["file_reservations"], {"id", "path_pattern", "old_expires_ts", "new_expires_ts"})
    keys(await call(tools, "release_file_reservations", agent_name="BlueLake", paths=["x.py"]),
         {"released", "released_at"})  # fmt: skip
    rid = held["granted"][0]["id"]
    forced = await call(tools, "force_release_file_reservation", agent_name="GreenCastle", file_reservation_id=rid)
    keys(forced, {"released", "released_at", "reservation"})
    keys(forced["reservation"], {"id", "agent", "path_pattern", "exclusive", "reason", "created_ts", "expires_ts",
                                 "released_ts", "stale_reasons", "last_agent_activity_ts", "last_mail_activity_ts",
                                 "last_filesystem_activity_ts", "last_git_activity_ts", "notified"},
         {"notification_error"})  # fmt: skip
    again = await call(tools, "force_release_file_reservation", agent_name="GreenCastle", file_reservation_id=rid)
    keys(again, {"released", "released_at", "already_released"})
    short = await call(tools, "file_reservation_paths", agent_name="BlueLake", paths=["y.py"], ttl_seconds=1)
    await asyncio.sleep(1.05)
    expired = await call(tools, "force_release_file_reservation", agent_name="GreenCastle",
                         file_reservation_id=short["granted"][0]["id"])  # fmt: skip
    keys(expired, {"released", "released_at", "already_released", "expired"})


# -- §3.7 workflow_macros ------------------------------------------------------------------------
async def test_macro_results(tools: Tools, trio: dict[str, Any]) -> None:
    await tools.send("GreenCastle", ["BlueLake"], subject="Plan", body_md="- step", thread_id="T-9")
    token = trio["agents"]["BlueLake"]["registration_token"]
    started = await tools.call("macro_start_session", human_key=PROJECT, program="codex", model="gpt-5",
                               agent_name="BlueLake", registration_token=token,
                               file_reservation_paths=["docs/**"])  # fmt: skip
    keys(started, {"project", "agent", "registration_token", "file_reservations", "inbox"})
    keys(started["project"], PROJECT_KEYS, PROJECT_OPT)
    keys(started["agent"], AGENT_KEYS, AGENT_OPT)
    keys(started["file_reservations"], {"granted", "conflicts"})
    each(started["inbox"], INBOX_ITEM, FOREIGN)
    prepared = await call(tools, "macro_prepare_thread", thread_id="T-9", program="codex", model="gpt-5",
                          agent_name="BlueLake", registration_token=token)  # fmt: skip
    keys(prepared, {"project", "agent", "registration_token", "thread", "inbox"})
    keys(prepared["thread"], {"thread_id", "summary", "examples", "total_messages"})
    keys(prepared["thread"]["summary"], SUMMARY, SUMMARY_OPT)
    each(prepared["inbox"], INBOX_ITEM, FOREIGN)
    cycle = await call(tools, "macro_file_reservation_cycle", agent_name="BlueLake", paths=["lib/**"],
                       auto_release=True)  # fmt: skip
    keys(cycle, {"file_reservations", "released"})
    keys(cycle["file_reservations"], {"granted", "conflicts"})
    keys(cycle["released"], {"released", "released_at"})
