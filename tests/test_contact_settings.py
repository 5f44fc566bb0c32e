"""MESSAGING_AUTO_HANDSHAKE_ON_BLOCK=false: a blocked send fails unless the caller asks to hold it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from contact_helpers import policy
from helpers import PROJECT, Tools, make_settings

from broker.config import Settings


@pytest.fixture
def settings(backend: str, tmp_path: Path) -> Settings:
    return make_settings(backend, tmp_path, MESSAGING_AUTO_HANDSHAKE_ON_BLOCK="false")


async def test_blocked_send_fails_by_default_and_is_held_on_request(tools: Tools, trio: dict[str, Any]) -> None:
    await policy(tools, "GreenCastle", "contacts_only")
    text = await tools.error(
        "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b"
    )
    assert text.startswith("CONTACT_REQUIRED")
    assert await tools.inbox("GreenCastle") == []
    held = await tools.send("BlueLake", ["GreenCastle"], auto_contact_if_blocked=True)
    assert [q["recipient"] for q in held["queued"]] == ["GreenCastle"]
