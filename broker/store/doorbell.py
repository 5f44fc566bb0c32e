"""The doorbell listener: per process (per event loop), the shard subscriptions that wake local waiters.

``send_message`` publishes one event per delivered recipient with SPUBLISH on its project's shard
channel ``<p>:{<slug>}:doorbell`` (JSON ``{project, agent, id, cursor}``); the scripts that change
read or acknowledgement state, reservations or agents publish a change event there (JSON
``{project, change}``, built by ``change_event``), which goes to ``change_observers`` only (the web
view), never to an agent's waiters. On a Redis Cluster a shard channel lives on the node that owns
the project's slot, so an event travels to that node's subscribers only, not across the cluster bus
to every node. This module subscribes to the channel of each project that has local waiters or
observers (and lingers a minute after the last one leaves, so a wait_for_mail loop does not
resubscribe per call), one connection per Redis node, and fans events out to in-memory waiters
keyed by (project slug, lower-cased agent name): a thousand waiting agents cost a thousand
``asyncio.Event`` objects, not a thousand connections.

A doorbell is only a hint. Waiters always re-read the inbox stream by cursor after a ring, and
every (re)subscription of a project's channel rings that project's waiters, so events lost while
a connection was down, or while a failover moved the project's slot to another node, are caught
up from the stream, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.crc import key_slot

from broker.store.clients import is_cluster_url, make_client, plain_url

logger = logging.getLogger(__name__)

IDLE_PING_SECONDS = 15.0  # a silent connection is probed so a dead one is noticed and replaced
MAX_BACKOFF_SECONDS = 2.0
LINGER_SECONDS = 60.0  # a project's channel stays subscribed this long after its last listener

# What a change event names (docs/realtime.md): read or acknowledgement timestamps,
# reservations, agents (registered, updated, retired, unretired, deregistered).
RECEIPTS = "receipts"
RESERVATIONS = "reservations"
AGENTS = "agents"


def change_event(slug: str, change: str) -> str:
    """The event a script publishes on the project's doorbell channel when it changes ``change``
    (RECEIPTS, RESERVATIONS or AGENTS): no ``agent`` field, so no agent's waiter is woken by it."""
    return json.dumps({"project": slug, "change": change}, separators=(",", ":"))


class Waiter:
    """One local listener for an agent's inbox: ``ring`` is set by each doorbell and every resubscription."""

    __slots__ = ("key", "ring")

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.ring = asyncio.Event()


