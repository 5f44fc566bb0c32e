"""Enqueueing persistence jobs: one rq queue per key prefix, JSON-serialized (never pickle).

A job names a function in ``workers.jobs`` by its dotted path plus JSON arguments, so the
broker never imports the worker's code and the worker never unpickles anything.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from rq import Queue, Retry
from rq.serializers import JSONSerializer

from broker.store.clients import make_sync_client
from broker.store.keys import Keys

log = logging.getLogger(__name__)

DRAIN_JOB = "workers.jobs.drain_project"
# A drain may run long on a big backlog; rq kills it past this, and the reconciler re-queues.
DRAIN_TIMEOUT_SECONDS = 600
DRAIN_RETRY = Retry(max=3)


class PersistQueue:
    """The rq queue of drain jobs for one Redis and key prefix."""

    def __init__(self, redis_url: str, keys: Keys, connection: Any = None) -> None:
        self.redis_url = redis_url
        self.keys = keys
        self._connection = connection
        self._queue: Queue | None = None
        self._lock = threading.Lock()
        # One thread: enqueues are rare (one per project per drain) and must not block the loop.
        self._executor: ThreadPoolExecutor | None = None

    @property
    def queue(self) -> Queue:
        with self._lock:
            if self._queue is None:
                # bounded: an enqueue must never hang the broker (e.g. at exit) while Redis is away
                connection = self._connection or make_sync_client(self.redis_url, decode_responses=False, timeout=5)
                self._queue = Queue(self.keys.persist_queue, connection=connection, serializer=JSONSerializer)
            return self._queue

    @classmethod
    def for_connection(cls, connection: Any, keys: Keys) -> PersistQueue:
        """A queue on an existing synchronous client that does not decode responses."""
        return cls("", keys, connection)

    def enqueue(self, slug: str) -> None:
        """Enqueue a drain of the project's pending set (blocking)."""
        self.queue.enqueue(
            DRAIN_JOB,
            self.keys.prefix,
            slug,
            job_timeout=DRAIN_TIMEOUT_SECONDS,
            retry=DRAIN_RETRY,
            result_ttl=0,
            # a job fails only if killed or timed out (drain_project returns its errors): keep
            # those a day, so rq's failed registry stays small even if that repeats
            failure_ttl=86400,
            description=f"drain {slug}",
        )

    def enqueue_soon(self, slug: str) -> None:
        """Enqueue from a background thread; failures are logged (the reconciler re-queues)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="persist-enqueue")
            executor = self._executor
        executor.submit(self.enqueue, slug).add_done_callback(_log_failure)

    def wait_idle(self) -> None:
        """Return once every enqueue_soon so far has been sent (the thread runs them in order)."""
        with self._lock:
            executor = self._executor
        if executor is not None:
            executor.submit(lambda: None).result()

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None


def _log_failure(future: Future) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("could not enqueue a persistence job (the reconciler will): %s", exc)
