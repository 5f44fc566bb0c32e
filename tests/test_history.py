"""History tools on the index: search_messages, summarize_thread, summarize_recent, fetch_summary,
each on the SQLite and on the PostgreSQL index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastmcp import FastMCP
from helpers import PROJECT, Tools
from index_helpers import on_index_backend
from persist_helpers import run_worker

from broker.config import Settings
from broker.history.search import like_tokens, sanitize_fts_query


@pytest.fixture
def settings(settings: Settings, index_backend: str, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Every test here on the SQLite and on the PostgreSQL index."""
    with on_index_backend(settings, index_backend, request) as on_backend:
        yield on_backend


async def _mail(tools: Tools, server: FastMCP, settings: Settings) -> dict[str, int]:
    sent = {
        "plan": await tools.send(
            "BlueLake",
            ["GreenCastle"],
            subject="Deploy POL-358 plan",
            body_md="- step one\n- [ ] TODO write `src/app.py`\n@GreenCastle please review",
            thread_id="FEAT-1",
        ),
        "reply": await tools.send(
            "GreenCastle", ["BlueLake"], subject="Re: Deploy", body_md="- [x] done\nNEXT: ship it", thread_id="FEAT-1"
        ),
        "private": await tools.send("alpha-one", ["GreenCastle"], subject="secret plan", body_md="not for BlueLake"),
    }
    await run_worker(server, settings)
    return {k: v["deliveries"][0]["payload"]["id"] for k, v in sent.items()}


async def search(tools: Tools, query: str, agent: str = "BlueLake", **extra: Any) -> list[int]:
    found = await tools.call("search_messages", project_key=PROJECT, query=query, agent_name=agent, **extra)
    return [item["id"] for item in found]


