"""Each message's archive commit, kept in the index (table ``message_commits``), so a broker reads
the ``commit`` fields of the mailbox resources without the Git archive (issue 19, point 5).

The persistence worker knows the commit when it writes a batch: Git first, then the index in one
transaction, whose ``Batch.commits`` carries these rows (broker/persistence/index/writes.py). A row holds what ``message_commits(detailed=True)``
(broker/persistence/commits.py) reads from Git: the commit's sha (12 characters), summary line
and author time, and the canonical file's line counts and first lines. A message whose file an
earlier commit added (a batch replayed after its commit landed but before its index transaction
did) gets its row from Git by that same read: the worker has the archive. The row is written
once (``ON CONFLICT DO NOTHING``) and dropped with its message (a trigger, migration 3).

Messages indexed before this table existed have no row: readers fall back to the Git read when
the archive is on their host and show ``commit: null`` otherwise (docs/operations.md, "Brokers
without local files").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from broker.persistence.archive import ArchiveMessage, BatchCommit
from broker.persistence.commits import EXCERPT_LINES, message_commits

# ids per SELECT ... IN (...): a page holds at most 1,000 messages
READ_CHUNK = 500


def _row(message_id: int, commit: dict[str, Any], excerpt: list[str]) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "hexsha": commit["hexsha"],
        "summary": commit["summary"],
        "authored_ts": commit["authored_ts"],
        "insertions": int(commit.get("insertions", 0)),
        "deletions": int(commit.get("deletions", 0)),
        "excerpt": json.dumps(excerpt),
    }


def added_rows(done: BatchCommit) -> list[dict[str, Any]]:
    """Rows for the messages whose canonical file this batch's commit added, read from the
    contents just written (what ``git log --numstat`` and the blob would say)."""
    if done.sha is None:
        return []
    rows = []
    for message_id, content in done.added.items():
        binary = b"\0" in content[:8000]  # git's own test: numstat shows '-' and no line counts
        insertions = 0 if binary else content.count(b"\n") + (0 if content.endswith(b"\n") or not content else 1)
        lines = content.decode("utf-8", "replace").splitlines()[:EXCERPT_LINES]
        commit = {"hexsha": done.sha[:12], "summary": done.summary, "authored_ts": done.authored_ts,
                  "insertions": insertions, "deletions": 0}  # fmt: skip
        rows.append(_row(message_id, commit, lines))
    return rows


def archived_rows(root: Path, slug: str, messages: list[ArchiveMessage]) -> list[dict[str, Any]]:
    """Rows for messages already in the archive before this batch, read from Git."""
    if not messages:
        return []
    items = [{"id": m.id, "subject": m.subject, "created_ts": m.created} for m in messages]
    found = message_commits(root, slug, items, detailed=True)
    return [
        _row(mid, commit, [line[1:] for line in commit.get("diff_summary", {}).get("excerpt", [])])
        for mid, commit in found.items()
    ]


def batch_rows(root: Path, slug: str, done: BatchCommit, messages: list[ArchiveMessage]) -> list[dict[str, Any]]:
    """The ``message_commits`` rows of a written batch: from the commit for the files it added,
    from Git for those an earlier commit had added."""
    rows = added_rows(done)
    have = {row["message_id"] for row in rows}
    return rows + archived_rows(root, slug, [m for m in messages if m.id not in have])


def read_rows(index: Any, ids: list[int], detailed: bool) -> dict[int, dict[str, Any]]:
    """Message id -> its commit as the mailbox resources show it (``message_commits``' shape),
    for the ids the index holds a row of: one query per 500 ids."""
    found: dict[int, dict[str, Any]] = {}
    unique = list(dict.fromkeys(int(i) for i in ids))
    columns = "message_id, hexsha, summary, authored_ts" + (", insertions, deletions, excerpt" if detailed else "")
    for start in range(0, len(unique), READ_CHUNK):
        chunk = unique[start : start + READ_CHUNK]
        marks = ", ".join(f":i{n}" for n in range(len(chunk)))
        params = {f"i{n}": value for n, value in enumerate(chunk)}
        for row in index.query(f"SELECT {columns} FROM message_commits WHERE message_id IN ({marks})", params):
            commit: dict[str, Any] = {
                "hexsha": row["hexsha"],
                "summary": row["summary"],
                "authored_ts": row["authored_ts"],
            }
            if detailed:
                lines = json.loads(row["excerpt"] or "[]")
                commit["insertions"] = int(row["insertions"])
                commit["deletions"] = int(row["deletions"])
                commit["diff_summary"] = {"hunks": 1 if lines else 0, "excerpt": ["+" + line for line in lines]}
            found[int(row["message_id"])] = commit
    return found


def recent_rows(index: Any, limit: int, slug: str | None = None, name: str | None = None) -> list[dict[str, str]]:
    """The newest archive commits that carried mail, as whois lists them (``{hexsha, summary,
    authored_ts}``), for a broker without the archive: every project's, or only those of the
    mail agent ``name`` of project ``slug`` sent or received. Commits that carried no message
    (profiles, reservations) are not in the index. Commits of one second are ordered by their
    newest message (a later batch carries later ids)."""
    index.ensure_schema()  # a no-op once done in this process
    where, params = "", {"limit": limit}
    if slug is not None and name is not None:
        where = (
            "WHERE c.message_id IN (SELECT m.id FROM messages m JOIN agents a ON a.id = m.sender_id "
            "JOIN projects p ON p.id = a.project_id WHERE p.slug = :slug AND a.name = :name "
            "UNION SELECT r.message_id FROM message_recipients r JOIN agents a ON a.id = r.agent_id "
            "JOIN projects p ON p.id = a.project_id WHERE p.slug = :slug AND a.name = :name) "
        )
        params.update(slug=slug, name=name)
    rows = index.query(
        f"SELECT c.hexsha, c.summary, c.authored_ts FROM message_commits c {where}"
        "GROUP BY c.hexsha, c.summary, c.authored_ts ORDER BY c.authored_ts DESC, max(c.message_id) DESC LIMIT :limit",
        params,
    )
    return [{"hexsha": row["hexsha"], "summary": row["summary"], "authored_ts": row["authored_ts"]} for row in rows]


def backfill(index: Any, root: Path, chunk: int = 500) -> int:
    """Give every indexed message without a ``message_commits`` row the commit Git has for it
    (``broker index backfill-commits``, run where the archive is: an index written before
    migration 3, or mail brought in by the import). Messages the archive has no file of are
    left without one. Returns the rows written."""
    from broker.persistence.index.writes import INSERT_COMMIT

    index.ensure_schema()
    after, written = 0, 0
    while True:
        rows = index.query(
            "SELECT m.id, m.subject, m.created_ts, p.slug FROM messages m JOIN projects p ON p.id = m.project_id "
            "WHERE m.id > :after AND NOT EXISTS (SELECT 1 FROM message_commits c WHERE c.message_id = m.id) "
            "ORDER BY m.id LIMIT :chunk",
            {"after": after, "chunk": chunk},
        )
        if not rows:
            return written
        after = int(rows[-1]["id"])
        by_slug: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_slug.setdefault(row["slug"], []).append(
                {"id": int(row["id"]), "subject": row["subject"], "created_ts": row["created_ts"]}
            )
        found = []
        for slug, items in by_slug.items():
            for message_id, commit in message_commits(root, slug, items, detailed=True).items():
                excerpt = [line[1:] for line in commit.get("diff_summary", {}).get("excerpt", [])]
                found.append(_row(message_id, commit, excerpt))
        if found:
            with index.transaction() as conn:
                conn.executemany(INSERT_COMMIT, found)
            written += len(found)
