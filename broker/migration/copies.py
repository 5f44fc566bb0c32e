"""The import's Git archive part: the imported messages' copies and thread digests, the agents'
profiles, the reservations' JSON and the attachment files, as the persistence worker writes
them (``Archive.write_batch``).

Resumed by comparison with the archive, not with the index: a file is written when the plan
has its row as new or changed, or when HEAD does not hold it (an import cut short after its
index commit). ``Archive.write_batch`` commits nothing when HEAD holds every file already.
Runs in a child process (``start``) beside the Redis rebuild: the two take similar time and
each keeps its own core busy.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import tempfile
import threading
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.mail.routing import address_of
from broker.migration.plan import Plan
from broker.migration.source import Mailbox, Progress
from broker.persistence import attachments as staged
from broker.persistence.archive import Archive, ArchiveMessage
from broker.persistence.entries import PROFILE_FIELDS
from broker.persistence.private import private_dir

CHUNK = 25_000  # messages per commit: each commit rewrites the growing month trees, so few; ~30 MB each


@dataclass
class Written:
    commits: int = 0
    attachment_files: int = 0


def write_archive(settings: Settings, box: Mailbox, plan: Plan, progress: Progress | None = None) -> Written:
    written = Written()
    target = Archive(settings.archive_path, "", staging=None)
    slug_of = {pid: p["slug"] for pid, p in box.projects.items()}
    profiles = {f"projects/{slug_of[a['project_id']]}/agents/{a['name']}/profile.json": a for a in box.agents.values()}
    reservations = {f"projects/{slug_of[r['project_id']]}/file_reservations/id-{r['id']}.json": r
                    for r in box.reservations.values()}  # fmt: skip
    names: dict[int, dict[str, list[str]]] = defaultdict(lambda: {"to": [], "cc": [], "bcc": []})
    for (message_id, agent_id), row in box.recipients.items():
        names[message_id][row["kind"]].append(box.agents[agent_id]["name"])
    messages = {}
    for row in box.messages.values():
        project = box.projects[row["project_id"]]
        msg = _archived(box, row, names[row["id"]])
        messages[f"projects/{project['slug']}/messages/{msg.month_dir}/{msg.filename}"] = (
            project["slug"], project["human_key"], msg,
        )  # fmt: skip
    held = target.existing([*profiles, *reservations, *messages])
    changed_agents = {a["id"] for a in plan.rows.agents}
    changed_reservations = {r["id"] for r in plan.rows.reservations}
    new_messages = {m["id"] for m in plan.rows.messages}
    profile_rows = [(slug_of[a["project_id"]], _profile(a)) for rel, a in profiles.items()
                    if a["id"] in changed_agents or rel not in held]  # fmt: skip
    reservation_rows = [(slug_of[r["project_id"]], _reservation(box, r)) for rel, r in reservations.items()
                        if r["id"] in changed_reservations or rel not in held]  # fmt: skip
    todo = [m for rel, m in messages.items() if m[2].id in new_messages or rel not in held]
    private_dir(settings.storage_root)
    with tempfile.TemporaryDirectory(prefix="import-staging-", dir=settings.storage_root) as staging_dir:
        target.staging = Path(staging_dir)
        total = max(len(todo), 1)
        for start in range(0, total, CHUNK):
            chunk = todo[start : start + CHUNK]
            for rel in dict.fromkeys(r for _, _, m in chunk for r in staged.message_files(m.attachments)):
                if rel in box.attachment_files:
                    _stage_copy(target.staging, rel, box.attachment_files[rel])
                    written.attachment_files += 1
            first = start == 0
            commit = target.write_batch(
                profiles=profile_rows if first else (),
                reservations=reservation_rows if first else (),
                messages=chunk,
                summary=f"import: {len(chunk)} messages from MCP Agent Mail"
                + (f", {len(profile_rows)} profiles, {len(reservation_rows)} reservations" if first else ""),
            )
            written.commits += commit is not None
            if progress:
                progress("writing the archive", min(start + CHUNK, total), total)
    return written


def _profile(agent: dict[str, Any]) -> dict[str, Any]:
    """profile.json as the worker writes it (broker/persistence/entries.py): no token."""
    profile = {key: agent[key] for key in PROFILE_FIELDS}
    if agent["retired_at"]:
        profile["retired_at"] = agent["retired_at"]
    return profile


def _reservation(box: Mailbox, row: dict[str, Any]) -> dict[str, Any]:
    record = {
        "id": row["id"],
        "project": box.projects[row["project_id"]]["human_key"],
        "agent": box.agents[row["agent_id"]]["name"],
        "path_pattern": row["path_pattern"],
        "exclusive": bool(row["exclusive"]),
        "reason": row["reason"],
        "created_ts": row["created_ts"],
        # as the reference and the broker write an ended one: clamped to its release
        "expires_ts": min(row["expires_ts"], row["released_ts"] or row["expires_ts"]),
    }
    if row["released_ts"]:
        record["released_ts"] = row["released_ts"]
    return record


def _archived(box: Mailbox, row: dict[str, Any], names: dict[str, list[str]]) -> ArchiveMessage:
    sender = box.agents[row["sender_id"]]
    extra: dict[str, Any] = {}
    if sender["project_id"] != row["project_id"]:  # cross-project: the reference's front matter
        home = box.projects[sender["project_id"]]
        extra = {
            "from_project": home["human_key"],
            "from_project_slug": home["slug"],
            "from_address": address_of(home["slug"], sender["name"], here=""),
        }
    return ArchiveMessage(
        id=row["id"],
        subject=row["subject"],
        body_md=row["body_md"],
        sender=sender["name"],
        created=row["created_ts"],
        to=names["to"],
        cc=names["cc"],
        bcc=names["bcc"],
        thread_id=row["thread_id"],
        importance=row["importance"],
        ack_required=bool(row["ack_required"]),
        attachments=json.loads(row["attachments"]),
        extra=extra,
    )


def _stage_copy(staging: Path, rel: str, source: Path) -> None:
    """The reference's file where ``write_batch`` picks staged files up (it removes them)."""
    target = staging / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.write_bytes(source.read_bytes())


