"""What an import writes: each source row compared with the target's row of the same key.

A row is *new* (the target has none), *changed* (the target has it with other values that an
upsert may set: profile fields, read/ack times set once, a reservation's release, a link's
newer state) or *unchanged*. A row whose key the target holds for something else (a slug with
another human key or id, an id naming another agent or message, a name taken by another agent
id) is a *conflict*: the import refuses before writing anything (IMPORT_CONFLICT), since
merging would rewrite data the target's own clients rely on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.errors import BrokerError
from broker.migration.source import Mailbox
from broker.persistence.index import Batch, Index, Row

KINDS = ("projects", "agents", "messages", "recipients", "reservations", "links")
SHOWN_CONFLICTS = 20
MESSAGE_COLUMNS = ("project_id", "sender_id", "thread_id", "topic", "subject", "body_md", "importance",
                   "ack_required", "created_ts", "attachments")  # fmt: skip
AGENT_PROFILE = ("program", "model", "task_description", "inception_ts", "attachments_policy", "contact_policy",
                 "registration_token", "retired_at")  # fmt: skip


@dataclass
class Plan:
    """The rows to write (new and changed: the index's own Batch, written as the worker writes
    one), how many were unchanged, and which projects they touch."""

    rows: Batch = field(default_factory=Batch)
    tally: dict[str, dict[str, int]] = field(
        default_factory=lambda: {kind: {"new": 0, "changed": 0, "unchanged": 0} for kind in KINDS}
    )
    touched: set[int] = field(default_factory=set)  # project ids with a row to write
    all_projects: list[int] = field(default_factory=list)
    slugs: dict[int, str] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)

    def touched_projects(self) -> set[str]:
        return {self.slugs[pid] for pid in self.touched}

    def take(self, kind: str, row: dict[str, Any], held: Mapping[str, Any] | None, changed: bool, *pids: int) -> None:
        state = "new" if held is None else ("changed" if changed else "unchanged")
        self.tally[kind][state] += 1
        if state != "unchanged":
            getattr(self.rows, kind).append(row)
            self.touched.update(pids)


def plan_import(index_url: str | Path, box: Mailbox, live: Mapping[str, Mapping[str, str]]) -> Plan:
    """Compare ``box`` with the index at ``index_url`` (a path or URL; read-only; absent is empty) and the live
    project hashes ``live`` (slug -> Redis project hash, empty when none)."""
    plan = Plan(all_projects=sorted(box.projects), slugs={pid: p["slug"] for pid, p in box.projects.items()})
    conn = _open(index_url)
    try:
        _projects(plan, conn, box, live)
        _agents(plan, conn, box)
        _messages(plan, conn, box)
        _recipients(plan, conn, box)
        _reservations(plan, conn, box)
        _links(plan, conn, box)
    finally:
        if conn is not None:
            conn.close()
    if plan.conflicts:
        shown = plan.conflicts[:SHOWN_CONFLICTS]
        more = f" (and {len(plan.conflicts) - SHOWN_CONFLICTS} more)" if len(plan.conflicts) > SHOWN_CONFLICTS else ""
        raise BrokerError(
            "IMPORT_CONFLICT",
            f"the target broker already holds other data under {len(plan.conflicts)} of the mailbox's keys{more}: "
            + "; ".join(shown)
            + ". Nothing was written. Import into a broker that does not have these projects (a new STORAGE_ROOT "
            "and REDIS_KEY_PREFIX), or remove them from the target first (hard_delete_project).",
            {"conflicts": plan.conflicts},
        )
    return plan


def _open(target: str | Path) -> Index | None:
    """Our index, or None when it has no schema yet (an SQLite file is never created here)."""
    index = Index(target)
    if index.path is not None and not index.path.exists():
        return None
    try:
        index.query("SELECT 1 FROM messages WHERE 1 = 0")
    except Exception:  # no schema yet (or no such file): nothing to compare with
        index.close()
        return None
    return index


def _rows(conn: Index | None, sql: str, keys: Iterable[Any]) -> list[Row]:
    """``sql`` (with ``{marks}`` for an IN list) run over ``keys`` in chunks."""
    if conn is None:
        return []
    keys = list(keys)
    found: list[Row] = []
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ", ".join(f":k{n}" for n in range(len(chunk)))
        found += conn.query(sql.format(marks=marks), {f"k{n}": key for n, key in enumerate(chunk)})
    return found


def _projects(plan: Plan, conn: Index | None, box: Mailbox, live: Mapping[str, Mapping[str, str]]) -> None:
    by_id = {r["id"]: r for r in _rows(conn, "SELECT * FROM projects WHERE id IN ({marks})", box.projects)}
    slugs = [p["slug"] for p in box.projects.values()]
    by_slug = {r["slug"]: r for r in _rows(conn, "SELECT * FROM projects WHERE slug IN ({marks})", slugs)}
    for pid, row in box.projects.items():
        held = by_id.get(pid)
        same_slug = by_slug.get(row["slug"])
        hash_ = live.get(row["slug"]) or {}
        if held is not None and held["slug"] != row["slug"]:
            plan.conflicts.append(f"project id {pid} is {held['slug']!r} in the target, not {row['slug']!r}")
        elif same_slug is not None and same_slug["id"] != pid:
            plan.conflicts.append(f"project {row['slug']!r} exists in the target with id {same_slug['id']}, not {pid}")
        elif same_slug is not None and same_slug["human_key"] != row["human_key"]:
            plan.conflicts.append(
                f"project {row['slug']!r} exists in the target for {same_slug['human_key']!r}, not {row['human_key']!r}"
            )
        elif hash_ and (hash_.get("id") != str(pid) or hash_.get("human_key") != row["human_key"]):
            plan.conflicts.append(
                f"project {row['slug']!r} is live in the target's Redis as id {hash_.get('id')} for "
                f"{hash_.get('human_key')!r}"
            )
        else:
            changed = held is not None and held["archived_at"] != row["archived_at"]
            plan.take("projects", row, held, changed, pid)


def _agents(plan: Plan, conn: Index | None, box: Mailbox) -> None:
    by_id = {r["id"]: r for r in _rows(conn, "SELECT * FROM agents WHERE id IN ({marks})", box.agents)}
    named = {
        (r["project_id"], r["name"].lower()): r
        for r in _rows(conn, "SELECT * FROM agents WHERE project_id IN ({marks})", box.projects)
    }
    for aid, row in box.agents.items():
        held = by_id.get(aid)
        same_name = named.get((row["project_id"], row["name"].lower()))
        if held is not None and (held["project_id"], held["name"].lower()) != (row["project_id"], row["name"].lower()):
            plan.conflicts.append(f"agent id {aid} is {held['name']!r} of project {held['project_id']} in the target")
        elif same_name is not None and same_name["id"] != aid:
            plan.conflicts.append(
                f"agent {row['name']!r} of {plan.slugs[row['project_id']]!r} has id {same_name['id']} in the target"
            )
        else:
            # last activity only moves forward (the index keeps the later one)
            changed = held is not None and (
                any(held[c] != row[c] for c in (*AGENT_PROFILE, "name"))
                or row["last_active_ts"] > held["last_active_ts"]
            )
            plan.take("agents", row, held, changed, row["project_id"])


def _messages(plan: Plan, conn: Index | None, box: Mailbox) -> None:
    columns = ", ".join(MESSAGE_COLUMNS)
    by_id = {
        r["id"]: r for r in _rows(conn, f"SELECT id, {columns} FROM messages WHERE id IN ({{marks}})", box.messages)
    }
    for mid, row in box.messages.items():
        held = by_id.get(mid)
        if held is not None and any(held[c] != row[c] for c in MESSAGE_COLUMNS):
            plan.conflicts.append(f"message id {mid} is another message in the target")
            continue
        plan.take("messages", row, held, False, row["project_id"])


def _recipients(plan: Plan, conn: Index | None, box: Mailbox) -> None:
    held_rows = {
        (r["message_id"], r["agent_id"]): r
        for r in _rows(conn, "SELECT * FROM message_recipients WHERE message_id IN ({marks})", box.messages)
    }
    for key, row in box.recipients.items():
        held = held_rows.get(key)
        if held is not None and held["kind"] != row["kind"]:
            plan.conflicts.append(f"recipient {key[1]} of message {key[0]} is {held['kind']!r} in the target")
            continue
        # read and ack times are set once: only a time the target lacks is written
        changed = held is not None and any(row[c] and not held[c] for c in ("read_ts", "ack_ts"))
        plan.take("recipients", row, held, changed, box.messages[key[0]]["project_id"])


def _reservations(plan: Plan, conn: Index | None, box: Mailbox) -> None:
    by_id = {r["id"]: r for r in _rows(conn, "SELECT * FROM file_reservations WHERE id IN ({marks})", box.reservations)}
    for rid, row in box.reservations.items():
        held = by_id.get(rid)
        if held is not None and any(held[c] != row[c] for c in ("project_id", "agent_id", "path_pattern")):
            plan.conflicts.append(f"file reservation id {rid} is another reservation in the target")
            continue
        changed = held is not None and (
            any(held[c] != row[c] for c in ("exclusive", "reason", "expires_ts"))
            or (row["released_ts"] is not None and held["released_ts"] is None)
        )
        plan.take("reservations", row, held, changed, row["project_id"])


def _links(plan: Plan, conn: Index | None, box: Mailbox) -> None:
    held_rows = {
        (r["a_project_id"], r["a_agent_id"], r["b_project_id"], r["b_agent_id"]): r
        for r in _rows(conn, "SELECT * FROM agent_links WHERE a_project_id IN ({marks})", box.projects)
    }
    for key, row in box.links.items():
        held = held_rows.get(key)
        # the index keeps the newer state of a link
        changed = (
            held is not None
            and row["updated_ts"] >= held["updated_ts"]
            and any(held[c] != row[c] for c in ("status", "reason", "updated_ts", "expires_ts"))
        )
        plan.take("links", row, held, changed, key[0], key[2])
