"""The SQLite index and the Git archive hold every message, so like the embedded Redis they are
owner-only: files 0600 (or read-only 0400), directories 0700, whatever the umask, including
what is written later (the index's -wal and -shm, git objects and refs of later commits)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastmcp import FastMCP
from helpers import Tools
from persist_helpers import run_worker

from broker.config import Settings
from broker.persistence.index import Index


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual default: without care, files 0644 and directories 0755
    yield
    os.umask(old)


def others_can_read(root: Path) -> list[str]:
    """Every path under root (root included) that group or others may access."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if not path.is_symlink() and mode & 0o077:
            found.append(f"{oct(mode)} {path}")
    return found


async def test_index_and_archive_are_owner_only(
    tools: Tools, server: FastMCP, settings: Settings, loose_umask: None
) -> None:
    await tools.project()
    for name in ("BlueLake", "GreenCastle"):
        await tools.agent(name)
    await tools.send("BlueLake", ["GreenCastle"], subject="private")
    await tools.send("GreenCastle", ["BlueLake"], subject="later", body_md="more git objects and WAL pages")
    await run_worker(server, settings)  # the archive and index are created and written by it

    index = settings.index_path
    assert index.exists() and Path(f"{index}-wal").exists()
    index_files = [index, *(Path(f"{index}-{suffix}") for suffix in ("wal", "shm"))]
    assert [f"{oct(stat.S_IMODE(p.stat().st_mode))} {p}" for p in index_files if p.stat().st_mode & 0o077] == []
    archive = settings.archive_path
    assert (archive / "HEAD").exists()
    assert others_can_read(archive) == []


def test_existing_world_readable_index_is_tightened(tmp_path: Path, loose_umask: None) -> None:
    """An index made by an older broker (0644) loses other users' access when opened."""
    path = tmp_path / "index.sqlite3"
    path.write_bytes(b"")
    path.chmod(0o644)
    index = Index(path)
    try:
        index.ensure_schema()
    finally:
        index.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_opening_the_index_again_keeps_another_connections_writes(tmp_path: Path) -> None:
    """A second connection in the process (another thread's) must not cost the first its SQLite
    locks: a reader in another process would then checkpoint and delete the WAL under the
    writer, and the writer's later commits would vanish."""
    import subprocess
    import sys
    import threading

    path = tmp_path / "index.sqlite3"
    index = Index(path)
    index.ensure_schema()
    with index.transaction() as writer:  # its connection stays open in the index's pool
        writer.execute("CREATE TABLE IF NOT EXISTS notes (n INTEGER)")
        writer.execute("INSERT INTO notes VALUES (1)")
    opened = threading.Thread(target=lambda: Index(path).query("SELECT 1"))  # another thread's connection
    opened.start()
    opened.join()
    read = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT count(*) FROM notes'); c.close()"
    subprocess.run([sys.executable, "-c", read, str(path)], check=True)
    with index.transaction() as writer:
        writer.execute("INSERT INTO notes VALUES (2)")
    count = (
        "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM notes').fetchone()[0])"
    )
    seen = subprocess.run([sys.executable, "-c", count, str(path)], check=True, capture_output=True, text=True)
    assert seen.stdout.strip() == "2"