class Background:
    """``write_archive`` in a forked child; its progress reaches ``progress`` through a queue."""

    def __init__(self, settings: Settings, box: Mailbox, plan: Plan, progress: Progress | None) -> None:
        context = multiprocessing.get_context("fork")
        self._queue: Any = context.Queue()
        self._child = context.Process(target=self._run, args=(settings, box, plan), daemon=False)
        self._progress = progress
        self._result: Written | str | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)

    def start(self) -> Background:
        self._child.start()
        self._reader.start()
        return self

    def _run(self, settings: Settings, box: Mailbox, plan: Plan) -> None:
        out = self._queue
        # a file the metadata names but the reference's archive lacks is in the import's report
        # already; a manifest it lacks is derived data the reference rarely keeps: no warnings
        logging.getLogger("broker.persistence.archive").setLevel(logging.ERROR)
        try:
            written = write_archive(settings, box, plan, lambda *step: out.put(("progress", step)))
            out.put(("done", written))
        except BaseException:  # the parent raises it; the child must not die silently
            out.put(("failed", traceback.format_exc()))
        finally:
            out.close()
            out.join_thread()
            os._exit(0)  # no parent atexit handlers (its event loop, its clients) in the child

    def _read(self) -> None:
        while True:
            alive = self._child.is_alive()  # before the read: what it sent before dying is in the pipe
            try:
                kind, value = self._queue.get(timeout=1)
            except queue.Empty:
                if alive:
                    continue
                self._result = f"the archive writer exited with status {self._child.exitcode} without an outcome"
                return
            if kind == "progress":
                if self._progress:
                    self._progress(*value)
                continue
            self._result = value
            return

    def join(self) -> Written:
        self._reader.join()
        self._child.join()
        if not isinstance(self._result, Written):
            raise RuntimeError(f"writing the archive failed:\n{self._result}")
        return self._result


def start(settings: Settings, box: Mailbox, plan: Plan, progress: Progress | None) -> Callable[[], Written]:
    """Start writing the archive beside the caller; returns the wait for its outcome."""
    return Background(settings, box, plan, progress).start().join
