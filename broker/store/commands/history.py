"""The typed reads of the history tools (broker/history/search.py): the viewing agent's record,
checked against its token (get_agent.lua), and a project's id."""

from __future__ import annotations

import json
from typing import Any

from broker.store.refusals import Refusal
from broker.store.store import Store


async def viewer_record(
    store: Store, *, slug: str, name: str, token_digest: str, token_required: bool
) -> dict[str, Any]:
    """The agent's record (its JSON, decoded) once the token checks out. Raises Refusal
    (NO_PROJECT, NO_AGENT, BAD_TOKEN, AUTH_REQUIRED)."""
    keys = store.keys
    reply = await store.run(
        "get_agent",
        [keys.project(slug), keys.agents(slug), keys.active(slug)],
        [name, token_digest, "1" if token_required else "0"],
    )
    if reply[0] != "ok":
        raise Refusal(*(str(part) for part in reply))
    return json.loads(reply[1])


async def project_id(store: Store, *, slug: str) -> int | None:
    """The project's id, or None when the project is not there."""
    found = await store.client().hget(store.keys.project(slug), "id")
    return None if found is None else int(found)
