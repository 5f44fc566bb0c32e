"""Building an MCP Agent Mail mailbox in the reference's documented format (agent-mail-api.md §6):
its SQLite database (broker.migration.reference.SCHEMA, naive-UTC timestamps, tokens in clear)
and its Git archive (a work tree: message copies with ``---json`` front matter, profiles,
reservation JSON, attachment files), for the import tests and the benchmark."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from broker.migration.reference import SCHEMA, to_reference_time


def ref_time(moment: datetime) -> str:
    return to_reference_time(moment.astimezone(UTC).isoformat()) or ""


def _subject_slug(subject: str) -> str:
    import re

    return re.sub(r"[^a-zA-Z0-9._-]+", "-", subject).strip("-_").lower()[:80] or "message"


@dataclass
class ReferenceMailbox:
    """``database`` and ``archive`` of a reference server; rows are added with the methods and
    land in SQLite at once, archive files on ``commit()``. ``files`` False skips the message and
    profile copies (the import reads only attachment files from the archive): the benchmark."""

    root: Path
    files: bool = True
    ids: dict[str, int] = field(default_factory=dict)
    projects: dict[int, dict[str, Any]] = field(default_factory=dict)
    agents: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.database = self.root / "storage.sqlite3"
        self.archive = self.root / "mailbox_repo"
        self.archive.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.database, isolation_level=None)
        self.conn.executescript(SCHEMA)
        self.conn.execute("BEGIN")
        self._pending: dict[str, bytes] = {".gitattributes": b"*.json text\n*.md text\n"}

    def _next(self, table: str) -> int:
        self.ids[table] = self.ids.get(table, 0) + 1
        return self.ids[table]

    def _insert(self, table: str, row: dict[str, Any]) -> None:
        names = ", ".join(row)
        marks = ", ".join("?" * len(row))
        self.conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(row.values()))

    # -- rows ------------------------------------------------------------------------------
    def project(self, human_key: str, slug: str, created: datetime) -> int:
        pid = self._next("projects")
        row = {"id": pid, "slug": slug, "human_key": human_key, "created_at": ref_time(created)}
        self._insert("projects", row)
        self.projects[pid] = row
        return pid

    def agent(self, project: int, name: str, created: datetime, token: str | None = None, **extra: Any) -> int:
        aid = self._next("agents")
        row = {
            "id": aid, "project_id": project, "name": name, "program": extra.pop("program", "claude-code"),
            "model": extra.pop("model", "opus-4"), "task_description": extra.pop("task_description", ""),
            "inception_ts": ref_time(created), "last_active_ts": ref_time(extra.pop("last_active", created)),
            "attachments_policy": "auto", "contact_policy": "auto", "registration_token": token, **extra,
        }  # fmt: skip
        self._insert("agents", row)
        self.agents[aid] = row
        if self.files:
            profile = {k: v for k, v in row.items() if k != "registration_token"}
            self._json(f"projects/{self._slug(project)}/agents/{name}/profile.json", profile)
        return aid

    def message(
        self,
        project: int,
        sender: int,
        created: datetime,
        *,
        to: list[int],
        cc: list[int] = (),  # type: ignore[assignment]
        bcc: list[int] = (),  # type: ignore[assignment]
        subject: str = "Hello",
        body: str = "body",
        thread_id: str | None = None,
        topic: str | None = None,
        importance: str = "normal",
        ack_required: bool = False,
        attachments: list[dict[str, Any]] | None = None,
        read: dict[int, datetime] | None = None,
        acked: dict[int, datetime] | None = None,
        created_text: str | None = None,
    ) -> int:
        mid = self._next("messages")
        self._insert(
            "messages",
            {
                "id": mid, "project_id": project, "sender_id": sender, "thread_id": thread_id, "topic": topic,
                "subject": subject, "body_md": body, "importance": importance, "ack_required": int(ack_required),
                "created_ts": created_text or ref_time(created), "attachments": json.dumps(attachments or []),
            },
        )  # fmt: skip
        read, acked = read or {}, acked or {}
        for kind, agents in (("to", to), ("cc", cc), ("bcc", bcc)):
            for agent in agents:
                self.recipient(mid, agent, kind, read.get(agent), acked.get(agent))
        if self.files:
            self._message_files(mid, project, sender, created, to, list(cc), list(bcc), subject, body, thread_id,
                                importance, ack_required, attachments or [])  # fmt: skip
        return mid

    def recipient(
        self, message: int, agent: int, kind: str = "to", read: datetime | None = None, acked: datetime | None = None
    ) -> None:
        self._insert(
            "message_recipients",
            {
                "message_id": message, "agent_id": agent, "kind": kind,
                "read_ts": ref_time(read) if read else None, "ack_ts": ref_time(acked) if acked else None,
            },
        )  # fmt: skip

    def reservation(
        self,
        project: int,
        agent: int,
        pattern: str,
        created: datetime,
        expires: datetime,
        released: datetime | None = None,
        exclusive: bool = True,
        reason: str = "",
    ) -> int:
        rid = self._next("file_reservations")
        row = {
            "id": rid, "project_id": project, "agent_id": agent, "path_pattern": pattern, "exclusive": int(exclusive),
            "reason": reason, "created_ts": ref_time(created), "expires_ts": ref_time(expires),
            "released_ts": ref_time(released) if released else None,
        }  # fmt: skip
        self._insert("file_reservations", row)
        if self.files:
            record = {
                "id": rid, "project": self.projects[project]["human_key"], "agent": self.agents[agent]["name"],
                "path_pattern": pattern, "exclusive": exclusive, "reason": reason,
                "created_ts": created.isoformat(), "expires_ts": (released or expires).isoformat(),
            }  # fmt: skip
            if released:
                record["released_ts"] = released.isoformat()
            base = f"projects/{self._slug(project)}/file_reservations"
            self._json(f"{base}/{hashlib.sha1(pattern.encode()).hexdigest()}.json", record)
            self._json(f"{base}/id-{rid}.json", record)
        return rid

    def link(
        self, a: int, b: int, status: str, created: datetime, expires: datetime | None = None, reason: str = ""
    ) -> int:
        lid = self._next("agent_links")
        self._insert(
            "agent_links",
            {
                "id": lid, "a_project_id": self.agents[a]["project_id"], "a_agent_id": a,
                "b_project_id": self.agents[b]["project_id"], "b_agent_id": b, "status": status, "reason": reason,
                "created_ts": ref_time(created), "updated_ts": ref_time(created),
                "expires_ts": ref_time(expires) if expires else None,
            },
        )  # fmt: skip
        return lid

    def attachment_file(self, project: int, content: bytes, ext: str = "webp") -> dict[str, Any]:
        """A file attachment stored as the reference stores one; returns its metadata."""
        sha1 = hashlib.sha1(content).hexdigest()
        rel = f"projects/{self._slug(project)}/attachments/{sha1[:2]}/{sha1}.{ext}"
        target = self.archive / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)  # in the work tree: the reference commits it with its message
        self._pending[rel] = content
        return {"type": "file", "media_type": f"image/{ext}", "bytes": len(content), "path": rel,
                "width": 1, "height": 1, "sha1": sha1}  # fmt: skip

    def raw(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """A row written as is (for rows the import must refuse)."""
        self.conn.execute(sql, params)

    # -- archive ---------------------------------------------------------------------------
    def _slug(self, project: int) -> str:
        return self.projects[project]["slug"]

    def _json(self, rel: str, data: Any) -> None:
        self._pending[rel] = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    def _message_files(
        self, mid: int, project: int, sender: int, created: datetime, to: list[int], cc: list[int], bcc: list[int],
        subject: str, body: str, thread_id: str | None, importance: str, ack_required: bool, attachments: list[Any],
    ) -> None:  # fmt: skip
        names = {aid: self.agents[aid]["name"] for aid in [*to, *cc, *bcc, sender]}
        front = {
            "id": mid, "thread_id": thread_id, "project": self.projects[project]["human_key"],
            "project_slug": self._slug(project), "from": names[sender], "to": [names[a] for a in to],
            "cc": [names[a] for a in cc], "bcc": [names[a] for a in bcc], "subject": subject,
            "importance": importance, "ack_required": ack_required, "created": created.isoformat(),
            "attachments": attachments,
        }  # fmt: skip
        home = self.agents[sender]["project_id"]
        if home != project:
            front |= {"from_project": self.projects[home]["human_key"], "from_project_slug": self._slug(home),
                      "from_address": f"project:{self._slug(home)}#{names[sender]}"}  # fmt: skip
        text = ("---json\n" + json.dumps(front, indent=2, sort_keys=True) + "\n---\n\n" + body.strip() + "\n").encode()
        name = f"{created.strftime('%Y-%m-%dT%H-%M-%SZ')}__{_subject_slug(subject)}__{mid}.md"
        month = created.strftime("%Y/%m")
        base = f"projects/{self._slug(project)}"
        self._pending[f"{base}/messages/{month}/{name}"] = text
        if home == project:
            self._pending[f"{base}/agents/{names[sender]}/outbox/{month}/{name}"] = text
        for aid in [*to, *cc, *bcc]:
            self._pending[f"{base}/agents/{names[aid]}/inbox/{month}/{name}"] = text

    def commit(self) -> ReferenceMailbox:
        """Commit the SQLite rows and the archive files (one commit)."""
        self.conn.execute("COMMIT")
        self.conn.close()
        for rel, content in self._pending.items():
            target = self.archive / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        git = ["git", "-C", str(self.archive), "-c", "user.name=mcp-agent", "-c", "user.email=mcp-agent@example.com"]
        if not (self.archive / ".git").exists():
            subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "mailbox", "--allow-empty"], check=True)
        return self


PROJECTS = 4
AGENTS = 10


def build_many(root: Path, messages: int) -> ReferenceMailbox:
    """A large mailbox (the benchmark's, and the interrupted-import test's): 4 projects of 10
    agents, each message to one agent and cc'ing another (every fifth also bcc's a third), a
    third in threads, half read, a tenth acknowledged, every fiftieth cross-project, a file
    attachment every thousandth; reservations and links. Its archive holds the attachment files
    only (the import reads nothing else from it)."""
    box = ReferenceMailbox(root, files=False)
    start = datetime.now(UTC) - timedelta(days=30)
    agents: list[list[int]] = []
    for p in range(PROJECTS):
        pid = box.project(f"/bench/project-{p}", f"bench-project-{p}", start)
        agents.append([box.agent(pid, f"agent-{p}-{a}", start, token=f"token-{p}-{a}") for a in range(AGENTS)])
    pictures = [box.attachment_file(1, f"picture {i}".encode()) for i in range(20)]
    for i in range(messages):
        p = i % PROJECTS
        local = agents[p]
        sender = agents[(p + 1) % PROJECTS][i % AGENTS] if i % 50 == 0 else local[i % AGENTS]
        to, cc = local[(i + 1) % AGENTS], local[(i + 2) % AGENTS]
        when = start + timedelta(seconds=20 * i)
        box.message(
            p + 1, sender, when, to=[to], cc=[cc], bcc=[local[(i + 3) % AGENTS]] if i % 5 == 0 else [],
            subject=f"Build {i} status", body=f"Build {i} finished; see the log of step {i % 97}. " * 3,
            thread_id=f"T-{i % 2000}" if i % 3 == 0 else None, topic="build" if i % 7 == 0 else None,
            ack_required=i % 10 == 0, attachments=[pictures[i % 20]] if i % 1000 == 0 else None,
            read={to: when + timedelta(minutes=1)} if i % 2 == 0 else None,
            acked={to: when + timedelta(minutes=2)} if i % 10 == 0 else None,
        )  # fmt: skip
    for p in range(PROJECTS):
        for a in range(AGENTS):
            now = datetime.now(UTC)
            box.reservation(p + 1, agents[p][a], f"src/module_{a}/**", now, now + timedelta(hours=2))
        box.link(agents[p][0], agents[(p + 1) % PROJECTS][0], "approved", start, start + timedelta(days=60))
    return box.commit()
