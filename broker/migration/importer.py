"""``broker import-agent-mail``: a reference mailbox into the Git archive, the SQLite index and
Redis, with the ids it has.

The import writes what the persistence worker would have written for the same data, in its
order: the archive first (broker/persistence/archive.py), then the index in one transaction
(``Index.write_batch``), then Redis rebuilt from the index by ``broker rehydrate``'s per-project
rebuild, so imported state is what live sends and ``broker rehydrate`` produce (one path).

Resumable by comparison, not by checkpoints: each source row is compared with the target's
row of the same id (``plan.py``): new and changed rows are written, equal ones are not. Every
write is an idempotent upsert, so an import cut short anywhere is finished by running it again:
before the index commit nothing counts as written (the archive ignores files it holds), after
it the rows compare equal and only Redis is left, where a project whose rebuild did not finish
has no project hash (written last) and is rebuilt. A second run of a finished import writes
nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.lifecycle import rehydrate
from broker.migration.plan import KINDS, Plan, plan_import
from broker.migration.source import Mailbox, Problem, Progress, read_mailbox
from broker.persistence import attachments as staged
from broker.persistence.archive import Archive, ArchiveMessage
from broker.persistence.entries import PROFILE_FIELDS
from broker.persistence.index import Batch, Index
from broker.persistence.private import private_dir
from broker.store.commands.rehydrate import Rebuild
from broker.store.ids import largest_indexed_ids
from broker.store.keys import Keys

ARCHIVE_CHUNK = 5000  # messages per archive commit: bounded memory, few commits


@dataclass
class ImportReport:
    dry_run: bool
    # kind -> {"new": n, "changed": n, "unchanged": n}
    counts: dict[str, dict[str, int]]
    problems: list[Problem]
    rebuilt: list[str] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)
    commits: int = 0
    attachment_files: int = 0

    def lines(self) -> list[str]:
        verb = "would import" if self.dry_run else "imported"
        out = [f"{verb} (new / changed / unchanged):"]
        for kind, count in self.counts.items():
            out.append(f"  {kind:<18} {count['new']:>8} / {count['changed']:>6} / {count['unchanged']:>8}")
        if not self.dry_run:
            out.append(f"archive: {self.commits} commit(s), {self.attachment_files} attachment file(s)")
            out.append(f"redis: {len(self.rebuilt)} project(s) rebuilt from the index")
        for line in self.left_alone:
            out.append(f"not rebuilt in Redis: {line}")
        out.append(f"not taken: {len(self.problems)} row(s)" + (":" if self.problems else ""))
        out += [f"  {problem.line()}" for problem in self.problems]
        return out


def run_import(
    settings: Settings,
    redis_url: str,
    database: Path,
    archive: Path,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import the mailbox; raises BrokerError IMPORT_CONFLICT (before writing anything) when the
    target holds other data under its slugs, names or ids."""
    box = read_mailbox(database, archive, progress)
    plan = asyncio.run(_plan(settings, redis_url, box))
    report = ImportReport(dry_run, plan.counts(), box.problems)
    if dry_run:
        return report
    _write_archive(settings, box, plan, report, progress)
    _write_index(settings, plan, progress)
    asyncio.run(_rebuild_redis(settings, redis_url, box, plan, report, progress))
    return report


async def _plan(settings: Settings, redis_url: str, box: Mailbox) -> Plan:
    rebuild = Rebuild(redis_url, Keys(settings.redis_key_prefix))
    try:
        live = {}
        for project in box.projects.values():
            live[project["slug"]] = await rebuild.project_record(slug=project["slug"])
        return plan_import(settings.index_path, box, live)
    finally:
        await rebuild.close()


