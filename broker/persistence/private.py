"""Owner-only files and directories for what the broker stores on disk (the SQLite index, the
Git archive, the guard's Redis URL): every message is in them, so other local users must not
read them, whatever the umask (the embedded Redis is locked the same way, broker/store/embedded.py)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE, FILE_MODE = 0o700, 0o600


def _tighten(change: Callable[[], None], path: Path) -> None:
    """Apply a mode change; one that is not ours to make (another user's file) is reported."""
    try:
        change()
    except PermissionError:
        log.warning("%s is readable by other users and not ours to change; restrict it", path)


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents as 0700 (each one this call creates; a parent
    that already exists is the operator's and keeps its mode) and make ``path`` itself 0700."""
    path = Path(path)
    missing = []
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # created meanwhile by another process
            directory.mkdir(mode=DIR_MODE)
        os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask
    if path.stat().st_mode & 0o077:
        _tighten(lambda: os.chmod(path, DIR_MODE), path)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty as 0600 if missing, or take away other users' access if not.

    An existing file is never opened here: closing any descriptor of a file drops every POSIX
    lock this process holds on it, and SQLite's locks are POSIX locks, so opening the index
    while another thread's connection is live made SQLite believe it had no readers left (a
    reader elsewhere then checkpointed and deleted the WAL under the writer, and its commits
    were lost)."""
    path = Path(path)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        if os.stat(path).st_mode & 0o077:
            _tighten(lambda: os.chmod(path, FILE_MODE), path)
    return path
