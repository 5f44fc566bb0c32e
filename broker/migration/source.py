"""Reading a reference mailbox (``agent-mail-api.md`` §6): its SQLite database, checked row by row
and converted to this broker's values, and the attachment files its Git archive holds.

Every row that cannot be taken becomes a ``Problem`` naming the row and why (invalid name,
dangling reference, malformed timestamp, a table this broker does not import); rows that depend
on a refused row are refused too, each with its own reason. Nothing is dropped without one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.errors import BrokerError
from broker.identity.agents import ATTACHMENT_POLICIES
from broker.identity.names import NAME_SHAPE
from broker.mail.contacts import POLICIES as CONTACT_POLICIES
from broker.migration.reference import from_reference_time, token_digest
from broker.persistence.attachments import STAGED_PATH, manifest_rel
from broker.store.keys import slugify

RECIPIENT_KINDS = ("to", "cc", "bcc")
LINK_STATUSES = ("pending", "approved", "blocked")
# Reference tables the broker does not take, and why (each of their rows is reported).
NOT_IMPORTED = {
    "window_identities": "window identities are not imported: agents keep their names, a window registers again",
    "message_summaries": "stored thread summaries are not imported: summarize_thread computes them again",
    "products": "products are not imported: create them again with ensure_product",
    "product_project_links": "product links are not imported: link the projects again with products_link",
    "project_sibling_suggestions": "sibling suggestions (the reference's web UI) have no counterpart here",
}

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Problem:
    """A row the import did not take: its table, its key, why."""

    table: str
    key: str
    reason: str

    def line(self) -> str:
        return f"{self.table} {self.key}: {self.reason}"


@dataclass
class Mailbox:
    """The rows of a reference mailbox that can be taken, keyed as the index keys them, with
    this broker's values (ISO timestamps, token digests)."""

    projects: dict[int, dict[str, Any]] = field(default_factory=dict)
    agents: dict[int, dict[str, Any]] = field(default_factory=dict)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    recipients: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    reservations: dict[int, dict[str, Any]] = field(default_factory=dict)
    links: dict[tuple[int, int, int, int], dict[str, Any]] = field(default_factory=dict)
    # archive path (projects/<slug>/attachments/...) -> the file in the reference's archive
    attachment_files: dict[str, Path] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def refuse(self, table: str, key: object, reason: str) -> None:
        self.problems.append(Problem(table, str(key), reason))


class _Bad(ValueError):
    pass


def _time(row: sqlite3.Row, column: str, required: bool = True) -> str | None:
    value = row[column]
    try:
        converted = from_reference_time(value)
    except (ValueError, TypeError) as exc:
        raise _Bad(f"{column} {value!r} is not a timestamp") from exc
    if converted is None and required:
        raise _Bad(f"{column} is empty")
    return converted


def _text(row: sqlite3.Row, column: str, limit: int, default: str | None = None) -> str:
    value = row[column]
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise _Bad(f"{column} {value!r} is not text")
    if len(value) > limit:
        raise _Bad(f"{column} is {len(value)} characters, more than {limit}")
    return value


