"""The pre-commit guard in a temporary git repository, against a real Redis: install (chaining an
existing hook), refusal, the holder's own commit, bypass, advisory mode, an unreachable broker,
uninstall; and force release weighing file and git activity in the project's directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from helpers import Tools, make_settings

from broker.server import build_server

pytestmark = pytest.mark.integration

OLD_HOOK = '#!/bin/sh\necho chained >> "$(git rev-parse --git-dir)/chained-ran"\n'


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "code"
    path.mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.email", "agent@example.com")
    git(path, "config", "user.name", "Agent")
    (path / "src").mkdir()
    (path / "docs").mkdir()
    hook = path / ".git" / "hooks" / "pre-commit"
    hook.write_text(OLD_HOOK)
    hook.chmod(0o755)
    return path


@pytest.fixture
async def world(redis_url: str, tmp_path: Path, repo: Path) -> Any:
    settings = make_settings(redis_url, tmp_path / "root", FILE_RESERVATION_INACTIVITY_SECONDS=0)
    mcp = build_server(settings)
    async with Client(mcp) as client:
        tools = Tools(client)
        await tools.project(str(repo))
        for name in ("BlueLake", "GreenCastle"):
            await tools.agent(name, project_key=str(repo))
        yield tools, settings
    await mcp.store.close()  # type: ignore[attr-defined]


def commit(repo: Path, path: str, settings: Any, **env: str) -> subprocess.CompletedProcess[str]:
    target = repo / path
    target.write_text(f"{target.read_text() if target.exists() else ''}change\n")
    git(repo, "add", path)
    full = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "STORAGE_ROOT": str(settings.storage_root),
        **env,
    }
    return git(repo, "commit", "-q", "-m", f"edit {path}", env=full)


async def test_guard_refuses_commits_on_paths_held_by_others(world: Any, repo: Path) -> None:
    tools, settings = world
    installed = await tools.call("install_precommit_guard", project_key=str(repo), code_repo_path=str(repo))
    hook = Path(installed["hook"])
    assert hook == repo / ".git" / "hooks" / "pre-commit"
    assert (hook.parent / "pre-commit.orig").read_text() == OLD_HOOK  # kept, to be chained
    await tools.call("file_reservation_paths", project_key=str(repo), agent_name="BlueLake", paths=["src/"])

    refused = commit(repo, "src/app.py", settings, AGENT_NAME="GreenCastle")
    assert refused.returncode != 0
    assert "- src/app.py matches src/** (holder: BlueLake" in refused.stderr, refused.stderr
    assert not (repo / ".git" / "chained-ran").exists()
    assert git(repo, "log", "--oneline").returncode != 0  # nothing was committed

    warned = commit(repo, "src/app.py", settings, AGENT_NAME="GreenCastle", AGENT_MAIL_GUARD_MODE="warn")
    assert warned.returncode == 0, warned.stderr
    assert "advisory mode" in warned.stderr and "holder: BlueLake" in warned.stderr

    bypassed = commit(repo, "src/app.py", settings, AGENT_NAME="GreenCastle", AGENT_MAIL_BYPASS="1")
    assert bypassed.returncode == 0, bypassed.stderr

    own = commit(repo, "src/app.py", settings, AGENT_NAME="bluelake")  # names are case-insensitive
    assert own.returncode == 0, own.stderr
    elsewhere = commit(repo, "docs/guide.md", settings, AGENT_NAME="GreenCastle")
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert (repo / ".git" / "chained-ran").read_text().count("chained") == 4  # the old hook ran each time

    # a rename out of a reserved directory touches it too
    git(repo, "mv", "src/app.py", "docs/app.py")
    renamed = git(repo, "commit", "-q", "-m", "move", env={**os.environ, "REDIS_URL": settings.redis_url,
        "REDIS_KEY_PREFIX": settings.redis_key_prefix, "AGENT_NAME": "GreenCastle"})  # fmt: skip
    assert renamed.returncode != 0 and "src/app.py matches src/**" in renamed.stderr

    # shared reservations do not block
    await tools.call("release_file_reservations", project_key=str(repo), agent_name="BlueLake")
    await tools.call(
        "file_reservation_paths", project_key=str(repo), agent_name="BlueLake", paths=["src/**"], exclusive=False
    )
    assert commit(repo, "src/more.py", settings, AGENT_NAME="GreenCastle").returncode == 0


async def test_a_hook_installed_by_an_earlier_release_still_guards(world: Any, repo: Path) -> None:
    """Hooks stay on disk in users' repositories: the line an earlier release wrote (before the
    package layout changed) must still run the check, not fail every commit on a missing module."""
    tools, settings = world
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text(
        "#!/bin/sh\n"
        f': "${{BROKER_GUARD_PROJECT:={repo}}}"; export BROKER_GUARD_PROJECT\n'
        f'{sys.executable} -m broker.guard check --project "$BROKER_GUARD_PROJECT" || exit $?\n'
    )
    await tools.call("file_reservation_paths", project_key=str(repo), agent_name="BlueLake", paths=["src/"])
    refused = commit(repo, "src/app.py", settings, AGENT_NAME="GreenCastle")
    assert refused.returncode != 0
    assert "- src/app.py matches src/** (holder: BlueLake" in refused.stderr, refused.stderr
    git(repo, "reset", "-q")  # unstage the refused change
    allowed = commit(repo, "docs/guide.md", settings, AGENT_NAME="GreenCastle")
    assert allowed.returncode == 0, allowed.stderr


def test_the_hook_check_path_does_not_load_the_mcp_server_libraries() -> None:
    """The hook runs on every commit: importing the guard must not pull in fastmcp (about 0.6 s)."""
    probe = "import sys, broker.guard; print(sorted(m for m in sys.modules if m.split('.')[0] == 'fastmcp'))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


async def test_guard_when_the_broker_is_unreachable(world: Any, repo: Path) -> None:
    tools, settings = world
    await tools.call("install_precommit_guard", project_key=str(repo), code_repo_path=str(repo))
    down = {"REDIS_URL": "redis://127.0.0.1:1/0", "AGENT_NAME": "GreenCastle"}
    allowed = commit(repo, "src/a.py", settings, **down)
    assert allowed.returncode == 0
    assert "cannot read reservations" in allowed.stderr and "committing without the check" in allowed.stderr
    blocked = commit(repo, "src/a.py", settings, **down, BROKER_GUARD_UNREACHABLE="block")
    assert blocked.returncode != 0 and "refusing the commit" in blocked.stderr


async def test_install_is_idempotent_and_uninstall_restores(world: Any, repo: Path) -> None:
    tools, _ = world
    args = {"project_key": str(repo), "code_repo_path": str(repo)}
    first = await tools.call("install_precommit_guard", **args)
    assert await tools.call("install_precommit_guard", **args) == first
    hooks = repo / ".git" / "hooks"
    assert (hooks / "pre-commit.orig").read_text() == OLD_HOOK
    assert await tools.call("uninstall_precommit_guard", code_repo_path=str(repo)) == {"removed": True}
    assert (hooks / "pre-commit").read_text() == OLD_HOOK
    assert not (hooks / "pre-commit.orig").exists()
    assert await tools.call("uninstall_precommit_guard", code_repo_path=str(repo)) == {"removed": False}
    assert (hooks / "pre-commit").read_text() == OLD_HOOK  # someone else's hook is never removed
    error = await tools.error(
        "install_precommit_guard", project_key=str(repo), code_repo_path=str(repo / "docs" / "nope")
    )
    assert error.startswith("NOT_A_GIT_REPOSITORY: "), error


def test_cli_install_and_uninstall(repo: Path, tmp_path: Path) -> None:
    broker = [sys.executable, "-m", "broker.cli"]
    env = {**os.environ, "STORAGE_ROOT": str(tmp_path / "root")}
    done = subprocess.run(
        [*broker, "guard", "install", "--project", str(repo)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "# agent-broker pre-commit guard" in (repo / ".git" / "hooks" / "pre-commit").read_text()
    done = subprocess.run([*broker, "guard", "uninstall", "--repo", str(repo)], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "removed the guard" in done.stderr
    assert (repo / ".git" / "hooks" / "pre-commit").read_text() == OLD_HOOK


async def test_force_release_weighs_file_and_git_activity(world: Any, repo: Path) -> None:
    """Holder idle and silent, but its files changed a moment ago: not stale. A pattern that
    matches no file in the directory is judged on agent and mail activity alone."""
    tools, _ = world
    (repo / "src" / "app.py").write_text("x = 1\n")
    git(repo, "add", "src/app.py")
    git(repo, "commit", "-q", "--no-verify", "-m", "app")
    key = str(repo)
    active = await tools.call("file_reservation_paths", project_key=key, agent_name="BlueLake", paths=["src/app.py"])
    error = await tools.error(
        "force_release_file_reservation", project_key=key, agent_name="GreenCastle",
        file_reservation_id=active["granted"][0]["id"],
    )  # fmt: skip
    assert error.startswith("RESERVATION_ACTIVE: "), error
    assert "filesystem_activity_recent" in error and "git_activity_recent" in error
    ghost = await tools.call("file_reservation_paths", project_key=key, agent_name="BlueLake", paths=["gone/**"])
    released = await tools.call(
        "force_release_file_reservation", project_key=key, agent_name="GreenCastle",
        file_reservation_id=ghost["granted"][0]["id"], notify_previous=False,
    )  # fmt: skip
    assert released["released"] == 1
    assert "path_pattern_unmatched" in released["reservation"]["stale_reasons"]
    assert released["reservation"]["notified"] is False


async def test_guard_reads_odd_staged_names(world: Any, repo: Path) -> None:
    """Spaces, a newline and non-ASCII in staged names, core.hooksPath pointing at a directory
    that does not exist yet: the guard still installs there and sees every staged path."""
    tools, settings = world
    git(repo, "config", "core.hooksPath", ".githooks")
    installed = await tools.call("install_precommit_guard", project_key=str(repo), code_repo_path=str(repo))
    assert Path(installed["hook"]) == (repo / ".githooks" / "pre-commit").resolve()
    await tools.call("file_reservation_paths", project_key=str(repo), agent_name="BlueLake", paths=["src/ünï cödé/"])
    (repo / "src" / "ünï cödé").mkdir()
    refused = commit(repo, "src/ünï cödé/a\nb é.py", settings, AGENT_NAME="GreenCastle")
    assert refused.returncode != 0, refused.stderr
    assert "matches src/ünï cödé/** (holder: BlueLake" in refused.stderr, refused.stderr


async def test_force_release_past_a_dangling_symlink(world: Any, repo: Path) -> None:
    """A matching path that cannot be stat'ed (a dangling symlink, as build trees have) is no
    evidence of activity; it must not make force release fail."""
    tools, _ = world
    (repo / "src" / "old.py").write_text("x = 1\n")
    os.utime(repo / "src" / "old.py", (1_000_000_000, 1_000_000_000))  # long untouched
    (repo / "src" / "link.py").symlink_to(repo / "src" / "missing.py")
    os.utime(repo / "src" / "link.py", (1_000_000_000, 1_000_000_000), follow_symlinks=False)
    key = str(repo)
    held = await tools.call("file_reservation_paths", project_key=key, agent_name="BlueLake", paths=["src/"])
    released = await tools.call(
        "force_release_file_reservation", project_key=key, agent_name="GreenCastle",
        file_reservation_id=held["granted"][0]["id"], notify_previous=False,
    )  # fmt: skip
    assert released["released"] == 1
