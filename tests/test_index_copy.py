"""``broker index copy --to postgresql://...`` as a user runs it (a real subprocess): every table
of an SQLite index made through the tools and the worker arrives in PostgreSQL; a copy SIGKILLed
halfway and run again ends equal to the source; a second run writes nothing; searches answer the
same on the copy; identity sequences continue past the copied ids; a database holding other data
under the same ids is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastmcp import Client
from helpers import PROJECT, Tools, drop_prefix, make_settings
from index_helpers import end_connections, new_schema_url
from persist_helpers import run_worker

from broker.persistence.index_copy import TABLES
from broker.server import build_server

QUERIES = ["deploy", "plan", '"step 7"', "revi*", "deploy NOT plan", "subject:note OR body:checklist", "v1.2.3"]


pytestmark = pytest.mark.postgresql


@pytest.fixture
def postgres_url(pg_database: str) -> Iterator[str]:
    """A schema of its own in the session's throwaway database (tests/index_helpers.py)."""
    url = new_schema_url(pg_database)
    yield url
    end_connections(url)


async def _source(tmp_path: Path) -> tuple[Any, Any]:
    """An SQLite index with every table filled: mail (read, acked), a reservation, a contact
    link across projects, a summary."""
    settings = make_settings(f"memory://copy-{tmp_path.name}", tmp_path / "storage")
    server = build_server(settings)
    async with Client(server) as client:
        tools = Tools(client)
        await tools.project()
        for name in ("BlueLake", "GreenCastle", "alpha-one"):
            await tools.agent(name)
        for i in range(120):
            subject = ["Deploy plan", "Review note", "Release v1.2.3"][i % 3] + f" {i}"
            body = f"step {i}: deploy the checklist, then review" if i % 2 else f"plan {i} for the team"
            sent = await tools.send(["BlueLake", "GreenCastle"][i % 2], [["GreenCastle", "BlueLake"][i % 2]],
                                    subject=subject, body_md=body, ack_required=i % 5 == 0)  # fmt: skip
            if i % 4 == 0:
                reader = ["GreenCastle", "BlueLake"][i % 2]
                await tools.call("acknowledge_message", project_key=PROJECT, agent_name=reader,
                                 message_id=sent["deliveries"][0]["payload"]["id"])  # fmt: skip
        await tools.call("file_reservation_paths", project_key=PROJECT, agent_name="BlueLake", paths=["src/*.py"])
        await tools.call("ensure_project", human_key="/other/project")
        await tools.call("register_agent", project_key="/other/project", program="p", model="m", name="RedStone")
        await tools.call("request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="RedStone",
                         to_project="/other/project")  # fmt: skip
    await run_worker(server, settings)
    async with Client(server) as client:  # a summary is made from the index: after the worker
        await Tools(client).call("summarize_recent", project_key=PROJECT, since_hours=1)
    return server, settings


def _copy(settings: Any, url: str, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
    env.update(STORAGE_ROOT=str(settings.storage_root), DATABASE_PATH=str(settings.index_path))
    return subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "index", "copy", "--to", url, *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _rows(url_or_path: str | Path, table: Any) -> list[tuple[Any, ...]]:
    columns, order = ", ".join(table.columns), ", ".join(table.key)
    sql = f"SELECT {columns} FROM {table.name} ORDER BY {order}"
    if isinstance(url_or_path, Path):
        import sqlite3

        with sqlite3.connect(url_or_path) as conn:
            rows = conn.execute(sql).fetchall()
    else:
        with psycopg.connect(url_or_path) as conn:
            rows = conn.execute(sql).fetchall()
    return [tuple(int(v) if isinstance(v, bool) else v for v in row) for row in rows]


def _count(url: str, table: str) -> int:
    try:
        with psycopg.connect(url) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
    except psycopg.errors.UndefinedTable:
        return 0


async def _ids(server: Any, query: str) -> set[int]:
    async with Client(server) as client:
        found = await Tools(client).call(
            "search_messages", project_key=PROJECT, query=query, agent_name="BlueLake", limit=1000
        )
    return {item["id"] for item in found}


async def test_a_killed_copy_run_again_ends_equal_and_searches_the_same(tmp_path: Path, postgres_url: str) -> None:
    server, settings = await _source(tmp_path)
    source = Path(settings.index_path)
    messages = len(_rows(source, TABLES[2]))
    # one row per transaction, so the copy is still running when the kill comes
    first = _copy(settings, postgres_url, "--batch", "1")
    deadline = time.monotonic() + 60
    while _count(postgres_url, "messages") < messages // 3:
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert 0 < _count(postgres_url, "messages") < messages

    again = _copy(settings, postgres_url)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    for table in TABLES:
        assert _rows(postgres_url, table) == _rows(source, table), table.name
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert lines["messages"][0] == str(messages) and lines["messages"][-1] == str(messages)
    assert int(lines["messages"][1]) < messages  # inserted: only what the killed run had not

    third = _copy(settings, postgres_url)
    out, err = third.communicate(timeout=120)
    assert third.returncode == 0, err
    for line in out.splitlines()[1:]:  # source, inserted, updated, unchanged, target
        source_rows, inserted, updated, unchanged, target_rows = map(int, line.split()[1:6])
        assert (inserted, updated, unchanged, target_rows) == (0, 0, source_rows, source_rows), line

    copied = build_server(settings.model_copy(update={"database_url": postgres_url}))
    try:
        for query in QUERIES:
            assert await _ids(copied, query) == await _ids(server, query), query
        assert await _ids(copied, "deploy")
        # the summary id sequence continues past the copied rows
        async with Client(copied) as client:
            made = await Tools(client).call("summarize_recent", project_key=PROJECT, since_hours=48)
        assert made["id"] > max(row[0] for row in _rows(source, TABLES[-1]))
    finally:
        await copied.store.close()  # type: ignore[attr-defined]
        await drop_prefix(server.store)


async def test_a_database_holding_other_data_is_refused(tmp_path: Path, postgres_url: str) -> None:
    server, settings = await _source(tmp_path)
    ran = _copy(settings, postgres_url)
    assert ran.communicate(timeout=120) and ran.returncode == 0
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE projects SET slug = 'someone-else' WHERE id = (SELECT min(id) FROM projects)")
    # the three refused runs at once (each is a CLI process of its own)
    ran = _copy(settings, postgres_url)
    refused = _copy(settings, "sqlite:////tmp/not-postgres.sqlite3")
    # a database that does not exist: a coded refusal at once (it once hung rendering a traceback)
    missing = _copy(settings, postgres_url.rpartition("/")[0] + "/no_such_database_here")
    _, err = ran.communicate(timeout=120)
    assert ran.returncode == 1
    assert "INDEX_COPY_CONFLICT" in err and "empty database" in err and "someone-else" in err
    assert refused.communicate(timeout=60)[1].count("INDEX_COPY_TARGET") == 1 and refused.returncode == 1
    _, err = missing.communicate(timeout=60)
    assert missing.returncode == 1 and "INDEX_COPY_TARGET" in err and "does not exist" in err
    await drop_prefix(server.store)
