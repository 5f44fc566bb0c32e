"""``GET /mail/{slug}/_/events``: a project's changes as server-sent events, for the pages' script.

Two sources:

- **the doorbell** (broker/store/doorbell.py), of which this stream is an observer: every
  delivery publishes a mail event there, and every read, acknowledgement, reservation grant,
  renewal and release, and agent registration or retirement a change event, so these are
  announced ("mail", "state") as soon as Redis publishes them, from whichever broker process
  made them.
- **a digest poll**, for what publishes nothing: a reservation that expires by time, an agent's
  last activity. Each open stream compares a small digest of that state (broker/mail/oversight.py
  ``change_mark``: three bounded reads) every STATE_CHECK_SECONDS and announces "state" when it
  differs.

Events carry no data beyond their name: the page re-fetches the part that shows them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent

from broker.mail.oversight import change_mark
from broker.realtime.cancellation import stop_if_cancelled
from broker.store.errors import StoreError
from broker.store.store import Store

STATE_CHECK_SECONDS = 0.25  # an expiry or an agent's activity shows within about this long (plus a page fetch)
PING_SECONDS = 15
MAX_STREAMS_PER_PROJECT = 64  # open pages per project in one process (each polls the digest)


class ProjectStreams:
    """The open event streams of this process, per project."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.open: dict[str, int] = {}

    def full(self, slug: str) -> bool:
        return self.open.get(slug, 0) >= MAX_STREAMS_PER_PROJECT

    def response(self, slug: str) -> EventSourceResponse:
        self.open[slug] = self.open.get(slug, 0) + 1
        return EventSourceResponse(self._events(slug), ping=PING_SECONDS)

    async def _events(self, slug: str) -> AsyncIterator[ServerSentEvent]:
        doorbell = self.store.doorbell
        ring = asyncio.Event()
        heard: set[str] = set()  # the events rung since the last announcement: "mail", "state"

        def on_mail(project: str, _agent: str) -> None:
            if project == slug:
                heard.add("mail")
                ring.set()

        def on_change(project: str, _change: str) -> None:
            if project == slug:
                heard.add("state")
                ring.set()

        doorbell.observers.append(on_mail)
        doorbell.change_observers.append(on_change)
        try:
            with doorbell.watching([slug]):
                await doorbell.ready(slug, 5.0)
                mark = await self._mark(slug)
                yield ServerSentEvent("ready", event="ready")
                while True:
                    await stop_if_cancelled()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(STATE_CHECK_SECONDS):
                            await ring.wait()
                    if ring.is_set():
                        ring.clear()
                        name = "mail" if "mail" in heard else "state"  # the page re-fetches either way
                        heard.clear()
                        mark = await self._mark(slug)  # the change is in the digest too: one event
                        yield ServerSentEvent(name, event=name)
                        continue
                    current = await self._mark(slug)
                    if current != mark:
                        mark = current
                        yield ServerSentEvent("state", event="state")
        finally:
            with contextlib.suppress(ValueError):
                doorbell.observers.remove(on_mail)
            with contextlib.suppress(ValueError):
                doorbell.change_observers.remove(on_change)
            left = self.open.get(slug, 1) - 1
            if left > 0:
                self.open[slug] = left
            else:
                self.open.pop(slug, None)

    async def _mark(self, slug: str) -> str:
        try:
            return await change_mark(self.store, slug)
        except StoreError:
            return ""  # Redis away: the page keeps what it shows; the next answer counts as a change
