"""search_messages on both index engines: the same mail, sent through the tools and persisted by
the worker once into SQLite and once into a throwaway PostgreSQL database, answers the same
searches with the same messages (words, phrases, prefixes, AND/OR/NOT, column filters, NEAR,
hyphenated terms, the LIKE fallback, no match, other agents' mail, limit). The differences the
engines keep are asserted too, as docs/compatibility.md ("Search on PostgreSQL") states them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from helpers import PROJECT, Tools, drop_prefix, make_settings
from persist_helpers import run_worker
from pg_helpers import throwaway_database

from broker.server import build_server

MAIL = {  # name: (sender, recipient, subject, body)
    "plan": ("BlueLake", "GreenCastle", "Deploy POL-358 plan",
             "- step one\n- [ ] TODO write `src/app.py`\n@GreenCastle please review"),
    "reply": ("GreenCastle", "BlueLake", "Re: Deploy", "- [x] done\nNEXT: ship it"),
    "private": ("alpha-one", "GreenCastle", "secret plan", "not for BlueLake"),
    "release": ("BlueLake", "GreenCastle", "Release v1.2.3 notes",
                "The build at build/out/app.tar.gz passed; see https://ci.example.org/run/42?x=1, ops@example.com"),
    "rollout": ("GreenCastle", "BlueLake", "Rollout window",
                "rollout rollout: deploy the plan after review of the deploy checklist"),
    "migration": ("BlueLake", "GreenCastle", "Database migration",
                  "we migrate the index first then copy the rows to postgres"),
    "notes": ("alpha-one", "BlueLake", "Shared review notes", "review the plan with care"),
    "unicode": ("GreenCastle", "BlueLake", "Café menu", "naïve 東京 under_score snake_case_name"),
}  # fmt: skip

# (query, viewer): what BlueLake (or GreenCastle) finds, by message name, on both engines
SEARCHES = [
    ("deploy", "BlueLake", {"plan", "reply", "rollout"}),
    ("plan", "BlueLake", {"plan", "rollout", "notes"}),
    ("plan", "GreenCastle", {"plan", "private", "rollout"}),
    ("secret", "BlueLake", set()),  # alpha-one's mail to GreenCastle is not BlueLake's
    ('"step one"', "BlueLake", {"plan"}),
    ('"deploy checklist"', "BlueLake", {"rollout"}),
    ('"plan deploy"', "BlueLake", set()),
    ("revi*", "BlueLake", {"plan", "rollout", "notes"}),
    ("migra*", "BlueLake", {"migration"}),
    ("deploy AND plan", "BlueLake", {"plan", "rollout"}),
    ("deploy OR database", "BlueLake", {"plan", "reply", "rollout", "migration"}),
    ("plan NOT review", "BlueLake", set()),
    ("deploy NOT subject:deploy", "BlueLake", {"rollout"}),
    ("(deploy OR rollout) AND review", "BlueLake", {"plan", "rollout"}),
    ("subject:deploy AND body:step", "BlueLake", {"plan"}),
    ("-subject:plan", "BlueLake", {"rollout", "notes"}),
    ("POL-358", "BlueLake", {"plan"}),  # hyphenated words are quoted, as the reference does
    ("358", "BlueLake", {"plan"}),
    ("app", "BlueLake", {"plan", "release"}),  # inside src/app.py and build/out/app.tar.gz
    ("example", "BlueLake", {"release"}),  # inside a URL and an address
    ('"v1 2 3"', "BlueLake", {"release"}),
    ("snake_case_name", "BlueLake", {"unicode"}),
    ("東京 naïve", "BlueLake", {"unicode"}),
    ("NEAR(migrate copy, 5)", "BlueLake", {"migration"}),
    ("NEAR(migrate postgres, 2)", "BlueLake", set()),
    ("NEAR(rows index)", "BlueLake", {"migration"}),
    ("v1.2.3", "BlueLake", {"release"}),  # not FTS5 syntax: the LIKE fallback
    ("build/out", "BlueLake", {"release"}),
    ("review (", "BlueLake", {"plan", "rollout", "notes"}),
    ('"plan', "BlueLake", {"plan", "rollout", "notes"}),
    ("nonexistentword", "BlueLake", set()),
    ('"..."', "BlueLake", set()),
    ("message_id:1", "BlueLake", set()),
    ("*", "BlueLake", set()),
]


async def _corpus(settings: Any) -> tuple[Any, dict[str, int]]:
    server = build_server(settings)
    async with Client(server) as client:
        tools = Tools(client)
        await tools.project()
        for name in ("BlueLake", "GreenCastle", "alpha-one"):
            await tools.agent(name)
        ids = {}
        for name, (sender, to, subject, body) in MAIL.items():
            sent = await tools.send(sender, [to], subject=subject, body_md=body)
            ids[name] = sent["deliveries"][0]["payload"]["id"]
    await run_worker(server, settings)
    return server, ids


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with throwaway_database() as url:
        yield url


@pytest.fixture
async def engines(tmp_path: Path, postgres_url: str) -> AsyncIterator[dict[str, tuple[Any, dict[str, int]]]]:
    """The same mail on an SQLite index and on a PostgreSQL one (each with its own Redis)."""
    lite = make_settings(f"memory://lite-{tmp_path.name}", tmp_path / "lite")
    pg = make_settings(f"memory://pg-{tmp_path.name}", tmp_path / "pg", DATABASE_URL=postgres_url)
    built = {"sqlite": await _corpus(lite), "postgresql": await _corpus(pg)}
    yield built
    for server, _ in built.values():
        await drop_prefix(server.store)


async def _search(server: Any, query: str, viewer: str, limit: int = 20) -> list[dict[str, Any]]:
    async with Client(server) as client:
        return await Tools(client).call(
            "search_messages", project_key=PROJECT, query=query, agent_name=viewer, limit=limit
        )


async def test_the_same_searches_find_the_same_messages(engines: dict[str, Any]) -> None:
    for engine, (server, ids) in engines.items():
        names = {v: k for k, v in ids.items()}
        for query, viewer, expected in SEARCHES:
            found = await _search(server, query, viewer)
            assert {names[item["id"]] for item in found} == expected, (engine, query, viewer)
            assert len(found) == len(expected), (engine, query)


async def test_items_ranking_and_limit_agree(engines: dict[str, Any]) -> None:
    (lite, lite_ids), (pg, pg_ids) = engines["sqlite"], engines["postgresql"]

    def shown(items: list[dict[str, Any]], ids: dict[str, int]) -> list[dict[str, Any]]:
        names = {v: k for k, v in ids.items()}  # ids are made from the send time: compare names
        return [{**item, "id": names[item["id"]], "created_ts": None} for item in items]

    for query in ("deploy plan", "rollout", "plan", "review OR deploy", "review ("):
        a = shown(await _search(lite, query, "BlueLake"), lite_ids)
        b = shown(await _search(pg, query, "BlueLake"), pg_ids)
        assert a == b, query  # same items, same fields (ack_required 0/1), same order
    # a term three times in a short row ranks first on both; limit 1 returns only it
    assert [i["id"] for i in await _search(lite, "rollout OR plan", "BlueLake", limit=1)] == [lite_ids["rollout"]]
    assert [i["id"] for i in await _search(pg, "rollout OR plan", "BlueLake", limit=1)] == [pg_ids["rollout"]]
    for server in (lite, pg):
        assert len(await _search(server, "review OR deploy", "BlueLake", limit=2)) == 2


async def test_the_differences_the_engines_keep(engines: dict[str, Any]) -> None:
    """docs/compatibility.md: FTS5 folds accents and anchors ``^``; PostgreSQL does neither."""
    (lite, lite_ids), (pg, pg_ids) = engines["sqlite"], engines["postgresql"]
    assert [i["id"] for i in await _search(lite, "cafe", "BlueLake")] == [lite_ids["unicode"]]
    assert await _search(pg, "cafe", "BlueLake") == []
    assert {i["id"] for i in await _search(lite, "^deploy", "BlueLake")} == {lite_ids["plan"]}
    found = {i["id"] for i in await _search(pg, "^deploy", "BlueLake")}
    assert found == {pg_ids["plan"], pg_ids["reply"], pg_ids["rollout"]}
