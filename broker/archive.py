"""The Git archive: one repository of Markdown and JSON files, in the reference's layout.

    <ARCHIVE_ROOT>/projects/<slug>/agents/<Name>/profile.json
    <ARCHIVE_ROOT>/projects/<slug>/agents/<Name>/{inbox,outbox}/YYYY/MM/<file>.md
    <ARCHIVE_ROOT>/projects/<slug>/messages/YYYY/MM/<file>.md          (canonical copy)
    <ARCHIVE_ROOT>/projects/<slug>/messages/threads/<thread_id>.md     (digest)
    <ARCHIVE_ROOT>/projects/<slug>/file_reservations/{<sha1>,id-<id>}.json

``<file>`` is ``<created %Y-%m-%dT%H-%M-%SZ>__<subject slug>__<id>.md``; a message file is
``---json`` front matter then the body. BCC names appear only in the sender's outbox copy and
in each BCC recipient's own copy (listing just that recipient), not in the canonical copy or
other recipients' copies (the reference writes the full BCC list into every copy).

Writes are batched: ``write_batch`` writes every file of a drained batch and makes one commit.
Every file's content is a function of the stored record, and a digest entry is appended only
when its canonical link is not there yet, so replaying a batch changes nothing and commits
nothing. A lock per repository (a thread lock plus ``flock`` across processes) serialises
writers; commits use plumbing (``write-tree``/``commit-tree``) so their cost does not grow with
a full status scan of the work tree.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import git

from broker.config import Settings

log = logging.getLogger(__name__)

AUTHOR_NAME = "mcp-agent"
AUTHOR_EMAIL = "mcp-agent@example.com"
DIGEST_BODY_CHARS = 1200
SUMMARY_LINES = 20

_repo_locks: dict[Path, threading.Lock] = {}
_repo_locks_guard = threading.Lock()


def subject_slug(subject: str) -> str:
    slug = re.sub(r"[^a-zA-Z0-9._-]+", "-", subject or "").strip("-_").lower()[:80]
    return slug or "message"


def _created(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


@dataclass
class ArchiveMessage:
    """One message as archived: its header fields, body and recipients by kind."""

    id: int
    subject: str
    body_md: str
    sender: str
    created: str
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    thread_id: str | None = None
    importance: str = "normal"
    ack_required: bool = False
    attachments: list[Any] = field(default_factory=list)

    @property
    def when(self) -> datetime:
        return _created(self.created)

    @property
    def filename(self) -> str:
        return f"{self.when.astimezone(UTC).strftime('%Y-%m-%dT%H-%M-%SZ')}__{subject_slug(self.subject)}__{self.id}.md"

    @property
    def month_dir(self) -> str:
        return self.when.astimezone(UTC).strftime("%Y/%m")


class Archive:
    """The archive repository; ``slug`` selects the project directory the seed API writes to."""

    def __init__(self, root: Path, slug: str, human_key: str | None = None) -> None:
        self.root = Path(root)
        self.slug = slug
        self.human_key = human_key or slug
        self.repo: git.Repo | None = None

    @property
    def project_dir(self) -> Path:
        return self.root / "projects" / self.slug

    def project_rel(self, slug: str | None = None) -> str:
        return f"projects/{slug or self.slug}"

    # -- repository and locking ---------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with _repo_locks_guard:
            lock = _repo_locks.setdefault(self.root.resolve(), threading.Lock())
        with lock:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / ".archive.lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def ensure(self) -> Archive:
        """Create the repository (with a first commit) and the project directory if missing."""
        with self._locked():
            self._open()
            self.project_dir.mkdir(parents=True, exist_ok=True)
        return self

    def _open(self) -> git.Repo:
        if self.repo is not None:
            return self.repo
        if (self.root / ".git").exists():
            repo = git.Repo(self.root)
        else:
            repo = git.Repo.init(self.root)
            with repo.config_writer() as config:
                config.set_value("commit", "gpgsign", "false")
                config.set_value("core", "untrackedCache", "true")
                config.set_value("index", "version", "4")
            (self.root / ".gitattributes").write_text("*.json text\n*.md text\n")
            (self.root / ".gitignore").write_text(".archive.lock\n")
        repo.git.update_environment(
            GIT_AUTHOR_NAME=AUTHOR_NAME,
            GIT_AUTHOR_EMAIL=AUTHOR_EMAIL,
            GIT_COMMITTER_NAME=AUTHOR_NAME,
            GIT_COMMITTER_EMAIL=AUTHOR_EMAIL,
        )
        self.repo = repo
        if not self._head():
            self._commit([".gitattributes", ".gitignore"], "chore: initialize archive")
        return repo

    def _head(self) -> str | None:
        assert self.repo is not None
        try:
            return self.repo.git.rev_parse("--verify", "-q", "HEAD")
        except git.GitCommandError:
            return None

    def _heal_stale_git_locks(self) -> None:
        """Remove lock files a killed writer left behind. Safe: every writer holds the archive
        lock while it runs git, and we hold it now, so no git process of ours is running."""
        git_dir = self.root / ".git"
        for lock in (git_dir / "index.lock", git_dir / "HEAD.lock", *git_dir.glob("refs/heads/*.lock")):
            if lock.exists():
                log.warning("removing stale git lock %s (a writer died mid-commit)", lock)
                lock.unlink(missing_ok=True)

    def _commit(self, rel_paths: Sequence[str], message: str) -> str | None:
        """Stage exactly these paths and commit them; None when nothing changed."""
        assert self.repo is not None
        if not rel_paths:
            return None
        self._heal_stale_git_locks()
        with tempfile.NamedTemporaryFile("w", delete=False, dir=self.root / ".git", suffix=".paths") as listing:
            listing.write("\n".join(sorted(set(rel_paths))) + "\n")
        try:
            self.repo.git.add(f"--pathspec-from-file={listing.name}")
        finally:
            os.unlink(listing.name)
        tree = self.repo.git.write_tree()
        head = self._head()
        if head and self.repo.git.rev_parse(f"{head}^{{tree}}") == tree:
            return None
        parents = ["-p", head] if head else []
        commit = self.repo.git.commit_tree(tree, *parents, "-m", message)
        self.repo.git.update_ref("HEAD", commit)
        return commit

    def commits(self, max_count: int = 5) -> list[git.Commit]:
        with self._locked():
            repo = self._open()
            return list(repo.iter_commits("HEAD", max_count=max_count))

    # -- files --------------------------------------------------------------------------
    def _write(self, rel: str, text: str, written: list[str]) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(rel)

    def _message_text(self, msg: ArchiveMessage, slug: str, human_key: str, bcc: list[str]) -> str:
        front = {
            "id": msg.id,
            "thread_id": msg.thread_id,
            "project": human_key,
            "project_slug": slug,
            "from": msg.sender,
            "to": msg.to,
            "cc": msg.cc,
            "bcc": bcc,
            "subject": msg.subject,
            "importance": msg.importance,
            "ack_required": msg.ack_required,
            "created": msg.created,
            "attachments": msg.attachments,
        }
        return "---json\n" + json.dumps(front, indent=2, sort_keys=True) + "\n---\n\n" + msg.body_md.strip() + "\n"

    def _write_message(
        self, msg: ArchiveMessage, slug: str, human_key: str, written: list[str], digests: dict[str, str]
    ) -> None:
        base = self.project_rel(slug)
        canonical = f"{base}/messages/{msg.month_dir}/{msg.filename}"
        self._write(canonical, self._message_text(msg, slug, human_key, []), written)
        self._write(
            f"{base}/agents/{msg.sender}/outbox/{msg.month_dir}/{msg.filename}",
            self._message_text(msg, slug, human_key, msg.bcc),
            written,
        )
        for name in dict.fromkeys(msg.to + msg.cc + msg.bcc):
            bcc = [name] if name in msg.bcc else []
            self._write(
                f"{base}/agents/{name}/inbox/{msg.month_dir}/{msg.filename}",
                self._message_text(msg, slug, human_key, bcc),
                written,
            )
        if msg.thread_id:
            self._append_digest(f"{base}/messages/threads/{msg.thread_id}.md", msg, canonical, digests)

    def _append_digest(self, rel: str, msg: ArchiveMessage, canonical: str, digests: dict[str, str]) -> None:
        if rel not in digests:
            path = self.root / rel
            digests[rel] = path.read_text(encoding="utf-8") if path.exists() else f"# Thread {msg.thread_id}\n\n"
        link = f"[View canonical]({canonical})"
        if link in digests[rel]:
            return  # already there: a replayed batch must not append twice
        body = msg.body_md.strip()
        if len(body) > DIGEST_BODY_CHARS:
            body = body[:DIGEST_BODY_CHARS] + "\n..."
        arrow = ", ".join(msg.to + msg.cc)
        digests[rel] += f"### {msg.subject}\n\n## {msg.created} — {msg.sender} → {arrow}\n\n{link}\n\n{body}\n\n---\n\n"

    def write_batch(
        self,
        *,
        profiles: Sequence[tuple[str, dict[str, Any]]] = (),
        messages: Sequence[tuple[str, str, ArchiveMessage]] = (),
        reservations: Sequence[tuple[str, dict[str, Any]]] = (),
        summary: str | None = None,
    ) -> str | None:
        """Write a batch and make one commit. ``profiles``: (slug, agent dict); ``messages``:
        (slug, human_key, message); ``reservations``: (slug, reservation record). Returns the
        commit's sha, or None when the archive already held all of it."""
        with self._locked():
            self._open()
            written: list[str] = []
            digests: dict[str, str] = {}
            for slug, agent in profiles:
                self._write(f"{self.project_rel(slug)}/agents/{agent['name']}/profile.json", _json_text(agent), written)
            for slug, human_key, msg in messages:
                self._write_message(msg, slug, human_key, written, digests)
            for slug, record in reservations:
                base = f"{self.project_rel(slug)}/file_reservations"
                pattern_sha = hashlib.sha1(record["path_pattern"].encode()).hexdigest()
                self._write(f"{base}/{pattern_sha}.json", _json_text(record), written)
                self._write(f"{base}/id-{record['id']}.json", _json_text(record), written)
            for rel, text in digests.items():
                self._write(rel, text, written)
            return self._commit(written, summary or _batch_summary(profiles, messages, reservations))


