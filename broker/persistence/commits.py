"""The archive commit that holds a message's canonical file, for the mailbox resources.

The persistence worker archives messages behind the hot path, so a message read from Redis
may not be in Git yet: its commit is then unknown (None). A message file is written once and
never changed (replays commit nothing), so the commit that added it is the last one touching
it. One ``git log`` finds the commits of a whole page: restricted to the page's canonical
paths and to commits made since shortly before the page's oldest message, so it walks only
recent history, however long the archive's is.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from broker.persistence.archive import ArchiveMessage

EXCERPT_LINES = 12
# Commits are stamped with the worker's clock, messages with Redis's: allow for skew.
CLOCK_SLACK = timedelta(hours=1)
RECORD = "\x01"


def canonical_path(slug: str, item: dict[str, Any]) -> str:
    """The canonical file of a message (its subject and created_ts decide the name)."""
    msg = ArchiveMessage(id=int(item["id"]), subject=item.get("subject", ""), body_md="", sender="",
                         created=item["created_ts"])  # fmt: skip
    return f"projects/{slug}/messages/{msg.month_dir}/{msg.filename}"


def _git(root: Path, *args: str, stdin: bytes | None = None) -> bytes | None:
    done = subprocess.run(["git", "--git-dir", str(root), *args], input=stdin, capture_output=True, check=False)
    return done.stdout if done.returncode == 0 else None


def message_commits(root: Path, slug: str, items: list[dict[str, Any]], detailed: bool) -> dict[int, dict[str, Any]]:
    """Message id -> commit of its canonical file, for the items already archived.

    A commit is ``{hexsha (12 chars), summary, authored_ts}``; ``detailed`` adds the file's
    ``insertions``, ``deletions`` and ``diff_summary: {hunks, excerpt}`` (its first lines)."""
    if not items or not (Path(root) / "HEAD").exists():
        return {}
    paths = {canonical_path(slug, item): int(item["id"]) for item in items}
    oldest = min(datetime.fromisoformat(item["created_ts"]) for item in items) - CLOCK_SLACK
    out = _git(root, "log", "main", f"--since={oldest.isoformat()}", "--diff-filter=A", "--no-renames",
               f"--format={RECORD}%H%x1f%s%x1f%aI", "--numstat", "--", *paths)  # fmt: skip
    if not out:
        return {}
    found: dict[int, dict[str, Any]] = {}
    located: dict[int, tuple[str, str]] = {}
    for record in out.decode("utf-8", "replace").split(RECORD)[1:]:
        header, _, stats = record.partition("\n")
        sha, summary, authored = header.split("\x1f")
        for line in stats.splitlines():
            parts = line.split("\t")
            if len(parts) != 3 or parts[2] not in paths:
                continue
            message_id = paths[parts[2]]
            if message_id in found:
                continue  # newest first: an earlier record already gave it
            commit: dict[str, Any] = {"hexsha": sha[:12], "summary": summary, "authored_ts": authored}
            if detailed:
                commit["insertions"] = int(parts[0]) if parts[0].isdigit() else 0
                commit["deletions"] = int(parts[1]) if parts[1].isdigit() else 0
                located[message_id] = (sha, parts[2])
            found[message_id] = commit
    if detailed and located:
        texts = _read_blobs(root, list(located.values()))
        for message_id, where in located.items():
            lines = (texts.get(where) or "").splitlines()
            found[message_id]["diff_summary"] = {
                "hunks": 1 if lines else 0,
                "excerpt": ["+" + line for line in lines[:EXCERPT_LINES]],
            }
    return found


def _read_blobs(root: Path, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The text of each (commit, path), in one ``git cat-file --batch``."""
    out = _git(root, "cat-file", "--batch", stdin="".join(f"{sha}:{path}\n" for sha, path in wanted).encode())
    texts: dict[tuple[str, str], str] = {}
    if out is None:
        return texts
    position = 0
    for where in wanted:
        line_end = out.index(b"\n", position)
        header = out[position:line_end].split()
        position = line_end + 1
        if header[-1] == b"missing":
            continue
        size = int(header[2])
        texts[where] = out[position : position + size].decode("utf-8", "replace")
        position += size + 1
    return texts
