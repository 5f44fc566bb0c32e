"""Hard deletes and purges meet the contact data: links (both copies, in both projects), messages
held until approval, and thread participants. A deleted agent or project leaves none of it
behind, so a new agent of the same name inherits no approval, no thread membership and no held
mail, and a persistence drain afterwards writes no link back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastmcp import FastMCP
from helpers import PROJECT, Tools
from persist_helpers import index_rows, run_worker
from shapes import payload

from broker.config import Settings
from broker.index import Batch, Index

OTHER = "/tmp/other-proj"
OTHER_SLUG = "tmp-other-proj"
SLUG = "tmp-concurrent-test"


@pytest.fixture
async def web(tools: Tools, trio: dict[str, Any]) -> dict[str, Any]:
    """BlueLake in contact with everyone, in both directions and both projects:
    - GreenCastle (contacts_only) holds mail from BlueLake (pending link BlueLake -> GreenCastle);
    - BlueLake (contacts_only) holds mail from alpha-one and from RedFox (of OTHER);
    - BlueLake and alpha-one share thread T9; BlueLake -> RedFox is approved (RedFox asked first);
    - OrangeOwl (OTHER) holds mail from BlueLake."""
    await tools.project(OTHER)
    for name in ("RedFox", "OrangeOwl"):
        await tools.agent(name, project_key=OTHER)
    await tools.call("set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="contacts_only")
    await tools.send("alpha-one", ["BlueLake"], subject="thread start", thread_id="T9")
    await tools.send("BlueLake", ["alpha-one"], subject="in T9", thread_id="T9")
    await tools.call("set_contact_policy", project_key=PROJECT, agent_name="BlueLake", policy="contacts_only")
    held = {
        "for_green": payload(await tools.send("BlueLake", ["GreenCastle"], subject="held for green"))["id"],
        "from_alpha": payload(await tools.send("alpha-one", ["BlueLake"], subject="held for blue"))["id"],
        "for_orange": payload(await tools.send("BlueLake", [f"OrangeOwl@{OTHER}"], subject="held for orange"))["id"],
    }
    await tools.call("request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent=f"RedFox@{OTHER}")
    await tools.call(
        "respond_contact", project_key=OTHER, to_agent="RedFox", from_agent=f"project:{SLUG}#BlueLake", accept=True
    )
    # RedFox writes to BlueLake: admitted by the approved link BlueLake -> RedFox (either direction)
    await tools.send("RedFox", [f"project:{SLUG}#BlueLake"], project_key=OTHER, subject="from afar")
    return {**trio, "held": held}


async def link_fields(server: FastMCP, slug: str, name: str) -> list[str]:
    store = server.store  # type: ignore[attr-defined]
    return sorted(await store.redis.hkeys(store.keys.links(slug, name)))


async def test_a_link_row_whose_agent_is_gone_is_not_written(
    tools: Tools, trio: dict[str, Any], server: FastMCP, settings: Settings
) -> None:
    """A batch that read a link before its agent was deleted, written after: no row."""
    await run_worker(server, settings)
    blue, green = trio["agents"]["BlueLake"], trio["agents"]["GreenCastle"]
    await tools.call("hard_delete_agent", project_key=PROJECT, agent_name="BlueLake", confirmation="I UNDERSTAND")
    now = datetime.now(UTC).isoformat()
    row = {
        "a_project_id": blue["project_id"], "a_agent_id": blue["id"], "b_project_id": green["project_id"],
        "b_agent_id": green["id"], "status": "approved", "reason": "", "created_ts": now, "updated_ts": now,
        "expires_ts": None,
    }  # fmt: skip
    index = Index(settings.index_path)
    try:
        index.write_batch(Batch(links=[row]))
    finally:
        index.close()
    assert index_rows(settings, "SELECT * FROM agent_links") == []
