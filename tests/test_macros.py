"""Workflow macros (§3.7): macro_start_session, macro_prepare_thread, macro_file_reservation_cycle,
on fakeredis and a real Redis: exact results and the same errors as the single tools (profiles and
required auth: test_macros_auth.py)."""

from __future__ import annotations

import json
from typing import Any

from fastmcp import FastMCP
from helpers import PROFILE, PROJECT, SLUG, Tools, live_reservations, snapshot
from persist_helpers import run_worker
from shapes import AGENT_KEYS, PROJECT_KEYS

from broker.config import Settings
from broker.identity.names import is_generated_shape


async def profile(tools: Tools, name: str, token: str | None = None) -> dict[str, Any]:
    """The agent's profile as whois shows it, without its (empty, not asked for) recent_commits."""
    found = await tools.call(
        "whois", project_key=PROJECT, agent_name=name, registration_token=token, include_recent_commits=False
    )
    assert found.pop("recent_commits") == []
    return found


# -- macro_start_session ----------------------------------------------------------------------
async def test_start_session_for_a_new_agent_creates_everything(tools: Tools) -> None:
    result = await tools.call(
        "macro_start_session",
        human_key=PROJECT + "/",
        task_description="port the parser",
        file_reservation_paths=["src/parser.py", "docs/"],
        **PROFILE,
    )
    assert set(result) == {"project", "agent", "registration_token", "file_reservations", "inbox"}
    assert set(result["project"]) == PROJECT_KEYS
    assert result["project"] == await tools.project()  # created, with the normalised path
    assert result["project"]["human_key"] == PROJECT

    agent = result["agent"]
    assert set(agent) == AGENT_KEYS and is_generated_shape(agent["name"])
    assert (agent["program"], agent["model"], agent["task_description"]) == ("claude-code", "opus-4", "port the parser")
    token = result["registration_token"]
    assert isinstance(token, str) and len(token) == 43
    assert await profile(tools, agent["name"], token) == agent  # the token is the agent's

    reserved = result["file_reservations"]
    assert reserved["conflicts"] == []
    assert [(g["path_pattern"], g["exclusive"], g["reason"]) for g in reserved["granted"]] == [
        ("src/parser.py", True, "macro-session"),
        ("docs/**", True, "macro-session"),  # a directory is stored as its '**' pattern
    ]
    assert set(reserved["granted"][0]) == {"id", "path_pattern", "exclusive", "reason", "expires_ts"}
    assert await live_reservations(tools) == [(agent["name"], "src/parser.py"), (agent["name"], "docs/**")]
    assert result["inbox"] == []


async def test_start_session_of_an_existing_agent_shows_its_mail_and_conflicts(tools: Tools) -> None:
    await tools.project()
    blue = await tools.agent("BlueLake", task_description="old task")
    await tools.agent("GreenCastle")
    for n in range(3):
        await tools.send("GreenCastle", ["BlueLake"], subject=f"note {n}", body_md=f"body {n}")
    held = await tools.call(
        "file_reservation_paths", project_key=PROJECT, agent_name="GreenCastle", paths=["src/**"], reason="refactor"
    )

    result = await tools.call(
        "macro_start_session",
        human_key=PROJECT,
        program="codex",
        model="gpt-5",
        task_description="new task",
        agent_name="BlueLake",
        registration_token=blue["registration_token"],
        file_reservation_paths=["src/app.py"],
        file_reservation_reason="fix the bug",
        file_reservation_ttl_seconds=600,
        inbox_limit=2,
    )
    agent = result["agent"]
    assert agent["id"] == blue["id"] and agent["inception_ts"] == blue["inception_ts"]
    assert (agent["program"], agent["model"], agent["task_description"]) == ("codex", "gpt-5", "new task")
    assert result["registration_token"] == blue["registration_token"]  # proven, so echoed

    granted = result["file_reservations"]["granted"]
    assert [(g["path_pattern"], g["reason"]) for g in granted] == [("src/app.py", "fix the bug")]
    assert result["file_reservations"]["conflicts"] == [
        {
            "path": "src/app.py",
            "holders": [
                {
                    "id": held["granted"][0]["id"],
                    "agent": "GreenCastle",
                    "path_pattern": "src/**",
                    "exclusive": True,
                    "expires_ts": held["granted"][0]["expires_ts"],
                }
            ],
            "more_holders": False,
        }
    ]

    # the newest two messages, as fetch_inbox lists them, without bodies
    assert [item["subject"] for item in result["inbox"]] == ["note 2", "note 1"]
    assert result["inbox"] == await tools.inbox("BlueLake", limit=2)
    assert all("body_md" not in item for item in result["inbox"])