def _write_archive(
    settings: Settings, box: Mailbox, plan: Plan, report: ImportReport, progress: Progress | None
) -> None:
    """The new messages' copies and digests, the new or changed profiles and reservations, and
    the attachment files the messages name, in commits of ARCHIVE_CHUNK messages."""
    projects = box.projects
    agents = box.agents
    profiles = []
    for agent in plan.agents:
        profile = {key: agent[key] for key in PROFILE_FIELDS}
        if agent["retired_at"]:
            profile["retired_at"] = agent["retired_at"]
        profiles.append((projects[agent["project_id"]]["slug"], profile))
    reservations = []
    for row in plan.reservations:
        record = {
            "id": row["id"],
            "project": projects[row["project_id"]]["human_key"],
            "agent": agents[row["agent_id"]]["name"],
            "path_pattern": row["path_pattern"],
            "exclusive": bool(row["exclusive"]),
            "reason": row["reason"],
            "created_ts": row["created_ts"],
            # as the reference and the broker write an ended one: clamped to its release
            "expires_ts": min(row["expires_ts"], row["released_ts"] or row["expires_ts"]),
        }
        if row["released_ts"]:
            record["released_ts"] = row["released_ts"]
        reservations.append((projects[row["project_id"]]["slug"], record))
    names: dict[int, dict[str, list[str]]] = defaultdict(lambda: {"to": [], "cc": [], "bcc": []})
    for (message_id, agent_id), row in box.recipients.items():
        names[message_id][row["kind"]].append(agents[agent_id]["name"])
    messages = [
        (
            projects[row["project_id"]]["slug"],
            projects[row["project_id"]]["human_key"],
            _archived(box, row, names[row["id"]]),
        )
        for row in plan.messages
    ]
    private_dir(settings.storage_root)
    with tempfile.TemporaryDirectory(prefix="import-staging-", dir=settings.storage_root) as staging_dir:
        staging = Path(staging_dir)
        target = Archive(settings.archive_path, "", staging=staging)
        total = max(len(messages), 1)
        first = True
        for start in range(0, max(len(messages), 1), ARCHIVE_CHUNK):
            chunk = messages[start : start + ARCHIVE_CHUNK]
            for rel in dict.fromkeys(r for _, _, m in chunk for r in staged.message_files(m.attachments)):
                if rel in box.attachment_files:
                    _stage_copy(staging, rel, box.attachment_files[rel])
                    report.attachment_files += 1
            commit = target.write_batch(
                profiles=profiles if first else (),
                reservations=reservations if first else (),
                messages=chunk,
                summary=f"import: {len(chunk)} messages from MCP Agent Mail"
                + (f", {len(profiles)} profiles, {len(reservations)} reservations" if first else ""),
            )
            first = False
            report.commits += commit is not None
            if progress:
                progress("writing the archive", min(start + ARCHIVE_CHUNK, total), total)


def _stage_copy(staging: Path, rel: str, source: Path) -> None:
    target = staging / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.link(source, target) if _same_device(source, staging) else target.write_bytes(source.read_bytes())


def _same_device(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def _archived(box: Mailbox, row: dict[str, Any], names: dict[str, list[str]]) -> ArchiveMessage:
    sender = box.agents[row["sender_id"]]
    extra: dict[str, Any] = {}
    if sender["project_id"] != row["project_id"]:
        home = box.projects[sender["project_id"]]
        extra = {
            "from_project": home["human_key"],
            "from_project_slug": home["slug"],
            "from_address": f"project:{home['slug']}#{sender['name']}",
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


def _write_index(settings: Settings, plan: Plan, progress: Progress | None) -> None:
    index = Index(settings.index_path)
    try:
        index.ensure_schema()
        batch = Batch(
            projects=plan.projects,
            agents=plan.agents,
            messages=plan.messages,
            recipients=plan.recipients,
            reservations=plan.reservations,
            links=plan.links,
        )
        if len(batch):
            index.write_batch(batch)
        if progress:
            progress("writing the index", 1, 1)
    finally:
        index.close()


async def _rebuild_redis(
    settings: Settings, redis_url: str, box: Mailbox, plan: Plan, report: ImportReport, progress: Progress | None
) -> None:
    """Rebuild from the index each imported project that changed or whose Redis state is not
    complete (no project hash: never rebuilt, or a rebuild cut short), then raise the id
    counters past every indexed id."""
    rebuild = Rebuild(redis_url, Keys(settings.redis_key_prefix))
    index = Index(settings.index_path)
    touched = plan.touched_projects()
    outcome = rehydrate.Report()
    try:
        slugs = sorted(box.projects[pid]["slug"] for pid in plan.importable_projects())
        for done, slug in enumerate(slugs, 1):
            exists = await rebuild.project_exists(slug=slug)
            if exists and slug not in touched:
                continue
            project = dict(index.query("SELECT * FROM projects WHERE slug = ?", (slug,))[0])
            await rehydrate.rehydrate_project(
                rebuild, index, project, outcome, exists, settings.file_reservation_retention_seconds
            )
            if progress:
                progress("rebuilding Redis", done, len(slugs))
        await rebuild.raise_counters(largest=largest_indexed_ids(index))
    finally:
        await rebuild.close()
        index.close()
    report.rebuilt = outcome.projects
    report.left_alone = outcome.lines()[1:]


__all__ = ["KINDS", "ImportReport", "run_import"]
