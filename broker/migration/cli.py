"""The terminal side of ``broker import-agent-mail``: rich progress on stderr while it runs, then
the counts per kind and every row not taken (broker/cli.py only wires the options)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from broker.config import Settings
from broker.errors import BrokerError


def import_command(settings: Settings, database: str, archive: str, dry_run: bool) -> int:
    """Run the import with a progress display; returns the exit status (0 done, 1 refused)."""
    from broker.migration.importer import run_import
    from broker.store.embedded import resolve_redis_url

    err = Console(stderr=True)
    out = Console(highlight=False, soft_wrap=True)
    url, backend = resolve_redis_url(settings.data_redis_url, settings.storage_root)
    err.print(f"broker: storage: {backend}; index {settings.index_url_redacted}; archive {settings.archive_path}")
    tasks: dict[str, TaskID] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bar:

        def progress(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=total)
            bar.update(tasks[step], completed=done, total=total)

        try:
            report = run_import(settings, url, Path(database), Path(archive), dry_run=dry_run, progress=progress)
        except BrokerError as exc:
            err.print(f"broker: {exc}", markup=False)
            return 1
    for line in report.lines():
        out.print(line, markup=False)
    return 0
