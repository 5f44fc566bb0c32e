"""resource://identity/{project}: what the broker can tell about a repository path, in the
reference's keys (its identity resource). The project identity itself is always the directory
mode: a project is its absolute path (docs/data-model.md); the Git facts are reported for
information and read-only: nothing is written into the repository (the reference may write a
private marker under .git/agent-mail/).

The path is read on the broker's host. Under AGENT_AUTH=required (the broker reachable beyond
loopback) only the paths of existing projects are inspected, so the resource cannot be used to
probe the server's file system."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from broker.identity import refusals
from broker.identity.projects import check_project_key
from broker.identity.slugs import human_key_of, resolve
from broker.store.commands import projects as project_store
from broker.store.store import Store

GIT_TIMEOUT_SECONDS = 5
DISCOVERY_FILE = ".agent-mail.yaml"  # optional, in the repository root: project_uid / product_uid
COMMITTED_MARKER = ".agent-mail-project-id"  # optional, in the repository root
DISCOVERY_KEYS = ("project_uid", "product_uid")


async def identity_of(store: Store, project: str) -> dict[str, Any]:
    """The identity of an absolute path (a project or not) or of an existing project's slug."""
    key = check_project_key(project)
    slug = await resolve(store, key)
    human_key = human_key_of(key)
    if human_key is None or store.bindings.mode == "required":
        record = await project_store.project_record(store, slug=slug)
        if record is None:
            raise await refusals.project_not_found(store, key)
        human_key = record.human_key
    facts = await asyncio.to_thread(_repository_facts, human_key)
    return {"slug": slug, "identity_mode_used": "dir", "canonical_path": human_key, "human_key": human_key, **facts}


def _git(path: str, *args: str) -> str | None:
    """One git command's trimmed output in ``path``, None when it fails (not a repository, no git)."""
    try:
        done = subprocess.run(
            ["git", "-C", path, *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def normalized_remote(url: str | None) -> str | None:
    """``host/owner/repo`` (lower case, no ``.git``) of a remote URL, scp-like or not; None if
    it has no host or fewer than two path segments. Credentials and ports are dropped."""
    if not url:
        return None
    url = url.strip()
    if "://" in url:
        parsed = urlparse(url)
        host, path = (parsed.hostname or ""), parsed.path
    elif "@" in url and ":" in url.split("@", 1)[1]:
        host, path = url.split("@", 1)[1].split(":", 1)
    else:
        return None
    segments = [part for part in path.removesuffix(".git").split("/") if part]
    if not host or len(segments) < 2:
        return None
    return f"{host.lower()}/{segments[-2].lower()}/{segments[-1].removesuffix('.git').lower()}"


def _discovery(root: str) -> dict[str, str]:
    """The known keys of the repository's discovery file: ``key: value`` lines, comments ignored."""
    try:
        text = (Path(root) / DISCOVERY_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        value = value.split("#", 1)[0].strip().strip("'\"")
        if sep and name.strip() in DISCOVERY_KEYS and value:
            found[name.strip()] = value
    return found


def _read_marker(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _sha1_20(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:20]


def _repository_facts(human_key: str) -> dict[str, Any]:
    """Git facts of the directory (None each when it is not a repository on this host) and the
    project_uid: a committed marker, the discovery file, the private marker, the remote (with its
    default branch), the Git common directory, else the path, each hashed as the reference does."""
    root = _git(human_key, "rev-parse", "--show-toplevel") if os.path.isdir(human_key) else None
    common = branch = ignorecase = remote = None
    if root:
        common = _git(human_key, "rev-parse", "--git-common-dir")
        if common and not os.path.isabs(common):
            common = os.path.normpath(os.path.join(human_key, common))
        # the branch HEAD names, even before its first commit; a detached HEAD reads "HEAD"
        branch = _git(human_key, "symbolic-ref", "--short", "-q", "HEAD") or _git(
            human_key, "rev-parse", "--abbrev-ref", "HEAD"
        )
        ignorecase = _git(human_key, "config", "--get", "core.ignorecase")
        remote = normalized_remote(_git(human_key, "remote", "get-url", "origin"))
    discovery = _discovery(root or human_key)
    uid = (
        (_read_marker(Path(root) / COMMITTED_MARKER) if root else None)
        or discovery.get("project_uid")
        or (_read_marker(Path(common) / "agent-mail" / "project-id") if common else None)
    )
    if not uid and remote:
        head = _git(human_key, "symbolic-ref", "refs/remotes/origin/HEAD") or ""
        uid = _sha1_20(f"{remote}@{head.rsplit('/', 1)[-1] if head else 'main'}")
    if not uid:
        uid = _sha1_20(str(Path(common).resolve()) if common else human_key)
    return {
        "repo_root": root,
        "git_common_dir": common,
        "branch": branch,
        "worktree_name": Path(root).name if root else None,
        "core_ignorecase": (ignorecase or "false").lower() == "true" if root else None,
        "normalized_remote": remote,
        "project_uid": uid,
        "discovery": discovery or None,
    }
