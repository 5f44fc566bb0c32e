"""The doorbell listener: one pub/sub connection per Store (per event loop) that wakes local waiters.

``send_message`` publishes one event per delivered recipient on ``<p>:doorbell``
(JSON ``{project, agent, id, cursor}``). This module holds the only subscriber of the process
and fans events out to in-memory waiters keyed by (project slug, lower-cased agent name), so a
thousand waiting agents cost a thousand ``asyncio.Event`` objects, not a thousand connections.

A doorbell is only a hint. Waiters always re-read the inbox stream by cursor after a ring, and
every (re)subscription rings every waiter, so events lost while the connection was down (or
published before it was up) are caught up from the stream, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Iterator

from redis.asyncio.client import PubSub

from broker.store.clients import make_client

logger = logging.getLogger(__name__)

IDLE_PING_SECONDS = 15.0  # a silent connection is probed so a dead one is noticed and replaced
MAX_BACKOFF_SECONDS = 2.0


class Waiter:
    """One local listener for an agent's inbox: ``ring`` is set by each doorbell and every reconnect."""

    __slots__ = ("key", "ring")

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.ring = asyncio.Event()


class Doorbell:
    """The process's doorbell subscriber for one event loop, started on first use. It has a
    client of its own (one connection), so it never holds a slot of the command pool."""

    def __init__(self, redis_url: str, channel: str) -> None:
        self.redis_url = redis_url
        self.channel = channel
        self.subscriptions = 0  # times (re)subscribed, for tests and diagnostics
        self._waiters: dict[tuple[str, str], set[Waiter]] = {}
        # Called with (project slug, lower agent name) on every doorbell (MCP push, broker/realtime/push.py).
        self.observers: list[Callable[[str, str], None]] = []
        # Called with each event's cursor (its inbox entry id, Redis time) for the lag metric.
        self.lag_observer: Callable[[str], None] | None = None
        self._live = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def waiter_count(self) -> int:
        return sum(len(group) for group in self._waiters.values())

    def waiting(self, slug: str, lower_name: str) -> int:
        """Waiters registered for one agent."""
        return len(self._waiters.get((slug, lower_name), ()))

    @contextlib.contextmanager
    def waiter(self, slug: str, lower_name: str) -> Iterator[Waiter]:
        """Register a waiter for the block's duration; it is removed however the block exits
        (return, timeout, cancellation), so abandoned calls leave nothing behind."""
        key = (slug, lower_name)
        waiter = Waiter(key)
        self._waiters.setdefault(key, set()).add(waiter)
        try:
            yield waiter
        finally:
            group = self._waiters.get(key)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self._waiters[key]

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name=f"doorbell:{self.channel}")

    async def ready(self, timeout: float) -> bool:
        """Start the subscriber if needed and wait until it is subscribed. A reader registers
        its waiter, then awaits this, then reads the stream: any event after that read rings it."""
        self.start()
        if self._live.is_set():
            return True
        try:
            await asyncio.wait_for(self._live.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        task, self._task = self._task, None
        self._live.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the subscriber task ------------------------------------------------------------------
    async def _listen(self) -> None:
        client = make_client(self.redis_url, 1)
        backoff = 0.05
        try:
            while True:
                pubsub = client.pubsub()
                try:
                    await pubsub.subscribe(self.channel)
                    await self._pump(pubsub)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any failure: drop the connection, back off, resubscribe
                    if self._live.is_set():
                        logger.warning("doorbell subscriber lost its connection (%s); reconnecting", exc)
                        backoff = 0.05
                    self._live.clear()
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        finally:
            await client.aclose()

    async def _pump(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=IDLE_PING_SECONDS)
            if message is None:
                await pubsub.ping()
                continue
            kind = message["type"]
            if kind == "message":
                self._ring_event(message["data"])
            elif kind == "subscribe":
                # (Re)subscribed, perhaps after redis-py reconnected silently: whatever was
                # published meanwhile is in the streams, so every waiter re-reads its own.
                self.subscriptions += 1
                self._live.set()
                self.ring_all()

    def _ring_event(self, data: str | bytes) -> None:
        try:
            event = json.loads(data)
            key = (event["project"], event["agent"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed doorbell event: %r", data)
            return
        for waiter in self._waiters.get(key, ()):
            waiter.ring.set()
        if self.lag_observer is not None:
            self.lag_observer(event.get("cursor", ""))
        for observer in self.observers:
            try:
                observer(*key)
            except Exception:  # an observer's failure must not stop the doorbell
                logger.exception("doorbell observer failed")

    def ring_all(self) -> None:
        for group in self._waiters.values():
            for waiter in group:
                waiter.ring.set()
