"""The mailbox the import tests read: three projects, cross-project mail and links, BCC, a
thread, read and ack state, held, released and expired reservations, attachments, and rows the
import must refuse (each named in ``REFUSED``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reference_mailbox import ReferenceMailbox

BACKEND, FRONTEND, OPS = "/data/backend", "/data/frontend", "/data/ops"
TOKEN = "bluelake-secret-token"
PICTURE = b"RIFF\x1a\x00\x00\x00WEBPVP8 fake picture bytes"


def build(root: Path) -> tuple[ReferenceMailbox, dict[str, Any]]:
    """The mailbox under ``root`` and the ids its rows got."""
    now = datetime.now(UTC).replace(microsecond=123456)
    t0 = now - timedelta(days=2)
    box = ReferenceMailbox(root)
    backend = box.project(BACKEND, "data-backend", t0)
    frontend = box.project(FRONTEND, "data-frontend", t0)
    ops = box.project(OPS, "data-ops", t0)
    blue = box.agent(backend, "BlueLake", t0, token=TOKEN, task_description="API work")
    green = box.agent(backend, "GreenCastle", t0, token="green-token")
    alpha = box.agent(backend, "alpha-one", t0, token="alpha-token", contact_policy="contacts_only")
    worker = box.agent(backend, "worker_42", t0, token="worker-token")
    purple = box.agent(frontend, "PurpleBear", t0, token="purple-token", program="codex", model="gpt-5")
    orange = box.agent(frontend, "OrangeFox", t0, token="orange-token")
    silver = box.agent(ops, "SilverHawk", t0, token="silver-token", retired_at="2026-01-02 03:04:05.000000")
    at = [t0 + timedelta(hours=h) for h in range(1, 12)]
    ids: dict[str, Any] = {}
    ids["kickoff"] = box.message(
        backend, blue, at[0], to=[green], cc=[alpha], bcc=[worker], subject="API kickoff",
        body="Plan for the **orchid** endpoint.", thread_id="FEAT-1", topic="design", importance="high",
        ack_required=True, read={green: at[1], alpha: at[2]}, acked={green: at[1]},
    )  # fmt: skip
    ids["reply"] = box.message(
        backend, green, at[3], to=[blue], subject="Re: API kickoff", body="Agreed, starting now.",
        thread_id="FEAT-1", topic="design",
    )  # fmt: skip
    ids["cross"] = box.message(
        backend, purple, at[4], to=[blue], subject="Frontend needs the schema", body="Send the schema please.",
        thread_id="FEAT-1",
    )  # fmt: skip
    picture = box.attachment_file(backend, PICTURE)
    inline = {"type": "inline", "media_type": "image/webp", "bytes": 4, "sha1": "0" * 40, "data_base64": "AAAA"}
    ids["picture"] = box.message(
        backend, blue, at[5], to=[green], subject="Screenshot", body="See ![shot](attached).",
        attachments=[picture, inline], read={green: at[6]},
    )  # fmt: skip
    ids["release"] = box.message(
        frontend, orange, at[6], to=[purple], subject="Release zanzibar", body="The zanzibar build is green.",
        topic="release",
    )  # fmt: skip
    ids["ops"] = box.message(ops, silver, at[7], to=[silver], subject="Note to self", body="rotate keys")
    ids["picture_meta"] = picture
    future = now + timedelta(hours=4)
    ids["held"] = box.reservation(backend, blue, "src/api/*.py", at[8], future, reason="FEAT-1")
    ids["released"] = box.reservation(backend, green, "docs/**", at[8], future, released=at[9], exclusive=False)
    ids["expired"] = box.reservation(backend, alpha, "lib/old.py", at[0], at[1])
    ids["held_front"] = box.reservation(frontend, orange, "web/**", at[9], future, exclusive=False)
    box.link(blue, purple, "approved", at[2], expires=now + timedelta(days=30), reason="schema questions")
    box.link(green, alpha, "pending", at[3], expires=now + timedelta(days=7))
    # rows the import must refuse, each for a reason of its own
    bad = box.agent(backend, "bad name!", t0)
    box.agent(backend, "bluelake", t0)  # BlueLake again, in another case
    ids["from_bad"] = box.message(backend, bad, at[9], to=[green], subject="from a bad agent")
    ids["bad_time"] = box.message(backend, blue, at[9], to=[green], subject="when?", created_text="yesterday")
    box.recipient(ids["reply"], 999)  # an agent that does not exist
    box.raw(
        "INSERT INTO window_identities (id, project_id, window_uuid, display_name, created_ts, last_active_ts) "
        "VALUES (1, ?, 'f0e1d2c3', 'BlueLake', ?, ?)",
        (backend, "2026-01-01 00:00:00", "2026-01-01 00:00:00"),
    )
    ids.update(backend=backend, frontend=frontend, ops=ops, blue=blue, green=green, alpha=alpha, worker=worker,
               purple=purple, orange=orange, silver=silver, bad=bad, at=at, now=now)  # fmt: skip
    return box.commit(), ids


# what the report lists as not taken: (table, key) -> a part of the reason
def refused(ids: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {
        ("agents", str(ids["bad"])): "is not an agent name",
        ("agents", str(ids["bad"] + 1)): "differs only in case",
        ("messages", str(ids["from_bad"])): "was not taken",
        ("messages", str(ids["bad_time"])): "is not a timestamp",
        ("message_recipients", f"{ids['from_bad']}/{ids['green']}"): "was not taken",
        ("message_recipients", f"{ids['bad_time']}/{ids['green']}"): "was not taken",
        ("message_recipients", f"{ids['reply']}/999"): "agent 999 was not taken",
        ("window_identities", "1"): "not imported",
    }