async def test_start_session_without_paths_reserves_nothing(tools: Tools) -> None:
    result = await tools.call("macro_start_session", human_key=PROJECT, agent_name="BlueLake", **PROFILE)
    assert result["file_reservations"] == {"granted": [], "conflicts": []}
    assert result["agent"]["name"] == "BlueLake"
    assert await live_reservations(tools) == []


async def test_start_session_rejects_bad_input_before_writing(tools: Tools, server: FastMCP) -> None:
    store = server.store  # type: ignore[attr-defined]
    base: dict[str, Any] = {"human_key": PROJECT, **PROFILE}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"human_key": "relative/repo"}, "INVALID_ARGUMENT:", "human_key must be an absolute directory path"),
        ({"human_key": " "}, "INVALID_ARGUMENT:", "human_key is empty"),
        ({"program": " "}, "EMPTY_PROGRAM:", "program is empty"),
        ({"model": ""}, "EMPTY_MODEL:", "model is empty"),
        ({"task_description": "x" * 3000}, "INVALID_ARGUMENT:", "task_description"),
        ({"agent_name": "YOUR_AGENT_NAME"}, "CONFIGURATION_ERROR:", "placeholder"),
        ({"file_reservation_paths": []}, "EMPTY_PATHS:", "omit it to reserve nothing"),
        ({"file_reservation_paths": ["../outside.py"]}, "INVALID_PATH_PATTERN:", ""),
        ({"file_reservation_paths": [f"f{i}.py" for i in range(101)]}, "TOO_MANY_PATHS:", "limit is 100"),
        ({"file_reservation_paths": ["a.py"], "file_reservation_ttl_seconds": 31 * 86400}, "INVALID_ARGUMENT:", "ttl"),
        ({"file_reservation_paths": ["a.py"], "file_reservation_reason": "r" * 600}, "INVALID_ARGUMENT:", "reason"),
        ({"inbox_limit": 0}, "INVALID_LIMIT:", "limit must be between 1 and 1000"),
        ({"registration_token": "t" * 300}, "AUTHENTICATION_FAILED:", "registration tokens have 43"),
        ({"format": "yaml"}, "INVALID_ARGUMENT:", "format"),
    ]
    for change, code, words in cases:
        before = await snapshot(store)
        error = await tools.error("macro_start_session", **{**base, **change})
        assert error.startswith(code), (change, error)
        assert words in error, (change, error)
        assert await snapshot(store) == before, change
    assert await store.client().exists(store.keys.project(SLUG)) == 0


async def test_start_session_of_an_existing_agent_checks_its_token(tools: Tools, server: FastMCP) -> None:
    """Open auth: a token is optional for a known name, but a wrong one is refused before the
    agent's profile, reservations or inbox are touched."""
    await tools.project()
    blue = await tools.agent("BlueLake")
    green = await tools.agent("GreenCastle")
    store = server.store  # type: ignore[attr-defined]
    before = await snapshot(store)
    error = await tools.error(
        "macro_start_session",
        human_key=PROJECT,
        agent_name="BlueLake",
        registration_token=green["registration_token"],
        file_reservation_paths=["src/"],
        program="evil",
        model="m",
    )
    assert error.startswith("AUTHENTICATION_FAILED:") and "'BlueLake'" in error
    assert await snapshot(store) == before
    # without a token (open auth) it re-registers but does not reveal the token
    again = await tools.call("macro_start_session", human_key=PROJECT, agent_name="BlueLake", **PROFILE)
    assert again["registration_token"] is None and again["agent"]["id"] == blue["id"]


