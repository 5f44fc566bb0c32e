"""An agent's record as the agents hash stores it (one JSON per agent), decoded: the one decoder
every command that reads an agent uses, and the record with its last activity that the token
checks (get_agent.lua, sender_pass.lua) and registration return."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# The stored record, decoded: id, name, program, model, task_description, inception_ts,
# project_id, attachments_policy, contact_policy, token_hash (the token's digest, never the
# token), retired_at while retired.
StoredAgent = dict[str, Any]


def decode_agent(raw: str) -> StoredAgent:
    """An agent's record from the JSON the agents hash holds."""
    agent: StoredAgent = json.loads(raw)
    return agent


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """An agent's stored record and its last activity (the active hash; None when not recorded)."""

    agent: StoredAgent
    last_active_ts: str | None
