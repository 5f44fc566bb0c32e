"""Which slug a project key names. A project is its full human_key (absolute path): paths that
slugify alike (/x/my-repo, /x/my/repo, /x/My_Repo, /x/my.repo; / and /project) are different
projects, so each human_key owns one slug for good (``<p>:slugs``, assigned by
``assign_slug.lua``): the plain slug when free, else the plain slug plus a hash of the key.

Projects created before ``<p>:slugs`` existed are in the directory ``<p>:projects`` only; they
keep their (plain) slug: a lookup reads both, and the first assignment adopts them.

Hot paths pay nothing: a slug-form key is its own slug, and a path's slug, once found owned, is
kept in a per-process cache (``Store.slug_cache``). The cache cannot go stale, because a slug's
owner never changes: hard_delete_project leaves ``<p>:slugs`` alone, so a re-created project
gets its old slug back and no other repository can take it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from broker.store.commands import identity as identity_store
from broker.store.keys import Keys, looks_like_path, slug_candidates, slugify

if TYPE_CHECKING:
    from broker.store.commands.identity import SyncClient
    from broker.store.store import Store

CACHE_LIMIT = 20_000  # distinct paths per process; past it the cache starts again


def human_key_of(project_key: str) -> str | None:
    """The normalized path a checked project key names, or None for a slug."""
    return os.path.normpath(project_key) if looks_like_path(project_key) else None


def _pick(
    human_key: str, candidates: list[str], owners: list[str | None], legacy: list[str | None]
) -> tuple[str, bool]:
    """(slug, owned): the candidate the key owns, else the first free one ("" if none is free)."""
    for slug, owner, old in zip(candidates, owners, legacy, strict=True):
        holder = owner or old
        if holder == human_key:
            return slug, True
        if holder is None:
            return slug, False
    return "", False


async def _lookup(store: Store, human_key: str) -> tuple[list[str], list[str | None], list[str | None]]:
    candidates = slug_candidates(human_key)
    holders = await identity_store.slug_holders(store, candidates=candidates)
    return candidates, holders.owners, holders.legacy


def remember(store: Store, human_key: str, slug: str) -> None:
    if len(store.slug_cache) >= CACHE_LIMIT:
        store.slug_cache.clear()
    store.slug_cache[human_key] = slug


async def resolve(store: Store, project_key: str) -> str:
    """The slug of a checked project key. A path nobody has made a project of resolves to the
    slug it would get, where no project exists, so the tool reports NOT_FOUND where it always
    did (after its other argument checks)."""
    human_key = human_key_of(project_key)
    if human_key is None:
        return slugify(project_key)
    cached = store.slug_cache.get(human_key)
    if cached is not None:
        return cached
    slug, owned = _pick(human_key, *await _lookup(store, human_key))
    if owned:
        remember(store, human_key, slug)
    elif not slug:
        from broker.identity import refusals  # not at import: the git hook imports this module

        raise await refusals.project_not_found(store, project_key)
    return slug


def known_slug(store: Store, project_key: str) -> str | None:
    """The slug of a project key if known without Redis: a slug, or a path this process has
    resolved (every successful call on a path resolved it)."""
    key = project_key.strip()
    human_key = human_key_of(key)
    return slugify(key) if human_key is None else store.slug_cache.get(human_key)


async def assign(store: Store, human_key: str) -> str:
    """The slug ensure_project creates ``human_key`` under: its own, else a free one, claimed."""
    candidates, _owners, legacy = await _lookup(store, human_key)
    slug = await identity_store.assign_slug(store, human_key=human_key, candidates=candidates, legacy=legacy)
    if slug is None:
        from broker.errors import BrokerError  # not at import: the git hook imports this module

        raise BrokerError(
            "SLUG_UNAVAILABLE",
            f"Every slug for '{human_key}' belongs to another project, which should not happen; "
            "report it, and use a different path for now.",
        )
    return slug  # cached by ensure_project once the project exists


def resolve_sync(client: SyncClient, keys: Keys, project_key: str) -> str | None:
    """``resolve`` for the git hook and the CLI (a blocking client, no cache): the slug the
    project lives under, or None when no project has that path."""
    key = project_key.strip()
    human_key = human_key_of(key)
    if human_key is None:
        return slugify(key)
    candidates = slug_candidates(human_key)
    holders = identity_store.slug_holders_sync(client, keys, candidates=candidates)
    slug, owned = _pick(human_key, candidates, holders.owners, holders.legacy)
    return slug if owned else None