# -- macro_prepare_thread ---------------------------------------------------------------------
async def _thread_mail(tools: Tools, server: FastMCP, settings: Settings) -> dict[str, int]:
    sent = {
        "plan": await tools.send(
            "BlueLake",
            ["GreenCastle"],
            subject="Plan for FEAT-1",
            body_md="- step one\n- [ ] TODO write `src/app.py`\n@GreenCastle please review",
            thread_id="FEAT-1",
        ),
        "reply": await tools.send(
            "GreenCastle", ["BlueLake"], subject="Re: Plan", body_md="- [x] done\nNEXT: ship it", thread_id="FEAT-1"
        ),
        "private": await tools.send(
            "alpha-one", ["GreenCastle"], subject="secret", body_md="- hidden point", thread_id="SECRET"
        ),
    }
    await run_worker(server, settings)  # summaries read the index
    return {k: v["deliveries"][0]["payload"]["id"] for k, v in sent.items()}


async def test_prepare_thread_summarizes_the_thread_and_lists_the_inbox(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    ids = await _thread_mail(tools, server, settings)
    blue = trio["agents"]["BlueLake"]
    result = await tools.call(
        "macro_prepare_thread",
        project_key=PROJECT,
        thread_id="FEAT-1",
        agent_name="BlueLake",
        registration_token=blue["registration_token"],
        task_description="review FEAT-1",
        **PROFILE,
    )
    assert set(result) == {"project", "agent", "registration_token", "thread", "inbox"}
    assert result["project"] == trio["project"]
    assert set(result["agent"]) == AGENT_KEYS
    assert result["agent"]["id"] == blue["id"] and result["agent"]["task_description"] == "review FEAT-1"
    assert result["registration_token"] == blue["registration_token"]

    thread = result["thread"]
    assert set(thread) == {"thread_id", "summary", "examples", "total_messages"}
    assert thread["thread_id"] == "FEAT-1" and thread["total_messages"] == 2
    assert thread["summary"] == {
        "participants": ["BlueLake", "GreenCastle"],
        "key_points": ["step one", "TODO write `src/app.py`", "done"],
        "action_items": ["- [ ] TODO write `src/app.py`", "NEXT: ship it"],
        "total_messages": 2,
        "open_actions": 1,
        "done_actions": 1,
        "mentions": [{"name": "GreenCastle", "count": 1}],
        "code_references": ["src/app.py"],
    }
    assert [(e["id"], e["subject"], e["from"]) for e in thread["examples"]] == [
        (ids["plan"], "Plan for FEAT-1", "BlueLake"),
        (ids["reply"], "Re: Plan", "GreenCastle"),
    ]
    alone = await tools.call(
        "summarize_thread", project_key=PROJECT, thread_id="FEAT-1", agent_name="BlueLake", include_examples=True
    )
    assert {k: thread[k] for k in ("thread_id", "summary", "examples")} == alone

    assert [item["id"] for item in result["inbox"]] == [ids["reply"]]
    assert result["inbox"] == await tools.inbox("BlueLake", limit=10)

    with_bodies = await tools.call(
        "macro_prepare_thread",
        project_key=PROJECT,
        thread_id="FEAT-1",
        agent_name="BlueLake",
        include_examples=False,
        include_inbox_bodies=True,
        **PROFILE,
    )
    assert with_bodies["thread"]["examples"] == []
    assert [item["body_md"] for item in with_bodies["inbox"]] == ["- [x] done\nNEXT: ship it"]
    assert with_bodies["registration_token"] is None  # no token passed under open auth: not revealed


async def test_prepare_thread_shows_only_what_the_agent_may_see(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    ids = await _thread_mail(tools, server, settings)
    args = {"project_key": PROJECT, "thread_id": "SECRET", "register_if_missing": False, **PROFILE}
    blue = await tools.call("macro_prepare_thread", agent_name="BlueLake", **args)
    assert blue["thread"]["total_messages"] == 0 and blue["thread"]["examples"] == []
    assert blue["thread"]["summary"]["key_points"] == []
    green = await tools.call("macro_prepare_thread", agent_name="GreenCastle", **args)
    assert green["thread"]["total_messages"] == 1
    assert green["thread"]["summary"]["key_points"] == ["hidden point"]
    # a message's id is its thread's id too, under the same rule
    by_id = await tools.call(
        "macro_prepare_thread", agent_name="BlueLake", **{**args, "thread_id": str(ids["private"])}
    )
    assert by_id["thread"]["total_messages"] == 0


async def test_prepare_thread_registers_a_missing_agent(tools: Tools, trio: dict[str, Any]) -> None:
    result = await tools.call(
        "macro_prepare_thread", project_key=PROJECT, thread_id="FEAT-9", agent_name="RedFox", **PROFILE
    )
    assert result["agent"]["name"] == "RedFox" and len(result["registration_token"]) == 43
    assert await profile(tools, "RedFox", result["registration_token"]) == result["agent"]
    assert result["thread"] == {
        "thread_id": "FEAT-9",
        "summary": {
            "participants": [],
            "key_points": [],
            "action_items": [],
            "total_messages": 0,
            "open_actions": 0,
            "done_actions": 0,
            "mentions": [],
        },
        "examples": [],
        "total_messages": 0,
    }
    assert result["inbox"] == []
    generated = await tools.call("macro_prepare_thread", project_key=PROJECT, thread_id="FEAT-9", **PROFILE)
    assert is_generated_shape(generated["agent"]["name"]) and generated["agent"]["name"] != "RedFox"


async def test_prepare_thread_without_registering_needs_an_existing_agent(
    tools: Tools, trio: dict[str, Any], server: FastMCP
) -> None:
    store = server.store  # type: ignore[attr-defined]
    args = {"project_key": PROJECT, "thread_id": "FEAT-1", "register_if_missing": False, **PROFILE}
    before = await snapshot(store)
    missing_name = await tools.error("macro_prepare_thread", **args)
    assert missing_name.startswith("INVALID_ARGUMENT:") and "agent_name" in missing_name
    assert "register_if_missing" in missing_name

    unknown = await tools.error("macro_prepare_thread", agent_name="BlueLaek", **args)
    whois = await tools.error("whois", project_key=PROJECT, agent_name="BlueLaek")
    assert unknown == whois and unknown.startswith("NOT_FOUND:") and "Did you mean: 'BlueLake'" in unknown
    assert await snapshot(store) == before  # nothing registered

    # program and model are not used when nothing is registered
    found = await tools.call("macro_prepare_thread", agent_name="bluelake", **{**args, "program": "", "model": ""})
    assert found["agent"] == await profile(tools, "BlueLake")
    assert found["agent"]["program"] == "claude-code"  # the profile was not rewritten


async def test_prepare_thread_rejects_bad_input(tools: Tools, trio: dict[str, Any], server: FastMCP) -> None:
    store = server.store  # type: ignore[attr-defined]
    base: dict[str, Any] = {"project_key": PROJECT, "thread_id": "FEAT-1", "agent_name": "BlueLake", **PROFILE}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"thread_id": " "}, "INVALID_ARGUMENT:"),
        ({"thread_id": "FEAT-1,FEAT-2"}, "INVALID_ARGUMENT:"),
        ({"thread_id": "x" * 129}, "INVALID_THREAD_ID:"),
        ({"project_key": "relative/repo"}, "INVALID_ARGUMENT:"),
        ({"project_key": "/no/such/project"}, "NOT_FOUND:"),
        ({"program": ""}, "EMPTY_PROGRAM:"),
        ({"agent_name": "YOUR_AGENT_NAME"}, "CONFIGURATION_ERROR:"),
        ({"inbox_limit": 1001}, "INVALID_LIMIT:"),
        ({"registration_token": trio["agents"]["GreenCastle"]["registration_token"]}, "AUTHENTICATION_FAILED:"),
    ]
    for change, code in cases:
        before = await snapshot(store)
        error = await tools.error("macro_prepare_thread", **{**base, **change})
        assert error.startswith(code), (change, error)
        assert await snapshot(store) == before, change
    missing = await tools.error("macro_prepare_thread", **{**base, "project_key": "/no/such/project"})
    assert missing == await tools.error("whois", project_key="/no/such/project", agent_name="BlueLake")


