"""`broker serve` and `broker worker` as real processes on the index's DATABASE_URL: a database
that cannot be reached or a scheme the index does not support stops them at start with a coded
error naming DATABASE_URL (never a silent SQLite index), without the password; a broker on
PostgreSQL persists there."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from index_helpers import end_connections, new_schema_url
from process_helpers import BROKER, broker_env, free_port, serving_at

from broker.persistence.index import Index

START_TIMEOUT = 60


def run_broker(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BROKER, *command], env=env, capture_output=True, text=True, timeout=START_TIMEOUT)


# both commands run the same check (cli._check_index): each with one of the two errors
@pytest.mark.parametrize(
    ("command", "url", "code"),
    [
        (["serve", "--port", "0"], "sqlite+aiosqlite:///./storage.sqlite3", "DATABASE_URL_UNSUPPORTED"),
        (["worker"], "postgresql://bob:s3cret@127.0.0.1:{port}/mail", "DATABASE_UNREACHABLE"),
    ],
)
def test_a_database_url_it_cannot_use_stops_the_start(command: list[str], url: str, code: str, tmp_path: Path) -> None:
    env = broker_env("memory://unused", tmp_path, DATABASE_URL=url.format(port=free_port()))
    done = run_broker(command, env)
    assert done.returncode != 0
    assert code in done.stderr and "DATABASE_URL" in done.stderr, done.stderr
    assert "s3cret" not in done.stderr + done.stdout
    assert not (tmp_path / "index.sqlite3").exists()  # no fallback to the SQLite file


@pytest.mark.integration
@pytest.mark.postgresql
async def test_a_broker_on_postgresql_persists_there(redis_url: str, pg_database: str, tmp_path: Path) -> None:
    url = new_schema_url(pg_database)
    env = broker_env(redis_url, tmp_path, DATABASE_URL=url)
    try:
        with serving_at(env) as base:
            async with Client(f"{base}/mcp/") as client:
                health = (await client.call_tool("health_check", {})).data
                await client.call_tool("ensure_project", {"human_key": "/srv/pg"})
                names = [
                    (
                        await client.call_tool(
                            "register_agent", {"project_key": "/srv/pg", "program": "p", "model": "m"}
                        )
                    ).data["name"]
                    for _ in range(2)
                ]
                await client.call_tool(
                    "send_message",
                    {"project_key": "/srv/pg", "sender_name": names[0], "to": [names[1]], "subject": "on pg",
                     "body_md": "hello"},
                )  # fmt: skip
                index = Index(url)
                try:
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        found = index.query("SELECT subject FROM messages")
                        if found:
                            break
                        time.sleep(0.2)
                    assert [r["subject"] for r in found] == ["on pg"]
                finally:
                    index.close()
            assert httpx.get(f"{base}/health/readiness").status_code == 200
        assert health["database_url"].startswith("postgresql://postgres@127.0.0.1:5432/")
        assert not (tmp_path / "index.sqlite3").exists()
    finally:
        end_connections(url)
