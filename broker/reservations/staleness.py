"""Whether a reservation's holder looks gone: the evidence a forced release needs.

A holder is stale when it has been inactive (no registration or send) for
FILE_RESERVATION_INACTIVITY_SECONDS, has no mail activity (send, read, ack) within
FILE_RESERVATION_ACTIVITY_GRACE_SECONDS, and, when the project's directory exists on this
machine, no file matching the pattern changed and no commit touched one within the grace.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.reservations import globs
from broker.store.commands import reservations as reservation_store
from broker.store.store import Store

MAX_FILES_EXAMINED = 5000  # bounds the directory walk of one check
MAX_FILES_FOR_GIT = 200


def parse_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def from_ms(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value) / 1000, UTC) if value else None


@dataclass
class Verdict:
    stale: bool
    reasons: list[str] = field(default_factory=list)


@dataclass
class Activity:
    agent: datetime | None
    mail: datetime | None

    def fields(self) -> dict[str, str | None]:
        return {
            "last_agent_activity_ts": self.agent.isoformat() if self.agent else None,
            "last_mail_activity_ts": self.mail.isoformat() if self.mail else None,
        }

    def verdict(self, settings: Settings, now: datetime | None = None) -> Verdict:
        now = now or datetime.now(UTC)
        inactivity, grace = (
            settings.file_reservation_inactivity_seconds,
            settings.file_reservation_activity_grace_seconds,
        )
        reasons = []
        inactive = self.agent is None or (now - self.agent).total_seconds() > inactivity
        reasons.append(f"agent_inactive>{inactivity}s" if inactive else "agent_recently_active")
        mail_recent = self.mail is not None and (now - self.mail).total_seconds() <= grace
        reasons.append("mail_activity_recent" if mail_recent else f"no_recent_mail_activity>{grace}s")
        return Verdict(inactive and not mail_recent, reasons)


async def holder_activity(store: Store, slug: str, holder: str) -> Activity:
    found = await reservation_store.holder_activity(store, slug=slug, holder=holder)
    sent = from_ms(found.last_sent_us // 1000) if found.last_sent_us is not None else None
    read = from_ms(found.last_read_ms)
    mail = max((t for t in (sent, read) if t), default=None)
    return Activity(parse_iso(found.last_active_ts), mail)


def matching_files(root: Path, pattern: str) -> list[Path]:
    """Files under root that the pattern matches (walk starts at its literal prefix; bounded)."""
    start = root / globs.literal_prefix(pattern) if globs.literal_prefix(pattern) else root
    if start.is_file():
        return [start] if globs.matches(pattern, start.relative_to(root).as_posix()) else []
    found: list[Path] = []
    examined = 0
    for directory, subdirs, files in os.walk(start):
        subdirs[:] = [d for d in subdirs if d != ".git"]
        for name in files:
            examined += 1
            path = Path(directory, name)
            if globs.matches(pattern, path.relative_to(root).as_posix()):
                found.append(path)
            if examined >= MAX_FILES_EXAMINED:
                return found
    return found


def last_commit_time(root: Path, files: list[Path]) -> datetime | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%ct", "--", *(str(f) for f in files[:MAX_FILES_FOR_GIT])],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    stamp = out.stdout.strip()
    return datetime.fromtimestamp(int(stamp), UTC) if out.returncode == 0 and stamp else None


def disk_evidence(human_key: str, pattern: str) -> tuple[datetime | None, datetime | None, bool]:
    """(last file change, last commit, whether the pattern matched any file) in the project's
    directory; (None, None, True) when that directory is not on this machine."""
    root = Path(human_key)
    if globs.is_virtual(pattern) or not root.is_dir():
        return None, None, True
    files = matching_files(root, pattern)
    if not files:
        return None, None, False
    times = [t for t in map(modified, files) if t is not None]
    changed = datetime.fromtimestamp(max(times), UTC) if times else None
    return changed, last_commit_time(root, files), True


def modified(path: Path) -> float | None:
    """A file's mtime; a dangling symlink's own; None for a file gone since the walk."""
    for stat in (path.stat, path.lstat):
        try:
            return stat().st_mtime
        except OSError:
            continue
    return None


async def full_verdict(
    store: Store, slug: str, human_key: str, holder: str, pattern: str
) -> tuple[Verdict, dict[str, str | None]]:
    """The verdict with mail, agent, filesystem and git evidence, and the evidence fields."""
    settings = store.settings
    activity = await holder_activity(store, slug, holder)
    verdict = activity.verdict(settings)
    changed, committed, matched = await asyncio.to_thread(disk_evidence, human_key, pattern)
    grace = settings.file_reservation_activity_grace_seconds
    now = datetime.now(UTC)
    if Path(human_key).is_dir() and not globs.is_virtual(pattern):
        if not matched:
            verdict.reasons.append("path_pattern_unmatched")
        else:
            for label, when in (("filesystem", changed), ("git", committed)):
                recent = when is not None and (now - when).total_seconds() <= grace
                verdict.reasons.append(f"{label}_activity_recent" if recent else f"no_recent_{label}_activity>{grace}s")
                verdict.stale = verdict.stale and not recent
    evidence = {
        **activity.fields(),
        "last_filesystem_activity_ts": changed.isoformat() if changed else None,
        "last_git_activity_ts": committed.isoformat() if committed else None,
    }
    return verdict, evidence
