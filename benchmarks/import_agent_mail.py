"""Import benchmark: ``broker import-agent-mail`` of a 100,000-message MCP Agent Mail mailbox.

Builds a reference mailbox in its documented format (tests/reference_mailbox.py): 4 projects of
10 agents, 100,000 messages each to one agent and cc'ing another (a fifth also bcc's a third),
a third of them in threads, half read and a tenth acknowledged, some cross-project, plus
reservations, links and attachment files. Its archive holds the attachment files only (the
import reads nothing else from it; the database carries every row). Then times the whole import
(read, compare, archive, index, Redis), as the command runs it, and a second run (which finds
everything imported and writes nothing).

Run: python -m benchmarks.import_agent_mail [--messages N]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import bench_settings, machine_load, redis_url
from broker.migration.importer import run_import

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the mailbox builder
from reference_mailbox import build_many


def _cpu() -> tuple[float, float]:
    """User+system seconds of this process, and of its finished children (not redis-server)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        box = build_many(Path(tmp) / "reference", args.messages)
        built = time.perf_counter() - began
        settings = bench_settings(url, Path(tmp) / "storage")
        began, cpu = time.perf_counter(), _cpu()
        report = run_import(settings, url, box.database, box.archive)
        first = time.perf_counter() - began
        own, children = (after - before for after, before in zip(_cpu(), cpu, strict=True))
        began = time.perf_counter()
        again = run_import(settings, url, box.database, box.archive)
        second = time.perf_counter() - began
        counts = report.counts
        print(f"Redis: {source}; {machine_load()}; mailbox built in {built:.1f} s")
        print(
            f"import of {counts['messages']['new']} messages, {counts['recipients']['new']} recipient rows, "
            f"{counts['agents']['new']} agents, {counts['reservations']['new']} reservations: {first:.1f} s "
            f"({counts['messages']['new'] / first:,.0f} messages/s); {report.commits} archive commits"
        )
        print(
            f"CPU time of that import: {own:.1f} s in the command's process (reading, index, Redis rebuild), "
            f"{children:.1f} s in its children (archive writer, git)"
        )
        written = sum(c["new"] + c["changed"] for c in again.counts.values())
        print(f"second run (nothing to write: {written} rows written): {second:.1f} s")
        if report.problems:
            print(f"not taken: {len(report.problems)} rows, e.g. {report.problems[0].line()}")


if __name__ == "__main__":
    main()