# -- macro_file_reservation_cycle -------------------------------------------------------------
async def test_reservation_cycle_grants_and_reports_conflicts(tools: Tools, trio: dict[str, Any]) -> None:
    await tools.call("file_reservation_paths", project_key=PROJECT, agent_name="GreenCastle", paths=["src/"])
    result = await tools.call(
        "macro_file_reservation_cycle",
        project_key=PROJECT,
        agent_name="BlueLake",
        paths=["src/app.py", "README.md"],
        ttl_seconds=900,
    )
    assert set(result) == {"file_reservations", "released"}
    assert result["released"] is None
    granted = result["file_reservations"]["granted"]
    assert [(g["path_pattern"], g["exclusive"], g["reason"]) for g in granted] == [
        ("src/app.py", True, "macro-file_reservation"),
        ("README.md", True, "macro-file_reservation"),
    ]
    conflicts = result["file_reservations"]["conflicts"]
    assert [(c["path"], [h["agent"] for h in c["holders"]]) for c in conflicts] == [("src/app.py", ["GreenCastle"])]
    assert await live_reservations(tools) == [
        ("GreenCastle", "src/**"),
        ("BlueLake", "src/app.py"),
        ("BlueLake", "README.md"),
    ]
    shared = await tools.call(
        "macro_file_reservation_cycle",
        project_key=PROJECT,
        agent_name="alpha-one",
        paths=["docs/**"],
        exclusive=False,
        reason="reading",
    )
    assert [(g["exclusive"], g["reason"]) for g in shared["file_reservations"]["granted"]] == [(False, "reading")]


