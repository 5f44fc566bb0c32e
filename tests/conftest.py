"""Fixtures: a Redis per backend, isolated settings, a broker server and an MCP client.

``backend`` is parametrized over an in-process fakeredis (``memory://<uuid>``) and a real
``redis-server``: $REDIS_URL when set, else a throwaway server started once per session on a
random port. Every test gets a key prefix of its own (``t<hex>``), so tests sharing one real
Redis never see each other's keys and nothing needs FLUSHALL.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from cluster_helpers import QUEUE_URLS, start_cluster
from fastmcp import Client, FastMCP
from helpers import Tools, drop_prefix, make_settings
from index_helpers import on_index_backend, throwaway_database
from process_helpers import stop_process
from redis.asyncio import Redis

from broker.config import Settings
from broker.server import build_server
from broker.store.clients import make_client
from broker.store.embedded import start_redis_server

# The modules whose backend-parametrized tests also run on the 3-master cluster in CI; the rest
# run on it with BROKER_TEST_CLUSTER=all (which passes too, and takes several minutes more).
# Chosen for what a cluster changes: cross-project mail and contacts (per-project steps on
# different nodes), realtime and push (shard-channel doorbells), persistence and rehydrate
# (the queue off the cluster, scans over every node). Every Lua script runs on the cluster in
# test_cluster_scripts.py, a master failover in test_cluster_failover.py, and three broker
# processes on a cluster in test_many_processes.py.
CLUSTER_MODULES = {
    "test_cross_project",
    "test_held_mail_and_links",
    "test_realtime",
    "test_push",
    "test_persistence",
    "test_rehydrate",
}


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: $REDIS_URL if set, else a private redis-server (never 127.0.0.1:6379 implicitly)."""
    url = os.environ.get("REDIS_URL", "")
    if url:
        yield url
        return
    proc, url = start_redis_server(tmp_path_factory.mktemp("redis"), appendonly=False)
    try:
        yield url
    finally:
        stop_process(proc, 5)


@pytest.fixture(scope="session")
def cluster_url(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-master Redis Cluster started once per session (per xdist worker), as a seed URL;
    its persistence queue lives on the session's standalone Redis, as docs/operations.md says."""
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    QUEUE_URLS[cluster.seed_url] = redis_url
    try:
        yield cluster.seed_url
    finally:
        cluster.stop()


@pytest.fixture(
    params=[
        pytest.param("fakeredis", id="fakeredis"),
        pytest.param("redis", id="redis", marks=pytest.mark.integration),
        pytest.param("cluster", id="cluster", marks=[pytest.mark.integration, pytest.mark.cluster]),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """A Redis URL: a fresh in-process fakeredis, the session's real Redis, or its cluster."""
    if request.param == "fakeredis":
        return f"memory://{uuid4()}"
    if request.param == "cluster":
        return request.getfixturevalue("cluster_url")
    return request.getfixturevalue("redis_url")


# The modules whose tests take seconds each (real processes, a wheel build, fault scenarios,
# a thousand sends), slowest first. They run first: `make test` runs xdist with --dist loadgroup,
# which hands out one test at a time in this order to whichever process is free, so the hundreds
# of sub-second tests fill the gaps and the end of the run. In file order they came last
# (test_wheel.py, test_web_browser.py) and one process ran them alone at the end; and xdist's
# default --dist load sends each process a block of consecutive tests first, so one process
# would get all of these.
SLOW_FIRST = (
    "test_wheel",
    "test_fault_suite",
    "test_fault_redis_loss",
    "test_deploy_files",
    "test_serve",
    "test_index_startup",
    "test_faults",
    "test_concurrent_operations",
    "test_cluster_scripts",
    "test_import_agent_mail",
    "test_export_agent_mail",
    "test_index_copy",
    "test_index_startup",
    "test_no_local_files",
    "test_cold_reads",
    "test_many_processes",
    "test_cluster_failover",
    "test_globs",
    "test_operations",
    "test_examples",
    "test_guard",
    "test_access",
    "test_client_docs",
    "test_embedded_worker",
    "test_rehydrate",
    "test_web_browser",
    "test_metrics",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The cluster backend runs only in the modules of CLUSTER_MODULES (docs/development.md says
    why those), unless BROKER_TEST_CLUSTER=all asks for every backend-parametrized test; the
    modules of SLOW_FIRST run first."""
    everywhere = os.environ.get("BROKER_TEST_CLUSTER") == "all"
    kept = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_cluster = callspec and callspec.params.get("backend") == "cluster"
        if on_cluster and not everywhere and item.module.__name__ not in CLUSTER_MODULES:
            continue
        # the PostgreSQL index with fakeredis only: a real Redis changes nothing on the index side
        if (
            callspec
            and callspec.params.get("index_backend") == "postgresql"
            and callspec.params.get("backend", "fakeredis") != "fakeredis"
        ):
            continue
        kept.append(item)
    rank = {name: index for index, name in enumerate(SLOW_FIRST)}
    kept.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))  # stable: file order otherwise
    items[:] = kept


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test session (per xdist process), dropped at its
    end (tests/index_helpers.py)."""
    with throwaway_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def index_backend(request: pytest.FixtureRequest) -> str:
    """The index backend of ``index_settings``: the SQLite file, or a schema of its own in the
    session's PostgreSQL database. On PostgreSQL only with the fakeredis Redis backend (the
    Redis side is the same; see pytest_collection_modifyitems)."""
    return request.param


@pytest.fixture
def index_settings(index_backend: str, settings: Settings, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """``settings`` on the ``index_backend`` index (DATABASE_URL set for PostgreSQL)."""
    with on_index_backend(settings, index_backend, request) as on_backend:
        yield on_backend


@pytest.fixture
async def redis_client(backend: str) -> AsyncIterator[Redis]:
    """A plain client of the test's Redis backend (for what the tests check in Redis directly)."""
    client = make_client(backend)
    yield client
    await client.aclose()


@pytest.fixture
def settings(backend: str, tmp_path: Path) -> Settings:
    return make_settings(backend, tmp_path)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[FastMCP]:
    mcp = build_server(settings)
    yield mcp
    await drop_prefix(mcp.store)  # type: ignore[attr-defined]


@pytest.fixture
async def tools(server: FastMCP) -> AsyncIterator[Tools]:
    """Tool calls through an in-process fastmcp Client (the default, modern protocol)."""
    async with Client(server) as client:
        yield Tools(client)


@pytest.fixture
async def trio(tools: Tools) -> dict[str, Any]:
    """A project with three agents: BlueLake, GreenCastle and alpha-one."""
    project = await tools.project()
    agents = {name: await tools.agent(name) for name in ("BlueLake", "GreenCastle", "alpha-one")}
    return {"project": project, "agents": agents}
