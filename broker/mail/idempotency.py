"""Idempotent sends: ``idempotency_key`` on send_message and reply_message.

A caller whose send timed out cannot tell whether it was delivered (Redis may run the script
after the client gave up). Retrying with the same key is safe: the send script of each target
project checks and records the key in the same script that delivers, so a key seen within
IDEMPOTENCY_WINDOW_SECONDS returns the first delivery's reply and writes nothing. The record
lives in the target project (``Keys.idempotency``), one per (sender, key), so a cross-project
send that stopped half-way delivers, on retry, only to the projects it had not reached.

The same key with different content is refused (IDEMPOTENCY_CONFLICT) rather than answered
with the first result: a key reused for another message is a client bug (a restarted counter,
a copied key), and answering "sent" would silently drop the new message. A send to several projects reads
the key in all of them first (broker.mail.send), so such a refusal delivers nowhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

from broker.errors import BrokerError

MAX_KEY_CHARS = 128
_KEY = re.compile(r"[!-~]+")  # visible ASCII: UUIDs, "task-42/attempt", base64...


@dataclass(frozen=True)
class Idempotency:
    key: str
    fingerprint: str  # SHA-256 hex of what the call asked to send


def check_key(key: object) -> str | None:
    """The key as given, None when absent; INVALID_IDEMPOTENCY_KEY for anything else."""
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise BrokerError("INVALID_IDEMPOTENCY_KEY", "idempotency_key must be a non-empty string, e.g. a UUID.")
    if len(key) > MAX_KEY_CHARS:
        raise BrokerError(
            "INVALID_IDEMPOTENCY_KEY",
            f"idempotency_key has {len(key)} characters; the limit is {MAX_KEY_CHARS}. Use a UUID or a short id.",
        )
    if not _KEY.fullmatch(key):
        raise BrokerError(
            "INVALID_IDEMPOTENCY_KEY",
            "idempotency_key may hold visible ASCII characters only (no spaces or control characters), e.g. a UUID.",
        )
    return key


def make(key: str | None, *content: Any) -> Idempotency | None:
    """``key`` with the fingerprint of ``content`` (the call's own arguments, before routing)."""
    if key is None:
        return None
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=_plain)
    return Idempotency(key, hashlib.sha256(text.encode()).hexdigest())


def _plain(value: Any) -> Any:
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else str(value)


def conflict(key: str, sender: str) -> BrokerError:
    return BrokerError(
        "IDEMPOTENCY_CONFLICT",
        f"idempotency_key '{key}' was already used by {sender} for a different message within the "
        "idempotency window. Nothing was sent. Retry with the same key only with the same arguments; "
        "use a new key for a new message.",
    )
