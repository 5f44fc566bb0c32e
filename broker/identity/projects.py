"""Which project a project key names, checked: project_slug, check_project_key, project_dict."""

from __future__ import annotations

import os
from typing import Any

from broker.errors import BrokerError
from broker.identity.names import check_placeholder
from broker.identity.slugs import resolve
from broker.store.keys import looks_like_path
from broker.store.store import Store

MAX_PROJECT_KEY_CHARS = 4096  # PATH_MAX on Linux; longer keys are refused before any Redis work


async def project_slug(store: Store, project_key: object) -> str:
    """The slug a project key names: an absolute path (its human_key) or a slug."""
    return await resolve(store, check_project_key(project_key))


def check_project_key(project_key: object) -> str:
    """A project key, stripped, once it is an absolute path or a slug (else a coded error)."""
    if not isinstance(project_key, str) or not project_key.strip():
        raise BrokerError(
            "INVALID_ARGUMENT",
            "project_key is empty. Pass the project's absolute path (its human_key) or its slug.",
        )
    key = project_key.strip()
    _check_key_length(key, "project_key")
    check_placeholder(key, "project_key")
    if looks_like_path(key) and (not os.path.isabs(os.path.expanduser(key)) or key.startswith("~")):
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"project_key '{key}' is a relative path. Pass the absolute path you gave "
            "ensure_project (e.g. '/home/me/repo') or the project's slug.",
        )
    return key


def _check_key_length(value: str, what: str) -> None:
    if "\0" in value:  # no path holds one; the git guard and the filesystem would fail on it
        raise BrokerError("INVALID_ARGUMENT", f"{what} contains a NUL character; pass the repository's absolute path.")
    if len(value) > MAX_PROJECT_KEY_CHARS:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"{what} has {len(value)} characters; the limit is {MAX_PROJECT_KEY_CHARS}. Pass the "
            "repository's absolute path or the project's slug.",
        )


def project_dict(fields: list[Any], archived_at: str | None = None) -> dict[str, Any]:
    """The reference's project_dict; ``archived_at`` only while the project is archived."""
    project = {"id": int(fields[0]), "slug": fields[1], "human_key": fields[2], "created_at": fields[3]}
    if archived_at:
        project["archived_at"] = archived_at
    return project
