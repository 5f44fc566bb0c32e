"""Review of contacts and cross-project mail: defects found by probing edge cases (§3.3, §3.4, §5.6)."""

from __future__ import annotations

from typing import Any

from helpers import PROJECT, Tools
from shapes import payload
from test_contacts import policy, respond

OTHER = "/tmp/other-proj"
OTHER_SLUG = "tmp-other-proj"
SLUG = "tmp-concurrent-test"


async def other_project(tools: Tools, *names: str, policy_value: str | None = None) -> None:
    await tools.project(OTHER)
    for name in names:
        await tools.agent(name, project_key=OTHER)
        if policy_value:
            await tools.call("set_contact_policy", project_key=OTHER, agent_name=name, policy=policy_value)


async def test_broadcast_does_not_reach_into_another_project(tools: Tools, trio: dict[str, Any]) -> None:
    """A broadcast's explicit cc of another project reaches that agent only: it neither broadcasts
    to the other project's agents nor lists them (their names are not the sender's to know)."""
    await other_project(tools, "RedFox", "OrangeOwl", "PinkBear", policy_value="open")
    await tools.call("set_contact_policy", project_key=OTHER, agent_name="PinkBear", policy="auto")
    result = await tools.send("BlueLake", [], broadcast=True, cc=[f"project:{OTHER_SLUG}#RedFox"])
    by_project = {d["project"]: d["payload"] for d in result["deliveries"]}
    assert (by_project[OTHER]["to"], by_project[OTHER]["cc"]) == ([], ["RedFox"])
    assert sorted(by_project[PROJECT]["to"]) == ["GreenCastle", "alpha-one"]
    assert "skipped" not in result
    assert await tools.inbox("OrangeOwl", project_key=OTHER) == []
    assert [m["kind"] for m in await tools.inbox("RedFox", project_key=OTHER)] == ["cc"]