def _batch_summary(
    profiles: Sequence[tuple[str, dict[str, Any]]],
    messages: Sequence[tuple[str, str, ArchiveMessage]],
    reservations: Sequence[tuple[str, dict[str, Any]]],
) -> str:
    lines = [f"mail: {m.sender} -> {', '.join(m.to + m.cc) or '(bcc only)'} | {m.subject}" for _, _, m in messages]
    lines += [f"agent: profile {a['name']}" for _, a in profiles]
    lines += [f"file_reservation: {r.get('agent')} {r['path_pattern']}" for _, r in reservations]
    if len(lines) == 1:
        return lines[0]
    head = f"batch: {len(messages)} messages, {len(profiles)} profiles, {len(reservations)} reservations"
    shown = lines[:SUMMARY_LINES]
    more = [f"- ... and {len(lines) - SUMMARY_LINES} more"] if len(lines) > SUMMARY_LINES else []
    return head + "\n\n" + "\n".join(f"- {line}" for line in shown) + ("\n" + more[0] if more else "")


def archive_root(settings: Settings) -> Path:
    return settings.archive_path


# -- the seed's API: async, one commit per call ------------------------------------------
async def ensure_archive(settings: Settings, slug: str) -> Archive:
    """The archive of a project, created with its repository if missing."""
    return await asyncio.to_thread(Archive(archive_root(settings), slug).ensure)


