"""The git pre-commit guard: refuse a commit that touches files another agent holds exclusively.

``install`` writes a small ``pre-commit`` shell hook that runs ``python -m broker.guard check``
with the broker's settings baked in (project, STORAGE_ROOT, key prefix, and REDIS_URL when the
broker was given one); an existing hook is kept as ``pre-commit.orig`` and run after the check.
The check reads live reservations straight from Redis (read-only) and matches the staged paths
with ``broker.globs`` (the twin of the Lua matcher). Environment at commit time:

* ``AGENT_NAME``: the committing agent; its own reservations never block it.
* ``AGENT_MAIL_BYPASS=1``: skip the check.
* ``AGENT_MAIL_GUARD_MODE=warn`` (or ``advisory``/``adv``): report conflicts, commit anyway.
* ``BROKER_GUARD_UNREACHABLE=block``: refuse to commit when the broker's Redis cannot be read
  (default: say so and allow the commit, since reservations are advisory).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from broker import globs
from broker.config import Settings, get_settings
from broker.keys import Keys
from broker.slugs import resolve_sync

if TYPE_CHECKING:
    from broker.store import Store

# The hook runs on every commit, so the check path imports nothing heavy (no fastmcp): the
# install side imports BrokerError and the identity module where it needs them.

MARKER = "# agent-broker pre-commit guard"
WARN_MODES = {"warn", "advisory", "adv"}


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)


def hooks_dir(repo_path: str) -> Path:
    """The repository's hooks directory (core.hooksPath when set), or NOT_A_GIT_REPOSITORY."""
    from broker.errors import BrokerError

    repo = Path(repo_path).expanduser()
    found = git(repo, "rev-parse", "--git-path", "hooks") if repo.is_dir() else None
    if found is None or found.returncode != 0:
        raise BrokerError(
            "NOT_A_GIT_REPOSITORY",
            f"'{repo_path}' is not a git repository on the broker's machine. Pass the absolute path of "
            "the working tree, e.g. code_repo_path='/home/me/project'.",
        )
    path = Path(found.stdout.strip())
    return path if path.is_absolute() else (repo / path).resolve()


def is_ours(hook: Path) -> bool:
    try:
        return MARKER in hook.read_text(errors="replace")
    except OSError:
        return False


def hook_script(settings: Settings, project_key: str) -> str:
    exports = {
        "BROKER_GUARD_PROJECT": project_key,
        "STORAGE_ROOT": str(settings.storage_root),
        "REDIS_KEY_PREFIX": settings.redis_key_prefix,
    }
    if settings.redis_url:
        exports["REDIS_URL"] = settings.redis_url
    lines = [
        "#!/bin/sh",
        MARKER + " (remove with uninstall_precommit_guard or `broker guard uninstall`)",
        "# Bypass once: AGENT_MAIL_BYPASS=1 git commit ...; report only: AGENT_MAIL_GUARD_MODE=warn",
    ]
    for name, value in exports.items():
        lines.append(f': "${{{name}:={shlex.quote(value)}}}"; export {name}')
    lines += [
        f'{shlex.quote(sys.executable)} -m broker.guard check --project "$BROKER_GUARD_PROJECT" || exit $?',
        'chained="$(dirname "$0")/pre-commit.orig"',
        'if [ -x "$chained" ]; then exec "$chained" "$@"; fi',
        "",
    ]
    return "\n".join(lines)


def install(settings: Settings, project_key: str, repo_path: str) -> dict[str, str]:
    directory = hooks_dir(repo_path)
    directory.mkdir(parents=True, exist_ok=True)
    hook, chained = directory / "pre-commit", directory / "pre-commit.orig"
    if hook.exists() and not is_ours(hook):
        if chained.exists():
            from broker.errors import BrokerError

            raise BrokerError(
                "HOOK_EXISTS",
                f"{hook} and {chained} both exist and neither is the broker's; merge them into one hook, then install again.",
            )
        hook.rename(chained)  # kept and run after the check
    hook.write_text(hook_script(settings, project_key))
    hook.chmod(0o755)
    return {"hook": str(hook)}


def uninstall_sync(repo_path: str) -> dict[str, bool]:
    directory = hooks_dir(repo_path)
    hook, chained = directory / "pre-commit", directory / "pre-commit.orig"
    if not is_ours(hook):
        return {"removed": False}
    hook.unlink()
    if chained.exists():
        chained.rename(hook)
    return {"removed": True}


async def install_for_project(store: Store, project_key: str, repo_path: str) -> dict[str, str]:
    from broker.identity import project_slug

    slug = await project_slug(store, project_key)
    human_key = await store.redis.hget(store.keys.project(slug), "human_key")
    if human_key is None:
        raise await store.project_not_found(project_key)
    return await asyncio.to_thread(install, store.settings, human_key, repo_path)


