"""``broker hook check-inbox`` (in-process, both backends) and ``broker watch`` (a real process on
the session's Redis)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from helpers import PROJECT, Tools, drop_prefix
from shapes import payload
from typer.testing import CliRunner

from broker.cli import app
from broker.config import Settings, get_settings
from broker.server import build_server

BROKER = str(Path(sys.executable).with_name("broker"))


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The CLI's environment pointing at the test's Redis and key prefix."""
    for name in ("AGENT_BROKER_PROJECT", "AGENT_BROKER_AGENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("REDIS_CLUSTER", "true" if settings.redis_cluster else "false")
    monkeypatch.setenv("QUEUE_REDIS_URL", settings.queue_redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", settings.redis_key_prefix)
    monkeypatch.setenv("STORAGE_ROOT", str(settings.storage_root))
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()
    asyncio.run(_drop(settings))


async def _drop(settings: Settings) -> None:
    await drop_prefix(build_server(settings).store)  # type: ignore[attr-defined]


def with_tools(settings: Settings, steps: Any) -> Any:
    """Run ``steps(tools)`` against a broker on the test's Redis, in a loop of its own."""

    async def run() -> Any:
        async with Client(build_server(settings)) as client:
            return await steps(Tools(client))

    return asyncio.run(run())


async def setup_agents(tools: Tools) -> None:
    await tools.project()
    for name in ("BlueLake", "GreenCastle"):
        await tools.agent(name)


def check_inbox(*extra: str) -> Any:
    return CliRunner().invoke(app, ["hook", "check-inbox", "--project", PROJECT, "--agent", "GreenCastle", *extra])


def test_hook_shows_unread_mail_once(cli_env: Settings) -> None:
    with_tools(cli_env, setup_agents)
    quiet = check_inbox()
    assert (quiet.exit_code, quiet.stdout) == (0, "")  # no mail: not a word

    async def two(tools: Tools) -> list[int]:
        first = payload(await tools.send("BlueLake", ["GreenCastle"], subject="Review PR 7", importance="high"))
        second = payload(await tools.send("BlueLake", ["GreenCastle"], subject="Lunch?", ack_required=True))
        return [first["id"], second["id"]]

    ids = with_tools(cli_env, two)
    shown = check_inbox()
    assert shown.exit_code == 0
    assert shown.stdout.splitlines() == [
        f"New mail for GreenCastle in {PROJECT}: 2 unread messages.",
        f"- #{ids[0]} from BlueLake [high]: Review PR 7",
        f"- #{ids[1]} from BlueLake [ack required]: Lunch?",
        f'Read them with fetch_inbox(project_key="{PROJECT}", agent_name="GreenCastle", include_bodies=true), '
        "then mark_message_read or acknowledge_message.",
    ]
    assert check_inbox().stdout == ""  # shown once: the hook never nags with old mail

    async def read_then_new(tools: Tools) -> int:
        read = payload(await tools.send("BlueLake", ["GreenCastle"], subject="already read"))
        await tools.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=read["id"])
        return payload(await tools.send("BlueLake", ["GreenCastle"], subject="new one"))["id"]

    new_id = with_tools(cli_env, read_then_new)
    lines = check_inbox().stdout.splitlines()
    assert lines[:2] == [
        f"New mail for GreenCastle in {PROJECT}: 1 unread message.",
        f"- #{new_id} from BlueLake: new one",
    ]


def test_hook_settings_from_the_environment_and_errors(cli_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with_tools(cli_env, setup_agents)
    with_tools(cli_env, lambda tools: tools.send("BlueLake", ["GreenCastle"], subject="via env"))
    monkeypatch.setenv("AGENT_BROKER_PROJECT", PROJECT)
    monkeypatch.setenv("AGENT_BROKER_AGENT", "greencastle")  # names are case-insensitive
    result = CliRunner().invoke(app, ["hook", "check-inbox"])
    assert result.exit_code == 0 and "via env" in result.stdout
    unknown = CliRunner().invoke(app, ["hook", "check-inbox", "--agent", "GreenCastel"])
    assert unknown.exit_code == 1 and unknown.stdout == ""
    assert "NOT_FOUND: Agent 'GreenCastel' not found" in unknown.stderr


def test_watch_replays_from_a_cursor(cli_env: Settings) -> None:
    with_tools(cli_env, setup_agents)
    with_tools(cli_env, lambda tools: tools.send("BlueLake", ["GreenCastle"], subject="earlier", body_md="**bold**"))
    result = CliRunner().invoke(
        app, ["watch", "--project", PROJECT, "--agent", "GreenCastle", "--after-id", "0", "--count", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "from BlueLake (to): earlier" in result.stdout
    assert "bold" in result.stdout and "**" not in result.stdout  # the body is rendered Markdown


@pytest.mark.integration
def test_watch_prints_arrivals_as_they_come(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(REDIS_URL=redis_url, REDIS_KEY_PREFIX=f"w{os.getpid()}{time.time_ns() % 10**8}",
                        STORAGE_ROOT=tmp_path)  # fmt: skip
    with_tools(settings, setup_agents)
    env = {**os.environ, "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": settings.redis_key_prefix,
           "STORAGE_ROOT": str(tmp_path), "COLUMNS": "200"}  # fmt: skip
    proc = subprocess.Popen(
        [BROKER, "watch", "--project", PROJECT, "--agent", "GreenCastle", "--count", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("watching mail for GreenCastle")  # subscribed and reading
        with_tools(settings, lambda tools: tools.send("BlueLake", ["GreenCastle"], subject="first live"))
        with_tools(settings, lambda tools: tools.send("BlueLake", ["GreenCastle"], subject="second live"))
        output, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
        asyncio.run(_drop(settings))
    assert proc.returncode == 0, output
    assert "(to): first live" in output and "(to): second live" in output


def test_hook_says_when_it_lists_only_the_newest(cli_env: Settings) -> None:
    """More unseen unread mail than --limit: the hook must not report the listed ones as all."""
    with_tools(cli_env, setup_agents)

    async def three(tools: Tools) -> list[int]:
        return [payload(await tools.send("BlueLake", ["GreenCastle"], subject=f"m{i}"))["id"] for i in range(3)]

    ids = with_tools(cli_env, three)
    lines = check_inbox("--limit", "2").stdout.splitlines()
    assert lines[:3] == [
        f"New mail for GreenCastle in {PROJECT}: more than 2 unread messages; the newest 2:",
        f"- #{ids[1]} from BlueLake: m1",
        f"- #{ids[2]} from BlueLake: m2",
    ]
