"""A project is its full human_key: paths that slugify alike are different projects whose mail
and reservations never cross; projects made under the old rule keep their slug; a slug keeps
naming its repository after a hard delete; rehydrate restores the slugs the index holds."""

from __future__ import annotations

import asyncio
from typing import Any

from fastmcp import Client, FastMCP
from helpers import Tools
from persist_helpers import run_worker

from broker.config import Settings
from broker.lifecycle.erase import _delete_project
from broker.lifecycle.rehydrate import rehydrate_all
from broker.server import build_server

ALIKE = ["/x/my-repo", "/x/my/repo", "/x/My_Repo", "/x/my.repo"]


async def test_paths_that_slugify_alike_are_separate_projects(tools: Tools) -> None:
    projects = [await tools.project(key) for key in [*ALIKE, "/", "/project"]]
    assert [p["human_key"] for p in projects] == [*ALIKE, "/", "/project"]
    slugs = [p["slug"] for p in projects]
    assert len(set(slugs)) == 6, slugs
    assert slugs[0] == "x-my-repo" and slugs[4] == "project"  # the first comer keeps the plain slug
    assert len({p["id"] for p in projects}) == 6
    # the same path again (and its non-normalized spelling) is the same project
    assert (await tools.project("/x/my/repo/"))["slug"] == slugs[1]

    for key in ALIKE:
        await tools.agent("BlueLake", project_key=key)
        await tools.agent("GreenCastle", project_key=key)
        await tools.send("BlueLake", ["GreenCastle"], project_key=key, subject=f"for {key}")
    for key in ALIKE:
        inbox = await tools.inbox("GreenCastle", project_key=key)
        assert [item["subject"] for item in inbox] == [f"for {key}"]

    first = await tools.call(
        "file_reservation_paths", project_key=ALIKE[0], agent_name="BlueLake", paths=["src/app.py"], exclusive=True
    )
    assert first["conflicts"] == []
    for key in ALIKE[1:]:
        other = await tools.call(
            "file_reservation_paths", project_key=key, agent_name="GreenCastle", paths=["src/app.py"], exclusive=True
        )
        assert other["conflicts"] == [], f"{key} saw a reservation of another project"
    again = await tools.call(
        "file_reservation_paths", project_key=ALIKE[0], agent_name="GreenCastle", paths=["src/app.py"], exclusive=True
    )
    assert [c["holders"][0]["agent"] for c in again["conflicts"]] == ["BlueLake"]  # within one project they do


async def test_cross_project_address_by_path_reaches_that_project(tools: Tools) -> None:
    for key in ALIKE[:2]:
        await tools.project(key)
        await tools.agent("RedFox", project_key=key)
    await tools.agent("BlueLake", project_key=ALIKE[0])
    await tools.call(
        "request_contact", project_key=ALIKE[0], from_agent="BlueLake", to_agent="RedFox", to_project=ALIKE[1]
    )
    await tools.call(
        "respond_contact",
        project_key=ALIKE[1],
        to_agent="RedFox",
        from_agent="BlueLake",
        accept=True,
        from_project=ALIKE[0],
    )
    await tools.send("BlueLake", [f"RedFox@{ALIKE[1]}"], project_key=ALIKE[0], subject="across")
    subjects = [m["subject"] for m in await tools.inbox("RedFox", project_key=ALIKE[1])]
    assert subjects == ["across", "Contact request from BlueLake"]
    assert [m["subject"] for m in await tools.inbox("RedFox", project_key=ALIKE[0])] == []


async def test_legacy_project_keeps_its_plain_slug(tools: Tools, server: FastMCP) -> None:
    """A project stored before <p>:slugs existed (directory entry only) keeps its slug, and a
    path that slugifies alike gets a slug of its own instead of joining it."""
    store = server.store  # type: ignore[attr-defined]
    keys = store.keys
    await store.run(
        "ensure_project", [keys.project("x-my-repo"), keys.pending("x-my-repo")], [9001, "x-my-repo", "/x/my/repo"]
    )
    await store.client().hset(keys.projects, "x-my-repo", "/x/my/repo")
    await tools.agent("BlueLake", project_key="/x/my/repo")  # no ensure_project: found by its path

    other = await tools.project("/x/my-repo")
    assert other["slug"] != "x-my-repo" and other["slug"].startswith("x-my-repo-")
    legacy = await tools.project("/x/my/repo")
    assert (legacy["slug"], legacy["id"]) == ("x-my-repo", 9001)
    assert await store.client().hget(keys.slug_owners, "x-my-repo") == "/x/my/repo"