def read_mailbox(database: Path, archive: Path, progress: Progress | None = None) -> Mailbox:
    """The mailbox at ``database`` (the reference's storage.sqlite3) and ``archive`` (its
    STORAGE_ROOT), opened read-only."""
    if not Path(database).is_file():
        raise BrokerError(
            "INVALID_ARGUMENT", f"no file at --database {database}. Pass the reference's storage.sqlite3."
        )
    if not Path(archive).is_dir():
        raise BrokerError(
            "INVALID_ARGUMENT", f"no directory at --archive {archive}. Pass the reference's STORAGE_ROOT."
        )
    conn = sqlite3.connect(f"file:{Path(database).resolve()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = {"projects", "agents", "messages", "message_recipients"} - tables
        if missing:
            raise BrokerError(
                "INVALID_ARGUMENT",
                f"{database} is not an MCP Agent Mail database: no table {', '.join(sorted(missing))}. "
                "Pass the reference's storage.sqlite3.",
            )
        box = Mailbox()
        steps: list[tuple[str, Callable[[Mailbox, sqlite3.Row], None]]] = [
            ("projects", _project),
            ("agents", _agent),
            ("messages", _message),
            ("message_recipients", _recipient),
            ("file_reservations", _reservation),
            ("agent_links", _link),
        ]
        for table, take in steps:
            if table not in tables:
                continue
            total = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            order = "message_id, agent_id" if table == "message_recipients" else "id"
            for done, row in enumerate(conn.execute(f"SELECT * FROM {table} ORDER BY {order}"), 1):
                try:
                    take(box, row)
                except _Bad as exc:
                    key = f"{row['message_id']}/{row['agent_id']}" if table == "message_recipients" else row["id"]
                    box.refuse(table, key, str(exc))
                if progress and (done % 5000 == 0 or done == total):
                    progress(f"reading {table}", done, total)
        for table, reason in NOT_IMPORTED.items():
            if table in tables:
                for (row_id,) in conn.execute(f"SELECT id FROM {table} ORDER BY id"):
                    box.refuse(table, row_id, reason)
        _attachments(box, Path(archive))
        return box
    finally:
        conn.close()


def _project(box: Mailbox, row: sqlite3.Row) -> None:
    slug = _text(row, "slug", 255)
    if slugify(slug) != slug:
        raise _Bad(f"slug {slug!r} is not a slug (lowercase letters, digits and '-'): its files could not be named")
    human_key = _text(row, "human_key", 255)
    if not human_key.strip():
        raise _Bad("human_key is empty")
    box.projects[row["id"]] = {
        "id": row["id"],
        "slug": slug,
        "human_key": human_key,
        "created_at": _time(row, "created_at"),
        "archived_at": _time(row, "archived_at", required=False),
    }


def _agent(box: Mailbox, row: sqlite3.Row) -> None:
    if row["project_id"] not in box.projects:
        raise _Bad(f"its project {row['project_id']} was not taken (see projects)")
    name = _text(row, "name", 128)
    if not NAME_SHAPE.match(name):
        raise _Bad(f"name {name!r} is not an agent name (letters, digits and '._-', at most 128)")
    for other in box.agents.values():
        if other["project_id"] == row["project_id"] and other["name"].lower() == name.lower():
            raise _Bad(f"name {name!r} differs only in case from agent {other['id']} {other['name']!r}")
    policies = {"attachments_policy": ATTACHMENT_POLICIES, "contact_policy": CONTACT_POLICIES}
    for column, allowed in policies.items():
        if row[column] not in allowed:
            raise _Bad(f"{column} {row[column]!r} is not one of {', '.join(allowed)}")
    token = row["registration_token"]
    box.agents[row["id"]] = {
        "id": row["id"],
        "project_id": row["project_id"],
        "name": name,
        "program": _text(row, "program", 128),
        "model": _text(row, "model", 128),
        "task_description": _text(row, "task_description", 2048, default=""),
        "inception_ts": _time(row, "inception_ts"),
        "last_active_ts": _time(row, "last_active_ts"),
        "attachments_policy": row["attachments_policy"],
        "contact_policy": row["contact_policy"],
        "registration_token": token_digest(token) if token else None,
        "retired_at": _time(row, "retired_at", required=False),
    }


def _message(box: Mailbox, row: sqlite3.Row) -> None:
    if row["project_id"] not in box.projects:
        raise _Bad(f"its project {row['project_id']} was not taken (see projects)")
    if row["sender_id"] not in box.agents:
        raise _Bad(f"its sender, agent {row['sender_id']}, was not taken (see agents)")
    try:
        attachments = json.loads(row["attachments"] or "[]")
    except (TypeError, ValueError) as exc:
        raise _Bad("attachments is not JSON") from exc
    if not isinstance(attachments, list):
        raise _Bad("attachments is not a JSON list")
    topic = row["topic"]
    box.messages[row["id"]] = {
        "id": row["id"],
        "project_id": row["project_id"],
        "sender_id": row["sender_id"],
        "thread_id": _text(row, "thread_id", 128) if row["thread_id"] is not None else None,
        "topic": _text(row, "topic", 64) if topic is not None else None,
        "subject": _text(row, "subject", 512),
        "body_md": _text(row, "body_md", 10**9),
        "importance": _text(row, "importance", 16, default="normal"),
        "ack_required": 1 if row["ack_required"] else 0,
        "created_ts": _time(row, "created_ts"),
        "attachments": json.dumps(attachments),
    }


def _recipient(box: Mailbox, row: sqlite3.Row) -> None:
    message = box.messages.get(row["message_id"])
    if message is None:
        raise _Bad(f"message {row['message_id']} was not taken (see messages)")
    agent = box.agents.get(row["agent_id"])
    if agent is None:
        raise _Bad(f"agent {row['agent_id']} was not taken (see agents)")
    if agent["project_id"] != message["project_id"]:
        raise _Bad(f"agent {agent['name']} is not in the message's project {message['project_id']}")
    if row["kind"] not in RECIPIENT_KINDS:
        raise _Bad(f"kind {row['kind']!r} is not one of to, cc, bcc")
    box.recipients[(row["message_id"], row["agent_id"])] = {
        "message_id": row["message_id"],
        "agent_id": row["agent_id"],
        "kind": row["kind"],
        "read_ts": _time(row, "read_ts", required=False),
        "ack_ts": _time(row, "ack_ts", required=False),
    }


def _reservation(box: Mailbox, row: sqlite3.Row) -> None:
    if row["project_id"] not in box.projects:
        raise _Bad(f"its project {row['project_id']} was not taken (see projects)")
    agent = box.agents.get(row["agent_id"])
    if agent is None or agent["project_id"] != row["project_id"]:
        raise _Bad(f"its holder, agent {row['agent_id']}, was not taken or is not in project {row['project_id']}")
    pattern = _text(row, "path_pattern", 512)
    if not pattern.strip():
        raise _Bad("path_pattern is empty")
    box.reservations[row["id"]] = {
        "id": row["id"],
        "project_id": row["project_id"],
        "agent_id": row["agent_id"],
        "path_pattern": pattern,
        "exclusive": 1 if row["exclusive"] else 0,
        "reason": _text(row, "reason", 512, default=""),
        "created_ts": _time(row, "created_ts"),
        "expires_ts": _time(row, "expires_ts"),
        "released_ts": _time(row, "released_ts", required=False),
    }


def _link(box: Mailbox, row: sqlite3.Row) -> None:
    for side in ("a", "b"):
        agent = box.agents.get(row[f"{side}_agent_id"])
        if agent is None or agent["project_id"] != row[f"{side}_project_id"]:
            raise _Bad(
                f"endpoint {side}, agent {row[f'{side}_agent_id']} of project {row[f'{side}_project_id']}, "
                "was not taken (see agents)"
            )
    if row["status"] not in LINK_STATUSES:
        raise _Bad(f"status {row['status']!r} is not one of {', '.join(LINK_STATUSES)}")
    key = (row["a_project_id"], row["a_agent_id"], row["b_project_id"], row["b_agent_id"])
    box.links[key] = {
        "a_project_id": key[0],
        "a_agent_id": key[1],
        "b_project_id": key[2],
        "b_agent_id": key[3],
        "status": row["status"],
        "reason": _text(row, "reason", 512, default=""),
        "created_ts": _time(row, "created_ts"),
        "updated_ts": _time(row, "updated_ts"),
        "expires_ts": _time(row, "expires_ts", required=False),
    }


def _attachments(box: Mailbox, archive: Path) -> None:
    """Find the files the messages' attachment metadata names in the reference archive (its
    work tree: the reference does not commit originals and manifests). A missing file is
    reported; its message is taken with the metadata as it is."""
    for message in box.messages.values():
        for meta in json.loads(message["attachments"]):
            if not isinstance(meta, dict) or meta.get("type") != "file":
                continue
            for column in ("path", "original_path"):
                rel = meta.get(column)
                if rel is None and column == "original_path":
                    continue
                if not isinstance(rel, str) or not STAGED_PATH.match(rel):
                    box.refuse("attachments", f"message {message['id']}", f"{column} {rel!r} is not an archive path")
                    continue
                if rel in box.attachment_files:
                    continue
                found = archive / rel
                if found.is_file():
                    box.attachment_files[rel] = found
                else:
                    box.refuse("attachments", f"message {message['id']}", f"{rel} is not in the archive {archive}")
            path, sha1 = meta.get("path"), meta.get("sha1")
            if isinstance(path, str) and STAGED_PATH.match(path) and isinstance(sha1, str):
                manifest = manifest_rel(path.split("/")[1], sha1)
                if (archive / manifest).is_file():  # optional: the reference rarely keeps one
                    box.attachment_files.setdefault(manifest, archive / manifest)
