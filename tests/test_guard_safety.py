"""install_precommit_guard / uninstall_precommit_guard write a hook that runs code on every
commit, so (on a real Redis): only an authenticated agent of the project may do it, only into
the project's own repository (core.hooksPath may not lead elsewhere), the hook holds no secret,
and odd paths get coded errors."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from helpers import Tools, git, make_repo, make_settings

from broker.server import build_server
from broker.store.embedded import start_redis_server

pytestmark = pytest.mark.integration

PASSWORD = "hunter2-guard-secret"


@pytest.fixture
def secret_redis(tmp_path: Path) -> AsyncIterator[str]:
    proc, url = start_redis_server(tmp_path / "redis", password=PASSWORD, appendonly=False)
    yield url
    proc.terminate()
    proc.wait(5)


@pytest.fixture
async def world(secret_redis: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    repo = make_repo(tmp_path / "code")
    settings = make_settings(secret_redis, tmp_path / "root", AGENT_AUTH="required")
    mcp = build_server(settings)
    async with Client(mcp) as client:
        tools = Tools(client)
        await tools.project(str(repo))
        agents = {name: await tools.agent(name, project_key=str(repo)) for name in ("BlueLake", "GreenCastle")}
        yield {"tools": tools, "settings": settings, "repo": repo, "agents": agents, "tmp": tmp_path}
    await mcp.store.close()  # type: ignore[attr-defined]


def token(world: dict[str, Any], name: str = "BlueLake") -> str:
    return world["agents"][name]["registration_token"]


async def test_guard_tools_need_the_agents_token(world: dict[str, Any]) -> None:
    tools, repo = world["tools"], world["repo"]
    key = str(repo)
    hook = repo / ".git" / "hooks" / "pre-commit"
    error = await tools.error("install_precommit_guard", project_key=key, code_repo_path=key)
    assert error.startswith("AUTHENTICATION_REQUIRED: "), error
    error = await tools.error(
        "install_precommit_guard",
        project_key=key,
        code_repo_path=key,
        agent_name="BlueLake",
        registration_token="x" * 43,
    )
    assert error.startswith("AUTHENTICATION_FAILED: "), error
    assert not hook.exists()

    installed = await tools.call(
        "install_precommit_guard", project_key=key, code_repo_path=key, agent_name="BlueLake",
        registration_token=token(world),
    )  # fmt: skip
    assert Path(installed["hook"]) == hook

    error = await tools.error("uninstall_precommit_guard", code_repo_path=key)
    assert error.startswith("AUTHENTICATION_REQUIRED: "), error
    error = await tools.error("uninstall_precommit_guard", code_repo_path=key, project_key=key, agent_name="BlueLake")
    assert error.startswith("AUTHENTICATION_REQUIRED: "), error
    assert hook.exists()
    removed = await tools.call(
        "uninstall_precommit_guard", code_repo_path=key, project_key=key, agent_name="GreenCastle",
        registration_token=token(world, "GreenCastle"),
    )  # fmt: skip
    assert removed == {"removed": True} and not hook.exists()


async def test_guard_writes_only_into_the_projects_repository(world: dict[str, Any]) -> None:
    tools, repo, tmp = world["tools"], world["repo"], world["tmp"]
    auth = {"project_key": str(repo), "agent_name": "BlueLake", "registration_token": token(world)}
    elsewhere = make_repo(tmp / "elsewhere")
    error = await tools.error("install_precommit_guard", code_repo_path=str(elsewhere), **auth)
    assert error.startswith("REPOSITORY_OUTSIDE_PROJECT: "), error
    assert not (elsewhere / ".git" / "hooks" / "pre-commit").exists()
    error = await tools.error("install_precommit_guard", code_repo_path=".", **auth)  # the broker's own directory
    assert error.startswith("INVALID_ARGUMENT: ") and "relative" in error, error
    error = await tools.error("install_precommit_guard", code_repo_path=f"{repo}/../elsewhere", **auth)
    assert error.startswith("REPOSITORY_OUTSIDE_PROJECT: "), error
    (repo / "escape").symlink_to(elsewhere)  # a symlink inside the project leading out of it
    error = await tools.error("install_precommit_guard", code_repo_path=str(repo / "escape"), **auth)
    assert error.startswith("REPOSITORY_OUTSIDE_PROJECT: "), error
    assert not (elsewhere / ".git" / "hooks" / "pre-commit").exists()

    # core.hooksPath pointing out of the repository: refused, nothing written there
    outside = tmp / "outside-hooks"
    git(repo, "config", "core.hooksPath", str(outside))
    error = await tools.error("install_precommit_guard", code_repo_path=str(repo), **auth)
    assert error.startswith("HOOKS_PATH_OUTSIDE_REPOSITORY: "), error
    git(repo, "config", "core.hooksPath", "../outside-hooks")
    error = await tools.error("install_precommit_guard", code_repo_path=str(repo), **auth)
    assert error.startswith("HOOKS_PATH_OUTSIDE_REPOSITORY: "), error
    outside.mkdir()
    (repo / "hooks-link").symlink_to(outside)  # inside by name, outside in fact
    git(repo, "config", "core.hooksPath", "hooks-link")
    error = await tools.error("install_precommit_guard", code_repo_path=str(repo), **auth)
    assert error.startswith("HOOKS_PATH_OUTSIDE_REPOSITORY: "), error
    assert list(outside.iterdir()) == []
    error = await tools.error("uninstall_precommit_guard", code_repo_path=str(repo), **auth)
    assert error.startswith("HOOKS_PATH_OUTSIDE_REPOSITORY: "), error

    # a working tree inside the project is the project's too
    git(repo, "config", "--unset", "core.hooksPath")
    nested = make_repo(repo / "vendor" / "lib")
    installed = await tools.call("install_precommit_guard", code_repo_path=str(nested), **auth)
    assert Path(installed["hook"]) == nested / ".git" / "hooks" / "pre-commit"


async def test_hook_holds_no_secret_and_still_checks(world: dict[str, Any]) -> None:
    tools, repo, settings = world["tools"], world["repo"], world["settings"]
    key = str(repo)
    auth = {"agent_name": "BlueLake", "registration_token": token(world)}
    hook = Path((await tools.call("install_precommit_guard", project_key=key, code_repo_path=key, **auth))["hook"])
    text = hook.read_text()
    assert PASSWORD not in text and settings.redis_url not in text and "REDIS_URL=" not in text
    url_file = settings.storage_root / "guard" / "redis.url"
    assert url_file.read_text().strip() == settings.redis_url
    assert stat.S_IMODE(url_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(url_file.parent.stat().st_mode) == 0o700

    await tools.call("file_reservation_paths", project_key=key, paths=["src/"], **auth)
    (repo / "src").mkdir()
    (repo / "src" / "a.py").write_text("x\n")
    git(repo, "add", "src/a.py")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "STORAGE_ROOT", "REDIS_KEY_PREFIX")}
    refused = git(repo, "commit", "-q", "-m", "a", env={**env, "AGENT_NAME": "GreenCastle"})
    assert refused.returncode != 0 and "holder: BlueLake" in refused.stderr, refused.stderr


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/" + "a" * 5000, "INVALID_ARGUMENT"),  # longer than PATH_MAX
        ("/tmp/" + "b" * 300, "NOT_A_GIT_REPOSITORY"),  # a component longer than NAME_MAX
        ("/tmp/x\x00y", "INVALID_ARGUMENT"),
        ("", "INVALID_ARGUMENT"),
    ],
)
async def test_odd_repository_paths_get_coded_errors(redis_url: str, tmp_path: Path, path: str, code: str) -> None:
    """Under open auth (no agent arguments, as the reference calls them)."""
    repo = make_repo(tmp_path / "code")
    mcp = build_server(make_settings(redis_url, tmp_path / "root"))
    async with Client(mcp) as client:
        tools = Tools(client)
        await tools.project(str(repo))
        for tool, args in (
            ("install_precommit_guard", {"project_key": str(repo)}),
            ("uninstall_precommit_guard", {}),
        ):
            error = await tools.error(tool, code_repo_path=path, **args)
            assert error.startswith(f"{code}: "), (tool, error[:200])
    await mcp.store.close()  # type: ignore[attr-defined]