async def uninstall(repo_path: str) -> dict[str, bool]:
    return await asyncio.to_thread(uninstall_sync, repo_path)


# -- the check the hook runs ---------------------------------------------------------------
def staged_paths(repo: Path) -> list[str]:
    """Paths the commit touches, rename and copy sources included."""
    out = git(repo, "diff", "--cached", "--name-status", "-z", "-M")
    fields = out.stdout.split("\0")
    paths: list[str] = []
    i = 0
    while i < len(fields) and fields[i]:
        status = fields[i]
        count = 2 if status[:1] in ("R", "C") else 1
        paths += fields[i + 1 : i + 1 + count]
        i += 1 + count
    return paths


def redis_url_for(settings: Settings) -> str | None:
    """REDIS_URL, else the embedded server's URL when one runs; never starts a server."""
    if settings.redis_url:
        return settings.redis_url
    url_file = settings.storage_root / "redis" / "server.url"
    return url_file.read_text().strip() if url_file.exists() else None


def live_exclusive(settings: Settings, project_key: str) -> list[dict[str, Any]]:
    url = redis_url_for(settings)
    if url is None:
        raise redis.ConnectionError(f"no REDIS_URL and no embedded broker Redis under {settings.storage_root}")
    keys = Keys(settings.redis_key_prefix)
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=3, socket_connect_timeout=3)
    try:
        slug = resolve_sync(client, keys, project_key)
        if slug is None:
            return []
        now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
        ids = client.zrangebyscore(keys.reservation_expiry(slug), f"({now_us}", "+inf")
        pipe = client.pipeline(transaction=False)
        for reservation_id in ids:
            pipe.hgetall(keys.reservation(slug, reservation_id))
        records = pipe.execute()
    finally:
        client.close()
    return [
        r for r in records if r.get("exclusive") == "1" and not r.get("released_us") and int(r["expires_us"]) > now_us
    ]


def check(project_key: str, repo: Path, env: dict[str, str]) -> int:
    """Exit status for the hook: 0 to let the commit through, 1 to refuse it."""
    if env.get("AGENT_MAIL_BYPASS") == "1":
        print("agent-broker guard: bypassed (AGENT_MAIL_BYPASS=1)", file=sys.stderr)
        return 0
    me = env.get("AGENT_NAME", "").strip().lower()
    try:
        held = live_exclusive(get_settings(), project_key)
    except (redis.RedisError, OSError) as exc:
        block = env.get("BROKER_GUARD_UNREACHABLE", "").lower() == "block"
        print(
            f"agent-broker guard: cannot read reservations ({exc}); "
            + ("refusing the commit (BROKER_GUARD_UNREACHABLE=block)." if block else "committing without the check.")
            + " Start the broker or set REDIS_URL.",
            file=sys.stderr,
        )
        return 1 if block else 0
    conflicts = [
        (path, record)
        for path in staged_paths(repo)
        for record in held
        if record["agent"].lower() != me and globs.matches(record["path_pattern"], path)
    ]
    if not conflicts:
        return 0
    print("agent-broker guard: these staged paths are reserved exclusively by other agents:", file=sys.stderr)
    for path, record in conflicts:
        until = datetime.fromtimestamp(int(record["expires_us"]) / 1_000_000, UTC).isoformat()
        print(f"- {path} matches {record['path_pattern']} (holder: {record['agent']}, until {until})", file=sys.stderr)
    if not me:
        print("(AGENT_NAME is not set, so every holder counts; set it to your agent name.)", file=sys.stderr)
    if env.get("AGENT_MAIL_GUARD_MODE", "").lower() in WARN_MODES:
        print("agent-broker guard: advisory mode, committing anyway.", file=sys.stderr)
        return 0
    print(
        "Ask the holder by mail to release them, wait for them to expire, or bypass once with "
        "AGENT_MAIL_BYPASS=1 (AGENT_MAIL_GUARD_MODE=warn only reports).",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    """``python -m broker.guard check --project KEY [--repo PATH]``: what the hook runs. Parsed
    here rather than by the ``broker`` CLI, whose imports would cost every commit a second."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m broker.guard")
    commands = parser.add_subparsers(dest="command", required=True)
    check_parser = commands.add_parser("check", help="exit 1 if staged paths are reserved by another agent")
    check_parser.add_argument("--project", required=True, help="project key the reservations belong to")
    check_parser.add_argument("--repo", default=".", help="git working tree whose staged paths to check")
    args = parser.parse_args(argv)
    return check(args.project, Path(args.repo), dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())
