"""The seed's concurrency scenarios (tests/test_concurrent_operations.py of the reference), ported.

Each scenario asserts exact outcomes where the seed tolerated failures, plus a stress test:
50 concurrent senders, 1,000 messages with random to/cc/bcc mixes, every inbox checked exactly.
The seed's file-reservation scenarios are in test_reservations.py; SQLite and archive ones
belong to the durability work.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

from fastmcp import Client, FastMCP
from helpers import PROJECT, Tools, real_redis_only

from broker.identity.names import is_generated_shape


async def _setup_project_and_agents(tools: Tools) -> dict[str, Any]:
    """The seed's setup: one project, five agents with generated adjective+noun names."""
    project = await tools.project(PROJECT)
    agents = [(await tools.agent(task_description=f"Task {i}"))["name"] for i in range(5)]
    assert len(set(agents)) == 5, agents
    assert all(is_generated_shape(name) for name in agents), agents
    return {"project_id": project["id"], "project_slug": "tmp-concurrent-test", "agents": agents}


async def _gather_ok(*calls: Any) -> list[Any]:
    """Run calls concurrently; every one must succeed."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return results


# -- project and agent creation ------------------------------------------------------------
async def test_concurrent_project_ensure(tools: Tools) -> None:
    results = await _gather_ok(*(tools.project("/tmp/race-test-same") for _ in range(5)))
    assert len(results) == 5
    assert {r["id"] for r in results} == {results[0]["id"]}
    assert all(r == results[0] for r in results), results  # same id, slug, human_key, created_at
    assert results[0]["slug"] == "tmp-race-test-same"
    assert results[0]["human_key"] == "/tmp/race-test-same"
    # The project really exists once: agents can register in it and ensure stays idempotent.
    assert await tools.project("/tmp/race-test-same") == results[0]


async def test_concurrent_agent_registration(tools: Tools) -> None:
    project = await tools.project("/tmp/reg-test")
    results = await _gather_ok(
        *(tools.agent(project_key="/tmp/reg-test", task_description=f"Task {i}") for i in range(10))
    )
    names = [r["name"] for r in results]
    assert len(set(names)) == 10, names
    assert len({name.lower() for name in names}) == 10, names
    assert len({r["id"] for r in results}) == 10
    assert len({r["registration_token"] for r in results}) == 10
    assert all(
        is_generated_shape(name) and r["project_id"] == project["id"] for name, r in zip(names, results, strict=True)
    )
    # Each registration is stored as its own identity with its own task.
    for i, name in enumerate(names):
        profile = await tools.call("whois", project_key="/tmp/reg-test", agent_name=name)
        assert profile["task_description"] == f"Task {i}"
        assert profile["id"] == results[i]["id"]


async def test_concurrent_registration_of_one_explicit_name_yields_one_identity(tools: Tools) -> None:
    await tools.project()
    results = await _gather_ok(*(tools.agent("alpha-one", task_description=f"Task {i}") for i in range(8)))
    assert {r["name"] for r in results} == {"alpha-one"}
    assert len({r["id"] for r in results}) == 1
    assert len({r["inception_ts"] for r in results}) == 1
    # One call created the agent and got its token; the others updated it without proving the
    # token, so it is not revealed to them (only its digest is stored).
    tokens = [r["registration_token"] for r in results]
    assert sum(t is not None for t in tokens) == 1 and tokens.count(None) == 7
    token = next(t for t in tokens if t)
    await tools.call("whois", project_key=PROJECT, agent_name="alpha-one", registration_token=token)
    error = await tools.error("whois", project_key=PROJECT, agent_name="alpha-two")
    assert "Available agents: 'alpha-one'." in error or "Did you mean: 'alpha-one'" in error


# -- concurrent sends ----------------------------------------------------------------------
async def test_concurrent_message_sends(tools: Tools) -> None:
    data = await _setup_project_and_agents(tools)
    agents = data["agents"]
    plan = [(agents[i % 5], agents[(i + 1) % 5], f"Concurrent Message {i}") for i in range(10)]
    results = await _gather_ok(
        *(
            tools.send(sender, [recipient], subject=subject, body_md=f"Message from {sender} to {recipient}")
            for sender, recipient, subject in plan
        )
    )
    assert all(r["count"] == 1 and r["verified_sender"] is True for r in results)
    ids = [r["deliveries"][0]["payload"]["id"] for r in results]
    assert len(set(ids)) == 10

    for agent in agents:
        expected = {
            (mid, sender, subject)
            for mid, (sender, recipient, subject) in zip(ids, plan, strict=True)
            if recipient == agent
        }
        inbox = await tools.inbox(agent, limit=100, include_bodies=True)
        got = [(m["id"], m["from"], m["subject"]) for m in inbox]
        assert len(got) == len(set(got)) == 2
        assert set(got) == expected
        for message in inbox:
            assert message["kind"] == "to"
            assert message["body_md"] == f"Message from {message['from']} to {agent}"
            assert message["project_id"] == data["project_id"]


async def test_concurrent_messages_to_same_thread(tools: Tools) -> None:
    data = await _setup_project_and_agents(tools)
    agents = data["agents"]
    first_agent = agents[0]
    results = await _gather_ok(
        *(
            tools.send(
                agents[i],
                [first_agent],
                subject=f"Thread Message {i}",
                body_md=f"Message {i} from {agents[i]}",
                thread_id="shared-thread-1",
            )
            for i in range(5)
        )
    )
    sent = {r["deliveries"][0]["payload"]["id"]: i for i, r in enumerate(results)}
    assert len(sent) == 5
    assert all(r["deliveries"][0]["payload"]["thread_id"] == "shared-thread-1" for r in results)

    inbox = await tools.inbox(first_agent, limit=100)
    assert sorted(m["id"] for m in inbox) == sorted(sent)
    for message in inbox:
        i = sent[message["id"]]
        assert message["thread_id"] == "shared-thread-1"
        assert message["subject"] == f"Thread Message {i}"
        assert message["from"] == agents[i]
    # Agent 0 also sent one to itself: it is both the sender and the "to" recipient.
    assert Counter(m["from"] for m in inbox) == Counter(agents)


# -- concurrent reads ----------------------------------------------------------------------
async def test_concurrent_inbox_fetches(tools: Tools) -> None:
    data = await _setup_project_and_agents(tools)
    agents = data["agents"]
    sent_ids = []
    for i in range(5):
        result = await tools.send(agents[(i + 1) % 5], [agents[0]], subject=f"Test Message {i}", body_md=f"Body {i}")
        sent_ids.append(result["deliveries"][0]["payload"]["id"])

    results = await _gather_ok(*(tools.inbox(agents[0], limit=100) for _ in range(10)))
    assert len(results) == 10
    newest_first = list(reversed(sent_ids))
    for inbox in results:
        assert [m["id"] for m in inbox] == newest_first
        assert [m["subject"] for m in inbox] == [f"Test Message {i}" for i in reversed(range(5))]


async def test_concurrent_inbox_fetch_during_message_send(tools: Tools) -> None:
    data = await _setup_project_and_agents(tools)
    sender, recipient = data["agents"][1], data["agents"][0]

    async def send(i: int) -> int:
        await asyncio.sleep(0.01 * i)
        result = await tools.send(sender, [recipient], subject=f"Concurrent Send {i}", body_md=f"Body {i}")
        return result["deliveries"][0]["payload"]["id"]

    async def fetch(delay: float) -> list[dict[str, Any]]:
        await asyncio.sleep(delay)
        return await tools.inbox(recipient, limit=100, include_bodies=True)

    delays = [0.0, 0.005, 0.015, 0.025, 0.035, 0.05, 0.07]
    results = await _gather_ok(*(send(i) for i in range(5)), *(fetch(d) for d in delays))
    fetches = results[5:]

    final = await tools.inbox(recipient, limit=100, include_bodies=True)
    assert len(final) == 5
    assert sorted(m["id"] for m in final) == sorted(results[:5])
    oldest_first = list(reversed(final))
    for snapshot in fetches:
        # What a fetch sees is exactly the oldest len(snapshot) messages of the final inbox,
        # newest first, with complete items: no gaps, no reordering, no half-written entries.
        assert list(reversed(snapshot)) == oldest_first[: len(snapshot)]


# -- stress: 50 senders, 1,000 messages ----------------------------------------------------
@real_redis_only
async def test_fifty_concurrent_senders_thousand_messages(server: FastMCP) -> None:
    rng = random.Random(20250101)
    senders, per_sender = 50, 20
    async with Client(server) as setup_client:
        setup = Tools(setup_client)
        await setup.project()
        names = [(await setup.agent(f"agent-{i:02d}"))["name"] for i in range(senders)]

    # Plan every message up front: random recipients split over to/cc/bcc, sometimes naming
    # one agent twice (it must be delivered once, with its strongest kind) or in other case.
    plans: dict[str, list[dict[str, Any]]] = {}
    for sender in names:
        plans[sender] = []
        for k in range(per_sender):
            picked = rng.sample(names, rng.randint(1, 6))
            cut1, cut2 = sorted(rng.randint(0, len(picked)) for _ in range(2))
            to, cc, bcc = picked[:cut1], picked[cut1:cut2], picked[cut2:]
            if not to and not cc and not bcc:
                to = picked
            if rng.random() < 0.2:
                bcc = [*bcc, rng.choice(picked).upper()]  # a duplicate: the first kind wins
            plans[sender].append({"to": to, "cc": cc, "bcc": bcc, "subject": f"{sender} #{k}"})

    expected: dict[str, dict[int, str]] = {name: {} for name in names}
    sent: dict[int, tuple[str, str]] = {}

    async def run_sender(client: Client, sender: str) -> None:
        calls = Tools(client)
        for plan in plans[sender]:
            result = await calls.send(sender, plan["to"], cc=plan["cc"], bcc=plan["bcc"], subject=plan["subject"])
            payload = result["deliveries"][0]["payload"]
            assert payload["id"] not in sent
            sent[payload["id"]] = (sender, plan["subject"])
            kinds: dict[str, str] = {}
            for kind in ("to", "cc", "bcc"):
                for name in plan[kind]:
                    kinds.setdefault(name.lower(), kind)
            assert {n.lower(): k for k in ("to", "cc", "bcc") for n in payload[k]} == kinds
            for lower, kind in kinds.items():
                recipient = next(n for n in names if n.lower() == lower)
                assert payload["id"] not in expected[recipient]
                expected[recipient][payload["id"]] = kind

    # Five MCP connections, ten senders on each, all running at once.
    clients = [Client(server) for _ in range(5)]
    for client in clients:
        await client.__aenter__()
    try:
        await _gather_ok(*(run_sender(clients[i % 5], sender) for i, sender in enumerate(names)))
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)

    assert len(sent) == senders * per_sender
    assert {mid for inbox in expected.values() for mid in inbox} == set(sent)

    async with Client(server) as client:
        check = Tools(client)
        for name in names:
            inbox = await check.inbox(name, limit=1000)
            got = [(m["id"], m["kind"]) for m in inbox]
            assert len(got) == len({mid for mid, _ in got}), f"duplicates in {name}'s inbox"
            assert dict(got) == expected[name], name
            stamps = [m["created_ts"] for m in inbox]
            assert stamps == sorted(stamps, reverse=True), "inbox is not newest first"
            assert all((m["from"], m["subject"]) == sent[m["id"]] for m in inbox), name
