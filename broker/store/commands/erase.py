"""The typed commands of the hard deletes (broker/lifecycle/erase.py): the phases of
hard_delete_agent.lua, link_forget.lua in the other projects, and a project's counts, link copies
and key sweep (SCAN + UNLINK in batches).

The hard deletes run on a thread, under the project's drain lock (a file lock), so these
commands are synchronous: ``EraseSession`` holds one blocking client for one delete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

from broker.store import keys as layout
from broker.store.clients import make_sync_client
from broker.store.commands.agent_record import StoredAgent, decode_agent
from broker.store.commands.lifecycle import Caller
from broker.store.keys import Keys
from broker.store.refusals import refusal
from broker.store.scripts import run_sync

UNLINK_BATCH = 500
SCAN_COUNT = 1000


@dataclass(frozen=True, slots=True, order=True)
class LinkCopy:
    """The copy, kept in project ``slug`` by its agent ``owner`` (lower name), of a link whose
    other endpoint is the deleted agent ``agent_id``; ``field`` is the copy's links field."""

    slug: str
    owner: str
    field: str
    agent_id: int


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A message the agent sent, deleted everywhere: its head and recipients {to, cc, bcc}."""

    head: dict[str, Any]
    recipients: dict[str, list[str]]


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Phase(Generic[T]):
    """One bounded step of hard_delete_agent.lua: the agent's record and what the step removed
    (``sent``: SentMessage; ``received``, ``reservations``: ids; ``contacts``: LinkCopy of other
    projects). ``more`` says whether to call the step again (with ``cursor`` for the scans)."""

    agent: StoredAgent
    items: tuple[T, ...]
    more: bool
    cursor: str = "0"


@dataclass(frozen=True, slots=True)
class Final:
    """The last step: ``done`` False when mail arrived meanwhile (the steps go again); else the
    live reservations and the number of window identities it removed with the agent."""

    done: bool
    reservations: tuple[int, ...] = ()
    windows: int = 0


@dataclass(frozen=True, slots=True)
class ProjectCounts:
    """What Redis holds of a project before it is deleted."""

    project_id: int
    agents: int
    messages: int
    message_recipients: int
    reservations: frozenset[int]
    windows: int


class EraseSession:
    """A blocking connection to Redis for one hard delete; use it as a context manager."""

    def __init__(self, redis_url: str, keys: Keys) -> None:
        self.keys = keys
        self._client = make_sync_client(redis_url)

    def __enter__(self) -> EraseSession:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._client.close()

    # -- hard_delete_agent -------------------------------------------------------------
    def _agent_step(self, slug: str, name: str, caller: Caller, phase: str, batch: int, cursor: str) -> list[Any]:
        keys = self.keys
        reply = run_sync(
            self._client,
            "hard_delete_agent",
            [keys.project(slug), keys.agents(slug), keys.active(slug), keys.pending(slug)],
            [
                keys.project_prefix(slug), name, caller.token_digest, "1" if caller.token_required else "0",
                phase, batch, cursor,
            ],
        )  # fmt: skip
        if reply[0] not in ("ok", "MORE"):
            raise refusal(reply)
        return reply

    def delete_sent(self, *, slug: str, name: str, caller: Caller, batch: int) -> Phase[SentMessage]:
        """Up to ``batch`` messages from the head of the agent's outbox, deleted everywhere."""
        reply = self._agent_step(slug, name, caller, "sent", batch, "0")
        items = tuple(
            SentMessage(
                head=item["head"], recipients=item["recipients"] if isinstance(item["recipients"], dict) else {}
            )
            for item in json.loads(reply[2])
        )
        return Phase(agent=decode_agent(reply[1]), items=items, more=reply[3] == "1")

    def delete_received(self, *, slug: str, name: str, caller: Caller, batch: int) -> Phase[int]:
        """Up to ``batch`` entries from the head of its inbox: the agent leaves those messages."""
        reply = self._agent_step(slug, name, caller, "received", batch, "0")
        ids = tuple(int(i) for i in json.loads(reply[2]))
        return Phase(agent=decode_agent(reply[1]), items=ids, more=reply[3] == "1")

    def delete_reservations(self, *, slug: str, name: str, caller: Caller, batch: int, cursor: str) -> Phase[int]:
        """One scan step over the project's reservations: the agent's leave (ids)."""
        reply = self._agent_step(slug, name, caller, "reservations", batch, cursor)
        ids = tuple(int(i) for i in json.loads(reply[2]))
        return Phase(agent=decode_agent(reply[1]), items=ids, more=str(reply[3]) != "0", cursor=str(reply[3]))

    def delete_contacts(self, *, slug: str, name: str, caller: Caller, batch: int, cursor: str) -> Phase[LinkCopy]:
        """One scan step over its links; the copies kept in other projects (LinkCopy)."""
        reply = self._agent_step(slug, name, caller, "contacts", batch, cursor)
        agent = decode_agent(reply[1])
        copies = tuple(
            LinkCopy(slug=c["slug"], owner=c["owner"], field=c["field"], agent_id=int(agent["id"]))
            for c in json.loads(reply[2])
        )
        return Phase(agent=agent, items=copies, more=str(reply[3]) != "0", cursor=str(reply[3]))

    def delete_final(self, *, slug: str, name: str, caller: Caller, batch: int) -> Final:
        """The agent itself, unless mail arrived meanwhile (``done`` False)."""
        reply = self._agent_step(slug, name, caller, "final", batch, "0")
        if reply[0] == "MORE":
            return Final(done=False)
        result = json.loads(reply[2])
        return Final(
            done=True, reservations=tuple(int(i) for i in result["reservations"]), windows=int(result["windows"])
        )

    def forget_cold(self, *, slug: str, gone: str, counts: dict[str, int]) -> None:
        """The project's cold hash after deleting from the index messages the hot-window trimmer
        had moved out of Redis (cold_forget.lua): each recipient's unread count lowered by its
        unread ones among them (name -> count), and the marks and count of agent ``gone`` ("" for
        none) dropped."""
        if not gone and not counts:
            return
        pairs = [value for name, count in sorted(counts.items()) for value in (name.lower(), count)]
        run_sync(self._client, "cold_forget", [self.keys.cold(slug)], [gone.lower(), *pairs])

    def forget_links(self, *, copies: set[LinkCopy], batch: int) -> None:
        """Remove link copies kept in OTHER projects (one link_forget.lua call per project and
        batch): an agent there must not keep an approval from, or mail held from, an agent that
        no longer exists, nor persist a link to it again."""
        by_slug: dict[str, list[LinkCopy]] = {}
        for copy in sorted(copies):
            by_slug.setdefault(copy.slug, []).append(copy)
        for slug, items in by_slug.items():
            for start in range(0, len(items), batch):
                args = [x for c in items[start : start + batch] for x in (c.owner, c.field, c.agent_id)]
                run_sync(
                    self._client, "link_forget", [self.keys.pending(slug)], [self.keys.project_prefix(slug), *args]
                )

    # -- hard_delete_project -----------------------------------------------------------
    def claim_slug(self, *, slug: str) -> None:
        """A project made before <p>:slugs existed owns its slug only through its directory
        entry: claim the slug for its path, so no other path can take it once the project goes."""
        keys = self.keys
        human_key = self._client.hget(keys.project(slug), "human_key") or self._client.hget(keys.projects, slug)
        if human_key:
            self._client.hsetnx(keys.slug_owners, slug, human_key)

    def project_counts(self, *, slug: str) -> ProjectCounts:
        keys = self.keys
        pipe = self._client.pipeline(transaction=False)
        pipe.hget(keys.project(slug), "id")
        pipe.hlen(keys.agents(slug))
        pipe.hlen(keys.bodies(slug))
        pipe.hlen(keys.windows(slug))
        pipe.zrange(keys.reservation_all(slug), 0, -1)
        project_id, agents, messages, windows, reservations = pipe.execute()
        recipients = 0
        for key in self._client.scan_iter(match=keys.inboxes_pattern(slug), count=SCAN_COUNT):
            recipients += self._client.xlen(key)
        return ProjectCounts(
            project_id=int(project_id or 0),
            agents=int(agents),
            messages=int(messages),
            message_recipients=recipients,
            reservations=frozenset(int(r) for r in reservations),
            windows=int(windows),
        )

    def link_copies(self, *, slug: str) -> set[LinkCopy]:
        """The copies kept in other projects of the links of this project's agents."""
        keys = self.keys
        agents = {lower: decode_agent(raw)["id"] for lower, raw in self._client.hgetall(keys.agents(slug)).items()}
        pipe = self._client.pipeline(transaction=False)
        for lower in agents:
            pipe.hkeys(keys.links(slug, lower))
        copies: set[LinkCopy] = set()
        for (lower, agent_id), fields in zip(agents.items(), pipe.execute(), strict=True):
            for field_name in fields:
                direction, other_slug, other = layout.parse_link_field(field_name)
                if other_slug != slug:
                    mirror = "out" if direction == "in" else "in"
                    copies.add(LinkCopy(other_slug, other, layout.link_field(mirror, slug, lower), int(agent_id)))
        return copies

    def unlink_project(self, *, slug: str) -> None:
        """Every key of the project, its directory entry, and last the project and agents hashes
        (so an interrupted delete is finished by calling it again)."""
        keys = self.keys
        last = {keys.project(slug), keys.agents(slug)}
        batch: list[str] = []
        for key in self._client.scan_iter(match=keys.project_pattern(slug), count=SCAN_COUNT):
            if key not in last:
                batch.append(key)
            if len(batch) >= UNLINK_BATCH:
                self._client.unlink(*batch)
                batch = []
        if batch:
            self._client.unlink(*batch)
        self._client.hdel(keys.projects, slug)
        self._client.unlink(*last)
