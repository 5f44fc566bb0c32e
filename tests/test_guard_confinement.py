"""The guard tools' confinement against a stranger who joins (or creates) a project on a shared
broker under AGENT_AUTH=required (real redis-server): joining is free, so a project's path is
all that ties a hook to a repository, and it must not reach repositories that are not the
project's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from helpers import Tools, make_repo, make_settings

from broker.server import build_server

pytestmark = pytest.mark.integration


@pytest.fixture
async def tools(redis_url: str, tmp_path: Path) -> AsyncIterator[Tools]:
    mcp = build_server(make_settings(redis_url, tmp_path / "root", AGENT_AUTH="required"))
    async with Client(mcp) as client:
        yield Tools(client)
    await mcp.store.close()  # type: ignore[attr-defined]


async def join(tools: Tools, project: str, name: str) -> dict[str, Any]:
    """What anyone who reaches the broker can do: create or join a project, register an agent."""
    await tools.project(project)
    agent = await tools.agent(name, project_key=project)
    return {"project_key": project, "agent_name": name, "registration_token": agent["registration_token"]}


@pytest.mark.parametrize("ancestor", ["/", "workspace"])
async def test_a_project_at_an_ancestor_directory_reaches_no_repository_below_it(
    tools: Tools, tmp_path: Path, ancestor: str
) -> None:
    """A stranger makes a project of '/' (or of any directory that is not a repository, above
    another team's repository): every repository below would count as 'inside the project', so
    the stranger could put a hook that checks the stranger's reservations into it, or take the
    team's guard out. The repository must be the project's own."""
    root = tmp_path / "workspace"
    victim = make_repo(root / "team" / "code")
    team = await join(tools, str(victim), "BlueLake")
    hook = victim / ".git" / "hooks" / "pre-commit"
    await tools.call("install_precommit_guard", code_repo_path=str(victim), **team)
    guard = hook.read_text()

    stranger = await join(tools, "/" if ancestor == "/" else str(root), "RedFox")
    for tool in ("install_precommit_guard", "uninstall_precommit_guard"):
        error = await tools.error(tool, code_repo_path=str(victim), **stranger)
        assert error.startswith("REPOSITORY_OUTSIDE_PROJECT: "), (tool, error)
    assert hook.read_text() == guard  # still the team's guard, checking the team's project


async def test_a_project_inside_a_teams_repository_leaves_the_teams_guard_alone(tools: Tools, tmp_path: Path) -> None:
    """A stranger makes a project of a directory inside the team's repository (its path is the
    'project's own repository' too): the stranger must not take out the team's guard, nor
    replace it with one that checks the stranger's project."""
    victim = make_repo(tmp_path / "code")
    (victim / "docs").mkdir()
    team = await join(tools, str(victim), "BlueLake")
    hook = victim / ".git" / "hooks" / "pre-commit"
    await tools.call("install_precommit_guard", code_repo_path=str(victim), **team)
    guard = hook.read_text()

    inner = str(victim / "docs")
    stranger = await join(tools, inner, "RedFox")
    for tool in ("install_precommit_guard", "uninstall_precommit_guard"):
        error = await tools.error(tool, code_repo_path=inner, **stranger)
        assert error.startswith("GUARD_OF_ANOTHER_PROJECT: "), (tool, error)
        assert hook.read_text() == guard

    # the team itself still re-installs and removes its own guard
    await tools.call("install_precommit_guard", code_repo_path=str(victim), **team)
    assert hook.read_text() == guard
    assert await tools.call("uninstall_precommit_guard", code_repo_path=str(victim), **team) == {"removed": True}
    assert not hook.exists()
