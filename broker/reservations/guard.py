"""The git pre-commit guard: refuse a commit that touches files another agent holds exclusively.

``install`` writes a small ``pre-commit`` shell hook that runs ``python -m broker.guard check`` (broker/guard.py)
with the broker's settings baked in (project, STORAGE_ROOT, key prefix; never REDIS_URL, which
may hold a password: the hook takes it from the environment or from an owner-only file);
an existing hook is kept as ``pre-commit.orig`` and run after the check. The tools write only
into the project's own repository, for an authenticated agent (see ``hooks_dir``).
The check reads live reservations straight from Redis (read-only) and matches the staged paths
with ``broker.reservations.globs`` (the twin of the Lua matcher). Environment at commit time:

* ``AGENT_NAME``: the committing agent; its own reservations never block it.
* ``AGENT_MAIL_BYPASS=1``: skip the check.
* ``AGENT_MAIL_GUARD_MODE=warn`` (or ``advisory``/``adv``): report conflicts, commit anyway.
* ``BROKER_GUARD_UNREACHABLE=block``: refuse to commit when the broker's Redis cannot be read
  (default: say so and allow the commit, since reservations are advisory).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from broker.config import Settings, get_settings
from broker.identity.slugs import resolve_sync
from broker.reservations import globs
from broker.store.commands import identity as identity_store
from broker.store.commands import projects
from broker.store.commands import reservations as reservation_store
from broker.store.commands.reservation_record import ReservationRecord
from broker.store.errors import StoreFailure
from broker.store.keys import Keys, looks_like_path, slugify
from broker.store.refusals import Refusal

if TYPE_CHECKING:
    from broker.store.store import Store

# The hook runs on every commit, so the check path imports nothing heavy (no fastmcp): the
# install side imports BrokerError and the identity module where it needs them.

MARKER = "# agent-broker pre-commit guard"
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux
GUARD_DIR, URL_FILE = "guard", "redis.url"
WARN_MODES = {"warn", "advisory", "adv"}


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)


def _error(code: str, message: str) -> Exception:
    from broker.errors import BrokerError

    return BrokerError(code, message)


def check_repo_path(repo_path: object, relative_ok: bool = False) -> str:
    """code_repo_path once it can name a directory: text, no NUL, at most PATH_MAX, absolute
    (the broker's working directory means nothing to a remote agent; the CLI passes its own)."""
    if not isinstance(repo_path, str) or not repo_path.strip():
        raise _error("INVALID_ARGUMENT", "code_repo_path is empty. Pass the absolute path of the git working tree.")
    if "\0" in repo_path:
        raise _error("INVALID_ARGUMENT", "code_repo_path contains a NUL character; pass the working tree's path.")
    if len(repo_path) > MAX_PATH_CHARS:
        raise _error(
            "INVALID_ARGUMENT",
            f"code_repo_path has {len(repo_path)} characters; the limit is {MAX_PATH_CHARS}. Pass the working tree's path.",
        )
    if not relative_ok and not os.path.isabs(repo_path):
        raise _error(
            "INVALID_ARGUMENT",
            f"code_repo_path '{repo_path}' is relative. Pass the absolute path of the project's working tree, "
            "e.g. code_repo_path='/home/me/project'.",
        )
    return repo_path


def _not_a_repository(repo_path: str) -> Exception:
    return _error(
        "NOT_A_GIT_REPOSITORY",
        f"'{repo_path}' is not a git working tree on the broker's machine. Pass the absolute path of the "
        "working tree, e.g. code_repo_path='/home/me/project'.",
    )


def _inside(path: str, root: str) -> bool:
    return path == root or os.path.commonpath([path, root]) == root


def _in_a_repository(path: str) -> bool:
    found = git(Path(path), "rev-parse", "--show-toplevel") if os.path.isdir(path) else None
    return found is not None and found.returncode == 0 and bool(found.stdout.strip())


def hooks_dir(repo_path: str, project_root: str | None = None) -> Path:
    """The repository's hooks directory (core.hooksPath when set). With ``project_root`` (the
    project's human_key), the repository must be that path, or a working tree inside it when
    that path is itself in a repository. Either way the hooks directory must be inside the
    repository (its working tree or its git directory): a core.hooksPath pointing elsewhere is
    refused, since the hook would be written there."""
    repo = Path(repo_path).expanduser()
    try:
        found = (
            git(repo, "rev-parse", "--show-toplevel", "--git-common-dir", "--git-path", "hooks")
            if repo.is_dir()
            else None
        )
    except (OSError, ValueError):  # e.g. a path component longer than NAME_MAX
        found = None
    lines = found.stdout.splitlines() if found is not None and found.returncode == 0 else []
    if len(lines) != 3:
        raise _not_a_repository(repo_path)
    top, common, hooks = (Path(line) if Path(line).is_absolute() else repo / line for line in lines)
    real_repo, real_top = os.path.realpath(repo), os.path.realpath(top)
    if project_root is not None:
        root = os.path.realpath(project_root)
        # A working tree below the project's path counts only when that path is itself in a
        # repository (a nested one, e.g. vendor/lib): joining a project is free, so a project
        # made of '/' or of any non-repository directory must not reach the repositories below it.
        if not (real_repo == root or (_inside(real_top, root) and _in_a_repository(root))):
            raise _error(
                "REPOSITORY_OUTSIDE_PROJECT",
                f"'{repo_path}' is not the project's repository: pass the project's path '{project_root}' or a "
                "git working tree inside it (when that path is itself in a repository).",
            )
    real_hooks = os.path.realpath(hooks)
    if not (_inside(real_hooks, real_top) or _inside(real_hooks, os.path.realpath(common))):
        raise _error(
            "HOOKS_PATH_OUTSIDE_REPOSITORY",
            f"core.hooksPath of '{repo_path}' points at '{real_hooks}', outside the repository; the guard "
            "writes only inside it. Point core.hooksPath inside the repository (or unset it), then install again.",
        )
    return Path(real_hooks)


def is_ours(hook: Path) -> bool:
    try:
        return not hook.is_symlink() and MARKER in hook.read_text(errors="replace")
    except OSError:
        return False


def _checks_project(hook: Path, slug: str, human_key: str) -> bool:
    """Whether our hook at ``hook`` checks this project (the tools bake its slug; the CLI bakes
    the key it was given, a slug or a path)."""
    found = re.search(r'^: "\$\{BROKER_GUARD_PROJECT:=(.*)\}"; export', hook.read_text(errors="replace"), re.M)
    if found is None:
        return False
    try:
        words = shlex.split(found.group(1))
    except ValueError:
        return False
    baked = words[0] if len(words) == 1 else ""
    return baked == slug or (os.path.normpath(baked) == human_key if looks_like_path(baked) else slugify(baked) == slug)


def _refuse_foreign(hook: Path, owner: tuple[str, str] | None) -> None:
    """A hook of ours that checks another project is that project's: joining a project is free,
    so one project's agent must not take out or replace another project's guard."""
    if owner is not None and is_ours(hook) and not _checks_project(hook, *owner):
        raise _error(
            "GUARD_OF_ANOTHER_PROJECT",
            f"{hook} is the guard of another project of this broker; only that project's agents (or the "
            "repository's owner, with `broker guard uninstall`) may change it.",
        )


def hook_script(settings: Settings, project_key: str) -> str:
    """The hook. It holds no secret: the Redis URL (which may carry a password) comes at commit
    time from REDIS_URL, else from the owner-only file ``install`` wrote (see redis_url_for)."""
    exports = {
        "BROKER_GUARD_PROJECT": project_key,
        "STORAGE_ROOT": str(settings.storage_root),
        "REDIS_KEY_PREFIX": settings.redis_key_prefix,
    }
    lines = [
        "#!/bin/sh",
        MARKER + " (remove with uninstall_precommit_guard or `broker guard uninstall`)",
        "# Bypass once: AGENT_MAIL_BYPASS=1 git commit ...; report only: AGENT_MAIL_GUARD_MODE=warn",
        "# Redis: $REDIS_URL, else the owner-only file $STORAGE_ROOT/guard/redis.url (no secret is kept here)",
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


def _write(path: Path, text: str, mode: int) -> None:
    """Write through a new file renamed into place: a symlink planted at ``path`` is replaced,
    never followed, and no reader sees half a hook."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(temp, mode)  # whatever the umask
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def save_redis_url(settings: Settings) -> None:
    """Keep REDIS_URL for the hook in an owner-only file (dir 0700, file 0600): the hook reads it
    when the committing shell has no REDIS_URL; other local users cannot."""
    directory = settings.storage_root / GUARD_DIR
    if not settings.data_redis_url or settings.data_redis_url.startswith("memory://"):
        (directory / URL_FILE).unlink(missing_ok=True)  # a stale URL must not beat the embedded one
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    _write(directory / URL_FILE, settings.data_redis_url + "\n", 0o600)


def install(settings: Settings, project_key: str, repo_path: str, project_root: str | None = None) -> dict[str, str]:
    """Write the hook. ``project_key`` is baked in (a slug from the tools, whatever the CLI was
    given); ``project_root`` confines the repository to the project's path (the tools)."""
    directory = hooks_dir(repo_path, project_root)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        hook, chained = directory / "pre-commit", directory / "pre-commit.orig"
        _refuse_foreign(hook, (project_key, project_root) if project_root is not None else None)
        if (hook.exists() or hook.is_symlink()) and not is_ours(hook):
            if chained.exists() or chained.is_symlink():
                raise _error(
                    "HOOK_EXISTS",
                    f"{hook} and {chained} both exist and neither is the broker's; merge them into one hook, then install again.",
                )
            hook.rename(chained)  # kept and run after the check
        save_redis_url(settings)
        _write(hook, hook_script(settings, project_key), 0o755)
    except OSError as exc:
        raise _error(
            "HOOK_WRITE_FAILED", f"Could not write the hook in {directory}: {exc.strerror}. Check its permissions."
        ) from None
    return {"hook": str(hook)}


def uninstall_sync(repo_path: str, project_root: str | None = None, slug: str | None = None) -> dict[str, bool]:
    """Remove our hook; with ``project_root`` and ``slug`` (the tools), only this project's."""
    directory = hooks_dir(repo_path, project_root)
    hook, chained = directory / "pre-commit", directory / "pre-commit.orig"
    if not is_ours(hook):
        return {"removed": False}
    _refuse_foreign(hook, (slug, project_root) if project_root is not None and slug is not None else None)
    try:
        hook.unlink()
        if chained.exists() or chained.is_symlink():
            chained.rename(hook)
    except OSError as exc:
        raise _error("HOOK_WRITE_FAILED", f"Could not remove the hook in {directory}: {exc.strerror}.") from None
    return {"removed": True}


async def _authorized_root(
    store: Store, project_key: str, agent_name: str | None, token: str | None, tool: str
) -> tuple[str, str]:
    """(slug, human_key) of the project once the caller proved it is one of its agents: a
    hook runs code on every commit, so writing one is an agent's act, never an anonymous one.
    Under AGENT_AUTH=open a call without agent_name is let through, as in the reference."""
    from broker.identity.names import validate_name
    from broker.identity.projects import project_slug

    slug = await project_slug(store, project_key)
    name = agent_name if agent_name and agent_name.strip() else store.bindings.current_agent(slug)
    if name is None:
        if store.bindings.mode != "open":
            raise _error(
                "AUTHENTICATION_REQUIRED",
                f"{tool} writes a git hook, so it needs agent_name and registration_token of an agent of "
                "this project (the token register_agent returned).",
            )
    else:
        name = validate_name(name)
        digest, require = store.bindings.args(slug, name, token)
        try:
            await identity_store.get_agent(store, slug=slug, name=name, credentials=(digest, require))
        except Refusal as refusal:
            from broker.identity import refusals  # not at import: it loads fastmcp (see above)

            await refusals.raise_for(store, refusal.reply, slug, project_key)
    human_key = await projects.human_key(store, slug=slug)
    if human_key is None:
        from broker.identity import refusals

        raise await refusals.project_not_found(store, project_key)
    return slug, human_key


async def install_for_project(
    store: Store, project_key: str, repo_path: object, agent_name: str | None, token: str | None
) -> dict[str, str]:
    path = check_repo_path(repo_path)
    slug, human_key = await _authorized_root(store, project_key, agent_name, token, "install_precommit_guard")
    # the slug, not the path: it never changes owner, so the hook cannot come to check another project
    return await asyncio.to_thread(install, store.settings, slug, path, human_key)


async def uninstall(
    store: Store, repo_path: object, project_key: str | None, agent_name: str | None, token: str | None
) -> dict[str, bool]:
    path = check_repo_path(repo_path)
    if project_key is None:
        if store.bindings.mode != "open":
            raise _error(
                "AUTHENTICATION_REQUIRED",
                "uninstall_precommit_guard changes a git hook, so it needs project_key, agent_name and "
                "registration_token of an agent of the project whose repository it is.",
            )
        return await asyncio.to_thread(uninstall_sync, path)  # open auth: only a hook that is ours
    slug, human_key = await _authorized_root(store, project_key, agent_name, token, "uninstall_precommit_guard")
    return await asyncio.to_thread(uninstall_sync, path, human_key, slug)


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
    """REDIS_URL, else the URL ``install`` kept in an owner-only file, else the embedded
    server's URL when one runs; never starts a server."""
    if settings.data_redis_url:
        return settings.data_redis_url
    for url_file in (settings.storage_root / GUARD_DIR / URL_FILE, settings.storage_root / "redis" / "server.url"):
        if url_file.exists():
            return url_file.read_text().strip()
    return None


class NoBroker(Exception):
    """No Redis URL to read the reservations from."""


def live_exclusive(settings: Settings, project_key: str) -> list[ReservationRecord]:
    url = redis_url_for(settings)
    if url is None:
        raise NoBroker(f"no REDIS_URL and no embedded broker Redis under {settings.storage_root}")
    keys = Keys(settings.redis_key_prefix)
    with reservation_store.guard_connection(url) as connection:
        slug = resolve_sync(connection, keys, project_key)
        if slug is None:
            print(f"agent-broker guard: the broker has no project '{project_key}'; nothing to check.", file=sys.stderr)
            return []
        now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
        records = reservation_store.live_records_sync(connection, keys=keys, slug=slug, now_us=now_us)
    return [r for r in records if r.exclusive and r.is_live(now_us)]


def check(project_key: str, repo: Path, env: dict[str, str]) -> int:
    """Exit status for the hook: 0 to let the commit through, 1 to refuse it."""
    if env.get("AGENT_MAIL_BYPASS") == "1":
        print("agent-broker guard: bypassed (AGENT_MAIL_BYPASS=1)", file=sys.stderr)
        return 0
    me = env.get("AGENT_NAME", "").strip().lower()
    try:
        held = live_exclusive(get_settings(), project_key)
    except (*StoreFailure, OSError, NoBroker) as exc:
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
        if record.agent.lower() != me and globs.matches(record.path_pattern, path)
    ]
    if not conflicts:
        return 0
    print("agent-broker guard: these staged paths are reserved exclusively by other agents:", file=sys.stderr)
    for path, record in conflicts:
        until = datetime.fromtimestamp(record.expires_us / 1_000_000, UTC).isoformat()
        print(f"- {path} matches {record.path_pattern} (holder: {record.agent}, until {until})", file=sys.stderr)
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
