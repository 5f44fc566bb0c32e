"""docs/clients.md, the README and the other docs pages, as a user pastes them: every JSON and
TOML snippet of clients.md parses, every `broker` command line in a shell snippet of any page is
one the CLI accepts, and the Claude Code inbox hook, run by a shell as Claude Code would, prints
the agent's new mail from a real Redis."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.core
import typer.main
from fastmcp import Client
from helpers import drop_prefix, make_settings

from broker.cli import app
from broker.server import build_server

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "docs" / "clients.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER = "/path/to/agent-broker/.venv/bin/broker"
BROKER = str(Path(sys.executable).with_name("broker"))
FENCE = re.compile(r"^ *```(\w+)\n(.*?)^ *```", re.S | re.M)


def blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang == language]


def servers(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry for key in ("mcpServers", "servers", "mcp_servers") for entry in config.get(key, {}).values()]


def accepted(argv: list[str]) -> None:
    """Parse argv with the real CLI down to its leaf command, without running it."""
    command: Any = typer.main.get_command(app)
    args = list(argv)
    while isinstance(command, typer.core.TyperGroup):
        assert args, f"{argv}: no subcommand"
        name = args.pop(0)
        assert name in command.commands, f"{argv}: no command {name!r}"
        command = command.commands[name]
    command.make_context(command.name or "", args)


def broker_argvs(line: str) -> list[list[str]]:
    """The argument lists after each broker executable in a shell line."""
    tokens = [t for t in shlex.split(line, comments=True) if t not in ("&", "&&", ";", "|")]
    return [tokens[i + 1 :] for i, token in enumerate(tokens) if token.endswith("/broker")]


def hook_commands(path: Path = CLIENTS) -> list[str]:
    found = []
    for body in blocks(path, "json"):
        if "UserPromptSubmit" not in body:
            continue
        for event in json.loads(body).get("hooks", {}).values():
            found += [hook["command"] for group in event for hook in group["hooks"]]
    return found


def test_every_snippet_parses_and_names_real_broker_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    # --agent comes from the environment the agent was started with, as the docs say
    monkeypatch.setenv("AGENT_BROKER_AGENT", "GreenCastle")
    argvs: list[list[str]] = []
    configs = [json.loads(b) for b in blocks(CLIENTS, "json")]
    configs += [tomllib.loads(b) for b in blocks(CLIENTS, "toml")]
    assert len(configs) >= 12
    for config in configs:
        for entry in servers(config):
            if "command" in entry:
                assert entry["command"] == PLACEHOLDER, entry  # never a bare `broker` (not on PATH)
                argvs.append(entry["args"])
            else:
                url = entry.get("url") or entry.get("httpUrl") or entry.get("serverUrl")
                assert url == "http://127.0.0.1:8765/mcp/", entry
    for command in hook_commands():
        argvs += broker_argvs(command)
    for body in [body for page in PAGES for body in blocks(page, "sh")]:
        for line in body.replace("\\\n", " ").splitlines():
            argvs += broker_argvs(line)
    assert ["serve", "--transport", "stdio"] in argvs
    assert any(argv[:2] == ["hook", "check-inbox"] for argv in argvs)
    for argv in argvs:
        accepted(argv)
    # the check does refuse what the CLI refuses (typer's errors subclass its vendored click's)
    with pytest.raises(typer.BadParameter):
        accepted(["serve", "--transport", "sse"])
    with pytest.raises(Exception, match="No such option"):
        accepted(["hook", "check-inbox", "--project", "/p", "--agnet", "x"])


@pytest.mark.integration
async def test_claude_code_hook_prints_new_mail(redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(redis_url, tmp_path / "storage")
    project = str(tmp_path / "repo")
    mcp = build_server(settings)
    try:
        async with Client(mcp) as client:
            await client.call_tool("ensure_project", {"human_key": project})
            for name in ("BlueLake", "GreenCastle"):
                await client.call_tool(
                    "register_agent", {"project_key": project, "program": "p", "model": "m", "name": name}
                )
            await client.call_tool(
                "send_message",
                {"project_key": project, "sender_name": "BlueLake", "to": ["GreenCastle"], "subject": "Hook test",
                 "body_md": "hi"},
            )  # fmt: skip
        (command,) = hook_commands()
        env = {
            "PATH": "/usr/bin:/bin",  # as in a client whose PATH lacks the venv
            "CLAUDE_PROJECT_DIR": project,
            "AGENT_BROKER_AGENT": "GreenCastle",
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": settings.redis_key_prefix,
            "STORAGE_ROOT": str(tmp_path / "storage"),
        }
        run = ["sh", "-c", command.replace(PLACEHOLDER, BROKER)]
        first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith(f"New mail for GreenCastle in {project}: 1 unread message.")
        assert "from BlueLake: Hook test" in first.stdout
        again = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
        assert (again.returncode, again.stdout) == (0, "")  # shown once
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]
