"""File reservations through the MCP tools, on fakeredis and a real Redis: the seed's scenarios,
races, renew in place, TTL expiry, release, renew, force release, the resource, and bad input."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, make_settings, real_redis_only, snapshot

from broker.reservations import service as reservations
from broker.server import build_server

P = PROJECT


async def reserve(tools: Tools, agent: str, paths: list[str], **extra: Any) -> dict[str, Any]:
    return await tools.call("file_reservation_paths", project_key=P, agent_name=agent, paths=paths, **extra)


def holders(result: dict[str, Any]) -> dict[str, list[str]]:
    return {c["path"]: [h["agent"] for h in c["holders"]] for c in result["conflicts"]}


@pytest.fixture
async def five(tools: Tools) -> list[str]:
    await tools.project()
    return [(await tools.agent())["name"] for _ in range(5)]


# -- the seed's scenarios -------------------------------------------------------------------
async def test_concurrent_reservations_of_different_paths(tools: Tools, five: list[str]) -> None:
    results = await asyncio.gather(*(reserve(tools, a, [f"src/module{i}.py"]) for i, a in enumerate(five)))
    for i, result in enumerate(results):
        assert result["conflicts"] == []
        assert [g["path_pattern"] for g in result["granted"]] == [f"src/module{i}.py"]
        assert result["granted"][0]["exclusive"] is True
    assert len({r["granted"][0]["id"] for r in results}) == 5


async def test_concurrent_reservations_of_one_path(tools: Tools, five: list[str]) -> None:
    """Three agents at once: they behave as some serial order, so exactly one holds it cleanly
    and each later one sees every earlier holder."""
    results = await asyncio.gather(*(reserve(tools, a, ["shared/config.json"], reason=f"by {a}") for a in five[:3]))
    assert all(len(r["granted"]) == 1 for r in results)  # advisory: always granted
    seen = {five[i]: holders(r).get("shared/config.json", []) for i, r in enumerate(results)}
    serial = sorted(seen, key=lambda agent: len(seen[agent]))
    assert [len(seen[agent]) for agent in serial] == [0, 1, 2]
    for k, agent in enumerate(serial):
        assert sorted(seen[agent]) == sorted(serial[:k])


async def test_overlapping_globs_conflict(tools: Tools, five: list[str]) -> None:
    first = await reserve(tools, five[0], ["src/**/*.py"])
    second = await reserve(tools, five[1], ["src/app.py"])
    assert first["conflicts"] == []
    [conflict] = second["conflicts"]
    assert conflict["path"] == "src/app.py"
    [holder] = conflict["holders"]
    assert holder["agent"] == five[0]
    assert holder["path_pattern"] == "src/**/*.py"
    assert holder["exclusive"] is True
    assert holder["expires_ts"] == first["granted"][0]["expires_ts"]


async def test_broad_request_meets_narrow_holding(tools: Tools, five: list[str]) -> None:
    """The pairs the reference misses: a held file against a requested '**', and crossed globs."""
    await reserve(tools, five[0], ["src/app.py", "lib/a/x.py"])
    result = await reserve(tools, five[1], ["src/**", "lib/*/x.py", "docs/**"])
    assert holders(result) == {"src/**": [five[0]], "lib/*/x.py": [five[0]]}


# -- semantics --------------------------------------------------------------------------------
async def test_same_agent_same_pattern_renews_in_place(tools: Tools, five: list[str]) -> None:
    first = await reserve(tools, five[0], ["src/app.py"], ttl_seconds=600, reason="refactor")
    again = await reserve(tools, five[0], ["src/app.py"], ttl_seconds=3600, exclusive=False)
    assert again["conflicts"] == []
    assert again["granted"][0]["id"] == first["granted"][0]["id"]
    assert again["granted"][0]["expires_ts"] > first["granted"][0]["expires_ts"]
    assert again["granted"][0]["exclusive"] is False
    assert again["granted"][0]["reason"] == "refactor"  # an empty reason keeps the old one
    shorter = await reserve(tools, five[0], ["src/app.py"], ttl_seconds=60)
    assert shorter["granted"][0]["expires_ts"] == again["granted"][0]["expires_ts"]  # never shortened
    live = await tools.client.read_resource(f"resource://file_reservations/{slug()}")
    assert [r["id"] for r in json.loads(live[0].text)] == [first["granted"][0]["id"]]


async def test_shared_reservations_never_conflict(tools: Tools, five: list[str]) -> None:
    await reserve(tools, five[0], ["docs/**"], exclusive=False)
    assert (await reserve(tools, five[1], ["docs/guide.md"], exclusive=False))["conflicts"] == []
    exclusive_request = holders(await reserve(tools, five[2], ["docs/guide.md"]))  # exclusive meets shared
    assert sorted(exclusive_request["docs/guide.md"]) == sorted(five[:2])
    exclusive = await reserve(tools, five[3], ["docs/index.md"])
    assert holders(exclusive) == {"docs/index.md": [five[0]]}


async def test_virtual_names_match_only_equal_names(tools: Tools, five: list[str]) -> None:
    await reserve(tools, five[0], ["tool://build", "service://db"])
    result = await reserve(tools, five[1], ["tool://build", "tool://test", "**", "service://db2"])
    assert holders(result) == {"tool://build": [five[0]]}


async def test_own_reservations_never_conflict(tools: Tools, five: list[str]) -> None:
    await reserve(tools, five[0], ["src/**"])
    assert (await reserve(tools, five[0], ["src/app.py"]))["conflicts"] == []


async def test_holders_listed_per_path_are_capped(tools: Tools, five: list[str]) -> None:
    await reserve(tools, five[0], [f"pkg/m{i}.py" for i in range(60)])
    [conflict] = (await reserve(tools, five[1], ["pkg/**"]))["conflicts"]
    assert len(conflict["holders"]) == 50
    assert conflict["more_holders"] is True


# -- release and renew ------------------------------------------------------------------------
async def test_release_by_paths_ids_and_all(tools: Tools, five: list[str]) -> None:
    me = five[0]
    granted = (await reserve(tools, me, ["a.py", "b.py", "c.py", "d.py"]))["granted"]
    ids = {g["path_pattern"]: g["id"] for g in granted}
    release = {"project_key": P, "agent_name": me}
    assert (await tools.call("release_file_reservations", **release, paths=["a.py"]))["released"] == 1
    assert (await tools.call("release_file_reservations", **release, paths=["a.py"]))["released"] == 0
    by_id = await tools.call("release_file_reservations", **release, file_reservation_ids=[ids["b.py"]])
    assert by_id["released"] == 1 and by_id["released_at"]
    # another agent's ids are not ours to release
    other = await tools.call(
        "release_file_reservations", project_key=P, agent_name=five[1], file_reservation_ids=[ids["c.py"]]
    )
    assert other["released"] == 0
    assert (await tools.call("release_file_reservations", **release))["released"] == 2
    assert (await reserve(tools, five[1], ["a.py", "b.py", "c.py", "d.py"]))["conflicts"] == []


async def test_renew_extends_from_the_later_of_now_and_expiry(tools: Tools, five: list[str]) -> None:
    me = five[0]
    granted = (await reserve(tools, me, ["a.py", "b.py"], ttl_seconds=600))["granted"]
    renewed = await tools.call(
        "renew_file_reservations", project_key=P, agent_name=me, extend_seconds=600, paths=["a.py"]
    )
    assert renewed["renewed"] == 1
    [entry] = renewed["file_reservations"]
    assert entry["id"] == granted[0]["id"] and entry["old_expires_ts"] == granted[0]["expires_ts"]
    from datetime import datetime

    delta = datetime.fromisoformat(entry["new_expires_ts"]) - datetime.fromisoformat(entry["old_expires_ts"])
    assert delta.total_seconds() == 600
    assert (await tools.call("renew_file_reservations", project_key=P, agent_name=me))["renewed"] == 2
    assert (await tools.call("renew_file_reservations", project_key=P, agent_name=five[1]))["renewed"] == 0


# -- expiry -----------------------------------------------------------------------------------
@pytest.fixture
async def quick(backend: str, tmp_path: Path) -> Any:
    """A server whose reservations may live one second, and whose holders go stale at once."""
    settings = make_settings(
        backend,
        tmp_path,
        FILE_RESERVATION_MIN_TTL_SECONDS=1,
        FILE_RESERVATION_INACTIVITY_SECONDS=0,
        FILE_RESERVATION_ACTIVITY_GRACE_SECONDS=0,
    )
    mcp = build_server(settings)
    async with Client(mcp) as client:
        tools = Tools(client)
        await tools.project()
        for name in ("BlueLake", "GreenCastle"):
            await tools.agent(name)
        yield tools, mcp
    await mcp.store.close()  # type: ignore[attr-defined]


async def test_expired_reservations_stop_counting_at_their_instant(quick: Any) -> None:
    tools, _ = quick
    held = await reserve(tools, "BlueLake", ["src/app.py"], ttl_seconds=1)
    assert holders(await reserve(tools, "GreenCastle", ["src/**"], ttl_seconds=60)) == {"src/**": ["BlueLake"]}
    await asyncio.sleep(1.05)
    assert (await reserve(tools, "GreenCastle", ["src/app.py"], ttl_seconds=60))["conflicts"] == []
    live = json.loads((await tools.client.read_resource(f"resource://file_reservations/{slug()}"))[0].text)
    assert [r["agent"] for r in live] == ["GreenCastle", "GreenCastle"]
    everything = json.loads(
        (await tools.client.read_resource(f"resource://file_reservations/{slug()}?active_only=false"))[0].text
    )
    expired = [r for r in everything if r["id"] == held["granted"][0]["id"]]
    assert expired and expired[0]["released_ts"] is None and expired[0]["stale"] is False
    # renewing an expired reservation does nothing: it is gone
    assert (await tools.call("renew_file_reservations", project_key=P, agent_name="BlueLake"))["renewed"] == 0


async def test_expired_and_released_entries_leave_the_index(quick: Any) -> None:
    """Live structures hold live reservations only; ended records are kept for a while, then go."""
    tools, mcp = quick
    store, keys = mcp.store, mcp.store.keys
    slug = "tmp-concurrent-test"
    await reserve(tools, "BlueLake", [f"old/{i}.py" for i in range(10)], ttl_seconds=1)
    kept = (await reserve(tools, "BlueLake", ["kept.py"], ttl_seconds=600))["granted"][0]["id"]
    await asyncio.sleep(1.05)
    await reserve(tools, "GreenCastle", ["new.py"], ttl_seconds=600)
    assert await store.client().zcard(keys.reservation_index(slug)) == 2
    assert await store.client().zcard(keys.reservation_expiry(slug)) == 2
    await tools.call("release_file_reservations", project_key=P, agent_name="BlueLake")
    # ended records wait in res:ended until their retention has passed (test_reservation_retention.py)
    forget_at = await store.client().zscore(keys.reservation_ended(slug), kept)
    assert forget_at > (time.time() + store.settings.file_reservation_retention_seconds - 60) * 1_000_000
    await store.client().delete(keys.reservation(slug, kept))  # as if it had been forgotten
    listed = json.loads(
        (await tools.client.read_resource(f"resource://file_reservations/{slug}?active_only=false"))[0].text
    )
    assert kept not in [r["id"] for r in listed] and len(listed) == 11


async def test_force_release_keeps_a_reservation_renewed_during_the_check(quick: Any) -> None:
    """The script releases only the reservation as it was checked (same expiry, still live)."""
    tools, mcp = quick
    store, keys = mcp.store, mcp.store.keys
    slug = "tmp-concurrent-test"
    rid = (await reserve(tools, "BlueLake", ["src/app.py"], ttl_seconds=600))["granted"][0]["id"]
    checked = await store.client().hget(keys.reservation(slug, rid), "expires_us")
    await tools.call("renew_file_reservations", project_key=P, agent_name="BlueLake", extend_seconds=60)
    script_keys = [keys.project(slug), keys.agents(slug), keys.pending(slug)]
    args = [keys.project_prefix(slug), "GreenCastle", "", "0", rid, checked, 60]
    assert await store.run("force_release_reservation", script_keys, args) == ["CHANGED"]
    assert holders(await reserve(tools, "GreenCastle", ["src/app.py"])) == {"src/app.py": ["BlueLake"]}


async def test_force_release_of_a_stale_holder_tells_it_by_mail(quick: Any) -> None:
    tools, _ = quick
    rid = (await reserve(tools, "BlueLake", ["src/app.py"], ttl_seconds=600))["granted"][0]["id"]
    result = await tools.call(
        "force_release_file_reservation",
        project_key=P,
        agent_name="GreenCastle",
        file_reservation_id=rid,
        note="need it",
    )
    assert result["released"] == 1
    reservation = result["reservation"]
    assert reservation["id"] == rid and reservation["agent"] == "BlueLake" and reservation["notified"] is True
    assert reservation["released_ts"] == result["released_at"]
    assert "agent_inactive>0s" in reservation["stale_reasons"]
    [mail] = await tools.inbox("BlueLake", include_bodies=True)
    assert mail["subject"] == "[file-reservations] Released stale lock on src/app.py"
    assert "need it" in mail["body_md"] and mail["from"] == "GreenCastle"
    assert (await reserve(tools, "GreenCastle", ["src/app.py"]))["conflicts"] == []
    again = await tools.call(
        "force_release_file_reservation", project_key=P, agent_name="GreenCastle", file_reservation_id=rid
    )
    assert again["released"] == 0 and again["already_released"] is True


async def test_force_release_of_an_expired_reservation(quick: Any) -> None:
    tools, _ = quick
    rid = (await reserve(tools, "BlueLake", ["x.py"], ttl_seconds=1))["granted"][0]["id"]
    await asyncio.sleep(1.05)
    result = await tools.call(
        "force_release_file_reservation", project_key=P, agent_name="GreenCastle", file_reservation_id=rid
    )
    assert result["released"] == 0 and result["already_released"] is True and result["expired"] is True


async def test_force_release_refuses_an_active_holder(tools: Tools, five: list[str]) -> None:
    rid = (await reserve(tools, five[0], ["src/app.py"]))["granted"][0]["id"]
    error = await tools.error(
        "force_release_file_reservation", project_key=P, agent_name=five[1], file_reservation_id=rid
    )
    assert error.startswith("RESERVATION_ACTIVE: Reservation still shows recent activity"), error
    assert "agent_recently_active" in error
    assert holders(await reserve(tools, five[1], ["src/app.py"])) == {"src/app.py": [five[0]]}
    missing = await tools.error(
        "force_release_file_reservation", project_key=P, agent_name=five[1], file_reservation_id=10**9
    )
    assert missing.startswith("NOT_FOUND: File reservation 1000000000 not found"), missing


# -- races ------------------------------------------------------------------------------------
async def test_twenty_agents_race_for_one_file(tools: Tools) -> None:
    await tools.project()
    names = [(await tools.agent())["name"] for _ in range(20)]
    results = await asyncio.gather(*(reserve(tools, n, ["hot/file.py"]) for n in names))
    clean = [n for n, r in zip(names, results, strict=True) if not r["conflicts"]]
    assert len(clean) == 1
    counts = sorted(len(r["conflicts"][0]["holders"]) for r in results if r["conflicts"])
    assert counts == list(range(1, 20))  # the k-th in serial order sees the k-1 before it


async def test_reserve_and_release_race(tools: Tools, five: list[str]) -> None:
    """Releases interleaved with requests: afterwards only unreleased reservations count."""
    a, b = five[0], five[1]
    await reserve(tools, a, [f"m/{i}.py" for i in range(30)])
    releases = [
        tools.call("release_file_reservations", project_key=P, agent_name=a, paths=[f"m/{i}.py"])
        for i in range(0, 30, 2)
    ]
    requests = [reserve(tools, b, [f"m/{i}.py"], exclusive=False) for i in range(30)]
    await asyncio.gather(*releases, *requests)
    after = await reserve(tools, five[2], ["m/**"])
    assert sorted(h["path_pattern"] for h in after["conflicts"][0]["holders"] if h["agent"] == a) == sorted(
        f"m/{i}.py" for i in range(1, 30, 2)
    )


# -- bad input --------------------------------------------------------------------------------
def slug() -> str:
    return "tmp-concurrent-test"


@pytest.mark.parametrize(
    ("tool", "args", "code", "says"),
    [
        ("file_reservation_paths", {"paths": []}, "EMPTY_PATHS", "at least one"),
        ("file_reservation_paths", {"paths": ["../x"]}, "INVALID_PATH_PATTERN", "'..'"),
        ("file_reservation_paths", {"paths": ["src/[a"]}, "INVALID_PATH_PATTERN", "without its ']'"),
        ("file_reservation_paths", {"paths": [f"f{i}" for i in range(101)]}, "TOO_MANY_PATHS", "limit is 100"),
        ("file_reservation_paths", {"paths": ["a"], "ttl_seconds": 31 * 86400}, "INVALID_ARGUMENT", "up to 2592000"),
        ("file_reservation_paths", {"paths": ["a"], "reason": "r" * 513}, "INVALID_ARGUMENT", "512"),
        ("file_reservation_paths", {"paths": ["a"], "agent_name": "Nobody"}, "NOT_FOUND", "Nobody"),
        ("file_reservation_paths", {"paths": ["a"], "registration_token": "wrong"}, "AUTHENTICATION_FAILED", "token"),
        ("release_file_reservations", {"paths": []}, "EMPTY_PATHS", "omit it"),
        ("release_file_reservations", {"file_reservation_ids": []}, "EMPTY_IDS", "omit it"),
        ("renew_file_reservations", {"extend_seconds": 31 * 86400}, "INVALID_ARGUMENT", "extend_seconds"),
        ("force_release_file_reservation", {"file_reservation_id": 0}, "INVALID_ARGUMENT", "positive"),
    ],
)
async def test_bad_input_is_rejected_and_changes_nothing(
    tools: Tools, server: FastMCP, five: list[str], tool: str, args: dict[str, Any], code: str, says: str
) -> None:
    await reserve(tools, five[0], ["keep/me.py"])
    store = server.store  # type: ignore[attr-defined]
    before = await snapshot(store)
    error = await tools.error(tool, **{"project_key": P, "agent_name": five[0], **args})
    assert error.startswith(f"{code}: "), error
    assert says in error, error
    assert await snapshot(store) == before


async def test_a_request_too_costly_to_match_is_refused_and_changes_nothing(
    tools: Tools, server: FastMCP, five: list[str]
) -> None:
    """Patterns within every cap are cheap to compare one pair at a time, but a request that would
    compare many of them is priced before matching: over the step budget it is refused, and
    nothing changes."""
    held = [f"*{i:03}x" for i in range(60)]  # root-bucket globs every request must compare
    await reserve(tools, five[1], held)
    store = server.store  # type: ignore[attr-defined]
    before = await snapshot(store)
    error = await tools.error(
        "file_reservation_paths", project_key=P, agent_name=five[0], paths=[f"**/*{c}*.py" for c in "abcdefgh"]
    )
    assert error.startswith("RESERVATION_TOO_COMPLEX: "), error
    assert f"the limit per call is {reservations.STEP_BUDGET:,}" in error, error
    assert "start with a directory" in error, error
    assert await snapshot(store) == before
    # The same holdings against an ordinary request: answered as usual.
    result = await reserve(tools, five[0], ["src/app.py", "*007x"])
    assert holders(result) == {"*007x": [five[1]]}


async def test_unknown_project_in_resource(tools: Tools) -> None:
    with pytest.raises(Exception, match="not found"):
        await tools.client.read_resource("resource://file_reservations/no-such-project")


# -- the index never hides a conflict -----------------------------------------------------------
@real_redis_only
async def test_index_finds_every_overlap_the_matcher_knows(tools: Tools, five: list[str]) -> None:
    """Random holdings and requests over a small tree: the conflicts the server reports (through
    its bucket index) are exactly the holdings that overlap each request by broker.reservations.globs."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from broker.reservations import globs

    literal = st.sampled_from(["a", "b", "ab", "x.py"])
    wild = st.sampled_from(["*", "a*", "?", "[ab]", "**", "*.py"])
    segment = st.one_of(literal, literal, wild)  # literal-heavy, so buckets nest in every way
    pattern = st.lists(segment, min_size=1, max_size=4).map(lambda parts: globs.normalize("/".join(parts)))
    cases: list[tuple[list[str], list[str]]] = []

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.lists(pattern, min_size=1, max_size=12, unique=True), st.lists(pattern, min_size=1, max_size=5, unique=True)
    )
    def collect(held: list[str], requested: list[str]) -> None:
        cases.append((held, requested))

    collect()
    holder, requester = five[0], five[1]
    for held, requested in cases:
        await reserve(tools, holder, held)
        result = await reserve(tools, requester, requested)
        reported = {c["path"]: sorted(h["path_pattern"] for h in c["holders"]) for c in result["conflicts"]}
        expected = {r: sorted(h for h in held if globs.overlaps(h, r)) for r in requested}
        assert reported == {r: hs for r, hs in expected.items() if hs}, (held, requested)
        for agent in (holder, requester):
            await tools.call("release_file_reservations", project_key=P, agent_name=agent)