async def test_hard_deleted_slug_is_not_handed_to_another_path(
    tools: Tools, server: FastMCP, settings: Settings
) -> None:
    """A slug written down elsewhere (a contact link, an address, a process's cache) must not come
    to name another repository: after a hard delete, the slug stays its path's."""
    store = server.store  # type: ignore[attr-defined]
    first = await tools.project(ALIKE[0])
    await asyncio.to_thread(_delete_project, settings, store.redis_url, store.keys, first["slug"])  # Redis part
    assert not await store.client().exists(store.keys.project(first["slug"]))
    second = await tools.project(ALIKE[1])
    assert second["slug"] != first["slug"]
    assert (await tools.project(ALIKE[0]))["slug"] == first["slug"]  # re-created under its old slug


async def test_rehydrate_restores_suffixed_slugs(tools: Tools, server: FastMCP, settings: Settings) -> None:
    made: dict[str, Any] = {}
    for key in ALIKE[:2]:
        made[key] = await tools.project(key)
        await tools.agent("BlueLake", project_key=key)
        await tools.agent("GreenCastle", project_key=key)
        await tools.send("BlueLake", ["GreenCastle"], project_key=key, subject=f"for {key}")
    await run_worker(server, settings)
    store = server.store  # type: ignore[attr-defined]
    lost = [key async for key in store.client().scan_iter(match=f"{store.keys.prefix}:*")]
    await store.client().delete(*lost)
    await rehydrate_all(settings, store.redis_url)

    fresh = build_server(settings)  # a process with no cache: the slugs come from Redis again
    async with Client(fresh) as client:
        again = Tools(client)
        for key in reversed(ALIKE[:2]):  # the other order must not swap them
            assert (await again.project(key))["slug"] == made[key]["slug"]
            assert [m["subject"] for m in await again.inbox("GreenCastle", project_key=key)] == [f"for {key}"]
    await fresh.store.close()  # type: ignore[attr-defined]


async def test_a_path_costs_no_extra_round_trip_once_seen(tools: Tools, redis_url: str, server: FastMCP) -> None:
    """Hot paths: after the first call, a path-form project_key is resolved from this process's
    cache; a send by path runs the same Redis commands as a send by slug."""
    store = server.store  # type: ignore[attr-defined]
    if store.redis_url != redis_url:
        return  # commandstats: the real redis-server only (fakeredis has no INFO commandstats)
    project = await tools.project(ALIKE[1])
    for name in ("BlueLake", "GreenCastle"):
        await tools.agent(name, project_key=ALIKE[1])

    async def commands(key: str) -> dict[str, int]:
        before = await store.client().info("commandstats")
        for _ in range(10):
            await tools.send("BlueLake", ["GreenCastle"], project_key=key)
        after = await store.client().info("commandstats")
        return {k: after[k]["calls"] - before.get(k, {"calls": 0})["calls"] for k in after}

    await commands(project["slug"])  # warm-up: scripts loaded, id blocks reserved
    by_slug, by_path = await commands(project["slug"]), await commands(ALIKE[1])
    assert by_path == by_slug


async def test_hard_deleted_legacy_slug_is_not_handed_to_another_path(
    tools: Tools, server: FastMCP, settings: Settings
) -> None:
    """The same for a project made before <p>:slugs existed (directory entry only, never adopted):
    its slug must stay its path's after a hard delete, or another process that still has the
    path cached would put that path's agents and mail into the other repository's project."""
    store = server.store  # type: ignore[attr-defined]
    keys = store.keys
    await store.run(
        "ensure_project", [keys.project("x-my-repo"), keys.pending("x-my-repo")], [9001, "x-my-repo", "/x/my/repo"]
    )
    await store.client().hset(keys.projects, "x-my-repo", "/x/my/repo")
    await tools.agent("BlueLake", project_key="/x/my/repo")  # this process now has the path cached

    await asyncio.to_thread(_delete_project, settings, store.redis_url, store.keys, "x-my-repo")  # Redis part
    other = build_server(settings)  # another broker process sharing the Redis
    async with Client(other) as client:
        taken = await Tools(client).project("/x/my-repo")
    await other.store.close()  # type: ignore[attr-defined]
    assert taken["slug"] != "x-my-repo"

    # back in the first process: the old path is not a project any more, and never the other one
    error = await tools.error("register_agent", project_key="/x/my/repo", program="p", model="m", name="GreenCastle")
    assert error.startswith("NOT_FOUND: "), error
    assert (await tools.project("/x/my/repo"))["slug"] == "x-my-repo"  # re-created under its old slug
