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

The hot-window trimmer (broker/lifecycle/hot_window.py) runs on a thread of its own: every
HOT_TRIM_INTERVAL_SECONDS (first one interval after start) a pass moves the messages past the
hot window out of Redis, in short script calls, so it never holds a send or a drain up.

Liveness: besides rq's own heartbeat (once per dequeue timeout), a heartbeat thread refreshes the
worker's rq hash every PERSIST_WORKER_HEARTBEAT_SECONDS, also while a drain runs, and states that
interval in the hash, so health (broker/persistence/state.py) notices a killed worker within a few
beats instead of rq's minutes. ``stop()`` deregisters the worker, so a broker that exits leaves no
stale ``rq:worker`` entry behind.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from typing import Any

from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty
from rq.worker import WorkerStatus

from broker.config import Settings
from broker.lifecycle.hot_window import HotTrimmer
from broker.persistence.drain import Persister
from broker.persistence.queue import DRAIN_TIMEOUT_SECONDS, PersistQueue
from broker.persistence.ratelog import RateLimitedLog
from broker.persistence.state import BEAT_FIELD
from broker.store.clients import make_sync_client
from broker.store.commands.drain import claim_drain_flags
from broker.store.errors import StoreError
from workers.jobs import register_persister

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log, interval=30.0)

# Back-off between restarts of the work loop while Redis is away (capped by
# WORKER_RECONNECT_MAX_SECONDS), and how long a run must last for the next outage to start
# the back-off afresh.
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_RESET_SECONDS = 30.0
# How long a "drain job scheduled" flag lives (PENDING_FLAG_TTL_MS in scripts/lib/common.lua).
PENDING_FLAG_TTL_MS = 5000
# Longest a worker waits for a job before it looks again (and notices a stop request).
IDLE_WAKE_SECONDS = 5

# rq blocks on the queue for this minus 15 s between its own heartbeats, and keeps a silent
# worker's hash for this plus 60 s (rq's default, 420, kept a killed worker listed for 8 minutes).
WORKER_TTL_SECONDS = 60
# How long stop() lets a drain in progress finish before deregistering anyway.
STOP_WAIT_SECONDS = 5.0


class PromptWorker(SimpleWorker):
    """rq's SimpleWorker that stops promptly: a stop request ends an idle (or reconnecting)
    dequeue loop within IDLE_WAKE_SECONDS, and its teardown does not wait for the pub/sub
    thread (rq joins it, and redis-py's join lasts until the thread's read ends, up to 60 s,
    so a SIGTERM, or a restart after a Redis outage, stalled that long). Its rq hash says, from
    its birth on, how often it beats (health tells a killed worker from a quiet one by it)."""

    beat_interval = 0.0

    def serialize(self) -> dict:
        return {**super().serialize(), BEAT_FIELD: str(self.beat_interval)}

    @property
    def dequeue_timeout(self) -> int:
        # rq's is 405 s; wake up sooner so that stop() (checked in heartbeat) ends an idle loop
        return IDLE_WAKE_SECONDS

    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        # rq looks at a stop request only between jobs: the idle dequeue loop (which also retries
        # through Redis outages for ever) beats here on every turn, so stop there too
        if self._stop_requested and self.get_state() == WorkerStatus.IDLE:
            raise StopRequested()
        super().heartbeat(*args, **kwargs)

    def unsubscribe(self) -> None:
        thread, self.pubsub_thread = self.pubsub_thread, None
        if thread is None:
            return
        with contextlib.suppress(Exception):  # Redis may be away; the thread closes the pubsub
            self.pubsub.unsubscribe()
        try:
            thread.stop(timeout=0.5)
        except TypeError:  # redis-py before 8 neither takes a timeout nor joins
            thread.stop()


