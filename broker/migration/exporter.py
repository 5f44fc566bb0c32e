"""``broker export-agent-mail``: write this broker's persisted state back in the reference's
layout, so a team can return to MCP Agent Mail (docs/migration.md, "Export").

``<out>/storage.sqlite3`` is a database with the reference's schema (``reference.SCHEMA``)
holding every row of the index (SQLite or PostgreSQL) in the reference's value forms (naive UTC text
timestamps, 0/1 booleans, JSON text); ``<out>/archive`` is a normal Git repository (a clone of
the bare archive, checked out on ``main``) that is the reference's ``STORAGE_ROOT``.

Consistency while the broker runs: the persistence worker writes a batch to Git and then to
the index while it holds the project's drain lock. The export takes every indexed project's drain
lock for a moment, opens a read transaction on the index and notes the archive's HEAD, then
lets go: the rows it copies (from that transaction: a fixed WAL snapshot on SQLite, REPEATABLE READ on PostgreSQL) and the commit it
checks out are the state between two batches. What Redis holds but the worker has not drained
yet is not in the export; the command reports that backlog.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.errors import BrokerError
from broker.migration.reference import SCHEMA, TABLES, to_reference_time
from broker.persistence.archive import AUTHOR_EMAIL, AUTHOR_NAME, BRANCH, ArchiveMessage
from broker.persistence.index import Connection, Index
from broker.persistence.private import private_dir, private_file
from broker.store.errors import StoreFailure

DATABASE_FILE = "storage.sqlite3"
TOKENS_FILE = "registration-tokens.json"
ARCHIVE_DIR = "archive"
# Tables the index must have for an export (the rest are optional: the broker keeps products
# and window identities in Redis only).
REQUIRED_TABLES = ("projects", "agents", "messages", "message_recipients", "file_reservations", "agent_links")
# The rows of the Redis-only tables, by table, given the exported projects' ids by slug.
LiveRows = Callable[[dict[str, int]], dict[str, list[dict[str, Any]]]]
# Most message ids a report lists by name.
LISTED = 10
# How the copy orders each of our tables (its primary key)
PRIMARY_KEYS = {"message_recipients": ["message_id", "agent_id"]}


@dataclass
class ExportReport:
    """What an export wrote: rows per reference table, the archive commit checked out, and the
    indexed messages whose canonical file the archive lacks (none, unless it was damaged)."""

    out: Path
    rows: dict[str, int] = field(default_factory=dict)
    commit: str = ""
    tokens_cleared: int = 0
    # (project slug, agent name, token) of the tokens minted with new_tokens
    tokens_minted: list[tuple[str, str, str]] = field(default_factory=list)
    missing_files: list[int] = field(default_factory=list)

    def lines(self) -> list[str]:
        counted = ", ".join(f"{n} {table}" for table, n in self.rows.items())
        said = [
            f"database {self.out / DATABASE_FILE}: {counted}",
            f"archive {self.out / ARCHIVE_DIR}: a git repository on {BRANCH} at {self.commit[:12]}",
        ]
        if self.tokens_minted:
            said.append(
                f"registration tokens: {len(self.tokens_minted)} new one(s) minted, listed in "
                f"{self.out / TOKENS_FILE} (owner-only): give each agent its own"
            )
        else:
            said.append(
                f"registration tokens: {self.tokens_cleared} agent(s) exported without one (this broker keeps only "
                "digests): the reference refuses their token-checked calls; export with --new-tokens to mint "
                "tokens for them"
            )
        if self.missing_files:
            shown = ", ".join(str(i) for i in self.missing_files[:LISTED])
            said.append(
                f"warning: {len(self.missing_files)} indexed message(s) have no canonical file in the archive "
                f"(ids {shown}); their rows are exported"
            )
        return said


def export_agent_mail(
    index_target: str | Path,
    archive_path: Path,
    out: Path,
    live_rows: LiveRows | None = None,
    new_tokens: bool = False,
) -> ExportReport:
    """Write the index at ``index_target`` (its SQLite path or its DATABASE_URL) and the archive at
    ``archive_path`` to ``out`` in the reference's layout. ``out`` must not exist or be empty.
    The export is built next to ``out`` and moved into place at the end, so a failed export
    leaves nothing half-written there. ``live_rows`` gives the rows of the tables the broker
    keeps only in Redis (window identities, products and their links; see ``redis_rows``),
    given the exported projects' ids by slug; without it those tables are left empty.
    ``new_tokens``: give every agent a newly minted token (listed in
    ``<out>/registration-tokens.json``) instead of none."""
    out = Path(out)
    _check_target(out)
    index, present = _open_index(index_target)
    try:
        archive_path = Path(archive_path)
        if not (archive_path / "HEAD").exists():
            raise BrokerError(
                "ARCHIVE_NOT_FOUND",
                f"no Git archive at {archive_path}. Point STORAGE_ROOT (or ARCHIVE_ROOT) at the broker's storage",
            )
        with contextlib.ExitStack() as held:
            source, commit = _snapshot(index, held, archive_path)
            out.parent.mkdir(parents=True, exist_ok=True)
            building = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
            try:
                private_dir(building)
                report = ExportReport(out=out, commit=commit)
                projects = {row["slug"]: int(row["id"]) for row in source.execute("SELECT id, slug FROM projects")}
                extra = live_rows(projects) if live_rows is not None else {}
                columns = {table: index.columns(table) for table in TABLES if table in present}
                _write_database(source, columns, building / DATABASE_FILE, report, extra, new_tokens)
                if report.tokens_minted:
                    _write_tokens(building / TOKENS_FILE, report.tokens_minted)
                _write_archive(archive_path, commit, building / ARCHIVE_DIR)
                report.missing_files = _missing_canonical_files(source, building / ARCHIVE_DIR)
                if out.exists():
                    out.rmdir()  # empty, checked above
                building.rename(out)
            except BaseException:
                shutil.rmtree(building, ignore_errors=True)
                raise
        return report
    finally:
        index.close()


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BrokerError(
            "EXPORT_TARGET_NOT_EMPTY",
            f"{out} exists and is not an empty directory; the export never overwrites files. "
            "Pass --out a new or empty directory",
        )


def _open_index(target: str | Path) -> tuple[Index, set[str]]:
    """Our index (never created here) and the tables it holds; refused without the tables an
    export needs."""
    index = Index(target)
    where = index.display_url
    if index.path is not None and not index.path.is_file():
        raise BrokerError(
            "INDEX_NOT_FOUND",
            f"no SQLite index at {index.path}. Point STORAGE_ROOT (or DATABASE_PATH, DATABASE_URL) at the broker's "
            "storage, and let the persistence worker run once",
        )
    try:
        tables = index.tables()
    except Exception as exc:
        index.close()
        raise BrokerError(
            "INDEX_UNREADABLE",
            f"cannot read the index at {where} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Check the file's owner and permissions or DATABASE_URL, or restore it from a backup",
        ) from None
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if missing:
        index.close()
        raise BrokerError(
            "INDEX_UNREADABLE",
            f"{where} is not a broker index (no table {', '.join(missing)}). Point STORAGE_ROOT (or DATABASE_PATH, "
            "DATABASE_URL) at the broker's storage",
        )
    return index, tables


def _snapshot(index: Index, held: contextlib.ExitStack, archive_path: Path) -> tuple[Connection, str]:
    """Open the read transaction the export copies from (kept open by ``held``) and return it
    with the archive commit that matches it, both taken between two persistence batches (every
    indexed project's drain lock held; a batch commits to Git first, then the index, inside it)."""
    slugs = sorted(row[0] for row in index.query("SELECT slug FROM projects"))
    with contextlib.ExitStack() as locks:
        try:
            for slug in slugs:
                locks.enter_context(index.project_lock(slug))
        except OSError as exc:
            raise BrokerError(
                "EXPORT_LOCK_FAILED",
                f"cannot take the persistence worker's drain locks of {index.display_url} ({exc}). Run the export "
                "as the user the broker runs as",
            ) from exc
        source = held.enter_context(index.snapshot())
        source.execute("SELECT count(*) FROM projects")  # the snapshot starts at the first read
        return source, _git(archive_path, "rev-parse", "--verify", f"refs/heads/{BRANCH}").strip()


def _reference_columns() -> dict[str, list[tuple[str, str]]]:
    """Each reference table's (column, declared type), from the reference schema itself."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA)
        return {t: [(r[1], r[2].upper()) for r in conn.execute(f"PRAGMA table_info({t})")] for t in TABLES}
    finally:
        conn.close()


def reference_value(column: str, kind: str, value: Any) -> Any:
    """One index value as the reference stores it."""
    if value is None:
        return None
    if kind == "DATETIME":
        return to_reference_time(value)
    if kind == "BOOLEAN":
        return 1 if value in (1, True, "1", "true") else 0
    if kind == "JSON" and not isinstance(value, str):
        return json.dumps(value)
    return value


def _write_database(
    source: Connection,
    ours: dict[str, list[str]],
    path: Path,
    report: ExportReport,
    extra: dict[str, list[dict[str, Any]]],
    new_tokens: bool,
) -> None:
    slugs = {int(row[0]): row[1] for row in source.execute("SELECT id, slug FROM projects")}
    private_file(path)
    target = sqlite3.connect(path, isolation_level=None)
    try:
        target.executescript(SCHEMA)
        target.execute("BEGIN")
        for table, columns in _reference_columns().items():
            if table in extra:
                kinds = dict(columns)
                names = [name for name, _ in columns]
                target.executemany(
                    f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                    [[reference_value(n, kinds[n], row.get(n)) for n in names] for row in extra[table]],
                )
                report.rows[table] = len(extra[table])
                continue
            if table not in ours:
                report.rows[table] = 0
                continue
            names = [name for name, _ in columns if name in ours[table]]
            keys = PRIMARY_KEYS.get(table, ["id"])
            kinds = dict(columns)
            insert = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
            count = 0
            for chunk in source.stream(f"SELECT {', '.join(names)} FROM {table} ORDER BY {', '.join(keys)}"):
                values = []
                for row in chunk:
                    converted = [reference_value(n, kinds[n], row[n]) for n in names]
                    if table == "agents" and "registration_token" in names:
                        # the index keeps only sha256 digests: a digest is no token the reference
                        # could check, so the column is left empty, or gets a new token when
                        # asked for (docs/migration.md)
                        token = None
                        if new_tokens:
                            token = secrets.token_urlsafe(32)  # the reference's own token form
                            report.tokens_minted.append((slugs[int(row["project_id"])], row["name"], token))
                        else:
                            report.tokens_cleared += 1
                        converted[names.index("registration_token")] = token
                    values.append(converted)
                target.executemany(insert, values)
                count += len(chunk)
            report.rows[table] = count
        target.execute("COMMIT")
    finally:
        target.close()


def _write_tokens(path: Path, minted: list[tuple[str, str, str]]) -> None:
    entries = [{"project_slug": slug, "agent": name, "registration_token": token} for slug, name, token in minted]
    private_file(path)
    path.write_text(json.dumps(entries, indent=2) + "\n")


def _write_archive(archive_path: Path, commit: str, dest: Path) -> None:
    """A working-tree clone of the archive with ``main`` at ``commit``, no remote (a team going
    back must not push into the broker's archive), and the reference's repository settings."""
    _git(None, "clone", "--quiet", "--no-hardlinks", "--no-checkout", str(archive_path), str(dest))
    _git(dest, "reset", "--quiet", "--hard", commit)
    _git(dest, "remote", "remove", "origin")
    for key, value in (("commit.gpgsign", "false"), ("user.name", AUTHOR_NAME), ("user.email", AUTHOR_EMAIL)):
        _git(dest, "config", key, value)
    _git(dest, "reflog", "expire", "--expire=now", "--all")
    _git(dest, "gc", "--quiet", "--prune=now")  # drops objects of commits after ``commit``


def _missing_canonical_files(source: Connection, tree: Path) -> list[int]:
    missing = []
    rows = source.execute(
        "SELECT m.id, m.subject, m.created_ts, p.slug FROM messages m JOIN projects p ON p.id = m.project_id "
        "ORDER BY m.id"
    )
    for row in rows:
        msg = ArchiveMessage(id=row["id"], subject=row["subject"], body_md="", sender="", created=row["created_ts"])
        if not (tree / "projects" / row["slug"] / "messages" / msg.month_dir / msg.filename).is_file():
            missing.append(int(row["id"]))
    return missing


def _git(repo: Path | None, *args: str) -> str:
    command = ["git", *(["-C", str(repo)] if repo else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env={**os.environ, "LC_ALL": "C"})
    if done.returncode != 0:
        raise BrokerError(
            "ARCHIVE_UNREADABLE",
            f"git {' '.join(args[:2])} failed on the archive: {done.stderr.strip()}. Check that the archive is "
            "a Git repository readable by this user (git fsck)",
        )
    return done.stdout


def unexported_backlog(redis_url: str, key_prefix: str) -> list[str] | None:
    """The projects whose changes Redis holds but the worker has not persisted yet (pending or
    in flight): what an export taken now leaves out. None when Redis does not answer."""
    from broker.store.clients import make_sync_client
    from broker.store.commands.drain import backlog_heads
    from broker.store.keys import Keys

    client = make_sync_client(redis_url, timeout=5)
    try:
        heads = backlog_heads(client, Keys(key_prefix))
    except StoreFailure:
        return None
    finally:
        client.close()
    return sorted(h.slug for h in heads if h.oldest_pending_ms is not None or h.oldest_inflight_ms is not None)


async def redis_rows(store: Any, projects: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """The rows of ``window_identities``, ``products`` and ``product_project_links``, which the
    broker keeps only in Redis: the live (unexpired) windows of the exported projects, every
    product, and its links to exported projects. Window ids count per project here and
    globally in the reference, so they are numbered afresh (nothing refers to them); the broker
    does not record when a link was made, so a link's ``created_at`` is its product's."""
    from broker.store.commands.identity import live_windows
    from broker.store.commands.products import all_products, linked_projects

    windows: list[dict[str, Any]] = []
    for slug, project_id in sorted(projects.items(), key=lambda item: item[1]):
        for window in sorted(await live_windows(store, slug=slug), key=lambda w: int(w["id"])):
            windows.append({**window, "id": len(windows) + 1, "project_id": project_id})
    products: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    for product in await all_products(store):
        products.append(
            {
                "id": product.id,
                "product_uid": product.product_uid,
                "name": product.name,
                "created_at": product.created_at,
            }
        )
        for project in await linked_projects(store, product_uid=product.product_uid):
            if projects.get(project.slug) == project.id:
                links.append(
                    {"id": len(links) + 1, "product_id": product.id, "project_id": project.id,
                     "created_at": product.created_at}
                )  # fmt: skip
    return {"window_identities": windows, "products": products, "product_project_links": links}


def redis_rows_reader(settings: Any, redis_url: str) -> LiveRows:
    """``live_rows`` for ``export_agent_mail``: reads ``redis_rows`` from the broker's Redis
    (on a loop and connection of its own; call it where no event loop runs)."""
    import asyncio

    from broker.identity.auth import SessionBindings
    from broker.store.store import Store

    def read(projects: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
        async def run() -> dict[str, list[dict[str, Any]]]:
            store = Store(settings, redis_url, SessionBindings("open", settings.session_binding_ttl_seconds))
            try:
                return await redis_rows(store, projects)
            finally:
                await store.close()

        try:
            return asyncio.run(run())
        except StoreFailure as exc:
            raise BrokerError(
                "REDIS_UNREACHABLE",
                f"cannot read window identities and products from Redis ({exc}). Start the broker's Redis "
                "(REDIS_URL), or pass --skip-redis to export without them",
            ) from exc

    return read
