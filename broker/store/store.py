"""The broker's handle on Redis: settings, keys, scripts, id allocators and error mapping.

The Redis client is created lazily inside the running event loop (never at import) and
re-created if the loop changes, so a server built in one loop works in another.
"""

from __future__ import annotations

import asyncio
import difflib
import json
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from broker.config import Settings
from broker.errors import BrokerError
from broker.identity.auth import SessionBindings
from broker.identity.names import mistake_hint
from broker.persistence.queue import PersistQueue
from broker.realtime.doorbell import Doorbell
from broker.store.clients import make_client
from broker.store.ids import IdAllocator
from broker.store.keys import Keys
from broker.store.scripts import Scripts


class Store:
    def __init__(self, settings: Settings, redis_url: str, agent_auth: str | None = None) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.keys = Keys(settings.redis_key_prefix)
        # charge the current HTTP client's rate bucket this many tokens (build_server sets it)
        self.charge_client: Callable[[int], None] = lambda tokens: None
        self.bindings = SessionBindings(agent_auth or settings.agent_auth, settings.session_binding_ttl_seconds)
        self.ids = {
            "message": IdAllocator(self.keys.ids("message"), 256),
            "agent": IdAllocator(self.keys.ids("agent"), 16),
            "project": IdAllocator(self.keys.ids("project"), 4),
            "reservation": IdAllocator(self.keys.ids("reservation"), 256),
        }
        self.persist_queue = PersistQueue(redis_url, self.keys)
        # human_key -> slug of projects seen in this process (broker/identity/slugs.py says why it is safe)
        self.slug_cache: dict[str, str] = {}
        self._client: Redis | None = None
        self._scripts: Scripts | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._doorbell: Doorbell | None = None
        # Called with each doorbell's cursor (the metrics' delivery lag), if set.
        self.on_doorbell: Callable[[str], None] | None = None

    @property
    def redis(self) -> Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = make_client(self.redis_url, self.settings.redis_max_connections)
            self._scripts = Scripts(self._client)
            self._loop = loop
            self._doorbell = None
            for allocator in self.ids.values():
                allocator.reset()
        return self._client

    @property
    def doorbell(self) -> Doorbell:
        """This process's doorbell subscriber (broker/realtime/doorbell.py), bound like the client to the
        running loop; its connection opens with the first waiter, not before."""
        self.redis  # noqa: B018 - notices a new loop (and drops what belonged to the old one)
        if self._doorbell is None:
            self._doorbell = Doorbell(self.redis_url, self.keys.doorbell)
            self._doorbell.lag_observer = self.on_doorbell
        return self._doorbell

    @property
    def waiter_count(self) -> int:
        """Waiters registered with this process's doorbell (0 before the first one)."""
        return self._doorbell.waiter_count if self._doorbell is not None else 0

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        self.redis  # noqa: B018 - binds client and scripts to the running loop
        assert self._scripts is not None
        return await self._scripts.run(name, keys, args)

    def script_sha(self, name: str) -> str:
        self.redis  # noqa: B018 - binds client and scripts to the running loop
        assert self._scripts is not None
        return self._scripts.sha(name)

    def schedule_persist(self, slug: str, needed: int) -> None:
        """Enqueue a drain job when the write script claimed the project's "job scheduled" flag
        (``needed`` is its 1/0 reply), without waiting: the send does not pay for the enqueue,
        and a lost enqueue is caught by the reconciler."""
        if needed == 1:
            self.persist_queue.enqueue_soon(slug)

    async def next_id(self, kind: str) -> int:
        return await self.ids[kind].next_id(self.redis)

    async def close(self) -> None:
        if self._doorbell is not None:
            await self._doorbell.close()
            self._doorbell = None
        self.persist_queue.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- error mapping ----------------------------------------------------------------
    async def raise_for(
        self, reply: list[Any], slug: str, project_key: str, token_param: str = "registration_token"
    ) -> None:
        """Turn a script's error reply into a BrokerError with a remedy. ``token_param`` names
        the argument that carries the agent's token in the failing tool."""
        code = reply[0]
        if code == "NO_PROJECT":
            raise await self.project_not_found(project_key)
        if code == "NO_AGENT":
            raise await self.agent_not_found(slug, reply[1])
        if code == "PROJECT_ARCHIVED":
            raise self.project_archived(reply[1] if len(reply) > 1 and reply[1] else project_key)
        if code == "BAD_TOKEN":
            raise BrokerError(
                "AUTHENTICATION_FAILED",
                f"Invalid {token_param} for agent '{reply[1]}'. Pass the registration_token that "
                "register_agent returned for this agent.",
            )
        if code == "AUTH_REQUIRED":
            raise BrokerError(
                "AUTHENTICATION_REQUIRED",
                f"This call requires {token_param} for agent '{reply[1]}' (the registration_token "
                "register_agent returned), unless this MCP session has already authenticated as that agent.",
            )
        raise BrokerError("INTERNAL_ERROR", f"Unexpected script reply {code!r}; please report it.")

    @staticmethod
    def project_archived(human_key: str) -> BrokerError:
        """An archived project takes no new work (sends, reservations, agents) until unarchived."""
        return BrokerError(
            "PROJECT_ARCHIVED",
            f"Project '{human_key}' is archived; call unarchive_project(project_key='{human_key}') to reopen it.",
        )

    async def message_not_found(self, slug: str, message_id: int, viewer: str) -> BrokerError:
        human_key = await self.redis.hget(self.keys.project(slug), "human_key")
        return BrokerError(
            "NOT_FOUND",
            f"Message '{message_id}' not found or not visible to agent '{viewer}' "
            f"in project '{human_key}'. Check the id with fetch_inbox.",
        )

    async def missing_agent_reply(self, slug: str, name: str) -> list[str]:
        """The script-style error reply for an agent that is not there (or its project)."""
        exists = await self.redis.exists(self.keys.project(slug))
        return ["NO_AGENT", name] if exists else ["NO_PROJECT"]

    async def project_not_found(self, project_key: str) -> BrokerError:
        known = await self.redis.hgetall(self.keys.projects)
        names = list(known) + list(known.values())
        close = difflib.get_close_matches(project_key, names, n=3, cutoff=0.4)
        if close:
            hint = "Did you mean: " + ", ".join(f"'{c}'" for c in close) + "? "
            return BrokerError(
                "NOT_FOUND",
                f"Project '{project_key}' not found. {hint}Use ensure_project to create a new "
                "project, or check spelling.",
            )
        return BrokerError(
            "NOT_FOUND",
            f"Project '{project_key}' not found and no similar projects exist. Use ensure_project "
            "to create a new project first. Example: ensure_project(human_key='/path/to/your/project')",
        )

    async def project_agents(self, slug: str) -> tuple[str | None, list[str]]:
        """The project's human_key and its agents' names, sorted (for error messages)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.keys.project(slug), "human_key")
        pipe.hvals(self.keys.agents(slug))
        human_key, records = await pipe.execute()
        return human_key, sorted(json.loads(r)["name"] for r in records)

    async def agent_not_found(self, slug: str, name: str) -> BrokerError:
        human_key, names = await self.project_agents(slug)
        hint = mistake_hint(name)
        suffix = f"\n\nHINT: {hint[1]}" if hint else ""
        if not names:
            message = (
                f"Agent '{name}' not found. Project '{human_key}' has no registered agents yet. "
                "Use register_agent to create an agent identity."
            )
        else:
            close = difflib.get_close_matches(name.lower(), [n.lower() for n in names], n=3, cutoff=0.6)
            if close:
                matches = [n for n in names if n.lower() in close]
                message = (
                    f"Agent '{name}' not found in project '{human_key}'. Did you mean: "
                    + ", ".join(f"'{m}'" for m in matches)
                    + "? Agent names are case-insensitive but must match exactly."
                )
            else:
                shown = ", ".join(f"'{n}'" for n in names[:10])
                more = f" and {len(names) - 10} more" if len(names) > 10 else ""
                message = (
                    f"Agent '{name}' not found in project '{human_key}'. Available agents: "
                    f"{shown}{more}. Use register_agent to create a new agent identity."
                )
        return BrokerError(hint[0] if hint else "NOT_FOUND", message + suffix)
