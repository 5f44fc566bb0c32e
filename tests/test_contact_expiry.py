"""Expiry of contact links and held messages, with one-second lifetimes (the settings'
minimums are lowered for this module only; the logic compares against Redis's clock)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from contact_helpers import policy, request, respond
from helpers import PROJECT, Tools, make_settings
from shapes import payload

from broker.config import Settings


@pytest.fixture
def settings(backend: str, tmp_path: Path) -> Settings:
    return make_settings(backend, tmp_path, CONTACT_MIN_TTL_SECONDS=1, CONTACT_HOLD_TTL_SECONDS=1)


async def test_held_message_is_never_delivered_after_its_deadline(tools: Tools, trio: dict[str, Any]) -> None:
    await policy(tools, "GreenCastle", "contacts_only")
    result = await tools.send("BlueLake", ["GreenCastle"], subject="late")
    assert result["queued"][0]["contact_status"] == "pending"
    await asyncio.sleep(1.3)
    [link] = await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake")
    assert (link["status"], link["is_expired"], link["allows_messaging"]) == ("pending", True, False)
    response = await respond(tools, "GreenCastle", "BlueLake", ttl_seconds=60)
    assert (response["approved"], response["delivered_message_ids"]) == (True, [])
    [intro] = await tools.inbox("GreenCastle")
    assert intro["subject"] == "Contact request from BlueLake"
    # the approval itself works: the next message goes straight through
    assert payload(await tools.send("BlueLake", ["GreenCastle"]))["to"] == ["GreenCastle"]


async def test_an_expired_approval_no_longer_admits_mail(tools: Tools, trio: dict[str, Any]) -> None:
    await policy(tools, "GreenCastle", "contacts_only")
    await request(tools, "BlueLake", "GreenCastle", ttl_seconds=1)
    await respond(tools, "GreenCastle", "BlueLake", ttl_seconds=1)
    assert payload(await tools.send("BlueLake", ["GreenCastle"], auto_contact_if_blocked=False))["to"] == [
        "GreenCastle"
    ]
    await asyncio.sleep(1.3)
    [link] = await tools.call("list_contacts", project_key=PROJECT, agent_name="BlueLake")
    assert (link["status"], link["is_expired"], link["allows_messaging"]) == ("approved", True, False)
    text = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="s",
        body_md="b", auto_contact_if_blocked=False,
    )  # fmt: skip
    assert text.startswith("CONTACT_REQUIRED")
    # asking again after expiry makes a new pending request with a new intro
    again = await request(tools, "BlueLake", "GreenCastle", ttl_seconds=60)
    assert again["status"] == "pending" and "notification_message" in again
