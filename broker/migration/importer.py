"""``broker import-agent-mail``: a reference mailbox into the SQLite index, the Git archive and
Redis, with the ids it has.

It writes what the persistence worker writes for the same data and rebuilds Redis from the
index with ``broker rehydrate``'s per-project rebuild, so imported state is what live sends and
``broker rehydrate`` produce (one path): the index in one transaction (``Index.write_batch``)
then the Redis rebuild, while a child process writes the archive (``copies.py``).

Resumable by comparison, not by checkpoints: each source row is compared with the target's row
of the same key (``plan.py``): new and changed rows are written, equal ones are not, and every
write is an idempotent upsert. An import cut short is finished by running it again: before the
index commit nothing was written; after it the rows compare equal, the archive writes the files
HEAD lacks, and a project whose Redis rebuild did not finish has no project hash (written last)
and is rebuilt. A second run of a finished import writes nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from broker.config import Settings
from broker.lifecycle import rehydrate
from broker.migration import copies
from broker.migration.plan import KINDS, Plan, plan_import
from broker.migration.source import Mailbox, Problem, Progress, read_mailbox
from broker.persistence.index import Index
from broker.store.commands.rehydrate import Rebuild
from broker.store.ids import largest_indexed_ids
from broker.store.keys import Keys


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
    report = ImportReport(dry_run, plan.tally, box.problems)
    if dry_run:
        return report
    # the archive beside the index and the Redis rebuild: it takes longest (the worker's order,
    # archive before index, holds for every file it commits before the index does)
    archived = copies.start(settings, box, plan, progress)
    try:
        _write_index(settings, plan, progress)
        asyncio.run(_rebuild_redis(settings, redis_url, box, plan, report, progress))
    finally:
        written = archived()
    report.commits, report.attachment_files = written.commits, written.attachment_files
    return report


async def _plan(settings: Settings, redis_url: str, box: Mailbox) -> Plan:
    rebuild = Rebuild(redis_url, Keys(settings.redis_key_prefix))
    try:
        live = {}
        for project in box.projects.values():
            live[project["slug"]] = await rebuild.project_record(slug=project["slug"])
        return plan_import(settings.index_url, box, live)
    finally:
        await rebuild.close()


def _write_index(settings: Settings, plan: Plan, progress: Progress | None) -> None:
    index = Index.from_settings(settings)
    try:
        index.ensure_schema()
        if len(plan.rows):
            index.write_batch(plan.rows)
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
    index = Index.from_settings(settings)
    touched = plan.touched_projects()
    outcome = rehydrate.Report()
    try:
        slugs = sorted(box.projects[pid]["slug"] for pid in plan.all_projects)
        for done, slug in enumerate(slugs, 1):
            exists = await rebuild.project_exists(slug=slug)
            if exists and slug not in touched:
                continue
            project = dict(index.query("SELECT * FROM projects WHERE slug = :slug", {"slug": slug})[0])
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