async def test_search_finds_only_what_the_viewer_may_see(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    ids = await _mail(tools, server, settings)
    assert sorted(await search(tools, "deploy")) == sorted([ids["plan"], ids["reply"]])
    assert await search(tools, "plan") == [ids["plan"]]  # "secret plan" is not BlueLake's
    assert sorted(await search(tools, "plan", agent="GreenCastle")) == sorted([ids["plan"], ids["private"]])
    assert await search(tools, "POL-358") == [ids["plan"]]  # hyphenated tokens are quoted
    assert await search(tools, "subject:deploy AND body:step") == [ids["plan"]]
    assert await search(tools, "revi*") == [ids["plan"]]
    assert await search(tools, '"secret plan"') == []
    assert await search(tools, "*") == [] and await search(tools, "AND") == []
    assert await search(tools, "review (") == [ids["plan"]]  # not FTS5 syntax: LIKE fallback
    found = await tools.call("search_messages", project_key=PROJECT, query="deploy plan", agent_name="BlueLake")
    assert found == [
        {
            "id": ids["plan"],
            "subject": "Deploy POL-358 plan",
            "importance": "normal",
            "ack_required": 0,
            "created_ts": found[0]["created_ts"],
            "thread_id": "FEAT-1",
            "from": "BlueLake",
        }
    ]


async def test_search_lags_the_send_until_the_batch_is_persisted(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    await tools.send("BlueLake", ["GreenCastle"], subject="fresh news")
    assert await search(tools, "fresh") == []
    await run_worker(server, settings)
    assert len(await search(tools, "fresh")) == 1


async def test_search_rejects_bad_input(tools: Tools, trio: dict[str, Any]) -> None:
    assert (
        await tools.error("search_messages", project_key=PROJECT, query="x", agent_name="BlueLake", limit=0)
    ).startswith("INVALID_LIMIT:")
    assert (await tools.error("search_messages", project_key=PROJECT, query="x")).startswith("AUTHENTICATION_REQUIRED:")
    assert (await tools.error("search_messages", project_key=PROJECT, query="x", agent_name="Nobody-1")).startswith(
        "NOT_FOUND:"
    )
    text = await tools.error("search_messages", project_key=PROJECT, query="x" * 2000, agent_name="BlueLake")
    assert text.startswith("INVALID_ARGUMENT:")


async def test_summarize_one_and_several_threads(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    ids = await _mail(tools, server, settings)
    one = await tools.call(
        "summarize_thread", project_key=PROJECT, thread_id="FEAT-1", agent_name="BlueLake", include_examples=True
    )
    assert one["thread_id"] == "FEAT-1"
    assert one["summary"] == {
        "participants": ["BlueLake", "GreenCastle"],
        "key_points": ["step one", "TODO write `src/app.py`", "done"],
        "action_items": ["- [ ] TODO write `src/app.py`", "NEXT: ship it"],
        "total_messages": 2,
        "open_actions": 1,
        "done_actions": 1,
        "mentions": [{"name": "GreenCastle", "count": 1}],
        "code_references": ["src/app.py"],
    }
    assert [e["id"] for e in one["examples"]] == [ids["plan"], ids["reply"]]

    several = await tools.call(
        "summarize_thread", project_key=PROJECT, thread_id=f"FEAT-1, {ids['private']}", agent_name="GreenCastle"
    )
    assert [t["thread_id"] for t in several["threads"]] == ["FEAT-1", str(ids["private"])]
    assert several["threads"][1]["summary"]["total_messages"] == 1
    assert several["aggregate"]["top_mentions"] == [{"name": "GreenCastle", "count": 1}]
    # BlueLake does not see alpha-one's message, even by its id
    hidden = await tools.call(
        "summarize_thread", project_key=PROJECT, thread_id=str(ids["private"]), agent_name="BlueLake"
    )
    assert hidden["summary"]["total_messages"] == 0
    assert (
        await tools.error("summarize_thread", project_key=PROJECT, thread_id=" , ", agent_name="BlueLake")
    ).startswith("INVALID_ARGUMENT:")


async def test_summarize_recent_is_stored_and_fetched(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    assert (await tools.call("summarize_recent", project_key=PROJECT))["id"] is None  # no activity yet
    await _mail(tools, server, settings)
    first = await tools.call("summarize_recent", project_key=PROJECT, since_hours=2)
    assert first["cached"] is False and first["source_message_count"] == 3
    text = json.loads(first["summary_text"])
    assert text["participants"] == ["BlueLake", "GreenCastle", "alpha-one"]
    assert (text["total_messages"], text["total_threads"], text["open_actions"]) == (3, 2, 1)
    again = await tools.call("summarize_recent", project_key=PROJECT, since_hours=2)
    assert again["cached"] is True and again["id"] == first["id"]
    stored = await tools.call("fetch_summary", project_key=PROJECT)
    assert [s["id"] for s in stored] == [first["id"]]
    assert stored[0]["source_thread_ids"] == first["source_thread_ids"]
    assert (await tools.error("fetch_summary", project_key="/nowhere")).startswith("NOT_FOUND:")
    assert (await tools.error("summarize_recent", project_key=PROJECT, since_hours=-1)).startswith("INVALID_ARGUMENT:")


def test_query_sanitising_follows_the_reference() -> None:
    assert sanitize_fts_query("  *deploy   plan * ") == "deploy plan"
    assert sanitize_fts_query("fix POL-358 now") == 'fix "POL-358" now'
    assert sanitize_fts_query('"a-b c"') == '"a-b c"'
    assert sanitize_fts_query("...") == "" and sanitize_fts_query(" or ") == ""
    assert like_tokens("a AND src/app.py x y z w v u") == ["src/app.py"]


async def test_summarize_thread_takes_long_and_non_ascii_digit_thread_ids(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    # A valid thread id of 20 digits (a timestamp-like ticket number) is past SQLite's integers.
    long_id = "20261127225959123456"
    await tools.send("BlueLake", ["GreenCastle"], subject="nightly", body_md="- ran", thread_id=long_id)
    await run_worker(server, settings)
    one = await tools.call("summarize_thread", project_key=PROJECT, thread_id=long_id, agent_name="BlueLake")
    assert one["summary"]["total_messages"] == 1 and one["summary"]["key_points"] == ["ran"]
    several = await tools.call(
        "summarize_thread", project_key=PROJECT, thread_id=f"{long_id},²,9{'9' * 30}", agent_name="BlueLake"
    )
    assert [t["summary"]["total_messages"] for t in several["threads"]] == [1, 0, 0]


async def test_search_survives_hostile_queries(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    ids = await _mail(tools, server, settings)
    hostile = ['"', '"plan', "NEAR(", "NEAR(plan deploy", "-", "-plan", "subject:", "message_id:1", "{subject}:",
               "^", "plan AND", "OR plan", ")", "'", "\\", "%", "_", "x" * 1000, " ".join(["pl*"] * 250), "::"]  # fmt: skip
    for query in hostile:
        found = await search(tools, query)
        assert set(found) <= {ids["plan"], ids["reply"]}, query  # never alpha-one's private message
    assert await search(tools, '"plan') == [ids["plan"]]  # unbalanced quote: LIKE fallback
    assert await search(tools, "%") == [] and await search(tools, "_") == []  # no LIKE wildcards
