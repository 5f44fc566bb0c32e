"""rq job functions (named by dotted path in JSON-serialized jobs; never pickled).

Thin: they find the process's Persister for the job's key prefix and call it. The worker
registers its Persister at start-up (``workers.runner``); a job run by a plain ``rq worker``
builds one from the environment's settings.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from broker.persistence.drain import Persister
from broker.persistence.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)

_persisters: dict[str, Persister] = {}
_guard = threading.Lock()


def register_persister(persister: Persister) -> None:
    with _guard:
        _persisters[persister.keys.prefix] = persister


def _persister_for(prefix: str) -> Persister:
    with _guard:
        found = _persisters.get(prefix)
    if found is not None:
        return found
    from broker.config import get_settings
    from broker.store.clients import make_sync_client
    from broker.store.embedded import resolve_redis_url

    settings = get_settings()
    if settings.redis_key_prefix != prefix:
        raise RuntimeError(
            f"job for key prefix {prefix!r}, but this worker's REDIS_KEY_PREFIX is {settings.redis_key_prefix!r}"
        )
    url, _ = resolve_redis_url(settings.data_redis_url, settings.storage_root)
    persister = Persister(settings, make_sync_client(url))
    register_persister(persister)
    return persister


def drain_project(prefix: str, slug: str) -> dict[str, Any]:
    """Persist everything pending for one project; re-enqueues itself past its time budget.

    A failure is logged (rate-limited) and returned, never raised: what failed is back in
    pending (or dead-lettered) and the reconciler enqueues it again, so rq's retries and its
    failed-job registry (a traceback per failure, kept for days) would only add load."""
    persister = _persister_for(prefix)
    try:
        stats = persister.drain(slug)
        persister.add_totals(stats)  # broker-wide totals for /metrics (every worker adds to them)
    except Exception as exc:
        _ratelog.warning(
            f"drain:{type(exc).__name__}", "drain of %s failed, will retry: %s: %s", slug, type(exc).__name__, exc
        )
        return {"error": f"{type(exc).__name__}: {exc}"}
    if stats.requeued:
        from rq import get_current_job

        job = get_current_job()
        if job is not None and job.origin:
            from broker.persistence.queue import PersistQueue

            PersistQueue.for_connection(job.connection, persister.keys).enqueue(slug)
    log.debug("drained %s: %s", slug, stats.as_dict())
    return stats.as_dict()