class _NodeReader:
    """One connection to one Redis node carrying the shard subscriptions of the projects it owns."""

    def __init__(self, doorbell: Doorbell, url: str) -> None:
        self.doorbell = doorbell
        self.url = url
        self.channels: set[str] = set()  # what this node should carry
        self.pubsub: object | None = None  # set while connected
        self.closing = False
        self.task = asyncio.create_task(self._run(), name=f"doorbell:{url.rpartition('@')[2]}")

    async def add(self, channels: Iterable[str]) -> None:
        new = [c for c in channels if c not in self.channels]
        self.channels.update(new)
        pubsub = self.pubsub
        if new and pubsub is not None:
            with contextlib.suppress(Exception):  # a broken connection: the reader resubscribes all
                await pubsub.ssubscribe(*new)  # type: ignore[attr-defined]

    async def remove(self, channels: Iterable[str]) -> None:
        gone = [c for c in channels if c in self.channels]
        self.channels.difference_update(gone)
        for channel in gone:
            self.doorbell._confirmed(channel).clear()
        pubsub = self.pubsub
        if gone and pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.sunsubscribe(*gone)  # type: ignore[attr-defined]

    async def close(self) -> None:
        # A cancellation that lands as get_message's own timeout fires can be swallowed inside
        # redis-py; the loops also stop on the flag, and close never waits on them for long.
        self.closing = True
        self.task.cancel()
        done, _ = await asyncio.wait({self.task}, timeout=2.0)
        if not done:
            self.task.cancel()
            logger.warning("doorbell reader for %s did not stop; abandoned", self.url.rpartition("@")[2])

    async def _run(self) -> None:
        backoff = 0.05
        while not self.closing:
            client = make_client(self.url, 1)
            pubsub = client.pubsub()
            try:
                while not self.channels and not self.closing:  # nothing to carry yet: wait for a channel
                    await asyncio.sleep(0.05)
                wanted = set(self.channels)
                await pubsub.ssubscribe(*wanted)
                self.pubsub = pubsub
                missing = self.channels - wanted  # added while the subscription was on its way
                if missing:
                    await pubsub.ssubscribe(*missing)
                backoff = 0.05
                await self._pump(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: drop the connection, back off, re-route, resubscribe
                logger.warning("doorbell subscriber for %s lost its connection (%s)", self.url.rpartition("@")[2], exc)
            finally:
                self.pubsub = None
                for channel in self.channels:
                    self.doorbell._confirmed(channel).clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            self.doorbell._reroute_soon()

    async def _pump(self, pubsub: object) -> None:
        while not self.closing:
            message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=IDLE_PING_SECONDS)  # type: ignore[attr-defined]
            if message is None:
                await pubsub.ping()  # type: ignore[attr-defined]
                continue
            kind, channel = message["type"], message["channel"]
            if kind == "smessage":
                self.doorbell._ring_event(message["data"])
            elif kind == "ssubscribe":
                # (Re)subscribed: whatever was published meanwhile is in the streams, so the
                # project's waiters re-read their own.
                self.doorbell.subscriptions += 1
                self.doorbell._confirmed(channel).set()
                self.doorbell._ring_channel(channel)
            elif kind == "sunsubscribe" and channel in self.channels:
                # Not asked for: the slot moved to another node (resharding, failover).
                self.doorbell._confirmed(channel).clear()
                self.doorbell._reroute_soon()