class ThreadWorker(PromptWorker):
    """A worker that can run off the main thread: no signal handlers, and job time limits
    enforced by a timer instead of SIGALRM."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        pass


class PersistenceWorker:
    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.settings = settings
        self.persister = Persister(settings, make_sync_client(redis_url))
        register_persister(self.persister)
        # rq's jobs and registry: QUEUE_REDIS_URL when set (always beside a cluster), else REDIS_URL
        self.rq_connection = make_sync_client(settings.queue_url(redis_url), decode_responses=False)
        self.queue = PersistQueue.for_connection(self.rq_connection, self.persister.keys)
        self._stop = threading.Event()
        self._worker: PromptWorker | None = None
        self._reconciler: threading.Thread | None = None
        self._trimmer: threading.Thread | None = None
        self.trimmer = HotTrimmer(settings, self.persister.connection, self.persister.keys)
        self._thread: threading.Thread | None = None
        self._running: PromptWorker | None = None  # the worker while its work loop runs

    def reconcile(self, startup: bool = False) -> list[str]:
        """Enqueue a drain for every project that needs one; returns their slugs."""
        if startup:
            slugs = self.persister.stale_projects(min_age_seconds=0, inflight_age_seconds=0)
        else:
            slugs = self.persister.stale_projects(
                self.settings.persist_reconcile_age_seconds, DRAIN_TIMEOUT_SECONDS + 60
            )
        if not startup:
            # only where no drain is scheduled (its flag has expired: the enqueue was lost, or
            # a drain outlived it): a job per pass for a project that is merely behind would
            # pile up in the queue while its drain runs
            persister = self.persister
            slugs = claim_drain_flags(persister.connection, persister.keys, slugs=slugs, ttl_ms=PENDING_FLAG_TTL_MS)
        for slug in slugs:
            self.queue.enqueue(slug)
        if slugs:
            log.info("reconciler enqueued drains for %s", ", ".join(slugs))
        return slugs

    def _reconcile_forever(self) -> None:
        while not self._stop.wait(self.settings.persist_reconcile_interval_seconds):
            try:
                self.persister.release_leftovers()
                self.reconcile()
            except Exception as exc:  # keep the safety net running through Redis hiccups
                _ratelog.warning("reconcile", "reconciler pass failed: %s", exc)

    def _trim_forever(self) -> None:
        while not self._stop.wait(self.settings.hot_trim_interval_seconds):
            try:
                report = self.trimmer.run_pass()
            except Exception as exc:  # Redis away: the next pass goes on
                _ratelog.warning("trim", "hot-window trim pass failed: %s", exc)
                continue
            if report.deleted:
                log.info("hot-window trim moved %d message(s) out of Redis", report.deleted)

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
        worker_class: Any = PromptWorker if on_main else ThreadWorker
        worker = worker_class(
            [self.queue.queue], connection=self.rq_connection, serializer=JSONSerializer, worker_ttl=WORKER_TTL_SECONDS
        )
        worker.beat_interval = self.settings.persist_worker_heartbeat_seconds
        # rq's own reconnect wait while dequeueing grows to 60 s; resume as soon as ours would
        worker.max_connection_wait_time = self.settings.worker_reconnect_max_seconds
        self._worker = self._running = worker
        if not burst and self._reconciler is None:
            self._reconciler = threading.Thread(target=self._reconcile_forever, name="persist-reconciler", daemon=True)
            self._reconciler.start()
        if not burst and self._trimmer is None:
            self._trimmer = threading.Thread(target=self._trim_forever, name="hot-trimmer", daemon=True)
            self._trimmer.start()
        done = threading.Event()
        threading.Thread(target=self._beat, args=(worker, done), name="persist-heartbeat", daemon=True).start()
        try:
            worker.work(burst=burst, logging_level="WARNING", with_scheduler=False)
        finally:
            done.set()  # deregistered by rq's teardown: the heartbeat must not revive it
            self._running = None

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

    def run_forever(self) -> None:
        """``run`` until stopped, riding out Redis outages: whenever the work loop ends or fails
        without a stop request (rq quits when Redis goes away), wait and start again, the wait
        doubling from 0.5 s up to WORKER_RECONNECT_MAX_SECONDS. Each start reconciles, so the
        claims an outage interrupted are written without waiting for the in-flight timeout."""
        delay = RECONNECT_FIRST_SECONDS
        while not self._stopping():
            started = time.monotonic()
            try:
                self.run()
                reason = "its work loop ended"
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            self._drop_pubsub()
            if self._stopping():
                return
            if time.monotonic() - started > RECONNECT_RESET_SECONDS:
                delay = RECONNECT_FIRST_SECONDS  # it ran a while: a new outage starts afresh
            _ratelog.warning("restart", "persistence worker stopped (%s); restarting in %.1f s", reason, delay)
            if threading.current_thread() is threading.main_thread():
                # rq's signal handlers are gone with its loop: stop on SIGTERM/SIGINT meanwhile
                for signum in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, lambda *_: self._stop.set())
            self._stop.wait(delay)
            delay = min(delay * 2, self.settings.worker_reconnect_max_seconds)

    def _drop_pubsub(self) -> None:
        """Stop the ended rq worker's pub/sub thread: rq's teardown skips it when Redis is away
        (the thread then retries every 2 s, a log line each), one more per restart."""
        if self._worker is not None:
            self._worker.unsubscribe()

    def _stopping(self) -> bool:
        """stop() was called, or rq's handlers (on the main thread) got SIGTERM/SIGINT."""
        worker = self._worker
        asked = worker is not None and (worker._stop_requested or worker._shutdown_requested_date is not None)
        return self._stop.is_set() or bool(asked)

    def start_thread(self) -> threading.Thread:
        """Run the worker on a daemon thread of this process (the embedded default), restarting
        it after a Redis outage."""
        thread = threading.Thread(target=self.run_forever, name="persist-worker", daemon=True)
        thread.start()
        self._thread = thread
        return thread

    def stop(self) -> None:
        """Stop the thread's worker and deregister it from rq's registry (from any thread, at exit
        too). A drain in progress gets STOP_WAIT_SECONDS to finish; one cut short stays in
        flight and is re-queued by the next reconciler, so nothing is lost."""
        self._stop.set()
        worker = self._running
        if worker is None:
            return
        # not rq's request_stop: it raises in the caller when idle and takes over the process's
        # SIGTERM/SIGINT handlers (the server's, under `broker serve`); the loop leaves after the
        # current job, deregistering itself
        worker._stop_requested = True
        if self._thread is not None and worker.get_state() == "busy":
            self._thread.join(STOP_WAIT_SECONDS)
        if self._running is worker:  # still idle in its dequeue: deregister it here
            with contextlib.suppress(StoreError):
                worker.register_death()
