"""The persistence worker: an rq worker on the drain queue plus the reconciler.

``broker worker`` runs it in the foreground (a ``SimpleWorker``: jobs run in the worker
process, no fork per job, since a drain is short and its writes are idempotent). The embedded
default of ``broker serve`` runs the same worker on a thread of the server process.

The reconciler is the safety net for a lost enqueue (a crash between a write script and its
enqueue, or a job lost with a killed worker): at start-up it re-queues every in-flight entry
and enqueues every project with pending entries; then, every
PERSIST_RECONCILE_INTERVAL_SECONDS, it enqueues projects whose oldest pending entry is older
than PERSIST_RECONCILE_AGE_SECONDS and re-queues in-flight entries older than the drain time
limit.

Liveness: besides rq's own heartbeat (once per dequeue timeout), a heartbeat thread refreshes the
worker's rq hash every PERSIST_WORKER_HEARTBEAT_SECONDS, also while a drain runs, and states that
interval in the hash, so health (broker/persist_state.py) notices a killed worker within a few
beats instead of rq's minutes. ``stop()`` deregisters the worker, so a broker that exits leaves no
stale ``rq:worker`` entry behind.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from typing import Any

import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty

from broker.config import Settings
from broker.connection import make_sync_client
from broker.persist import Persister
from broker.persist_queue import DRAIN_TIMEOUT_SECONDS, PersistQueue
from broker.persist_state import BEAT_FIELD
from workers.jobs import register_persister

log = logging.getLogger(__name__)

# rq blocks on the queue for this minus 15 s between its own heartbeats, and keeps a silent
# worker's hash for this plus 60 s (rq's default, 420, kept a killed worker listed for 8 minutes).
WORKER_TTL_SECONDS = 60
# How long stop() lets a drain in progress finish before deregistering anyway.
STOP_WAIT_SECONDS = 5.0


class BeatingWorker(SimpleWorker):
    """A SimpleWorker whose rq hash says, from its birth on, how often it beats (health uses it
    to tell a killed worker from a quiet one), and whose command channel (pub/sub) is polled
    every second instead of every 60 s: rq's teardown joins that thread, which otherwise sat out
    its full 60 s wait when the unsubscribe landed first, so a stop could take a minute."""

    beat_interval = 0.0

    def serialize(self) -> dict:
        return {**super().serialize(), BEAT_FIELD: str(self.beat_interval)}

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler
        )


class ThreadWorker(BeatingWorker):
    """A BeatingWorker that can run off the main thread: no signal handlers, and job time
    limits enforced by a timer instead of SIGALRM."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        pass


class PersistenceWorker:
    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.settings = settings
        self.persister = Persister(settings, make_sync_client(redis_url))
        register_persister(self.persister)
        self.rq_connection = make_sync_client(redis_url, decode_responses=False)
        self.queue = PersistQueue.for_connection(self.rq_connection, self.persister.keys)
        self._stop = threading.Event()
        self._worker: SimpleWorker | None = None
        self._reconciler: threading.Thread | None = None
        self._thread: threading.Thread | None = None

    def reconcile(self, startup: bool = False) -> list[str]:
        """Enqueue a drain for every project that needs one; returns their slugs."""
        if startup:
            slugs = self.persister.stale_projects(min_age_seconds=0, inflight_age_seconds=0)
        else:
            slugs = self.persister.stale_projects(
                self.settings.persist_reconcile_age_seconds, DRAIN_TIMEOUT_SECONDS + 60
            )
        for slug in slugs:
            self.queue.enqueue(slug)
        if slugs:
            log.info("reconciler enqueued drains for %s", ", ".join(slugs))
        return slugs

    def _reconcile_forever(self) -> None:
        while not self._stop.wait(self.settings.persist_reconcile_interval_seconds):
            try:
                self.reconcile()
            except Exception as exc:  # keep the safety net running through Redis hiccups
                log.warning("reconciler pass failed: %s", exc)

    def run(self, *, burst: bool = False) -> None:
        """Reconcile, then work the queue until stopped (or, with ``burst``, until it is empty)."""
        rq_log = logging.getLogger("rq")
        if not rq_log.hasHandlers():
            # rq would log to stdout, which carries the MCP protocol under `serve --transport stdio`
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
            rq_log.addHandler(handler)
        self.reconcile(startup=True)
        on_main = threading.current_thread() is threading.main_thread()
        worker_class: Any = BeatingWorker if on_main else ThreadWorker
        worker = worker_class(
            [self.queue.queue], connection=self.rq_connection, serializer=JSONSerializer, worker_ttl=WORKER_TTL_SECONDS
        )
        worker.beat_interval = self.settings.persist_worker_heartbeat_seconds
        self._worker = worker
        if not burst and self._reconciler is None:
            self._reconciler = threading.Thread(target=self._reconcile_forever, name="persist-reconciler", daemon=True)
            self._reconciler.start()
        done = threading.Event()
        threading.Thread(target=self._beat, args=(worker, done), name="persist-heartbeat", daemon=True).start()
        try:
            worker.work(burst=burst, logging_level="WARNING", with_scheduler=False)
        finally:
            done.set()  # deregistered by rq's teardown: the heartbeat must not revive it
            self._worker = None

    def _beat(self, worker: SimpleWorker, done: threading.Event) -> None:
        """Heartbeat ``worker`` until its run ends (or stop())."""
        interval = self.settings.persist_worker_heartbeat_seconds
        while not done.wait(interval) and not self._stop.is_set():
            if worker.birth_date is None:  # not registered yet
                continue
            try:
                worker.heartbeat()
            except Exception as exc:  # Redis away: health reports the worker gone, which is the truth
                log.debug("heartbeat failed: %s", exc)

    def _run_until_stopped(self) -> None:
        # rq's work loop returns when Redis goes away; the server outlives that, so start over.
        while not self._stop.is_set():
            try:
                self.run()
            except Exception as exc:
                log.warning("persistence worker stopped (%s); restarting in 5 s", exc)
            self._stop.wait(5)

    def start_thread(self) -> threading.Thread:
        """Run the worker on a daemon thread of this process (the embedded default), restarting
        it after a Redis outage."""
        thread = threading.Thread(target=self._run_until_stopped, name="persist-worker", daemon=True)
        thread.start()
        self._thread = thread
        return thread

    def stop(self) -> None:
        """Stop the thread's worker and deregister it from rq's registry (from any thread, at exit
        too). A drain in progress gets STOP_WAIT_SECONDS to finish; one cut short stays in
        flight and is re-queued by the next reconciler, so nothing is lost."""
        self._stop.set()
        worker = self._worker
        if worker is None:
            return
        worker._stop_requested = True  # rq's loop leaves after the current job, deregistering itself
        if self._thread is not None and worker.get_state() == "busy":
            self._thread.join(STOP_WAIT_SECONDS)
        if self._worker is worker:  # still idle in its blocking dequeue: deregister it here
            with contextlib.suppress(redis.RedisError):
                worker.register_death()