class Doorbell:
    """The process's doorbell subscriptions for one event loop. Its connections are its own (one
    per node), so it never holds a slot of the command pool."""

    def __init__(self, redis_url: str, channel_of: Callable[[str], str]) -> None:
        self.redis_url = redis_url
        self.channel_of = channel_of
        self.cluster = is_cluster_url(redis_url)
        self.subscriptions = 0  # channel (re)subscriptions confirmed, for tests and diagnostics
        self._waiters: dict[tuple[str, str], set[Waiter]] = {}
        # Called with (project slug, lower agent name) on every doorbell (MCP push, broker/realtime/push.py).
        self.observers: list[Callable[[str, str], None]] = []
        # Called with (project slug, what changed) on every change event (the web view, broker/web/live.py).
        self.change_observers: list[Callable[[str, str], None]] = []
        # Called with each event's cursor (its inbox entry id, Redis time) for the lag metric.
        self.lag_observer: Callable[[str], None] | None = None
        self._interest: dict[str, int] = {}  # slug -> waiters and watchers now
        self._idle_since: dict[str, float] = {}  # slug -> when its interest fell to 0
        self._slug_of_channel: dict[str, str] = {}
        self._confirmations: dict[str, asyncio.Event] = {}
        self._readers: dict[str, _NodeReader] = {}  # node URL -> reader
        self._node_of_channel: dict[str, str] = {}
        self._slots: list[tuple[int, int, str, int]] = []  # cluster: (start, end, host, port)
        self._known_nodes: list[str] = []  # cluster: every node URL of the last slot map
        self._lock = asyncio.Lock()
        self._placing: set[asyncio.Task[None]] = set()
        self._reroute_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- listeners ------------------------------------------------------------------------------
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
        self._hold(slug)
        try:
            yield waiter
        finally:
            self._release(slug)
            group = self._waiters.get(key)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self._waiters[key]

    @contextlib.contextmanager
    def watching(self, slugs: Iterable[str]) -> Iterator[None]:
        """Hear the doorbells of these projects for the block's duration (observers: MCP push)."""
        held = list(dict.fromkeys(slugs))
        for slug in held:
            self._hold(slug)
        try:
            yield
        finally:
            for slug in held:
                self._release(slug)

    def watch(self, slug: str) -> Callable[[], None]:
        """Hear a project's doorbells until the returned function is called."""
        self._hold(slug)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release(slug)

        return release

    async def ready(self, slug: str, timeout: float) -> bool:
        """Wait until the project's channel is subscribed (a listener holds it). A reader registers
        its waiter, then awaits this, then reads the stream: any event after that read rings it."""
        channel = self.channel_of(slug)
        if channel not in self._node_of_channel:
            self._hold(slug)  # subscribe now even if the caller holds no interest yet
            self._release(slug)
        confirmed = self._confirmed(channel)
        if confirmed.is_set():
            return True
        try:
            async with asyncio.timeout(timeout):  # not wait_for, which loses a cancel on 3.11
                await confirmed.wait()
        except TimeoutError:
            return False
        return True

    def ring_all(self) -> None:
        for group in self._waiters.values():
            for waiter in group:
                waiter.ring.set()

    async def close(self) -> None:
        for task in (self._reroute_task, self._sweeper, *self._placing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._reroute_task = self._sweeper = None
        readers, self._readers = list(self._readers.values()), {}
        self._node_of_channel.clear()
        for reader in readers:
            await reader.close()

    # -- interest -> subscriptions --------------------------------------------------------------
    def _hold(self, slug: str) -> None:
        self._interest[slug] = self._interest.get(slug, 0) + 1
        self._idle_since.pop(slug, None)
        channel = self.channel_of(slug)
        self._slug_of_channel[channel] = slug
        if channel not in self._node_of_channel:
            self._node_of_channel[channel] = ""  # placed by _place, which picks its node
            task = asyncio.create_task(self._place([channel]), name="doorbell:place")
            self._placing.add(task)
            task.add_done_callback(self._placing.discard)
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="doorbell:sweep")

    def _release(self, slug: str) -> None:
        left = self._interest.get(slug, 0) - 1
        if left > 0:
            self._interest[slug] = left
            return
        self._interest.pop(slug, None)
        self._idle_since[slug] = time.monotonic()

    async def _sweep(self) -> None:
        """Unsubscribe the channels of projects nobody has listened to for LINGER_SECONDS."""
        while True:
            await asyncio.sleep(min(LINGER_SECONDS / 4, 15.0))
            now = time.monotonic()
            idle = [slug for slug, since in self._idle_since.items() if now - since >= LINGER_SECONDS]
            for slug in idle:
                del self._idle_since[slug]
                channel = self.channel_of(slug)
                node = self._node_of_channel.pop(channel, None)
                self._slug_of_channel.pop(channel, None)
                self._confirmations.pop(channel, None)
                reader = self._readers.get(node or "")
                if reader is not None:
                    await reader.remove([channel])

    async def _place(self, channels: list[str]) -> None:
        """Subscribe each channel on the node that owns its slot."""
        async with self._lock:
            by_node: dict[str, list[str]] = {}
            for channel in channels:
                if channel not in self._node_of_channel:
                    continue  # swept meanwhile
                try:
                    node = await self._node_for(channel)
                except Exception as exc:  # no node answered: the next listener tries again
                    logger.warning("doorbell cannot place %s (%s)", channel, exc)
                    del self._node_of_channel[channel]
                    continue
                self._node_of_channel[channel] = node
                by_node.setdefault(node, []).append(channel)
            for node, group in by_node.items():
                reader = self._readers.get(node)
                if reader is None:
                    reader = self._readers[node] = _NodeReader(self, node)
                await reader.add(group)

    def _reroute_soon(self) -> None:
        if self.cluster and (self._reroute_task is None or self._reroute_task.done()):
            self._reroute_task = asyncio.create_task(self._reroute(), name="doorbell:reroute")

    async def _reroute(self) -> None:
        """After a lost connection or an unasked unsubscribe: read the slot map again and move
        every channel whose slot has another owner now (a failover promoted a replica)."""
        async with self._lock:
            await self._refresh_slots()
            moves: dict[str, list[str]] = {}
            for channel, node in list(self._node_of_channel.items()):
                owner = self._owner(channel)
                if owner and owner != node:
                    self._node_of_channel[channel] = owner
                    moves.setdefault(node, []).append(channel)
            for old, group in moves.items():
                reader = self._readers.get(old)
                if reader is not None:
                    await reader.remove(group)
                    if not reader.channels:
                        del self._readers[old]
                        await reader.close()
            for channel, node in self._node_of_channel.items():
                reader = self._readers.get(node)
                if reader is None:
                    reader = self._readers[node] = _NodeReader(self, node)
                if channel not in reader.channels:
                    await reader.add([channel])

    # -- cluster routing ------------------------------------------------------------------------
    async def _node_for(self, channel: str) -> str:
        if not self.cluster:
            return self.redis_url
        owner = self._owner(channel)
        if owner is None:
            await self._refresh_slots()
            owner = self._owner(channel)
        if owner is None:
            raise RuntimeError("no Redis Cluster node answered CLUSTER SLOTS")
        return owner

    def _owner(self, channel: str) -> str | None:
        slot = key_slot(channel.encode())
        for start, end, host, port in self._slots:
            if start <= slot <= end:
                return self._node_url(host, port)
        return None

    def _node_url(self, host: str, port: int) -> str:
        """The seed URL (scheme, credentials, options) pointed at another node."""
        parts = urlsplit(plain_url(self.redis_url))
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    async def _refresh_slots(self) -> None:
        """Read the slot map from the first node that answers: the seed, every node of the last
        map (masters and replicas: the seed may be the master that died) and the readers' nodes,
        asked at once so that dead ones cost no waiting."""
        candidates = dict.fromkeys([plain_url(self.redis_url), *self._known_nodes, *self._readers])
        asking = [asyncio.create_task(_cluster_slots(url)) for url in candidates]
        try:
            for answer in asyncio.as_completed(asking):
                slots = await answer
                if slots is not None:
                    self._learn(slots)
                    return
        finally:
            for task in asking:
                task.cancel()
            await asyncio.gather(*asking, return_exceptions=True)

    def _learn(self, slots: list[Any]) -> None:
        """Keep a CLUSTER SLOTS reply: each range's master, and every node it names."""
        host_of_seed = urlsplit(plain_url(self.redis_url)).hostname or "127.0.0.1"
        self._slots = [
            (int(start), int(end), (master[0] or host_of_seed), int(master[1])) for start, end, master, *_ in slots
        ]
        self._known_nodes = list(
            dict.fromkeys(
                self._node_url(node[0] or host_of_seed, int(node[1])) for _, _, *nodes in slots for node in nodes
            )
        )

    # -- events ---------------------------------------------------------------------------------
    def _confirmed(self, channel: str) -> asyncio.Event:
        event = self._confirmations.get(channel)
        if event is None:
            event = self._confirmations[channel] = asyncio.Event()
        return event

    def _ring_channel(self, channel: str) -> None:
        slug = self._slug_of_channel.get(channel)
        for (waiter_slug, _), group in self._waiters.items():
            if waiter_slug == slug:
                for waiter in group:
                    waiter.ring.set()

    def _ring_event(self, data: str | bytes) -> None:
        try:
            event = json.loads(data)
            if "change" in event:
                self._announce_change(event["project"], event["change"])
                return
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

    def _announce_change(self, slug: str, change: str) -> None:
        for observer in self.change_observers:
            try:
                observer(slug, change)
            except Exception:  # an observer's failure must not stop the doorbell
                logger.exception("doorbell change observer failed")


async def _cluster_slots(url: str) -> list[Any] | None:
    """One node's CLUSTER SLOTS reply, or None if it does not answer within 2 s."""
    client = make_client(url, 1)
    try:
        return await asyncio.wait_for(client.execute_command("CLUSTER SLOTS"), 2.0)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