async def test_reservation_cycle_with_auto_release_leaves_nothing_held(tools: Tools, trio: dict[str, Any]) -> None:
    await tools.call("file_reservation_paths", project_key=PROJECT, agent_name="BlueLake", paths=["keep/"])
    await tools.call("file_reservation_paths", project_key=PROJECT, agent_name="GreenCastle", paths=["lib/"])
    result = await tools.call(
        "macro_file_reservation_cycle",
        project_key=PROJECT,
        agent_name="BlueLake",
        paths=["lib/a.py", "lib/b.py"],
        auto_release=True,
    )
    assert len(result["file_reservations"]["granted"]) == 2
    assert [c["path"] for c in result["file_reservations"]["conflicts"]] == ["lib/a.py", "lib/b.py"]
    released = result["released"]
    assert set(released) == {"released", "released_at"} and released["released"] == 2
    # only the reservations just granted were released: BlueLake still holds keep/
    assert await live_reservations(tools) == [("BlueLake", "keep/**"), ("GreenCastle", "lib/**")]
    ended = json.loads(
        (await tools.client.read_resource(f"resource://file_reservations/{SLUG}?active_only=false"))[0].text
    )
    granted_ids = {g["id"] for g in result["file_reservations"]["granted"]}
    assert {r["id"]: r["released_ts"] for r in ended if r["id"] in granted_ids} == dict.fromkeys(
        granted_ids, released["released_at"]
    )


async def test_reservation_cycle_rejects_what_file_reservation_paths_rejects(
    tools: Tools, trio: dict[str, Any]
) -> None:
    base: dict[str, Any] = {"project_key": PROJECT, "agent_name": "BlueLake", "paths": ["src/"]}
    for change in (
        {"paths": []},
        {"paths": ["../x"]},
        {"ttl_seconds": 10**9},
        {"reason": "r" * 600},
        {"agent_name": "Nobody-1"},
        {"project_key": "/no/such/project"},
        {"registration_token": trio["agents"]["GreenCastle"]["registration_token"]},
    ):
        macro = await tools.error("macro_file_reservation_cycle", **{**base, **change})
        single = await tools.error("file_reservation_paths", **{**base, **change})
        assert macro == single, change
    assert await live_reservations(tools) == []