async def write_agent_profile(archive: Archive, agent: dict[str, Any]) -> str | None:
    profile = {k: v for k, v in agent.items() if k not in ("registration_token", "token_hash")}
    return await asyncio.to_thread(
        archive.write_batch, profiles=[(archive.slug, profile)], summary=f"agent: profile {profile['name']}"
    )


async def write_message_bundle(
    archive: Archive,
    message: dict[str, Any],
    body_md: str,
    sender: str,
    recipients: Sequence[str],
    extra_paths: Sequence[str] | None = None,
    commit_text: str | None = None,
) -> str | None:
    """Write a message's canonical, outbox, inbox and digest files in one commit. ``recipients``
    are the ``to`` names unless ``message`` carries ``to``/``cc``/``bcc`` lists."""
    del extra_paths  # attachments are not archived yet
    msg = ArchiveMessage(
        id=int(message["id"]),
        subject=message.get("subject", ""),
        body_md=body_md,
        sender=sender,
        created=message.get("created") or message.get("created_ts") or datetime.now(UTC).isoformat(),
        to=list(message.get("to") or recipients),
        cc=list(message.get("cc") or []),
        bcc=list(message.get("bcc") or []),
        thread_id=message.get("thread_id"),
        importance=message.get("importance", "normal"),
        ack_required=bool(message.get("ack_required", False)),
        attachments=list(message.get("attachments") or []),
    )
    return await asyncio.to_thread(
        archive.write_batch, messages=[(archive.slug, archive.human_key, msg)], summary=commit_text
    )
