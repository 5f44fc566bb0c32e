"""The hot-window trimmer's typed commands (synchronous: it runs in the persistence worker):
the projects and streams to walk, and one bounded batch of trim_hot.lua.

``client`` is a synchronous client of broker.store.clients (``make_sync_client``) that decodes
responses; the keys come from ``keys`` (broker/store/keys.py). What the batch deletes and the
cold marks it leaves: docs/data-model.md, "The hot window".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broker.store import keys as layout
from broker.store.keys import Keys
from broker.store.scripts import SyncClient, run_sync


@dataclass(frozen=True, slots=True)
class TrimBatch:
    """What one trim_hot.lua call did: messages deleted, work spent (entries read plus messages
    looked at), and ``resume``: None when every stream given was walked to the end of what lies
    outside its window, else the index (0-based, into the streams given) where it stopped."""

    deleted: int
    spent: int
    resume: int | None


def project_slugs(client: SyncClient, keys: Keys) -> list[str]:
    """Every project's slug (the ``<p>:projects`` hash)."""
    return sorted(client.hkeys(keys.projects))


def project_streams(client: SyncClient, keys: Keys, slug: str) -> list[str]:
    """The stream key suffixes of the project's agents: each one's inbox, then its outbox."""
    names = sorted(client.hkeys(keys.agents(slug)))
    return [suffix for name in names for suffix in (layout.inbox_suffix(name), layout.outbox_suffix(name))]


def trim_hot(
    client: SyncClient,
    keys: Keys,
    *,
    slug: str,
    streams: Sequence[str],
    retention_ms: int,
    cap: int,
    budget: int,
    delete_max: int,
    now_ms: int | None = None,
) -> TrimBatch | None:
    """One trim_hot.lua batch over ``streams`` (suffixes from ``project_streams``); None when the
    project is gone. ``now_ms`` None: the server's clock."""
    reply = run_sync(
        client,
        "trim_hot",
        [keys.project(slug), keys.pending(slug), keys.inflight(slug), keys.dead_letters(slug), keys.cold(slug)],
        [
            keys.project_prefix(slug),
            "" if now_ms is None else int(now_ms),
            retention_ms,
            cap,
            budget,
            delete_max,
            *streams,
        ],
    )
    if reply[0] != "ok":
        return None
    resume = int(reply[3])
    return TrimBatch(deleted=int(reply[1]), spent=int(reply[2]), resume=None if resume == 0 else resume - 1)


def cold_marks(client: SyncClient, keys: Keys, slug: str) -> dict[str, str]:
    """The project's cold hash (what the trimmer moved out of Redis so far)."""
    return dict(client.hgetall(keys.cold(slug)))
